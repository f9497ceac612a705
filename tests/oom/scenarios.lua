-- scenarios.lua: what tests/oom/oom.c runs with each allocation failing in
-- turn.  Each scenario has run() (the work, which may stop at any
-- allocation with "not enough memory") and check(reached) (run afterwards
-- in the same state with memory back: it finishes what is pending and
-- raises if anything is lost or a count is wrong).  run() keeps what check()
-- needs in the global T; a record is kept only once the call that made it
-- has returned (a call that raised handed nothing over).
local defer = require "defer"

local function quiet() defer.on_unhandled(function() end) end

-- Every deferred recorded in T.ds must have fired (after check finished the
-- pending work), and the module must still work.  Work that an error
-- interrupted inside the engine resumes at the next call that runs
-- anything; a run of a new chain is the first such call here.
local function all_fired(what)
  defer.succeed(0):add_callback(function() end)
  for i, d in ipairs(T.ds) do
    assert(d.called, ("%s %d never fired"):format(what, i))
  end
  local got
  defer.succeed(1):add_callback(function(v) got = v + 1 end)
  assert(got == 2, "a new chain does not run")
end

-- Tasks given to a semaphore ran at most once; after check, once each, or
-- their deferred failed (T.failed, kept by watch()).
local function tasks_once()
  for i in ipairs(T.ds) do
    local n = T.ran[i] or 0
    assert(n <= 1, ("task %d ran %d times"):format(i, n))
    -- (a failure the watcher missed: watch() itself may have run out of memory)
    local d = T.ds[i]
    local failed = T.failed[i] or (d.called and defer.is_failure(d.result))
    assert(n == 1 or failed, ("task %d never ran and its deferred did not fail"):format(i))
  end
end

-- Records whether the deferred of task i fails, and handles its failure.
local function watch(d, i)
  d:add_errback(function() T.failed[i] = true end)
end

-- Fires every pending gate (more may appear as waiters start).
local function open_gates()
  local i = 1
  while i <= #T.gates do
    local g = T.gates[i]
    if not g.called then g:callback(i) end
    i = i + 1
  end
end

return {
  {
    name = "deferred chains",
    run = function()
      quiet()
      T = nil
      T = {ds = {}}
      local inner = defer.new()
      local d = defer.new()
      d:add_callback(function(v) return v + 1 end)
       :add_callback(function() return inner end)
       :add_callback(function(v) error("boom " .. v, 0) end)
       :add_errback(function(f) return f:message() end)
       :add_both(function(r) return r end)
      d:pause()
      d:callback(1)
      T.ds[#T.ds + 1] = d
      d:unpause()
      inner:callback(5)
      local c = defer.new(function(x) x:callback("cancelled") end)
      c:cancel()
      T.ds[#T.ds + 1] = c
      local other = defer.new()
      local e = defer.new():chain(other)
      e:errback("to other")
      T.ds[#T.ds + 1] = other
      other:add_errback(function() end)
      T.ds[#T.ds + 1] = defer.maybe(function() return 3 end)
      T.ds[#T.ds + 1] = defer.succeed(2):add_timeout(10)
    end,
    check = function()
      if not (T and T.ds) then return end
      all_fired("deferred")
    end,
  },
  {
    name = "failures and error types",
    run = function()
      quiet()
      T = nil
      T = {ds = {}}
      local E = defer.error_type("E")
      local F = defer.error_type("F", E)
      local f = defer.failure(F("made"))
      assert(f:check(E) == E)
      assert(not pcall(f.trap, f, defer.TimeoutError))
      local _ = tostring(f) .. f:message()
      T.ds[#T.ds + 1] = defer.fail(f):add_errback(function(x) return x:trap(F) end)
      for i = 1, 20 do defer.fail("lost " .. i) end
      collectgarbage()
    end,
    check = function()
      if not (T and T.ds) then return end
      all_fired("deferred")
      collectgarbage()
    end,
  },
  {
    name = "semaphore",
    run = function()
      quiet()
      T = nil
      T = {ds = {}, ran = {}, gates = {}, acq = {}, failed = {}, sem = defer.semaphore(2)}
      for i = 1, 12 do
        local d = T.sem:run(function()
          T.ran[i] = (T.ran[i] or 0) + 1
          if i % 3 == 0 then error("task " .. i, 0) end
          if i % 2 == 0 then return i end
          local g = defer.new()
          T.gates[#T.gates + 1] = g
          return g
        end)
        T.ds[i] = d
        watch(d, i)
        if i == 7 then d:cancel() end
      end
      -- acquires, with their tokens: user code that was to give them back
      -- may have run out of memory itself (check() gives them back then)
      -- (each record is made before the acquire, which then fills it in
      -- without allocating)
      local ra, rb = {false, 2}, {false, 1}
      T.acq[1], T.acq[2] = ra, rb
      local a = T.sem:acquire(2)
      ra[1] = a
      a:add_callback(function(s) s:release(2) end)
      local b = T.sem:acquire()
      rb[1] = b
      b:cancel()
      b:add_errback(function() end)
      T.sem.limit = 3
      T.sem:set_limit(1)
      T.gates[1]:callback("first")
      T.sem.limit = 4
    end,
    check = function()
      if not (T and T.sem) then return end
      T.sem.limit = 4
      open_gates()
      tasks_once()
      for _, held in ipairs(T.acq) do
        local a = held[1]
        local r = a and a.result
        assert(not a or a.called)
        -- still holding its tokens: granted with nothing attached to give
        -- them back, or the callback that would have failed for memory
        if r == T.sem or (defer.is_failure(r) and r:message():find("not enough memory")) then
          T.sem:release(held[2])
        end
      end
      local st = T.sem:stats()
      assert(T.sem.waiting == 0 and T.sem.active == 0, "tokens or waiters left over")
      assert(st.started == st.finished, "started " .. st.started .. ", finished " .. st.finished)
      all_fired("run")
    end,
  },
  {
    name = "semaphore drain",
    run = function()
      quiet()
      T = nil
      T = {ds = {}, ran = {}, gates = {}, failed = {}, sem = defer.semaphore(1)}
      local first = defer.new()
      T.gates[1] = first
      T.ds[1] = T.sem:run(function() T.ran[1] = 1 return first end)
      watch(T.ds[1], 1)
      for i = 2, 30 do
        T.ds[i] = T.sem:run(function(x) T.ran[x] = (T.ran[x] or 0) + 1 return x end, i)
        watch(T.ds[i], i)
      end
      first:callback("go") -- the drain: every waiter runs, one after another
    end,
    check = function()
      if not (T and T.sem) then return end
      open_gates()
      tasks_once()
      assert(T.sem.waiting == 0 and T.sem.active == 0, "tokens or waiters left over")
      all_fired("run")
    end,
  },
  {
    name = "lock",
    run = function()
      quiet()
      T = nil
      T = {ds = {}, ran = {}, gates = {}, failed = {}, lock = defer.lock()}
      for i = 1, 6 do
        T.ds[i] = T.lock:run(function()
          T.ran[i] = (T.ran[i] or 0) + 1
          local g = defer.new()
          T.gates[#T.gates + 1] = g
          return g
        end)
        watch(T.ds[i], i)
      end
      T.gates[1]:callback()
      local rec = {false}
      T.acq = rec
      local a = T.lock:acquire()
      rec[1] = a
      a:cancel()
      a:add_errback(function() end)
    end,
    check = function()
      if not (T and T.lock) then return end
      open_gates()
      -- an acquire whose cancel ran out of memory got the lock later
      local a = T.acq and T.acq[1]
      if a and a.result == T.lock then T.lock:release() end
      tasks_once()
      assert(not T.lock.locked and T.lock.waiting == 0)
      all_fired("run")
    end,
  },
  {
    name = "queue",
    run = function()
      quiet()
      T = nil
      T = {ds = {}, q = defer.queue(3, 3)}
      for _ = 1, 2 do T.ds[#T.ds + 1] = T.q:get() end
      local g = T.q:get()
      assert(not pcall(T.q.get, T.q)) -- over the backlog
      g:cancel()
      g:add_errback(function() end)
      T.ds[#T.ds + 1] = T.q:get()
      for i = 1, 6 do T.q:put(i) end -- three to the gets, three stored
      assert(not pcall(T.q.put, T.q, 9))
      T.ds[#T.ds + 1] = T.q:get()
    end,
    check = function()
      if not (T and T.q) then return end
      for _ = 1, 10 do if T.q.waiting > 0 then T.q:put("late") end end
      assert(T.q.waiting == 0, "a put does not reach the waiting gets")
      all_fired("get")
      assert(T.q.pending <= 3)
    end,
  },
  {
    name = "lists",
    run = function()
      quiet()
      local children = {}
      for i = 1, 6 do children[i] = defer.new() end
      T = {ds = {}, children = children}
      local c = T.children
      T.ds[#T.ds + 1] = defer.list({c[1], c[2], c[3]}, {consume_errors = true,
        on_progress = function() end})
      T.ds[#T.ds + 1] = defer.gather({c[4], c[5]}, true):add_errback(function() end)
      T.ds[#T.ds + 1] = defer.race({c[6], defer.new()})
      T.ds[#T.ds + 1] = defer.list({}, {fire_on_one_errback = true})
      for i = 1, 6 do
        if i == 2 or i == 5 then c[i]:errback("no " .. i) else c[i]:callback(i) end
      end
    end,
    check = function()
      if not (T and T.children) then return end
      for _, d in ipairs(T.children) do
        if not d.called then d:callback("late") end
      end
      all_fired("list")
    end,
  },
  {
    name = "loop",
    run = function()
      quiet()
      T = nil
      T = {ds = {}, calls = 0, memerr = 0, loop = defer.new_loop{clock = "manual"}}
      local loop = T.loop
      -- a loop call that fails is reported here and not retried (a report
      -- that ran out of memory is made again at the next pass): one that ran
      -- out of memory may have been the timeout's
      loop:on_error(function(e)
        if tostring(e):find("not enough memory") then T.memerr = T.memerr + 1 end
      end)
      for i = 1, 8 do
        loop:call_soon(function() T.calls = T.calls + 1 end)
        local h = loop:call_later(i % 3, function() T.calls = T.calls + 1 end)
        if i % 4 == 0 then h:cancel() end
      end
      loop:call_soon(function() error("in a loop call") end)
      T.sleep = loop:sleep(2) -- fired by the loop itself: never lost
      T.ds[#T.ds + 1] = defer.new():add_timeout(1, loop):add_errback(function() end)
      loop:run_once(3)
      loop:advance(1)
      loop:advance(5)
    end,
    check = function()
      if not (T and T.loop) then return end
      local loop = T.loop
      for _ = 1, 100 do if loop:pending() > 0 then loop:advance(1) end end
      assert(loop:pending() == 0, "the loop does not run what is pending")
      assert(T.sleep == nil or T.sleep.called, "a sleep never fired")
      if T.memerr == 0 then all_fired("timer deferred") end
      assert(loop:next_timeout() == nil)
    end,
  },
  {
    name = "coroutines",
    run = function()
      quiet()
      T = nil
      T = {ds = {}, loop = defer.new_loop{clock = "manual"}}
      local loop = T.loop
      local f = defer.async(function(x)
        defer.await(loop:sleep(1))
        return x * 2
      end)
      for i = 1, 4 do
        T.ds[#T.ds + 1] = defer.spawn(function()
          local v = defer.await(f(i))
          local ok = pcall(defer.await, defer.fail("inside"))
          assert(not ok)
          return v
        end)
      end
      local waiting = defer.spawn(function() return defer.await(defer.new()) end)
      waiting:cancel()
      waiting:add_errback(function() end)
      loop:advance(1)
    end,
    check = function()
      if not (T and T.loop) then return end
      for _ = 1, 100 do if T.loop:pending() > 0 then T.loop:advance(1) end end
      assert(T.loop:pending() == 0, "the loop does not run what is pending")
      all_fired("spawned")
    end,
  },
}
