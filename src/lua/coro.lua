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
local select, error, type, pcall = select, error, type, pcall

local AWAIT = {} -- what await yields, so a stray yield is told apart
local spawned = setmetatable({}, {__mode = "k"}) -- coroutine -> state

local finish
local nomem = core.nomem

-- Spawned coroutines whose deferred could not even be failed (memory ran
-- out while failing it), linked through st.later: the next call into the
-- module that has nothing else to run fails them (the driver calls the
-- function in orphans[2]).  Nothing here allocates: the fields exist from
-- the start and the slot of orphans is made here.
local orphans = core.orphans
local unsettled = false
orphans[2] = false

local function retry()
  orphans[2] = false
  while unsettled do
    local st = unsettled
    unsettled = st.later
    st.later = false
    local d = st.result
    if not d.called then
      local ok, e = pcall(d.errback, d, st.why)
      if not ok and not d.called then -- still no memory: next time
        st.later, unsettled, orphans[2] = unsettled, st, retry
        error(e, 0)
      end
    end
  end
end

local function settle_later(st, why)
  st.why, st.later, unsettled, orphans[2] = why, unsettled, st, retry
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
      st.awaiting = false
      local resumed, e = pcall(step, st, r)
      if not resumed then
        -- it could not be resumed (memory ran out): it will not be, so its
        -- deferred fails rather than wait forever, now or at the next call
        spawned[co] = nil
        local res, why = st.result, is_failure(e) and e or nomem
        if not res.called and not pcall(res.errback, res, why) and not res.called then
          settle_later(st, why)
        end
      end
      return nil -- the coroutine consumed the result
    end)
    v = yield(AWAIT) -- resumed by the callback above with the result
    ok = not is_failure(v)
  end
  if not ok then error(v, 0) end
  return v
end

function M.async(f)
  checkfunction(f, "async")
  return function(...) return M.spawn(f, ...) end
end
