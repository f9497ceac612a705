/*
** engine.c: the work stack and the step the Lua driver calls after every
** user function.  One loop serves every frame kind, so a chain a million
** deep, a semaphore draining a million waiters or a list hooking a million
** children all run on a flat C stack.
**
** Every run of that loop is a protected call of the runner, a C closure kept
** in the registry.  Its upvalue 1 anchors the top of the stack being run, so
** that when an error escapes the loop (memory ran out; on Lua 5.1-5.3 another
** object's finalizer raised during an allocation) the stack is not lost with
** the C frame that held it: it is kept whole as the orphan stack (upvalue 2,
** a table shared with the driver: [1] its top, or false; [2] and [3] see
** driver.lua), the error goes on
** to the caller, and the next run resumes the orphans below its own frames.
** So nothing that was on the stack stays stuck: no waiter, no loop pass, no
** chain is left marked as running with nobody to run it.
** SPDX-License-Identifier: MIT
*/
#include "engine.h"
#include "deferred.h"
#include "failure.h"

static const dfr_FrameKind *kinds[DFR_FRAME_KINDS];

/* The registry key of the runner: its address. */
static char runner_key = 'r';

#define TOP_ANCHOR lua_upvalueindex(1)
#define ORPHANS lua_upvalueindex(2)

enum { OP_START, OP_START2, OP_STEP };

/* Room on the Lua stack for a frame's resume, and for the driver to make
** the call it is handed and report back without growing the stack: growing
** can fail, and there a call would be lost outside any protection. */
#define DRIVER_ROOM 64

void dfr_engine_kind(int kind, const dfr_FrameKind *k) { kinds[kind] = k; }

const dfr_FrameKind *dfr_engine_kindof(lua_State *L, int idx) {
  return kinds[((dfr_Frame *)lua_touserdata(L, idx))->kind];
}

/* The value at idx is the new top: the runner's anchor follows it.  Only
** inside the runner (resume and outcome hooks run there). */
static void set_top(lua_State *L, int top, int idx) {
  lua_pushvalue(L, idx);
  lua_replace(L, TOP_ANCHOR);
  if (idx != top) {
    lua_pushvalue(L, idx);
    lua_replace(L, top);
  }
}

void dfr_engine_push(lua_State *L, int top, int idx) {
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, idx);
  lua_pushvalue(L, top);
  dfr_setslot(L, idx, DFR_SLOT_BELOW);
  fr->onstack = 1;
  set_top(L, top, idx);
}

void dfr_engine_replace(lua_State *L, int top, int idx) {
  dfr_Frame *old = (dfr_Frame *)lua_touserdata(L, top);
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, idx);
  dfr_getslot(L, top, DFR_SLOT_BELOW);
  dfr_setslot(L, idx, DFR_SLOT_BELOW);
  lua_pushnil(L);
  dfr_setslot(L, top, DFR_SLOT_BELOW);
  old->onstack = 0;
  fr->onstack = 1;
  set_top(L, top, idx);
}

/* Takes the finished frame at top off; returns 0 when the stack is empty. */
static int pop(lua_State *L, int top) {
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, top);
  dfr_getslot(L, top, DFR_SLOT_BELOW);
  if (!lua_isnil(L, -1)) {
    lua_pushnil(L);
    dfr_setslot(L, top, DFR_SLOT_BELOW);
  }
  fr->onstack = 0;
  if (lua_isnil(L, -1)) {
    lua_replace(L, TOP_ANCHOR);
    return 0;
  }
  set_top(L, top, lua_gettop(L));
  return 1;
}

/* Runs the stack whose top is at index top (the last stack slot). */
static int loop(lua_State *L, int top) {
  for (;;) {
    dfr_Frame *fr;
    int r;
    lua_settop(L, top);
    luaL_checkstack(L, DRIVER_ROOM, "engine");
    fr = (dfr_Frame *)lua_touserdata(L, top);
    r = kinds[fr->kind]->resume(L, top);
    if (r == DFR_CALL) {
      int n = lua_gettop(L) - top;
      luaL_checkstack(L, 2 * n + 8, "too many arguments");
      lua_pushvalue(L, top);
      lua_insert(L, top + 1);
      return n + 1;
    }
    if (r == DFR_POP && !pop(L, top)) return 0;
  }
}

/* The frame at idx, about to start a new stack, goes above the orphans, if
** there are any; nothing here allocates, so it is all or nothing. */
static void adopt_below(lua_State *L, int idx) {
  lua_rawgeti(L, ORPHANS, 1);
  if (lua_toboolean(L, -1)) {
    dfr_setslot(L, idx, DFR_SLOT_BELOW);
    lua_pushboolean(L, 0);
    lua_rawseti(L, ORPHANS, 1);
  } else {
    lua_pop(L, 1);
  }
}

/* Starts the frame at idx (not on a stack) as the top of a new stack. */
static int start_at(lua_State *L, int idx) {
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, idx);
  lua_pushvalue(L, idx);
  adopt_below(L, lua_gettop(L));
  fr->onstack = 1;
  lua_pushvalue(L, -1);
  lua_replace(L, TOP_ANCHOR);
  return loop(L, lua_gettop(L));
}

/* runner(op, ...): OP_START(frame or nil), OP_START2(base, frame),
** OP_STEP(top, ok, value).  Returns what the loop hands the driver. */
static int runner(lua_State *L) {
  int op = (int)lua_tointeger(L, 1);
  dfr_Frame *a = (dfr_Frame *)lua_touserdata(L, 2);
  if (op == OP_STEP) {
    int ok = lua_toboolean(L, 3), memory = 0;
    lua_settop(L, 4); /* run() anchored the top before the call */
    if (!ok && !dfr_is_failure(L, 4)) { /* the message handler itself failed */
      dfr_failure_push_safe(L, 4);
      lua_replace(L, 4);
      memory = 1;
    }
    if (memory || (!ok && dfr_failure_is_nomem(L, 4))) {
      /* work that no call could be made for may wait: see driver.lua */
      lua_pushboolean(L, 1);
      lua_rawseti(L, ORPHANS, 2);
    }
    kinds[a->kind]->outcome(L, 2, ok, 4);
    lua_settop(L, 2);
    return loop(L, 2);
  }
  if (op == OP_START2) {
    dfr_Frame *b = (dfr_Frame *)lua_touserdata(L, 3);
    if (a != NULL && !a->onstack && b != NULL && !b->onstack) {
      lua_settop(L, 3);
      lua_pushvalue(L, 2);
      adopt_below(L, 4);
      a->onstack = 1;
      lua_pushvalue(L, 4);
      lua_replace(L, TOP_ANCHOR);
      dfr_engine_push(L, 4, 3);
      return loop(L, 4);
    }
    if (b != NULL && !b->onstack) return start_at(L, 3);
  }
  if (a != NULL && !a->onstack) return start_at(L, 2);
  /* nothing of its own to start (it is on a running stack): the orphans */
  lua_rawgeti(L, ORPHANS, 1);
  if (!lua_toboolean(L, -1)) return 0;
  lua_pushboolean(L, 0);
  lua_rawseti(L, ORPHANS, 1);
  lua_pushvalue(L, -1);
  lua_replace(L, TOP_ANCHOR);
  return loop(L, lua_gettop(L));
}

/* The error path: the stack whose top the runner's anchor holds (at aidx,
** the error below it) joins the orphan stack, its base above the orphans'
** top.  Nothing here allocates. */
static void orphan(lua_State *L, int ridx, int aidx) {
  int t;
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, aidx);
  if (fr == NULL || !fr->onstack) return; /* the error came before its start */
  if (kinds[fr->kind]->abort != NULL) kinds[fr->kind]->abort(L, aidx, aidx - 1);
  lua_pushvalue(L, aidx); /* find the base */
  t = lua_gettop(L);
  for (;;) {
    dfr_getslot(L, t, DFR_SLOT_BELOW);
    if (lua_isnil(L, -1)) break;
    lua_replace(L, t);
  }
  lua_pop(L, 1);
  lua_getupvalue(L, ridx, 2);
  lua_rawgeti(L, -1, 1);
  if (lua_toboolean(L, -1)) dfr_setslot(L, t, DFR_SLOT_BELOW);
  else lua_pop(L, 1);
  lua_pushvalue(L, aidx);
  lua_rawseti(L, -2, 1);
  lua_settop(L, t - 1);
}

/* Calls the runner with op and copies of the n values on top of the stack,
** protected, and leaves what it returns on top (the count is returned; what
** lies below stays, as every caller returns the count to Lua).  On an error,
** keeps the stack it was running as orphans and raises the error again.  The
** anchor of a run this one is inside (a finalizer's, say) is kept and put
** back.  Copies, not moves: shifting values costs more than copying them. */
static int run(lua_State *L, int op, int n) {
  int first = lua_gettop(L) - n + 1, base = first + n, i, status;
  lua_pushlightuserdata(L, &runner_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_getupvalue(L, base, 1); /* the anchor to put back, at base + 1 */
  lua_pushvalue(L, base);
  lua_pushinteger(L, op);
  for (i = 0; i < n; i++) lua_pushvalue(L, first + i);
  if (op == OP_STEP) { /* the top is ours already: anchored before the call,
                          which can itself run out of memory */
    lua_pushvalue(L, first);
    lua_setupvalue(L, base, 1);
  }
  status = lua_pcall(L, n + 1, LUA_MULTRET, 0);
  if (status != 0) {
    lua_getupvalue(L, base, 1);
    orphan(L, base, lua_gettop(L));
    lua_pop(L, 1);
  }
  lua_pushvalue(L, base + 1);
  lua_setupvalue(L, base, 1);
  if (status != 0) return lua_error(L);
  return lua_gettop(L) - base - 1;
}

int dfr_engine_start(lua_State *L, int idx) {
  lua_pushvalue(L, idx);
  return run(L, OP_START, 1);
}

int dfr_engine_start2(lua_State *L, int base, int idx) {
  if (base) base = dfr_absindex(L, base);
  if (idx) idx = dfr_absindex(L, idx);
  if (base) lua_pushvalue(L, base);
  else lua_pushnil(L);
  if (idx) lua_pushvalue(L, idx);
  else lua_pushnil(L);
  return run(L, OP_START2, 2);
}

/* step(top, ok, value): the user call the frame at top asked for returned. */
static int engine_step(lua_State *L) {
  lua_settop(L, 3);
  return run(L, OP_STEP, 3);
}

/* core.start(frame): runs a frame that an internal call said must run (or,
** given nothing, the orphans of an earlier error, if any). */
static int engine_start_frame(lua_State *L) {
  lua_settop(L, 1);
  return run(L, OP_START, 1);
}

#if DFR_API_51
/* PUC Lua 5.1's xpcall passes no arguments; there a yield cannot cross
** pcall anyway, so a protected call from C loses nothing.  The driver uses
** it only when it is not running on LuaJIT, whose xpcall takes arguments
** and is yieldable.  The handler is an upvalue: pushing a C function
** allocates on 5.1, and nothing may fail before the call is protected. */
static int engine_pcall_tb(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  if (lua_pcall(L, n - 1, 1, 1) != 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}
#endif

void dfr_engine_open(lua_State *L, int core) {
  int i;
  static const dfr_FrameKind deferred_kind = {
      dfr_deferred_resume, dfr_deferred_outcome, NULL, dfr_deferred_abort};
  dfr_engine_kind(DFR_FRAME_DEFERRED, &deferred_kind);
  /* the runner, with the orphans' table it shares with the driver */
  lua_pushlightuserdata(L, &runner_key);
  lua_pushnil(L);
  lua_createtable(L, 3, 0); /* [1] orphans' top, [2] retry due, [3] retry */
  for (i = 1; i <= 3; i++) {
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, i);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, core, "orphans");
  lua_pushcclosure(L, runner, 2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushcfunction(L, engine_step);
  lua_setfield(L, core, "step");
  lua_pushcfunction(L, engine_start_frame);
  lua_setfield(L, core, "start");
  lua_pushcfunction(L, dfr_failure_handler);
  lua_setfield(L, core, "handler");
#if DFR_API_51
  lua_pushcfunction(L, dfr_failure_handler);
  lua_pushcclosure(L, engine_pcall_tb, 1);
  lua_setfield(L, core, "pcall_tb");
#endif
}
