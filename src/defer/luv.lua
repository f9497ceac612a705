--- defer.luv: drives a defer loop from libuv, through luv.
--
--   local uv = require "luv"
--   local dluv = require "defer.luv"
--
-- dluv.attach([loop]) -> handle
--   Runs `loop` (default defer.loop) from uv's default loop, without busy
--   waiting and without blocking uv: a uv timer, re-armed from
--   loop:next_timeout() after every pass, runs loop:run_once() when defer's
--   next timer is due; an unreferenced uv check handle runs a pass after
--   every poll, so calls queued from luv I/O callbacks run in the same uv
--   iteration; an unreferenced uv prepare handle re-arms the timer just
--   before uv polls, so calls queued from uv timer callbacks do not wait for
--   the next I/O.  The timer is stopped while defer's loop is idle, so
--   uv.run() returns when nothing else is alive.  Each pass runs only what
--   was ready when it began: a call that re-queues itself cannot starve uv.
--   Work queued from outside any uv callback after attach (at top level,
--   before uv.run()) is seen once handle:kick() is called or uv runs for
--   another reason; dluv.run() needs no kick.
-- handle:kick()
--   Re-arms the timer from loop:next_timeout() now.
-- handle:close()
--   Detaches: stops and closes the uv handles (they are gone after the next
--   uv iteration).  Calling it again does nothing.
-- dluv.run([loop])
--   attach, uv.run(), close: runs until neither defer's loop nor uv has
--   anything left to do.
-- dluv.call(f, ...) -> Deferred
--   Calls a callback-style luv function as f(..., cb), where luv calls
--   cb(err, ...).  The Deferred fires with the first result (true when there
--   is none) or errbacks with the error string; an error raised by f, or a
--   nil, message return (luv's way of saying the request did not start),
--   errbacks it too.  Cancelling the Deferred ignores the late answer.
--     dluv.call(uv.fs_stat, "/")                       -- the stat table
--     dluv.call(uv.tcp_connect, tcp, "127.0.0.1", port) -- true
--     dluv.call(uv.write, tcp, "HELO me\r\n")           -- true
-- dluv.lines(stream) -> reader
--   Reads a uv stream (TCP, pipe, TTY) line by line; starts reading at once.
-- reader:line() -> Deferred
--   Fires with the next line, without its "\n" or "\r\n"; at the end of the
--   stream, with the unterminated rest if there is one, then with nil.
--   Errbacks with the error string on a read error.  Lines are handed out
--   in order; cancelling a pending line() takes it out of the queue, so the
--   line goes to the next caller.
-- reader:close()
--   Stops reading (the stream stays open); pending line() calls fire nil.
local uv = require "luv"
local defer = require "defer"

local M = {}

local ceil, select, pcall, error = math.ceil, select, pcall, error
local unpack = table.unpack or unpack

function M.attach(loop)
  loop = loop or defer.loop
  local timer, check, prepare = uv.new_timer(), uv.new_check(), uv.new_prepare()
  local closed = false
  local handle = {}

  local arm
  local function on_timer()
    loop:run_once()
    arm()
  end
  function arm()
    if closed then return end
    local t = loop:next_timeout()
    if t == nil then
      timer:stop()
    else
      -- uv measures the timeout from its cached "now": refresh it, and
      -- round up to whole ms so that the timer does not fire a hair early.
      uv.update_time()
      timer:start(ceil(t * 1000), 0, on_timer)
    end
  end

  check:start(on_timer)
  check:unref() -- the check alone keeps nothing alive
  prepare:start(arm)
  prepare:unref()
  arm()

  function handle.kick() arm() end
  function handle.close()
    if closed then return end
    closed = true
    for _, h in ipairs({timer, check, prepare}) do
      if not h:is_closing() then h:close() end
    end
  end
  return handle
end

function M.run(loop)
  local h = M.attach(loop)
  local ok, err = pcall(uv.run)
  h.close()
  uv.run("nowait") -- let the handles close
  if not ok then error(err, 0) end
end

function M.call(f, ...)
  local d = defer.new()
  local n = select("#", ...)
  local args = {...}
  args[n + 1] = function(err, res)
    if d.called then return end -- cancelled, or already failed to start
    if err then d:errback(err)
    elseif res == nil then d:callback(true)
    else d:callback(res) end
  end
  local ok, r1, r2 = pcall(f, unpack(args, 1, n + 1))
  if not d.called then
    if not ok then d:errback(r1)
    elseif r1 == nil and r2 ~= nil then d:errback(r2) end
  end
  return d
end

function M.lines(stream)
  local buf = ""
  local lines, lhead, ltail = {}, 1, 0     -- complete lines not yet asked for
  local waiting = {}                       -- pending line() deferreds, in order
  local ended, failed = false, nil
  local reader = {}

  local function deliver()
    while waiting[1] do
      local d
      if lhead <= ltail then
        d = table.remove(waiting, 1)
        local line = lines[lhead]
        lines[lhead], lhead = nil, lhead + 1
        d:callback(line)
      elseif failed then
        d = table.remove(waiting, 1)
        d:errback(failed)
      elseif ended then
        d = table.remove(waiting, 1)
        d:callback(nil)
      else
        return
      end
    end
  end

  local function push(line)
    ltail = ltail + 1
    lines[ltail] = line
  end

  stream:read_start(function(err, chunk)
    if err then
      failed = err
    elseif chunk == nil then
      if buf ~= "" then push(buf) buf = "" end
      ended = true
    else
      buf = buf .. chunk
      local start = 1
      while true do
        local i = buf:find("\n", start, true)
        if not i then break end
        local j = i - 1
        if buf:byte(j) == 13 then j = j - 1 end -- "\r\n"
        push(buf:sub(start, j))
        start = i + 1
      end
      if start > 1 then buf = buf:sub(start) end
    end
    deliver()
  end)

  function reader.line()
    local d
    d = defer.new(function()
      for k = 1, #waiting do
        if waiting[k] == d then table.remove(waiting, k) return end
      end
    end)
    waiting[#waiting + 1] = d
    deliver()
    return d
  end
  function reader.close()
    if ended then return end
    ended = true
    if not stream:is_closing() then pcall(stream.read_stop, stream) end
    deliver()
  end
  return reader
end

return M
