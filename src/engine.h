/*
** engine.h: the work stack that replaces recursion.  C never calls user code:
** a frame's resume either finishes, hands the stack a new top, or pushes one
** user call (function and arguments) that the Lua driver runs and reports
** back through the frame's outcome.  Frames link downwards through their
** DFR_SLOT_BELOW user value, so the stack lives in the objects themselves and
** the driver's Lua locals anchor only the top.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_ENGINE_H
#define DEFER_ENGINE_H

#include "defer.h"

enum { DFR_POP, DFR_NEXT, DFR_CALL };

typedef struct dfr_FrameKind {
  /* Advances the frame at index top (nothing above it).  Returns DFR_CALL
  ** with a function and its arguments pushed above top, DFR_NEXT after making
  ** another frame the top (dfr_engine_push/replace), or DFR_POP when done. */
  int (*resume)(lua_State *L, int top);
  /* The user call it asked for returned: ok, and the value at ridx (a
  ** Failure when !ok). */
  void (*outcome)(lua_State *L, int top, int ok, int ridx);
  /* Optional: a deferred it owns (at didx; dfr_deferred_new_owned) is being
  ** cancelled while pending: forget it (it is errbacked with a CancelledError
  ** right after).  Returns whether the owner must then run as a frame (to
  ** wake the waiters behind, say). */
  int (*cancel)(lua_State *L, int oidx, int didx);
  /* Optional: an error (at eidx) escaped the engine while the frame at idx
  ** was the top: settle what it was in the middle of, without allocating
  ** (it is resumed later, from the orphan stack). */
  void (*abort)(lua_State *L, int idx, int eidx);
} dfr_FrameKind;

DFR_HIDDEN void dfr_engine_kind(int kind, const dfr_FrameKind *k);
DFR_HIDDEN const dfr_FrameKind *dfr_engine_kindof(lua_State *L, int idx);

/* Makes the frame at idx the top, above the one at top (which stays). */
DFR_HIDDEN void dfr_engine_push(lua_State *L, int top, int idx);
/* Makes the frame at idx the top in place of the finished one at top. */
DFR_HIDDEN void dfr_engine_replace(lua_State *L, int top, int idx);
/* Starts a stack whose base is the frame at idx and runs it; returns the
** number of values pushed for the driver (0, or top, f, args...). */
DFR_HIDDEN int dfr_engine_start(lua_State *L, int idx);
/* The same with the frame at base below the frame at idx (either may be 0:
** absent, or already on a stack). */
DFR_HIDDEN int dfr_engine_start2(lua_State *L, int base, int idx);

/* Lua-visible internals handed to the driver: step, handler, pcall_tb. */
DFR_HIDDEN void dfr_engine_open(lua_State *L, int core);

#endif
