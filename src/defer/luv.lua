--- defer.luv: drives a defer loop from libuv, through luv.
--
--   local uv = require "luv"
--   local dluv = require "defer.luv"
--
-- dluv.attach([loop]) -> handle
--   Runs `loop` (default defer.loop) from uv's loop: its ready calls and
--   timers run from a uv timer re-armed from loop:next_timeout(), and from a
--   uv check handle after every poll (so calls queued by I/O callbacks run in
--   the same iteration).  Nothing spins: the timer sleeps until defer's next
--   timer, and it is stopped when defer's loop is idle, so uv.run() returns
--   when nothing else is alive.  handle:close() detaches; handle:kick() re-arms
--   (call it after queueing work from outside a uv callback).
-- dluv.run([loop])
--   attach, uv.run(), close: runs until neither loop has anything to do.
-- dluv.call(f, ...) -> Deferred
--   Calls a callback-style luv function f(..., cb) where cb(err, ...): the
--   Deferred fires with the first result (true when there is none) or
--   errbacks with the error string.  dluv.call(uv.fs_stat, "/").
-- dluv.lines(stream) -> reader
--   Reads a uv stream line by line: reader:line() returns a Deferred of the
--   next line (without "\r\n"), or nil at the end of the stream (errback on
--   a read error).  reader:close() stops reading.
local uv = require "luv"
local defer = require "defer"

local M = {}

local function attach(loop)
  loop = loop or defer.loop
  local timer, check = uv.new_timer(), uv.new_check()
  local handle, closed = {}, false

  local function arm()
    if closed then return end
    local t = loop:next_timeout()
    if t == nil then
      timer:stop()
    else
      -- ms, rounded up so that the timer never fires a hair early
      timer:start(math.ceil(t * 1000), 0, function()
        loop:run_once()
        arm()
      end)
    end
  end

  check:start(function()
    loop:run_once()
    arm()
  end)
  check:unref() -- the check alone keeps nothing alive
  arm()

  function handle.kick() arm() end
  function handle.close()
    if closed then return end
    closed = true
    timer:stop()
    check:stop()
    timer:close()
    check:close()
  end
  return handle
end
M.attach = attach

function M.run(loop)
  local h = attach(loop)
  local ok, err = pcall(uv.run)
  h.close()
  uv.run("nowait") -- let the handles close
  if not ok then error(err, 0) end
end

local unpack = table.unpack or unpack

function M.call(f, ...)
  local d = defer.new()
  local n = select("#", ...)
  local args = {...}
  args[n + 1] = function(err, res, ...)
    if d.called then return end
    if err then d:errback(err)
    elseif res == nil then d:callback(true)
    else d:callback(res) end
  end
  -- luv reports a failure to start as a raise or as nil, message
  local ok, r1, r2 = pcall(f, unpack(args, 1, n + 1))
  if not d.called then
    if not ok then d:errback(r1)
    elseif r1 == nil and r2 ~= nil then d:errback(r2) end
  end
  return d
end

-- A line reader over a stream.
function M.lines(stream)
  local buf, waiting, lines, ended, failed = "", {}, {}, false, nil
  local reader = {}

  local function deliver()
    while #waiting > 0 and (#lines > 0 or ended or failed) do
      local d = table.remove(waiting, 1)
      if #lines > 0 then d:callback(table.remove(lines, 1))
      elseif failed then d:errback(failed)
      else d:callback(nil) end
    end
  end

  stream:read_start(function(err, chunk)
    if err then failed = err
    elseif chunk == nil then ended = true
    else
      buf = buf .. chunk
      while true do
        local i = buf:find("\n", 1, true)
        if not i then break end
        local line = buf:sub(1, i - 1):gsub("\r$", "")
        lines[#lines + 1] = line
        buf = buf:sub(i + 1)
      end
    end
    deliver()
  end)

  function reader.line()
    local d = defer.new()
    waiting[#waiting + 1] = d
    deliver()
    return d
  end
  function reader.close()
    ended = true
    pcall(stream.read_stop, stream)
    deliver()
  end
  return reader
end

return M
