/*
** deferred.h: the Deferred, the object everything else is built on.  Other
** files use only these functions, never the struct's fields directly except
** to read state.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_DEFERRED_H
#define DEFER_DEFERRED_H

#include "defer.h"

enum { DFR_PENDING, DFR_SUCCESS, DFR_FAILURE };

typedef struct dfr_Deferred {
  dfr_Frame fr;
  unsigned char state;   /* DFR_PENDING, DFR_SUCCESS or DFR_FAILURE */
  unsigned char calling; /* one of its user functions is running (a
                            semaphore's task: the function of the run) */
  unsigned short flags;  /* DFR_D_* below */
  int paused;            /* user pauses, plus one while waiting */
  int head, tail;        /* its entries occupy [head, tail) of slot 3 */
  int aux;               /* free for the object that owns it (semaphore.c:
                            a waiter's weight, a queued run's count of
                            arguments) */
  unsigned char inl, inl_mode; /* the kind of an entry kept inline, or 0 */
  int inl_b;             /* its b when that is a whole number */
} dfr_Deferred;

/* User value slots: 1 the canceller (or owner) while pending, the frame
** below while on a stack, the owner to tell while it waits with
** DFR_D_RELEASE; 2 the result; 3 the table of queued entries, or the one Lua
** value of a single entry kept inline (most deferreds have one entry at
** most: a callback, or an internal entry whose b is a number; it then costs
** no table). */
#define DFR_D_SLOTS 3
#define DFR_D_RESULT 2
#define DFR_D_ENTRIES 3
#define dfr_deferred_has_entries(d) ((d)->inl || (d)->head != (d)->tail)

#define DFR_D_WAITING 1    /* the result is a Deferred it waits on */
#define DFR_D_SUPPRESS 2   /* cancelled without canceller: one late fire is swallowed */
#define DFR_D_CANCELLER 4  /* slot 1 holds a canceller */
#define DFR_D_HADCANCEL 8  /* its canceller was taken by cancel() */
#define DFR_D_UNHANDLED 16 /* finished on a Failure nobody handled yet */
#define DFR_D_OWNED 32     /* slot 1 holds its owner (a frame object) whose
                              kind's cancel hook acts as the canceller */
#define DFR_D_RELEASE 64   /* waits, and slot 1 holds the owner to tell (the
                              settle hook) once the result it waits for has
                              come: a semaphore's task, whose token goes back */
#define DFR_D_CALL 128     /* a queued run: its call waits in its owner's
                              ring, right after it (semaphore.c) */
#define DFR_D_GCMT 256     /* has the metatable with __gc (see finish) */

/*
** Entry kinds.  An entry is [header, a, b, extra...] in the entries table,
** header = kind + 16 * number of extras, or [-header, a, extra...] when b is
** false (most callbacks have no errback: a chain of them takes a third less
** memory).  Kinds from DFR_E_FIRST_INTERNAL on are handled in C by the file
** that registered them.
*/
enum {
  DFR_E_CALLBACKS = 1, /* a callback, b errback (false: pass), called f(result, extra...) */
  DFR_E_CONTINUE,      /* a: the deferred waiting for this result */
  DFR_E_CHAIN,         /* a: the deferred to fire with this result */
  DFR_E_FIRST_INTERNAL,
  DFR_E_LIST = DFR_E_FIRST_INTERNAL, /* dlist.c: a list, b index */
  DFR_E_KINDS = 16
};

/* An internal entry's handler: the deferred is the frame at top, the
** entry's a, b and extras are at a..top of stack.  It may change the result
** (dfr_deferred_set_result), fire or push other frames, and returns DFR_NEXT,
** or DFR_CALL with a user function and its arguments pushed above top
** (whose return value becomes the result). */
typedef int (*dfr_EntryFn)(lua_State *L, int top, int a);
DFR_HIDDEN void dfr_deferred_entry_kind(int kind, dfr_EntryFn fn);

/* The settle hook: the deferred at didx, which waited with DFR_D_RELEASE,
** has its result and is the frame at top (or just below it); its owner is
** at oidx.  It may push frames (dfr_engine_push) above top.  Set by the
** owner's file (semaphore.c). */
typedef void (*dfr_SettleFn)(lua_State *L, int top, int didx, int oidx);
DFR_HIDDEN void dfr_deferred_on_settle(dfr_SettleFn fn);

DFR_HIDDEN dfr_Deferred *dfr_deferred_test(lua_State *L, int idx);
DFR_HIDDEN dfr_Deferred *dfr_deferred_check(lua_State *L, int idx,
                                            const char *fname);
/* Pushes a new pending Deferred. */
DFR_HIDDEN dfr_Deferred *dfr_deferred_new(lua_State *L);
/* The same, given the index of the Deferred metatable (a hot caller keeps
** it in an upvalue). */
DFR_HIDDEN dfr_Deferred *dfr_deferred_new_mt(lua_State *L, int mtidx);
/* With a new deferred below a value on top: fires it with the value (popped)
** and settles it, as dfr_deferred_push_fired. */
DFR_HIDDEN void dfr_deferred_fired_(lua_State *L, int ok);
/* Pushes a new pending Deferred owned by the frame object at oidx: cancelling
** it calls the cancel hook of the owner's frame kind (engine.h). */
DFR_HIDDEN dfr_Deferred *dfr_deferred_new_owned(lua_State *L, int oidx);
/* Pops a value and pushes an already fired deferred with it (ok: success,
** unless it is a Failure). */
DFR_HIDDEN void dfr_deferred_push_fired(lua_State *L, int ok);
/* Pops a value and makes it d's result (ok: success unless it is a Failure;
** !ok: wrapped in a Failure).  Handles a returned Deferred (steal or wait). */
DFR_HIDDEN void dfr_deferred_set_result(lua_State *L, int didx, int ok);
/* Pops a value and fires the pending deferred at didx with it; returns
** whether it now needs to run (make it a frame with dfr_engine_*).  Raises
** AlreadyCalledError when it was fired before (but swallows the one late
** fire of a deferred cancelled without canceller). */
DFR_HIDDEN int dfr_deferred_fire(lua_State *L, int didx, int ok);
/* Pops nvals values (a, b, extras) and appends an entry; returns whether the
** deferred must now run its entries. */
DFR_HIDDEN int dfr_deferred_add(lua_State *L, int didx, int kind, int nvals);
/* Whether a fired deferred is idle with entries or a result to process:
** not on a stack, not paused, not waiting, not busy with a call (the task
** of a semaphore whose function runs: fired with the semaphore, calling). */
DFR_HIDDEN int dfr_deferred_runnable(dfr_Deferred *d);
/* Whether it waits for the result of another Deferred. */
#define dfr_deferred_waiting(d) ((d)->flags & DFR_D_WAITING)
/* Marks d's failure as handled (it will not be reported at collection). */
#define dfr_deferred_handled(d) ((d)->flags &= (unsigned short)~DFR_D_UNHANDLED)

DFR_HIDDEN int dfr_deferred_resume(lua_State *L, int top);
DFR_HIDDEN void dfr_deferred_outcome(lua_State *L, int top, int ok, int ridx);
DFR_HIDDEN void dfr_deferred_abort(lua_State *L, int idx, int eidx);

DFR_HIDDEN void dfr_deferred_open(lua_State *L, int module, int core);

#endif
