/*
** defer.c: luaopen_defer.  Builds the module table and a private core table
** of internal functions, opens every part, then runs the embedded Lua parts
** (the files of src/lua, the driver first) which add the functions that run user
** code.
** SPDX-License-Identifier: MIT
*/
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "defer.h"
#include "deferred.h"
#include "dlist.h"
#include "driver_lua.h"
#include "engine.h"
#include "failure.h"
#include "loop.h"
#include "queue.h"
#include "semaphore.h"

/* Raises a message prefixed with the position of the user's code: the first
** Lua frame that is not one of ours (luaL_error would name the driver). */
static int raise_at_caller(lua_State *L, const char *fmt, ...) {
  lua_Debug ar;
  int level;
  va_list ap;
  lua_pushliteral(L, "");
  for (level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0 && strncmp(ar.source, "=defer.", 7) != 0) {
      lua_pop(L, 1);
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      break;
    }
  }
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

int dfr_argerror(lua_State *L, int arg, const char *fname,
                 const char *expected, int idx) {
  return raise_at_caller(L, "bad argument #%d to '%s' (%s expected, got %s)",
                         arg, fname, expected,
                         lua_isnone(L, idx) ? "no value" : luaL_typename(L, idx));
}

int dfr_selferror(lua_State *L, const char *fname, const char *expected) {
  return raise_at_caller(L, "calling '%s' on bad self (%s expected, got %s)",
                         fname, expected, luaL_typename(L, 1));
}

int dfr_error(lua_State *L, const char *fmt, const char *a, const char *b) {
  return raise_at_caller(L, fmt, a, b);
}

void dfr_checkfunction(lua_State *L, int idx, int arg, const char *fname) {
  if (lua_type(L, idx) != LUA_TFUNCTION)
    dfr_argerror(L, arg, fname, "function", idx);
}

lua_Integer dfr_checkcount(lua_State *L, int idx, int arg, const char *fname,
                           const char *what) {
  lua_Integer n = 0;
  if (lua_type(L, idx) != LUA_TNUMBER)
    dfr_argerror(L, arg, fname, "number", idx);
  if (!dfr_tointeger(L, idx, &n) || n < 1)
    raise_at_caller(L, "bad argument #%d to '%s' (%s must be a positive "
                       "integer, got %s)", arg, fname, what,
                    lua_tostring(L, idx));
  return n;
}

const char dfr_mt_deferred[] = "defer.Deferred";
const char dfr_mt_deferred_gc[] = "defer.DeferredGC";
const char dfr_mt_failure[] = "defer.Failure";
const char dfr_mt_error[] = "defer.Error";
const char dfr_mt_type[] = "defer.ErrorType";
const char dfr_mt_loop[] = "defer.Loop";
const char dfr_mt_handle[] = "defer.Handle";
const char dfr_mt_sem[] = "defer.Semaphore";
const char dfr_mt_lock[] = "defer.Lock";
const char dfr_mt_queue[] = "defer.Queue";

void dfr_newmetatable(lua_State *L, const char *name) {
  luaL_newmetatable(L, name);
  lua_pushstring(L, name + 6); /* after "defer." */
  lua_setfield(L, -2, "__name");
  lua_pushlightuserdata(L, (void *)(uintptr_t)name); /* a key, never written */
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

void dfr_getmt(lua_State *L, const char *name) {
  lua_pushlightuserdata(L, (void *)(uintptr_t)name); /* a key, never written */
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) { /* made by plain luaL_newmetatable */
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, name);
  }
}

void *dfr_testudata(lua_State *L, int idx, const char *name) {
  void *p = lua_touserdata(L, idx);
  int ok;
  if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
  dfr_getmt(L, name);
  ok = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return ok ? p : NULL;
}

void dfr_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction index, lua_CFunction tostring, int core) {
  core = dfr_absindex(L, core);
  dfr_newmetatable(L, name);
  lua_newtable(L);
  dfr_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, core, name + 6); /* after "defer." */
  if (index) lua_pushcclosure(L, index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
}

const char *dfr_field_key(lua_State *L) {
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  if (!lua_isnil(L, -1) || lua_type(L, 2) != LUA_TSTRING) return NULL;
  lua_pop(L, 1);
  return lua_tostring(L, 2);
}

int dfr_hasmt(lua_State *L, int idx, int mtidx) {
  int r;
  if (!lua_getmetatable(L, idx)) return 0;
  r = lua_rawequal(L, -1, mtidx);
  lua_pop(L, 1);
  return r;
}

DFR_EXPORT int luaopen_defer(lua_State *L);

int luaopen_defer(lua_State *L) {
  int module, core, i;
  lua_newtable(L);
  module = lua_gettop(L);
  lua_newtable(L);
  core = lua_gettop(L);
  lua_pushliteral(L, DFR_VERSION);
  lua_setfield(L, module, "_VERSION");

  dfr_failure_open(L, module, core);
  dfr_engine_open(L, core);
  dfr_deferred_open(L, module, core);
  dfr_loop_open(L, module, core);
  dfr_semaphore_open(L, module, core);
  dfr_queue_open(L, module, core);
  dfr_dlist_open(L, module, core);

  for (i = 0; DEFER_LUA_PARTS[i].name; i++) {
    if (dfr_loadbuffer(L, DEFER_LUA_PARTS[i].src, DEFER_LUA_PARTS[i].len,
                       DEFER_LUA_PARTS[i].name) != 0)
      return lua_error(L);
    lua_pushvalue(L, module);
    lua_pushvalue(L, core);
    lua_call(L, 2, 0);
  }
  lua_settop(L, module);
  return 1;
}
