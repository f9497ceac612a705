/*
** semaphore.c: the deferred semaphore and the lock (a semaphore of one that
** speaks of being locked).  Counts live in C; waiters are deferreds in a
** ring, served strictly first in, first out.  Waking is a frame of the
** engine: a release inside a woken task only gives the tokens back, and the
** frame below wakes the next waiter when that task's chain is done, so a
** million queued tasks drain on a flat stack, in order.  A queued run keeps
** its function and arguments in the ring, right after its deferred, and the
** semaphore's frame makes the call when it wakes it: no table per task.
** The token logic (fits, take, give) is kept in the few functions marked
** "tokens" so that another store of tokens can serve the same API.
** SPDX-License-Identifier: MIT
*/
#include <string.h>

#include "deferred.h"
#include "engine.h"
#include "failure.h"
#include "ring.h"
#include "semaphore.h"


/* User value slots: the frame below; the ring of waiters; the task whose
** function the frame is calling. */
enum { S_BELOW = DFR_SLOT_BELOW, S_WAITERS, S_TASK, S_SLOTS = S_TASK };

typedef struct Sem {
  dfr_Frame fr;
  unsigned char is_lock;
  unsigned char calling;   /* the frame is out on the call of S_TASK */
  unsigned char lost;      /* that call's outcome was lost to an error: the
                              task has failed with it, and is settled next */
  lua_Integer limit, active; /* tokens free = limit - active, never below 0 */
  lua_Integer waiting;       /* live waiters (the ring may hold cancelled ones) */
  lua_Integer started, finished, failed;
  dfr_Ring waiters;
} Sem;

/* ------------------------------------------------------------- tokens */

static lua_Integer free_tokens(const Sem *s) {
  return s->limit > s->active ? s->limit - s->active : 0;
}

/* Drops cancelled waiters at the head, with the call of a queued run;
** returns the head waiter (the ring anchors it), or NULL. */
static dfr_Deferred *head(lua_State *L, int sidx, Sem *s) {
  while (s->waiters.count > 0) {
    dfr_Deferred *w;
    dfr_ring_peek(L, sidx, S_WAITERS, &s->waiters);
    w = (dfr_Deferred *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (w->state == DFR_PENDING) return w;
    dfr_ring_drop(L, sidx, S_WAITERS, &s->waiters,
                  w->flags & DFR_D_CALL ? 2 + w->aux : 1);
  }
  return NULL;
}

/* The tokens a waiter takes: a queued run one (its aux counts its
** arguments); an acquire its aux. */
static lua_Integer weight(const dfr_Deferred *w) {
  return w->flags & DFR_D_CALL ? 1 : w->aux;
}

/* The head waiter if it can be served now, else NULL. */
static dfr_Deferred *wakeable(lua_State *L, int sidx, Sem *s) {
  dfr_Deferred *w;
  if (s->waiting == 0) return NULL;
  w = head(L, sidx, s);
  return w != NULL && weight(w) <= free_tokens(s) ? w : NULL;
}

/* Gives n tokens back; returns whether waiters can now be woken. */
static int give(lua_State *L, int sidx, Sem *s, lua_Integer n) {
  s->active -= n;
  return !s->fr.onstack && wakeable(L, sidx, s) != NULL;
}

/* ------------------------------------------------------------ checks */

static Sem *check_sem(lua_State *L, const char *fname) {
  Sem *s = (Sem *)dfr_testudata(L, 1, DFR_SEM_MT);
  if (s == NULL) s = (Sem *)dfr_testudata(L, 1, DFR_LOCK_MT);
  if (s == NULL) dfr_selferror(L, fname, "Semaphore");
  return s;
}

/* The optional token count at idx: a positive integer not above the limit. */
static lua_Integer check_n(lua_State *L, Sem *s, int idx, const char *fname) {
  lua_Integer n;
  if (lua_isnoneornil(L, idx)) return 1;
  n = dfr_checkcount(L, idx, idx - 1, fname, "n");
  if (n > s->limit) {
    lua_pushfstring(L, "%d", (int)s->limit);
    dfr_error(L, "bad argument #1 to '%s' (n is above the limit of %s)",
              fname, lua_tostring(L, -1));
  }
  return n;
}

/* ----------------------------------------------------------- waking */

/* The task w (at widx) has its result, or waits for one: its token goes back
** now, or once that result comes (slot 1 and DFR_D_RELEASE: deferred.c then
** calls task_settled).  Returns whether waiters can be woken now.  Nothing
** here allocates. */
static int task_done(lua_State *L, int sidx, Sem *s, int widx) {
  dfr_Deferred *w = (dfr_Deferred *)lua_touserdata(L, widx);
  if (dfr_deferred_waiting(w)) {
    lua_pushvalue(L, sidx);
    dfr_setslot(L, widx, DFR_SLOT_BELOW);
    w->flags |= DFR_D_RELEASE;
    return 0;
  }
  s->finished++;
  if (w->state == DFR_FAILURE) s->failed++;
  return give(L, sidx, s, 1);
}

/* The settle hook: the task at widx had waited and now has its result. */
static void task_settled(lua_State *L, int top, int widx, int sidx) {
  if (task_done(L, sidx, (Sem *)lua_touserdata(L, sidx), widx))
    dfr_engine_push(L, top, sidx);
}

/* The task of the frame at top has its outcome (or the error that lost it,
** s->lost): its token goes back, and its chain runs above the frame. */
static int task_ended(lua_State *L, int top, Sem *s) {
  int widx;
  dfr_getslot(L, top, S_TASK);
  widx = lua_gettop(L);
  lua_pushnil(L);
  dfr_setslot(L, top, S_TASK);
  s->lost = 0;
  task_done(L, top, s, widx);
  if (dfr_deferred_runnable((dfr_Deferred *)lua_touserdata(L, widx)))
    dfr_engine_push(L, top, widx);
  return DFR_NEXT;
}

/* Wakes the queued run at the head of the ring: takes its record out and
** asks for the call of its function.  Its deferred is fired with the
** semaphore, as a woken waiter is, but stays busy (calling) until the
** outcome, so nothing runs its chain or cancels it meanwhile. */
static int start_task(lua_State *L, int top, Sem *s, dfr_Deferred *w) {
  luaL_checkstack(L, w->aux + 8, "too many arguments"); /* before any change */
  dfr_ring_pop_n(L, top, S_WAITERS, &s->waiters, w->aux + 2);
  w->flags &= (unsigned short)~DFR_D_CALL;
  s->waiting--;
  s->active++;
  s->started++;
  w->calling = 1;
  lua_pushvalue(L, top);
  dfr_deferred_fire(L, top + 1, 1);
  lua_pushvalue(L, top + 1);
  dfr_setslot(L, top, S_TASK);
  lua_remove(L, top + 1);
  s->calling = 1;
  return DFR_CALL;
}

/* The frame: settle a task whose call's outcome was lost; else wake the
** head waiter while it fits; each woken waiter's chain runs above this frame
** before the next is woken. */
static int sem_resume(lua_State *L, int top) {
  Sem *s = (Sem *)lua_touserdata(L, top);
  dfr_Deferred *w;
  if (s->lost) return task_ended(L, top, s);
  w = wakeable(L, top, s);
  if (w == NULL) return DFR_POP;
  if (w->flags & DFR_D_CALL) return start_task(L, top, s, w);
  dfr_ring_pop(L, top, S_WAITERS, &s->waiters);
  s->waiting--;
  s->active += w->aux;
  lua_pushvalue(L, top);
  dfr_deferred_fire(L, -2, 1);
  dfr_engine_push(L, top, lua_gettop(L));
  return DFR_NEXT;
}

/* The task's function returned: its deferred takes the outcome (first: a
** memory error there is caught by sem_abort with nothing else changed). */
static void sem_outcome(lua_State *L, int top, int ok, int ridx) {
  Sem *s = (Sem *)lua_touserdata(L, top);
  dfr_Deferred *w;
  dfr_getslot(L, top, S_TASK);
  w = (dfr_Deferred *)lua_touserdata(L, -1);
  lua_pushvalue(L, ridx);
  dfr_deferred_set_result(L, -2, ok);
  w->calling = 0;
  s->calling = 0;
  lua_settop(L, top);
  task_ended(L, top, s);
}

/* An error escaped the engine with the frame on top: if it was out on a
** task's call, the task fails with the error, to be settled when the frame
** runs again.  Nothing here allocates. */
static void sem_abort(lua_State *L, int idx, int eidx) {
  Sem *s = (Sem *)lua_touserdata(L, idx);
  if (!s->calling) return;
  s->calling = 0;
  dfr_getslot(L, idx, S_TASK);
  dfr_deferred_abort(L, lua_gettop(L), eidx);
  lua_pop(L, 1);
  s->lost = 1;
}

/* A pending acquire is cancelled: it no longer waits (the ring skips it). */
static int sem_cancel(lua_State *L, int sidx, int didx) {
  Sem *s = (Sem *)lua_touserdata(L, sidx);
  (void)L, (void)didx;
  s->waiting--;
  /* it still looks pending here: the frame decides once it has failed */
  return s->waiting > 0;
}

/* ---------------------------------------------------------- methods */

/* Queues the waiter on top (for w->aux tokens): the last step, so that a
** memory error before it leaves no waiter half made in the ring. */
static void enqueue(lua_State *L, Sem *s) {
  dfr_ring_push(L, 1, S_WAITERS, &s->waiters, -1);
  s->waiting++;
}

static int sem_acquire(lua_State *L) {
  Sem *s = check_sem(L, "acquire");
  lua_Integer n = s->is_lock ? 1 : check_n(L, s, 2, "acquire");
  lua_settop(L, 1);
  if (s->waiting == 0 && n <= free_tokens(s)) {
    dfr_deferred_new(L); /* first: running out of memory takes no token */
    s->active += n;
    lua_pushvalue(L, 1);
    dfr_deferred_fire(L, -2, 1);
    return 1;
  }
  dfr_deferred_new_owned(L, 1)->aux = (int)n;
  enqueue(L, s);
  return 1;
}

/* core.release(sem, n) */
static int sem_release(lua_State *L) {
  Sem *s = check_sem(L, "release");
  lua_Integer n = s->is_lock ? 1 : check_n(L, s, 2, "release");
  if (s->is_lock && s->active == 0)
    return dfr_error(L, "calling '%s' on a Lock that is not locked%s",
                     "release", "");
  if (n > s->active) {
    lua_pushfstring(L, "%d", (int)n);
    lua_pushfstring(L, "%d", (int)s->active);
    return dfr_error(L, "bad argument #1 to 'release' (releasing %s tokens "
                        "but %s are taken)", lua_tostring(L, -2),
                     lua_tostring(L, -1));
  }
  lua_settop(L, 1);
  if (!give(L, 1, s, n)) return 0;
  return dfr_engine_start(L, 1);
}

/* core.take(sem, f): a token for a run now, if one is free and nobody waits:
** then the run's deferred, made before the token is taken (so that running
** out of memory here takes nothing), with room on the stack for the call.
** The hot path: its upvalues are the two metatables and the Deferred's, to
** check self cheaply. */
static int sem_take(lua_State *L) {
  Sem *s = (Sem *)lua_touserdata(L, 1);
  int ok = 0;
  if (s != NULL && lua_getmetatable(L, 1)) {
    ok = lua_rawequal(L, -1, lua_upvalueindex(1)) ||
         lua_rawequal(L, -1, lua_upvalueindex(2));
    lua_pop(L, 1);
  }
  if (!ok) dfr_selferror(L, "run", "Semaphore");
  dfr_checkfunction(L, 2, 1, "run");
  if (s->waiting == 0 && s->active < s->limit) {
    luaL_checkstack(L, 64, "too many arguments");
    dfr_deferred_new_mt(L, lua_upvalueindex(3));
    s->active++;
    s->started++;
  } else {
    lua_pushboolean(L, 0);
  }
  return 1;
}

/* Makes the run's deferred r (at 1) wait on the deferred x (at 2) that its
** function returned, or take x's result; protected: it may run out of
** memory. */
static int link_task(lua_State *L) {
  lua_settop(L, 2);
  dfr_deferred_set_result(L, 1, 1);
  return 0;
}

/* core.ran(sem, r, ok, value): the function of a run that had its token ran
** (r: the deferred take made); returns what the driver must run next (the
** chain of r, the semaphore waking waiters).  Nothing here can leave the
** token taken: a task whose deferred cannot be made to follow the one it
** returned (memory ran out) has failed, with the memory error.  Internal:
** sem and r are trusted. */
static int sem_ran(lua_State *L) {
  Sem *s = (Sem *)lua_touserdata(L, 1);
  dfr_Deferred *r = (dfr_Deferred *)lua_touserdata(L, 2);
  int ok = lua_toboolean(L, 3);
  lua_settop(L, 4);
  if (ok && dfr_deferred_test(L, 4)) { /* r follows the deferred returned */
    int status;
    lua_pushcfunction(L, link_task);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 4);
    r->state = DFR_SUCCESS;
    status = lua_pcall(L, 2, 0, 0);
    if (status == 0) {
      int wake = task_done(L, 1, s, 2), run = dfr_deferred_runnable(r);
      if (!wake && !run) return 0;
      return dfr_engine_start2(L, wake ? 1 : 0, run ? 2 : 0);
    }
    r->state = DFR_PENDING;
    ok = 0;
    lua_replace(L, 4);
  }
  if (!ok && !dfr_is_failure(L, 4)) { /* not made by the handler: memory */
    dfr_failure_push_safe(L, 4);
    lua_replace(L, 4);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 4);
  dfr_deferred_fired_(L, ok);
  if (!task_done(L, 1, s, 2)) return 0;
  return dfr_engine_start(L, 1);
}

/* core.queue_run(sem, f, ...): a run that must wait for its token (one: a
** run's weight is 1, and aux counts its arguments).  Its record goes into
** the ring whole, or not at all: the deferred, f and the arguments. */
static int sem_queue_run(lua_State *L) {
  Sem *s = (Sem *)lua_touserdata(L, 1);
  int n = lua_gettop(L);
  dfr_Deferred *w;
  luaL_checkstack(L, 4, "too many arguments");
  w = dfr_deferred_new_owned(L, 1); /* n + 1 */
  w->aux = n - 2;
  w->flags |= DFR_D_CALL;
  lua_insert(L, 2); /* the record: w, f, args at 2..n + 1 */
  dfr_ring_push_n(L, 1, S_WAITERS, &s->waiters, 2, n);
  s->waiting++;
  lua_settop(L, 2);
  return 1;
}

/* core.set_limit(sem, n) */
static int sem_set_limit(lua_State *L) {
  Sem *s = check_sem(L, "set_limit");
  lua_Integer n;
  if (s->is_lock) return dfr_error(L, "a Lock's limit is always 1%s%s", "", "");
  n = dfr_checkcount(L, 2, 1, "set_limit", "the limit");
  s->limit = n;
  lua_settop(L, 1);
  if (s->fr.onstack || wakeable(L, 1, s) == NULL) return 0;
  return dfr_engine_start(L, 1);
}

static int sem_stats(lua_State *L) {
  Sem *s = check_sem(L, "stats");
  lua_createtable(L, 0, 7);
#define FIELD(name, v)        \
  lua_pushinteger(L, (v));    \
  lua_setfield(L, -2, name)
  FIELD("tokens", free_tokens(s));
  FIELD("limit", s->limit);
  FIELD("waiting", s->waiting);
  FIELD("active", s->active);
  FIELD("started", s->started);
  FIELD("finished", s->finished);
  FIELD("failed", s->failed);
#undef FIELD
  return 1;
}

static int sem_index(lua_State *L) {
  Sem *s = (Sem *)lua_touserdata(L, 1);
  const char *k = dfr_field_key(L);
  if (k == NULL) return 1;
  if (strcmp(k, "tokens") == 0) lua_pushinteger(L, free_tokens(s));
  else if (strcmp(k, "limit") == 0) lua_pushinteger(L, s->limit);
  else if (strcmp(k, "waiting") == 0) lua_pushinteger(L, s->waiting);
  else if (strcmp(k, "active") == 0) lua_pushinteger(L, s->active);
  else if (strcmp(k, "locked") == 0 && s->is_lock) lua_pushboolean(L, s->active > 0);
  else lua_pushnil(L);
  return 1;
}

static int sem_tostring(lua_State *L) {
  Sem *s = (Sem *)lua_touserdata(L, 1);
  if (s->is_lock)
    lua_pushfstring(L, "<Lock at %p %s, %d waiting>", (void *)s,
                    s->active ? "locked" : "unlocked", (int)s->waiting);
  else
    lua_pushfstring(L, "<Semaphore at %p %d/%d taken, %d waiting>", (void *)s,
                    (int)s->active, (int)s->limit, (int)s->waiting);
  return 1;
}

static Sem *new_sem(lua_State *L, const char *mt, lua_Integer limit) {
  Sem *s = (Sem *)dfr_newud(L, sizeof *s, S_SLOTS);
  memset(s, 0, sizeof *s);
  s->fr.kind = DFR_FRAME_SEMAPHORE;
  s->limit = limit;
  dfr_getmt(L, mt);
  lua_setmetatable(L, -2);
  return s;
}

static int f_semaphore(lua_State *L) {
  lua_Integer n = dfr_checkcount(L, 1, 1, "semaphore", "tokens");
  new_sem(L, DFR_SEM_MT, n);
  return 1;
}

static int f_lock(lua_State *L) {
  new_sem(L, DFR_LOCK_MT, 1)->is_lock = 1;
  return 1;
}

void dfr_semaphore_open(lua_State *L, int module, int core) {
  static const dfr_FrameKind kind = {sem_resume, sem_outcome, sem_cancel,
                                     sem_abort};
  static const luaL_Reg methods[] = {
      {"acquire", sem_acquire}, {"stats", sem_stats}, {NULL, NULL}};
  static const luaL_Reg lock_methods[] = {
      {"acquire", sem_acquire}, {NULL, NULL}};
  static const luaL_Reg corefns[] = {
      {"sem_release", sem_release},
      {"sem_queue_run", sem_queue_run},
      {"sem_set_limit", sem_set_limit}, {NULL, NULL}};
  dfr_engine_kind(DFR_FRAME_SEMAPHORE, &kind);
  dfr_deferred_on_settle(task_settled);
  lua_pushvalue(L, core);
  /* the Lua part sets __newindex (sem.limit = n) through these */
  dfr_newclass(L, DFR_SEM_MT, methods, sem_index, sem_tostring, -1);
  lua_setfield(L, -2, "SemaphoreMT");
  dfr_newclass(L, DFR_LOCK_MT, lock_methods, sem_index, sem_tostring, -1);
  lua_setfield(L, -2, "LockMT");
  dfr_setfuncs(L, corefns, 0);
  dfr_getmt(L, DFR_SEM_MT);
  dfr_getmt(L, DFR_LOCK_MT);
  dfr_getmt(L, DFR_DEFERRED_MT);
  lua_pushcclosure(L, sem_take, 3);
  lua_setfield(L, -2, "sem_take");
  lua_pushcfunction(L, sem_ran);
  lua_setfield(L, -2, "sem_ran");
  lua_pop(L, 1);
  lua_pushcfunction(L, f_semaphore);
  lua_setfield(L, module, "semaphore");
  lua_pushcfunction(L, f_lock);
  lua_setfield(L, module, "lock");
}
