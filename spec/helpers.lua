-- helpers.lua: shared by the specs.
local helpers = {}

-- Runs under sanitizers and valgrind set DEFER_SPEC_SLOW: the million-sized
-- workloads shrink a hundredfold there (but never under a thousand), which
-- still exercises every path that a million would.
local slow = os.getenv("DEFER_SPEC_SLOW") ~= nil
function helpers.scale(n)
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

return helpers
