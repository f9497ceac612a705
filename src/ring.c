/*
** ring.c: the table-backed FIFO of ring.h.
** SPDX-License-Identifier: MIT
*/
#include "ring.h"

#define RING_MIN 16
#define RING_KEEP 1024 /* a drained ring larger than this is dropped */

/* With the ring's table on top: makes room for k more values, unwrapping
** into a table twice as big (or more) when needed; the table on top is then
** the new one.  The one allocation of a push: after it nothing fails. */
static void grow(lua_State *L, int owner, int slot, dfr_Ring *r, int k) {
  int cap = r->cap ? r->cap : RING_MIN, i;
  if (r->cap - r->count >= k) return;
  while (cap - r->count < k) cap *= 2;
  lua_createtable(L, cap, 0);
  for (i = 0; i < r->count; i++) {
    lua_rawgeti(L, -2, (r->head + i) % r->cap + 1);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushvalue(L, -1);
  dfr_setslot(L, owner, slot);
  lua_remove(L, -2);
  r->head = 0;
  r->cap = cap;
}

void dfr_ring_push_n(lua_State *L, int owner, int slot, dfr_Ring *r,
                     int first, int n) {
  int i;
  first = dfr_absindex(L, first);
  owner = dfr_absindex(L, owner);
  dfr_getslot(L, owner, slot);
  grow(L, owner, slot, r, n);
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, (r->head + r->count + i) % r->cap + 1);
  }
  lua_pop(L, 1);
  r->count += n;
}

void dfr_ring_push(lua_State *L, int owner, int slot, dfr_Ring *r, int vidx) {
  dfr_ring_push_n(L, owner, slot, r, vidx, 1);
}

void dfr_ring_peek(lua_State *L, int owner, int slot, dfr_Ring *r) {
  dfr_getslot(L, owner, slot);
  lua_rawgeti(L, -1, r->head + 1);
  lua_remove(L, -2);
}

/* Takes the n oldest values out, pushing them (oldest first) when keep. */
static void take(lua_State *L, int owner, int slot, dfr_Ring *r, int n,
                 int keep) {
  int t, i;
  owner = dfr_absindex(L, owner);
  dfr_getslot(L, owner, slot);
  t = lua_gettop(L);
  for (i = 0; i < n; i++) {
    int at = r->head + 1;
    if (keep) lua_rawgeti(L, t, at);
    lua_pushnil(L);
    lua_rawseti(L, t, at);
    r->head = (r->head + 1) % r->cap;
  }
  lua_remove(L, t);
  r->count -= n;
  if (r->count == 0) {
    r->head = 0;
    if (r->cap > RING_KEEP) {
      r->cap = 0;
      lua_pushnil(L);
      dfr_setslot(L, owner, slot);
    }
  }
}

void dfr_ring_pop_n(lua_State *L, int owner, int slot, dfr_Ring *r, int n) {
  take(L, owner, slot, r, n, 1);
}

void dfr_ring_pop(lua_State *L, int owner, int slot, dfr_Ring *r) {
  take(L, owner, slot, r, 1, 1);
}

void dfr_ring_drop(lua_State *L, int owner, int slot, dfr_Ring *r, int n) {
  take(L, owner, slot, r, n, 0);
}
