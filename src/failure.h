/*
** failure.h: error types, error objects and Failures.  A Failure is a table
** {value = <any error value>, traceback = <string>} with the Failure
** metatable; an error object is a table {type = T, message = s, ...} with the
** Error metatable; a type is a callable table {name = s, parent = T|nil}.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_FAILURE_H
#define DEFER_FAILURE_H

#include "defer.h"

DFR_HIDDEN int dfr_is_failure(lua_State *L, int idx);
/* Whether the value at idx is a Failure of Lua's memory error. */
DFR_HIDDEN int dfr_failure_is_nomem(lua_State *L, int idx);
/* Pushes the value at vidx wrapped in a Failure (a Failure stays itself).
** The traceback is the string at tbidx, or, when tbidx is 0, none. */
DFR_HIDDEN void dfr_failure_push(lua_State *L, int vidx, int tbidx);
/* The same without a traceback, and never raising: when memory has run
** out it pushes a Failure made in advance for that ("not enough memory").
** For the engine's error paths, where a Failure must be had. */
DFR_HIDDEN void dfr_failure_push_safe(lua_State *L, int vidx);
/* Pushes a new error object of the built-in type `type` with a message. */
DFR_HIDDEN void dfr_error_push(lua_State *L, const char *type,
                               const char *fmt, ...);
/* Pushes a Failure holding a new error object (traceback taken here). */
DFR_HIDDEN void dfr_failure_push_error(lua_State *L, const char *type,
                                       const char *msg);
/* Raises a new error object of a built-in type. */
DFR_HIDDEN int dfr_error_raise(lua_State *L, const char *type,
                               const char *fmt, ...);
/* Whether the value at idx is an error object of the built-in type name
** (or of a type derived from it). */
DFR_HIDDEN int dfr_error_is(lua_State *L, int idx, const char *type);
/* Reports the Failure at fidx to the unhandled-failure handler, protected:
** an error in the handler is written to stderr. */
DFR_HIDDEN void dfr_failure_report(lua_State *L, int fidx);
/* The xpcall message handler: wraps what was raised in a Failure with the
** traceback of where it was raised. */
DFR_HIDDEN int dfr_failure_handler(lua_State *L);

/* Pushes the traceback of the running thread from `level` (1: the function
** that called the C function running now), after msg and a newline when
** msg is not NULL.  As debug.traceback, without its costly part. */
DFR_HIDDEN void dfr_traceback(lua_State *L, const char *msg, int level);

DFR_HIDDEN void dfr_failure_open(lua_State *L, int module, int core);

#endif
