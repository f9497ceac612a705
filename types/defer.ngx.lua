---@meta defer.ngx
-- Definitions for `require "defer.ngx"`: defer inside OpenResty.

---@class defer.ngx
---@field _VERSION string
local dngx = {}

---@class defer.ngx.Pump
---@field ticks integer Passes run so far.
local Pump = {}
---Wakes the pump.
function Pump:kick() end
---Ends the timer chain (pump() starts it again).
function Pump:stop() end

---@class defer.ngx.PumpOptions
---@field idle? number|false Seconds between polls while idle (false: stop when idle).
---@field budget? integer Calls run per tick at most.

---Drives `loop` (default defer.loop) from this worker's nginx event loop.
---@param loop? defer.Loop
---@param opts? defer.ngx.PumpOptions
---@return defer.ngx.Pump
function dngx.pump(loop, opts) end

---Waits without blocking the worker: d's value, or nil and its Failure.
---@param d defer.Deferred
---@param timeout? number Seconds.
---@return any value
---@return defer.Failure|nil failure
function dngx.wait(d, timeout) end

---Runs f(...) in a new light thread of the current request or timer.
---@param f fun(...: any): any
---@param ... any
---@return defer.Deferred
function dngx.thread(f, ...) end

---Runs f(...) in an ngx.timer of its own.
---@param f fun(...: any): any
---@param ... any
---@return defer.Deferred
function dngx.timer(f, ...) end

return dngx
