# SPDX-License-Identifier: MIT
# spin-check.sh - sourced by the model checks (check-model.sh,
# check-redo-model.sh, check-fence-model.sh) after they set MODEL (a .pml file beside them):
# skips (exit 77) without spin or a C compiler, or with
# SAFEMAP_SKIP_MODEL=1 (check-asan and check-valgrind set it: a model does
# not depend on how the library was built); then works in a scratch
# directory and gives check() and finish().
if [ "${SAFEMAP_SKIP_MODEL:-0}" = 1 ]; then
	echo "SKIP model: SAFEMAP_SKIP_MODEL=1"; exit 77
fi
command -v spin >/dev/null 2>&1 || { echo "SKIP model: spin not installed"; exit 77; }
CC=${CC:-cc}
command -v "$CC" >/dev/null 2>&1 || { echo "SKIP model: no C compiler"; exit 77; }
model=$(cd "$(dirname "$0")" && pwd)/$MODEL
work=$(mktemp -d) || exit 99
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 99
failed=0

# check NAME EXPECT SPIN_DEFINES PAN_CFLAGS PAN_ARGS
#   EXPECT: pass (no error) or fail (spin must find an error)
check() {
	name=$1 expect=$2 defs=$3 cflags=$4 args=$5
	# shellcheck disable=SC2086
	if ! spin -a $defs "$model" >spin.out 2>&1 || ! $CC -O2 -w $cflags -o pan pan.c >cc.out 2>&1; then
		echo "FAIL $name: cannot build the verifier"; cat spin.out cc.out; failed=1; return
	fi
	# shellcheck disable=SC2086
	./pan -m1000000 $args >pan.out 2>&1
	errs=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | tail -n 1)
	states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' pan.out | tail -n 1)
	what=$(grep -m1 -E 'assertion violated|invalid end state|non-progress cycle' pan.out)
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

# finish WHAT: the verdict of every check
finish() {
	[ "$failed" = 0 ] || exit 1
	echo "$1: all checks as expected"
	exit 0
}
