/*
** dlist.c: defer.list, defer.gather and defer.race.  A list is a frame of
** the engine: it hooks its children one at a time (an internal entry each,
** kept inline: no table and no closure per child), and each child's result
** is recorded in C and a values table.  Progress calls and firing the
** result deferred happen in the list's frame, so a million children never
** recurse.
** SPDX-License-Identifier: MIT
*/
#include <string.h>

#include "deferred.h"
#include "dlist.h"
#include "engine.h"
#include "failure.h"

enum { MODE_LIST, MODE_GATHER, MODE_RACE };
enum { ON_CALLBACK = 1, ON_ERRBACK = 2, CONSUME = 4 };
/* what the list frame must fire the result with */
enum { FIRE_NONE, FIRE_ALL, FIRE_ONE_SUCCESS, FIRE_FIRST_ERROR, FIRE_GROUP };

enum { T_BELOW = DFR_SLOT_BELOW, T_CHILDREN, T_VALUES, T_RESULT, T_PROGRESS,
       T_OKS, T_SLOTS = T_OKS };

typedef struct List {
  dfr_Frame fr;
  unsigned char mode, opts, fired, fire, in_progress, has_progress;
  int n, done, hooked, reported, failed, fire_index;
} List;

static const char *const fnames[] = {"list", "gather", "race"};

/* Per child: 0 pending, 1 succeeded, 2 failed (a byte buffer in slot T_OKS). */
static unsigned char *oks(lua_State *L, int lidx) {
  unsigned char *p;
  dfr_getslot(L, lidx, T_OKS);
  p = (unsigned char *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return p;
}

/* ------------------------------------------------------------ entries */

/* Records the result of the child at cidx (slot i), decides whether the
** list fires (Twisted DL4), and consumes a failure when asked.  vidx is the
** values table, ok the per-child flags. */
static void record(lua_State *L, List *l, int vidx, unsigned char *ok, int i,
                   int cidx) {
  dfr_Deferred *d = (dfr_Deferred *)lua_touserdata(L, cidx);
  int failed = d->state == DFR_FAILURE;
  dfr_getslot(L, cidx, DFR_D_RESULT);
  lua_rawseti(L, vidx, i);
  ok[i - 1] = (unsigned char)(failed ? 2 : 1);
  l->done++;
  if (failed) l->failed++;
  if (!l->fired) {
    if (!failed && (l->opts & ON_CALLBACK)) l->fire = FIRE_ONE_SUCCESS;
    else if (failed && (l->opts & ON_ERRBACK)) l->fire = FIRE_FIRST_ERROR;
    else if (l->mode == MODE_RACE && l->done == l->n && l->failed == l->n)
      l->fire = FIRE_GROUP;
    else if (l->mode != MODE_RACE && l->done == l->n) l->fire = FIRE_ALL;
    if (l->fire != FIRE_NONE) {
      l->fired = 1;
      l->fire_index = i;
    }
  }
  if (failed && (l->opts & CONSUME)) { /* handled: the child goes on with nil */
    lua_pushnil(L);
    dfr_deferred_set_result(L, cidx, 1);
    dfr_deferred_handled(d);
  }
}

/* The entry of a child that fired after it was hooked. */
static int list_entry(lua_State *L, int top, int a) {
  List *l = (List *)lua_touserdata(L, a);
  int i = (int)lua_tointeger(L, a + 1);
  dfr_getslot(L, a, T_VALUES);
  record(L, l, lua_gettop(L), oks(L, a), i, top);
  lua_pop(L, 1);
  if (!l->fr.onstack) dfr_engine_push(L, top, a);
  return DFR_NEXT;
}

/* ------------------------------------------------------------ firing */

/* Pushes the list's result value; returns whether it is a success. */
static int push_result(lua_State *L, int lidx, List *l) {
  unsigned char *ok = oks(L, lidx);
  int i;
  dfr_getslot(L, lidx, T_VALUES);
  switch (l->fire) {
    case FIRE_ALL:
      if (l->mode == MODE_GATHER) return 1; /* the values themselves */
      lua_createtable(L, l->n, 0);
      for (i = 1; i <= l->n; i++) {
        lua_createtable(L, 2, 0);
        lua_pushboolean(L, ok[i - 1] == 1);
        lua_rawseti(L, -2, 1);
        lua_rawgeti(L, -3, i);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i);
      }
      lua_remove(L, -2);
      return 1;
    case FIRE_ONE_SUCCESS:
      lua_createtable(L, 2, 0);
      lua_rawgeti(L, -2, l->fire_index);
      lua_rawseti(L, -2, 1);
      lua_pushinteger(L, l->fire_index);
      lua_rawseti(L, -2, 2);
      lua_remove(L, -2);
      return 1;
    case FIRE_FIRST_ERROR: {
      const char *msg;
      lua_rawgeti(L, -1, l->fire_index); /* the child's Failure */
      lua_getfield(L, -1, "value");
      lua_getglobal(L, "tostring");
      lua_insert(L, -2);
      lua_call(L, 1, 1);
      msg = lua_tostring(L, -1);
      dfr_error_push(L, "FirstError", "item %d failed: %s", l->fire_index,
                     msg ? msg : "?");
      lua_pushvalue(L, -3);
      lua_setfield(L, -2, "failure");
      lua_pushinteger(L, l->fire_index);
      lua_setfield(L, -2, "index");
      lua_replace(L, -4);
      lua_pop(L, 2);
      return 0;
    }
    default: { /* FIRE_GROUP: every child failed */
      lua_createtable(L, l->n, 0);
      for (i = 1; i <= l->n; i++) {
        lua_rawgeti(L, -2, i);
        lua_rawseti(L, -2, i);
      }
      dfr_error_push(L, "FailureGroup", "all %d failed", l->n);
      lua_insert(L, -2);
      lua_setfield(L, -2, "failures");
      lua_remove(L, -2);
      return 0;
    }
  }
}

/* The frame: progress calls first, then firing, then hooking the next
** child; one step at a time so that every call runs from the driver. */
static int list_resume(lua_State *L, int top) {
  List *l = (List *)lua_touserdata(L, top);
  if (l->reported < l->done) {
    if (l->has_progress) {
      dfr_getslot(L, top, T_PROGRESS);
      l->reported++;
      lua_pushinteger(L, l->reported);
      lua_pushinteger(L, l->n);
      l->in_progress = 1;
      return DFR_CALL;
    }
    l->reported = l->done;
  }
  if (l->fire != FIRE_NONE) {
    dfr_Deferred *r;
    int ok = push_result(L, top, l);
    l->fire = FIRE_NONE;
    dfr_getslot(L, top, T_RESULT);
    r = (dfr_Deferred *)lua_touserdata(L, -1);
    if (r->state != DFR_PENDING) return DFR_NEXT; /* cancelled meanwhile */
    lua_insert(L, -2);
    if (dfr_deferred_fire(L, -2, ok)) dfr_engine_push(L, top, lua_gettop(L));
    return DFR_NEXT;
  }
  if (l->hooked < l->n) {
    unsigned char *ok = oks(L, top);
    dfr_getslot(L, top, T_CHILDREN);
    dfr_getslot(L, top, T_VALUES);
    while (l->hooked < l->n && l->fire == FIRE_NONE &&
           (l->reported == l->done || !l->has_progress)) {
      int i = ++l->hooked;
      dfr_Deferred *d;
      lua_rawgeti(L, top + 1, i);
      d = (dfr_Deferred *)lua_touserdata(L, top + 3);
      if (dfr_deferred_runnable(d) && !dfr_deferred_has_entries(d)) {
        /* fired and idle: its result is recorded right here, no entry */
        record(L, l, top + 2, ok, i, top + 3);
        lua_settop(L, top + 2);
        continue;
      }
      lua_pushvalue(L, top);
      lua_pushinteger(L, i);
      if (dfr_deferred_add(L, top + 3, DFR_E_LIST, 2)) {
        dfr_engine_push(L, top, top + 3);
        return DFR_NEXT;
      }
      lua_settop(L, top + 2);
    }
    if (l->hooked < l->n || l->fire != FIRE_NONE || l->reported < l->done)
      return DFR_NEXT; /* progress or firing first, then more hooking */
  }
  return DFR_POP;
}

static void list_outcome(lua_State *L, int top, int ok, int ridx) {
  List *l = (List *)lua_touserdata(L, top);
  l->in_progress = 0;
  if (!ok) dfr_failure_report(L, ridx); /* a broken progress bar is reported */
}

/* ------------------------------------------------------------ making */

/* Reads opts (a table, or for gather a boolean) into l->opts. */
static void read_opts(lua_State *L, List *l, int mode, int oidx) {
  const char *fname = fnames[mode];
  if (mode == MODE_GATHER) {
    l->opts = ON_ERRBACK | (lua_toboolean(L, oidx) ? CONSUME : 0);
    return;
  }
  if (mode == MODE_RACE) {
    l->opts = ON_CALLBACK | CONSUME;
    return;
  }
  if (lua_isnoneornil(L, oidx)) return;
  if (!lua_istable(L, oidx)) dfr_argerror(L, 2, fname, "table", oidx);
  lua_pushnil(L);
  while (lua_next(L, oidx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (k && strcmp(k, "fire_on_one_callback") == 0) {
      if (lua_toboolean(L, -1)) l->opts |= ON_CALLBACK;
    } else if (k && strcmp(k, "fire_on_one_errback") == 0) {
      if (lua_toboolean(L, -1)) l->opts |= ON_ERRBACK;
    } else if (k && strcmp(k, "consume_errors") == 0) {
      if (lua_toboolean(L, -1)) l->opts |= CONSUME;
    } else if (k && strcmp(k, "on_progress") == 0) {
      if (!lua_isfunction(L, -1) && !lua_isnil(L, -1))
        dfr_error(L, "bad argument #2 to '%s' (on_progress must be a "
                     "function%s)", fname, "");
    } else {
      lua_pushvalue(L, -2);
      dfr_error(L, "bad argument #2 to '%s' (unknown option '%s')", fname,
                lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    }
    lua_pop(L, 1);
  }
}

/* core.list_new(deferreds, opts, mode) -> list, result deferred.  Checks
** everything before it makes anything. */
static int list_new(lua_State *L) {
  int mode = (int)lua_tointeger(L, 3), n, i;
  const char *fname = fnames[mode];
  List *l, tmp;
  if (!lua_istable(L, 1)) dfr_argerror(L, 1, fname, "table", 1);
  n = (int)dfr_rawlen(L, 1);
  lua_settop(L, 2);
  dfr_getmt(L, DFR_DEFERRED_MT);
  dfr_getmt(L, DFR_DEFERRED_GC_MT);
  for (i = 1; i <= n; i++) { /* both deferred metatables are at 3 and 4 */
    int isd;
    lua_rawgeti(L, 1, i);
    isd = lua_getmetatable(L, -1) &&
          (lua_rawequal(L, -1, 3) || lua_rawequal(L, -1, 4));
    lua_settop(L, 4);
    if (!isd) {
      lua_pushfstring(L, "%d", i);
      dfr_error(L, "bad argument #1 to '%s' (Deferred expected at index %s)",
                fname, lua_tostring(L, -1));
    }
  }
  lua_settop(L, 2);
  memset(&tmp, 0, sizeof tmp);
  read_opts(L, &tmp, mode, 2);
  lua_settop(L, 2);
  l = (List *)dfr_newud(L, sizeof *l, T_SLOTS);
  *l = tmp;
  l->fr.kind = DFR_FRAME_LIST;
  l->mode = (unsigned char)mode;
  l->n = n;
  lua_newuserdata(L, (size_t)n + 1); /* the per-child flags */
  memset(lua_touserdata(L, -1), 0, (size_t)n + 1);
  dfr_setslot(L, 3, T_OKS);
  lua_createtable(L, n, 0); /* the children, copied (Twisted DL1) */
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    lua_rawseti(L, -2, i);
  }
  dfr_setslot(L, 3, T_CHILDREN);
  lua_createtable(L, n, 0);
  dfr_setslot(L, 3, T_VALUES);
  if (mode == MODE_LIST && lua_istable(L, 2)) {
    lua_getfield(L, 2, "on_progress");
    l->has_progress = lua_isfunction(L, -1);
    dfr_setslot(L, 3, T_PROGRESS);
  }
  dfr_deferred_new(L);
  lua_pushvalue(L, -1);
  dfr_setslot(L, 3, T_RESULT);
  /* an empty list fires at once, unless it waits for one success */
  if (n == 0 && !(l->opts & ON_CALLBACK)) {
    l->fire = FIRE_ALL;
    l->fired = 1;
  }
  return 2;
}

/* core.list_children(list) */
static int list_children(lua_State *L) {
  dfr_getslot(L, 1, T_CHILDREN);
  return 1;
}

void dfr_dlist_open(lua_State *L, int module, int core) {
  static const dfr_FrameKind kind = {list_resume, list_outcome, NULL};
  (void)module;
  dfr_engine_kind(DFR_FRAME_LIST, &kind);
  dfr_deferred_entry_kind(DFR_E_LIST, list_entry);
  lua_pushcfunction(L, list_new);
  lua_setfield(L, core, "list_new");
  lua_pushcfunction(L, list_children);
  lua_setfield(L, core, "list_children");
}
