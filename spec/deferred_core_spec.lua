-- The Deferred and the Failure, from the user's side: firing, callbacks,
-- chaining, pause, cancel, errors, unhandled failures, bad input, depth and
-- yields.  Twisted's own tests are named where one is translated.
local defer = require "defer"
local helpers = require "helpers"
local scale, errmsg, with_unhandled = helpers.scale, helpers.errmsg, helpers.with_unhandled
local PUC51 = _VERSION == "Lua 5.1" and not rawget(_G, "jit")



describe("a Deferred", function()
  it("is pending until fired", function()
    local d = defer.new()
    assert.are.equal("pending", d:state())
    assert.is_false(d.called)
    assert.is_nil(d.result)
    assert.are.equal(0, d.paused)
  end)

  it("passes the value to its callback with the extra arguments after it (testCallbackWithArgs)", function()
    local got
    local d = defer.new():add_callback(function(...) got = {...} end, "world", 3)
    d:callback("hello")
    assert.are.same({"hello", "world", 3}, got)
  end)

  it("keeps every entry's function, side and extra arguments in a long mixed chain", function()
    local log = {}
    local function note(tag) return function(v, ...) log[#log + 1] = {tag, v, ...} return v end end
    local function raise(v) error({v}) end
    local d = defer.new()
    d:add_callback(note("cb"))
    d:add_callback(note("cb+"), "x", false, nil, 4)
    d:add_errback(note("eb"), "never")
    d:add_callbacks(note("pair"), note("pair eb"))
    d:add_callbacks(nil, note("nil cb"))
    d:add_callback(raise)
    d:add_callback(note("skipped"), 1)
    d:add_errback(function(f, a, b) log[#log + 1] = {"eb+", f.value[1], a, b} return "back" end, "y", 2)
    d:add_both(note("both"), false)
    d:callback(7)
    assert.are.same({{"cb", 7}, {"cb+", 7, "x", false, nil, 4}, {"pair", 7},
                     {"eb+", 7, "y", 2}, {"both", "back", false}}, log)
    assert.are.equal("back", d.result)
  end)

  it("makes what a callback returns the next result, nil included", function()
    local d = defer.new()
    d:add_callback(function(v) return v * 2 end)
    d:add_callback(function() return nil end)
    d:callback(5)
    assert.are.equal("success", d:state())
    assert.is_nil(d.result)
  end)

  it("runs callbacks added after firing at once, on the current result", function()
    local d = defer.succeed(5)
    local log = {}
    d:add_callback(function(v) return v * 2 end)
    d:add_callback(function(v) log[#log + 1] = v end)
    assert.are.same({10}, log)
    assert.is_nil(d.result)
  end)

  it("returns itself from every add method", function()
    local d = defer.new()
    assert.are.equal(d, d:add_callback(print))
    assert.are.equal(d, d:add_errback(print))
    assert.are.equal(d, d:add_both(print))
    assert.are.equal(d, d:add_callbacks(print, print))
  end)

  it("sends a failure to the next errback and an errback's value back to the callbacks", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function() log[#log + 1] = "skipped" end)
    d:add_errback(function(f) log[#log + 1] = f.value; return "recovered" end)
    d:add_callback(function(v) log[#log + 1] = v end)
    d:errback("bad")
    assert.are.same({"bad", "recovered"}, log)
  end)

  it("runs add_both on success and on failure", function()
    local seen = {}
    defer.succeed(1):add_both(function(r) seen[#seen + 1] = r end)
    defer.fail("x"):add_both(function(r) seen[#seen + 1] = defer.is_failure(r) end)
    assert.are.same({1, true}, seen)
  end)

  it("treats add_callbacks(cb, eb) as alternatives: cb's failure never reaches eb", function()
    local eb_called = false
    local d = defer.new()
    d:add_callbacks(function() error("from cb", 0) end, function() eb_called = true end)
    d:callback(1)
    assert.is_false(eb_called)
    assert.are.equal("failure", d:state())
    d:add_errback(function() end)
  end)

  it("passes the result through a nil side of add_callbacks (test_addCallbacksNoneErrback)", function()
    local f = defer.failure("kept")
    local seen
    local d = defer.new()
    d:add_callbacks(function() end, nil)
    d:add_errback(function(x) seen = x end)
    d:errback(f)
    assert.are.equal(f, seen)
    local v
    defer.new():add_callbacks(nil, function() end):add_callback(function(x) v = x end):callback(7)
    assert.are.equal(7, v)
  end)

  it("turns any value a callback raises into a Failure holding exactly that value", function()
    local values = {"plain", {code = 42}, defer.TimeoutError("late"), 17}
    for _, v in ipairs(values) do
      local got
      defer.succeed(1):add_callback(function() error(v, 0) end)
        :add_errback(function(f) got = f.value end)
      assert.are.equal(v, got)
    end
  end)

  it("turns a returned Failure into the failure result (test_callbackMaybeReturnsFailure)", function()
    local f = defer.failure("returned")
    local got
    defer.succeed(1):add_callback(function() return f end):add_errback(function(x) got = x end)
    assert.are.equal(f, got)
  end)

  it("gives a Failure raised in a callback a traceback naming where", function()
    local function raiser() error("deep", 0) end
    local tb
    defer.succeed(1):add_callback(function() raiser() end)
      :add_errback(function(f) tb = f.traceback end)
    assert.are.equal("string", type(tb))
    assert.truthy(tb:find("stack traceback", 1, true))
    assert.truthy(tb:find("deferred_core_spec", 1, true))
  end)

  it("runs a callback added from inside a running callback after it (test_reentrantRunCallbacks)", function()
    local called = {}
    local d = defer.new()
    d:add_callback(function(v)
      called[#called + 1] = 1
      d:add_callback(function() called[#called + 1] = 3 end)
      called[#called + 1] = "1end"
      return v
    end)
    d:add_callback(function(v) called[#called + 1] = 2 return v end)
    d:callback("x")
    assert.are.same({1, "1end", 2, 3}, called)
  end)

  it("sends the error of a callback added re-entrantly down the chain (test_reentrantRunCallbacksWithFailure)", function()
    local d = defer.new()
    d:add_callback(function(v)
      d:add_callback(function() error("re-entrant", 0) end)
      return v
    end)
    d:callback(1)
    assert.are.equal("re-entrant", d.result.value)
    d:add_errback(function() end)
  end)

  it("raises AlreadyCalledError when a callback fires its own deferred", function()
    local err
    local d = defer.new()
    d:add_callback(function() err = select(2, pcall(d.callback, d, 2)) end)
    d:callback(1)
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
  end)

  it("runs another deferred's callbacks before firing it returns", function()
    local log = {}
    local other = defer.new():add_callback(function() log[#log + 1] = "other" end)
    defer.new():add_callback(function()
      other:callback(1)
      log[#log + 1] = "after"
    end):callback(0)
    assert.are.same({"other", "after"}, log)
  end)

  for _, case in ipairs({{"callback", "callback"}, {"callback", "errback"},
                         {"errback", "callback"}, {"errback", "errback"}}) do
    it(("raises AlreadyCalledError for %s then %s and keeps the first result"):format(case[1], case[2]), function()
      local d = defer.new()
      d[case[1]](d, "first")
      local err = errmsg(d[case[2]], d, "second")
      assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
      if case[1] == "callback" then assert.are.equal("first", d.result)
      else assert.are.equal("first", d.result.value) d:add_errback(function() end) end
    end)
  end

  it("rejects a Deferred as a result: return it from a callback to chain", function()
    local d = defer.new()
    local err = errmsg(d.callback, d, defer.new())
    assert.truthy(err:find("callback", 1, true))
    assert.are.equal("pending", d:state())
  end)

  describe("pause", function()
    it("holds callbacks until unpaused, counting pauses (testPausedFailure)", function()
      local log = {}
      local d = defer.new()
      d:pause()
      d:pause()
      d:add_errback(function() log[#log + 1] = "eb" end)
      d:errback("x")
      assert.are.same({}, log)
      d:unpause()
      assert.are.same({}, log)
      d:unpause()
      assert.are.same({"eb"}, log)
    end)

    it("does not mind pause and unpause before firing (testUnpauseBeforeCallback)", function()
      local d = defer.new()
      d:pause()
      d:add_callback(function() end)
      d:unpause()
      d:callback(1)
      assert.are.equal("success", d:state())
    end)

    it("raises on unpause without a matching pause", function()
      local err = errmsg(defer.new().unpause, defer.new())
      assert.truthy(err:find("unpause", 1, true))
    end)
  end)

  describe("chain", function()
    it("fires the other deferred with the result and passes nil on", function()
      local a, b = defer.new(), defer.new()
      a:chain(b)
      a:callback("v")
      assert.are.equal("v", b.result)
      assert.is_nil(a.result)
    end)

    it("fires the other deferred with a failure", function()
      local a, b = defer.new(), defer.new()
      a:chain(b)
      a:errback("e")
      assert.are.equal("e", b.result.value)
      assert.are.equal("success", a:state())
      b:add_errback(function() end)
    end)
  end)

  describe("cancel", function()
    it("errbacks with a CancelledError without a canceller (test_noCanceller)", function()
      local d = defer.new()
      local cb = false
      d:add_callback(function() cb = true end)
      d:cancel()
      assert.is_false(cb)
      assert.is_true(defer.is_a(d.result.value, defer.CancelledError))
      d:add_errback(function() end)
    end)

    it("swallows one late fire after a cancel without canceller, not a second (test_raisesAfterCancelAndCallback)", function()
      local d = defer.new()
      d:cancel()
      d:add_errback(function() end)
      d:callback("late")
      local err = errmsg(d.errback, d, "later")
      assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    end)

    it("raises on deferreds that wait on each other in a cycle, and changes nothing", function()
      -- d -> a -> b -> c -> a: each callback returns the next, pending
      local a, b, c, d = defer.new(), defer.new(), defer.new(), defer.new()
      a:add_callback(function() return b end)
      b:add_callback(function() return c end)
      c:add_callback(function() return a end)
      d:add_callback(function() return a end)
      a:callback(1)
      b:callback(2)
      c:callback(3)
      d:callback(4)
      local function look()
        local t = {}
        for i, x in ipairs({a, b, c, d}) do t[i] = {x:state(), x.called, x.paused} end
        return t
      end
      local before = look()
      assert.are.same({"pending", true, 1}, before[1]) -- fired, waiting
      for _, x in ipairs({d, a, c}) do
        local err = errmsg(x.cancel, x)
        assert.matches("'cancel'.*cycle", tostring(err))
      end
      assert.are.same(before, look())
    end)

    it("keeps the same failure on a second cancel (test_noCancellerMultipleCancel)", function()
      local d = defer.new()
      d:cancel()
      local f = d.result
      d:cancel()
      assert.are.equal(f, d.result)
      d:add_errback(function() end)
    end)

    it("calls the canceller once, with the deferred, and then raises on a late fire (test_simpleCanceller, test_cancellerArg)", function()
      local calls, arg = 0, nil
      local d = defer.new(function(x) calls = calls + 1 arg = x end)
      d:cancel()
      d:cancel()
      assert.are.equal(1, calls)
      assert.are.equal(d, arg)
      assert.is_true(defer.is_a(d.result.value, defer.CancelledError))
      assert.is_true(defer.is_a(errmsg(d.callback, d, 1), defer.AlreadyCalledError))
      d:add_errback(function() end)
    end)

    it("lets the canceller's own callback or errback win (test_cancellerThatCallbacks/Errbacks)", function()
      local d = defer.new(function(x) x:callback("hello!") end)
      d:cancel()
      assert.are.equal("hello!", d.result)
      local e = defer.new(function(x) x:errback("own") end)
      e:cancel()
      assert.are.equal("own", e.result.value)
      e:add_errback(function() end)
    end)

    it("does nothing on a fired deferred (test_cancelAfterCallback)", function()
      local called = false
      local d = defer.new(function() called = true end)
      d:callback("biff!")
      d:cancel()
      assert.is_false(called)
      assert.are.equal("biff!", d.result)
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
      assert.is_true(defer.is_a(a.result.value, defer.CancelledError))
      a:add_errback(function() end)
    end)

    it("lets an error of the canceller reach the caller and leaves the deferred pending", function()
      local d = defer.new(function() error("canceller broke", 0) end)
      assert.are.equal("canceller broke", errmsg(d.cancel, d))
      assert.are.equal("pending", d:state())
    end)
  end)

  it("has helpers for fired deferreds: succeed, fail and maybe", function()
    assert.are.equal(3, defer.succeed(3).result)
    local f = defer.fail("no")
    assert.are.equal("no", f.result.value)
    f:add_errback(function() end)
    local d = defer.new()
    assert.are.equal(d, defer.maybe(function() return d end))
    assert.are.equal(15, defer.maybe(function(x) return x + 5 end, 10).result)
    local failure = defer.failure("given")
    local m = defer.maybe(function() return failure end)
    assert.are.equal(failure, m.result)
    m:add_errback(function() end)
    local r = defer.maybe(function() error("raised", 0) end)
    assert.are.equal("raised", r.result.value)
    r:add_errback(function() end)
  end)

  it("names its state in tostring", function()
    local d = defer.new()
    assert.truthy(tostring(d):find("pending", 1, true))
    assert.truthy(tostring(defer.succeed(7)):find("current result: 7", 1, true))
    local outer = defer.succeed(1):add_callback(function() return d end)
    assert.truthy(tostring(outer):find("waiting on", 1, true))
  end)
end)

describe("chaining on a returned Deferred", function()
  it("waits for an unfired one and goes on with its result (test_callbackReturnsDeferred)", function()
    local inner = defer.new()
    inner:pause()
    local got
    defer.succeed(1):add_callback(function() return inner end):add_callback(function(v) got = v end)
    inner:callback(2)
    assert.is_nil(got)
    inner:unpause()
    assert.are.equal(2, got)
  end)

  it("takes a fired one's result at once, leaving it nil (test_synchronousImplicitChain)", function()
    local first = defer.succeed(7)
    local got, later
    defer.succeed(1):add_callback(function() return first end):add_callback(function(v) got = v end)
    first:add_callback(function(v) later = v end)
    assert.are.equal(7, got)
    assert.is_nil(later)
  end)

  it("takes a failed one's failure, so it is never reported twice (test_chainedErrorCleanup)", function()
    local seen = with_unhandled(function()
      local got
      defer.succeed(1):add_callback(function() return defer.fail("inner") end)
        :add_errback(function(f) got = f.value end)
      assert.are.equal("inner", got)
    end)
    assert.are.equal(0, #seen)
  end)

  it("runs the inner chain's callbacks before the outer's next one (test_innerCallbacksPreserved)", function()
    local log = {}
    local inner = defer.new()
    local outer = defer.new()
    outer:add_callback(function(v)
      log[#log + 1] = "start-of-cb " .. v
      inner:add_callback(function(x) log[#log + 1] = "firstCallback " .. x return x .. x end)
      return inner
    end)
    outer:add_callback(function(v) log[#log + 1] = "final " .. v end)
    outer:callback("outer")
    inner:callback("orange")
    assert.are.same({"start-of-cb outer", "firstCallback orange", "final orangeorange"}, log)
  end)

  it("chains transitively (test_doubleAsynchronousImplicitChaining)", function()
    local first = defer.new()
    local second = defer.succeed(nil):add_callback(function() return first end)
    local third = defer.succeed(nil):add_callback(function() return second end)
    local got
    third:add_callback(function(v) got = v end)
    first:callback("result")
    assert.are.equal("result", got)
  end)

  it("turns returning the same deferred into a failure (test_circularChainException)", function()
    local d = defer.new()
    d:add_callback(function() return d end)
    d:callback(1)
    assert.are.equal("failure", d:state())
    d:add_errback(function() end)
  end)

  it("runs a chain of a million callbacks without growing the C stack", function()
    local n = scale(1000000)
    local d = defer.new()
    local function inc(v) return v + 1 end
    for _ = 1, n do d:add_callback(inc) end
    d:callback(0)
    assert.are.equal(n, d.result)
  end)

  it("runs a million callbacks each returning an already fired deferred", function()
    local n = scale(1000000)
    local d = defer.new()
    local function next_fired(v) return defer.succeed(v + 1) end
    for _ = 1, n do d:add_callback(next_fired) end
    d:callback(0)
    assert.are.equal(n, d.result)
  end)

  it("unwinds a million nested deferreds fired innermost last", function()
    local n = scale(1000000)
    local ds = {}
    for i = 1, n + 1 do ds[i] = defer.new() end
    for i = 1, n do
      local nxt = ds[i + 1]
      ds[i]:add_callback(function() return nxt end)
    end
    for i = 1, n do ds[i]:callback(i) end
    ds[n + 1]:callback("deep")
    assert.are.equal("deep", ds[1].result)
  end)

  it("chains a million deferreds with chain() fired at the first", function()
    local n = scale(1000000)
    local ds = {}
    for i = 1, n do ds[i] = defer.new() end
    for i = 1, n - 1 do ds[i]:chain(ds[i + 1]) end
    ds[1]:callback("end")
    assert.are.equal("end", ds[n].result)
  end)
end)

describe("errors and failures", function()
  it("makes error objects with type, message and Name: message", function()
    local e = defer.TimeoutError("5 s passed")
    assert.are.equal(defer.TimeoutError, e.type)
    assert.are.equal("5 s passed", e.message)
    assert.are.equal("TimeoutError: 5 s passed", tostring(e))
  end)

  it("makes new types that derive from others", function()
    local Net = defer.error_type("NetError")
    local Dns = defer.error_type("DnsError", Net)
    local e = Dns("no such host")
    assert.is_true(defer.is_a(e, Net))
    assert.is_true(defer.is_a(e, Dns))
    assert.is_false(defer.is_a(e, defer.CancelledError))
    assert.is_false(defer.is_a("string", Net))
  end)

  it("takes extra fields for a type from a table", function()
    local f = defer.failure("x")
    local e = defer.FirstError("msg", {failure = f, index = 2})
    assert.are.equal(f, e.failure)
    assert.are.equal(2, e.index)
  end)

  it("wraps any value in a Failure, and a Failure stays itself", function()
    local f = defer.failure("boom")
    assert.is_true(defer.is_failure(f))
    assert.are.equal("boom", f.value)
    assert.are.equal("string", type(f.traceback))
    assert.are.equal(f, defer.failure(f))
    assert.truthy(tostring(f):find("boom", 1, true))
    assert.are.equal("boom", f:message())
  end)

  it("checks and traps types", function()
    local f = defer.failure(defer.CancelledError("stop"))
    assert.are.equal(defer.CancelledError, f:check(defer.TimeoutError, defer.CancelledError))
    assert.is_nil(f:check(defer.TimeoutError))
    assert.are.equal(defer.CancelledError, f:trap(defer.CancelledError))
    assert.are.equal(f, errmsg(f.trap, f, defer.TimeoutError))
    assert.are.equal(f, errmsg(f.raise, f))
  end)

  it("lets trap send an unmatched failure on to the next errback", function()
    local f = defer.failure("other")
    local seen
    defer.fail(f):add_errback(function(x) x:trap(defer.CancelledError) end)
      :add_errback(function(x) seen = x end)
    assert.are.equal(f, seen)
  end)

  it("reports a failure nobody handled once, when the deferred is collected", function()
    local seen = with_unhandled(function()
      do local _ = defer.fail("lost") end
    end)
    assert.are.equal(1, #seen)
    assert.are.equal("lost", seen[1].value)
  end)

  it("does not report a failure an errback handled", function()
    local seen = with_unhandled(function()
      do local _ = defer.fail("handled"):add_errback(function() end) end
    end)
    assert.are.equal(0, #seen)
  end)

  it("survives an unhandled-failure handler that raises", function()
    local prev = defer.on_unhandled(function() error("handler broke") end)
    do local _ = defer.fail("x") end
    collectgarbage("collect")
    collectgarbage("collect")
    defer.on_unhandled(prev)
    assert.are.equal(2, defer.succeed(2).result)
  end)

  it("writes unhandled failures to stderr by default", function()
    local out = helpers.run_lua([[-e 'local defer = require "defer"; do local _ = defer.fail("lost one") end; collectgarbage(); collectgarbage()']])
    if not out then pending("DEFER_SPEC_LUA is not set") return end
    assert.truthy(out:find("Unhandled error in Deferred:", 1, true))
    assert.truthy(out:find("lost one", 1, true))
    assert.truthy(out:find("stack traceback:", 1, true))
  end)
end)

describe("bad input", function()
  local d
  before_each(function() d = defer.new() end)

  local function check(err, ...)
    for _, part in ipairs({...}) do
      assert.truthy(err:find(part, 1, true), ("%q not in %q"):format(part, err))
    end
  end

  it("names the function and argument, and leaves the deferred as it was", function()
    check(errmsg(d.add_callback, d, 42), "bad argument #1 to 'add_callback'", "function expected, got number")
    check(errmsg(d.add_errback, d), "bad argument #1 to 'add_errback'")
    check(errmsg(d.add_both, d, "x"), "bad argument #1 to 'add_both'")
    check(errmsg(d.add_callbacks, d, 1, nil), "bad argument #1 to 'add_callbacks'")
    check(errmsg(d.add_callbacks, d, nil, {}), "bad argument #2 to 'add_callbacks'")
    check(errmsg(d.errback, d), "bad argument #1 to 'errback'")
    check(errmsg(d.chain, d, 5), "bad argument #1 to 'chain'")
    check(errmsg(d.add_timeout, d, "soon"), "add_timeout")
    check(errmsg(defer.new, 5), "bad argument #1 to 'new'", "function expected, got number")
    check(errmsg(defer.fail), "bad argument #1 to 'fail'")
    check(errmsg(defer.maybe, 3), "bad argument #1 to 'maybe'")
    check(errmsg(defer.failure), "bad argument #1 to 'failure'")
    check(errmsg(defer.error_type, 42), "bad argument #1 to 'error_type'")
    check(errmsg(defer.is_a, {}, 42), "bad argument #2 to 'is_a'")
    check(errmsg(defer.on_unhandled, 42), "bad argument #1 to 'on_unhandled'")
    check(errmsg(defer.failure("x").check, defer.failure("x"), 42), "check")
    local got
    d:add_callback(function(v) got = v end)
    d:callback(1)
    assert.are.equal(1, got)
  end)

  it("names the method when self is not a Deferred", function()
    check(errmsg(d.callback, 5, 1), "callback", "Deferred expected")
    check(errmsg(d.cancel, {}), "cancel", "Deferred expected")
    check(errmsg(d.pause, nil), "pause", "Deferred expected")
  end)
end)

describe("a callback that yields", function()
  if PUC51 then
    it("fails with an error about yielding on PUC Lua 5.1", function()
      local d = defer.new()
      d:add_callback(function() coroutine.yield() end)
      coroutine.wrap(function() d:callback(1) end)()
      assert.are.equal("failure", d:state())
      assert.truthy(tostring(d.result.value):find("yield", 1, true))
      d:add_errback(function() end)
    end)
    return
  end

  it("suspends the coroutine that fired it mid-chain and goes on when resumed", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function(v)
      log[#log + 1] = "cb1 " .. v
      local r = coroutine.yield("paused")
      log[#log + 1] = "resumed " .. r
      return v + 1
    end)
    d:add_callback(function(v) log[#log + 1] = "cb2 " .. v return v end)
    local co = coroutine.create(function() d:callback(10) return "done" end)
    assert.are.same({true, "paused"}, {coroutine.resume(co)})
    assert.is_true(d.called)
    -- meanwhile other deferreds work, and a callback added waits its turn
    local other = defer.new():add_callback(function(v) log[#log + 1] = "other " .. v end)
    other:callback(5)
    d:add_callback(function(v) log[#log + 1] = "cb3 " .. v end)
    assert.are.same({"cb1 10", "other 5"}, log)
    assert.are.same({true, "done"}, {coroutine.resume(co, "R")})
    assert.are.same({"cb1 10", "other 5", "resumed R", "cb2 11", "cb3 11"}, log)
  end)

  it("suspends inside the chain of a returned deferred too", function()
    local inner = defer.new()
    inner:add_callback(function(v) return coroutine.yield(v) end)
    local outer = defer.succeed(0):add_callback(function() return inner end)
    local co = coroutine.create(function() inner:callback("in") end)
    assert.are.same({true, "in"}, {coroutine.resume(co)})
    assert.are.equal("pending", outer:state())
    coroutine.resume(co, "out")
    assert.are.equal("out", outer.result)
  end)
end)
