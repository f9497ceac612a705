-- coro.lua: defer.spawn, defer.await and defer.async, on the plain
-- `coroutine` library (so hosts that wrap it, like OpenResty, keep working).
-- await yields from the spawned coroutine; the awaited deferred's callback
-- resumes it.  A spawned coroutine's deferred is cancelled by cancelling
-- what it awaits, as Twisted's inlineCallbacks does.
local M, core = ...

local create, resume, yield = coroutine.create, coroutine.resume, coroutine.yield
local running, status = coroutine.running, coroutine.status
local new, failure, is_failure = M.new, M.failure, M.is_failure
local is_deferred, checkfunction = core.is_deferred, core.checkfunction
local take, traceback = core.take, core.traceback
local select, error, type, pcall, pairs = select, error, type, pcall, pairs

local AWAIT = {} -- what await yields, so a stray yield is told apart
local spawned = setmetatable({}, {__mode = "k"}) -- coroutine -> state

local finish
local nomem = core.nomem

-- Work that memory running out left undone, done by the next call into
-- the module that has nothing else to run (the driver calls orphans[3]
-- when orphans[2] is set, as the engine does when a call failed for memory):
-- spawned coroutines whose deferred could not even be failed, linked
-- through st.later; and coroutines whose await callback could not even be
-- called (the deferred went on without it: nothing else would wake them).
-- Nothing here allocates: the fields exist from the start.
local orphans, idle = core.orphans, core.idle
local unsettled = false
local resume_or_fail

local function settle_later(st, why)
  st.why, st.later, unsettled, orphans[2] = why, unsettled, st, true
end

-- Suspended in an await whose deferred is done with no callback left.
local function stuck(st)
  local d = st.awaiting
  return d and idle(d) and status(st.co) == "suspended"
end

local retrying = false
local function retry()
  retrying, orphans[2] = true, false
  while unsettled do -- each stays first until its deferred has failed
    local st = unsettled
    local d = st.result
    if not d.called then
      local ok, e = pcall(d.errback, d, st.why)
      if not ok and not d.called then error(e, 0) end
    end
    unsettled, st.later = st.later, false
  end
  local due = {}
  for _, st in pairs(spawned) do
    if stuck(st) then due[#due + 1] = st end
  end
  -- (st.awaiting stays until it is resumed: should this run out of memory
  -- before that, the next retry finds it again)
  for i = 1, #due do
    if stuck(due[i]) then resume_or_fail(due[i], nomem) end
  end
end

-- A retry that runs out of memory again is not the caller's error: it
-- stays due, for the next call.  One at a time: what it runs may call in.
orphans[3] = function()
  if retrying then return end
  local ok = pcall(retry)
  retrying = false
  if not ok then orphans[2] = true end
end

local function failure_of(err, co) return failure(err, traceback(co)) end

-- Resumes the coroutine of st with the given values and handles what it
-- does next: finish, or wait for the deferred it awaits.
local function step(st, ...)
  local co = st.co
  return finish(st, co, resume(co, ...))
end

function finish(st, co, ok, ...)
  if status(co) ~= "dead" then
    if ok and select("#", ...) >= 1 and (...) == AWAIT then return end
    -- a yield that was not an await: a host yield is not ours to handle
    local v = failure("defer.spawn: the coroutine yielded outside defer.await")
    spawned[co] = nil
    return st.result:errback(v)
  end
  spawned[co] = nil
  st.awaiting = false
  local d = st.result
  if ok then return d:callback((...)) end
  local err = ...
  if not is_failure(err) then
    -- when memory has run out, the Failure kept for that (the deferred
    -- must fail even then)
    local made, f = pcall(failure_of, err, co)
    err = made and f or nomem
  end
  return d:errback(err)
end

-- Resumes the coroutine of st with the result r of what it awaited; if it
-- cannot be resumed (memory ran out), it never will be, so its deferred
-- fails rather than wait for ever, now or at the next call.
function resume_or_fail(st, r)
  local resumed, e = pcall(step, st, r)
  if not resumed then
    spawned[st.co] = nil
    local res, why = st.result, is_failure(e) and e or nomem
    if not res.called and not pcall(res.errback, res, why) and not res.called then
      settle_later(st, why)
    end
  end
end

-- The canceller of a spawned coroutine's deferred: cancel what it awaits,
-- and keep the deferred waiting on a fresh one that the coroutine's end
-- fires (so a coroutine that catches the CancelledError can go on).
local function cancel_spawned(st)
  local function canceller(d)
    local fresh = new(canceller)
    st.result = fresh
    core.resolve(d, fresh)
    local w = st.awaiting
    if w then w:cancel() end
  end
  return canceller
end

function M.spawn(f, ...)
  checkfunction(f, "spawn")
  local co = create(f)
  local st = {co = co, result = false, awaiting = false, later = false, why = false}
  local d = new(cancel_spawned(st))
  st.result = d
  spawned[co] = st
  step(st, ...)
  return d
end

function M.await(d)
  local co = running()
  local st = co and spawned[co]
  if st == nil then
    error("defer.await must be called inside a coroutine started by defer.spawn", 2)
  end
  if not is_deferred(d) then
    error(("bad argument #1 to 'await' (Deferred expected, got %s)"):format(type(d)), 2)
  end
  local ok, v = take(d) -- an idle fired deferred gives its result at once
  if ok == nil then
    st.awaiting = d
    d:add_both(function(r)
      -- a stale await (its yield failed: PUC 5.1 inside pcall) leaves r be
      if st.awaiting ~= d or status(co) ~= "suspended" then return r end
      resume_or_fail(st, r)
      return nil -- the coroutine consumed the result
    end)
    v = yield(AWAIT) -- resumed by the callback above with the result
    -- (or by a retry, if memory ran out before the callback could run:
    -- until here st.awaiting says what it waits for)
    st.awaiting = false
    ok = not is_failure(v)
  end
  if not ok then error(v, 0) end
  return v
end

function M.async(f)
  checkfunction(f, "async")
  return function(...) return M.spawn(f, ...) end
end
