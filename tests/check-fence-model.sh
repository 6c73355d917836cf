#!/bin/sh
# SPDX-License-Identifier: MIT
# check-fence-model.sh - model-check the fence that keeps a dead process's
# bound changes held until a recovery pass redoes them (tests/fence.pml)
# with spin: the protocol must pass, and each deliberately broken variant
# must fail (scaffolding: spin-check.sh).  -E: a process killed mid-way
# ends where it stopped, which is no error here.
set -u
MODEL=fence.pml
. "$(dirname "$0")/spin-check.sh"

check "bind, write, die, reap, survive, recover" pass "" "-DSAFETY" "-E"
check "broken: a reaper frees a bound entry" fail "-DBROKEN_FREE" "-DSAFETY" "-E"
check "broken: acknowledged before marked" fail "-DBROKEN_LATEMARK" "-DSAFETY" "-E"
check "broken: mark cleared before the page is written" fail "-DBROKEN_EARLYCLEAR" "-DSAFETY" "-E"
check "broken: survivors ignore the fence" fail "-DBROKEN_NOCHECK" "-DSAFETY" "-E"
check "broken: fence cleared before the redo" fail "-DBROKEN_EARLYDONE" "-DSAFETY" "-E"
finish "fence model"
