/*
** defer.h: what every part of defer may use: registry names, the error
** messages for misuse, and the common head of objects that can be frames of
** the engine's work stack (engine.h).
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_H
#define DEFER_H

#include "compat.h"

#if defined(__GNUC__)
#define DFR_HIDDEN __attribute__((visibility("hidden")))
#define DFR_EXPORT __attribute__((visibility("default")))
#else
#define DFR_HIDDEN
#define DFR_EXPORT
#endif

#define DFR_VERSION "0.1.0"

/*
** Metatable names.  Each is one array in defer.c, so its address is a cheap
** registry key too (dfr_getmt looks it up by address: no string hashing on
** the hot paths).
*/
DFR_HIDDEN extern const char dfr_mt_deferred[], dfr_mt_deferred_gc[],
    dfr_mt_failure[],
    dfr_mt_error[], dfr_mt_type[], dfr_mt_loop[], dfr_mt_handle[],
    dfr_mt_sem[], dfr_mt_lock[], dfr_mt_queue[];
#define DFR_DEFERRED_MT dfr_mt_deferred
#define DFR_DEFERRED_GC_MT dfr_mt_deferred_gc
#define DFR_FAILURE_MT dfr_mt_failure
#define DFR_ERROR_MT dfr_mt_error
#define DFR_TYPE_MT dfr_mt_type
#define DFR_LOOP_MT dfr_mt_loop
#define DFR_HANDLE_MT dfr_mt_handle
#define DFR_SEM_MT dfr_mt_sem
#define DFR_LOCK_MT dfr_mt_lock
#define DFR_QUEUE_MT dfr_mt_queue

/* Registry keys for per-state values. */
#define DFR_TYPES_KEY "defer.types" /* name -> built-in error type */
#define DFR_UNHANDLED_KEY "defer.unhandled"

/*
** Misuse of the API raises at once, in Lua's own words:
** "bad argument #1 to 'add_callback' (function expected, got nil)".
** Arguments are counted as the user wrote them: for a method, after self.
*/
DFR_HIDDEN int dfr_argerror(lua_State *L, int arg, const char *fname,
                            const char *expected, int idx);
DFR_HIDDEN int dfr_selferror(lua_State *L, const char *fname,
                             const char *expected);
/* Raises fmt (with up to two %s) at the user's position. */
DFR_HIDDEN int dfr_error(lua_State *L, const char *fmt, const char *a,
                         const char *b);
DFR_HIDDEN void dfr_checkfunction(lua_State *L, int idx, int arg,
                                  const char *fname);
/* A positive whole number, else an error naming fname and arg. */
DFR_HIDDEN lua_Integer dfr_checkcount(lua_State *L, int idx, int arg,
                                      const char *fname, const char *what);

/* luaL_newmetatable, also registered under the name's address; leaves it
** on the stack with __name set to the part after "defer.". */
DFR_HIDDEN void dfr_newmetatable(lua_State *L, const char *name);
/* A class of userdata: the metatable registered as name, with __tostring,
** and __index the methods table or, given index, a closure of index over it
** (for fields: see dfr_field_key).  The methods table is also core[name
** after "defer."] so that the Lua parts add the methods that run user code.
** Leaves the metatable on the stack. */
DFR_HIDDEN void dfr_newclass(lua_State *L, const char *name,
                             const luaL_Reg *methods, lua_CFunction index,
                             lua_CFunction tostring, int core);
/* Pushes the metatable registered under name. */
DFR_HIDDEN void dfr_getmt(lua_State *L, const char *name);

/* The userdata at idx if its metatable is the one registered as name. */
DFR_HIDDEN void *dfr_testudata(lua_State *L, int idx, const char *name);

/* The start of every __index whose upvalue 1 is the methods table: pushes
** the method named by key 2 and returns NULL, or returns the key (a string)
** for the caller to serve as a field, having pushed nothing. */
DFR_HIDDEN const char *dfr_field_key(lua_State *L);

/* Whether the value at idx has the metatable at mtidx. */
DFR_HIDDEN int dfr_hasmt(lua_State *L, int idx, int mtidx);

/*
** Frames.  Every object the engine can step through (a deferred running its
** callbacks, a semaphore waking its waiters, a loop running a pass) begins
** with this head.  User value slot 1 of a frame anchors the frame below it
** while it is on a stack.
*/
typedef struct dfr_Frame {
  unsigned char kind;    /* index into the engine's table of frame kinds */
  unsigned char onstack; /* on some driver's work stack right now */
} dfr_Frame;

#define DFR_SLOT_BELOW 1

enum {
  DFR_FRAME_DEFERRED,
  DFR_FRAME_SEMAPHORE,
  DFR_FRAME_QUEUE,
  DFR_FRAME_LIST,
  DFR_FRAME_LOOP,
  DFR_FRAME_KINDS
};

#endif
