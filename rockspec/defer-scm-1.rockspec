rockspec_format = "3.0"
package = "defer"
version = "scm-1"
source = {
  url = "git+https://github.com/defer-lua/defer.git",
}
description = {
  summary = "Twisted's deferreds for Lua, in C: keep a huge backlog moving, never more than N at once",
  detailed = [[
defer brings Twisted's deferreds to Lua as a C module: Deferred and Failure,
a deferred semaphore, lock and queue that never lose a task, deferred lists,
and a C event queue (ready calls and a timer heap).  Every user function is
called from a Lua frame, so OpenResty's yielding primitives work inside
callbacks.  Adapters drive the loop from OpenResty (defer.ngx) and libuv
(defer.luv).  Lua 5.1, LuaJIT 2.1, 5.2, 5.3 and 5.4.
]],
  homepage = "https://github.com/defer-lua/defer",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
}
build = {
  type = "builtin",
  modules = {
    defer = {
      sources = {
        "src/defer.c",
        "src/deferred.c",
        "src/dlist.c",
        "src/engine.c",
        "src/failure.c",
        "src/loop.c",
        "src/queue.c",
        "src/ring.c",
        "src/semaphore.c",
      },
      incdirs = { "src" },
      defines = { "_POSIX_C_SOURCE=200809L" },
    },
    ["defer.luv"] = "src/defer/luv.lua",
    ["defer.ngx"] = "src/defer/ngx.lua",
  },
  -- the Lua Language Server definitions (types/README.md)
  copy_directories = { "types" },
}
