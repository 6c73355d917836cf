/* SPDX-License-Identifier: MIT */
/*
 * redo.pml - the bind / commit / checkpoint / trim protocol of lib/redo.c
 * and lib/log_trim.c, for spin (tests/check-redo-model.sh).
 *
 * NB binders each append one record, bind a buffered slice to it
 * (publish the entry's first LSN in the log header, then read the trim
 * target and the trim point: -ESTALE if either is above the record) and,
 * if bound, commit: the log first (as sm_log_commit), then the page,
 * which ends the binding.  Another process commits the log at any moment
 * (group commit), and a checkpointer computes the redo point (the lowest
 * held first LSN, or the committed tail) and trims there: it announces
 * its target, reads the entries, and moves the trim point no higher than
 * the lowest held first LSN.  Any process may stop (be killed) at any
 * step: a binder killed while bound leaves its entry held.
 *
 * Checked: a bound record is never trimmed before its page is synced (in
 * every state, also with its binder dead); no page is written before its
 * record is committed.  Broken variants (-D) must fail:
 *   BROKEN_NOTARGET  the bind does not look at the trim target
 *   BROKEN_LATETARGET the trim announces its target after reading the
 *                    entries
 *   BROKEN_NOWAL     the commit writes the page without committing the log
 */
#define NB 2

byte tail = 1;   /* the next record's LSN (records are 1, 2, ...) */
byte C = 1;      /* committed tail: records below it are committed */
byte FIRST = 1;  /* trim point: records below it are discarded */
byte TARGET = 0; /* a trim's announced target, 0: none */
byte efirst[NB]; /* entry i's first LSN, 0: free */
bool held[NB];   /* ghost: binder i's bind succeeded, its page not synced */
byte rec[NB];    /* ghost: binder i's record */

/* in every state: no held binding's record is discarded */
#define SAFE (!(held[0] && rec[0] < FIRST) && !(held[1] && rec[1] < FIRST))

active [NB] proctype binder()
{
	byte r, t, f;

	atomic { r = tail; tail++; rec[_pid] = r }	/* append */
	efirst[_pid] = r;				/* publish the entry */
#ifndef BROKEN_NOTARGET
	t = TARGET;
#endif
	f = FIRST;
	if
	:: r < f || (t != 0 && r < t) -> efirst[_pid] = 0; goto done	/* -ESTALE */
	:: else -> held[_pid] = true
	fi;
	/* the commit: the log first */
#ifndef BROKEN_NOWAL
	atomic { if :: C < tail -> C = tail :: else -> skip fi }
#endif
	assert(C > r);			/* write-ahead: then the page */
	atomic { held[_pid] = false; efirst[_pid] = 0 }	/* synced: unbound */
done:	skip
}

active proctype committer()
{
	do
	:: atomic { C = tail }
	:: break
	od
}

active proctype checkpointer()
{
	byte L, fl, i, e;

	do
	:: /* the redo point: lowest held first LSN, or the committed tail */
		L = C;
		i = 0;
		do
		:: i < NB -> e = efirst[i]; if :: e != 0 && e < L -> L = e :: else -> skip fi; i++
		:: else -> break
		od;
		/* the trim */
#ifndef BROKEN_LATETARGET
		TARGET = L;
#endif
		fl = 255;
		i = 0;
		do
		:: i < NB -> e = efirst[i]; if :: e != 0 && e < fl -> fl = e :: else -> skip fi; i++
		:: else -> break
		od;
#ifdef BROKEN_LATETARGET
		TARGET = L;
#endif
		if :: fl < L -> L = fl :: else -> skip fi;
		if :: L > FIRST -> FIRST = L :: else -> skip fi;
		TARGET = 0
	:: break
	od
}

active proctype monitor()
{
	assert(SAFE)
}
