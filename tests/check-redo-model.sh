#!/bin/sh
# SPDX-License-Identifier: MIT
# check-redo-model.sh - model-check the bind / commit / trim protocol of
# write-ahead bindings (tests/redo.pml) with spin: the protocol must pass,
# and each deliberately broken variant must fail (scaffolding:
# spin-check.sh).
set -u
MODEL=redo.pml
. "$(dirname "$0")/spin-check.sh"

check "bind, commit, trim, kill at any step" pass "" "-DSAFETY" ""
check "broken: bind ignores the trim target" fail "-DBROKEN_NOTARGET" "-DSAFETY" ""
check "broken: trim announces after reading" fail "-DBROKEN_LATETARGET" "-DSAFETY" ""
check "broken: page before the log" fail "-DBROKEN_NOWAL" "-DSAFETY" ""
finish "redo model"
