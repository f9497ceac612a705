-- d:add_timeout(seconds [, loop]), on a manual clock.  The "as Twisted"
-- specs translate DeferredAddTimeoutTests (timeout 10, advance 15), leaving
-- out the ones about onTimeoutCancel, which this API does not have.
local defer = require "defer"

local ValueError = defer.error_type("ValueError")

local function manual()
  return defer.new_loop{clock = "manual"}
end

-- The result d fired with: ok (true for a success) and the value or Failure.
-- Adding this last handles a failure, so nothing is reported as unhandled.
local function result_of(d)
  local ok, value = nil, nil
  d:add_callbacks(function(v) ok, value = true, v end,
                  function(f) ok, value = false, f end)
  return ok, value
end

local function error_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("d:add_timeout", function()
  it("returns d", function()
    local loop = manual()
    local d = defer.new()
    assert.are.equal(d, d:add_timeout(10, loop))
    d:callback(1)
  end)

  it("puts one timer on the loop, due after the given seconds", function()
    local loop = manual()
    local d = defer.new()
    d:add_timeout(10, loop)
    assert.are.equal(1, loop:pending())
    assert.are.equal(10, loop:next_timeout())
    d:callback(1)
  end)

  it("leaves d pending before the deadline", function()
    local loop = manual()
    local d = defer.new():add_timeout(10, loop)
    loop:advance(9.5)
    assert.are.equal("pending", d:state())
    d:callback(1)
  end)

  it("fails d with a TimeoutError at the deadline", function()
    local loop = manual()
    local d = defer.new():add_timeout(10, loop)
    loop:advance(10)
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.is_true(defer.is_failure(f))
    assert.is_true(defer.is_a(f.value, defer.TimeoutError))
  end)

  it("cancels d at the deadline: its canceller runs once", function()
    local loop = manual()
    local calls = 0
    local d = defer.new(function() calls = calls + 1 end):add_timeout(10, loop)
    loop:advance(15)
    assert.are.equal(1, calls)
    result_of(d)
  end)

  it("removes its timer when d succeeds first", function()
    local loop = manual()
    local d = defer.new():add_timeout(10, loop)
    d:callback("fine")
    assert.are.equal(0, loop:pending())
    assert.is_nil(loop:next_timeout())
  end)

  it("removes its timer when d fails first", function()
    local loop = manual()
    local d = defer.new():add_timeout(10, loop)
    d:errback(ValueError("fail"))
    assert.are.equal(0, loop:pending())
    result_of(d)
  end)

  it("removes its timer at once when d has already fired", function()
    local loop = manual()
    defer.succeed(7):add_timeout(10, loop)
    assert.are.equal(0, loop:pending())
  end)

  it("keeps its timer while a callback added before it waits on another Deferred", function()
    local loop = manual()
    local inner = defer.new()
    local d = defer.new()
    d:add_callback(function() return inner end)
    d:add_timeout(10, loop)
    d:callback("go")
    assert.are.equal(1, loop:pending())
    inner:callback("done")
    assert.are.equal(0, loop:pending())
  end)

  it("times out a callback added before it that waits on another Deferred, cancelling that one", function()
    local loop = manual()
    local inner_cancelled = 0
    local inner = defer.new(function() inner_cancelled = inner_cancelled + 1 end)
    local d = defer.new()
    d:add_callback(function() return inner end)
    d:add_timeout(10, loop)
    d:callback("go")
    loop:advance(10)
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.is_true(defer.is_a(f.value, defer.TimeoutError))
    assert.are.equal(1, inner_cancelled)
  end)

  it("lets the errbacks added after it see the TimeoutError", function()
    local loop = manual()
    local seen
    local d = defer.new():add_timeout(10, loop)
    d:add_errback(function(f) seen = f end)
    loop:advance(10)
    assert.is_truthy(seen:check(defer.TimeoutError))
  end)

  it("lets the errbacks added before it see the CancelledError", function()
    local loop = manual()
    local seen
    local d = defer.new()
    d:add_errback(function(f) seen = f; return f end)
    d:add_timeout(10, loop)
    loop:advance(10)
    result_of(d)
    assert.is_truthy(seen:check(defer.CancelledError))
    assert.is_nil(seen:check(defer.TimeoutError))
  end)

  it("leaves a manual cancel before the deadline a CancelledError", function()
    local loop = manual()
    local d = defer.new():add_timeout(10, loop)
    d:cancel()
    loop:advance(15)
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.is_true(defer.is_a(f.value, defer.CancelledError))
    assert.is_false(defer.is_a(f.value, defer.TimeoutError))
  end)

  it("removes its timer on a manual cancel", function()
    local loop = manual()
    local d = defer.new():add_timeout(10, loop)
    d:cancel()
    assert.are.equal(0, loop:pending())
    result_of(d)
  end)

  it("lets a canceller that calls back win: d succeeds with its value", function()
    local loop = manual()
    local d = defer.new(function(self) self:callback("I was cancelled!") end)
    d:add_timeout(10, loop)
    loop:advance(15)
    assert.are.same({true, "I was cancelled!"}, {result_of(d)})
  end)

  it("lets a canceller that errbacks win: d fails with its error, not a TimeoutError", function()
    local loop = manual()
    local err = ValueError("what!")
    local d = defer.new(function(self) self:errback(err) end)
    d:add_timeout(10, loop)
    loop:advance(15)
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.are.equal(err, f.value)
  end)

  it("works on the default loop when no loop is given", function()
    local before = defer.loop:pending()
    local d = defer.new():add_timeout(0.05)
    assert.are.equal(before + 1, defer.loop:pending())
    local cpu0 = os.clock()
    while os.clock() - cpu0 < 0.06 do end -- 0.06 s of CPU: at least as much real time
    defer.loop:run_once()
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.is_true(defer.is_a(f.value, defer.TimeoutError))
  end)

  it("takes its timer off the default loop when d fires first", function()
    local before = defer.loop:pending()
    local d = defer.new():add_timeout(30)
    d:callback(1)
    assert.are.equal(before, defer.loop:pending())
  end)
end)

describe("d:add_timeout, as Twisted's DeferredAddTimeoutTests", function()
  it("test_timeoutChainable: returns d, so that callbacks chain on", function()
    local loop = manual()
    local d = defer.new()
    d:add_timeout(10, loop):add_callback(function() return "done" end)
    d:callback(nil)
    assert.are.same({true, "done"}, {result_of(d)})
  end)

  it("test_successResultBeforeTimeout: a success first wins and the deadline cancels nothing", function()
    local loop = manual()
    local d = defer.new()
    d:add_timeout(10, loop)
    local inner = defer.new()
    local got
    d:add_callback(function(results) got = results; return inner end)
    d:callback("results")
    assert.are.equal("results", got)
    loop:advance(15)
    assert.are.equal("pending", inner:state())
  end)

  it("test_failureBeforeTimeout: a failure first wins and the deadline cancels nothing", function()
    local loop = manual()
    local d = defer.new()
    d:add_timeout(10, loop)
    local inner = defer.new()
    local err = ValueError("fail")
    local got
    d:add_errback(function(f) got = f; return inner end)
    d:errback(err)
    assert.are.equal(err, got.value)
    loop:advance(15)
    assert.are.equal("pending", inner:state())
  end)

  it("test_timedOut: no result before the deadline, a TimeoutError after it", function()
    local loop = manual()
    local d = defer.new()
    d:add_timeout(10, loop)
    assert.are.equal("pending", d:state())
    loop:advance(15)
    local _, f = result_of(d)
    assert.is_truthy(f:check(defer.TimeoutError))
  end)

  it("test_timedOutProvidedCancelSuccess: the canceller's success is the result", function()
    local loop = manual()
    local d = defer.new(function(self) self:callback("I was cancelled!") end)
    d:add_timeout(10, loop)
    loop:advance(15)
    assert.are.same({true, "I was cancelled!"}, {result_of(d)})
  end)

  it("test_timedOutProvidedCancelFailure: the canceller's failure is the result", function()
    local loop = manual()
    local err = ValueError("what!")
    local d = defer.new(function(self) self:errback(err) end)
    d:add_timeout(10, loop)
    loop:advance(15)
    local _, f = result_of(d)
    assert.are.equal(err, f.value)
  end)

  it("test_cancelBeforeTimeout: the errback sees the CancelledError and the deadline cancels nothing", function()
    local loop = manual()
    local d = defer.new()
    d:add_timeout(10, loop)
    local inner = defer.new()
    local got
    d:add_errback(function(f) got = f; return inner end)
    d:cancel()
    assert.is_true(defer.is_failure(got))
    assert.is_true(defer.is_a(got.value, defer.CancelledError))
    loop:advance(15)
    assert.are.equal("pending", inner:state())
  end)

  it("test_errbackAddedBeforeTimeout: the earlier errback sees a CancelledError, the result is a TimeoutError", function()
    local loop = manual()
    local d = defer.new()
    local seen
    d:add_errback(function(f) seen = f; return f end)
    d:add_timeout(10, loop)
    loop:advance(15)
    assert.is_truthy(seen:check(defer.CancelledError))
    local _, f = result_of(d)
    assert.is_truthy(f:check(defer.TimeoutError))
  end)

  it("test_errbackAddedBeforeTimeoutSuppressesCancellation: an earlier errback that handles it gives a success", function()
    local loop = manual()
    local d = defer.new()
    d:add_errback(function(f) f:trap(defer.CancelledError) end)
    d:add_timeout(10, loop)
    loop:advance(15)
    assert.are.same({true, nil}, {result_of(d)})
  end)

  it("test_callbackAddedToCancelerBeforeTimeout: the earlier callback and the result are the canceller's value", function()
    local loop = manual()
    local success = {"success"}
    local d = defer.new(function(self) self:callback(success) end)
    local seen
    d:add_callback(function(v) seen = v; return v end)
    d:add_timeout(10, loop)
    loop:advance(15)
    assert.are.equal(success, seen)
    local ok, v = result_of(d)
    assert.is_true(ok)
    assert.are.equal(success, v)
  end)
end)

describe("bad input to d:add_timeout", function()
  local bad = {
    {"a negative", -1},
    {"a NaN", 0 / 0},
    {"an infinite", math.huge},
    {"a string", "10"},
    {"a nil", nil},
  }

  for _, case in ipairs(bad) do
    it("rejects " .. case[1] .. " delay at once, naming the function, and schedules nothing", function()
      local loop = manual()
      local d = defer.new()
      local msg = error_of(d.add_timeout, d, case[2], loop)
      assert.matches("bad argument #1 to 'add_timeout'", msg, 1, true)
      assert.are.equal(0, loop:pending())
    end)

    it("rejects " .. case[1] .. " delay and leaves d as it was", function()
      local loop = manual()
      local d = defer.new()
      pcall(d.add_timeout, d, case[2], loop)
      d:callback("untouched")
      assert.are.same({true, "untouched"}, {result_of(d)})
    end)
  end

  it("rejects a loop argument that is not a loop, naming the function", function()
    local d = defer.new()
    local msg = error_of(d.add_timeout, d, 10, {})
    assert.matches("add_timeout", msg, 1, true)
  end)
end)
