/* SPDX-License-Identifier: MIT */
/*
 * fence.pml - a dead process's bound changes stay fenced until redone
 * (lib/fence.c, the bound-entry rules of lib/table.c and lib/redo.c), for
 * spin (tests/check-fence-model.sh).
 *
 * One page.  The binder locks it, raises the fence count, marks its entry
 * bound, then acknowledges its put (its record, LSN 1, is durable): from
 * then on its change lives in its private slice and in the log only.  It
 * then writes the page (page LSN 1), clears the mark, lowers the count and
 * unlocks.  A killer may kill it at any step: the kernel drops its lock;
 * its entry stays in the table.  A reaper (the lazy reaper, a new owner of
 * the dead binder's byte, a table-mode judge: all go through smt_retire)
 * takes back a dead owner's entry: an orphan's if bound, else free.  Two
 * survivors each lock the page, read the fence count, then (if it is not
 * 0) scan for a bound entry: found, they unlock and give up; else they
 * read the page and write it back with their own, newer record (LSN 2 or
 * 3).  Recovery runs once the binder is dead: it asks the redo point,
 * locks the page with SM_RECOVER (no fence check), redoes record 1 if the
 * page LSN is below it, then clears the orphan (sm_redo_done).
 *
 * (The order of raising the count and setting the mark does not matter
 * here: the binder holds the lock across both, and a survivor only looks
 * once it holds the lock.)
 *
 * Checked (assertion at a survivor's write): a survivor never writes the
 * page while an acknowledged change of the binder is neither in the page
 * nor redone (else recovery's page-LSN check would skip it for ever).
 * Broken variants (-D) must fail:
 *   BROKEN_FREE      the reaper frees a bound entry instead of orphaning it
 *   BROKEN_LATEMARK  the binder acknowledges before it marks its entry
 *   BROKEN_EARLYCLEAR the binder clears its mark before it writes the page
 *   BROKEN_NOCHECK   survivors do not look at the fence
 *   BROKEN_EARLYDONE recovery clears the fence before it redoes the page
 */
#define FREE 0
#define BINDER 1
#define ORPHAN 9

byte lock = 0;      /* the page's lock: 0 free, else its holder (1 binder, 2-3 survivors, 4 recovery) */
bool alive = true;  /* the binder */
byte owner = FREE;  /* the binder's table entry: FREE, BINDER or ORPHAN */
bool bound = false; /* its SMT_SF_BOUND flag */
byte count = 0;     /* the fence count of the page's bucket */
byte page = 0;      /* the page LSN in the file */
bool acked = false; /* ghost: the binder's put was acknowledged */
bool redone = false; /* ghost: recovery redid record 1 (or found it in the page) */
bool done = false;  /* the binder ran to its end */

/* A step of the binder: only while it is alive. */
#define STEP(x) atomic { alive -> x }

active proctype binder()
{
	atomic { alive && lock == 0 -> lock = BINDER; owner = BINDER };
#ifdef BROKEN_LATEMARK
	STEP(acked = true);
#endif
	STEP(count++);
	STEP(bound = true);
#ifndef BROKEN_LATEMARK
	STEP(acked = true);
#endif
#ifndef BROKEN_EARLYCLEAR
	STEP(page = 1);		/* the commit: log first, then the page */
	STEP(bound = false);
#else
	STEP(bound = false);
	STEP(page = 1);
#endif
	STEP(count--);
	STEP(lock = 0; owner = FREE; done = true)
}

active proctype killer()
{
	if
	:: atomic { alive -> alive = false; if :: lock == BINDER -> lock = 0 :: else -> skip fi }
	:: skip
	fi
}

active proctype reaper()
{
	do
	:: atomic {
		!alive && owner == BINDER ->
#ifndef BROKEN_FREE
		if
		:: bound -> owner = ORPHAN
		:: else -> owner = FREE
		fi
#else
		owner = FREE
#endif
	   }
	:: break
	od
}

active [2] proctype survivor()
{
	byte me = _pid;	/* 3 or 4: distinct from the binder's 1 */
	bool fenced;

	atomic { lock == 0 -> lock = me };
	fenced = false;
#ifndef BROKEN_NOCHECK
	if
	:: count > 0 ->
		/* the scan: a bound entry of another owner */
		if
		:: (owner == BINDER || owner == ORPHAN) && bound -> fenced = true
		:: else -> skip
		fi
	:: else -> skip
	fi;
#endif
	if
	:: fenced -> skip	/* -EBUSY: nothing written */
	:: else ->
		assert(!acked || page >= 1 || redone);
		page = me	/* its own, newer record */
	fi;
	lock = 0
}

active proctype recovery()
{
	if
	:: !alive -> skip		/* after the crash */
	:: done -> goto out		/* no crash: nothing to recover */
	fi;
#ifdef BROKEN_EARLYDONE
	atomic { if :: bound -> owner = FREE; bound = false; count-- :: else -> skip fi };
#endif
	atomic { lock == 0 -> lock = 2 };	/* SM_RECOVER: no fence check */
	if
	:: page < 1 -> page = 1
	:: else -> skip
	fi;
	redone = true;
	lock = 0;
	/* sm_redo_done: the orphan (or the dead owner's bound entry) goes */
	atomic {
		if
		:: (owner == ORPHAN || owner == BINDER) && bound -> owner = FREE; bound = false; count--
		:: else -> skip
		fi
	};
out:	skip
}
