-- defer.list, from the user's side: every clause of API.md's "Lists of
-- deferreds" and "Exact points" for it, Twisted's DeferredList and
-- FirstError tests (TWISTED.md 2.3) one by one, bad input, scale, memory.
local defer = require "defer"
local helpers = require "helpers"
local scale, errmsg, with_unhandled = helpers.scale, helpers.errmsg, helpers.with_unhandled

-- The pairs with each Failure replaced by its error value, to compare.
local function plain(pairs_)
  local out = {}
  for i, p in ipairs(pairs_) do
    out[i] = {p[1], defer.is_failure(p[2]) and p[2].value or p[2]}
  end
  return out
end

local function is_cancelled(f)
  return defer.is_failure(f) and defer.is_a(f.value, defer.CancelledError)
end

-- Marks the failure of d as seen, so that no unhandled report follows.
local function handled(d) d:add_errback(function() end) end

describe("defer.list", function()
  describe("API clauses", function()
    it("returns a pending Deferred while some child is pending", function()
      local d = defer.new()
      local l = defer.list({d})
      assert.truthy(tostring(l):find("^<Deferred"))
      assert.are.equal("pending", l:state())
      assert.is_false(l.called)
      d:callback(1)
    end)

    it("fires once every deferred has fired, with {ok, value} pairs in input order", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local l = defer.list({a, b, c}, {consume_errors = true})
      c:callback("c")
      a:callback("a")
      assert.is_false(l.called)
      b:errback("b failed")
      assert.are.equal("success", l:state())
      assert.are.same({{true, "a"}, {false, "b failed"}, {true, "c"}}, plain(l.result))
    end)

    it("gives ok as a boolean and the value as the result or the Failure itself", function()
      local f = defer.failure("bang")
      local a, b = defer.new(), defer.new()
      local l = defer.list({a, b}, {consume_errors = true})
      a:callback(false)
      b:errback(f)
      assert.are.equal(true, l.result[1][1])
      assert.are.equal(false, l.result[1][2])
      assert.are.equal(false, l.result[2][1])
      assert.are.equal(f, l.result[2][2])
    end)

    it("keeps a nil result as {true, nil}", function()
      local l = defer.list({defer.succeed(nil), defer.succeed(2)})
      assert.are.equal(2, #l.result)
      assert.are.equal(true, l.result[1][1])
      assert.is_nil(l.result[1][2])
      assert.are.same({true, 2}, l.result[2])
    end)

    it("orders the pairs by index, not by the order the children fired", function()
      local ds = {}
      for i = 1, 10 do ds[i] = defer.new() end
      local l = defer.list(ds)
      for i = 10, 1, -1 do ds[i]:callback(i * i) end
      for i = 1, 10 do assert.are.same({true, i * i}, l.result[i]) end
    end)

    it("fires with {value, index} at the first success under fire_on_one_callback", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local l = defer.list({a, b, c}, {fire_on_one_callback = true})
      b:callback("B")
      assert.are.same({"B", 2}, l.result)
      a:callback("A")
      c:callback("C")
      assert.are.same({"B", 2}, l.result)
    end)

    it("errbacks with a FirstError holding the failure and index at the first failure under fire_on_one_errback", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local l = defer.list({a, b, c}, {fire_on_one_errback = true, consume_errors = true})
      a:callback("fine")
      assert.is_false(l.called)
      local f = defer.failure("c broke")
      c:errback(f)
      assert.are.equal("failure", l:state())
      local e = l.result.value
      assert.are.equal(defer.FirstError, e.type)
      assert.is_true(defer.is_a(e, defer.FirstError))
      assert.are.equal(f, e.failure)
      assert.are.equal(3, e.index)
      assert.are.equal("item 3 failed: c broke", e.message)
      assert.are.equal("FirstError: item 3 failed: c broke", tostring(e))
      b:errback("later")
      assert.are.equal(e, l.result.value)
      handled(l)
    end)

    it("hands nil down a failed child's chain with consume_errors, and never reports it", function()
      local seen = with_unhandled(function()
        local d = defer.new()
        local l = defer.list({d}, {consume_errors = true})
        d:errback("quiet")
        local after = "unset"
        d:add_both(function(v) after = v end)
        assert.is_nil(after)
        assert.are.same({{false, "quiet"}}, plain(l.result))
      end)
      assert.are.same({}, seen)
    end)

    it("lets a failed child's failure reach on_unhandled without consume_errors when nothing handles it", function()
      local seen = with_unhandled(function()
        local d = defer.new()
        local l = defer.list({d})
        d:errback("lost")
        assert.are.same({{false, "lost"}}, plain(l.result))
      end)
      assert.are.equal(1, #seen)
      assert.are.equal("lost", seen[1].value)
    end)

    it("reports nothing without consume_errors when the child's own errback handles it", function()
      local seen = with_unhandled(function()
        local d = defer.new()
        defer.list({d})
        d:add_errback(function() return "recovered" end)
        d:errback("handled")
      end)
      assert.are.same({}, seen)
    end)

    it("reports an already failed child's failure without consume_errors, never with it", function()
      local without = with_unhandled(function()
        defer.list({defer.fail("early")})
      end)
      assert.are.equal(1, #without)
      local with = with_unhandled(function()
        defer.list({defer.fail("early")}, {consume_errors = true})
      end)
      assert.are.same({}, with)
    end)

    it("calls on_progress(done, total) each time a child fires", function()
      local calls = {}
      local ds = {defer.new(), defer.new(), defer.new()}
      defer.list(ds, {on_progress = function(done, total)
        calls[#calls + 1] = {done, total}
      end})
      assert.are.same({}, calls)
      ds[3]:callback("x")
      assert.are.same({{1, 3}}, calls)
      ds[1]:errback("y")
      ds[2]:callback("z")
      assert.are.same({{1, 3}, {2, 3}, {3, 3}}, calls)
      handled(ds[1])
    end)

    it("calls on_progress for the last child before the list's own callbacks run", function()
      local order = {}
      local d = defer.new()
      defer.list({d}, {on_progress = function(done, total)
        order[#order + 1] = "progress " .. done .. "/" .. total
      end}):add_callback(function() order[#order + 1] = "fired" end)
      d:callback(1)
      assert.are.same({"progress 1/1", "fired"}, order)
    end)

    it("calls on_progress for children that had fired before the list was made", function()
      local calls = {}
      local late = defer.new()
      defer.list({defer.succeed(1), late, defer.succeed(3)}, {on_progress = function(done, total)
        calls[#calls + 1] = done .. "/" .. total
      end})
      assert.are.same({"1/3", "2/3"}, calls)
      late:callback(2)
      assert.are.same({"1/3", "2/3", "3/3"}, calls)
    end)

    it("goes on calling on_progress after the list fired early", function()
      local calls = 0
      local a, b = defer.new(), defer.new()
      local l = defer.list({a, b}, {fire_on_one_callback = true,
        on_progress = function() calls = calls + 1 end})
      a:callback(1)
      assert.is_true(l.called)
      b:callback(2)
      assert.are.equal(2, calls)
    end)

    it("reports an error raised in on_progress and still fires", function()
      local l
      local seen = with_unhandled(function()
        local d = defer.new()
        l = defer.list({d}, {on_progress = function() error("bar broke", 0) end})
        d:callback("v")
      end)
      assert.are.equal(1, #seen)
      assert.are.equal("bar broke", seen[1].value)
      assert.are.same({{true, "v"}}, l.result)
    end)

    it("fires at once with {} for an empty list", function()
      local l = defer.list({})
      assert.is_true(l.called)
      assert.are.same({}, l.result)
    end)

    it("makes no progress calls for an empty list", function()
      local calls = 0
      defer.list({}, {on_progress = function() calls = calls + 1 end})
      assert.are.equal(0, calls)
    end)

    it("cancels every child that has not fired when cancelled", function()
      local cancelled = {}
      local function canceller(name) return function() cancelled[#cancelled + 1] = name end end
      local a, b, c = defer.new(canceller("a")), defer.succeed("b"), defer.new(canceller("c"))
      local l = defer.list({a, b, c}, {consume_errors = true})
      l:cancel()
      assert.are.same({"a", "c"}, cancelled)
      assert.is_true(is_cancelled(l.result[1][2]))
      assert.are.same({true, "b"}, l.result[2])
      assert.is_true(is_cancelled(l.result[3][2]))
    end)

    it("cancels a child that waits on a chained deferred (cancel follows the chain)", function()
      local inner = defer.new()
      local child = defer.succeed(1):add_callback(function() return inner end)
      local l = defer.list({child}, {consume_errors = true})
      assert.is_false(l.called)
      l:cancel()
      assert.is_true(inner.called)
      assert.is_true(is_cancelled(l.result[1][2]))
      handled(inner)
    end)
  end)

  describe("exact points", function()
    it("counts indices from 1 in the {value, index} of fire_on_one_callback", function()
      local l = defer.list({defer.succeed("first")}, {fire_on_one_callback = true})
      assert.are.same({"first", 1}, l.result)
    end)

    it("counts FirstError.index from 1", function()
      local l = defer.list({defer.fail("x")}, {fire_on_one_errback = true, consume_errors = true})
      assert.are.equal(1, l.result.value.index)
      handled(l)
    end)

    it("never fires over an empty list with fire_on_one_callback (as Twisted)", function()
      local l = defer.list({}, {fire_on_one_callback = true})
      assert.is_false(l.called)
    end)

    it("keeps each failure in the pairs with consume_errors; only the child's own chain goes on with nil", function()
      local f = defer.failure("kept")
      local d = defer.new()
      local l = defer.list({d}, {consume_errors = true})
      d:errback(f)
      assert.are.equal(f, l.result[1][2])
      assert.is_nil(d.result)
      assert.are.equal("success", d:state())
    end)

    it("errbacks with a CancelledError when cancelled while a child could not be cancelled", function()
      local stuck = defer.new(function() error("cannot stop", 0) end)
      local l = defer.list({stuck, defer.new()}, {consume_errors = true})
      local seen = with_unhandled(function() l:cancel() end)
      assert.are.equal(1, #seen) -- the raising canceller, reported
      assert.are.equal("cannot stop", seen[1].value)
      assert.is_true(is_cancelled(l.result))
      stuck:callback("late") -- later results change nothing
      assert.is_true(is_cancelled(l.result))
      handled(l)
    end)
  end)

  describe("Twisted DL1-DL9", function()
    it("DL1: copies the input: later changes to the caller's table are ignored", function()
      local d1 = defer.new()
      local ds = {d1}
      local l = defer.list(ds)
      local extra = defer.new()
      ds[2] = extra
      ds[1] = defer.new()
      d1:callback("one")
      assert.are.same({{true, "one"}}, l.result)
    end)

    it("DL1: the copy holds: children fired first, then a pending one, then the caller's table changed", function()
      local d3 = defer.new()
      local ds = {defer.succeed(1), defer.succeed(2), d3, defer.succeed(4)}
      local l = defer.list(ds)
      local other = defer.new()
      ds[3] = other
      ds[4] = defer.new()
      other:callback("not a child")
      assert.are.equal("pending", l:state())
      d3:callback(3)
      assert.are.same({{true, 1}, {true, 2}, {true, 3}, {true, 4}}, l.result)
    end)

    it("DL1: cancelling a list whose first children fired cancels only the pending one", function()
      local late = defer.new()
      local l = defer.list({defer.succeed(1), late, defer.succeed(3)})
      l:add_errback(function() end)
      l:cancel()
      assert.is_true(is_cancelled(late.result))
      late:add_errback(function() end)
    end)

    it("DL4: gather over a fired failure and a pending child errbacks at once and still passes the child on", function()
      local late = defer.new()
      local seen
      late:add_callback(function(v) seen = v return v end)
      local first = defer.fail("first")
      local g = defer.gather({first, late})
      local err
      g:add_errback(function(f) err = f end)
      assert.are.equal(1, err.value.index)
      late:callback("later")
      assert.are.equal("later", seen)
      assert.are.equal("later", late.result)
      handled(first)
    end)

    it("DL3: callbacks added to a child before the list transform what it records", function()
      local d = defer.new()
      d:add_callback(function(v) return v * 10 end)
      local l = defer.list({d})
      d:callback(4)
      assert.are.same({{true, 40}}, l.result)
    end)

    it("DL3: callbacks added to a child after the list see what the list passes on", function()
      local d = defer.new()
      defer.list({d})
      local got
      d:add_callback(function(v) got = v end)
      d:callback("unchanged")
      assert.are.equal("unchanged", got)
    end)

    it("DL3/DL4: the list fires inside the child's chain, before the child's later callbacks", function()
      local order = {}
      local d = defer.new()
      defer.list({d}):add_callback(function() order[#order + 1] = "list" end)
      d:add_callback(function(v) order[#order + 1] = "child after" return v end)
      d:callback(1)
      assert.are.same({"list", "child after"}, order)
    end)

    it("DL5: a failure goes on down the child's chain unchanged without consume_errors", function()
      local f = defer.failure("same")
      local d = defer.new()
      defer.list({d})
      local got
      d:add_errback(function(x) got = x end)
      d:errback(f)
      assert.are.equal(f, got)
    end)

    it("DL5: consume_errors does not change fire_on_one_errback", function()
      local l = defer.list({defer.new(), defer.fail("e")}, {fire_on_one_errback = true, consume_errors = true})
      assert.is_true(defer.is_a(l.result.value, defer.FirstError))
      assert.are.equal(2, l.result.value.index)
      handled(l)
    end)

    it("DL6: fire_on_one_callback when every child fails gives the full list of pairs", function()
      local a, b = defer.new(), defer.new()
      local l = defer.list({a, b}, {fire_on_one_callback = true, consume_errors = true})
      a:errback("a")
      assert.is_false(l.called)
      b:errback("b")
      assert.are.same({{false, "a"}, {false, "b"}}, plain(l.result))
    end)

    it("DL6: fire_on_one_errback when every child succeeds gives the full list", function()
      local l = defer.list({defer.succeed(1), defer.succeed(2)}, {fire_on_one_errback = true})
      assert.are.same({{true, 1}, {true, 2}}, l.result)
    end)

    it("DL6: with both flags, whichever happens first wins (a success)", function()
      local a, b = defer.new(), defer.new()
      local l = defer.list({a, b}, {fire_on_one_callback = true, fire_on_one_errback = true, consume_errors = true})
      b:callback("b")
      a:errback("a")
      assert.are.same({"b", 2}, l.result)
    end)

    it("DL6: with both flags, whichever happens first wins (a failure)", function()
      local a, b = defer.new(), defer.new()
      local l = defer.list({a, b}, {fire_on_one_callback = true, fire_on_one_errback = true, consume_errors = true})
      a:errback("a")
      b:callback("b")
      assert.are.equal(1, l.result.value.index)
      handled(l)
    end)

    it("DL6: without fire_on_one_errback the list never errbacks", function()
      local l = defer.list({defer.fail("x"), defer.fail("y")}, {consume_errors = true})
      assert.are.equal("success", l:state())
    end)

    it("DL8: cancelling a fired list does nothing, and the remaining children are not cancelled", function()
      local cancelled = false
      local a, b = defer.new(), defer.new(function() cancelled = true end)
      local l = defer.list({a, b}, {fire_on_one_callback = true})
      a:callback("a")
      l:cancel()
      assert.is_false(cancelled)
      assert.is_false(b.called)
      assert.are.same({"a", 1}, l.result)
    end)

    it("DL9: the same deferred twice gives both slots its value", function()
      local d = defer.new()
      local l = defer.list({d, d})
      d:callback("same")
      assert.are.same({{true, "same"}, {true, "same"}}, l.result)
    end)

    it("DL9: the same failed deferred twice with consume_errors: the second slot sees the nil the first passed on", function()
      local d = defer.new()
      local l = defer.list({d, d}, {consume_errors = true})
      d:errback("once")
      assert.are.same({{false, "once"}, {true, nil}}, plain(l.result))
    end)
  end)

  describe("Twisted tests (TWISTED.md 2.3)", function()
    it("testDeferredList", function()
      local d1, d2, d3 = defer.new(), defer.new(), defer.new()
      local l = defer.list({d1, d2, d3})
      local result
      l:add_callback(function(r) result = r end)
      local errs = {}
      d2:add_errback(function(f) errs[#errs + 1] = f end) -- the child's own errback
      d1:callback("1")
      assert.is_nil(result)
      d2:errback("2")
      assert.is_nil(result)
      assert.are.equal(1, #errs)
      d3:callback("3")
      assert.are.same({{true, "1"}, {false, "2"}, {true, "3"}}, plain(result))
    end)

    it("testEmptyDeferredList", function()
      local result
      defer.list({}):add_callback(function(r) result = r end)
      assert.are.same({}, result)
      local fired = false
      defer.list({}, {fire_on_one_callback = true}):add_callback(function() fired = true end)
      assert.is_false(fired)
    end)

    it("DeferredListEmptyTests.testDeferredListEmpty", function()
      local calls, got = 0, nil
      defer.list({}):add_callback(function(r) calls, got = calls + 1, r end)
      assert.are.equal(1, calls)
      assert.are.same({}, got)
    end)

    it("testDeferredListFireOnOneError", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_errback = true})
      local results = {}
      l:add_errback(function(f) results[#results + 1] = f end)
      d1:callback("hello")
      assert.are.same({}, results)
      local GenericError = defer.error_type("GenericError")
      d2:errback(GenericError("from def2"))
      assert.are.equal(1, #results)
      local e = results[1].value
      assert.is_true(defer.is_a(e, defer.FirstError))
      assert.is_true(defer.is_a(e.failure.value, GenericError))
      assert.are.equal("from def2", e.failure.value.message)
      assert.are.equal(2, e.index) -- Twisted's index 1, counted from 1
      handled(d2)
    end)

    it("testDeferredListDontConsumeErrors", function()
      local d1 = defer.new()
      local l = defer.list({d1})
      local errors, result = {}, nil
      d1:add_errback(function(f) errors[#errors + 1] = f end)
      l:add_callback(function(r) result = r end)
      d1:errback("Bang")
      assert.are.equal("Bang", errors[1].value)
      assert.are.equal(1, #result)
      assert.are.same({false, "Bang"}, {result[1][1], result[1][2].value})
    end)

    it("testDeferredListConsumeErrors", function()
      local d1 = defer.new()
      local l = defer.list({d1}, {consume_errors = true})
      local errors, result = {}, nil
      d1:add_errback(function(f) errors[#errors + 1] = f end)
      l:add_callback(function(r) result = r end)
      d1:errback("Bang")
      assert.are.same({}, errors)
      assert.are.same({false, "Bang"}, {result[1][1], result[1][2].value})
    end)

    it("testDeferredListFireOnOneErrorWithAlreadyFiredDeferreds", function()
      local d1 = defer.fail("Bang")
      local d2 = defer.succeed(2)
      local l = defer.list({d1, d2}, {fire_on_one_errback = true})
      local results = {}
      l:add_errback(function(f) results[#results + 1] = f end)
      assert.are.equal(1, #results)
      assert.are.equal(1, results[1].value.index)
      handled(d1)
    end)

    it("testDeferredListWithAlreadyFiredDeferreds", function()
      local d1 = defer.fail("Bang")
      local d2 = defer.succeed(2)
      local l = defer.list({d1, d2})
      local results = {}
      l:add_callback(function(r) results[#results + 1] = r end)
      assert.are.equal(1, #results)
      assert.are.same({{false, "Bang"}, {true, 2}}, plain(results[1]))
      handled(d1)
    end)

    it("test_cancelDeferredList", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2})
      l:cancel()
      assert.is_true(is_cancelled(d1.result))
      assert.is_true(is_cancelled(d2.result))
      assert.is_true(is_cancelled(l.result[1][2]))
      assert.is_true(is_cancelled(l.result[2][2]))
      handled(d1) handled(d2)
    end)

    it("test_cancelDeferredListCallback", function()
      local d1 = defer.new(function(d) d:callback("Callback Result") end)
      local d2 = defer.new()
      local l = defer.list({d1, d2})
      l:cancel()
      assert.are.equal("success", l:state())
      assert.are.same({true, "Callback Result"}, l.result[1])
      assert.is_false(l.result[2][1])
      assert.is_true(is_cancelled(l.result[2][2]))
      handled(d2)
    end)

    it("test_cancelDeferredListWithFireOnOneCallback", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_callback = true})
      l:cancel()
      assert.is_true(is_cancelled(d1.result))
      assert.is_true(is_cancelled(d2.result))
      handled(d1) handled(d2)
    end)

    it("test_cancelDeferredListWithFireOnOneCallbackAndDeferredCallback", function()
      local d1 = defer.new(function(d) d:callback("Callback Result") end)
      local d2 = defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_callback = true})
      l:cancel()
      assert.are.same({"Callback Result", 1}, l.result)
      handled(d2)
    end)

    it("test_cancelDeferredListWithFireOnOneErrback", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_errback = true})
      l:cancel()
      assert.is_true(is_cancelled(d1.result))
      assert.is_true(is_cancelled(d2.result))
      local e = l.result.value
      assert.is_true(defer.is_a(e, defer.FirstError))
      assert.is_true(is_cancelled(e.failure))
      assert.are.equal(1, e.index)
      handled(l) handled(d1) handled(d2)
    end)

    it("test_cancelDeferredListWithFireOnOneErrbackAllDeferredsCallback", function()
      local d1 = defer.new(function(d) d:callback("Callback Result") end)
      local d2 = defer.new(function(d) d:callback("Callback Result") end)
      local l = defer.list({d1, d2}, {fire_on_one_errback = true})
      l:cancel()
      assert.are.same({{true, "Callback Result"}, {true, "Callback Result"}}, l.result)
    end)

    it("test_cancelDeferredListWithOriginalDeferreds", function()
      local d1, d2 = defer.new(), defer.new()
      local ds = {d1, d2}
      local l = defer.list(ds, {consume_errors = true})
      local d3 = defer.new()
      ds[3] = d3
      l:cancel()
      assert.is_false(d3.called)
    end)

    it("test_cancelDeferredListWithException", function()
      local d1 = defer.new(function() error("RuntimeError: canceller broke", 0) end)
      local d2 = defer.new()
      local l
      local seen = with_unhandled(function()
        l = defer.list({d1, d2}, {consume_errors = true})
        l:cancel()
      end)
      assert.is_true(is_cancelled(d2.result) or d2.result == nil)
      assert.is_true(d2.called)
      assert.are.equal(1, #seen) -- exactly the one raised error
      assert.are.equal("RuntimeError: canceller broke", seen[1].value)
      assert.is_false(d1.called)
      -- the list could not wait for d1 any more: it was cancelled
      assert.is_true(is_cancelled(l.result))
      handled(l)
    end)

    it("test_cancelFiredOnOneCallbackDeferredList", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_callback = true})
      d1:callback("test")
      l:cancel()
      assert.is_false(d2.called)
      assert.are.same({"test", 1}, l.result)
    end)

    it("test_cancelFiredOnOneErrbackDeferredList", function()
      local GenericError = defer.error_type("GenericError")
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_errback = true})
      d1:errback(GenericError("test"))
      l:cancel()
      assert.is_false(d2.called)
      assert.is_true(defer.is_a(d1.result.value, GenericError))
      assert.is_true(defer.is_a(l.result.value, defer.FirstError))
      handled(d1) handled(l)
    end)
  end)

  describe("FirstError (Twisted FirstErrorTests)", function()
    local ValueError = defer.error_type("ValueError")

    local function first_error_of(value, index)
      local ds = {}
      for i = 1, index do ds[i] = i < index and defer.new() or defer.fail(value) end
      local l = defer.list(ds, {fire_on_one_errback = true, consume_errors = true})
      local e = l.result.value
      handled(l)
      for i = 1, index - 1 do ds[i]:callback(nil) end
      return e
    end

    it("test_repr / test_str: tostring names the type, the index and the failure", function()
      local e = first_error_of(ValueError("some text"), 3)
      assert.are.equal("FirstError: item 3 failed: ValueError: some text", tostring(e))
      assert.are.equal("item 3 failed: ValueError: some text", e.message)
      assert.are.equal(3, e.index)
      assert.are.equal("some text", e.failure.value.message)
    end)

    it("uses the error value's __tostring for the message", function()
      local value = setmetatable({}, {__tostring = function() return "custom error" end})
      local e = first_error_of(value, 2)
      assert.are.equal("item 2 failed: custom error", e.message)
      assert.are.equal(value, e.failure.value)
    end)

    it("still makes a FirstError when the value's __tostring raises", function()
      local value = setmetatable({}, {__tostring = function() error("no text") end})
      local e = first_error_of(value, 1)
      assert.are.equal("item 1 failed: table", e.message)
      assert.are.equal(value, e.failure.value)
    end)

    it("test_comparison: the same failure and index give the same fields; others differ", function()
      local f = defer.failure(ValueError("x"))
      local a = first_error_of(f, 2)
      local b = first_error_of(f, 2)
      assert.are.equal(a.failure, b.failure)
      assert.are.equal(a.index, b.index)
      assert.are.equal(a.message, b.message)
      local c = first_error_of(defer.failure(ValueError("y")), 1)
      assert.are_not.equal(a.failure, c.failure)
      assert.are_not.equal(a.index, c.index)
      assert.are_not.equal(10, a)
    end)
  end)

  describe("cancelling from inside the list's own calls", function()
    it("takes the pairs the children give when cancelled from on_progress", function()
      local ds = {defer.new(), defer.new(), defer.new()}
      local l
      l = defer.list(ds, {consume_errors = true, on_progress = function(done)
        if done == 1 then l:cancel() end
      end})
      ds[2]:callback("two")
      assert.are.equal("success", l:state())
      assert.is_true(is_cancelled(l.result[1][2]))
      assert.are.same({true, "two"}, l.result[2])
      assert.is_true(is_cancelled(l.result[3][2]))
    end)

    it("takes a FirstError of the CancelledError when cancelled from on_progress under fire_on_one_errback", function()
      local ds = {defer.new(), defer.new()}
      local l, calls = nil, {}
      l = defer.list(ds, {fire_on_one_errback = true, consume_errors = true,
        on_progress = function(done, total)
          calls[#calls + 1] = done .. "/" .. total
          if done == 1 then l:cancel() end
        end})
      ds[2]:callback("two")
      local e = l.result.value
      assert.is_true(defer.is_a(e, defer.FirstError))
      assert.are.equal(1, e.index)
      assert.are.equal("item 1 failed: CancelledError: the Deferred was cancelled", e.message)
      assert.are.same({"1/2", "2/2"}, calls)
      handled(l)
    end)
  end)

  describe("children in every state", function()
    it("waits for a paused child until it is unpaused", function()
      local d = defer.succeed("v")
      d:pause()
      local l = defer.list({d})
      assert.is_false(l.called)
      d:unpause()
      assert.are.same({{true, "v"}}, l.result)
    end)

    it("waits for a child that waits on a chained deferred", function()
      local inner = defer.new()
      local d = defer.succeed(1):add_callback(function() return inner end)
      local l = defer.list({d})
      assert.is_false(l.called)
      inner:callback("inner")
      assert.are.same({{true, "inner"}}, l.result)
    end)

    it("lets a callback return a list that is still waiting (chaining)", function()
      local a = defer.new()
      local got
      defer.succeed("x"):add_callback(function() return defer.list({a}) end)
        :add_callback(function(r) got = r end)
      assert.is_nil(got)
      a:callback("withers")
      assert.are.same({{true, "withers"}}, got)
    end)

    it("takes lists as children (nested lists)", function()
      local a, b = defer.new(), defer.new()
      local outer = defer.list({defer.list({a}), defer.list({b})})
      a:callback(1)
      b:callback(2)
      assert.are.same({{true, {{true, 1}}}, {true, {{true, 2}}}}, outer.result)
    end)

    it("lets a child's callback fire another child of the same list", function()
      local a, b = defer.new(), defer.new()
      a:add_callback(function(v) b:callback(v + 1) return v end)
      local l = defer.list({a, b})
      a:callback(1)
      assert.are.same({{true, 1}, {true, 2}}, l.result)
    end)

    it("lets on_progress fire the next child", function()
      local a, b = defer.new(), defer.new()
      local calls = {}
      local l = defer.list({a, b}, {on_progress = function(done)
        calls[#calls + 1] = done
        if done == 1 then b:callback("b") end
      end})
      a:callback("a")
      assert.are.same({1, 2}, calls)
      assert.are.same({{true, "a"}, {true, "b"}}, l.result)
    end)
  end)

  describe("bad input", function()
    it("rejects a non-table", function()
      assert.truthy(errmsg(defer.list, 5):find("bad argument #1 to 'list' (table expected, got number)", 1, true))
      assert.truthy(errmsg(defer.list):find("bad argument #1 to 'list' (table expected, got nil)", 1, true))
    end)

    it("rejects a table holding a non-deferred, naming its index", function()
      local err = errmsg(defer.list, {defer.new(), defer.new(), 3})
      assert.truthy(err:find("bad argument #1 to 'list' (Deferred expected at index 3, got number)", 1, true))
      err = errmsg(defer.list, {defer.new(), {}})
      assert.truthy(err:find("(Deferred expected at index 2, got table)", 1, true))
    end)

    it("rejects a hole in the array", function()
      local ds = {defer.new(), nil, defer.new()}
      local ok, err = pcall(defer.list, ds)
      if #ds == 3 then -- where # sees past the hole
        assert.is_false(ok)
        assert.truthy(err:find("Deferred expected at index 2, got nil", 1, true))
      end
    end)

    it("points at the caller's line", function()
      local ok, err = pcall(function()
        local l = defer.list({1})
        return l
      end)
      assert.is_false(ok)
      assert.truthy(err:find("^spec/list_spec.lua:%d+: bad argument #1 to 'list'"), err)
    end)

    it("rejects an unknown option", function()
      local err = errmsg(defer.list, {}, {fire_on_one = true})
      assert.truthy(err:find("bad argument #2 to 'list' (unknown option 'fire_on_one')", 1, true))
      err = errmsg(defer.list, {}, {true})
      assert.truthy(err:find("bad argument #2 to 'list' (unknown option", 1, true))
    end)

    it("rejects options that are not a table", function()
      assert.truthy(errmsg(defer.list, {}, true):find("bad argument #2 to 'list' (table expected, got boolean)", 1, true))
    end)

    it("rejects an on_progress that is not a function", function()
      local err = errmsg(defer.list, {}, {on_progress = 3})
      assert.truthy(err:find("bad argument #2 to 'list' (function expected for 'on_progress', got number)", 1, true))
    end)

    it("changes nothing before it raises", function()
      local calls = 0
      local a = defer.new()
      local pre = defer.succeed(1)
      errmsg(defer.list, {a, pre, "x"}, {on_progress = function() calls = calls + 1 end})
      errmsg(defer.list, {a, pre}, {on_progress = function() calls = calls + 1 end, bogus = 1})
      assert.are.equal(0, calls)
      -- a has no entry from the failed calls: its one callback sees the value
      local got
      a:add_callback(function(v) got = v return v end)
      a:callback("a")
      assert.are.equal("a", got)
      assert.are.equal("a", a.result)
      assert.are.equal(1, pre.result)
    end)
  end)

  describe("at scale", function()
    it("collects a million deferreds fired one by one", function()
      local n = scale(1000000)
      local ds = {}
      for i = 1, n do ds[i] = defer.new() end
      local l = defer.list(ds)
      for i = 1, n do ds[i]:callback(i) end
      assert.is_true(l.called)
      local r = l.result
      assert.are.equal(n, #r)
      assert.are.same({true, 1}, r[1])
      assert.are.same({true, n}, r[n])
    end)

    it("hooks a million children that have already fired without recursion, with progress", function()
      local n = scale(1000000)
      local ds = {}
      for i = 1, n do ds[i] = defer.succeed(i) end
      local last, calls = nil, 0
      local l = defer.list(ds, {on_progress = function(done) calls, last = calls + 1, done end})
      assert.are.equal(n, calls)
      assert.are.equal(n, last)
      assert.are.same({true, n}, l.result[n])
    end)

    it("fires a chain of nested lists a hundred thousand deep on a flat stack", function()
      local n = scale(100000)
      local leaf = defer.new()
      local top = leaf
      for _ = 1, n do top = defer.list({top}) end
      leaf:callback("deep")
      local r, depth = top.result, 0
      while type(r) == "table" and r[1] and r[1][1] == true do
        r, depth = r[1][2], depth + 1
      end
      assert.are.equal(n, depth)
      assert.are.equal("deep", r)
    end)

    it("costs no Lua table per child while it waits (memory per child)", function()
      local n = scale(100000)
      local ds = {}
      for i = 1, n do ds[i] = defer.new() end
      collectgarbage("collect")
      local before = collectgarbage("count")
      local l = defer.list(ds)
      collectgarbage("collect")
      local per_child = (collectgarbage("count") - before) * 1024 / n
      -- the copy of the input, the values and a flag: two array slots and a byte
      assert.is_true(per_child < 40, ("%.1f bytes per waiting child"):format(per_child))
      for i = 1, n do ds[i]:callback(i) end
      assert.are.equal(n, #l.result)
    end)

    it("gives the memory back after a million children are dropped", function()
      collectgarbage("collect")
      collectgarbage("collect")
      local before = collectgarbage("count")
      do
        local n = scale(1000000)
        local ds = {}
        for i = 1, n do ds[i] = defer.new() end
        local l = defer.list(ds, {consume_errors = true})
        local f = defer.failure("e", "")
        for i = n, 1, -1 do
          if i % 1000 == 0 then ds[i]:errback(f) else ds[i]:callback(i) end
        end
        assert.are.equal(n, #l.result)
      end
      collectgarbage("collect")
      collectgarbage("collect")
      local after = collectgarbage("count")
      assert.is_true(after < before + 256, ("%.0f KB before, %.0f KB after"):format(before, after))
    end)
  end)
end)
