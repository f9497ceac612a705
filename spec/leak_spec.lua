-- Nothing left behind: after large workloads of every kind, once their
-- objects are dropped and collected, the registry has as many entries as
-- before and the Lua heap is back near where it was.
local defer = require "defer"
local helpers = require "helpers"
local scale, registry_count = helpers.scale, helpers.registry_count

local function collect()
  for _ = 1, 3 do collectgarbage("collect") end
end

-- Runs workload(n) with every failure it leaves unhandled reported to a
-- counter, then checks the registry and the heap.
local function leaves_nothing(workload, n)
  local prev = defer.on_unhandled(function() end)
  workload(math.max(10, math.floor(n / 10))) -- warm up: tables grow once
  collect()
  local entries, kb = registry_count(), collectgarbage("count")
  workload(n)
  collect()
  defer.on_unhandled(prev)
  assert.are.equal(entries, registry_count(), "registry entries")
  local grown = (collectgarbage("count") - kb) * 1024
  assert.is_true(grown < 64 * 1024 + 8 * n,
    ("the heap grew by %d bytes over %d units"):format(grown, n))
end

-- (a failure keeps a traceback, and a traceback under busted costs much more
-- than in a plain script: failures are a tenth of the units)
local N = scale(20000)

describe("after large workloads, nothing is left behind:", function()
  it("deferred chains that succeed, fail, chain, pause and cancel", function()
    leaves_nothing(function(n)
      for i = 1, n do
        local d = defer.new(function() end)
        d:add_callback(function(v) return v + 1 end)
        if i % 3 == 0 then d:add_callback(function() return defer.succeed(i) end) end
        if i % 5 == 0 then d:add_callback(function() error("boom", 0) end) end
        d:add_errback(function() return i end)
        if i % 7 == 0 then d:pause() d:unpause() end
        if i % 11 == 0 then d:cancel() else d:callback(i) end
        local other = defer.new()
        d:chain(other)
      end
    end, N)
  end)

  it("failures left unhandled and reported when collected", function()
    leaves_nothing(function(n)
      for i = 1, n do defer.fail("lost " .. i) end
    end, math.floor(N / 10))
  end)

  it("semaphore runs, acquires, releases, cancels and limit changes", function()
    leaves_nothing(function(n)
      local sem = defer.semaphore(4)
      local gates = {}
      local function fire_gates() -- fired gates wake runs that make more
        sem.limit = 4
        while #gates > 0 do
          local batch = gates
          gates = {}
          for _, g in ipairs(batch) do if not g.called then g:callback(true) end end
        end
      end
      for i = 1, n do
        local d = sem:run(function()
          if i % 2 == 0 then return i end
          local g = defer.new()
          gates[#gates + 1] = g
          return g
        end)
        if i % 13 == 0 then d:cancel() end
        local a = sem:acquire()
        if i % 17 == 0 and not a.called then a:cancel()
        else a:add_callback(function(s) s:release() end) end
        if i % 100 == 0 then sem.limit = 2 + i % 5 end
        if #gates >= 4 or sem.waiting > 8 then fire_gates() end
      end
      fire_gates()
      assert.are.same({0, 0}, {sem.waiting, sem.active})
    end, N)
  end)

  it("locks and queues", function()
    leaves_nothing(function(n)
      local lock, q = defer.lock(), defer.queue(8, 8)
      for i = 1, n do
        lock:run(function() return i end)
        local a = lock:acquire()
        local b = lock:acquire()
        if i % 3 == 0 then b:cancel() end
        a:add_callback(function(l) l:release() end)
        b:add_callback(function(l) l:release() end)
        local g = q:get()
        if i % 4 == 0 then g:cancel() end
        q:put(i)
        if q.pending > 0 then q:get() end
      end
      assert.are.equal(0, q.waiting)
      assert.are.equal(0, lock.waiting)
    end, N)
  end)

  it("lists, gathers and races", function()
    leaves_nothing(function(n)
      for i = 1, n / 10 do
        local ds = {}
        for k = 1, 10 do ds[k] = defer.new() end
        local l = defer.list(ds, {consume_errors = true, on_progress = function() end})
        local g = defer.gather({ds[1], ds[2]})
        local r = defer.race({ds[3], ds[4]})
        for k = 1, 10 do
          if k == 2 and i % 2 == 0 then ds[k]:errback("no") else ds[k]:callback(k) end
        end
        assert.is_true(l.called and g.called and r.called)
        g:add_errback(function() end)
      end
    end, N)
  end)

  it("loop calls, timers, sleeps, timeouts and cancelled handles", function()
    leaves_nothing(function(n)
      local loop = defer.new_loop{clock = "manual"}
      for i = 1, n do
        loop:call_soon(function() end)
        local h = loop:call_later(i % 7, function() end)
        if i % 3 == 0 then h:cancel() end
        if i % 10 == 0 then
          loop:sleep(1)
          defer.new():add_timeout(2, loop):add_errback(function() end)
        end
      end
      while loop:pending() > 0 do loop:advance(1) end
    end, N)
  end)

  it("coroutines spawned, awaiting and cancelled", function()
    leaves_nothing(function(n)
      local loop = defer.new_loop{clock = "manual"}
      for i = 1, n / 10 do
        local d = defer.spawn(function()
          defer.await(loop:sleep(1))
          return defer.await(defer.succeed(i))
        end)
        if i % 5 == 0 then d:cancel() d:add_errback(function() end) end
      end
      while loop:pending() > 0 do loop:advance(1) end
    end, N)
  end)
end)
