/*
** engine.c: the work stack and the step the Lua driver calls after every
** user function.  One loop serves every frame kind, so a chain a million
** deep, a semaphore draining a million waiters or a list hooking a million
** children all run on a flat C stack.
** SPDX-License-Identifier: MIT
*/
#include "engine.h"
#include "deferred.h"
#include "failure.h"

static const dfr_FrameKind *kinds[DFR_FRAME_KINDS];

void dfr_engine_kind(int kind, const dfr_FrameKind *k) { kinds[kind] = k; }

const dfr_FrameKind *dfr_engine_kindof(lua_State *L, int idx) {
  return kinds[((dfr_Frame *)lua_touserdata(L, idx))->kind];
}

void dfr_engine_push(lua_State *L, int top, int idx) {
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, idx);
  lua_pushvalue(L, top);
  dfr_setslot(L, idx, DFR_SLOT_BELOW);
  fr->onstack = 1;
  lua_pushvalue(L, idx);
  lua_replace(L, top);
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
  lua_pushvalue(L, idx);
  lua_replace(L, top);
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
  if (lua_isnil(L, -1)) return 0;
  lua_replace(L, top);
  return 1;
}

int dfr_engine_loop(lua_State *L, int top) {
  for (;;) {
    dfr_Frame *fr;
    int r;
    lua_settop(L, top);
    fr = (dfr_Frame *)lua_touserdata(L, top);
    r = kinds[fr->kind]->resume(L, top);
    if (r == DFR_CALL) {
      lua_pushvalue(L, top);
      lua_insert(L, top + 1);
      return lua_gettop(L) - top;
    }
    if (r == DFR_POP && !pop(L, top)) return 0;
  }
}

int dfr_engine_start(lua_State *L, int idx) {
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, idx);
  if (fr->onstack) return 0; /* its stack is already running it */
  lua_pushvalue(L, idx);
  fr->onstack = 1;
  return dfr_engine_loop(L, lua_gettop(L));
}

int dfr_engine_start2(lua_State *L, int base, int idx) {
  dfr_Frame *b = base ? (dfr_Frame *)lua_touserdata(L, base) : NULL;
  dfr_Frame *fr = idx ? (dfr_Frame *)lua_touserdata(L, idx) : NULL;
  int top;
  if (b == NULL || b->onstack) return fr ? dfr_engine_start(L, idx) : 0;
  if (fr == NULL || fr->onstack) return dfr_engine_start(L, base);
  base = dfr_absindex(L, base);
  idx = dfr_absindex(L, idx);
  lua_pushvalue(L, base);
  top = lua_gettop(L);
  b->onstack = 1;
  dfr_engine_push(L, top, idx);
  return dfr_engine_loop(L, top);
}

/* step(top, ok, value): the user call the frame at top asked for returned. */
static int engine_step(lua_State *L) {
  dfr_Frame *fr = (dfr_Frame *)lua_touserdata(L, 1);
  int ok = lua_toboolean(L, 2);
  lua_settop(L, 3);
  if (!ok && !dfr_is_failure(L, 3)) { /* the message handler itself failed */
    dfr_failure_push(L, 3, 0);
    lua_replace(L, 3);
  }
  kinds[fr->kind]->outcome(L, 1, ok, 3);
  return dfr_engine_loop(L, 1);
}

/* core.start(frame): runs a frame that an internal call said must run. */
static int engine_start_frame(lua_State *L) {
  lua_settop(L, 1);
  return dfr_engine_start(L, 1);
}

#if DFR_API_51
/* PUC Lua 5.1's xpcall passes no arguments; there a yield cannot cross
** pcall anyway, so a protected call from C loses nothing.  The driver uses
** it only when it is not running on LuaJIT, whose xpcall takes arguments
** and is yieldable. */
static int engine_pcall_tb(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushcfunction(L, dfr_failure_handler);
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
  static const dfr_FrameKind deferred_kind = {dfr_deferred_resume,
                                              dfr_deferred_outcome, NULL};
  dfr_engine_kind(DFR_FRAME_DEFERRED, &deferred_kind);
  lua_pushcfunction(L, engine_step);
  lua_setfield(L, core, "step");
  lua_pushcfunction(L, engine_start_frame);
  lua_setfield(L, core, "start");
  lua_pushcfunction(L, dfr_failure_handler);
  lua_setfield(L, core, "handler");
#if DFR_API_51
  lua_pushcfunction(L, engine_pcall_tb);
  lua_setfield(L, core, "pcall_tb");
#endif
}
