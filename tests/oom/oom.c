/*
** oom.c: out of memory at every allocation.  Embeds Lua 5.4 with the module
** compiled in, and runs each scenario of scenarios.lua again and again with
** an allocator that fails its k-th allocation and every later one (k = 1,
** 2, 3, ... until the scenario completes without reaching k).  At every k: the run either
** completes or stops with a "not enough memory" error (nothing else); then,
** with memory back, the scenario's own check runs in the same state (the
** module's counts are true, every task ran once or failed, and new work
** still runs); and lua_close gives back every byte.  Any other outcome is a
** problem, named with its scenario and k.
**
** Usage: oom [--strict] SCENARIOS.lua [NAME]
** Exits 1 on an unsafe problem, and with --strict on a broken check too.
** SPDX-License-Identifier: MIT
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

int luaopen_defer(lua_State *L);

/* The allocator: counts live bytes; once armed, fails the allocation
** numbered fail_at (counting from 1) and every one after it until disarmed:
** failing one alone would test nothing, since Lua 5.4 collects and tries
** again when an allocation fails. */
typedef struct Heap {
  size_t live;
  long count;   /* allocations made since arming */
  long fail_at; /* 0: never fail */
  int failed;   /* the failing allocation was reached */
} Heap;

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  Heap *h = (Heap *)ud;
  size_t old = ptr ? osize : 0;
  void *p;
  if (nsize == 0) {
    free(ptr);
    h->live -= old;
    return NULL;
  }
  if (h->fail_at > 0 && nsize > old && ++h->count >= h->fail_at) {
    h->failed = 1;
    return NULL;
  }
  p = realloc(ptr, nsize);
  if (p == NULL) return NULL;
  h->live = h->live - old + nsize;
  return p;
}

/* Two kinds of problem: unsafe (an error that is not a memory error, or
** memory not given back; a crash or a sanitizer report stops the run
** anyway), and broken (the scenario's check failed: work lost or stuck, a
** count wrong).  Only the unsafe ones fail the run unless --strict. */
static int unsafe = 0, broken = 0, verbose = 0;

static void problem(const char *name, long k, const char *what) {
  fprintf(stderr, "oom: %s at k=%ld: %s\n", name, k, what);
  unsafe++;
}

static void broke(const char *name, long k, const char *what) {
  if (verbose) fprintf(stderr, "oom: %s at k=%ld: broken: %s\n", name, k, what);
  broken++;
}

/* Loads scenarios.lua into L and leaves the scenario table on top. */
static int load_scenarios(lua_State *L, const char *path) {
  if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "oom: %s: %s\n", path, lua_tostring(L, -1));
    return 0;
  }
  return 1;
}

static lua_State *new_state(Heap *h) {
  lua_State *L = lua_newstate(heap_alloc, h);
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  luaL_requiref(L, "defer", luaopen_defer, 0);
  lua_pop(L, 1);
  return L;
}

/* Gets field `which` ("run" or "check") of scenario i of the file. */
static void push_part(lua_State *L, const char *path, int i, const char *which) {
  if (!load_scenarios(L, path)) exit(2);
  lua_rawgeti(L, -1, i);
  lua_getfield(L, -1, which);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* Runs scenario i with the k-th allocation failing; returns whether the run
** reached k (0: it completed without it, the last k needed). */
static int run_at(const char *path, int i, const char *name, long k) {
  Heap h = {0, 0, 0, 0};
  lua_State *L = new_state(&h);
  int status, reached;
  if (L == NULL) {
    problem(name, k, "no Lua state");
    return 0;
  }
  push_part(L, path, i, "run");
  h.count = 0;
  h.fail_at = k;
  status = lua_pcall(L, 0, 0, 0);
  /* (the allocator read fail_at all along, through the state) */
  /* cppcheck-suppress redundantAssignment */
  h.fail_at = 0;
  reached = h.failed;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!reached) {
      problem(name, k, msg ? msg : "an error without a message");
    } else if (status != LUA_ERRMEM &&
               !(msg && strstr(msg, "not enough memory"))) {
      char buf[600];
      snprintf(buf, sizeof buf, "an error that is not a memory error: %s",
               msg ? msg : "(not a string)");
      problem(name, k, buf);
    }
    lua_pop(L, 1);
  } else if (!reached && k > 1) {
    /* completed: the scenario needs fewer than k allocations */
  }
  /* memory is back: the scenario's check must hold in this state */
  push_part(L, path, i, "check");
  lua_pushboolean(L, reached);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    char buf[600];
    snprintf(buf, sizeof buf, "after the error: %s",
             lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)");
    broke(name, k, buf);
    lua_pop(L, 1);
  }
  lua_close(L);
  if (h.live != 0) {
    char buf[100];
    snprintf(buf, sizeof buf, "%zu bytes left after lua_close", h.live);
    problem(name, k, buf);
  }
  return reached;
}

int main(int argc, char **argv) {
  int strict = argc > 1 && strcmp(argv[1], "--strict") == 0;
  const char *path, *only;
  if (strict) argc--, argv++;
  verbose = strict;
  path = argc > 1 ? argv[1] : "tests/oom/scenarios.lua";
  only = argc > 2 ? argv[2] : NULL;
  Heap h = {0, 0, 0, 0};
  lua_State *L = new_state(&h);
  long points = 0;
  int n, i, scenarios = 0;
  if (L == NULL || !load_scenarios(L, path)) return 2;
  n = (int)luaL_len(L, -1);
  for (i = 1; i <= n; i++) {
    char name[200];
    long k;
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "name");
    snprintf(name, sizeof name, "%s", lua_tostring(L, -1));
    lua_pop(L, 2);
    if (only && strcmp(only, name) != 0) continue;
    scenarios++;
    for (k = 1; run_at(path, i, name, k); k++) points++;
    points++; /* the last k: the scenario completed */
    printf("oom: %-28s %6ld points, %d broken so far\n", name, k, broken);
    fflush(stdout);
  }
  lua_close(L);
  printf("oom: %d scenarios, %ld (scenario, k) points: %d unsafe, %d broken "
         "(--strict lists them)\n", scenarios, points, unsafe, broken);
  return unsafe || (strict && broken) ? 1 : 0;
}
