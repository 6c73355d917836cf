/* SPDX-License-Identifier: MIT */
/*
 * kvstore.pml - examples/kvstore's put, death and recovery on one page,
 * for spin (tests/check-kvstore-model.sh).
 *
 * Putter A puts its key twice, putter B its own key once, both on the same
 * page: write-lock the page, copy it (a buffered slice), append the record
 * and bind it, change the copy (the key's value and the page LSN become
 * the record's LSN), commit the log (group commit: every appended record),
 * write the page, release, acknowledge.  A putter may die at any step; the
 * kernel drops its lock, except (FENCE, the library's SM_RECOVER
 * protocol) when it held a bound slice: then the page stays held against
 * all but a recovery pass, until that pass ends (sm_redo_done) having
 * started after the death.  A recovery pass (a restart's or a survivor's,
 * at any moment, one at a time) commits the log, then replays every
 * committed record into the page unless the page LSN shows it, each
 * under the page's lock (or inside the fence).  A reader (a survivor's
 * get) reads A's key at any moment; at the end a last pass runs.
 *
 * Checked: the reader never sees A's key older than A's last acknowledged
 * put, and at the end every key holds its last acknowledged put or newer.
 *   (default)        acknowledged once the page is written (the engine)
 *   -DACK_AT_LOG -DFENCE  acknowledged at the log commit, dead bound pages
 *                    fenced until recovered (with SM_RECOVER)
 * Broken variants must fail:
 *   -DACK_AT_LOG     acknowledged at the log, no fence: a survivor writes
 *                    the page first and replay skips the record
 *   -DBROKEN_NOLSN   replay ignores the page LSN: an old record overwrites
 *                    a newer acknowledged value
 *   -DBROKEN_NOSNAP  (with -DACK_AT_LOG -DFENCE) a pass ends a fence whose
 *                    holder died after the pass began, past its record
 */
#define NP 2
#define DEAD 7  /* LOCK: the dead holder's (fenced) */
#define REC 9   /* LOCK: a recovery pass */
#define RD 8    /* LOCK: the reader */

byte tail = 1, C = 1; /* next record's LSN; committed tail */
byte rkey[5];         /* record -> the putter whose key it sets */
byte PL = 0;          /* the page's LSN */
byte V[NP];           /* the page: LSN of the record that set putter p's key */
byte LOCK = 0;        /* the page's write lock: 0 free, p + 1, DEAD, REC or RD */
bool fenced = false;  /* a dead process left the page bound */
byte acked[NP];       /* ghost: last acknowledged record of putter p */
byte npend = NP;      /* putters still running */
bool rmu = false;     /* one recovery pass at a time */

#define MAYDIE if :: skip :: goto died fi

proctype putter(byte p; byte n)
{
	byte r, cl, c0, c1;
	bool bound = false;

	do
	:: n == 0 -> break
	:: n > 0 ->
		atomic { LOCK == 0 -> LOCK = p + 1 };	/* SM_WAIT */
		MAYDIE;
		atomic { cl = PL; c0 = V[0]; c1 = V[1] }	/* the buffered copy */
		atomic { r = tail; rkey[r] = p; tail++; bound = true }	/* append, bind */
		MAYDIE;
		if :: p == 0 -> c0 = r :: else -> c1 = r fi;
		cl = r;
		C = tail;		/* the commit: the log first */
#ifdef ACK_AT_LOG
		acked[p] = r;
#endif
		MAYDIE;
		atomic { PL = cl; V[0] = c0; V[1] = c1 }	/* then the page */
		MAYDIE;
		atomic { bound = false; LOCK = 0 }	/* release */
		acked[p] = r;
		n--
	od;
	goto out;
died:
	atomic {
		if
#ifdef FENCE
		:: LOCK == p + 1 && bound -> LOCK = DEAD; fenced = true
		:: LOCK == p + 1 && !bound -> LOCK = 0
#else
		:: LOCK == p + 1 -> LOCK = 0
#endif
		:: else -> skip
		fi
	}
out:
	npend--
}

/* One recovery pass. */
inline recover()
{
	atomic { !rmu -> rmu = true };
	snap = fenced;		/* sm_redo_lsn: who is dead now */
	C = tail;		/* what the dead appended becomes visible */
	i = 1;
	do
	:: i < C ->
		atomic {
			(LOCK == 0 || LOCK == DEAD) ->	/* SM_RECOVER enters the fence */
			mine = LOCK == 0;
			if :: mine -> LOCK = REC :: else -> skip fi
		}
#ifdef BROKEN_NOLSN
		V[rkey[i]] = i; PL = i;
#else
		if :: PL < i -> V[rkey[i]] = i; PL = i :: else -> skip fi;
#endif
		if :: mine -> LOCK = 0 :: else -> skip fi;
		i++
	:: else -> break
	od;
	/* sync, marker, sm_redo_done: the fence it saw at its start ends */
#ifdef BROKEN_NOSNAP
	snap = true;
#endif
	atomic { if :: snap && fenced -> fenced = false; LOCK = 0 :: else -> skip fi };
	rmu = false
}

active proctype recoverer()
{
	byte i;
	bool snap, mine;

	do
	:: npend > 0 -> recover()	/* a restart, or a survivor meeting the fence */
	:: npend == 0 -> break
	od;
	recover();			/* the last one, at the final check */
	assert(V[0] >= acked[0] && V[1] >= acked[1])
}

active proctype reader()
{
	byte a;

	do
	:: npend > 0 ->
		a = acked[0];
		atomic { LOCK == 0 -> LOCK = RD };
		assert(V[0] >= a);
		LOCK = 0
	:: npend == 0 -> break
	od
}

init
{
	atomic { run putter(0, 2); run putter(1, 1) }
}
