/*
** queue.c: the deferred queue.  Stored values and waiting gets are two rings;
** handing values to gets is a frame of the engine, so a put made inside a
** get's callback only stores its value and the frame below hands it on when
** that callback's chain is done: a million waiting gets drain flat, in order.
** SPDX-License-Identifier: MIT
*/
#include <string.h>

#include "deferred.h"
#include "engine.h"
#include "failure.h"
#include "queue.h"
#include "ring.h"


enum { Q_BELOW = DFR_SLOT_BELOW, Q_VALUES, Q_GETTERS, Q_SLOTS = Q_GETTERS };

typedef struct Queue {
  dfr_Frame fr;
  lua_Integer size, backlog; /* -1: no limit */
  lua_Integer getters;       /* live waiting gets (the ring may hold cancelled) */
  dfr_Ring values, waiting;
} Queue;

static Queue *check_queue(lua_State *L, const char *fname) {
  Queue *q = (Queue *)dfr_testudata(L, 1, DFR_QUEUE_MT);
  if (q == NULL) dfr_selferror(L, fname, "Queue");
  return q;
}

/* Drops cancelled gets at the head; returns whether a live one is there. */
static int head_getter(lua_State *L, int qidx, Queue *q) {
  while (q->waiting.count > 0) {
    dfr_Deferred *g;
    dfr_ring_peek(L, qidx, Q_GETTERS, &q->waiting);
    g = (dfr_Deferred *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (g->state == DFR_PENDING) return 1;
    dfr_ring_pop(L, qidx, Q_GETTERS, &q->waiting);
    lua_pop(L, 1);
  }
  return 0;
}

static int can_hand(lua_State *L, int qidx, Queue *q) {
  return q->values.count > 0 && q->getters > 0 && head_getter(L, qidx, q);
}

/* The frame: hand the oldest value to the oldest get while both exist. */
static int queue_resume(lua_State *L, int top) {
  Queue *q = (Queue *)lua_touserdata(L, top);
  if (!can_hand(L, top, q)) return DFR_POP;
  dfr_ring_pop(L, top, Q_GETTERS, &q->waiting);
  q->getters--;
  dfr_ring_pop(L, top, Q_VALUES, &q->values);
  dfr_deferred_fire(L, -2, 1);
  dfr_engine_push(L, top, lua_gettop(L));
  return DFR_NEXT;
}

static void queue_outcome(lua_State *L, int top, int ok, int ridx) {
  (void)L, (void)top, (void)ok, (void)ridx; /* it never asks for a call */
}

static int queue_cancel(lua_State *L, int qidx, int didx) {
  Queue *q = (Queue *)lua_touserdata(L, qidx);
  (void)L, (void)didx;
  q->getters--;
  return 0;
}

/* core.put(q, v) */
static int queue_put(lua_State *L) {
  Queue *q = check_queue(L, "put");
  lua_settop(L, 2);
  /* values beyond those the waiting gets will take count against size */
  if (q->size >= 0 && q->values.count - q->getters >= q->size)
    return dfr_error_raise(L, "QueueOverflow", "the queue is full (size %d)",
                           (int)q->size);
  dfr_ring_push(L, 1, Q_VALUES, &q->values, 2);
  if (q->fr.onstack || !can_hand(L, 1, q)) return 0;
  lua_settop(L, 1);
  return dfr_engine_start(L, 1);
}

static int queue_get(lua_State *L) {
  Queue *q = check_queue(L, "get");
  lua_settop(L, 1);
  if (q->getters == 0 && q->values.count > 0) {
    dfr_ring_pop(L, 1, Q_VALUES, &q->values);
    dfr_deferred_push_fired(L, 1);
    return 1;
  }
  if (q->backlog >= 0 && q->getters >= q->backlog)
    return dfr_error_raise(L, "QueueUnderflow",
                           "too many waiting gets (backlog %d)",
                           (int)q->backlog);
  dfr_deferred_new_owned(L, 1);
  dfr_ring_push(L, 1, Q_GETTERS, &q->waiting, -1);
  q->getters++;
  return 1;
}

static lua_Integer stored(const Queue *q) {
  lua_Integer n = q->values.count - q->getters;
  return n > 0 ? n : 0;
}

static int queue_len(lua_State *L) {
  lua_pushinteger(L, stored(check_queue(L, "__len")));
  return 1;
}

static int queue_index(lua_State *L) {
  Queue *q = (Queue *)lua_touserdata(L, 1);
  const char *k = dfr_field_key(L);
  if (k == NULL) return 1;
  if (strcmp(k, "pending") == 0) lua_pushinteger(L, stored(q));
  else if (strcmp(k, "waiting") == 0) lua_pushinteger(L, q->getters);
  else if (strcmp(k, "size") == 0 && q->size >= 0) lua_pushinteger(L, q->size);
  else if (strcmp(k, "backlog") == 0 && q->backlog >= 0)
    lua_pushinteger(L, q->backlog);
  else lua_pushnil(L);
  return 1;
}

static int queue_tostring(lua_State *L) {
  Queue *q = (Queue *)lua_touserdata(L, 1);
  lua_pushfstring(L, "<Queue at %p %d pending, %d waiting>", (void *)q,
                  (int)stored(q), (int)q->getters);
  return 1;
}

/* size and backlog: nil (no limit) or a whole number >= 0 */
static lua_Integer check_limit(lua_State *L, int idx, const char *what) {
  lua_Integer n = 0;
  if (lua_isnoneornil(L, idx)) return -1;
  if (lua_type(L, idx) != LUA_TNUMBER) dfr_argerror(L, idx, "queue", "number", idx);
  if (!dfr_tointeger(L, idx, &n) || n < 0) {
    lua_pushfstring(L, "%d", idx);
    dfr_error(L, "bad argument #%s to 'queue' (%s must be a whole number >= 0)",
              lua_tostring(L, -1), what);
  }
  return n;
}

static int f_queue(lua_State *L) {
  lua_Integer size = check_limit(L, 1, "size");
  lua_Integer backlog = check_limit(L, 2, "backlog");
  Queue *q = (Queue *)dfr_newud(L, sizeof *q, Q_SLOTS);
  memset(q, 0, sizeof *q);
  q->fr.kind = DFR_FRAME_QUEUE;
  q->size = size;
  q->backlog = backlog;
  dfr_getmt(L, DFR_QUEUE_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void dfr_queue_open(lua_State *L, int module, int core) {
  static const dfr_FrameKind kind = {queue_resume, queue_outcome, queue_cancel, NULL};
  static const luaL_Reg methods[] = {{"get", queue_get}, {NULL, NULL}};
  dfr_engine_kind(DFR_FRAME_QUEUE, &kind);
  dfr_newclass(L, DFR_QUEUE_MT, methods, queue_index, queue_tostring, core);
  lua_pushcfunction(L, queue_len);
  lua_setfield(L, -2, "__len");
  lua_pop(L, 1);
  lua_pushcfunction(L, queue_put);
  lua_setfield(L, core, "queue_put");
  lua_pushcfunction(L, f_queue);
  lua_setfield(L, module, "queue");
}
