-- The Twisted documentation's semaphore example, in Lua: a semaphore of 2
-- runs a function over 1..6, then a list over the results prints the pairs.
-- Every job here returns at once, so the output is in call order.
local defer = require "defer"

local sem = defer.semaphore(2)
local jobs = {}
for work = 1, 6 do
  jobs[#jobs + 1] = sem:run(print, work)
end

defer.list(jobs):add_callback(function(results)
  for _, pair in ipairs(results) do
    print(("{%s, %s}"):format(tostring(pair[1]), tostring(pair[2])))
  end
end)
