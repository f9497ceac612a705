/*
** dlist.c: defer.list, defer.gather and defer.race.  A list is a frame of
** the engine.  It hooks its children one at a time, each with one internal
** entry kept inline in the child (no table and no closure per child), and
** records each result in the values table: for defer.list the {ok, value}
** pair R fires with, made as the child is recorded where that is safe (R's
** array is the values table itself), else the value and a flag in C.
** Everything that runs user code is a step of the list's frame, run by the
** driver: progress calls, cancelling the losers of a race, the text of a
** FirstError, firing the result deferred R.
** So a million children never recurse, and nothing is called from C.
** SPDX-License-Identifier: MIT
*/
#include <limits.h>
#include <string.h>

#include "deferred.h"
#include "dlist.h"
#include "engine.h"
#include "failure.h"

enum { MODE_LIST, MODE_GATHER, MODE_RACE };
/* options: Twisted's three flags, and race's "every result goes on as nil" */
enum { ON_CALLBACK = 1, ON_ERRBACK = 2, CONSUME = 4, CONSUME_ALL = 8 };
/* what R is to be fired with, once decided (Twisted DL4) */
enum { FIRE_NONE, FIRE_ALL, FIRE_ONE_SUCCESS, FIRE_FIRST_ERROR, FIRE_GROUP };
/* the user call the frame is out on */
enum { CALL_NONE, CALL_PROGRESS, CALL_LOSERS, CALL_FIRST_ERROR };

/* User value slots: the frame below; the children (a copy of the input,
** unless every child was recorded when the list was made);
** the values; R; on_progress; the FirstError once made (false: making it
** failed). */
enum { T_BELOW = DFR_SLOT_BELOW, T_CHILDREN, T_VALUES, T_RESULT, T_PROGRESS,
       T_ERROR, T_SLOTS = T_ERROR };

/* The Lua helpers of dlist.lua the frame calls through the driver. */
#define HELPERS_KEY "defer.list"
enum { H_CANCEL_LOSERS = 1, H_FIRST_ERROR };

typedef struct List {
  dfr_Frame fr;
  unsigned char mode, opts;
  unsigned char decided; /* R's result is decided (it is decided once) */
  unsigned char fire;    /* FIRE_*: decided but not given to R yet */
  unsigned char calling; /* CALL_* */
  unsigned char losers;  /* race: the losers were cancelled */
  unsigned char has_progress;
  int n, done, failed, hooked, reported, index;
  unsigned char ok[];    /* per child: OK_* */
} List;

/* what values[i] holds: nothing yet, the value of a success or of a
** failure, or (defer.list) the pair made already */
enum { OK_NONE, OK_SUCCESS, OK_FAILURE, OK_PAIR };

static const char *const fnames[] = {"list", "gather", "race"};

/* ------------------------------------------------------------ entries */

/* Replaces the value on top with the pair {ok, value}. */
static void make_pair(lua_State *L, int ok) {
  lua_createtable(L, 2, 0);
  lua_pushboolean(L, ok);
  lua_rawseti(L, -2, 1);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 2);
}

/* Records the result of the child at cidx (input index i) in the list at
** lidx: counts it, keeps its value while R's result is undecided, decides
** by Twisted's rule DL4, and hands nil on down the child's chain instead of
** a failure when asked (consume_errors; race: every result).  defer.list
** keeps the {ok, value} pair R fires with when pair is set: only where
** running out of memory changes nothing (the pair is made first), never in
** a LIST entry, which runs once; there the value and its flag are kept, to
** be made a pair when R fires (push_result). */
static void record(lua_State *L, int lidx, List *l, int i, int cidx,
                   int pair) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, cidx);
  int failed = d->state == DFR_FAILURE;
  if (!l->decided) {
    dfr_getslot(L, lidx, T_VALUES);
    pair = pair && l->mode == MODE_LIST;
    dfr_getslot(L, cidx, DFR_D_RESULT);
    if (pair) make_pair(L, !failed);
    lua_rawseti(L, -2, i); /* the values table has room for n */
    lua_pop(L, 1);
    l->ok[i - 1] =
        (unsigned char)(pair ? OK_PAIR : failed ? OK_FAILURE : OK_SUCCESS);
  }
  l->done++;
  if (failed) l->failed++;
  if (!l->decided) {
    if (!failed && (l->opts & ON_CALLBACK)) l->fire = FIRE_ONE_SUCCESS;
    else if (failed && (l->opts & ON_ERRBACK)) l->fire = FIRE_FIRST_ERROR;
    else if (l->done == l->n) /* for a race: every one failed */
      l->fire = l->mode == MODE_RACE ? FIRE_GROUP : FIRE_ALL;
    if (l->fire != FIRE_NONE) {
      l->decided = 1;
      l->index = i;
    }
  }
  if ((failed && (l->opts & CONSUME)) || (l->opts & CONSUME_ALL)) {
    lua_pushnil(L);
    dfr_deferred_set_result(L, cidx, 1);
    dfr_deferred_handled(d);
  }
}

/* Pushes the value recorded for child i (values table at vidx). */
static void push_value(lua_State *L, const List *l, int vidx, int i) {
  lua_rawgeti(L, vidx, i);
  if (l->ok[i - 1] == OK_PAIR) {
    lua_rawgeti(L, -1, 2);
    lua_remove(L, -2);
  }
}

/* Whether the list has something to do as a frame. */
static int has_work(const List *l) {
  return l->fire != FIRE_NONE || l->hooked < l->n ||
         (l->has_progress && l->reported < l->done);
}

/* The DFR_E_LIST entry of a child (at top) that reached it: a is the list,
** a + 1 the child's index.  The list runs above the child when it has work
** and is not on a stack already (if it is, it picks the work up when its
** stack comes back to it). */
static int list_entry(lua_State *L, int top, int a) {
  List *l = (List *)lua_touserdata(L, a);
  record(L, a, l, (int)lua_tointeger(L, a + 1), top, 0);
  if (!l->fr.onstack && has_work(l)) dfr_engine_push(L, top, a);
  return DFR_NEXT;
}

/* ------------------------------------------------------------ firing */

/* Pushes R's result as decided; returns whether it is a success.  The
** values table is at vidx. */
static int push_result(lua_State *L, int lidx, List *l, int vidx) {
  int i;
  switch (l->fire) {
    case FIRE_ALL: /* the pairs (list) or values (gather), in order */
      for (i = 1; l->mode == MODE_LIST && i <= l->n; i++) {
        if (l->ok[i - 1] == OK_PAIR) continue;
        /* in place, one by one: running out of memory part way leaves a
        ** table this can go on with */
        lua_rawgeti(L, vidx, i);
        make_pair(L, l->ok[i - 1] == OK_SUCCESS);
        lua_rawseti(L, vidx, i);
        l->ok[i - 1] = OK_PAIR;
      }
      lua_pushvalue(L, vidx);
      return 1;
    case FIRE_ONE_SUCCESS:
      lua_createtable(L, 2, 0);
      push_value(L, l, vidx, l->index);
      lua_rawseti(L, -2, 1);
      lua_pushinteger(L, l->index);
      lua_rawseti(L, -2, 2);
      return 1;
    case FIRE_FIRST_ERROR:
      dfr_getslot(L, lidx, T_ERROR);
      if (lua_istable(L, -1)) return 0; /* made by dlist.lua */
      lua_pop(L, 1); /* making it failed: a plainer one */
      dfr_error_push(L, "FirstError", "item %d failed", l->index);
      push_value(L, l, vidx, l->index);
      lua_setfield(L, -2, "failure");
      lua_pushinteger(L, l->index);
      lua_setfield(L, -2, "index");
      return 0;
    default: /* FIRE_GROUP: every child failed; the values are the failures */
      dfr_error_push(L, "FailureGroup", "all %d deferreds failed", l->n);
      lua_pushvalue(L, vidx);
      lua_setfield(L, -2, "failures");
      return 0;
  }
}

/* R has its result, or was cancelled before: the list lets go of what it
** kept for R. */
static void let_go(lua_State *L, int lidx, List *l) {
  int slot;
  l->fire = FIRE_NONE;
  for (slot = T_VALUES; slot <= T_ERROR; slot++) {
    if (slot == T_PROGRESS) continue;
    lua_pushnil(L);
    dfr_setslot(L, lidx, slot);
  }
}

/* Gives R (at ridx, pending) its decided result; returns whether R must now
** run its callbacks. */
static int give(lua_State *L, int lidx, List *l, int ridx) {
  int ok, r;
  dfr_getslot(L, lidx, T_VALUES);
  ok = push_result(L, lidx, l, lua_gettop(L));
  lua_remove(L, -2);
  r = dfr_deferred_fire(L, ridx, ok);
  let_go(L, lidx, l);
  return r;
}

/* Pushes the helper h of dlist.lua. */
static void push_helper(lua_State *L, int h) {
  lua_getfield(L, LUA_REGISTRYINDEX, HELPERS_KEY);
  lua_rawgeti(L, -1, h);
  lua_remove(L, -2);
}

/* The step that fires R (at top + 1): before it, a race cancels its losers
** and a FirstError is made, each a call through the driver. */
static int fire_step(lua_State *L, int top, List *l) {
  dfr_Deferred *r;
  dfr_getslot(L, top, T_RESULT);
  r = (dfr_Deferred *)lua_touserdata(L, top + 1);
  if (r == NULL || r->state != DFR_PENDING) { /* R was cancelled meanwhile */
    let_go(L, top, l);
    return DFR_NEXT;
  }
  if (l->fire == FIRE_ONE_SUCCESS && l->mode == MODE_RACE && !l->losers) {
    l->losers = 1; /* as Twisted: the others are cancelled, then R fires */
    lua_settop(L, top);
    push_helper(L, H_CANCEL_LOSERS);
    dfr_getslot(L, top, T_CHILDREN);
    lua_pushinteger(L, l->index);
    l->calling = CALL_LOSERS;
    return DFR_CALL;
  }
  if (l->fire == FIRE_FIRST_ERROR) {
    dfr_getslot(L, top, T_ERROR);
    if (lua_isnil(L, -1)) { /* its text may take a __tostring: from Lua */
      lua_settop(L, top);
      push_helper(L, H_FIRST_ERROR);
      dfr_getslot(L, top, T_VALUES);
      push_value(L, l, lua_gettop(L), l->index);
      lua_replace(L, -2);
      lua_pushinteger(L, l->index);
      l->calling = CALL_FIRST_ERROR;
      return DFR_CALL;
    }
    lua_settop(L, top + 1);
  }
  if (give(L, top, l, top + 1)) dfr_engine_push(L, top, top + 1);
  return DFR_NEXT;
}

/* ------------------------------------------------------------ the frame */

/* Hooks the next children, until one must run above the list, a progress
** call or firing R comes first, or all are hooked. */
static int hook_step(lua_State *L, int top, List *l) {
  dfr_getslot(L, top, T_CHILDREN); /* top + 1 */
  while (l->hooked < l->n) {
    int i = l->hooked + 1;
    dfr_Deferred *d;
    lua_rawgeti(L, top + 1, i); /* top + 2 */
    d = (dfr_Deferred *)lua_touserdata(L, top + 2);
    if (dfr_deferred_runnable(d) && !dfr_deferred_has_entries(d)) {
      /* fired and idle: its result is recorded here, with no entry */
      record(L, top, l, i, top + 2, 1);
      l->hooked = i;
      lua_settop(L, top + 1);
      if (l->fire != FIRE_NONE || (l->has_progress && l->reported < l->done))
        return DFR_NEXT;
      continue;
    }
    lua_pushvalue(L, top);
    lua_pushinteger(L, i);
    if (dfr_deferred_add(L, top + 2, DFR_E_LIST, 2)) {
      l->hooked = i;
      dfr_engine_push(L, top, top + 2);
      return DFR_NEXT;
    }
    l->hooked = i;
    lua_settop(L, top + 1);
  }
  return DFR_NEXT; /* all hooked: once more round, to tidy up */
}

/* In order: the progress calls due, firing R, hooking the next children. */
static int list_resume(lua_State *L, int top) {
  List *l = (List *)lua_touserdata(L, top);
  if (l->has_progress && l->reported < l->done) {
    dfr_getslot(L, top, T_PROGRESS);
    lua_pushinteger(L, ++l->reported);
    lua_pushinteger(L, l->n);
    l->calling = CALL_PROGRESS;
    return DFR_CALL;
  }
  if (l->fire != FIRE_NONE) return fire_step(L, top, l);
  if (l->hooked < l->n) return hook_step(L, top, l);
  /* nothing left to do for now: let go of what is not needed any more */
  if (l->decided) {
    lua_pushnil(L);
    dfr_setslot(L, top, T_CHILDREN);
  }
  if (l->done == l->n && l->has_progress) {
    l->has_progress = 0;
    lua_pushnil(L);
    dfr_setslot(L, top, T_PROGRESS);
  }
  return DFR_POP;
}

static void list_outcome(lua_State *L, int top, int ok, int ridx) {
  List *l = (List *)lua_touserdata(L, top);
  int call = l->calling;
  l->calling = CALL_NONE;
  if (call == CALL_FIRST_ERROR) {
    if (ok && lua_istable(L, ridx)) lua_pushvalue(L, ridx);
    else lua_pushboolean(L, 0);
    dfr_setslot(L, top, T_ERROR);
    if (ok) return;
  }
  /* a broken progress bar (or helper) is reported, and the list goes on */
  if (!ok) dfr_failure_report(L, ridx);
}

/* ------------------------------------------------------------ making */

/* Checks opts (list: a table or nil; gather: a boolean or nil) and returns
** the option bits; *progress says whether on_progress was given. */
static int read_opts(lua_State *L, int mode, int oidx, int *progress) {
  const char *fname = fnames[mode];
  int opts = 0;
  *progress = 0;
  if (mode == MODE_RACE) return ON_CALLBACK | CONSUME | CONSUME_ALL;
  if (mode == MODE_GATHER) {
    if (!lua_isnoneornil(L, oidx) && !lua_isboolean(L, oidx))
      dfr_argerror(L, 2, fname, "boolean", oidx);
    return ON_ERRBACK | (lua_toboolean(L, oidx) ? CONSUME : 0);
  }
  if (lua_isnoneornil(L, oidx)) return 0;
  if (!lua_istable(L, oidx)) dfr_argerror(L, 2, fname, "table", oidx);
  lua_pushnil(L);
  while (lua_next(L, oidx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int bit = 0;
    if (strcmp(k, "fire_on_one_callback") == 0) bit = ON_CALLBACK;
    else if (strcmp(k, "fire_on_one_errback") == 0) bit = ON_ERRBACK;
    else if (strcmp(k, "consume_errors") == 0) bit = CONSUME;
    else if (strcmp(k, "on_progress") == 0) {
      if (!lua_isfunction(L, -1))
        dfr_error(L, "bad argument #2 to '%s' (function expected for "
                     "'on_progress', got %s)", fname, luaL_typename(L, -1));
      *progress = 1;
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      dfr_error(L, "bad argument #2 to '%s' (unknown option '%s')", fname, k);
    } else {
      dfr_error(L, "bad argument #2 to '%s' (unknown option: a %s key)", fname,
                luaL_typename(L, -2));
    }
    if (lua_toboolean(L, -1)) opts |= bit;
    lua_pop(L, 1);
  }
  return opts;
}

/* Raises unless every value 1..n of the table at 1 is a Deferred. */
static void check_children(lua_State *L, const char *fname, int n) {
  int i, base = lua_gettop(L);
  dfr_getmt(L, DFR_DEFERRED_MT);
  dfr_getmt(L, DFR_DEFERRED_GC_MT);
  for (i = 1; i <= n; i++) {
    int isd;
    lua_rawgeti(L, 1, i);
    isd = lua_type(L, -1) == LUA_TUSERDATA && lua_getmetatable(L, -1) &&
          (lua_rawequal(L, -1, base + 1) || lua_rawequal(L, -1, base + 2));
    if (!isd) {
      lua_settop(L, base + 3);
      lua_pushfstring(L, "bad argument #1 to '%s' (Deferred expected at "
                         "index %d, got %s)", fname, i,
                      luaL_typename(L, base + 3));
      dfr_error(L, "%s", lua_tostring(L, -1), NULL);
    }
    lua_settop(L, base + 2);
  }
  lua_settop(L, base);
}

/* Records, in order, the children (the input at 1; the list at 3) that are
** fired and idle already, while nothing is decided: then most lists of
** fired deferreds keep no copy of them.  Only where that changes nothing a
** user can see: not for a race (its losers are cancelled from the copy),
** nor with on_progress (each call comes before the next child is
** recorded), nor with consume_errors (running out of memory here must
** leave every child as it was). */
static void record_fired(lua_State *L, List *l) {
  if (l->mode == MODE_RACE || l->has_progress || (l->opts & CONSUME)) return;
  while (l->hooked < l->n && l->fire == FIRE_NONE) {
    dfr_Deferred *d;
    lua_rawgeti(L, 1, l->hooked + 1);
    d = (dfr_Deferred *)lua_touserdata(L, -1);
    if (!dfr_deferred_runnable(d) || dfr_deferred_has_entries(d)) break;
    record(L, 3, l, l->hooked + 1, lua_gettop(L), 1);
    l->hooked++;
    lua_pop(L, 1);
  }
  lua_settop(L, 4);
}

/* core.list_new(deferreds, opts, mode) -> list, R, children.  Everything is
** checked before anything is made or touched. */
static int list_new(lua_State *L) {
  int mode = (int)lua_tointeger(L, 3), n, opts, progress, i;
  const char *fname = fnames[mode];
  size_t len;
  List *l;
  if (!lua_istable(L, 1)) dfr_argerror(L, 1, fname, "table", 1);
  lua_settop(L, 2);
  len = dfr_rawlen(L, 1);
  if (len > (size_t)INT_MAX / 4)
    dfr_error(L, "bad argument #1 to '%s' (too many deferreds%s)", fname, "");
  n = (int)len;
  check_children(L, fname, n);
  opts = read_opts(L, mode, 2, &progress);
  lua_settop(L, 2);

  l = (List *)dfr_newud(L, sizeof(List) + (size_t)n, T_SLOTS); /* 3 */
  memset(l, 0, sizeof(List) + (size_t)n);
  l->fr.kind = DFR_FRAME_LIST;
  l->mode = (unsigned char)mode;
  l->opts = (unsigned char)opts;
  l->has_progress = (unsigned char)progress;
  l->n = n;
  if (progress) {
    lua_getfield(L, 2, "on_progress");
    dfr_setslot(L, 3, T_PROGRESS);
  }
  lua_createtable(L, n, 0);
  dfr_setslot(L, 3, T_VALUES);
  dfr_deferred_new(L); /* R: 4 */
  lua_pushvalue(L, 4);
  dfr_setslot(L, 3, T_RESULT);
  record_fired(L, l);
  /* the children, copied (Twisted DL1): 5; only a race's winner cancels
  ** the others, and a child recorded already needs no hook nor cancel */
  lua_createtable(L, l->hooked == n ? 0 : n, 0);
  for (i = 1; l->hooked < n && i <= n; i++) {
    lua_rawgeti(L, 1, i);
    lua_rawseti(L, 5, i);
  }
  lua_pushvalue(L, 5);
  dfr_setslot(L, 3, T_CHILDREN);
  /* an empty list fires at once, unless it waits for a success */
  if (n == 0 && !(opts & ON_CALLBACK)) {
    l->fire = FIRE_ALL;
    l->decided = 1;
  }
  return 3;
}

/* core.list_failure(list): while a FirstError is decided but not made and
** R waits for it, the failure and its index. */
static int list_failure(lua_State *L) {
  List *l = (List *)lua_touserdata(L, 1);
  if (l->fire != FIRE_FIRST_ERROR) return 0;
  dfr_getslot(L, 1, T_ERROR);
  if (!lua_isnil(L, -1)) return 0;
  dfr_getslot(L, 1, T_VALUES);
  push_value(L, l, lua_gettop(L), l->index);
  lua_pushinteger(L, l->index);
  return 2;
}

/* core.list_flush(list [, first_error]): R's canceller, after cancelling
** the children, while the list is on a stack busy with a user call (its
** on_progress, say): gives R the result the children decided (Twisted DL8)
** now, before the cancel falls back to a CancelledError.  A race's losers
** are being cancelled already.  Returns what the driver must run. */
static int list_flush(lua_State *L) {
  List *l = (List *)lua_touserdata(L, 1);
  dfr_Deferred *r;
  lua_settop(L, 2);
  if (l->fire == FIRE_NONE) return 0;
  dfr_getslot(L, 1, T_RESULT); /* 3 */
  r = (dfr_Deferred *)lua_touserdata(L, 3);
  if (r == NULL || r->state != DFR_PENDING) return 0;
  if (l->fire == FIRE_FIRST_ERROR && lua_istable(L, 2)) {
    lua_pushvalue(L, 2);
    dfr_setslot(L, 1, T_ERROR);
  }
  l->losers = 1;
  if (!give(L, 1, l, 3)) return 0;
  return dfr_engine_start(L, 3);
}

/* core.list_report(failure): a child's canceller raised. */
static int list_report(lua_State *L) {
  dfr_failure_report(L, 1);
  return 0;
}

/* core.list_init(cancel_losers, first_error): the helpers of dlist.lua. */
static int list_init(lua_State *L) {
  lua_settop(L, 2);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, H_CANCEL_LOSERS);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, H_FIRST_ERROR);
  lua_setfield(L, LUA_REGISTRYINDEX, HELPERS_KEY);
  return 0;
}

void dfr_dlist_open(lua_State *L, int module, int core) {
  static const dfr_FrameKind kind = {list_resume, list_outcome, NULL, NULL};
  static const luaL_Reg corefns[] = {
      {"list_new", list_new},       {"list_failure", list_failure},
      {"list_flush", list_flush},   {"list_report", list_report},
      {"list_init", list_init},     {NULL, NULL}};
  (void)module;
  dfr_engine_kind(DFR_FRAME_LIST, &kind);
  dfr_deferred_entry_kind(DFR_E_LIST, list_entry);
  lua_pushvalue(L, core);
  dfr_setfuncs(L, corefns, 0);
  lua_pop(L, 1);
}
