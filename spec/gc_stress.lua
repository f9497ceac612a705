-- Loaded by busted before the specs when DEFER_GC_STRESS=1 (make gc-stress):
-- the collector at its most aggressive, so that an object reachable only
-- from C, or a callback held only by a collected object, is caught.  A new
-- cycle starts as soon as one ends (pause 0) and each step does a large
-- amount of work; on 5.4 a step also comes after every kilobyte allocated.
require "preload"
if _VERSION == "Lua 5.4" then
  collectgarbage("incremental", 1, 1000, 10) -- (0 would mean "unchanged")
else
  collectgarbage("setpause", 0)
  collectgarbage("setstepmul", 1000)
end
collectgarbage("restart")
