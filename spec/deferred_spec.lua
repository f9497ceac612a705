-- The Deferred from the user's side: firing, callbacks and errbacks, the
-- pair semantics of add_callbacks, adding after firing, re-entrancy,
-- AlreadyCalledError, pause/unpause, the helpers succeed/fail/maybe, cancel
-- (Twisted's DeferredCancellerTests, one by one), chain() and tostring.
-- Twisted's tests are named in brackets where one is translated.
local defer = require "defer"
local unpack = table.unpack or unpack

-- The error value that f(...) raises; fails the test when it does not raise.
local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error to be raised")
  return err
end

-- Handles a failed deferred's failure, so that it is not reported as
-- unhandled when the deferred is collected.
local function consume(d)
  d:add_errback(function() end)
end

local function is_cancelled(f)
  return defer.is_failure(f) and defer.is_a(f.value, defer.CancelledError)
end

local GenericError = defer.error_type("GenericError")

describe("a new Deferred", function()
  it("is in the state pending", function()
    assert.are.equal("pending", defer.new():state())
  end)

  it("is not called", function()
    assert.are.equal(false, defer.new().called)
  end)

  it("is not paused", function()
    assert.are.equal(0, defer.new().paused)
  end)

  it("has no result", function()
    assert.is_nil(defer.new().result)
  end)

  it("does not run a callback added before it fires", function()
    local ran = false
    defer.new():add_callback(function() ran = true end)
    assert.is_false(ran)
  end)
end)

describe("firing a Deferred", function()
  it("passes the value alone to a callback added without extra arguments (testCallbackWithoutArgs)", function()
    local got
    local d = defer.new()
    d:add_callback(function(...) got = {n = select("#", ...), ...} end)
    d:callback("hello")
    assert.are.same({n = 1, "hello"}, got)
  end)

  it("passes the extra arguments after the value (testCallbackWithArgs)", function()
    local got
    local d = defer.new()
    d:add_callback(function(...) got = {...} end, "world", 3)
    d:callback("hello")
    assert.are.same({"hello", "world", 3}, got)
  end)

  it("keeps a nil among the extra arguments in its place", function()
    local got
    local d = defer.new()
    d:add_callback(function(...) got = {n = select("#", ...), ...} end, "a", nil, "c")
    d:callback("v")
    assert.are.equal(4, got.n)
    assert.are.equal("v", got[1])
    assert.are.equal("a", got[2])
    assert.is_nil(got[3])
    assert.are.equal("c", got[4])
  end)

  it("gives each callback the extra arguments it was added with", function()
    local seen = {}
    local d = defer.new()
    d:add_callback(function(v, x) seen[#seen + 1] = x return v end, "first")
    d:add_callback(function(v, x) seen[#seen + 1] = x return v end, "second")
    d:callback(0)
    assert.are.same({"first", "second"}, seen)
  end)

  it("gives both callbacks the value when the first returns its input (testTwoCallbacks)", function()
    local seen = {}
    local d = defer.new()
    d:add_callback(function(v) seen[#seen + 1] = v return v end)
    d:add_callback(function(v) seen[#seen + 1] = v return v end)
    d:callback("hello")
    assert.are.same({"hello", "hello"}, seen)
  end)

  it("makes what a callback returns the next callback's input", function()
    local d = defer.new()
    d:add_callback(function(v) return v * 2 end)
    d:add_callback(function(v) return v + 1 end)
    d:callback(5)
    assert.are.equal(11, d.result)
  end)

  it("makes nil the next result when a callback returns nothing", function()
    local seen = "untouched"
    local d = defer.new()
    d:add_callback(function() end)
    d:add_callback(function(v) seen = v return v end)
    d:callback(5)
    assert.is_nil(seen)
    assert.are.equal("success", d:state())
  end)

  it("keeps only the first value a callback returns", function()
    local count
    local d = defer.new()
    d:add_callback(function() return 1, 2, 3 end)
    d:add_callback(function(...) count = select("#", ...) return (...) end)
    d:callback(0)
    assert.are.equal(1, count)
    assert.are.equal(1, d.result)
  end)

  it("runs the callbacks before callback() returns", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function() log[#log + 1] = "callback" end)
    d:callback(1)
    log[#log + 1] = "returned"
    assert.are.same({"callback", "returned"}, log)
  end)

  it("accepts nil as a success value", function()
    local seen = "untouched"
    local d = defer.new()
    d:add_callback(function(v) seen = v end)
    d:callback(nil)
    assert.is_nil(seen)
    assert.are.equal("success", d:state())
    assert.is_true(d.called)
  end)

  it("sets called, the state success and the result", function()
    local d = defer.new()
    d:callback("orange")
    assert.is_true(d.called)
    assert.are.equal("success", d:state())
    assert.are.equal("orange", d.result)
  end)

  it("wraps a plain errback value in a Failure holding it", function()
    local got
    local d = defer.new()
    d:add_errback(function(f) got = f end)
    d:errback("bad")
    assert.is_true(defer.is_failure(got))
    assert.are.equal("bad", got.value)
  end)

  it("wraps an error object given to errback, keeping the object", function()
    local e = GenericError("broken")
    local got
    local d = defer.new()
    d:add_errback(function(f) got = f.value end)
    d:errback(e)
    assert.are.equal(e, got)
  end)

  it("uses a Failure given to errback as it is", function()
    local f = defer.failure("as is")
    local got
    local d = defer.new()
    d:add_errback(function(x) got = x end)
    d:errback(f)
    assert.are.equal(f, got)
  end)

  it("sets the state failure and keeps the Failure object as the result", function()
    local f = defer.failure("kept")
    local d = defer.new()
    d:errback(f)
    assert.is_true(d.called)
    assert.are.equal("failure", d:state())
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("treats callback() with a Failure as errback() with it", function()
    local f = defer.failure("via callback")
    local got
    local d = defer.new()
    d:add_callback(function() got = "callback ran" end)
    d:add_errback(function(x) got = x end)
    d:callback(f)
    assert.are.equal(f, got)
  end)
end)

describe("errbacks", function()
  it("skip the callbacks on a failure and run the next errback", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function() log[#log + 1] = "callback" end)
    d:add_errback(function(f) log[#log + 1] = f.value end)
    d:errback("bad")
    assert.are.same({"bad"}, log)
  end)

  it("send an errback's value back to the callbacks", function()
    local got
    local d = defer.new()
    d:add_errback(function() return "recovered" end)
    d:add_callback(function(v) got = v end)
    d:errback("bad")
    assert.are.equal("recovered", got)
  end)

  it("recover with nil when an errback returns nothing", function()
    local got, ran = "untouched", false
    local d = defer.new()
    d:add_errback(function() end)
    d:add_callback(function(v) ran = true got = v end)
    d:errback("bad")
    assert.is_true(ran)
    assert.is_nil(got)
    assert.are.equal("success", d:state())
  end)

  it("are skipped on success", function()
    local ran = false
    local d = defer.new()
    d:add_errback(function() ran = true end)
    d:callback(3)
    assert.is_false(ran)
    assert.are.equal(3, d.result)
  end)

  it("receive their extra arguments after the Failure", function()
    local got
    local d = defer.new()
    d:add_errback(function(f, a, b) got = {f.value, a, b} end, "x", "y")
    d:errback("bad")
    assert.are.same({"bad", "x", "y"}, got)
  end)

  it("receive their extra arguments when added after the failure", function()
    local got
    defer.fail("bad"):add_errback(function(f, a) got = {f.value, a} end, "x")
    assert.are.same({"bad", "x"}, got)
  end)

  it("pass a new error raised in an errback to the next errback", function()
    local got
    local d = defer.new()
    d:add_errback(function() error("second", 0) end)
    d:add_errback(function(f) got = f.value end)
    d:errback("first")
    assert.are.equal("second", got)
  end)

  it("stay on the error path when an errback returns a Failure", function()
    local f2 = defer.failure("replaced")
    local got
    local d = defer.new()
    d:add_errback(function() return f2 end)
    d:add_callback(function() got = "callback" end)
    d:add_errback(function(f) got = f end)
    d:errback("first")
    assert.are.equal(f2, got)
  end)

  it("keep the failure going when an errback re-raises it", function()
    local f = defer.failure("again")
    local got
    local d = defer.new()
    d:add_errback(function(x) x:raise() end)
    d:add_errback(function(x) got = x end)
    d:errback(f)
    assert.are.equal(f, got)
  end)
end)

describe("add_both", function()
  it("runs its function on success with the value", function()
    local got
    defer.succeed(1):add_both(function(r) got = r end)
    assert.are.equal(1, got)
  end)

  it("runs its function on failure with the Failure", function()
    local f = defer.failure("x")
    local got
    defer.fail(f):add_both(function(r) got = r end)
    assert.are.equal(f, got)
  end)

  it("passes its extra arguments after the result", function()
    local got
    defer.succeed(1):add_both(function(r, a) got = {r, a} end, "extra")
    assert.are.same({1, "extra"}, got)
  end)

  it("passes its extra arguments after the Failure of a deferred that fails later", function()
    local got
    local d = defer.new()
    d:add_both(function(r, a, b) got = {r.value, a, b} end, "x", "y")
    d:errback("bad")
    assert.are.same({"bad", "x", "y"}, got)
  end)
end)

describe("add_callbacks", function()
  it("calls the callback on success and not the errback", function()
    local log = {}
    local d = defer.new()
    d:add_callbacks(function(v) log[#log + 1] = "cb " .. v end,
                    function() log[#log + 1] = "eb" end)
    d:callback(1)
    assert.are.same({"cb 1"}, log)
  end)

  it("calls the errback on failure and not the callback", function()
    local log = {}
    local d = defer.new()
    d:add_callbacks(function() log[#log + 1] = "cb" end,
                    function(f) log[#log + 1] = "eb " .. f.value end)
    d:errback("e")
    assert.are.same({"eb e"}, log)
  end)

  it("passes a failure through a nil errback side to a later errback (test_addCallbacksNoneErrback)", function()
    local f = defer.failure("kept")
    local got
    local d = defer.new()
    d:add_callbacks(function() return "callback ran" end, nil)
    d:add_errback(function(x) got = x end)
    d:errback(f)
    assert.are.equal(f, got)
  end)

  it("passes a value through a nil callback side to a later callback", function()
    local got
    local d = defer.new()
    d:add_callbacks(nil, function() return "errback ran" end)
    d:add_callback(function(v) got = v end)
    d:callback(7)
    assert.are.equal(7, got)
  end)

  it("never feeds the callback's failure to its own errback", function()
    local eb_ran = false
    local d = defer.new()
    d:add_callbacks(function() error("from cb", 0) end, function() eb_ran = true end)
    d:callback(1)
    assert.is_false(eb_ran)
    assert.are.equal("failure", d:state())
    assert.are.equal("from cb", d.result.value)
    consume(d)
  end)

  it("never feeds the errback's value to its own callback", function()
    local cb_ran = false
    local d = defer.new()
    d:add_callbacks(function() cb_ran = true end, function() return "recovered" end)
    d:errback("e")
    assert.is_false(cb_ran)
    assert.are.equal("recovered", d.result)
  end)

  it("differs from add_callback then add_errback, which does feed the failure on", function()
    local eb_got
    local d = defer.new()
    d:add_callback(function() error("from cb", 0) end)
    d:add_errback(function(f) eb_got = f.value end)
    d:callback(1)
    assert.are.equal("from cb", eb_got)
  end)
end)

describe("every add method", function()
  for _, name in ipairs({"add_callback", "add_errback", "add_both"}) do
    it("returns the deferred itself from " .. name, function()
      local d = defer.new()
      assert.are.equal(d, d[name](d, function() end))
    end)
  end

  it("returns the deferred itself from add_callbacks", function()
    local d = defer.new()
    assert.are.equal(d, d:add_callbacks(function() end, function() end))
  end)

  it("returns the deferred itself when adding to a fired deferred", function()
    local d = defer.succeed(1)
    assert.are.equal(d, d:add_callback(function() end))
  end)
end)

describe("callbacks added after firing", function()
  it("run at once, before the add returns (testImmediateSuccess)", function()
    local log = {}
    local d = defer.succeed("success")
    d:add_callback(function(v) log[#log + 1] = v end)
    log[#log + 1] = "returned"
    assert.are.same({"success", "returned"}, log)
  end)

  it("see the result updated in place by the callbacks before them", function()
    local seen = {}
    local d = defer.succeed(5)
    d:add_callback(function(v) return v * 2 end)
    d:add_callback(function(v) seen[#seen + 1] = v end)
    assert.are.same({10}, seen)
    assert.is_nil(d.result)
  end)

  it("leave their return value as the result", function()
    local d = defer.succeed(5)
    d:add_callback(function(v) return v + 1 end)
    assert.are.equal(6, d.result)
  end)

  it("run an errback added after a failure at once", function()
    local got
    local d = defer.fail("late")
    d:add_errback(function(f) got = f.value return "handled" end)
    assert.are.equal("late", got)
    assert.are.equal("handled", d.result)
    assert.are.equal("success", d:state())
  end)

  it("skip a callback added after a failure and keep the same Failure", function()
    local f = defer.failure("still")
    local ran = false
    local d = defer.fail(f)
    d:add_callback(function() ran = true end)
    assert.is_false(ran)
    assert.are.equal(f, d.result)
    consume(d)
  end)
end)

describe("re-entrancy", function()
  it("runs a callback added inside a running callback after it, in order (test_reentrantRunCallbacks)", function()
    local called = {}
    local d = defer.new()
    d:add_callback(function(v)
      called[#called + 1] = 1
      d:add_callback(function(x) called[#called + 1] = 3 return x end)
      called[#called + 1] = "1end"
      return v
    end)
    d:add_callback(function(v) called[#called + 1] = 2 return v end)
    d:callback("x")
    assert.are.same({1, "1end", 2, 3}, called)
  end)

  it("does not run a callback added inside a running callback before that one returns (test_nonReentrantCallbacks)", function()
    local called = {}
    local inside
    local d = defer.new()
    d:add_callback(function(v)
      called[#called + 1] = 1
      d:add_callback(function() called[#called + 1] = 2 end)
      inside = {unpack(called)}
      return v
    end)
    d:callback(0)
    assert.are.same({1}, inside)
    assert.are.same({1, 2}, called)
  end)

  it("runs several callbacks added inside a running callback in the order added", function()
    local called = {}
    local d = defer.new()
    d:add_callback(function(v)
      d:add_callback(function(x) called[#called + 1] = "a" return x end)
      d:add_callback(function(x) called[#called + 1] = "b" return x end)
      d:add_callback(function(x) called[#called + 1] = "c" return x end)
      return v
    end)
    d:callback(0)
    assert.are.same({"a", "b", "c"}, called)
  end)

  it("gives a callback added inside a running callback that callback's return value", function()
    local got
    local d = defer.new()
    d:add_callback(function(v)
      d:add_callback(function(x) got = x end)
      return v + 1
    end)
    d:callback(1)
    assert.are.equal(2, got)
  end)

  it("fails the deferred with the error of a callback added re-entrantly (test_reentrantRunCallbacksWithFailure)", function()
    local d = defer.new()
    d:add_callback(function(v)
      d:add_callback(function() error("re-entrant", 0) end)
      return v
    end)
    d:callback(1)
    assert.are.equal("failure", d:state())
    assert.are.equal("re-entrant", d.result.value)
    consume(d)
  end)

  it("raises AlreadyCalledError when a callback calls back its own deferred", function()
    local err
    local d = defer.new()
    d:add_callback(function(v)
      local ok, e = pcall(d.callback, d, 2)
      err = not ok and e or "no error"
      return v
    end)
    d:callback(1)
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
  end)

  it("raises AlreadyCalledError when a callback errbacks its own deferred", function()
    local err
    local d = defer.new()
    d:add_callback(function(v)
      local ok, e = pcall(d.errback, d, "again")
      err = not ok and e or "no error"
      return v
    end)
    d:callback(1)
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
  end)

  it("goes on with the chain after a callback caught the AlreadyCalledError of firing its own deferred", function()
    local d = defer.new()
    d:add_callback(function(v) pcall(d.callback, d, 99) return v + 1 end)
    d:add_callback(function(v) return v * 10 end)
    d:callback(1)
    assert.are.equal(20, d.result)
  end)

  it("runs another deferred's callbacks before firing it from a callback returns", function()
    local log = {}
    local other = defer.new()
    other:add_callback(function(v) log[#log + 1] = "other " .. v end)
    local d = defer.new()
    d:add_callback(function()
      log[#log + 1] = "before"
      other:callback(1)
      log[#log + 1] = "after"
    end)
    d:add_callback(function() log[#log + 1] = "next" end)
    d:callback(0)
    assert.are.same({"before", "other 1", "after", "next"}, log)
  end)

  it("lets the other deferred fired from a callback fire a third one too", function()
    local log = {}
    local third = defer.new():add_callback(function(v) log[#log + 1] = "third " .. v end)
    local other = defer.new():add_callback(function(v)
      third:callback(v + 1)
      log[#log + 1] = "other " .. v
    end)
    local d = defer.new():add_callback(function(v)
      other:callback(v + 1)
      log[#log + 1] = "d " .. v
    end)
    d:callback(1)
    assert.are.same({"third 3", "other 2", "d 1"}, log)
  end)
end)

describe("firing twice", function()
  local cases = {
    {"callback", "callback", "CC"}, {"callback", "errback", "CE"},
    {"errback", "callback", "EC"}, {"errback", "errback", "EE"},
  }
  for _, case in ipairs(cases) do
    local first, second, tag = case[1], case[2], case[3]

    it(("raises AlreadyCalledError for %s then %s (testAlreadyCalled_%s)"):format(first, second, tag), function()
      local d = defer.new()
      d[first](d, "first")
      local err = raised(d[second], d, "second")
      assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
      consume(d)
    end)

    it(("keeps the first result and does not rerun callbacks for %s then %s"):format(first, second), function()
      local runs = 0
      local d = defer.new()
      d:add_both(function(r) runs = runs + 1 return r end)
      d[first](d, "first")
      pcall(d[second], d, "second")
      assert.are.equal(1, runs)
      if first == "callback" then
        assert.are.equal("first", d.result)
      else
        assert.are.equal("first", d.result.value)
        consume(d)
      end
    end)
  end
end)

describe("pause and unpause", function()
  it("count pauses in d.paused", function()
    local d = defer.new()
    d:pause()
    d:pause()
    assert.are.equal(2, d.paused)
    d:unpause()
    assert.are.equal(1, d.paused)
  end)

  it("hold the callbacks of a fired deferred until unpaused", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function(v) log[#log + 1] = v end)
    d:pause()
    d:callback("v")
    assert.are.same({}, log)
    d:unpause()
    assert.are.same({"v"}, log)
  end)

  it("need as many unpauses as pauses", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function(v) log[#log + 1] = v end)
    d:pause()
    d:pause()
    d:callback("v")
    d:unpause()
    assert.are.same({}, log)
    d:unpause()
    assert.are.same({"v"}, log)
  end)

  it("hold an errback added while paused until unpaused (testPausedFailure)", function()
    local log = {}
    local d = defer.new()
    d:pause()
    d:errback("x")
    d:add_errback(function(f) log[#log + 1] = f.value end)
    assert.are.same({}, log)
    d:unpause()
    assert.are.same({"x"}, log)
  end)

  it("hold a callback added to a paused fired deferred and keep the result", function()
    local ran = false
    local d = defer.succeed(4)
    d:pause()
    d:add_callback(function() ran = true return 5 end)
    assert.is_false(ran)
    assert.are.equal(4, d.result)
    d:unpause()
    assert.is_true(ran)
    assert.are.equal(5, d.result)
  end)

  it("before firing do not stop the callbacks from running on fire (testUnpauseBeforeCallback)", function()
    local got
    local d = defer.new()
    d:pause()
    d:add_callback(function(v) got = v end)
    d:unpause()
    d:callback(1)
    assert.are.equal(1, got)
  end)

  it("leave a pending deferred pending on unpause", function()
    local d = defer.new()
    d:pause()
    d:unpause()
    assert.are.equal("pending", d:state())
    assert.are.equal(0, d.paused)
  end)

  it("raise an error naming unpause on an unpause without a pause", function()
    local err = raised(function() defer.new():unpause() end)
    assert.truthy(string.find(tostring(err), "unpause", 1, true))
  end)

  it("leave the count at 0 after an unpause without a pause, so callbacks still run", function()
    local got
    local d = defer.new()
    pcall(d.unpause, d)
    assert.are.equal(0, d.paused)
    d:add_callback(function(v) got = v end)
    d:callback("runs")
    assert.are.equal("runs", got)
  end)

  it("raise on a second unpause after one pause", function()
    local d = defer.new()
    d:pause()
    d:unpause()
    local err = raised(d.unpause, d)
    assert.truthy(string.find(tostring(err), "unpause", 1, true))
    assert.are.equal(0, d.paused)
  end)
end)

describe("the state", function()
  it("turns to failure when a callback raises", function()
    local d = defer.new():add_callback(function() error("x", 0) end)
    d:callback(1)
    assert.are.equal("failure", d:state())
    consume(d)
  end)

  it("turns back to success when an errback recovers", function()
    local d = defer.fail("x")
    assert.are.equal("failure", d:state())
    d:add_errback(function() return "fine" end)
    assert.are.equal("success", d:state())
  end)

  it("stays called once fired, whatever the callbacks do", function()
    local d = defer.succeed(1)
    d:add_callback(function() error("x", 0) end)
    d:add_errback(function() end)
    assert.is_true(d.called)
  end)

  it("is given by d.called as a boolean", function()
    local d = defer.new()
    assert.are.equal("boolean", type(d.called))
    d:callback(1)
    assert.are.equal(true, d.called)
  end)
end)

describe("succeed", function()
  it("gives a fired deferred with the value", function()
    local d = defer.succeed(3)
    assert.is_true(d.called)
    assert.are.equal("success", d:state())
    assert.are.equal(3, d.result)
    assert.are.equal(0, d.paused)
  end)

  it("matches a deferred fired by hand (test_succeedMatchesManualSuccess)", function()
    local a = defer.succeed("x")
    local b = defer.new()
    b:callback("x")
    assert.are.equal(b.called, a.called)
    assert.are.equal(b.paused, a.paused)
    assert.are.equal(b.result, a.result)
    assert.are.equal(b:state(), a:state())
  end)

  it("runs a callback added to it at once with the value", function()
    local got
    defer.succeed({1, 2}):add_callback(function(v) got = v end)
    assert.are.same({1, 2}, got)
  end)
end)

describe("fail", function()
  it("gives a failed deferred whose Failure holds the value (testImmediateFailure)", function()
    local got
    local d = defer.fail("fail")
    assert.is_true(d.called)
    assert.are.equal("failure", d:state())
    d:add_errback(function(f) got = f.value end)
    assert.are.equal("fail", got)
  end)

  it("keeps a Failure given to it as the same object", function()
    local f = defer.failure("same")
    local d = defer.fail(f)
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("keeps an error object given to it as the Failure's value", function()
    local e = GenericError("fail")
    local d = defer.fail(e)
    assert.are.equal(e, d.result.value)
    consume(d)
  end)
end)

describe("maybe", function()
  it("calls the function at once with the arguments", function()
    local got
    defer.maybe(function(...) got = {...} end, 1, "two")
    assert.are.same({1, "two"}, got)
  end)

  it("gives a fired deferred with a plain return value (test_maybeDeferredSyncWithArgs)", function()
    local d = defer.maybe(function(x) return x + 5 end, 10)
    assert.are.equal("success", d:state())
    assert.are.equal(15, d.result)
  end)

  it("returns the very Deferred the function returned (test_maybeDeferredAsync)", function()
    local inner = defer.new()
    local d = defer.maybe(function() return inner end)
    assert.are.equal(inner, d)
  end)

  it("lets a returned Deferred fire later as usual", function()
    local inner = defer.new()
    local got
    defer.maybe(function() return inner end):add_callback(function(v) got = v end)
    inner:callback("Success")
    assert.are.equal("Success", got)
  end)

  it("gives a failed deferred with the same Failure the function returned (test_maybeDeferredSyncFailure)", function()
    local f = defer.failure("returned")
    local d = defer.maybe(function() return f end)
    assert.are.equal("failure", d:state())
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("gives a failed deferred holding what the function raised (test_maybeDeferredSyncException)", function()
    local e = GenericError("raised")
    local d = defer.maybe(function() error(e) end)
    assert.are.equal("failure", d:state())
    assert.are.equal(e, d.result.value)
    consume(d)
  end)

  it("gives a failed deferred holding a string the function raised", function()
    local d = defer.maybe(function() error("raised here") end)
    assert.are.equal("failure", d:state())
    assert.truthy(string.find(d.result.value, "raised here", 1, true))
    consume(d)
  end)

  it("gives a fired deferred with nil when the function returns nothing", function()
    local d = defer.maybe(function() end)
    assert.are.equal("success", d:state())
    assert.is_nil(d.result)
  end)
end)

describe("cancel", function()
  it("errbacks with a CancelledError and skips the callback without a canceller (test_noCanceller)", function()
    local cb_ran, eb_got = false, nil
    local d = defer.new()
    d:add_callbacks(function() cb_ran = true end, function(f) eb_got = f end)
    d:cancel()
    assert.is_false(cb_ran)
    assert.is_true(is_cancelled(eb_got))
  end)

  it("makes the default result a Failure whose value is a CancelledError", function()
    local d = defer.new()
    d:cancel()
    assert.are.equal("failure", d:state())
    assert.is_true(is_cancelled(d.result))
    consume(d)
  end)

  it("swallows one late callback without a canceller, keeping the CancelledError", function()
    local d = defer.new()
    d:cancel()
    local f = d.result
    d:callback("late")
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("raises AlreadyCalledError on a second late callback without a canceller (test_raisesAfterCancelAndCallback)", function()
    local d = defer.new()
    d:cancel()
    d:callback("late")
    local err = raised(d.callback, d, "later")
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    consume(d)
  end)

  it("raises AlreadyCalledError on an errback after the swallowed callback", function()
    local d = defer.new()
    d:cancel()
    d:callback("late")
    local err = raised(d.errback, d, "later")
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    consume(d)
  end)

  it("swallows one late errback without a canceller and raises on the next (test_raisesAfterCancelAndErrback)", function()
    local d = defer.new()
    d:cancel()
    d:errback(GenericError("late"))
    assert.is_true(is_cancelled(d.result))
    local err = raised(d.callback, d, "later")
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    consume(d)
  end)

  it("keeps the same failure on cancel, late callback, cancel (test_noCancellerMultipleCancelsAfterCancelAndCallback)", function()
    local d = defer.new()
    d:cancel()
    local f = d.result
    d:callback("swallowed")
    d:cancel()
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("keeps the same CancelledError on cancel, late errback, cancel (test_noCancellerMultipleCancelsAfterCancelAndErrback)", function()
    local d = defer.new()
    d:cancel()
    local f = d.result
    d:errback(GenericError("swallowed"))
    assert.is_true(is_cancelled(d.result))
    d:cancel()
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("keeps the same failure object on a second cancel (test_noCancellerMultipleCancel)", function()
    local d = defer.new()
    d:cancel()
    local f = d.result
    d:cancel()
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("calls a canceller that does nothing once over two cancels (test_cancellerMultipleCancel)", function()
    local calls = 0
    local d = defer.new(function() calls = calls + 1 end)
    d:cancel()
    local f = d.result
    d:cancel()
    assert.are.equal(1, calls)
    assert.is_true(is_cancelled(d.result))
    assert.are.equal(f, d.result)
    consume(d)
  end)

  it("errbacks with a CancelledError after a canceller that did not fire it (test_simpleCanceller)", function()
    local calls = 0
    local d = defer.new(function() calls = calls + 1 end)
    d:cancel()
    assert.are.equal(1, calls)
    assert.is_true(is_cancelled(d.result))
    consume(d)
  end)

  it("raises AlreadyCalledError on a late callback when there is a canceller", function()
    local d = defer.new(function() end)
    d:cancel()
    local err = raised(d.callback, d, "late")
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    consume(d)
  end)

  it("raises AlreadyCalledError on a late errback when there is a canceller", function()
    local d = defer.new(function() end)
    d:cancel()
    local err = raised(d.errback, d, "late")
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    consume(d)
  end)

  it("passes the deferred itself to the canceller (test_cancellerArg)", function()
    local arg
    local d = defer.new(function(x) arg = x end)
    d:cancel()
    assert.are.equal(d, arg)
    consume(d)
  end)

  it("does not call the canceller of a deferred already called back (test_cancelAfterCallback)", function()
    local calls = 0
    local d = defer.new(function() calls = calls + 1 end)
    d:callback("biff!")
    d:cancel()
    assert.are.equal(0, calls)
    assert.are.equal("biff!", d.result)
  end)

  it("leaves a deferred already errbacked with its error (test_cancelAfterErrback)", function()
    local calls = 0
    local e = GenericError("first")
    local d = defer.new(function() calls = calls + 1 end)
    d:errback(e)
    d:cancel()
    assert.are.equal(0, calls)
    assert.are.equal(e, d.result.value)
    consume(d)
  end)

  it("lets a canceller's errback win over the CancelledError (test_cancellerThatErrbacks)", function()
    local e = GenericError("own")
    local got
    local d = defer.new(function(x) x:errback(e) end)
    d:add_errback(function(f) got = f.value end)
    d:cancel()
    assert.are.equal(e, got)
  end)

  it("lets a canceller's callback win, with no errback run (test_cancellerThatCallbacks)", function()
    local cb_got, eb_ran = nil, false
    local d = defer.new(function(x) x:callback("hello!") end)
    d:add_callbacks(function(v) cb_got = v end, function() eb_ran = true end)
    d:cancel()
    assert.are.equal("hello!", cb_got)
    assert.is_false(eb_ran)
  end)

  it("cancels the deferred a fired one waits on, not its own canceller (test_cancelNestedDeferred)", function()
    local inner_calls, outer_calls = 0, 0
    local b = defer.new(function() inner_calls = inner_calls + 1 end)
    local a = defer.new(function() outer_calls = outer_calls + 1 end)
    a:add_callback(function() return b end)
    a:callback(1)
    a:cancel()
    assert.are.equal(1, inner_calls)
    assert.are.equal(0, outer_calls)
    consume(a)
  end)

  it("gives the outer deferred the inner one's CancelledError when it waited on it", function()
    local b = defer.new()
    local a = defer.new()
    a:add_callback(function() return b end)
    a:callback(1)
    a:cancel()
    assert.is_true(is_cancelled(a.result))
    consume(a)
  end)

  it("gives the outer deferred what the inner canceller fired it with", function()
    local b = defer.new(function(x) x:callback("from inner canceller") end)
    local a = defer.new()
    a:add_callback(function() return b end)
    a:callback(1)
    a:cancel()
    assert.are.equal("from inner canceller", a.result)
  end)
end)

describe("chain", function()
  it("fires the other deferred with the success value", function()
    local a, b = defer.new(), defer.new()
    local got
    b:add_callback(function(v) got = v end)
    a:chain(b)
    a:callback("v")
    assert.are.equal("v", got)
  end)

  it("fires the other deferred with the same Failure", function()
    local f = defer.failure("e")
    local a, b = defer.new(), defer.new()
    local got
    b:add_errback(function(x) got = x end)
    a:chain(b)
    a:errback(f)
    assert.are.equal(f, got)
  end)

  it("leaves nil as the result after a success", function()
    local a, b = defer.new(), defer.new()
    a:chain(b)
    a:callback("v")
    assert.is_nil(a.result)
    assert.are.equal("success", a:state())
  end)

  it("leaves nil as a success result after a failure", function()
    local a, b = defer.new(), defer.new()
    a:chain(b)
    a:errback("e")
    assert.is_nil(a.result)
    assert.are.equal("success", a:state())
    consume(b)
  end)

  it("gives later callbacks on the first deferred nil", function()
    local a, b = defer.new(), defer.new()
    local got = "untouched"
    a:chain(b)
    a:add_callback(function(v) got = v end)
    a:callback("v")
    assert.is_nil(got)
  end)

  it("fires the other deferred at once when the first already fired", function()
    local b = defer.new()
    defer.succeed(8):chain(b)
    assert.are.equal(8, b.result)
  end)

  it("fires the other deferred with the result of the callbacks before it", function()
    local a, b = defer.new(), defer.new()
    a:add_callback(function(v) return v * 3 end)
    a:chain(b)
    a:callback(2)
    assert.are.equal(6, b.result)
  end)

  it("runs the other deferred's callbacks before the firing call returns", function()
    local log = {}
    local a, b = defer.new(), defer.new()
    b:add_callback(function(v) log[#log + 1] = "b " .. v end)
    a:chain(b)
    a:callback(1)
    log[#log + 1] = "returned"
    assert.are.same({"b 1", "returned"}, log)
  end)
end)

describe("tostring of a Deferred", function()
  it("starts with <Deferred", function()
    assert.are.equal(1, (string.find(tostring(defer.new()), "<Deferred", 1, true)))
  end)

  it("says pending while pending", function()
    assert.truthy(string.find(tostring(defer.new()), "pending", 1, true))
  end)

  it("shows the current result after success (test_reprWithResult)", function()
    assert.truthy(string.find(tostring(defer.succeed("orange")), "current result: orange", 1, true))
  end)

  it("shows a number result with tostring of the number", function()
    local s = tostring(defer.succeed(7))
    assert.truthy(string.find(s, "current result: " .. tostring(7), 1, true))
  end)

  it("says waiting on while chained to an unfired deferred (test_reprWithChaining)", function()
    local inner = defer.new()
    local outer = defer.succeed(1):add_callback(function() return inner end)
    assert.truthy(string.find(tostring(outer), "waiting on", 1, true))
  end)

  it("stops saying waiting on once the chained deferred fired", function()
    local inner = defer.new()
    local outer = defer.succeed(1):add_callback(function() return inner end)
    inner:callback("done")
    local s = tostring(outer)
    assert.is_nil(string.find(s, "waiting on", 1, true))
    assert.truthy(string.find(s, "current result: done", 1, true))
  end)
end)
