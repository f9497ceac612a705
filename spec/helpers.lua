-- helpers.lua: shared by the specs.
local helpers = {}

-- Runs under sanitizers and valgrind set DEFER_SPEC_SLOW: the million-sized
-- workloads shrink a hundredfold there (but never under a thousand), which
-- still exercises every path that a million would.
-- Under the collector at its most aggressive (DEFER_GC_STRESS) every cycle
-- walks all that is alive, so a workload costs the square of its size
-- there: they shrink to 500 at most (the paths are the same).
local slow = os.getenv("DEFER_SPEC_SLOW") ~= nil
local gc_stress = os.getenv("DEFER_GC_STRESS") ~= nil
function helpers.scale(n)
  if gc_stress then return math.min(n, 500) end
  if not slow then return n end
  local m = math.floor(n / 100)
  if m < 1000 then m = math.min(n, 1000) end
  return m
end

-- The number of entries in the registry, to check that nothing is left
-- behind by a workload.
function helpers.registry_count()
  local n = 0
  for _ in pairs(debug.getregistry()) do n = n + 1 end
  return n
end

-- The error f(...) raises (it must raise).
function helpers.errmsg(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return err
end

-- Runs fn with an unhandled-failure handler that collects what it is given,
-- collects garbage twice (finalizers), restores the handler, and returns
-- the failures reported.
function helpers.with_unhandled(fn)
  local defer = require "defer"
  local seen = {}
  local prev = defer.on_unhandled(function(f) seen[#seen + 1] = f end)
  local ok, err = pcall(fn, seen)
  collectgarbage("collect")
  collectgarbage("collect")
  defer.on_unhandled(prev)
  assert(ok, err)
  return seen
end

-- The error value f(...) raises; fails the test when it does not raise.
function helpers.raised(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error to be raised")
  return err
end

-- The failure a deferred ended with; handled from now on, so that it is not
-- reported as unhandled when the deferred is collected.
function helpers.failure_of(d)
  assert(d:state() == "failure", "expected a failed deferred, got " .. d:state())
  local f = d.result
  d:add_errback(function() end)
  return f
end

function helpers.is_cancelled(f)
  local defer = require "defer"
  return defer.is_failure(f) and defer.is_a(f.value, defer.CancelledError)
end

-- The text of a file of the repository.
function helpers.read_file(path)
  local f = assert(io.open(path, "rb"), "run the specs from the repository")
  local s = f:read("*a")
  f:close()
  return s
end

-- Runs the interpreter of this run (DEFER_SPEC_LUA) with the given
-- arguments and returns its output (stdout and stderr), or nil when the
-- variable is not set.
function helpers.run_lua(args)
  local lua = os.getenv("DEFER_SPEC_LUA")
  if not lua then return nil end
  local p = io.popen(lua .. " " .. args .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return out
end

return helpers
