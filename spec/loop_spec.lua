-- The loop (the C event queue): defer.loop, defer.new_loop and the loop's
-- methods, seen from the user's side.  Every spec that needs time uses a
-- manual clock, so that it is deterministic; the only specs on the real
-- clock are the ones about the real clock itself (run() sleeping).
local defer = require "defer"

local ok_helpers, helpers = pcall(require, "helpers")
local function scale(n)
  if ok_helpers and type(helpers) == "table" and helpers.scale then
    return helpers.scale(n)
  end
  return n
end

local LUA = os.getenv("DEFER_SPEC_LUA")

local function manual()
  return defer.new_loop{clock = "manual"}
end

-- A recorder: log(x) appends x to log.list.
local function recorder()
  local list = {}
  return list, function(x) list[#list + 1] = x end
end

-- The error message raised by f(...); fails the spec when f does not raise.
local function error_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function full_collect()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Schedules a callback known only to the loop (and to the weak table), from
-- a frame of its own, so that no dead register of the spec keeps it alive.
local function schedule_watched(weak, schedule)
  local owned = {}
  local f = function() return owned end
  weak[1] = f
  return schedule(f)
end

-- Runs a Lua script in a child interpreter and returns its stdout and stderr
-- together.  LUA_PATH and LUA_CPATH are inherited from this process.
local function run_child(source)
  local path = os.tmpname()
  local file = assert(io.open(path, "w"))
  file:write(source)
  file:close()
  local pipe = assert(io.popen(LUA .. " " .. path .. " 2>&1"))
  local out = pipe:read("*a")
  pipe:close()
  os.remove(path)
  return out
end

describe("defer.loop", function()
  it("is a loop that runs the calls queued on it", function()
    local ran = false
    defer.loop:call_soon(function() ran = true end)
    defer.loop:run_once()
    assert.is_true(ran)
  end)

  it("is the same object when the module is loaded again in the same Lua state", function()
    local first_module, first_loop = defer, defer.loop
    package.loaded.defer = nil
    local again = require "defer"
    -- Loading again made a second module table; the rest of this file goes
    -- on with the newest one.
    defer = again
    assert.are_not.equal(first_module, again)
    assert.are.equal(first_loop, again.loop)
  end)
end)

describe("defer.new_loop", function()
  it("makes a loop apart from the default loop", function()
    local loop = defer.new_loop()
    local before = defer.loop:pending()
    loop:call_soon(function() end)
    assert.are_not.equal(defer.loop, loop)
    assert.are.equal(1, loop:pending())
    assert.are.equal(before, defer.loop:pending())
  end)

  it("reads a monotonic clock by default, one that never goes back", function()
    local loop = defer.new_loop()
    local last = loop:time()
    for _ = 1, 10000 do
      local t = loop:time()
      assert.is_true(t >= last)
      last = t
    end
  end)

  it("reads a default clock that moves with real time", function()
    local loop = defer.new_loop()
    local t0, cpu0 = loop:time(), os.clock()
    -- 0.1 s of CPU time in this one thread takes at least 0.1 s of real time
    while os.clock() - cpu0 < 0.1 do end
    assert.is_true(loop:time() - t0 >= 0.1)
  end)

  it("with clock = \"manual\" starts at 0 and stays there while nothing advances it", function()
    local loop = manual()
    loop:call_soon(function() end)
    loop:run_once()
    loop:run()
    assert.are.equal(0, loop:time())
  end)

  it("with clock = \"manual\" moves only by advance(dt)", function()
    local loop = manual()
    loop:advance(2.5)
    assert.are.equal(2.5, loop:time())
    loop:advance(0.5)
    assert.are.equal(3, loop:time())
  end)

  it("with clock = function reads time() from that function", function()
    local now = 100
    local loop = defer.new_loop{clock = function() return now end}
    assert.are.equal(100, loop:time())
    now = 107.5
    assert.are.equal(107.5, loop:time())
  end)

  it("with clock = function fires timers by the times the function returns", function()
    local now = 10
    local loop = defer.new_loop{clock = function() return now end}
    local fired = false
    loop:call_later(5, function() fired = true end)
    now = 14.5
    loop:run_once()
    assert.is_false(fired)
    now = 15
    loop:run_once()
    assert.is_true(fired)
  end)
end)

describe("loop:call_soon", function()
  it("runs calls first in, first out", function()
    local loop = manual()
    local list, log = recorder()
    for i = 1, 5 do loop:call_soon(log, i) end
    loop:run_once()
    assert.are.same({1, 2, 3, 4, 5}, list)
  end)

  it("passes the extra arguments to the call, nils included", function()
    local loop = manual()
    local got
    loop:call_soon(function(...) got = {n = select("#", ...), ...} end, "a", nil, 3)
    loop:run_once()
    assert.are.same({n = 3, "a", nil, 3}, got)
  end)

  it("does not run the call before the loop runs", function()
    local loop = manual()
    local ran = false
    loop:call_soon(function() ran = true end)
    assert.is_false(ran)
  end)

  it("returns a handle that is active while the call waits", function()
    local loop = manual()
    local h = loop:call_soon(function() end)
    assert.is_true(h.active)
  end)

  it("gives a handle whose active is false from the moment its call starts", function()
    local loop = manual()
    local h, seen
    h = loop:call_soon(function() seen = h.active end)
    loop:run_once()
    assert.is_false(seen)
    assert.is_false(h.active)
  end)

  it("gives a handle whose cancel() keeps the call from running", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_soon(log, "a")
    local h = loop:call_soon(log, "b")
    loop:call_soon(log, "c")
    h:cancel()
    loop:run_once()
    assert.are.same({"a", "c"}, list)
  end)

  it("gives a handle whose cancel() lowers pending() at once", function()
    local loop = manual()
    loop:call_soon(function() end)
    local h = loop:call_soon(function() end)
    assert.are.equal(2, loop:pending())
    h:cancel()
    assert.are.equal(1, loop:pending())
  end)

  it("gives a handle whose cancel() makes it inactive", function()
    local loop = manual()
    local h = loop:call_soon(function() end)
    h:cancel()
    assert.is_false(h.active)
  end)

  it("gives a handle whose cancel() lets the callback be collected at once", function()
    local loop = manual()
    local weak = setmetatable({}, {__mode = "v"})
    local h = schedule_watched(weak, function(f) return loop:call_soon(f) end)
    full_collect()
    assert.is_function(weak[1]) -- the waiting call holds it
    h:cancel()
    full_collect()
    assert.is_nil(weak[1])
  end)

  it("gives a handle whose cancel() does nothing more when called again", function()
    local loop = manual()
    loop:call_soon(function() end)
    local h = loop:call_soon(function() end)
    h:cancel()
    h:cancel()
    assert.are.equal(1, loop:pending())
  end)
end)

describe("loop:run_once", function()
  it("runs only the calls queued when the pass began", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_soon(function() log("a"); loop:call_soon(log, "c") end)
    loop:call_soon(log, "b")
    loop:run_once()
    assert.are.same({"a", "b"}, list)
  end)

  it("runs the calls queued during a pass in the next pass", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_soon(function() log("a"); loop:call_soon(log, "c") end)
    loop:call_soon(log, "b")
    loop:run_once()
    loop:run_once()
    assert.are.same({"a", "b", "c"}, list)
  end)

  it("returns how many calls ran", function()
    local loop = manual()
    for _ = 1, 3 do loop:call_soon(function() end) end
    assert.are.equal(3, loop:run_once())
  end)

  it("returns 0 on an idle loop", function()
    assert.are.equal(0, manual():run_once())
  end)

  it("does not count a cancelled call among those that ran", function()
    local loop = manual()
    loop:call_soon(function() end)
    loop:call_soon(function() end):cancel()
    assert.are.equal(1, loop:run_once())
  end)

  it("with a budget runs at most that many calls", function()
    local loop = manual()
    local list, log = recorder()
    for i = 1, 5 do loop:call_soon(log, i) end
    assert.are.equal(2, loop:run_once(2))
    assert.are.same({1, 2}, list)
    assert.are.equal(3, loop:pending())
  end)

  it("with a budget leaves the rest in their order, ahead of later calls", function()
    local loop = manual()
    local list, log = recorder()
    for i = 1, 5 do loop:call_soon(log, i) end
    loop:run_once(2)
    loop:call_soon(log, 6)
    loop:run_once(2)
    assert.are.same({1, 2, 3, 4}, list)
    loop:run_once()
    assert.are.same({1, 2, 3, 4, 5, 6}, list)
  end)

  it("runs the timers that are due, after the queued calls", function()
    local now = 0
    local loop = defer.new_loop{clock = function() return now end}
    local list, log = recorder()
    loop:call_later(1, log, "timer")
    loop:call_soon(log, "call")
    now = 1
    assert.are.equal(2, loop:run_once())
    assert.are.same({"call", "timer"}, list)
  end)

  it("does not run a timer that is not due yet", function()
    local loop = manual()
    local fired = false
    loop:call_later(1, function() fired = true end)
    assert.are.equal(0, loop:run_once())
    assert.is_false(fired)
  end)
end)

describe("loop:call_later", function()
  it("fires timers by due time, not by the order they were made", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(3, log, 3)
    loop:call_later(1, log, 1)
    loop:call_later(2, log, 2)
    loop:advance(3)
    assert.are.same({1, 2, 3}, list)
  end)

  it("fires timers due at the same time in the order they were made", function()
    local loop = manual()
    local list, log = recorder()
    for _, name in ipairs{"a", "b", "c", "d"} do loop:call_later(2, log, name) end
    loop:advance(2)
    assert.are.same({"a", "b", "c", "d"}, list)
  end)

  it("fires a timer made later for the same due time after the earlier ones", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(2, log, "a")
    loop:call_later(1, log, "b")
    loop:call_later(2, log, "c")
    loop:advance(1)
    loop:call_later(1, log, "d") -- due at 2, like a and c
    loop:advance(1)
    assert.are.same({"b", "a", "c", "d"}, list)
  end)

  it("does not fire a timer before its due time", function()
    local loop = manual()
    local fired = false
    loop:call_later(1, function() fired = true end)
    loop:advance(0.75)
    assert.is_false(fired)
    loop:advance(0.25)
    assert.is_true(fired)
  end)

  it("passes the extra arguments to the timer's function", function()
    local loop = manual()
    local got
    loop:call_later(1, function(...) got = {n = select("#", ...), ...} end, 1, nil, "x")
    loop:advance(1)
    assert.are.same({n = 3, 1, nil, "x"}, got)
  end)

  it("fires a timer with a zero delay on the next pass", function()
    local loop = manual()
    local fired = false
    loop:call_later(0, function() fired = true end)
    assert.is_false(fired)
    loop:run_once()
    assert.is_true(fired)
  end)

  it("returns a handle that is active while the timer waits", function()
    local loop = manual()
    local h = loop:call_later(1, function() end)
    loop:advance(0.5)
    assert.is_true(h.active)
  end)

  it("gives a handle whose active is false from the moment its function starts", function()
    local loop = manual()
    local h, seen
    h = loop:call_later(1, function() seen = h.active end)
    loop:advance(1)
    assert.is_false(seen)
    assert.is_false(h.active)
  end)

  it("gives a handle whose cancel() keeps the timer from firing", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(1, log, "a")
    local h = loop:call_later(1, log, "b")
    loop:call_later(2, log, "c")
    h:cancel()
    loop:advance(5)
    assert.are.same({"a", "c"}, list)
  end)

  it("gives a handle whose cancel() takes the timer out of pending() at once", function()
    local loop = manual()
    loop:call_later(1, function() end)
    local h = loop:call_later(2, function() end)
    assert.are.equal(2, loop:pending())
    h:cancel()
    assert.are.equal(1, loop:pending())
  end)

  it("gives a handle whose cancel() makes it inactive", function()
    local loop = manual()
    local h = loop:call_later(1, function() end)
    h:cancel()
    assert.is_false(h.active)
  end)

  it("gives a handle whose cancel() lets the callback be collected at once", function()
    local loop = manual()
    local weak = setmetatable({}, {__mode = "v"})
    local h = schedule_watched(weak, function(f) return loop:call_later(10, f) end)
    full_collect()
    assert.is_function(weak[1]) -- the waiting timer holds it
    h:cancel()
    full_collect()
    assert.is_nil(weak[1])
  end)

  it("gives a handle whose cancel() inside an earlier timer of the same pass stops the later one", function()
    local loop = manual()
    local list, log = recorder()
    local later
    loop:call_later(1, function() log("first"); later:cancel() end)
    later = loop:call_later(2, log, "second")
    loop:advance(3)
    assert.are.same({"first"}, list)
  end)

  it("gives a handle whose cancel() after the timer fired does nothing", function()
    local loop = manual()
    local h = loop:call_later(1, function() end)
    loop:call_later(5, function() end)
    loop:advance(1)
    h:cancel()
    assert.are.equal(1, loop:pending())
  end)
end)

describe("loop:advance", function()
  it("moves the clock by dt in one step: every timer now due sees the new time", function()
    local loop = manual()
    local seen = {}
    for _, delay in ipairs{1, 2, 3} do
      loop:call_later(delay, function() seen[#seen + 1] = {delay, loop:time()} end)
    end
    loop:advance(5)
    assert.are.same({{1, 5}, {2, 5}, {3, 5}}, seen)
  end)

  it("runs every timer now due in one pass, in due order", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(4, log, 4)
    loop:call_later(0.5, log, 0.5)
    loop:call_later(2, log, 2)
    assert.are.equal(3, loop:advance(4))
    assert.are.same({0.5, 2, 4}, list)
  end)

  it("leaves the timers due later waiting", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(1, log, 1)
    loop:call_later(6, log, 6)
    loop:advance(5)
    assert.are.same({1}, list)
    assert.are.equal(1, loop:pending())
  end)

  it("runs the queued calls, then the timers now due", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(1, log, "timer")
    loop:call_soon(log, "call")
    loop:advance(1)
    assert.are.same({"call", "timer"}, list)
  end)

  it("makes a timer that re-arms itself with no delay wait for the next pass", function()
    local loop = manual()
    local count = 0
    local function tick()
      count = count + 1
      if count < 100 then loop:call_later(0, tick) end -- bounded, so a bug fails instead of hanging
    end
    loop:call_later(1, tick)
    loop:advance(1)
    assert.are.equal(1, count)
    loop:advance(0)
    assert.are.equal(2, count)
  end)

  it("makes a call queued by a timer wait for the next pass", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(1, function() log("timer"); loop:call_soon(log, "call") end)
    loop:advance(1)
    assert.are.same({"timer"}, list)
    loop:advance(0)
    assert.are.same({"timer", "call"}, list)
  end)

  it("with a dt of 0 runs the queued calls without moving the clock", function()
    local loop = manual()
    local ran = false
    loop:advance(3)
    loop:call_soon(function() ran = true end)
    loop:advance(0)
    assert.is_true(ran)
    assert.are.equal(3, loop:time())
  end)
end)

describe("loop:sleep", function()
  it("returns a Deferred that is pending before the time has passed", function()
    local loop = manual()
    local d = loop:sleep(1)
    loop:advance(0.5)
    assert.is_function(d.add_callback)
    assert.are.equal("pending", d:state())
  end)

  it("returns a Deferred that fires with nil once the time has passed", function()
    local loop = manual()
    local d = loop:sleep(1)
    local got = "not fired"
    d:add_callback(function(v) got = v end)
    loop:advance(1)
    assert.is_nil(got)
    assert.are.equal("success", d:state())
  end)

  it("puts one timer on the loop", function()
    local loop = manual()
    loop:sleep(1)
    assert.are.equal(1, loop:pending())
    assert.are.equal(1, loop:next_timeout())
  end)

  it("removes its timer when the Deferred is cancelled", function()
    local loop = manual()
    local d = loop:sleep(1)
    d:cancel()
    d:add_errback(function() end) -- the CancelledError is expected here
    assert.are.equal(0, loop:pending())
    assert.is_nil(loop:next_timeout())
  end)

  it("is fired by the loop with no call: nothing is reported, and one fired by hand is left be", function()
    local loop = manual()
    local errors = 0
    loop:on_error(function() errors = errors + 1 end)
    local a, b = loop:sleep(1), loop:sleep(1)
    b:callback("early")
    local order = {}
    a:add_callback(function() order[#order + 1] = "a" end)
    loop:call_later(1, function() order[#order + 1] = "call" end)
    assert.are.equal(3, loop:advance(1)) -- a's, b's (left be) and the call
    assert.are.same({"a", "call"}, order)
    assert.are.equal("early", b.result)
    assert.are.equal(0, errors)
    assert.are.equal(0, loop:pending())
  end)

  it("gives a Deferred that fails with a CancelledError when cancelled", function()
    local loop = manual()
    local d = loop:sleep(1)
    local err
    d:add_errback(function(f) err = f end)
    d:cancel()
    assert.is_true(defer.is_failure(err))
    assert.is_truthy(err:check(defer.CancelledError))
  end)

  it("with 0 seconds fires on the next pass", function()
    local loop = manual()
    local d = loop:sleep(0)
    assert.are.equal("pending", d:state())
    loop:run_once()
    assert.are.equal("success", d:state())
  end)
end)

describe("loop:run", function()
  it("returns at once on an idle loop", function()
    local loop = manual()
    loop:run()
    assert.are.equal(0, loop:pending())
  end)

  it("returns when nothing is queued or timed any more", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_soon(function()
      log("a")
      loop:call_soon(function()
        log("b")
        loop:call_later(2, log, "c")
      end)
    end)
    loop:run()
    assert.are.same({"a", "b", "c"}, list)
    assert.are.equal(0, loop:pending())
  end)

  it("on a manual clock jumps the clock to each next timer", function()
    local loop = manual()
    local seen = {}
    loop:call_later(12, function() seen[#seen + 1] = loop:time() end)
    loop:call_later(5, function() seen[#seen + 1] = loop:time() end)
    loop:run()
    assert.are.same({5, 12}, seen)
    assert.are.equal(12, loop:time())
  end)

  it("returns after stop(), leaving the later timers waiting", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(1, function() log(1); loop:stop() end)
    loop:call_later(2, log, 2)
    loop:run()
    assert.are.same({1}, list)
    assert.are.equal(1, loop:pending())
    assert.are.equal(1, loop:time())
  end)

  it("goes on with the remaining work when run again after stop()", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_later(1, function() log(1); loop:stop() end)
    loop:call_later(2, log, 2)
    loop:run()
    loop:run()
    assert.are.same({1, 2}, list)
    assert.are.equal(0, loop:pending())
  end)

  it("returns after stop() called from a queued call", function()
    local loop = manual()
    local list, log = recorder()
    loop:call_soon(function() log("a"); loop:stop(); loop:call_soon(log, "b") end)
    loop:run()
    assert.are.same({"a"}, list)
    assert.are.equal(1, loop:pending())
  end)

  it("on the real clock fires a timer after its delay has passed", function()
    local loop = defer.new_loop()
    local t0 = loop:time()
    local fired_at
    loop:call_later(0.3, function() fired_at = loop:time() end)
    loop:run()
    assert.is_number(fired_at)
    assert.is_true(fired_at - t0 >= 0.3)
  end)

  it("on the real clock sleeps while it waits for a timer instead of spinning", function()
    local loop = defer.new_loop()
    local t0, cpu0 = loop:time(), os.clock()
    loop:call_later(0.3, function() end)
    loop:run()
    assert.is_true(loop:time() - t0 >= 0.3)
    assert.is_true(os.clock() - cpu0 < 0.05)
  end)
end)

describe("loop:pending", function()
  it("counts the queued calls plus the timers", function()
    local loop = manual()
    loop:call_soon(function() end)
    loop:call_soon(function() end)
    loop:call_later(1, function() end)
    loop:call_later(5, function() end)
    loop:call_later(5, function() end)
    assert.are.equal(5, loop:pending())
  end)

  it("drops as calls and timers run", function()
    local loop = manual()
    loop:call_soon(function() end)
    loop:call_later(1, function() end)
    loop:call_later(5, function() end)
    loop:run_once()
    assert.are.equal(2, loop:pending())
    loop:advance(1)
    assert.are.equal(1, loop:pending())
  end)
end)

describe("loop:next_timeout", function()
  it("is nil on an idle loop", function()
    assert.is_nil(manual():next_timeout())
  end)

  it("is 0 when a call is queued, even with timers waiting", function()
    local loop = manual()
    loop:call_later(5, function() end)
    loop:call_soon(function() end)
    assert.are.equal(0, loop:next_timeout())
  end)

  it("is the number of seconds to the next timer", function()
    local loop = manual()
    loop:call_later(7, function() end)
    loop:call_later(5, function() end)
    loop:advance(2)
    assert.are.equal(3, loop:next_timeout())
  end)

  it("is 0, not negative, when a timer is overdue", function()
    local now = 0
    local loop = defer.new_loop{clock = function() return now end}
    loop:call_later(1, function() end)
    now = 4
    assert.are.equal(0, loop:next_timeout())
  end)

  it("ignores a cancelled timer", function()
    local loop = manual()
    loop:call_later(1, function() end):cancel()
    loop:call_later(4, function() end)
    assert.are.equal(4, loop:next_timeout())
  end)

  it("ignores a cancelled call", function()
    local loop = manual()
    loop:call_soon(function() end):cancel()
    assert.is_nil(loop:next_timeout())
  end)
end)

describe("loop:on_error", function()
  it("gets an error raised in a call as fn(err, traceback), err the value raised", function()
    local loop = manual()
    local raised = {reason = "boom"}
    local got_err, got_tb
    loop:on_error(function(err, tb) got_err, got_tb = err, tb end)
    loop:call_soon(function() error(raised) end)
    loop:run_once()
    assert.are.equal(raised, got_err)
    assert.is_string(got_tb)
    assert.matches("traceback", got_tb)
  end)

  it("gets a traceback that shows where the error was raised", function()
    local loop = manual()
    local got_tb
    loop:on_error(function(_, tb) got_tb = tb end)
    local function failing_step() error("boom") end
    loop:call_soon(function() failing_step() end)
    loop:run_once()
    assert.matches("failing_step", got_tb)
  end)

  it("gets an error raised in a timer", function()
    local loop = manual()
    local got
    loop:on_error(function(err) got = err end)
    loop:call_later(1, function() error("timer broke", 0) end)
    loop:advance(1)
    assert.are.equal("timer broke", got)
  end)

  it("lets the loop go on with the next call after an error", function()
    local loop = manual()
    local list, log = recorder()
    loop:on_error(function(err) log("error: " .. err) end)
    loop:call_soon(log, "a")
    loop:call_soon(function() error("b", 0) end)
    loop:call_soon(log, "c")
    assert.are.equal(3, loop:run_once())
    assert.are.same({"a", "error: b", "c"}, list)
  end)

  it("lets run() go on with the later timers after an error", function()
    local loop = manual()
    local list, log = recorder()
    loop:on_error(function() log("error") end)
    loop:call_later(1, function() error("x") end)
    loop:call_later(2, log, "later")
    loop:run()
    assert.are.same({"error", "later"}, list)
  end)

  it("returns the previous handler", function()
    local loop = manual()
    local first = function() end
    local second = function() end
    assert.is_function(loop:on_error(first)) -- the default handler
    assert.are.equal(first, loop:on_error(second))
    assert.are.equal(second, loop:on_error(first))
  end)

  it("keeps the loop going when the handler itself raises", function()
    local loop = manual()
    local list, log = recorder()
    loop:on_error(function() error("the handler broke too") end)
    loop:call_soon(function() error("x") end)
    loop:call_soon(log, "next")
    -- the handler's own error goes to stderr (see the specs below)
    loop:run_once()
    assert.are.same({"next"}, list)
  end)

  it("is called again at the next pass when it ran out of memory, and pending() counts that", function()
    local loop = manual()
    local got, short = {}, true
    loop:on_error(function(err)
      if short then short = false error("not enough memory", 0) end
      got[#got + 1] = err
    end)
    loop:call_soon(function() error("x", 0) end)
    loop:run_once()
    assert.are.same({}, got)
    assert.are.equal(1, loop:pending()) -- the report waits
    loop:run_once()
    assert.are.same({"x"}, got)
    assert.are.equal(0, loop:pending())
  end)

  it("belongs to its loop: another loop keeps its own handler", function()
    local a, b = manual(), manual()
    local got_a, got_b
    a:on_error(function(err) got_a = err end)
    b:on_error(function(err) got_b = err end)
    b:call_soon(function() error("in b", 0) end)
    b:run_once()
    assert.is_nil(got_a)
    assert.are.equal("in b", got_b)
  end)
end)

describe("errors written to stderr by the loop", function()
  if not LUA then
    pending("the default handler writes the message and a traceback (set DEFER_SPEC_LUA to the interpreter)")
    pending("an error raised inside a handler is written out (set DEFER_SPEC_LUA to the interpreter)")
    return
  end

  it("come from the default handler: the message and a traceback, and the loop goes on", function()
    local out = run_child([[
      local defer = require "defer"
      local loop = defer.new_loop{clock = "manual"}
      loop:call_soon(function() error("callback-went-wrong") end)
      loop:call_soon(function() io.stdout:write("next-call-ran\n") end)
      loop:run_once()
    ]])
    assert.matches("callback%-went%-wrong", out)
    assert.matches("stack traceback:", out)
    assert.matches("next%-call%-ran", out)
  end)

  it("include an error raised inside a handler, and the loop goes on", function()
    local out = run_child([[
      local defer = require "defer"
      local loop = defer.new_loop{clock = "manual"}
      loop:on_error(function() error("handler-went-wrong") end)
      loop:call_soon(function() error("callback-went-wrong") end)
      loop:call_soon(function() io.stdout:write("next-call-ran\n") end)
      loop:run_once()
    ]])
    assert.matches("handler%-went%-wrong", out)
    assert.matches("next%-call%-ran", out)
  end)
end)

describe("bad input to the loop", function()
  local bad_delays = {
    {"a negative", -1},
    {"a NaN", 0 / 0},
    {"an infinite", math.huge},
    {"a string", "1"},
    {"a nil", nil},
  }

  for _, case in ipairs(bad_delays) do
    local what, delay = case[1], case[2]

    it("call_later rejects " .. what .. " delay at once, naming the function, and queues nothing", function()
      local loop = manual()
      loop:call_later(1, function() end)
      local msg = error_of(loop.call_later, loop, delay, function() end)
      assert.matches("bad argument #1 to 'call_later'", msg, 1, true)
      assert.are.equal(1, loop:pending())
    end)

    it("sleep rejects " .. what .. " delay at once, naming the function, and queues nothing", function()
      local loop = manual()
      loop:call_later(1, function() end)
      local msg = error_of(loop.sleep, loop, delay)
      assert.matches("bad argument #1 to 'sleep'", msg, 1, true)
      assert.are.equal(1, loop:pending())
    end)
  end

  for _, case in ipairs{{"a number", 42}, {"a table", {}}, {"a nil", nil}} do
    local what, f = case[1], case[2]

    it("call_soon rejects " .. what .. " in place of the function, naming the function, and queues nothing", function()
      local loop = manual()
      loop:call_soon(function() end)
      local msg = error_of(loop.call_soon, loop, f)
      assert.matches("bad argument #1 to 'call_soon'", msg, 1, true)
      assert.are.equal(1, loop:pending())
    end)

    it("call_later rejects " .. what .. " in place of the function, naming the function, and queues nothing", function()
      local loop = manual()
      loop:call_soon(function() end)
      local msg = error_of(loop.call_later, loop, 1, f)
      assert.matches("bad argument #2 to 'call_later'", msg, 1, true)
      assert.are.equal(1, loop:pending())
    end)
  end

  it("advance raises on a loop whose clock is the default one, naming the function", function()
    local loop = defer.new_loop()
    loop:call_later(0, function() error("must not run") end)
    local msg = error_of(loop.advance, loop, 1)
    assert.matches("advance", msg, 1, true)
    assert.are.equal(1, loop:pending())
  end)

  it("advance raises on a loop whose clock is a function, and leaves that clock alone", function()
    local loop = defer.new_loop{clock = function() return 50 end}
    loop:call_later(0, function() error("must not run") end)
    local msg = error_of(loop.advance, loop, 1)
    assert.matches("advance", msg, 1, true)
    assert.are.equal(1, loop:pending())
    assert.are.equal(50, loop:time())
  end)

  for _, case in ipairs{{"a negative", -1}, {"a NaN", 0 / 0}, {"an infinite", math.huge}, {"a string", "1"}} do
    it("advance rejects " .. case[1] .. " dt, naming the function, and leaves the clock alone", function()
      local loop = manual()
      loop:call_later(1, function() end)
      local msg = error_of(loop.advance, loop, case[2])
      assert.matches("advance", msg, 1, true)
      assert.are.equal(0, loop:time())
      assert.are.equal(1, loop:pending())
    end)
  end

  for _, case in ipairs{{"an unknown clock name", "wall"}, {"a number", 5}, {"a table", {}}} do
    it("new_loop rejects " .. case[1] .. " as opts.clock, naming the function", function()
      local msg = error_of(defer.new_loop, {clock = case[2]})
      assert.matches("new_loop", msg, 1, true)
      assert.matches("clock", msg, 1, true)
    end)
  end

  it("new_loop rejects an unknown option, naming the function and the option", function()
    local msg = error_of(defer.new_loop, {clock = "manual", clok = "manual"})
    assert.matches("new_loop", msg, 1, true)
    assert.matches("clok", msg, 1, true)
  end)

  it("new_loop rejects opts that are not a table, naming the function", function()
    local msg = error_of(defer.new_loop, "manual")
    assert.matches("bad argument #1 to 'new_loop'", msg, 1, true)
  end)

  for _, case in ipairs{{"a negative", -1}, {"a fractional", 1.5}, {"a string", "2"}} do
    it("run_once rejects " .. case[1] .. " budget, naming the function, and runs nothing", function()
      local loop = manual()
      local ran = false
      loop:call_soon(function() ran = true end)
      local msg = error_of(loop.run_once, loop, case[2])
      assert.matches("run_once", msg, 1, true)
      assert.is_false(ran)
      assert.are.equal(1, loop:pending())
    end)
  end

  it("on_error rejects a handler that is not a function, naming the function, and keeps the old one", function()
    local loop = manual()
    local handler = function() end
    loop:on_error(handler)
    local msg = error_of(loop.on_error, loop, 42)
    assert.matches("on_error", msg, 1, true)
    assert.are.equal(handler, loop:on_error(handler))
  end)
end)

describe("the loop at scale", function()
  local N = scale(1000000)

  -- The delays 1..n in a random order, the same on every run.
  local function shuffled(n)
    math.randomseed(20240518)
    local t = {}
    for i = 1, n do t[i] = i end
    for i = n, 2, -1 do
      local j = math.random(i)
      t[i], t[j] = t[j], t[i]
    end
    return t
  end

  it("fires " .. N .. " timers made in random order in due order on the manual clock", function()
    local loop = manual()
    local delays = shuffled(N)
    local expected, wrong = 1, 0
    local function fire(delay)
      if delay ~= expected then wrong = wrong + 1 end
      expected = expected + 1
    end
    for i = 1, N do loop:call_later(delays[i], fire, delays[i]) end
    delays = nil
    assert.are.equal(N, loop:pending())
    loop:advance(N)
    assert.are.equal(0, wrong)
    assert.are.equal(N + 1, expected)
    assert.are.equal(0, loop:pending())
  end)

  it("runs " .. N .. " queued calls in the order they were queued", function()
    local loop = manual()
    local expected, wrong = 1, 0
    local function call(i)
      if i ~= expected then wrong = wrong + 1 end
      expected = expected + 1
    end
    for i = 1, N do loop:call_soon(call, i) end
    assert.are.equal(N, loop:run_once())
    assert.are.equal(0, wrong)
    assert.are.equal(N + 1, expected)
  end)

  -- Memory is measured with collectgarbage("count") after a full collection.
  -- It cannot come back to the exact byte: the collector's own bookkeeping,
  -- strings interned on the way and the sizes of tables the spec framework
  -- touched move a little between two measures.  10% of the starting memory
  -- is far below what 1,000,000 waiting handles take (tens of megabytes), so
  -- a leak of the handles, their functions or their arguments still fails.
  local TOLERANCE = 0.10

  it("gives back the memory of " .. N .. " timers once they have fired", function()
    local loop = manual()
    full_collect()
    local before = collectgarbage("count")
    local delays = shuffled(N)
    local function fire() end
    for i = 1, N do loop:call_later(delays[i], fire, delays[i]) end
    delays = nil
    loop:advance(N)
    full_collect()
    local after = collectgarbage("count")
    assert.is_true(after <= before * (1 + TOLERANCE),
      ("memory grew from %.0f KB to %.0f KB"):format(before, after))
  end)

  it("gives back the memory of " .. N .. " queued calls once they have run", function()
    local loop = manual()
    full_collect()
    local before = collectgarbage("count")
    local function call() end
    for i = 1, N do loop:call_soon(call, {i}) end
    loop:run_once()
    full_collect()
    local after = collectgarbage("count")
    assert.is_true(after <= before * (1 + TOLERANCE),
      ("memory grew from %.0f KB to %.0f KB"):format(before, after))
  end)
end)

describe("loop:run() inside a call of the same loop", function()
  it("raises an error that says so, and the loop goes on (it used to spin)", function()
    local loop = defer.new_loop{clock = "manual"}
    local err, ran = nil, false
    loop:on_error(function(e) err = e end)
    loop:call_soon(function() loop:run() end)
    loop:call_soon(function() ran = true end)
    loop:run()
    assert.truthy(tostring(err):find("loop:run() called from inside a call of the same loop", 1, true))
    assert.is_true(ran)
  end)
end)
