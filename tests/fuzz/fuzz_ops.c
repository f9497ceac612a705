/*
** fuzz_ops.c: a libFuzzer target for defer.  Each input runs in a fresh Lua
** state (so that a crash replays from its file alone): the module is linked
** in and registered in package.preload, and the interpreter ops.lua (its
** bytes compiled in, see tests/fuzz/run) decodes the input into operations
** and checks invariants.  A broken invariant, or any error that reaches the
** top, aborts so that libFuzzer keeps the input.
** An input may start with a header 0xFF, p, m that makes allocations fail
** once ops.lua has made its objects (it calls fuzz_arm) and while the
** program runs; ops.lua is told the mode:
**   m even, "gc": every (16 + 4 * (p % 64))-th growing allocation fails
**     once, 32 times at most (a full collection costs about a ms).  Lua
**     then runs an emergency full collection and tries again, so this is a
**     full GC at arbitrary points of the C code: an object the C code uses
**     but left unanchored is freed under it (AddressSanitizer reports it).
**     The program's outcome does not change, so every check still holds.
**   m odd, "oom": allocation number ((m >> 1) * 256 + p + 1) fails for good
**     (and its retry too): a memory error in the middle of any operation.
**     The model is then no longer exact, so ops.lua stops checking and only
**     goes on with the program: what must hold is no crash, no sanitizer
**     report and no leak.
** FUZZ_TRACE=1 in the environment prints the decoded operations.
** SPDX-License-Identifier: MIT
*/
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_defer(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

/* A state frees one or two MB: a quarantine of 16 MB still keeps every
** freed block poisoned for the rest of its input (and a few more), while
** the default 256 MB made half of each run page faults. */
const char *__asan_default_options(void) { return "quarantine_size_mb=16"; }

/* ops.lua, as the bytes of a C initializer list (made by the run script) */
static const unsigned char ops_src[] = {
#include "ops_lua.inc"
};

static char *ops_bin; /* ops.lua precompiled once: loading it is then cheap */
static size_t ops_bin_len;
static int trace;

/* The allocation failures of the "gc" and "oom" modes (see above). */
static int failing;          /* 0 off, 1 gc, 2 oom */
static int mode;             /* the mode of this input: failing once armed */
static unsigned long grows;  /* growing allocations counted while failing */
static unsigned long period; /* gc: fail one of every period */
static unsigned long forced;  /* gc: the failures so far */
static unsigned long fail_at; /* oom: fail this one and the next */

static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (ptr == NULL) osize = 0; /* then osize tells the kind of object */
  /* Lua assumes that shrinking never fails */
  if (failing && nsize > osize) {
    grows++;
    if (failing == 1 && grows % period == 0 && forced < 32) {
      forced++;
      return NULL;
    }
    if (failing == 2 && (grows == fail_at || grows == fail_at + 1)) return NULL;
  }
  return realloc(ptr, nsize);
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L, (void)ud;
  ops_bin = realloc(ops_bin, ops_bin_len + n);
  if (ops_bin == NULL) abort();
  memcpy(ops_bin + ops_bin_len, p, n);
  ops_bin_len += n;
  return 0;
}

/* fuzz_arm(): the setup is done, the failures of the mode begin */
static int fuzz_arm(lua_State *L) {
  (void)L;
  grows = forced = 0;
  failing = mode;
  return 0;
}

/* fuzz_abort(msg): an invariant is broken */
static int fuzz_abort(lua_State *L) {
  luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
  fprintf(stderr, "fuzz: invariant violated: %s\n", lua_tostring(L, -1));
  fflush(stderr);
  abort();
  return 0;
}

static int msgh(lua_State *L) {
  luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  lua_State *L = luaL_newstate();
  const char *t = getenv("FUZZ_TRACE");
  (void)argc, (void)argv;
  trace = t != NULL && *t != '\0' && strcmp(t, "0") != 0;
  if (L == NULL || luaL_loadbuffer(L, (const char *)ops_src, sizeof ops_src,
                                   "=ops.lua") != LUA_OK) {
    fprintf(stderr, "fuzz: cannot load ops.lua: %s\n",
            L ? lua_tostring(L, -1) : "no memory");
    abort();
  }
  lua_dump(L, dump_writer, NULL, 0);
  lua_close(L);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = lua_newstate(fuzz_alloc, NULL);
  int status;
  if (L == NULL) abort();
  mode = 0;
  if (size >= 3 && data[0] == 0xFF) {
    mode = (data[2] & 1) ? 2 : 1;
    period = 16 + 4 * (unsigned long)(data[1] % 64);
    fail_at = (unsigned long)(data[2] >> 1) * 256 + data[1] + 1;
    data += 3;
    size -= 3;
  }
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_defer);
  lua_setfield(L, -2, "defer");
  lua_pop(L, 2);
  lua_pushcfunction(L, fuzz_abort);
  lua_setglobal(L, "fuzz_abort");
  lua_pushcfunction(L, fuzz_arm);
  lua_setglobal(L, "fuzz_arm");
  lua_pushcfunction(L, msgh);
  if (luaL_loadbuffer(L, ops_bin, ops_bin_len, "=ops.lua") != LUA_OK) {
    fprintf(stderr, "fuzz: cannot load ops.lua: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pushlstring(L, (const char *)data, size);
  lua_pushboolean(L, trace);
  lua_pushstring(L, mode == 0 ? "normal" : mode == 1 ? "gc" : "oom");
  status = lua_pcall(L, 3, 0, 1);
  failing = 0;
  if (trace && mode)
    fprintf(stderr, "fuzz: mode %s, %lu growing allocations, %lu failed\n",
            mode == 1 ? "gc" : "oom", grows,
            mode == 1 ? forced : (grows > fail_at) + (grows > fail_at + 1));
  if (status != LUA_OK && mode != 2) {
    fprintf(stderr, "fuzz: error: %s\n", lua_tostring(L, -1));
    fflush(stderr);
    abort();
  }
  lua_close(L);
  return 0;
}
