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
/* Makes room for k more values, so that the next k pushes cannot fail (a
** record of several values goes in whole or not at all). */
DFR_HIDDEN void dfr_ring_reserve(lua_State *L, int owner, int slot,
                                 dfr_Ring *r, int k);

#endif
