-- loop.lua: the loop's methods that read a clock or run user code.  The C
-- side (loop.c) keeps the ready ring and the timer heap; a pass runs as an
-- engine frame through the driver.
local M, core = ...

local Loop, D = core.Loop, core.Deferred
local drive = core.drive
local now_c, pass, ran = core.now, core.pass, core.ran
local call_later, next_timeout_c = core.call_later, core.next_timeout
local wait, advance, stopped = core.wait, core.advance, core.stopped
local passing = core.passing
local check_delay = core.check_delay
local new, is_failure = M.new, M.is_failure
local type, error = type, error

-- The time on the loop's clock; a clock function is called from here.
local function now(loop)
  local t, clock = now_c(loop)
  if clock then
    t = clock()
    if type(t) ~= "number" then
      error(("the loop's clock function returned %s, not a number"):format(type(t)), 2)
    end
  end
  return t
end

function Loop.time(loop) return now(loop) end

function Loop.call_later(loop, seconds, f, ...)
  return call_later(loop, now(loop), seconds, f, ...)
end

function Loop.next_timeout(loop) return next_timeout_c(loop, now(loop)) end

function Loop.run_once(loop, budget)
  if budget ~= nil and (type(budget) ~= "number" or budget < 0 or budget % 1 ~= 0) then
    error(("bad argument #1 to 'run_once' (budget must be a whole number >= 0, got %s)")
      :format(tostring(budget)), 2)
  end
  drive(pass(loop, now(loop), budget))
  return ran(loop)
end

function Loop.advance(loop, dt)
  advance(loop, dt)
  drive(pass(loop, nil, nil))
  return ran(loop)
end

-- run() from inside one of the loop's own calls would wait for a pass that
-- cannot start until that call returns: an error, as Twisted's
-- ReactorAlreadyRunning.
function Loop.run(loop)
  drive() -- first the orphans of an earlier error, which may hold this loop
  if passing(loop) then
    error("loop:run() called from inside a call of the same loop (use run_once)", 2)
  end
  stopped(loop, true)
  while true do
    drive(pass(loop, now(loop), nil))
    if stopped(loop, true) then return end
    local t = next_timeout_c(loop, now(loop))
    if t == nil then return end
    if t > 0 then wait(loop, t) end
  end
end

-- A deferred fired after `seconds` (by the loop itself, with no call);
-- cancelling it removes the timer.
local sleep_timer = core.sleep_timer
function Loop.sleep(loop, seconds)
  check_delay(seconds, "sleep")
  local h
  local d = new(function() h:cancel() end)
  h = sleep_timer(loop, now(loop), seconds, d)
  return d
end

local TimeoutError, CancelledError = M.TimeoutError, M.CancelledError
local is_a = M.is_a

-- As Twisted's addTimeout: callbacks added before it see the CancelledError,
-- those after it a TimeoutError; firing first removes the timer.
function D.add_timeout(d, seconds, loop)
  core.check(d, "add_timeout")
  if loop == nil then loop = M.loop end
  check_delay(seconds, "add_timeout")
  if getmetatable(loop) ~= getmetatable(M.loop) then
    error(("bad argument #2 to 'add_timeout' (Loop expected, got %s)"):format(type(loop)), 2)
  end
  local timed_out = false
  local h = call_later(loop, now(loop), seconds, function()
    timed_out = true
    d:cancel()
  end)
  d:add_both(function(r)
    h:cancel()
    if timed_out and is_failure(r) and is_a(r.value, CancelledError) then
      return M.failure(TimeoutError(("timed out after %g s"):format(seconds)))
    end
    return r
  end)
  return d
end
