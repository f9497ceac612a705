/*
** compat.h: every difference between Lua 5.1, LuaJIT 2.1, 5.2, 5.3 and 5.4
** that the rest of defer needs, behind names of our own (dfr_*), so that no
** other file tests LUA_VERSION_NUM.  LuaJIT reports 501.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_COMPAT_H
#define DEFER_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

/*
** User values.  5.4 gives a userdata several user value slots of its own;
** older versions give it one table (5.1/LuaJIT call it the environment, and
** a fresh userdata shares the creator's, so we always set a new one).  Slots
** are numbered from 1 on every version.
*/
#if LUA_VERSION_NUM >= 504

static inline void *dfr_newud(lua_State *L, size_t size, int nslots) {
  return lua_newuserdatauv(L, size, nslots);
}
static inline void dfr_getslot(lua_State *L, int idx, int n) {
  lua_getiuservalue(L, idx, n);
}
/* pops the value on top into slot n of the userdata at idx */
static inline void dfr_setslot(lua_State *L, int idx, int n) {
  lua_setiuservalue(L, idx, n);
}

#else

#if LUA_VERSION_NUM >= 502
#define dfr_getenv_(L, i) lua_getuservalue(L, i)
#define dfr_setenv_(L, i) lua_setuservalue(L, i)
#else
#define dfr_getenv_(L, i) lua_getfenv(L, i)
#define dfr_setenv_(L, i) lua_setfenv(L, i)
#endif

static inline void *dfr_newud(lua_State *L, size_t size, int nslots) {
  void *p = lua_newuserdata(L, size);
  lua_createtable(L, nslots, 0);
  dfr_setenv_(L, -2);
  return p;
}
static inline void dfr_getslot(lua_State *L, int idx, int n) {
  dfr_getenv_(L, idx);
  lua_rawgeti(L, -1, n);
  lua_remove(L, -2);
}
static inline void dfr_setslot(lua_State *L, int idx, int n) {
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  dfr_getenv_(L, idx);
  lua_insert(L, -2);
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
}

#endif

/* The 5.1 API (PUC 5.1 and LuaJIT): xpcall takes no arguments on PUC 5.1,
** so the driver gets a C protected call there (engine.c). */
#define DFR_API_51 (LUA_VERSION_NUM == 501)

/* Length of a table without metamethods. */
#if LUA_VERSION_NUM >= 502
#define dfr_rawlen(L, i) ((size_t)lua_rawlen(L, i))
#else
#define dfr_rawlen(L, i) ((size_t)lua_objlen(L, i))
#endif

static inline int dfr_absindex(lua_State *L, int idx) {
  return (idx > 0 || idx <= LUA_REGISTRYINDEX) ? idx : lua_gettop(L) + idx + 1;
}

/* luaL_setfuncs for every version (5.1 has only luaL_register). */
static inline void dfr_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

/* What a traceback reads of a level: 5.2+ also tell a tail call ('t'). */
#if LUA_VERSION_NUM >= 502
#define DFR_TB_WHAT "Slnt"
#define DFR_TB_TAILCALL(ar) ((ar).istailcall)
#else
#define DFR_TB_WHAT "Sln"
#define DFR_TB_TAILCALL(ar) 0
#endif

/* lua_getfield that reports the type on every version (5.1/5.2 return void). */
static inline int dfr_getfield(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  return lua_type(L, -1);
}

/* Loading a chunk from a string with a chunk name. */
#if LUA_VERSION_NUM >= 502
#define dfr_loadbuffer(L, s, sz, name) luaL_loadbufferx(L, s, sz, name, "t")
#else
#define dfr_loadbuffer(L, s, sz, name) luaL_loadbuffer(L, s, sz, name)
#endif

/* An integer value, if the number at idx is one (5.1 has no integer subtype). */
static inline int dfr_tointeger(lua_State *L, int idx, lua_Integer *out) {
  lua_Number n;
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    *out = lua_tointeger(L, idx);
    return 1;
  }
#endif
  n = lua_tonumber(L, idx);
  if (n != n || n < -9007199254740992.0 || n > 9007199254740992.0) return 0;
  if ((lua_Number)(lua_Integer)n != n) return 0;
  *out = (lua_Integer)n;
  return 1;
}

#endif
