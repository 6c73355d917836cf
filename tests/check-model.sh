#!/bin/sh
# SPDX-License-Identifier: MIT
# check-model.sh - model-check table mode's lock protocol (tests/tmode.pml)
# with spin: the protocol must pass every check, and each deliberately
# broken variant must fail its check (scaffolding: spin-check.sh).
set -u
MODEL=tmode.pml
. "$(dirname "$0")/spin-check.sh"

safety="-DSAFETY -DCOLLAPSE"
check "exclusion, stop or kill at any step" pass "" "$safety" ""
check "no stall: no retry loop on a stopped process" pass "" "-DNP -DCOLLAPSE" "-l"
check "newcomer after a kill at any step" pass "-DNEWCOMER -DFAULTY=1" "$safety" ""
check "broken: validate before announcing" fail "-DBROKEN_ORDER" "$safety" ""
check "broken: one copy changed in place" fail "-DBROKEN_INPLACE" "-DNP -DCOLLAPSE" "-l"
check "broken: newcomer keeps the incarnation" fail "-DNEWCOMER -DFAULTY=1 -DBROKEN_NOINC" "$safety" ""
check "broken: no re-check after the liveness answer" fail "-DNEWCOMER -DFAULTY=1 -DBROKEN_RECHECK" "$safety" ""
check "broken: a tag change hides its holder" fail "-DBROKEN_TAGSKIP" "$safety" ""
finish model
