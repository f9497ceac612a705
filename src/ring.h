/*
** ring.h: a first-in first-out queue of Lua values kept in a table in one
** user value slot of its owner (a userdata), with head and count in C.  The
** table grows by doubling and is dropped when a large ring drains, so a burst
** gives its memory back.  Used by the loop, the semaphore and the queue.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_RING_H
#define DEFER_RING_H

#include "defer.h"

typedef struct dfr_Ring {
  int head, count, cap;
} dfr_Ring;

/* Appends the value at vidx. */
DFR_HIDDEN void dfr_ring_push(lua_State *L, int owner, int slot, dfr_Ring *r,
                              int vidx);
/* Pushes the oldest value and removes it (count must be > 0). */
DFR_HIDDEN void dfr_ring_pop(lua_State *L, int owner, int slot, dfr_Ring *r);
/* Pushes the oldest value without removing it (count must be > 0). */
DFR_HIDDEN void dfr_ring_peek(lua_State *L, int owner, int slot, dfr_Ring *r);
/* Appends the n values at first..first+n-1 as one record: all of them or,
** when memory runs out, none. */
DFR_HIDDEN void dfr_ring_push_n(lua_State *L, int owner, int slot, dfr_Ring *r,
                                int first, int n);
/* Pushes the n oldest values, oldest first, and removes them (count must be
** >= n). */
DFR_HIDDEN void dfr_ring_pop_n(lua_State *L, int owner, int slot, dfr_Ring *r,
                               int n);
/* Removes the n oldest values, pushing nothing (count must be >= n). */
DFR_HIDDEN void dfr_ring_drop(lua_State *L, int owner, int slot, dfr_Ring *r,
                              int n);

#endif
