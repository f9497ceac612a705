/*
** failure.c: error types (callable tables), error objects and Failures, the
** unhandled-failure handler, and the message handler that turns anything a
** user function raises into a Failure with the traceback of the raise.
** SPDX-License-Identifier: MIT
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "failure.h"

static const char *const builtin_types[][2] = {
    {"CancelledError", NULL},  {"TimeoutError", NULL},
    {"AlreadyCalledError", NULL}, {"FirstError", NULL},
    {"QueueOverflow", NULL},   {"QueueUnderflow", NULL},
    {"FailureGroup", NULL},    {NULL, NULL}};

/* Whether the value at idx has the metatable registered under name. */
static int is_kind(lua_State *L, int idx, const char *name) {
  int r;
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  dfr_getmt(L, name);
  r = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return r;
}

int dfr_is_failure(lua_State *L, int idx) {
  return is_kind(L, idx, DFR_FAILURE_MT);
}

/* Whether the value at idx is a Failure of Lua's memory error. */
int dfr_failure_is_nomem(lua_State *L, int idx) {
  int r;
  if (!dfr_is_failure(L, idx)) return 0;
  lua_getfield(L, idx, "value");
  r = lua_type(L, -1) == LUA_TSTRING &&
      strcmp(lua_tostring(L, -1), "not enough memory") == 0;
  lua_pop(L, 1);
  return r;
}

static int is_error(lua_State *L, int idx) {
  return is_kind(L, idx, DFR_ERROR_MT);
}

static int is_type(lua_State *L, int idx) {
  return is_kind(L, idx, DFR_TYPE_MT);
}

/* Pushes tostring(value at idx), honouring __tostring on every version. */
static const char *push_text(lua_State *L, int idx) {
  idx = dfr_absindex(L, idx);
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushstring(L, luaL_typename(L, idx));
  }
  return lua_tostring(L, -1);
}

/* ---------------------------------------------------------------- types */

static void push_builtin_type(lua_State *L, const char *name) {
  lua_getfield(L, LUA_REGISTRYINDEX, DFR_TYPES_KEY);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

/* Pushes a new type table {name, parent} (parent at pidx, or 0). */
static void new_type(lua_State *L, const char *name, int pidx) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
  if (pidx) {
    lua_pushvalue(L, pidx);
    lua_setfield(L, -2, "parent");
  }
  dfr_getmt(L, DFR_TYPE_MT);
  lua_setmetatable(L, -2);
}

/* defer.error_type(name [, parent]) */
static int f_error_type(lua_State *L) {
  const char *name;
  if (lua_type(L, 1) != LUA_TSTRING) dfr_argerror(L, 1, "error_type", "string", 1);
  name = lua_tostring(L, 1);
  if (!lua_isnoneornil(L, 2) && !is_type(L, 2))
    dfr_argerror(L, 2, "error_type", "error type", 2);
  new_type(L, name, lua_isnoneornil(L, 2) ? 0 : 2);
  return 1;
}

/* T(message [, fields]): a new error object of type T. */
static int type_call(lua_State *L) {
  int t = lua_type(L, 2);
  if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TNUMBER)
    dfr_argerror(L, 1, "error type", "string", 2);
  if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
    dfr_argerror(L, 2, "error type", "table", 3);
  lua_createtable(L, 0, 3);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "type");
  if (lua_isnoneornil(L, 2)) lua_pushliteral(L, "");
  else lua_pushstring(L, lua_tostring(L, 2));
  lua_setfield(L, -2, "message");
  dfr_getmt(L, DFR_ERROR_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int type_tostring(lua_State *L) {
  lua_getfield(L, 1, "name");
  lua_pushfstring(L, "<error type %s>", lua_tostring(L, -1));
  return 1;
}

/* "Name: message", or "Name" when the message is empty. */
static int error_tostring(lua_State *L) {
  const char *msg;
  lua_getfield(L, 1, "type");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "name");
  else lua_pushliteral(L, "Error");
  lua_getfield(L, 1, "message");
  msg = lua_tostring(L, -1);
  if (msg == NULL || *msg == '\0') lua_pop(L, 1);
  else {
    lua_pushliteral(L, ": ");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
  return 1;
}

/* Whether the error object at eidx is of the type at tidx or derived. */
static int error_is_a(lua_State *L, int eidx, int tidx) {
  int depth, r = 0;
  if (!is_error(L, eidx)) return 0;
  lua_getfield(L, eidx, "type");
  for (depth = 0; depth < 256 && lua_istable(L, -1); depth++) {
    if (lua_rawequal(L, -1, tidx)) {
      r = 1;
      break;
    }
    lua_getfield(L, -1, "parent");
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  return r;
}

int dfr_error_is(lua_State *L, int idx, const char *type) {
  int r;
  idx = dfr_absindex(L, idx);
  push_builtin_type(L, type);
  r = error_is_a(L, idx, lua_gettop(L));
  lua_pop(L, 1);
  return r;
}

/* defer.is_a(value, type) */
static int f_is_a(lua_State *L) {
  if (!is_type(L, 2)) dfr_argerror(L, 2, "is_a", "error type", 2);
  lua_pushboolean(L, error_is_a(L, 1, 2));
  return 1;
}

static void vpush_error(lua_State *L, const char *type, const char *fmt,
                        va_list ap) {
  push_builtin_type(L, type);
  lua_pushvfstring(L, fmt, ap);
  lua_call(L, 1, 1);
}

void dfr_error_push(lua_State *L, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vpush_error(L, type, fmt, ap);
  va_end(ap);
}

int dfr_error_raise(lua_State *L, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vpush_error(L, type, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

/* ------------------------------------------------------------- failures */

void dfr_failure_push(lua_State *L, int vidx, int tbidx) {
  vidx = dfr_absindex(L, vidx);
  if (tbidx) tbidx = dfr_absindex(L, tbidx);
  if (dfr_is_failure(L, vidx)) {
    lua_pushvalue(L, vidx);
    return;
  }
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, vidx);
  lua_setfield(L, -2, "value");
  if (tbidx) lua_pushvalue(L, tbidx);
  else lua_pushliteral(L, "stack traceback:\n\t(not available)");
  lua_setfield(L, -2, "traceback");
  dfr_getmt(L, DFR_FAILURE_MT);
  lua_setmetatable(L, -2);
}

/* Registry keys (their addresses): the protected maker of a Failure, and
** the Failure kept for when memory has run out. */
static char wrap_key = 'w', nomem_key = 'm';

static int wrap_protected(lua_State *L) {
  dfr_failure_push(L, 1, 0);
  return 1;
}

void dfr_failure_push_safe(lua_State *L, int vidx) {
  vidx = dfr_absindex(L, vidx);
  if (dfr_is_failure(L, vidx)) {
    lua_pushvalue(L, vidx);
    return;
  }
  lua_pushlightuserdata(L, &wrap_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, vidx);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    lua_pop(L, 1);
    lua_pushlightuserdata(L, &nomem_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
  }
}

void dfr_failure_push_error(lua_State *L, const char *type, const char *msg) {
  dfr_error_push(L, type, "%s", msg);
  dfr_traceback(L, NULL, 1);
  dfr_failure_push(L, -2, -1);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

int dfr_failure_handler(lua_State *L) {
  if (dfr_is_failure(L, 1)) return 1;
  dfr_traceback(L, NULL, 1);
  dfr_failure_push(L, 1, -1);
  return 1;
}

/* defer.failure(value [, traceback]) */
static int f_failure(lua_State *L) {
  if (lua_isnoneornil(L, 1)) dfr_argerror(L, 1, "failure", "error value", 1);
  if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TSTRING)
    dfr_argerror(L, 2, "failure", "string", 2);
  if (dfr_is_failure(L, 1)) {
    lua_settop(L, 1);
    return 1;
  }
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    dfr_traceback(L, NULL, 1);
  }
  dfr_failure_push(L, 1, 2);
  return 1;
}

static int f_is_failure(lua_State *L) {
  lua_pushboolean(L, dfr_is_failure(L, 1));
  return 1;
}

static void check_failure(lua_State *L, const char *fname) {
  if (!dfr_is_failure(L, 1)) dfr_selferror(L, fname, "Failure");
}

/* The first of the types at 2..top that f.value is, or 0. */
static int match_types(lua_State *L, const char *fname) {
  int i, top = lua_gettop(L);
  for (i = 2; i <= top; i++)
    if (!is_type(L, i)) dfr_argerror(L, i - 1, fname, "error type", i);
  lua_getfield(L, 1, "value");
  for (i = 2; i <= top; i++)
    if (error_is_a(L, top + 1, i)) return i;
  return 0;
}

static int failure_check(lua_State *L) {
  int i;
  check_failure(L, "check");
  i = match_types(L, "check");
  if (i) lua_pushvalue(L, i);
  else lua_pushnil(L);
  return 1;
}

static int failure_trap(lua_State *L) {
  int i;
  check_failure(L, "trap");
  i = match_types(L, "trap");
  if (!i) {
    lua_settop(L, 1);
    return lua_error(L);
  }
  lua_pushvalue(L, i);
  return 1;
}

static int failure_message(lua_State *L) {
  check_failure(L, "message");
  lua_getfield(L, 1, "value");
  push_text(L, -1);
  return 1;
}

static int failure_raise(lua_State *L) {
  check_failure(L, "raise");
  lua_settop(L, 1);
  return lua_error(L);
}

static int failure_tostring(lua_State *L) {
  lua_getfield(L, 1, "value");
  push_text(L, -1);
  lua_pushfstring(L, "<Failure %s>", lua_tostring(L, -1));
  return 1;
}

/* ------------------------------------------------------------ unhandled */

static int default_unhandled(lua_State *L) {
  const char *msg, *tb;
  if (dfr_is_failure(L, 1)) {
    lua_getfield(L, 1, "value");
    msg = push_text(L, -1);
    lua_getfield(L, 1, "traceback");
    tb = lua_tostring(L, -1);
  } else {
    msg = push_text(L, 1);
    tb = NULL;
  }
  fprintf(stderr, "Unhandled error in Deferred:\n%s\n%s\n", msg,
          tb ? tb : "stack traceback:\n\t(not available)");
  fflush(stderr);
  return 0;
}

static void push_unhandled(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, DFR_UNHANDLED_KEY);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushcfunction(L, default_unhandled);
  }
}

/* defer.on_unhandled(fn): sets the handler (nil: the default); returns the
** previous one. */
static int f_on_unhandled(lua_State *L) {
  if (!lua_isnoneornil(L, 1) && !lua_isfunction(L, 1))
    dfr_argerror(L, 1, "on_unhandled", "function", 1);
  lua_settop(L, 1);
  push_unhandled(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, DFR_UNHANDLED_KEY);
  return 1;
}

void dfr_failure_report(lua_State *L, int fidx) {
  fidx = dfr_absindex(L, fidx);
  if (!lua_checkstack(L, 4)) return;
  push_unhandled(L);
  lua_pushvalue(L, fidx);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "defer: error in the unhandled-failure handler: %s\n",
            m ? m : luaL_typename(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
  }
}

/* ---------------------------------------------------------- tracebacks */

/* Every Failure keeps a traceback, so a traceback must be cheap.  Lua's
** own (luaL_traceback, debug.traceback on 5.2+) looks every function up by
** name in package.loaded, which in a program with many modules loaded
** (OpenResty, a test runner) makes a failure cost a hundred times more.
** This one names a function as the call site does ("method 'cancel'",
** "local 'f'") and keeps the rest of Lua's format: the first TB_HEAD and the
** last TB_TAIL levels of a deep stack. */
enum { TB_HEAD = 10, TB_TAIL = 11 };

static int last_level(lua_State *L1) {
  lua_Debug ar;
  int li = 1, le = 1;
  while (lua_getstack(L1, le, &ar)) { li = le; le *= 2; }
  while (li < le) {
    int m = (li + le) / 2;
    if (lua_getstack(L1, m, &ar)) li = m + 1;
    else le = m;
  }
  return le - 1;
}

static void push_traceback(lua_State *L, lua_State *L1, const char *msg,
                           int level) {
  luaL_Buffer b;
  lua_Debug ar;
  int last = last_level(L1);
  int head = last - level + 1 > TB_HEAD + TB_TAIL ? TB_HEAD : -1;
  luaL_buffinit(L, &b);
  if (msg) {
    luaL_addstring(&b, msg);
    luaL_addchar(&b, '\n');
  }
  luaL_addstring(&b, "stack traceback:");
  while (lua_getstack(L1, level++, &ar)) {
    if (head-- == 0) { /* a deep stack: the middle is left out */
      int n = last - TB_TAIL - level + 1;
      lua_pushfstring(L, "\n\t...\t(skipping %d levels)", n);
      luaL_addvalue(&b);
      level += n;
      continue;
    }
    lua_getinfo(L1, DFR_TB_WHAT, &ar);
    if (strcmp(ar.what, "tail") == 0) { /* 5.1 keeps a level for tail calls */
      luaL_addstring(&b, "\n\t(...tail calls...)");
      continue;
    }
    if (ar.currentline > 0)
      lua_pushfstring(L, "\n\t%s:%d: in ", ar.short_src, ar.currentline);
    else
      lua_pushfstring(L, "\n\t%s: in ", ar.short_src);
    luaL_addvalue(&b);
    if (*ar.namewhat != '\0')
      lua_pushfstring(L, "%s '%s'", ar.namewhat, ar.name);
    else if (*ar.what == 'm')
      lua_pushliteral(L, "main chunk");
    else if (*ar.what != 'C')
      lua_pushfstring(L, "function <%s:%d>", ar.short_src, ar.linedefined);
    else
      lua_pushliteral(L, "?");
    luaL_addvalue(&b);
    if (DFR_TB_TAILCALL(ar)) luaL_addstring(&b, "\n\t(...tail calls...)");
  }
  luaL_pushresult(&b);
}

void dfr_traceback(lua_State *L, const char *msg, int level) {
  push_traceback(L, L, msg, level);
}

/* core.traceback(co): the traceback of a coroutine, for a Failure. */
static int core_traceback(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  push_traceback(L, co, NULL, 0);
  return 1;
}

/* ---------------------------------------------------------------- open */

void dfr_failure_open(lua_State *L, int module, int core) {
  static const luaL_Reg failure_methods[] = {
      {"check", failure_check}, {"trap", failure_trap},
      {"message", failure_message}, {"raise", failure_raise},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"error_type", f_error_type}, {"is_a", f_is_a},
      {"failure", f_failure},       {"is_failure", f_is_failure},
      {"on_unhandled", f_on_unhandled}, {NULL, NULL}};
  int i;

  dfr_newmetatable(L, DFR_TYPE_MT);
  lua_pushcfunction(L, type_call);
  lua_setfield(L, -2, "__call");
  lua_pushcfunction(L, type_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  dfr_newmetatable(L, DFR_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  dfr_newmetatable(L, DFR_FAILURE_MT);
  lua_newtable(L);
  dfr_setfuncs(L, failure_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, failure_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  /* the built-in types are made once per Lua state: a module loaded again
  ** must still recognise the errors of the first */
  lua_getfield(L, LUA_REGISTRYINDEX, DFR_TYPES_KEY);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    for (i = 0; builtin_types[i][0]; i++) {
      const char *parent = builtin_types[i][1];
      if (parent) lua_getfield(L, -1, parent);
      new_type(L, builtin_types[i][0], parent ? lua_gettop(L) : 0);
      if (parent) lua_remove(L, -2);
      lua_setfield(L, -2, builtin_types[i][0]);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, DFR_TYPES_KEY);
  }
  for (i = 0; builtin_types[i][0]; i++) {
    lua_getfield(L, -1, builtin_types[i][0]);
    lua_setfield(L, module, builtin_types[i][0]);
  }
  lua_pop(L, 1);

  lua_pushvalue(L, module);
  dfr_setfuncs(L, funcs, 0);
  lua_pop(L, 1);
  lua_pushcfunction(L, core_traceback);
  lua_setfield(L, dfr_absindex(L, core), "traceback");
  lua_pushlightuserdata(L, &wrap_key);
  lua_pushcfunction(L, wrap_protected);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, &nomem_key);
  lua_pushliteral(L, "not enough memory");
  dfr_failure_push(L, -1, 0);
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, dfr_absindex(L, core), "nomem");
  lua_rawset(L, LUA_REGISTRYINDEX);
}
