/*
** loop.c: the C event queue.  Handles (userdata) carry a call: the function
** and its arguments in their user values.  Ready handles wait in a ring kept
** in a Lua table; timed ones in a C min-heap of pointers, anchored in a Lua
** set while they wait.  Cancelling a handle drops its function at once and
** takes a timer out of the heap.  A pass (run_once, advance) is an engine
** frame: it hands each due call to the driver, and an error to on_error.
** SPDX-License-Identifier: MIT
*/
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deferred.h"
#include "engine.h"
#include "failure.h"
#include "loop.h"
#include "ring.h"

#define DEFAULT_LOOP_KEY "defer.default_loop"

enum { CLOCK_MONO, CLOCK_MANUAL, CLOCK_FUNC };

/* An error waiting for on_error: reported before the next call, or at the
** next pass (when memory ran out reporting it: not again at once). */
enum { ERR_NONE, ERR_NOW, ERR_NEXT };

/* loop user values */
enum { L_BELOW = DFR_SLOT_BELOW, L_RING, L_TIMERS, L_ONERROR, L_CLOCK, L_ERR,
       L_SLOTS = L_ERR };
/* handle user values: the loop (while active), the function, its arguments */
enum { H_LOOP = 1, H_FUNC, H_ARGS };

typedef struct Handle {
  double due;
  uint64_t seq;
  int heap;  /* index in the heap, -1 when not there */
  int nargs;
  unsigned char active, timer;
  unsigned char fires; /* a sleep's timer: its function slot is a deferred */
} Handle;

typedef struct Loop {
  dfr_Frame fr;
  unsigned char clock, stopped, in_handler;
  unsigned char calling;       /* a loop call is handed out to the driver */
  unsigned char error_pending; /* L_ERR waits for on_error: ERR_NOW or ERR_NEXT */
  double now;             /* the manual clock; the time the pass began */
  dfr_Ring ready;          /* ready handles, slot L_RING */
  int live;               /* ready handles not cancelled */
  int pass_left, budget, ran;
  uint64_t pass_seq, seq;
  Handle **heap;
  int hn, hcap;
} Loop;

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static Loop *check_loop(lua_State *L, const char *fname) {
  Loop *lp = (Loop *)dfr_testudata(L, 1, DFR_LOOP_MT);
  if (lp == NULL) dfr_selferror(L, fname, "Loop");
  return lp;
}

/* ---------------------------------------------------------------- heap */

static int before(const Handle *a, const Handle *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(Loop *lp, int i, Handle *h) {
  lp->heap[i] = h;
  h->heap = i;
}

static void sift_up(Loop *lp, int i) {
  Handle *h = lp->heap[i];
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!before(h, lp->heap[p])) break;
    heap_set(lp, i, lp->heap[p]);
    i = p;
  }
  heap_set(lp, i, h);
}

static void sift_down(Loop *lp, int i) {
  Handle *h = lp->heap[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= lp->hn) break;
    if (c + 1 < lp->hn && before(lp->heap[c + 1], lp->heap[c])) c++;
    if (!before(lp->heap[c], h)) break;
    heap_set(lp, i, lp->heap[c]);
    i = c;
  }
  heap_set(lp, i, h);
}

static void heap_remove(Loop *lp, Handle *h) {
  int i = h->heap;
  Handle *last = lp->heap[--lp->hn];
  h->heap = -1;
  if (i == lp->hn) return;
  heap_set(lp, i, last);
  if (i > 0 && before(last, lp->heap[(i - 1) / 2])) sift_up(lp, i);
  else sift_down(lp, i);
}

/* The heap's anchor: timers[seq] = the handle at hidx (or nil). */
static void anchor(lua_State *L, int lidx, Handle *h, int hidx) {
  if (hidx) hidx = dfr_absindex(L, hidx);
  dfr_getslot(L, lidx, L_TIMERS);
  lua_pushnumber(L, (lua_Number)h->seq);
  if (hidx) lua_pushvalue(L, hidx);
  else lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* When the heap empties, give the memory of a large one back. */
static void heap_shrink(lua_State *L, int lidx, Loop *lp) {
  if (lp->hn == 0 && lp->hcap > 64) {
    free(lp->heap);
    lp->heap = NULL;
    lp->hcap = 0;
    lua_newtable(L);
    dfr_setslot(L, lidx, L_TIMERS);
  }
}

/* ------------------------------------------------------------- handles */

/* Pushes a new active handle for f and its arguments at fidx..top. */
static Handle *new_handle(lua_State *L, int lidx, int fidx) {
  int n = lua_gettop(L) - fidx, i;
  Handle *h = (Handle *)dfr_newud(L, sizeof *h, H_ARGS - 1 + n);
  memset(h, 0, sizeof *h);
  h->heap = -1;
  h->nargs = n;
  dfr_getmt(L, DFR_HANDLE_MT);
  lua_setmetatable(L, -2);
  for (i = 0; i <= n; i++) {
    lua_pushvalue(L, fidx + i);
    dfr_setslot(L, -2, H_FUNC + i);
  }
  lua_pushvalue(L, lidx);
  dfr_setslot(L, -2, H_LOOP);
  h->active = 1;
  return h;
}

/* Makes the handle at hidx inactive and drops what it held. */
static void retire(lua_State *L, int hidx, Handle *h) {
  int i;
  h->active = 0;
  for (i = H_LOOP; i < H_ARGS + h->nargs; i++) {
    lua_pushnil(L);
    dfr_setslot(L, hidx, i);
  }
}

/* Pushes the handle's function and arguments, then retires it. */
static void push_call(lua_State *L, int hidx, Handle *h) {
  int i;
  luaL_checkstack(L, h->nargs + 4, "too many arguments");
  for (i = H_FUNC; i < H_ARGS + h->nargs; i++) dfr_getslot(L, hidx, i);
  retire(L, hidx, h);
}

/* A delay: a finite number >= 0, else an error naming fname and arg #1. */
static void check_delay(lua_State *L, int idx, const char *fname) {
  double s;
  if (lua_type(L, idx) != LUA_TNUMBER) dfr_argerror(L, 1, fname, "number", idx);
  s = lua_tonumber(L, idx);
  if (!(s >= 0) || s == HUGE_VAL) {
    lua_pushvalue(L, idx);
    dfr_error(L, "bad argument #1 to '%s' (the delay must be a finite number "
                 ">= 0, got %s)", fname, lua_tostring(L, -1));
  }
}

/* core.check_delay(seconds, fname) */
static int loop_check_delay(lua_State *L) {
  check_delay(L, 1, lua_tostring(L, 2));
  return 0;
}

/* loop:call_soon(f, ...) */
static int loop_call_soon(lua_State *L) {
  Loop *lp = check_loop(L, "call_soon");
  dfr_checkfunction(L, 2, 1, "call_soon");
  new_handle(L, 1, 2);
  dfr_ring_push(L, 1, L_RING, &lp->ready, -1);
  lp->live++;
  return 1;
}

/* A timer for the loop at 1 (at time 2 + delay 3) with the function (or a
** sleep's deferred) and arguments at 4..top. */
static Handle *new_timer(lua_State *L, Loop *lp) {
  Handle *h;
  if (lp->hn == lp->hcap) {
    int cap = lp->hcap ? lp->hcap * 2 : 64;
    Handle **p = (Handle **)realloc(lp->heap, (size_t)cap * sizeof *p);
    if (p == NULL) {
      luaL_error(L, "not enough memory");
      return NULL;
    }
    lp->heap = p;
    lp->hcap = cap;
  }
  h = new_handle(L, 1, 4);
  h->timer = 1;
  h->due = lua_tonumber(L, 2) + lua_tonumber(L, 3);
  h->seq = lp->seq++;
  anchor(L, 1, h, -1);
  lp->heap[lp->hn++] = h;
  sift_up(lp, lp->hn - 1);
  return h;
}

/* core.call_later(loop, now, seconds, f, ...) */
static int loop_call_later(lua_State *L) {
  Loop *lp = check_loop(L, "call_later");
  check_delay(L, 3, "call_later");
  dfr_checkfunction(L, 4, 2, "call_later");
  new_timer(L, lp);
  return 1;
}

/* core.sleep_timer(loop, now, seconds, d): the timer of loop:sleep, which
** fires d itself when due (internal: loop and d are trusted). */
static int loop_sleep_timer(lua_State *L) {
  lua_settop(L, 4);
  new_timer(L, (Loop *)lua_touserdata(L, 1))->fires = 1;
  return 1;
}

static int handle_cancel(lua_State *L) {
  Handle *h = (Handle *)dfr_testudata(L, 1, DFR_HANDLE_MT);
  Loop *lp;
  if (h == NULL) return dfr_selferror(L, "cancel", "Handle");
  if (!h->active) return 0;
  dfr_getslot(L, 1, H_LOOP);
  lp = (Loop *)lua_touserdata(L, -1);
  if (h->timer) {
    anchor(L, 2, h, 0);
    heap_remove(lp, h);
    heap_shrink(L, 2, lp);
  } else {
    lp->live--; /* the ring keeps it; a pass skips it */
  }
  retire(L, 1, h);
  return 0;
}

static int handle_index(lua_State *L) {
  Handle *h = (Handle *)lua_touserdata(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "active") == 0) lua_pushboolean(L, h->active);
  else if (k && strcmp(k, "cancel") == 0) lua_pushcfunction(L, handle_cancel);
  else if (k && strcmp(k, "when") == 0 && h->timer) lua_pushnumber(L, h->due);
  else lua_pushnil(L);
  return 1;
}

static int handle_tostring(lua_State *L) {
  Handle *h = (Handle *)lua_touserdata(L, 1);
  lua_pushfstring(L, "<Handle at %p %s>", (void *)h,
                  h->active ? "active" : "inactive");
  return 1;
}

/* ---------------------------------------------------------------- pass */

/* A sleep's timer is due (its handle on top): its deferred fires here, with
** no call to make (nothing allocates: running out of memory cannot lose
** it), and its chain runs above the pass.  One fired by hand is left be. */
static int fire_sleep(lua_State *L, int top, Handle *h) {
  int hidx = lua_gettop(L);
  dfr_getslot(L, hidx, H_FUNC);
  retire(L, hidx, h);
  if (((dfr_Deferred *)lua_touserdata(L, -1))->state != DFR_PENDING) return DFR_NEXT;
  lua_pushnil(L);
  if (dfr_deferred_fire(L, hidx + 1, 1)) dfr_engine_push(L, top, hidx + 1);
  return DFR_NEXT;
}

/* The pass frame: first the calls queued when it began, then the timers due
** at its start, all within the budget; an error goes to on_error first. */
static int pass_resume(lua_State *L, int top) {
  Loop *lp = (Loop *)lua_touserdata(L, top);
  if (lp->error_pending == ERR_NOW) { /* the error stays until reported */
    lp->error_pending = ERR_NONE;
    lp->in_handler = 1;
    dfr_getslot(L, top, L_ONERROR);
    dfr_getslot(L, top, L_ERR);
    lua_getfield(L, -1, "traceback");
    lua_getfield(L, -2, "value");
    lua_replace(L, -3);
    return DFR_CALL;
  }
  while (lp->budget != 0) {
    Handle *h;
    if (lp->pass_left > 0) {
      lp->pass_left--;
      dfr_ring_pop(L, top, L_RING, &lp->ready);
      h = (Handle *)lua_touserdata(L, -1);
      if (!h->active) {
        lua_pop(L, 1);
        continue;
      }
      lp->live--;
    } else if (lp->hn > 0 && lp->heap[0]->due <= lp->now &&
               lp->heap[0]->seq < lp->pass_seq) {
      h = lp->heap[0];
      heap_remove(lp, h);
      dfr_getslot(L, top, L_TIMERS);
      lua_pushnumber(L, (lua_Number)h->seq);
      lua_rawget(L, -2);
      lua_remove(L, -2);
      anchor(L, top, h, 0);
    } else {
      break;
    }
    lp->budget--;
    lp->ran++;
    if (h->fires) return fire_sleep(L, top, h);
    push_call(L, lua_gettop(L), h);
    lua_remove(L, top + 1);
    lp->calling = 1;
    return DFR_CALL;
  }
  heap_shrink(L, top, lp);
  return DFR_POP;
}

static void pass_outcome(lua_State *L, int top, int ok, int ridx) {
  Loop *lp = (Loop *)lua_touserdata(L, top);
  if (lp->in_handler) {
    lp->in_handler = 0;
    if (!ok && dfr_failure_is_nomem(L, ridx)) { /* the report is made again next pass */
      lp->error_pending = ERR_NEXT;
      return;
    }
    if (!ok) {
      lua_getfield(L, ridx, "value");
      fprintf(stderr, "defer: error in the loop's error handler: %s\n",
              lua_isstring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
      fflush(stderr);
      lua_pop(L, 1);
    }
    lua_pushnil(L);
    dfr_setslot(L, top, L_ERR);
    return;
  }
  lp->calling = 0;
  if (!ok) {
    lua_pushvalue(L, ridx);
    dfr_setslot(L, top, L_ERR);
    lp->error_pending = ERR_NOW;
  }
}

/* An error escaped the engine with this pass on top (memory ran out outside
** any user call): a loop call it had handed out is lost, and that is told
** to on_error; a report to on_error that was lost is made again.  Both at
** the next pass, when memory may be back. */
static void pass_abort(lua_State *L, int top, int eidx) {
  Loop *lp = (Loop *)lua_touserdata(L, top);
  if (lp->in_handler) {
    lp->in_handler = 0;
    lp->error_pending = ERR_NEXT;
  } else if (lp->calling) {
    lp->calling = 0;
    if (lp->error_pending != ERR_NONE) return; /* one report waits already */
    dfr_failure_push_safe(L, eidx);
    dfr_setslot(L, top, L_ERR);
    lp->error_pending = ERR_NEXT;
  }
}

static int default_on_error(lua_State *L) {
  const char *msg;
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  msg = lua_tostring(L, -1);
  fprintf(stderr, "defer: error in a loop callback: %s\n%s\n",
          msg ? msg : "?", lua_isstring(L, 2) ? lua_tostring(L, 2) : "");
  fflush(stderr);
  return 0;
}

/* core.pass(loop, now, budget): starts a pass unless one is running. */
static int loop_pass(lua_State *L) {
  Loop *lp = (Loop *)lua_touserdata(L, 1);
  if (lp->fr.onstack) return 0;
  if (lp->clock != CLOCK_MANUAL) lp->now = lua_tonumber(L, 2);
  if (lp->error_pending == ERR_NEXT) lp->error_pending = ERR_NOW;
  lp->pass_left = lp->ready.count;
  lp->pass_seq = lp->seq;
  lp->ran = 0;
  lp->budget = lua_isnoneornil(L, 3) ? -1 : (int)lua_tointeger(L, 3);
  lua_settop(L, 1);
  return dfr_engine_start(L, 1);
}

/* core.ran(loop): how many calls the last pass ran. */
static int loop_ran(lua_State *L) {
  lua_pushinteger(L, ((Loop *)lua_touserdata(L, 1))->ran);
  return 1;
}

/* ------------------------------------------------------- the rest */

/* core.now(loop) -> seconds, or nil and the clock function */
static int loop_now(lua_State *L) {
  Loop *lp = check_loop(L, "time");
  switch (lp->clock) {
    case CLOCK_MONO: lua_pushnumber(L, mono_now()); return 1;
    case CLOCK_MANUAL: lua_pushnumber(L, lp->now); return 1;
    default:
      lua_pushnil(L);
      dfr_getslot(L, 1, L_CLOCK);
      return 2;
  }
}

static int loop_pending(lua_State *L) {
  Loop *lp = check_loop(L, "pending");
  /* a report to on_error that memory put off is a call waiting too */
  lua_pushinteger(L, lp->live + lp->hn + (lp->error_pending != ERR_NONE));
  return 1;
}

/* core.next_timeout(loop, now) */
static int loop_next_timeout(lua_State *L) {
  Loop *lp = check_loop(L, "next_timeout");
  double d;
  if (lp->live > 0) lua_pushnumber(L, 0);
  else if (lp->hn == 0) lua_pushnil(L);
  else {
    d = lp->heap[0]->due - lua_tonumber(L, 2);
    lua_pushnumber(L, d > 0 ? d : 0);
  }
  return 1;
}

/* core.wait(loop, seconds): sleep, or on a manual clock jump. */
static int loop_wait(lua_State *L) {
  Loop *lp = (Loop *)lua_touserdata(L, 1);
  double s = lua_tonumber(L, 2);
  if (lp->clock == CLOCK_MANUAL) {
    lp->now += s;
  } else if (s > 0) {
    struct timespec ts, rem;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR) ts = rem;
  }
  return 0;
}

/* core.advance(loop, dt) */
static int loop_advance(lua_State *L) {
  Loop *lp = check_loop(L, "advance");
  double dt;
  if (lp->clock != CLOCK_MANUAL)
    dfr_error(L, "calling '%s' on a loop whose clock is not manual%s",
              "advance", "");
  if (lua_type(L, 2) != LUA_TNUMBER) dfr_argerror(L, 1, "advance", "number", 2);
  dt = lua_tonumber(L, 2);
  if (!(dt >= 0) || dt == HUGE_VAL)
    dfr_error(L, "bad argument #1 to '%s' (dt must be a finite number >= 0%s)",
              "advance", "");
  lp->now += dt;
  return 0;
}

static int loop_stop(lua_State *L) {
  check_loop(L, "stop")->stopped = 1;
  return 0;
}

/* core.passing(loop): whether a pass of the loop is under way. */
static int loop_passing(lua_State *L) {
  Loop *lp = (Loop *)lua_touserdata(L, 1);
  lua_pushboolean(L, lp->fr.onstack);
  return 1;
}

/* core.stopped(loop, reset): reads the stop flag, clearing it if asked. */
static int loop_stopped(lua_State *L) {
  Loop *lp = (Loop *)lua_touserdata(L, 1);
  lua_pushboolean(L, lp->stopped);
  if (lua_toboolean(L, 2)) lp->stopped = 0;
  return 1;
}

static int loop_on_error(lua_State *L) {
  check_loop(L, "on_error");
  if (!lua_isnoneornil(L, 2)) dfr_checkfunction(L, 2, 1, "on_error");
  lua_settop(L, 2);
  dfr_getslot(L, 1, L_ONERROR);
  if (lua_isnil(L, 2)) lua_pushcfunction(L, default_on_error);
  else lua_pushvalue(L, 2);
  dfr_setslot(L, 1, L_ONERROR);
  return 1;
}

static int loop_gc(lua_State *L) {
  Loop *lp = (Loop *)lua_touserdata(L, 1);
  free(lp->heap);
  lp->heap = NULL;
  lp->hn = lp->hcap = 0;
  return 0;
}

static int loop_tostring(lua_State *L) {
  Loop *lp = (Loop *)lua_touserdata(L, 1);
  lua_pushfstring(L, "<Loop at %p, %d pending>", (void *)lp, lp->live + lp->hn);
  return 1;
}

/* defer.new_loop([opts]) */
static int f_new_loop(lua_State *L) {
  Loop *lp;
  int clock = CLOCK_MONO;
  if (!lua_isnoneornil(L, 1) && !lua_istable(L, 1))
    dfr_argerror(L, 1, "new_loop", "table", 1);
  lua_settop(L, 1);
  if (lua_istable(L, 1)) {
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "clock"))
        dfr_error(L, "bad argument #1 to '%s' (unknown option '%s')",
                  "new_loop", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    }
    lua_getfield(L, 1, "clock");
    if (lua_isfunction(L, -1)) clock = CLOCK_FUNC;
    else if (lua_type(L, -1) == LUA_TSTRING &&
             strcmp(lua_tostring(L, -1), "manual") == 0)
      clock = CLOCK_MANUAL;
    else if (lua_type(L, -1) == LUA_TSTRING &&
             strcmp(lua_tostring(L, -1), "monotonic") == 0)
      clock = CLOCK_MONO;
    else if (!lua_isnil(L, -1))
      dfr_error(L, "bad argument #1 to '%s' (clock must be \"manual\", "
                   "\"monotonic\" or a function%s)", "new_loop", "");
  } else {
    lua_pushnil(L);
  }
  lp = (Loop *)dfr_newud(L, sizeof *lp, L_SLOTS);
  memset(lp, 0, sizeof *lp);
  lp->fr.kind = DFR_FRAME_LOOP;
  lp->clock = (unsigned char)clock;
  dfr_getmt(L, DFR_LOOP_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  dfr_setslot(L, -2, L_TIMERS);
  lua_pushcfunction(L, default_on_error);
  dfr_setslot(L, -2, L_ONERROR);
  if (clock == CLOCK_FUNC) {
    lua_pushvalue(L, -2);
    dfr_setslot(L, -2, L_CLOCK);
  }
  return 1;
}

void dfr_loop_open(lua_State *L, int module, int core) {
  static const dfr_FrameKind pass_kind = {pass_resume, pass_outcome, NULL,
                                         pass_abort};
  static const luaL_Reg methods[] = {
      {"call_soon", loop_call_soon}, {"pending", loop_pending},
      {"stop", loop_stop},           {"on_error", loop_on_error},
      {NULL, NULL}};
  static const luaL_Reg corefns[] = {
      {"call_later", loop_call_later}, {"sleep_timer", loop_sleep_timer},
      {"pass", loop_pass},
      {"ran", loop_ran},               {"now", loop_now},
      {"next_timeout", loop_next_timeout}, {"wait", loop_wait},
      {"advance", loop_advance},       {"stopped", loop_stopped},
      {"passing", loop_passing},
      {"check_delay", loop_check_delay},
      {NULL, NULL}};
  dfr_engine_kind(DFR_FRAME_LOOP, &pass_kind);

  dfr_newmetatable(L, DFR_HANDLE_MT);
  lua_pushcfunction(L, handle_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, handle_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  dfr_newclass(L, DFR_LOOP_MT, methods, NULL, loop_tostring, core);
  lua_pushcfunction(L, loop_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  lua_pushvalue(L, core);
  dfr_setfuncs(L, corefns, 0);
  lua_pop(L, 1);
  lua_pushcfunction(L, f_new_loop);
  lua_setfield(L, module, "new_loop");

  /* one default loop per Lua state */
  lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_LOOP_KEY);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushcfunction(L, f_new_loop);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_LOOP_KEY);
  }
  lua_setfield(L, module, "loop");
}
