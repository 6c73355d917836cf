/* SPDX-License-Identifier: MIT */
/*
 * tmode.pml - table mode's lock protocol (doc/safemap-table.5, "Table-
 * authority mode": Concurrency), checked by spin over every interleaving
 * (tests/check-model.sh runs it in make check).
 *
 * NP processes acquire and release regions of a 2-byte file (region: a bit
 * mask, byte 0 or both bytes; read or write).  Each owns an area, its
 * published index kept in two copies (left-right: the inactive copy changes
 * under an odd version, then the area flips to it, then the other copy
 * follows), and claims slots from a shared pool.  An acquisition announces
 * (slot pending, node linked in its own index), then validates (searches
 * every other LIVE area's active copy; a found entry counts if its slot is
 * pending or held with the area's incarnation, its owner's liveness byte is
 * locked, and the area is still LIVE at that incarnation afterwards), then
 * either retracts (-EBUSY) or marks the slot held.  A process attaching to
 * an area bumps the area's incarnation before it locks the liveness byte.
 *
 * Faults: one process may be stopped forever or killed (the kernel drops its
 * liveness lock) at any step; with -DNEWCOMER, process 1 may be killed at
 * any step and a third process takes its area over.
 *
 * Checked:
 *   - exclusion: no two live processes hold conflicting regions (an
 *     assertion at every grant, over ghost variables);
 *   - no stall: with a process stopped at any step the others finish (an
 *     invalid end state otherwise) and never loop waiting on it (-DNP: a
 *     non-progress cycle otherwise);
 *   - no false refusal: an -EBUSY names an entry of a process that was alive
 *     when the kernel answered for it, never a dead one's.
 *
 * Variants that must fail (tests/check-model.sh): -DBROKEN_ORDER (validate
 * before announcing: exclusion), -DBROKEN_INPLACE (one copy changed in
 * place, as a seqlock: a stopped writer leaves it odd and readers loop),
 * -DBROKEN_NOINC (a newcomer keeps the dead owner's incarnation) and
 * -DBROKEN_RECHECK (no area re-check after the liveness answer): the dead
 * owner's entries are blamed.
 *
 * A holder may change its entry's tag (its seq odd meanwhile) and be
 * stopped or killed in the middle: -DBROKEN_TAGSKIP (a changing entry read
 * as no holder) must fail exclusion.
 *
 * Not modelled here: waiting (SM_WAIT), downgrade, table growth, lockctl.
 */
#define NP 2      /* steady processes */
#define NS 2      /* slots */
#define FREE 0
#define PENDING 1
#define HELD 2
#define A_FREE 0
#define A_CLAIMING 1
#define A_LIVE 2

/* slots: state, owner area, incarnation stamp, region (bit mask), write */
byte sstate[NS]; byte sarea[NS]; byte sinc[NS]; byte sreg[NS]; bit swr[NS];
/* a tag change in progress (the slot's seq odd): its holder still holds */
bit schg[NS];
/* areas (one per owner number): state, incarnation, act copy,
 * per-copy version and membership (node i linked in copy c) */
byte astate[NP]; byte ainc[NP]; bit act[NP];
byte ver[NP * 2]; byte linked[NP * 2]; /* bit i: node i linked */
bit locked[NP];      /* the kernel's liveness byte of area k */
byte faults;         /* at most one stop or kill in a run */
bit killed[NP];
byte ghold[NP + 1]; bit gwr[NP + 1]; /* ghost */
byte gproc[NS];     /* ghost: the process that claimed slot i */
bit gdead[NP + 1];  /* ghost: process has died */

#define LNK(k, c, i) ((linked[(k) * 2 + (c)] >> (i)) & 1)
#define SETLNK(k, c, i, on) linked[(k) * 2 + (c)] = (on -> (linked[(k) * 2 + (c)] | (1 << (i))) : (linked[(k) * 2 + (c)] & ~(1 << (i))))
#define CONFLICT(r1, w1, r2, w2) (((r1) & (r2)) != 0 && ((w1) || (w2)))

/* a fault at this step: stop forever, or die (the kernel drops the lock) */
#ifdef NEWCOMER
#define STOPPING false ->
#else
#define STOPPING
#endif
#ifndef FAULTY
#define FAULTY me	/* any process may be stopped or killed */
#endif
#define STEP(me) \
	if \
	:: faults == 0 && me == FAULTY -> faults++; \
		if \
		:: STOPPING goto stopped \
		:: killed[area] = 1; goto dead \
		fi \
	:: true \
	fi

#ifdef BROKEN_TAGSKIP
#define TAGOK(i) (!schg[i])	/* "changing, so not a holder" */
#else
#define TAGOK(i) (1)		/* a tag change leaves the entry an entry */
#endif

/* Is slot i, found linked in area k at incarnation inc, a live entry of
 * another owner conflicting with (reg, wr)? */
inline judge(k, inc, i, reg, wr, res)
{
	res = 0;
	if
	:: sstate[i] != FREE && sarea[i] == k && sinc[i] == inc &&
	   CONFLICT(sreg[i], swr[i], reg, wr) && TAGOK(i) -> res = 1
	:: else -> skip
	fi;
	/* liveness: the kernel's answer (a system call, conflict path only) */
	atomic {
		if
		:: res == 1 && !locked[k] -> res = 0
		:: else -> skip
		fi;
		/* ghost: the process blamed was alive when the kernel answered */
		if
		:: res == 1 -> blamed_alive = !gdead[gproc[i]]
		:: else -> skip
		fi
	}
	/* the area must still be LIVE at inc after that answer: a newcomer
	 * bumps the incarnation before it locks the byte */
#ifndef BROKEN_RECHECK
	if
	:: res == 1 && !(astate[k] == A_LIVE && ainc[k] == inc) -> res = 0
	:: else -> skip
	fi
#endif
}

/* Search area k for a conflict: copy = act, version even and unchanged
 * across the reads (else read again).  found: slot index + 1, 0 none. */
inline search(k, reg, wr, found)
{
	found = 0;
again:
	if
	:: astate[k] != A_LIVE -> goto searched
	:: else -> skip
	fi;
	inc = ainc[k];
	c = act[k];
	v = ver[k * 2 + c];
	if
	:: v % 2 == 1 -> goto again
	:: else -> skip
	fi;
	mask = linked[k * 2 + c];
	i = 0;
	do
	:: i < NS ->
		if
		:: (mask >> i) & 1 -> judge(k, inc, i, reg, wr, res);
			if
			:: res -> found = i + 1
			:: else -> skip
			fi
		:: else -> skip
		fi;
		i++
	:: else -> break
	od;
	if
	:: ver[k * 2 + c] != v -> found = 0; goto again
	:: else -> skip
	fi;
searched:
	skip
}

/* Link (on = 1) or unlink node s in both copies of my area, left-right:
 * the inactive copy under an odd version, flip, then the other one. */
#ifndef BROKEN_INPLACE
#define LR(me, s, on) \
	c = 1 - act[me]; \
	STEP(me); ver[me * 2 + c]++; \
	STEP(me); SETLNK(me, c, s, on); \
	STEP(me); ver[me * 2 + c]++; \
	STEP(me); act[me] = c; \
	STEP(me); ver[me * 2 + 1 - c]++; \
	STEP(me); SETLNK(me, 1 - c, s, on); \
	STEP(me); ver[me * 2 + 1 - c]++
#else
#define LR(me, s, on) \
	c = act[me]; \
	STEP(me); ver[me * 2 + c]++; \
	STEP(me); SETLNK(me, c, s, on); \
	STEP(me); ver[me * 2 + c]++
#endif

/* Attach to area k: claim it by bumping its incarnation (before anyone
 * locks its byte), lock the byte, empty the copies, publish LIVE. */
inline attach(me, k, ok)
{
	ok = 0;
	atomic {
		if
		:: astate[k] != A_LIVE || !locked[k] ->
#ifndef BROKEN_NOINC
			ainc[k]++;
#endif
			astate[k] = A_CLAIMING; ok = 1
		:: else -> skip
		fi
	}
	if
	:: ok ->
		STEP(me);
		atomic { if :: !locked[k] -> locked[k] = 1; holds = 1 :: else -> ok = 0 fi }
	:: else -> skip
	fi;
	if
	:: ok ->
		STEP(me); linked[k * 2] = 0; linked[k * 2 + 1] = 0;
		STEP(me);
		atomic { if :: astate[k] == A_CLAIMING -> astate[k] = A_LIVE :: else -> ok = 0 fi }
	:: else -> skip
	fi
}

proctype owner(byte me; byte area; byte ops; bit newcomer)
{
	byte s, i, c, v, inc, res, found, k, reg, n, mask;
	bit wr, ok, holds, blamed_alive;

	/* a newcomer takes area 1 over once its owner has died */
	if
	:: newcomer ->
end_wait:	killed[area] == 1 && locked[area] == 0
	:: else -> skip
	fi;

	attach(me, area, ok);
	if
	:: !ok -> goto done	/* the area was taken: another one, in life */
	:: else -> skip
	fi;
	n = 0;
	do
	:: n < ops ->
		n++;
		/* what to lock: byte 0, byte 1 or both; read or write */
		if
		:: newcomer || (FAULTY == 1 && me == 1) -> reg = 3; wr = 1	/* fewer states */
		:: else ->
			if :: reg = 1 :: reg = 3 fi;
			if :: wr = 0 :: wr = 1 fi
		fi;
		/* claim a slot: CAS free -> pending, stamped with our incarnation
		 * (a slot of a dead incarnation is reclaimed the same way) */
		s = 0;
		do
		:: s < NS ->
			atomic {
				if
				:: sstate[s] == FREE ||
				   !(astate[sarea[s]] == A_LIVE && ainc[sarea[s]] == sinc[s]) ->
					sstate[s] = PENDING; sarea[s] = area;
					sinc[s] = ainc[area]; sreg[s] = reg; swr[s] = wr;
					gproc[s] = me;
					break
				:: else -> s++
				fi
			}
		:: else -> break
		od;
		if
		:: s == NS -> goto next	/* full: -ENOLCK (no dead slot was left) */
		:: else -> skip
		fi;
#ifndef BROKEN_ORDER
		LR(area, s, 1);		/* announce */
#endif
		/* validate against every other area */
		found = 0;
		k = 0;
		do
		:: k < NP ->
			if
			:: k != area && found == 0 -> STEP(me); search(k, reg, wr, found)
			:: else -> skip
			fi;
			k++
		:: else -> break
		od;
#ifdef BROKEN_ORDER
		LR(area, s, 1);
#endif
		if
		:: found ->
			/* -EBUSY naming slot found - 1, never a dead process's */
			assert(blamed_alive);
			/* retract */
			LR(area, s, 0);
			STEP(me); sstate[s] = FREE
		:: else ->
			STEP(me);
			sstate[s] = HELD;
			/* exclusion: no other live process holds a conflicting region
			 * (ghost state: what each process holds between its grant and
			 * the start of its release) */
			atomic {
				i = 0;
				do
				:: i < NP + 1 ->
					assert(!(i != me && CONFLICT(ghold[i], gwr[i], reg, wr)));
					i++
				:: else -> break
				od;
				ghold[me] = reg; gwr[me] = wr
			}
			/* a tag change (sm_slice_tag): seq odd while the tag is
			 * rewritten; the holder may stop or die in the middle */
			if
			:: STEP(me); schg[s] = 1; STEP(me); schg[s] = 0
			:: skip
			fi;
			/* release */
			ghold[me] = 0;
			LR(area, s, 0);
			STEP(me); sstate[s] = FREE
		fi;
next:
		skip
	:: else -> break
	od;
progress_done:
done:
	skip;
	goto end;
dead:
	atomic {
		gdead[me] = 1;
		ghold[me] = 0;	/* a dead holder's region is free */
		if :: holds -> locked[area] = 0 :: else -> skip fi	/* the kernel drops its locks */
	}
	goto end;
stopped:
end_stopped:
	(false);
end:
	skip
}

init {
	atomic {
		run owner(0, 0, 1, 0);
		run owner(1, 1, 1, 0);
#ifdef NEWCOMER
		run owner(NP, 1, 1, 1)
#endif
	}
}
