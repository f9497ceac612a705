-- Nothing lost, a property test: thousands of random sequences of acquire,
-- release, run, cancel and limit changes on one semaphore, with tasks that
-- end at once, later (deferreds fired by later steps, timers on a manual
-- clock) or with an error, and tasks that run, cancel or change the limit
-- from inside themselves.  A model of the semaphore follows every step and
-- is checked against it:
--   * a task or acquire starts only when it fits: right after it starts,
--     active <= limit (so after the limit is lowered under the running work
--     nothing new starts until the work is under it);
--   * tokens == max(0, limit - active), so tokens + active == limit whenever
--     the limit is not under the running work, and tokens is never negative;
--   * waiters are served strictly first in, first out (a new acquire or run
--     never starts while a live waiter is queued, and a woken waiter is the
--     oldest live one), and no waiter that fits is left waiting;
--   * active, waiting and stats() agree with the model after every step;
-- and at the end, after everything was fired or cancelled, every task given
-- to run ran exactly once or its deferred failed with a CancelledError,
-- every failure was handled, and stats() agree.
-- The sequences are seeded: a failure names its seed, and
-- DEFER_PROPERTY_SEED=<seed> runs that one sequence alone.
local defer = require "defer"

-- A small generator of its own (Park and Miller), so that a seed gives the
-- same sequence on every interpreter: rand() in [0, 1), rand(lo, hi) an
-- integer in [lo, hi].
local function generator(seed)
  local x = seed % 2147483646 + 1
  return function(lo, hi)
    x = (x * 16807) % 2147483647
    if lo == nil then return x / 2147483647 end
    return lo + x % (hi - lo + 1)
  end
end

local MAX_LIMIT = 4

-- Runs one random sequence; raises, naming the seed, at the first broken
-- property.  Returns the number of runs it made (to check the test's own
-- reach).
local function sequence(seed, steps)
  local rand = generator(seed)
  local step = 0
  local function check(cond, what)
    if not cond then
      error(("seed %d, step %d: %s"):format(seed, step, what), 0)
    end
  end

  local loop = defer.new_loop{clock = "manual"}
  local sem = defer.semaphore(rand(1, MAX_LIMIT))
  local active = 0          -- tokens the model says are taken
  local over_ok = false     -- the limit was lowered under the running work
  local queue = {}          -- waiter records, in the order they queued
  local seq = 0
  local acquires, runs, gates = {}, {}, {}
  local ran, ended, failed = 0, 0, 0  -- runs started, ended after starting, failed

  local function live_head()
    for i = 1, #queue do
      if queue[i].live then return queue[i] end
    end
  end

  local function live_count()
    local n = 0
    for i = 1, #queue do
      if queue[i].live then n = n + 1 end
    end
    return n
  end

  -- A waiter or a new acquire/run starts: it must be the oldest live waiter
  -- (or there must be none when it never queued), and it must fit.
  local function started(rec)
    if rec.queued then
      check(live_head() == rec, ("%s %d started before an older waiter"):format(rec.kind, rec.id))
      rec.live = false
    else
      check(live_head() == nil, ("%s %d started at once past a queued waiter"):format(rec.kind, rec.id))
    end
    check(sem.active <= sem.limit,
      ("%s %d started with %d active over the limit %d"):format(rec.kind, rec.id, sem.active, sem.limit))
    active = active + rec.weight
  end

  local function enqueue(rec)
    seq = seq + 1
    rec.queued, rec.live, rec.seq = true, true, seq
    queue[#queue + 1] = rec
  end

  local function lower_check(n)
    if n < sem.active then over_ok = true end
  end

  local function set_limit(n)
    lower_check(n)
    if rand(1, 2) == 1 then sem.limit = n else sem:set_limit(n) end
  end

  -- release the tokens of a held acquire
  local function release(rec)
    rec.state = "released"
    active = active - rec.weight
    if rec.weight <= sem.limit then
      sem:release(rec.weight)
    else
      for _ = 1, rec.weight do sem:release() end
    end
  end

  local new_run -- forward

  -- Cancels the deferred of a waiter, a run or an acquire, in any state.
  -- A live waiter must fail with a CancelledError at once and leave the
  -- queue; a run must never start afterwards.
  local function cancel(rec)
    local was_waiting = rec.live
    -- it leaves the queue at once: the waiter behind it may start inside
    -- cancel() when it fits now
    rec.live = false
    rec.d:cancel()
    if was_waiting then
      if rec.kind == "acquire" then
        check(rec.state == "cancelled", ("cancelled waiting acquire %d is %s"):format(rec.id, rec.state))
      else
        check(rec.calls == 0 and rec.outcome == "failure" and defer.is_a(rec.value.value, defer.CancelledError),
          ("cancelled waiting run %d did not fail with a CancelledError"):format(rec.id))
      end
      rec.live = false
    end
  end

  -- Cancels a random live waiter (from the top or from inside a task).
  local function cancel_random_waiter()
    local live = {}
    for i = 1, #queue do
      if queue[i].live then live[#live + 1] = queue[i] end
    end
    if #live == 0 then return end
    cancel(live[rand(1, #live)])
  end

  local function new_acquire(release_in_callback)
    local rec = {kind = "acquire", id = #acquires + 1, weight = rand(1, sem.limit)}
    acquires[rec.id] = rec
    rec.d = sem:acquire(rec.weight)
    local function on_start(s)
      check(s == sem, ("acquire %d fired with %s"):format(rec.id, tostring(s)))
      started(rec)
      rec.state = "held"
      if release_in_callback then release(rec) end
      return s
    end
    if rec.d.called then
      on_start(rec.d.result)
    else
      rec.state = "waiting"
      enqueue(rec)
      rec.d:add_errback(function(f)
        check(defer.is_a(f.value, defer.CancelledError),
          ("acquire %d failed with %s"):format(rec.id, tostring(f)))
        rec.state = "cancelled"
      end)
      rec.d:add_callback(function(s)
        if rec.state ~= "cancelled" then return on_start(s) end
      end)
    end
  end

  -- kinds of task: what f does
  local KINDS = {"value", "error", "gate", "sleep", "failed", "nested", "cancel", "limit"}

  function new_run(kind)
    kind = kind or KINDS[rand(1, #KINDS)]
    local rec = {kind = "run", id = #runs + 1, weight = 1, task = kind, calls = 0}
    runs[rec.id] = rec
    local function f(id)
      check(id == rec.id, ("run %d got the argument %s"):format(rec.id, tostring(id)))
      rec.calls = rec.calls + 1
      check(rec.calls == 1, ("run %d ran %d times"):format(rec.id, rec.calls))
      started(rec)
      ran = ran + 1
      if kind == "value" then return "value " .. id
      elseif kind == "error" then error("error " .. id, 0)
      elseif kind == "failed" then return defer.fail("failed " .. id)
      elseif kind == "gate" then
        local g = defer.new()
        gates[#gates + 1] = g
        return g
      elseif kind == "sleep" then
        return loop:sleep(rand(1, 3))
      elseif kind == "nested" then
        new_run(rand(1, 2) == 1 and "value" or "gate")
        return "nested " .. id
      elseif kind == "cancel" then
        cancel_random_waiter()
        return "cancel " .. id
      else -- "limit"
        set_limit(rand(1, MAX_LIMIT))
        return "limit " .. id
      end
    end
    rec.d = sem:run(f, rec.id)
    if rec.calls == 0 then enqueue(rec) end
    rec.d:add_both(function(r)
      check(rec.outcome == nil, ("run %d finished twice"):format(rec.id))
      rec.outcome = defer.is_failure(r) and "failure" or "success"
      rec.value = r
      if rec.calls == 1 then
        active = active - 1
        ended = ended + 1
        if rec.outcome == "failure" then failed = failed + 1 end
      end
    end)
  end

  local function held_acquires()
    local held = {}
    for _, rec in ipairs(acquires) do
      if rec.state == "held" then held[#held + 1] = rec end
    end
    return held
  end

  local function pending_gates()
    local p = {}
    for _, g in ipairs(gates) do
      if not g.called then p[#p + 1] = g end
    end
    return p
  end

  -- the properties that hold between steps
  local function invariants()
    local tokens, limit, act, waiting = sem.tokens, sem.limit, sem.active, sem.waiting
    check(tokens >= 0, ("tokens %d"):format(tokens))
    check(act == active, ("active %d, the model says %d"):format(act, active))
    check(tokens == math.max(0, limit - act),
      ("tokens %d with limit %d and active %d"):format(tokens, limit, act))
    if act <= limit then over_ok = false end
    check(act <= limit or over_ok,
      ("active %d over the limit %d without a lowered limit"):format(act, limit))
    check(waiting == live_count(), ("waiting %d, the model says %d"):format(waiting, live_count()))
    local head = live_head()
    check(head == nil or head.weight > tokens,
      ("a waiter for %d is left waiting with %d tokens free"):format(head and head.weight or 0, tokens))
    local st = sem:stats()
    check(st.tokens == tokens and st.limit == limit and st.active == act and st.waiting == waiting,
      "stats() disagree with the fields")
    check(st.started == ran and st.finished == ended and st.failed == failed,
      ("stats() started %d finished %d failed %d, the model says %d %d %d")
        :format(st.started, st.finished, st.failed, ran, ended, failed))
  end

  for s = 1, steps do
    step = s
    local op = rand(1, 100)
    if op <= 18 then
      new_acquire(false)
    elseif op <= 22 then
      new_acquire(true)
    elseif op <= 34 then
      local held = held_acquires()
      if #held > 0 then release(held[rand(1, #held)]) end
    elseif op <= 58 then
      new_run()
    elseif op <= 64 then
      cancel_random_waiter()
    elseif op <= 68 then
      -- cancel a run, whatever its state
      if #runs > 0 then cancel(runs[rand(1, #runs)]) end
    elseif op <= 70 then
      -- cancelling an acquire that fired changes nothing
      local held = held_acquires()
      if #held > 0 then
        local rec = held[rand(1, #held)]
        local before = sem.active
        cancel(rec)
        check(rec.d:state() == "success" and rec.d.result == sem and sem.active == before,
          ("cancelling held acquire %d changed something"):format(rec.id))
      end
    elseif op <= 78 then
      set_limit(rand(1, MAX_LIMIT))
    elseif op <= 90 then
      local p = pending_gates()
      if #p > 0 then
        local g = p[rand(1, #p)]
        if rand(1, 4) == 1 then g:errback("gate failed") else g:callback("gate") end
      end
    else
      loop:advance(1)
    end
    invariants()
  end

  -- The end: cancel everything waiting or running (half of the sequences),
  -- then raise the limit and fire, advance and release until all is done.
  step = steps + 1
  if rand(1, 2) == 1 then
    for _, rec in ipairs(runs) do cancel(rec) end
    for i = 1, #queue do
      if queue[i].live then cancel(queue[i]) end
    end
    invariants()
  end
  set_limit(MAX_LIMIT)
  local rounds = 0
  while true do
    local p, held = pending_gates(), held_acquires()
    if #p == 0 and #held == 0 and loop:pending() == 0 and live_count() == 0 then break end
    rounds = rounds + 1
    check(rounds < 100, ("the semaphore does not drain: gates %d, held %d, timers %d, waiting %d (tokens %d, active %d, limit %d)"):format(#p, #held, loop:pending(), live_count(), sem.tokens, sem.active, sem.limit))
    -- a woken "limit" task may have lowered the limit again
    set_limit(MAX_LIMIT)
    for _, g in ipairs(p) do g:callback("end") end
    while loop:pending() > 0 do loop:advance(1) end
    for _, rec in ipairs(held_acquires()) do release(rec) end
    invariants()
  end

  set_limit(MAX_LIMIT)

  for _, rec in ipairs(runs) do
    local what = ("run %d (%s)"):format(rec.id, rec.task)
    check(rec.d.called and rec.outcome ~= nil and rec.d:state() ~= "pending", what .. " never finished")
    if rec.calls == 1 then
      if rec.task == "value" then
        check(rec.outcome == "success" and rec.value == "value " .. rec.id, what .. " lost its value")
      elseif rec.task == "error" or rec.task == "failed" then
        check(rec.outcome == "failure" and rec.value.value == rec.task .. " " .. rec.id,
          what .. " lost its error")
      elseif rec.outcome == "failure" then
        local v = rec.value.value
        check(v == "gate failed" or defer.is_a(v, defer.CancelledError),
          what .. " failed with " .. tostring(v))
      end
    else
      check(rec.calls == 0, what .. " ran " .. rec.calls .. " times")
      check(rec.outcome == "failure" and defer.is_a(rec.value.value, defer.CancelledError),
        what .. " never ran and did not fail with a CancelledError")
    end
  end
  for _, rec in ipairs(acquires) do
    check(rec.state == "released" or rec.state == "cancelled",
      ("acquire %d ended %s"):format(rec.id, tostring(rec.state)))
  end
  check(sem.active == 0 and sem.waiting == 0 and sem.tokens == MAX_LIMIT,
    ("ended with tokens %d, active %d, waiting %d"):format(sem.tokens, sem.active, sem.waiting))
  local st = sem:stats()
  check(st.started == ran and st.finished == ran and st.failed == failed,
    ("stats() at the end: started %d finished %d failed %d, the model says %d %d %d")
      :format(st.started, st.finished, st.failed, ran, ran, failed))
  return #runs, ran
end

describe("a semaphore under random sequences (nothing lost)", function()
  local only = tonumber(os.getenv("DEFER_PROPERTY_SEED") or "")
  -- a thousand sequences; fewer under the sanitizers and valgrind
  local count = os.getenv("DEFER_SPEC_SLOW") and 150 or 1000

  it("keeps every property over thousands of seeded sequences", function()
    local reports = {}
    local prev = defer.on_unhandled(function(f) reports[#reports + 1] = tostring(f) end)
    local ok, err = pcall(function()
      local total_runs, total_ran = 0, 0
      if only then
        sequence(only, 60)
      else
        for seed = 1, count do
          local r, n = sequence(seed, 60)
          total_runs, total_ran = total_runs + r, total_ran + n
        end
        -- the sequences reach what they are meant to test
        assert(total_ran > count * 5, "too few runs started: " .. total_ran)
        assert(total_runs > total_ran, "no run was ever cancelled before it started")
      end
      collectgarbage("collect")
      collectgarbage("collect")
    end)
    defer.on_unhandled(prev)
    assert(ok, err)
    assert(#reports == 0, "unhandled failures reported: " .. table.concat(reports, "; "))
  end)
end)
