---@meta defer.luv
-- Definitions for `require "defer.luv"`: a defer loop driven from libuv.

---@class defer.luv
local dluv = {}

---@class defer.luv.Attached
local Attached = {}
---Re-arms the uv timer from loop:next_timeout() now.
function Attached.kick() end
---Detaches: stops and closes the uv handles.
function Attached.close() end

---@class defer.luv.Reader
local Reader = {}
---A Deferred of the next line (without "\n" or "\r\n"), nil at the end.
---@return defer.Deferred
function Reader.line() end
---Stops reading; pending line() calls fire nil.
function Reader.close() end

---Runs `loop` (default defer.loop) from uv's default loop.
---@param loop? defer.Loop
---@return defer.luv.Attached
function dluv.attach(loop) end

---attach, uv.run(), close: until neither loop has anything to do.
---@param loop? defer.Loop
function dluv.run(loop) end

---Calls a callback-style luv function as f(..., cb): a Deferred of its
---first result (true when none), or its error.
---@param f function
---@param ... any
---@return defer.Deferred
function dluv.call(f, ...) end

---Reads a uv stream line by line.
---@param stream userdata
---@return defer.luv.Reader
function dluv.lines(stream) end

return dluv
