--- defer.ngx: defer inside OpenResty / nginx with the http lua module.
--
--   local defer = require "defer"
--   local dngx = require "defer.ngx"
--
-- Each nginx worker is its own Lua VM: a semaphore made at module level
-- (`local sem = defer.semaphore(8)` in a module that handlers require) limits
-- the work of that worker, shared by all its requests; the whole server runs
-- at most limit x worker_processes units at once.
--
-- dngx.wait(d [, timeout]) -> value | nil, failure
--   Waits, without blocking the worker, until the Deferred d fires: returns
--   its value, or nil and its Failure.  A fired d answers at once (in any
--   phase).  Otherwise the calling light thread sleeps on an ngx.semaphore
--   that d's callback posts.  With a timeout (seconds) it gives up after that
--   long and returns nil and a Failure of a defer.TimeoutError; d is left
--   running (call d:cancel() to stop the work, or use d:add_timeout(seconds)
--   before waiting, which cancels it).  The result is consumed: d's later
--   callbacks see nil (as defer.await), except after a timeout, when the late
--   result goes on down d's chain.  Waiting needs a context that can yield:
--   rewrite_by_lua*, access_by_lua*, content_by_lua*, ngx.timer callbacks,
--   ssl_certificate_by_lua*, ssl_session_fetch_by_lua*, ssl_client_hello_by_lua*,
--   and a Lua frame (not inside a string.gsub or table.sort callback, a
--   metamethod called from C, a __gc).  Elsewhere (init_by_lua*,
--   init_worker_by_lua*, set_by_lua*, header_filter_by_lua*,
--   body_filter_by_lua*, log_by_lua*, balancer_by_lua*) a pending d raises an
--   error that says so, rather than hanging.  wait also starts (or wakes) the
--   pump of defer.loop, so deferreds of loop timers (loop:sleep, add_timeout)
--   fire.
--
-- dngx.thread(f, ...) -> Deferred
--   Runs f(...) in a new light thread (ngx.thread.spawn) of the current
--   request or timer, so that f may do cosocket I/O, ngx.sleep, subrequests;
--   the Deferred fires with f's first return value, or errbacks with its
--   error (a Failure with the traceback of where it was raised).  It is
--   made to be the work of a semaphore:
--
--     sem:run(function() return dngx.thread(fetch, url) end)
--
--   Cancelling the Deferred kills the light thread when the canceller runs
--   in the thread that spawned it (ngx.thread.kill allows only that);
--   otherwise the thread runs to its end and its result is dropped.  Either
--   way the Deferred errbacks with a CancelledError at once.
--   A light thread belongs to the request (or timer) that was running when
--   it started, and dies with it: ngx.exit (or ngx.exec, ngx.redirect, an
--   error in the entry thread) kills the request's light threads, and the
--   Deferred of a killed thread never fires.  With a semaphore made for one
--   request, that is harmless (cancel what you no longer wait for before
--   ngx.exit: the tokens come back).  With a semaphore shared by a worker's
--   requests, a unit that one request queued is started by whichever
--   request's unit gave the token back, as a light thread of that request:
--   that request's handler ends only when such threads do (ngx.eof() sends
--   its response first), and an ngx.exit there kills them, so their tokens
--   never come back.  For a shared semaphore use dngx.timer.
--
-- dngx.timer(f, ...) -> Deferred
--   The same, but f runs in an ngx.timer of its own (ngx.timer.at with no
--   delay) rather than in a light thread of the running request: no
--   request holds it, and no request's end or ngx.exit can kill it (only
--   the worker's exit, which errbacks the Deferred if f had not started).
--   The timer context has cosockets, ngx.sleep, ngx.thread and shared
--   dicts, but no request (ngx.var, ngx.req, ngx.location.capture).  Use it
--   for a semaphore shared by a worker's requests:
--
--     local sem = defer.semaphore(8) -- module level: one per worker
--     sem:run(function() return dngx.timer(fetch, url) end)
--
--   It counts against lua_max_pending_timers and lua_max_running_timers
--   (1024 and 256 by default): keep the limit below the latter.  Cancelling
--   the Deferred errbacks it with a CancelledError at once; f, if it has
--   started, runs to its end and its result is dropped.  ngx.timer.at
--   failing (too many timers) errbacks the Deferred.
--
-- dngx.pump([loop [, opts]]) -> pump
--   Drives `loop` (default defer.loop: its queued calls and timers) from this
--   worker's nginx event loop: an ngx.timer.at chain re-armed from
--   loop:next_timeout(), never sooner than 1 ms (Debian's nginx lacks the
--   delayed-events patch: a zero delay would log a warning each time), and
--   when the loop is idle, every opts.idle seconds (default 0.1; false: stop
--   when idle) so that work queued from outside a loop callback is noticed.
--   opts.budget caps the calls run per tick (loop:run_once(budget)).
--   Loop calls and timers run in the pump's timer context, where they may
--   yield (cosockets, ngx.sleep, dngx.wait, dngx.thread); while one is
--   suspended the next pass waits for it.
--   Idempotent: one pump per loop and worker; calling it again returns the
--   same pump and wakes it (call it after queueing work from a request when
--   idle polling is off).  Call it from init_worker_by_lua*; it cannot start
--   in init_by_lua* (no timers there: a clear error).  pump:kick() wakes it,
--   pump:stop() ends the chain (pump() starts it again).  pump.ticks counts
--   its passes.  It stops when the worker exits.
local defer = require "defer"
local ngx = ngx
if type(ngx) ~= "table" or not ngx.get_phase then
  error("defer.ngx needs OpenResty / nginx's http lua module (no ngx here)", 2)
end
local semaphore = require "ngx.semaphore"

local type, error, tostring = type, error, tostring
local pcall, xpcall, setmetatable = pcall, xpcall, setmetatable
local get_phase, timer_at, log, ERR = ngx.get_phase, ngx.timer.at, ngx.log, ngx.ERR
local now = ngx.now
local spawn, kill = ngx.thread.spawn, ngx.thread.kill
local exiting = ngx.worker and ngx.worker.exiting or function() return false end
local getinfo = debug.getinfo
local new, failure, is_failure = defer.new, defer.failure, defer.is_failure
local TimeoutError = defer.TimeoutError

local M = {}

-- (a deferred holding an unhandled failure has a metatable of its own,
-- with the same __index)
local deferred_index = getmetatable(defer.new()).__index
local function is_deferred(d)
  local mt = getmetatable(d)
  return type(mt) == "table" and mt.__index == deferred_index
end
local LoopMT = getmetatable(defer.loop)

-- Phases where ngx.semaphore can wait and light threads can start.
local CAN_YIELD = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local function argerror(fname, n, what, v)
  error(("bad argument #%d to 'defer.ngx.%s' (%s expected, got %s)")
    :format(n, fname, what, v == nil and "no value" or type(v)), 3)
end

-- The C functions that LuaJIT can yield across; any other C function on the
-- stack of the running coroutine (string.gsub or table.sort calling back, a
-- library's callback, tostring calling __tostring) makes a yield fail, and
-- ngx_lua would already have changed its state (ngx_lua's coroutine table
-- has no isyieldable, so the stack is read).
local YIELD_ACROSS = {[pcall] = true, [xpcall] = true}

-- (the walk reads only each frame's function: about 0.4 us a frame)
local is_c = setmetatable({}, {__mode = "k"}) -- function -> a C function not above

local function c_boundary(level)
  while true do
    local info = getinfo(level, "f")
    if info == nil then return nil end
    local f = info.func
    local c = is_c[f]
    if c == nil then
      c = getinfo(f, "S").what == "C" and not YIELD_ACROSS[f]
      is_c[f] = c
    end
    if c then return f end
    level = level + 1
  end
end

-- Why the running code cannot yield to nginx (a message), or nil.
local function cannot_yield(fname, what)
  local phase = get_phase()
  if not CAN_YIELD[phase] then
    return ("defer.ngx.%s: cannot %s in the '%s' phase: nginx cannot suspend "
      .. "Lua there (only in rewrite, access, content, ngx.timer and ssl "
      .. "handlers)"):format(fname, what, tostring(phase))
  end
  if c_boundary(3) then
    return ("defer.ngx.%s: cannot %s here: a C function on the stack (a "
      .. "string.gsub or table.sort callback, a metamethod called from C, a "
      .. "__gc?) stops nginx from suspending Lua"):format(fname, what)
  end
end

------------------------------------------------------------------ pump

local MIN = 0.001 -- seconds: the shortest re-arm
local pumps = setmetatable({}, {__mode = "k"}) -- loop -> pump
local Pump = {}
Pump.__index = Pump

-- Arms the timer chain to fire after `delay` (nil: idle), unless a timer
-- already armed fires no later.  ngx timers cannot be cancelled: p.armed
-- holds the due times of those still pending (an earlier one armed by a
-- kick leaves the later one armed; when that fires, it is one more pass).
local function arm(p, delay)
  if p.stopped then return end
  if delay == nil or (p.idle and delay > p.idle) then delay = p.idle end
  if not delay then return end -- idle, and idle polling is off
  if delay < MIN then delay = MIN end
  delay = math.ceil(delay * 1000) / 1000 -- ms, rounded up: never early
  local due = now() + delay
  for t in pairs(p.armed) do
    if t <= due then return end
  end
  if exiting() then return end
  local ok, err = timer_at(delay, p.tick, due)
  if not ok then
    log(ERR, "defer.ngx.pump: cannot arm a timer: ", err)
    return
  end
  p.armed[due] = true
end

local function make_tick(p)
  local loop = p.loop
  return function(premature, due)
    p.armed[due] = nil
    if premature then -- the worker is exiting
      p.stopped = true
      return
    end
    if p.stopped then return end
    -- a pass still suspended in a yielding callback re-arms when it ends
    if p.running then return end
    p.running = true
    local ok, err = pcall(loop.run_once, loop, p.budget)
    p.running = false
    p.ticks = p.ticks + 1
    if not ok then log(ERR, "defer.ngx.pump: ", tostring(err)) end
    ok, err = pcall(loop.next_timeout, loop)
    if not ok then
      log(ERR, "defer.ngx.pump: ", tostring(err))
      err = MIN
    end
    return arm(p, err)
  end
end

function Pump.kick(p)
  p.stopped = false
  return arm(p, p.loop:next_timeout())
end

function Pump.stop(p)
  p.stopped = true -- the armed timer, when it fires, does nothing
end

Pump.__tostring = function(p)
  return ("<defer.ngx pump of %s, %s, %d ticks>")
    :format(tostring(p.loop), p.stopped and "stopped" or "running", p.ticks)
end

function M.pump(loop, opts)
  if loop == nil then loop = defer.loop end
  if getmetatable(loop) ~= LoopMT then argerror("pump", 1, "Loop", loop) end
  if opts ~= nil and type(opts) ~= "table" then argerror("pump", 2, "table", opts) end
  local p = pumps[loop]
  if p == nil then
    local phase = get_phase()
    if phase == "init" then
      error("defer.ngx.pump: cannot start in init_by_lua* (nginx has no "
        .. "timers there): call it from init_worker_by_lua*", 2)
    end
    p = setmetatable({loop = loop, ticks = 0, idle = 0.1, stopped = false,
      armed = {}}, Pump)
    p.tick = make_tick(p)
    pumps[loop] = p
  end
  if opts then
    if opts.idle ~= nil then
      local idle = opts.idle
      if idle ~= false and (type(idle) ~= "number" or idle < MIN) then
        error(("defer.ngx.pump: opts.idle must be false or a number >= %g, got %s")
          :format(MIN, tostring(idle)), 2)
      end
      p.idle = idle
    end
    if opts.budget ~= nil then p.budget = opts.budget end
  end
  p:kick()
  return p
end

------------------------------------------------------------------ wait

local forever = 86400 -- one ngx.semaphore wait; repeated until d fires

function M.wait(d, timeout)
  if not is_deferred(d) then argerror("wait", 1, "Deferred", d) end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error(("bad argument #2 to 'defer.ngx.wait' (seconds >= 0 expected, got %s)")
      :format(tostring(timeout)), 2)
  end
  local done, result, gone, sema = false, nil, false, nil
  d:add_both(function(r)
    done, result = true, r
    if sema then sema:post(1) end
    if gone then return r end -- nobody waits any more: pass it on
    return nil -- consumed by the waiter
  end)
  if not done then
    local why = cannot_yield("wait", "wait on a pending Deferred")
    if why then
      gone = true
      error(why, 2)
    end
    local p = pumps[defer.loop]
    if p == nil or p.stopped then pcall(M.pump) else p:kick() end
    sema = semaphore.new()
    local fine, ok, err
    repeat
      fine, ok, err = pcall(sema.wait, sema, timeout or forever)
    until done or timeout or not fine or (not ok and err ~= "timeout")
    if not done then
      gone = true
      if not fine then -- raised: never post to a wait that did not happen
        sema = nil
        error("defer.ngx.wait: " .. tostring(ok), 2)
      end
      if err == "timeout" then
        return nil, failure(TimeoutError(("defer.ngx.wait: gave up after %g s"):format(timeout)))
      end
      error("defer.ngx.wait: ngx.semaphore: " .. tostring(err), 2)
    end
  end
  if is_failure(result) then return nil, result end
  return result
end

------------------------------------------------------------------ thread

-- the traceback is taken here, where the error was raised
local function on_error(e) return failure(e) end

-- The body of the light thread: runs f, fires d (unless cancelled).
local function runner(d, f, ...)
  local ok, v = xpcall(f, on_error, ...)
  if d.called then return end -- cancelled meanwhile: the result is dropped
  if ok then d:callback(v) else d:errback(v) end
end

function M.thread(f, ...)
  if type(f) ~= "function" then argerror("thread", 1, "function", f) end
  local why = cannot_yield("thread", "start a light thread")
  if why then error(why, 2) end
  local t
  local d = new(function()
    if t ~= nil then pcall(kill, t) end
  end)
  t = spawn(runner, d, f, ...)
  return d
end

------------------------------------------------------------------ timer

local function timer_runner(premature, d, f, ...)
  if d.called then return end -- cancelled before it started
  if premature then
    return d:errback(("defer.ngx.timer: the worker is exiting; %s did not run")
      :format(tostring(f)))
  end
  return runner(d, f, ...)
end

function M.timer(f, ...)
  if type(f) ~= "function" then argerror("timer", 1, "function", f) end
  if get_phase() == "init" then
    error("defer.ngx.timer: cannot start in init_by_lua* (nginx has no timers there)", 2)
  end
  local d = new()
  local ok, err = timer_at(0, timer_runner, d, f, ...)
  if not ok then
    d:errback(("defer.ngx.timer: ngx.timer.at failed: %s"):format(tostring(err)))
  end
  return d
end

M._VERSION = defer._VERSION
return M
