-- naive.lua: the semaphore one writes by hand, the baseline that defer must
-- beat.  A token counter and a FIFO table of waiting closures, callback
-- style, no deferreds.  Runs on Lua 5.1 to 5.4 and LuaJIT.
--
--   sem:acquire(fn)            fn() now if a token is free, else queued
--   sem:release()              wakes the oldest waiter, or gives the token back
--   sem:run(f, arg, done)      synchronous work: v = f(arg), release, done(arg, v)
--   sem:run_async(f, arg, done) callback work: f(arg, k); k(v) releases, then
--                              done(arg, v)
--   ready = naive.ready()      a plain FIFO of calls: ready:post(f, a), ready:run()
--
-- release() calls the woken waiter directly, as hand-written code does: a
-- backlog of synchronous tasks behind one slow task therefore recurses, one
-- Lua frame per task, when the slow task ends (the Drain workload shows it).
local M = {}

local S = {}
S.__index = S

function M.semaphore(tokens)
  return setmetatable({ tokens = tokens, limit = tokens, q = {}, head = 1, tail = 0 }, S)
end

function S:acquire(fn)
  if self.tokens > 0 then
    self.tokens = self.tokens - 1
    return fn()
  end
  local t = self.tail + 1
  self.tail = t
  self.q[t] = fn
end

function S:release()
  local h = self.head
  if h <= self.tail then
    local fn = self.q[h]
    self.q[h] = nil
    self.head = h + 1
    return fn()
  end
  self.tokens = self.tokens + 1
end

function S:run(f, arg, done)
  local sem = self
  return self:acquire(function()
    local v = f(arg)
    sem:release()
    done(arg, v)
  end)
end

function S:run_async(f, arg, done)
  local sem = self
  return self:acquire(function()
    f(arg, function(v)
      sem:release()
      done(arg, v)
    end)
  end)
end

local R = {}
R.__index = R

function M.ready()
  return setmetatable({ f = {}, a = {}, head = 1, tail = 0 }, R)
end

function R:post(f, a)
  local t = self.tail + 1
  self.tail = t
  self.f[t], self.a[t] = f, a
end

function R:run()
  local fs, as = self.f, self.a
  while self.head <= self.tail do
    local h = self.head
    local f, a = fs[h], as[h]
    fs[h], as[h] = nil, nil
    self.head = h + 1
    f(a)
  end
end

return M
