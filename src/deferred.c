/*
** deferred.c: the Deferred.  Its Lua values live in user value slots (the
** canceller or the frame below, the result, the entries table); state and
** counts live in the struct.  Running the chain is the frame kind
** DFR_FRAME_DEFERRED of the engine: entries are popped before their function
** runs, and a callback that returns a Deferred hands the chain over without
** any C recursion (Twisted's _runCallbacks, made iterative across frames).
** SPDX-License-Identifier: MIT
*/
#include <string.h>

#include "deferred.h"
#include "engine.h"
#include "failure.h"

static dfr_EntryFn entry_fns[DFR_E_KINDS];
static dfr_SettleFn settle_fn;

void dfr_deferred_on_settle(dfr_SettleFn fn) { settle_fn = fn; }

void dfr_deferred_entry_kind(int kind, dfr_EntryFn fn) {
  entry_fns[kind] = fn;
}

dfr_Deferred *dfr_deferred_test(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  int ok;
  if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
  dfr_getmt(L, DFR_DEFERRED_MT);
  ok = lua_rawequal(L, -1, -2);
  if (!ok) { /* or the one with __gc */
    lua_pop(L, 1);
    dfr_getmt(L, DFR_DEFERRED_GC_MT);
    ok = lua_rawequal(L, -1, -2);
  }
  lua_pop(L, 2);
  return ok ? (dfr_Deferred *)p : NULL;
}

dfr_Deferred *dfr_deferred_check(lua_State *L, int idx, const char *fname) {
  dfr_Deferred *d = dfr_deferred_test(L, idx);
  if (d == NULL) {
    if (idx == 1) dfr_selferror(L, fname, "Deferred");
    dfr_argerror(L, idx - 1, fname, "Deferred", idx);
  }
  return d;
}

dfr_Deferred *dfr_deferred_new_mt(lua_State *L, int mtidx) {
  dfr_Deferred *d;
  mtidx = dfr_absindex(L, mtidx);
  d = (dfr_Deferred *)dfr_newud(L, sizeof *d, DFR_D_SLOTS);
  memset(d, 0, sizeof *d);
  d->fr.kind = DFR_FRAME_DEFERRED;
  d->head = d->tail = 1;
  lua_pushvalue(L, mtidx);
  lua_setmetatable(L, -2);
  return d;
}

dfr_Deferred *dfr_deferred_new(lua_State *L) {
  dfr_Deferred *d;
  dfr_getmt(L, DFR_DEFERRED_MT);
  d = dfr_deferred_new_mt(L, -1);
  lua_remove(L, -2);
  return d;
}

dfr_Deferred *dfr_deferred_new_owned(lua_State *L, int oidx) {
  dfr_Deferred *d;
  oidx = dfr_absindex(L, oidx);
  d = dfr_deferred_new(L);
  lua_pushvalue(L, oidx);
  dfr_setslot(L, -2, DFR_SLOT_BELOW);
  d->flags |= DFR_D_OWNED;
  return d;
}

#define is_waiting(d) ((d)->flags & DFR_D_WAITING)
/* fired, and nothing left to run or wait for */
#define is_idle(d) (dfr_deferred_runnable(d) && !dfr_deferred_has_entries(d))

int dfr_deferred_runnable(dfr_Deferred *d) {
  return d->state != DFR_PENDING && !d->fr.onstack && !d->paused &&
         !is_waiting(d) && !d->calling;
}

/* ------------------------------------------------------------- results */

/* Stores the value on top (popped) as the result with the given state. */
static void store_result(lua_State *L, int didx, dfr_Deferred *d, int state) {
  dfr_setslot(L, didx, DFR_D_RESULT);
  d->state = (unsigned char)state;
}

/* The result at vidx is the Deferred x: take its result now if it has one
** (the "steal" case), else wait for it (Twisted C1). */
static void take_deferred(lua_State *L, int didx, dfr_Deferred *d, int xidx,
                          dfr_Deferred *x) {
  if (x == d) {
    lua_pushliteral(L, "a callback returned the Deferred it was attached to");
    dfr_failure_push(L, -1, 0);
    lua_remove(L, -2);
    store_result(L, didx, d, DFR_FAILURE);
    return;
  }
  if (x->state != DFR_PENDING && !x->paused && !is_waiting(x)) {
    dfr_getslot(L, xidx, DFR_D_RESULT);
    store_result(L, didx, d, x->state);
    lua_pushnil(L);
    store_result(L, xidx, x, DFR_SUCCESS);
    dfr_deferred_handled(x);
    return;
  }
  /* Wait: the CONTINUE entry goes in first, so that a memory error leaves d
  ** as it was. */
  lua_pushvalue(L, didx);
  dfr_deferred_add(L, xidx, DFR_E_CONTINUE, 1);
  lua_pushvalue(L, xidx);
  dfr_setslot(L, didx, DFR_D_RESULT);
  d->flags |= DFR_D_WAITING;
  d->paused++;
}

void dfr_deferred_set_result(lua_State *L, int didx, int ok) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, didx);
  dfr_Deferred *x;
  int v = lua_gettop(L);
  didx = dfr_absindex(L, didx);
  if (!ok || dfr_is_failure(L, v)) {
    if (ok || !dfr_is_failure(L, v)) {
      dfr_failure_push(L, v, 0);
      lua_replace(L, v);
    }
    store_result(L, didx, d, DFR_FAILURE);
  } else if ((x = dfr_deferred_test(L, v)) != NULL) {
    take_deferred(L, didx, d, v, x);
    lua_settop(L, v - 1);
  } else {
    store_result(L, didx, d, DFR_SUCCESS);
  }
}

int dfr_deferred_fire(lua_State *L, int didx, int ok) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, didx);
  didx = dfr_absindex(L, didx);
  if (d->state != DFR_PENDING) {
    if (d->flags & DFR_D_SUPPRESS) {
      d->flags &= (unsigned short)~DFR_D_SUPPRESS;
      lua_pop(L, 1);
      return 0;
    }
    dfr_error_raise(L, "AlreadyCalledError", "the Deferred was already fired");
  }
  if (ok && dfr_is_failure(L, -1)) ok = 0;
  if (!ok && !dfr_is_failure(L, -1)) {
    int v = lua_gettop(L);
    dfr_traceback(L, NULL, 1);
    dfr_failure_push(L, v, v + 1);
    lua_replace(L, v);
    lua_settop(L, v);
  }
  store_result(L, didx, d, ok ? DFR_SUCCESS : DFR_FAILURE);
  if (d->flags & (DFR_D_CANCELLER | DFR_D_OWNED)) {
    lua_pushnil(L); /* the canceller is not needed any more (Twisted X6) */
    dfr_setslot(L, didx, DFR_SLOT_BELOW);
    d->flags &= (unsigned short)~(DFR_D_CANCELLER | DFR_D_OWNED);
  }
  return dfr_deferred_runnable(d);
}

/* ------------------------------------------------------------- entries */

/* How an inline entry keeps its b: false, a whole number in inl_b, or the
** entry is (false, value) and the slot holds b. */
enum { INL_BFALSE, INL_BINT, INL_SWAP };

/* Whether the entry (a, b) at first, first+1 can be kept inline; sets the
** mode and stores its Lua value in slot 3. */
static int put_inline(lua_State *L, int didx, dfr_Deferred *d, int kind,
                      int first, int nvals) {
  int bt = nvals < 2 ? LUA_TNIL : lua_type(L, first + 1);
  int afalse = lua_type(L, first) == LUA_TBOOLEAN && !lua_toboolean(L, first);
  lua_Integer n = 0;
  if (bt == LUA_TNIL || (bt == LUA_TBOOLEAN && !lua_toboolean(L, first + 1))) {
    d->inl_mode = INL_BFALSE;
    lua_pushvalue(L, first);
  } else if (bt == LUA_TNUMBER && !afalse && dfr_tointeger(L, first + 1, &n) &&
             n == (int)n) {
    d->inl_mode = INL_BINT;
    d->inl_b = (int)n;
    lua_pushvalue(L, first);
  } else if (afalse) {
    d->inl_mode = INL_SWAP;
    lua_pushvalue(L, first + 1);
  } else {
    return 0;
  }
  dfr_setslot(L, didx, DFR_D_ENTRIES);
  d->inl = (unsigned char)kind;
  return 1;
}

/* Pushes the inline entry's a and b and forgets it. */
static int take_inline(lua_State *L, int didx, dfr_Deferred *d) {
  int kind = d->inl;
  dfr_getslot(L, didx, DFR_D_ENTRIES);
  switch (d->inl_mode) {
    case INL_BFALSE: lua_pushboolean(L, 0); break;
    case INL_BINT: lua_pushinteger(L, d->inl_b); break;
    default:
      lua_pushboolean(L, 0);
      lua_insert(L, -2);
      break;
  }
  d->inl = 0;
  lua_pushnil(L);
  dfr_setslot(L, didx, DFR_D_ENTRIES);
  return kind;
}

/* Appends the entry (kind; a, b and extras at first..first + nvals - 1) to
** the entries table at t, b left out when it is false.  The values go in
** first and the header last: a memory error part way leaves no half entry
** behind (tail moves only at the end). */
static void write_entry(lua_State *L, int t, dfr_Deferred *d, int kind,
                        int first, int nvals) {
  int extras = nvals > 2 ? nvals - 2 : 0, i, at = d->tail + 1;
  int omit = nvals < 2 || (lua_type(L, first + 1) == LUA_TBOOLEAN &&
                           !lua_toboolean(L, first + 1));
  for (i = 0; i < nvals; i++) {
    if (i == 1 && omit) continue;
    lua_pushvalue(L, first + i);
    lua_rawseti(L, t, at++);
  }
  lua_pushinteger(L, omit ? -(kind + 16 * extras) : kind + 16 * extras);
  lua_rawseti(L, t, d->tail);
  d->tail = at;
}

int dfr_deferred_add(lua_State *L, int didx, int kind, int nvals) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, didx);
  int first = lua_gettop(L) - nvals + 1;
  didx = dfr_absindex(L, didx);
  if (nvals <= 2 && !dfr_deferred_has_entries(d) &&
      put_inline(L, didx, d, kind, first, nvals)) {
    lua_settop(L, first - 1);
    return dfr_deferred_runnable(d);
  }
  luaL_checkstack(L, 6, "too many arguments");
  if (d->inl) { /* a second entry: the inline one moves into a table first */
    int k;
    lua_createtable(L, 6 + nvals, 0);
    d->head = d->tail = 1;
    k = take_inline(L, didx, d);
    write_entry(L, lua_gettop(L) - 2, d, k, lua_gettop(L) - 1, 2);
    lua_pop(L, 2);
    dfr_setslot(L, didx, DFR_D_ENTRIES);
  }
  dfr_getslot(L, didx, DFR_D_ENTRIES);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 3 + nvals, 0);
    lua_pushvalue(L, -1);
    dfr_setslot(L, didx, DFR_D_ENTRIES);
  }
  write_entry(L, lua_gettop(L), d, kind, first, nvals);
  lua_settop(L, first - 1);
  return dfr_deferred_runnable(d);
}

/* Pops the first entry, pushing a, b and its extras; returns its kind and
** stores the count of values pushed in *n. */
static int pop_entry(lua_State *L, int didx, dfr_Deferred *d, int *n) {
  int t, header, i, len, omit;
  if (d->inl) {
    *n = 2;
    return take_inline(L, didx, d);
  }
  dfr_getslot(L, didx, DFR_D_ENTRIES);
  t = lua_gettop(L);
  lua_rawgeti(L, t, d->head);
  header = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  omit = header < 0;
  if (omit) header = -header;
  len = 2 + header / 16; /* values pushed; one fewer stored when omit */
  luaL_checkstack(L, len + 4, "too many arguments");
  lua_rawgeti(L, t, d->head + 1);
  if (omit) lua_pushboolean(L, 0);
  for (i = 2; i <= len - omit; i++) lua_rawgeti(L, t, d->head + i);
  for (i = 0; i <= len - omit; i++) {
    lua_pushnil(L);
    lua_rawseti(L, t, d->head + i);
  }
  d->head += 1 + len - omit;
  lua_remove(L, t);
  if (d->head == d->tail) { /* drained: the table goes with it */
    d->head = d->tail = 1;
    lua_pushnil(L);
    dfr_setslot(L, didx, DFR_D_ENTRIES);
  }
  *n = len;
  return header % 16;
}

/* --------------------------------------------------------- the chain */

/* Hands d's result to the frame at tidx (a Deferred waiting via CONTINUE or
** fired via CHAIN) and makes it the top: in place of d when d has nothing
** left to do, above d otherwise. */
static void hand_over(lua_State *L, int top, dfr_Deferred *d, int tidx,
                      dfr_Deferred *t) {
  dfr_getslot(L, top, DFR_D_RESULT);
  store_result(L, tidx, t, d->state);
  lua_pushnil(L);
  store_result(L, top, d, DFR_SUCCESS);
  dfr_deferred_handled(d);
  if (t->fr.onstack) return; /* its own stack will go on with it */
  if (!dfr_deferred_has_entries(d)) dfr_engine_replace(L, top, tidx);
  else dfr_engine_push(L, top, tidx);
}

/* The deferred at a waited for d's result: it takes it, and its owner (a
** semaphore whose task it is) is told, once the one at top has it. */
static int run_continue(lua_State *L, int top, dfr_Deferred *d, int a) {
  dfr_Deferred *outer = (dfr_Deferred *)lua_touserdata(L, a);
  int owner = 0;
  outer->flags &= (unsigned short)~DFR_D_WAITING;
  outer->paused--;
  if (outer->flags & DFR_D_RELEASE) {
    outer->flags &= (unsigned short)~DFR_D_RELEASE;
    dfr_getslot(L, a, DFR_SLOT_BELOW);
    owner = lua_gettop(L);
    lua_pushnil(L);
    dfr_setslot(L, a, DFR_SLOT_BELOW);
  }
  hand_over(L, top, d, a, outer);
  if (owner) settle_fn(L, top, a, owner);
  return DFR_NEXT;
}

static int run_chain(lua_State *L, int top, dfr_Deferred *d, int a) {
  dfr_Deferred *other = (dfr_Deferred *)lua_touserdata(L, a);
  if (other->state != DFR_PENDING) {
    if (other->flags & DFR_D_SUPPRESS) {
      other->flags &= (unsigned short)~DFR_D_SUPPRESS;
      lua_pushnil(L);
      store_result(L, top, d, DFR_SUCCESS);
    } else {
      dfr_failure_push_error(L, "AlreadyCalledError",
                             "chain: the other Deferred was already fired");
      store_result(L, top, d, DFR_FAILURE);
    }
    return DFR_NEXT;
  }
  lua_pushnil(L);
  dfr_setslot(L, a, DFR_SLOT_BELOW); /* drop its canceller */
  other->flags &= (unsigned short)~DFR_D_CANCELLER;
  hand_over(L, top, d, a, other);
  return DFR_NEXT;
}

/* Processing stopped: remember an unhandled Failure for the collector.
** Only then does the deferred get the metatable with __gc: objects with a
** finalizer cost the collector much more, and most deferreds never fail. */
static void finish(lua_State *L, int didx, dfr_Deferred *d) {
  if (d->state == DFR_FAILURE && !is_waiting(d)) {
    d->flags |= DFR_D_UNHANDLED;
    if (!(d->flags & DFR_D_GCMT)) {
      d->flags |= DFR_D_GCMT;
      dfr_getmt(L, DFR_DEFERRED_GC_MT);
      lua_setmetatable(L, didx);
    }
  } else {
    dfr_deferred_handled(d);
  }
}

int dfr_deferred_resume(lua_State *L, int top) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, top);
  for (;;) {
    int kind, n, a = top + 1;
    if (d->paused || is_waiting(d) || !dfr_deferred_has_entries(d)) {
      finish(L, top, d);
      return DFR_POP;
    }
    kind = pop_entry(L, top, d, &n);
    switch (kind) {
      case DFR_E_CALLBACKS:
        /* keep the side that runs: b on a failure, else a; extras follow */
        if (d->state == DFR_FAILURE) lua_remove(L, a);
        else lua_remove(L, a + 1);
        if (!lua_toboolean(L, a)) break; /* pass through */
        dfr_getslot(L, top, DFR_D_RESULT);
        lua_insert(L, a + 1);
        d->calling = 1;
        return DFR_CALL;
      case DFR_E_CONTINUE:
        return run_continue(L, top, d, a);
      case DFR_E_CHAIN:
        return run_chain(L, top, d, a);
      default: {
        int r = entry_fns[kind](L, top, a);
        if (r == DFR_CALL) d->calling = 1;
        return r;
      }
    }
    lua_settop(L, top);
  }
}

void dfr_deferred_outcome(lua_State *L, int top, int ok, int ridx) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, top);
  lua_pushvalue(L, ridx);
  dfr_deferred_set_result(L, top, ok);
  d->calling = 0; /* only now: an error in between leaves the call's outcome lost */
}

/* An error escaped the engine with d on top.  If the outcome of its call was
** lost (the call could not be made, or its result not stored), the error
** becomes d's result, as if the call had raised it. */
void dfr_deferred_abort(lua_State *L, int idx, int eidx) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, idx);
  if (!d->calling) return;
  d->calling = 0;
  dfr_failure_push_safe(L, eidx);
  store_result(L, idx, d, DFR_FAILURE);
}

/* ------------------------------------------------------- Lua functions */

static int checkvalue(lua_State *L, int idx, const char *fname) {
  if (dfr_deferred_test(L, idx))
    return dfr_error(L, "bad argument #1 to '%s' (a Deferred cannot be a "
                        "result%s)", fname, "; return it from a callback to chain");
  return 0;
}

/* A waiter that a semaphore, lock or queue holds is theirs to fire: fired by
** hand it would be served without its tokens or value and still counted. */
static void check_not_owned(lua_State *L, dfr_Deferred *d, const char *fname) {
  if ((d->flags & DFR_D_OWNED) && d->state == DFR_PENDING)
    dfr_error(L, "calling '%s' on a Deferred that a semaphore, lock or queue "
                 "will fire (cancel it to stop waiting%s)", fname, "");
}

/* core.fire(d, value, is_errback) */
static int d_fire(lua_State *L) {
  int err = lua_toboolean(L, 3);
  const char *fname = err ? "errback" : "callback";
  check_not_owned(L, dfr_deferred_check(L, 1, fname), fname);
  if (err && lua_isnoneornil(L, 2))
    dfr_argerror(L, 1, fname, "error value", 2);
  checkvalue(L, 2, fname);
  lua_settop(L, 2);
  if (!dfr_deferred_fire(L, 1, !err)) return 0;
  return dfr_engine_start(L, 1);
}

static const char *const add_names[] = {"add_callback", "add_errback",
                                        "add_both", "add_callbacks"};

/* core.add(d, mode, f, ...): mode 1 callback, 2 errback, 3 both. */
static int d_add(lua_State *L) {
  int mode = (int)lua_tointeger(L, 2), n = lua_gettop(L), i;
  const char *fname = add_names[mode - 1];
  dfr_Deferred *d = dfr_deferred_check(L, 1, fname);
  dfr_checkfunction(L, 3, 1, fname);
  luaL_checkstack(L, 2 * n + 64, "too many arguments"); /* the driver's room too */
  if (dfr_deferred_runnable(d) && !dfr_deferred_has_entries(d)) {
    /* fired and idle: the call goes straight to the driver, no entry */
    if (!(mode & (d->state == DFR_FAILURE ? 2 : 1))) return 0; /* passes */
    d->fr.onstack = 1;
    d->calling = 1;
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    dfr_getslot(L, 1, DFR_D_RESULT);
    for (i = 4; i <= n; i++) lua_pushvalue(L, i);
    return n;
  }
  if (mode & 1) lua_pushvalue(L, 3);
  else lua_pushboolean(L, 0);
  if (mode & 2) lua_pushvalue(L, 3);
  else lua_pushboolean(L, 0);
  for (i = 4; i <= n; i++) lua_pushvalue(L, i);
  if (!dfr_deferred_add(L, 1, DFR_E_CALLBACKS, n - 1)) return 0;
  lua_settop(L, 1);
  return dfr_engine_start(L, 1);
}

/* core.add2(d, cb, eb) */
static int d_add2(lua_State *L) {
  dfr_deferred_check(L, 1, "add_callbacks");
  if (!lua_isnoneornil(L, 2)) dfr_checkfunction(L, 2, 1, "add_callbacks");
  if (!lua_isnoneornil(L, 3)) dfr_checkfunction(L, 3, 2, "add_callbacks");
  lua_settop(L, 3);
  if (lua_isnil(L, 2)) {
    lua_pushboolean(L, 0);
    lua_replace(L, 2);
  }
  if (lua_isnil(L, 3)) {
    lua_pushboolean(L, 0);
    lua_replace(L, 3);
  }
  if (!dfr_deferred_add(L, 1, DFR_E_CALLBACKS, 2)) return 0;
  return dfr_engine_start(L, 1);
}

/* core.chain(d, other) */
static int d_chain(lua_State *L) {
  dfr_deferred_check(L, 1, "chain");
  if (!dfr_deferred_test(L, 2)) dfr_argerror(L, 1, "chain", "Deferred", 2);
  check_not_owned(L, dfr_deferred_test(L, 2), "chain");
  if (lua_rawequal(L, 1, 2))
    return dfr_error(L, "bad argument #1 to '%s' (a Deferred cannot be "
                        "chained to itself%s)", "chain", "");
  lua_settop(L, 2);
  if (!dfr_deferred_add(L, 1, DFR_E_CHAIN, 1)) return 0;
  return dfr_engine_start(L, 1);
}

static int d_pause(lua_State *L) {
  dfr_Deferred *d = dfr_deferred_check(L, 1, "pause");
  d->paused++;
  lua_settop(L, 1);
  return 1;
}

/* core.unpause(d) */
static int d_unpause(lua_State *L) {
  dfr_Deferred *d = dfr_deferred_check(L, 1, "unpause");
  if (d->paused - (is_waiting(d) ? 1 : 0) <= 0)
    return dfr_error(L, "calling '%s' on a Deferred that is not paused%s",
                     "unpause", "");
  d->paused--;
  lua_settop(L, 1);
  if (!dfr_deferred_runnable(d)) return 0;
  return dfr_engine_start(L, 1);
}

/* core.cancel(d): follows the deferreds d waits on to the one to cancel;
** returns nothing when all have fired, else it, its canceller if it has one
** that must be called first (else false), its owner when the owner must run
** after the CancelledError (else false), and that CancelledError: made
** first, so that running out of memory changes nothing. */
static int d_cancel(lua_State *L) {
  dfr_Deferred *d = dfr_deferred_check(L, 1, "cancel");
  int t;
  dfr_Deferred *mark = d; /* Brent's cycle check: no walk goes on forever */
  unsigned long steps = 0, power = 1;
  lua_settop(L, 1);
  while (d->state != DFR_PENDING && is_waiting(d)) {
    dfr_getslot(L, -1, DFR_D_RESULT);
    lua_remove(L, -2);
    d = (dfr_Deferred *)lua_touserdata(L, -1);
    if (d == mark)
      return dfr_error(L, "calling '%s' on a Deferred that waits on a cycle of "
                          "Deferreds waiting on each other%s", "cancel", "");
    if (++steps == power) {
      mark = d;
      power <<= 1;
      steps = 0;
    }
  }
  if (d->state != DFR_PENDING) return 0;
  t = lua_gettop(L);
  lua_pushboolean(L, 0);
  lua_pushboolean(L, 0);
  dfr_failure_push_error(L, "CancelledError", "the Deferred was cancelled");
  if (!(d->flags & (DFR_D_CANCELLER | DFR_D_OWNED))) return 4;
  dfr_getslot(L, t, DFR_SLOT_BELOW);
  lua_pushnil(L);
  dfr_setslot(L, t, DFR_SLOT_BELOW);
  if (d->flags & DFR_D_OWNED) {
    d->flags = (unsigned short)((d->flags & ~DFR_D_OWNED) | DFR_D_HADCANCEL);
    if (dfr_engine_kindof(L, -1)->cancel(L, lua_gettop(L), t))
      lua_replace(L, t + 2);
    lua_settop(L, t + 3);
    return 4;
  }
  d->flags = (unsigned short)((d->flags & ~DFR_D_CANCELLER) | DFR_D_HADCANCEL);
  lua_replace(L, t + 1);
  return 4;
}

/* core.cancelled(d, owner, failure): after the canceller (if any) ran:
** errback with the CancelledError unless the canceller fired d. */
static int d_cancelled(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  int owner = lua_isuserdata(L, 2) ? 2 : 0;
  lua_settop(L, 3);
  if (d->state == DFR_PENDING) {
    dfr_deferred_fire(L, 1, 0);
    if (!(d->flags & DFR_D_HADCANCEL)) d->flags |= DFR_D_SUPPRESS;
  }
  return dfr_engine_start2(L, owner, dfr_deferred_runnable(d) ? 1 : 0);
}

/* defer.new([canceller]) */
static int f_new(lua_State *L) {
  dfr_Deferred *d;
  if (!lua_isnoneornil(L, 1)) dfr_checkfunction(L, 1, 1, "new");
  lua_settop(L, 1);
  d = dfr_deferred_new(L);
  if (!lua_isnoneornil(L, 1)) {
    lua_pushvalue(L, 1);
    dfr_setslot(L, -2, DFR_SLOT_BELOW);
    d->flags |= DFR_D_CANCELLER;
  }
  return 1;
}

/* An already fired deferred; its (empty) chain is settled at once so that
** an unhandled failure is tracked. */
void dfr_deferred_push_fired(lua_State *L, int ok) {
  dfr_deferred_new(L);
  lua_insert(L, -2);
  dfr_deferred_fired_(L, ok);
}

void dfr_deferred_fired_(lua_State *L, int ok) {
  if (dfr_deferred_fire(L, -2, ok))
    finish(L, lua_gettop(L), (dfr_Deferred *)lua_touserdata(L, -1));
}

static int fired(lua_State *L, int ok) {
  dfr_deferred_push_fired(L, ok);
  return 1;
}

static int f_succeed(lua_State *L) {
  lua_settop(L, 1);
  checkvalue(L, 1, "succeed");
  return fired(L, 1);
}

static int f_fail(lua_State *L) {
  if (lua_isnoneornil(L, 1)) dfr_argerror(L, 1, "fail", "error value", 1);
  lua_settop(L, 1);
  return fired(L, 0);
}

/* core.maybe_result(ok, value): the deferred for the outcome of a call. */
static int d_maybe_result(lua_State *L) {
  int ok = lua_toboolean(L, 1);
  lua_settop(L, 2);
  if (ok && dfr_deferred_test(L, 2)) return 1;
  return fired(L, ok);
}

/* core.take(d): the result of an idle fired deferred (ok, value), leaving it
** nil there (await consumes it); nothing when it has none to give now. */
static int d_take(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  if (!is_idle(d)) return 0;
  lua_pushboolean(L, d->state == DFR_SUCCESS);
  dfr_getslot(L, 1, DFR_D_RESULT);
  lua_pushnil(L);
  store_result(L, 1, d, DFR_SUCCESS);
  dfr_deferred_handled(d);
  return 2;
}

/* core.idle(d): fired, and nothing left to run or wait for. */
static int d_idle(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  lua_pushboolean(L, is_idle(d));
  return 1;
}

/* core.resolve(d, v): fires the pending d with v, which may be a Deferred to
** wait on. */
static int d_resolve(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  if (d->state != DFR_PENDING) return 0;
  lua_settop(L, 2);
  lua_pushnil(L);
  dfr_setslot(L, 1, DFR_SLOT_BELOW);
  d->flags &= (unsigned short)~(DFR_D_CANCELLER | DFR_D_OWNED);
  d->state = DFR_SUCCESS;
  dfr_deferred_set_result(L, 1, 1);
  if (!dfr_deferred_runnable(d)) return 0;
  return dfr_engine_start(L, 1);
}

/* core.set_canceller(d, f): gives a pending deferred made in C a canceller. */
static int d_set_canceller(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  lua_settop(L, 2);
  dfr_setslot(L, 1, DFR_SLOT_BELOW);
  d->flags |= DFR_D_CANCELLER;
  return 0;
}

/* core.check(d, fname): raises unless d is a Deferred (as self). */
static int d_check(lua_State *L) {
  dfr_deferred_check(L, 1, luaL_checkstring(L, 2));
  return 0;
}

static int d_is(lua_State *L) {
  lua_pushboolean(L, dfr_deferred_test(L, 1) != NULL);
  return 1;
}

static int d_state(lua_State *L) {
  static const char *const names[] = {"pending", "success", "failure"};
  dfr_Deferred *d = dfr_deferred_check(L, 1, "state");
  lua_pushstring(L, is_waiting(d) ? "pending" : names[d->state]);
  return 1;
}

static int d_index(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  const char *k = dfr_field_key(L);
  if (k == NULL) return 1;
  if (strcmp(k, "called") == 0) lua_pushboolean(L, d->state != DFR_PENDING);
  else if (strcmp(k, "paused") == 0) lua_pushinteger(L, d->paused);
  else if (strcmp(k, "result") == 0) {
    if (d->state == DFR_PENDING) lua_pushnil(L);
    else dfr_getslot(L, 1, DFR_D_RESULT);
  } else lua_pushnil(L);
  return 1;
}

static int d_tostring(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  if (d->state == DFR_PENDING) {
    lua_pushfstring(L, "<Deferred at %p pending>", (void *)d);
  } else if (is_waiting(d)) {
    dfr_getslot(L, 1, DFR_D_RESULT);
    lua_pushfstring(L, "<Deferred at %p waiting on Deferred at %p>", (void *)d,
                    lua_touserdata(L, -1));
  } else {
    lua_getglobal(L, "tostring");
    dfr_getslot(L, 1, DFR_D_RESULT);
    lua_call(L, 1, 1);
    lua_pushfstring(L, "<Deferred at %p current result: %s>", (void *)d,
                    lua_tostring(L, -1));
  }
  return 1;
}

/* At collection: report a Failure nobody handled (the one call into user
** code from C, protected, touching no other object). */
static int d_gc(lua_State *L) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, 1);
  if ((d->flags & DFR_D_UNHANDLED) && d->state == DFR_FAILURE) {
    dfr_deferred_handled(d);
    dfr_getslot(L, 1, DFR_D_RESULT);
    dfr_failure_report(L, -1);
  }
  return 0;
}

void dfr_deferred_open(lua_State *L, int module, int core) {
  static const luaL_Reg methods[] = {
      {"pause", d_pause}, {"state", d_state}, {NULL, NULL}};
  static const luaL_Reg corefns[] = {
      {"fire", d_fire},         {"add", d_add},
      {"add2", d_add2},         {"chain", d_chain},
      {"unpause", d_unpause},   {"cancel", d_cancel},
      {"cancelled", d_cancelled}, {"maybe_result", d_maybe_result},
      {"check", d_check},       {"is_deferred", d_is},
      {"take", d_take},         {"resolve", d_resolve}, {"idle", d_idle},
      {"set_canceller", d_set_canceller},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"new", f_new}, {"succeed", f_succeed}, {"fail", f_fail}, {NULL, NULL}};

  dfr_newclass(L, DFR_DEFERRED_MT, methods, d_index, d_tostring, core);
  /* the same with __gc, for deferreds that hold an unhandled failure */
  dfr_newmetatable(L, DFR_DEFERRED_GC_MT);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_pushliteral(L, "Deferred");
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, d_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 2);

  lua_pushvalue(L, core);
  dfr_setfuncs(L, corefns, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  dfr_setfuncs(L, funcs, 0);
  lua_pop(L, 1);
}
