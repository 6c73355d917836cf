#!/bin/sh
# SPDX-License-Identifier: MIT
# check-kvstore-model.sh - model-check examples/kvstore's put, death and
# recovery on one page (tests/kvstore.pml) with spin: the engine as it is,
# and acknowledged at the log with dead bound pages fenced (SM_RECOVER),
# must pass; each broken variant must fail (scaffolding: spin-check.sh).
set -u
MODEL=kvstore.pml
. "$(dirname "$0")/spin-check.sh"

check "acknowledged once the page is written" pass "" "-DSAFETY" ""
check "acknowledged at the log, dead bound pages fenced" pass "-DACK_AT_LOG -DFENCE" "-DSAFETY" ""
check "broken: acknowledged at the log, no fence" fail "-DACK_AT_LOG" "-DSAFETY" ""
check "broken: replay ignores the page LSN" fail "-DBROKEN_NOLSN" "-DSAFETY" ""
check "broken: a pass ends a fence newer than itself" fail \
	"-DACK_AT_LOG -DFENCE -DBROKEN_NOSNAP" "-DSAFETY" ""
finish "kvstore model"
