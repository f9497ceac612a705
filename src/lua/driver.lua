-- driver.lua: the one place where defer calls user code.  The C core keeps
-- every state and hands out one pending call at a time (a callback with its
-- result, a canceller, a loop call...); this loop runs it from a Lua frame,
-- so that host primitives that yield (OpenResty's light threads, cosockets,
-- wrapped coroutines) work inside it, and hands the outcome back to C with a
-- proper tail call, so neither the C stack nor the Lua stack grows.
local M, core = ...

local step, handler = core.step, core.handler
local xpcall, type, error = xpcall, type, error

-- call(f, ...) -> ok, result-or-Failure
local call
if core.pcall_tb and not jit then
  call = core.pcall_tb -- PUC 5.1: xpcall takes no arguments there
else
  call = function(f, ...) return xpcall(f, handler, ...) end
end

-- drive(top, f, ...): run f(...) for the frame top, report, take the next.
-- When there is nothing to run, the orphans of an error that escaped the
-- engine earlier (engine.c) are resumed; then, after a call failed for lack
-- of memory (orphans[2], set by the engine), what that may have left undone
-- is done (orphans[3]: coro.lua).
local drive
local orphans, start = core.orphans, core.start
if call == core.pcall_tb then
  local pcall_tb = core.pcall_tb
  drive = function(top, f, ...)
    if top == nil then
      if orphans[1] then return drive(start()) end
      if orphans[2] then return orphans[3]() end
      return
    end
    return drive(step(top, pcall_tb(f, ...)))
  end
else
  drive = function(top, f, ...)
    if top == nil then
      if orphans[1] then return drive(start()) end
      if orphans[2] then return orphans[3]() end
      return
    end
    return drive(step(top, xpcall(f, handler, ...)))
  end
end
core.drive = drive
core.call = call

local function checkfunction(f, fname)
  if type(f) ~= "function" then
    error(("bad argument #1 to '%s' (function expected, got %s)")
      :format(fname, f == nil and "no value" or type(f)), 3)
  end
end
core.checkfunction = checkfunction

------------------------------------------------------------------ Deferred

local D = core.Deferred
local fire, add, add2, chain = core.fire, core.add, core.add2, core.chain
local unpause, cancel, cancelled = core.unpause, core.cancel, core.cancelled
local maybe_result = core.maybe_result

function D.callback(d, value) return drive(fire(d, value, false)) end
function D.errback(d, err) return drive(fire(d, err, true)) end
function D.add_callback(d, f, ...) drive(add(d, 1, f, ...)) return d end
function D.add_errback(d, f, ...) drive(add(d, 2, f, ...)) return d end
function D.add_both(d, f, ...) drive(add(d, 3, f, ...)) return d end
function D.add_callbacks(d, cb, eb) drive(add2(d, cb, eb)) return d end
function D.chain(d, other) drive(chain(d, other)) return d end
function D.unpause(d) drive(unpause(d)) return d end

-- The canceller runs here, unprotected: if it raises, the error goes to the
-- caller of cancel() and the deferred stays pending (as in Twisted).
function D.cancel(d)
  local target, canceller, owner, err = cancel(d)
  if canceller then canceller(target) end
  if target ~= nil then return drive(cancelled(target, owner, err)) end
end

function M.maybe(f, ...)
  checkfunction(f, "maybe")
  return maybe_result(call(f, ...))
end
