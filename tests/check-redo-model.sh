#!/bin/sh
# SPDX-License-Identifier: MIT
# check-redo-model.sh - model-check the bind / commit / trim protocol of
# write-ahead bindings (tests/redo.pml) with spin: the protocol must pass,
# and each deliberately broken variant must fail.  Skipped (exit 77)
# without spin or a C compiler, or with SAFEMAP_SKIP_MODEL=1.
set -u
if [ "${SAFEMAP_SKIP_MODEL:-0}" = 1 ]; then
	echo "SKIP model: SAFEMAP_SKIP_MODEL=1"; exit 77
fi
command -v spin >/dev/null 2>&1 || { echo "SKIP model: spin not installed"; exit 77; }
CC=${CC:-cc}
command -v "$CC" >/dev/null 2>&1 || { echo "SKIP model: no C compiler"; exit 77; }
model=$(cd "$(dirname "$0")" && pwd)/redo.pml
work=$(mktemp -d) || exit 99
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 99

failed=0
# check NAME EXPECT SPIN_DEFINES
check() {
	name=$1 expect=$2 defs=$3
	# shellcheck disable=SC2086
	if ! spin -a $defs "$model" >spin.out 2>&1 || ! $CC -O2 -w -DSAFETY -o pan pan.c >cc.out 2>&1; then
		echo "FAIL $name: cannot build the verifier"; cat spin.out cc.out; failed=1; return
	fi
	./pan -m100000 >pan.out 2>&1
	errs=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | tail -n 1)
	states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' pan.out | tail -n 1)
	what=$(grep -m1 -E 'assertion violated|invalid end state' pan.out)
	if [ -z "$errs" ]; then
		echo "FAIL $name: spin gave no verdict"; tail -n 20 pan.out; failed=1
	elif [ "$expect" = pass ] && [ "$errs" != 0 ]; then
		echo "FAIL $name: $what"; failed=1
	elif [ "$expect" = fail ] && [ "$errs" = 0 ]; then
		echo "FAIL $name: the broken variant passed ($states states)"; failed=1
	elif [ "$expect" = pass ]; then
		echo "ok   $name: no error in $states states"
	else
		echo "ok   $name: fails as it must ($what)"
	fi
}

check "bind, commit, trim, kill at any step" pass ""
check "broken: bind ignores the trim target" fail "-DBROKEN_NOTARGET"
check "broken: trim announces after reading" fail "-DBROKEN_LATETARGET"
check "broken: page before the log" fail "-DBROKEN_NOWAL"
[ "$failed" = 0 ] || exit 1
echo "redo model: all checks as expected"
exit 0
