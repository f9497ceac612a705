-- Lists of deferreds: defer.list, defer.gather and defer.race, from the
-- user's side; Twisted's DeferredList/gatherResults/race tests translated.
local defer = require "defer"
local helpers = require "helpers"
local scale, with_unhandled = helpers.scale, helpers.with_unhandled

local function pairs_of(result)
  local out = {}
  for i, p in ipairs(result) do
    out[i] = {p[1], defer.is_failure(p[2]) and p[2]:message() or p[2]}
  end
  return out
end


describe("defer.list", function()
  it("fires once every deferred fired, with {ok, value} pairs in input order", function()
    local d1, d2, d3 = defer.new(), defer.new(), defer.new()
    local l = defer.list({d1, d2, d3}, {consume_errors = true})
    d3:callback("3")
    d1:callback("1")
    assert.is_false(l.called)
    d2:errback("2")
    assert.are.same({{true, "1"}, {false, "2"}, {true, "3"}}, pairs_of(l.result))
  end)

  it("keeps the Failure itself in the pairs", function()
    local f = defer.failure("bang")
    local d = defer.new()
    local l = defer.list({d}, {consume_errors = true})
    d:errback(f)
    assert.are.equal(f, l.result[1][2])
  end)

  it("counts deferreds fired before it was made at once", function()
    local l = defer.list({defer.succeed(1), defer.succeed(2)})
    assert.are.same({{true, 1}, {true, 2}}, l.result)
  end)

  it("fires at construction with an already failed child (Twisted testDeferredListWithAlreadyFiredDeferreds)", function()
    local d1 = defer.fail("gone")
    local l = defer.list({d1, defer.succeed(2)}, {consume_errors = true})
    assert.is_true(l.called)
    assert.are.same({{false, "gone"}, {true, 2}}, pairs_of(l.result))
  end)

  it("fires on the first success with {value, index} under fire_on_one_callback", function()
    local d1, d2 = defer.new(), defer.new()
    local l = defer.list({d1, d2}, {fire_on_one_callback = true})
    d2:callback("two")
    assert.are.same({"two", 2}, l.result)
    d1:callback("one")
    assert.are.same({"two", 2}, l.result)
  end)

  it("fires with every pair under fire_on_one_callback when all fail", function()
    local d1, d2 = defer.new(), defer.new()
    local l = defer.list({d1, d2}, {fire_on_one_callback = true, consume_errors = true})
    d1:errback("a")
    d2:errback("b")
    assert.are.same({{false, "a"}, {false, "b"}}, pairs_of(l.result))
  end)

  it("errbacks with a FirstError holding the failure and index under fire_on_one_errback (Twisted testDeferredListFireOnOneError)", function()
    local d1, d2 = defer.new(), defer.new()
    local l = defer.list({d1, d2}, {fire_on_one_errback = true, consume_errors = true})
    d1:callback("fine")
    assert.is_false(l.called)
    d2:errback("from def2")
    assert.are.equal("failure", l:state())
    local e = l.result.value
    assert.is_true(defer.is_a(e, defer.FirstError))
    assert.are.equal(2, e.index)
    assert.are.equal("from def2", e.failure.value)
    l:add_errback(function() end)
  end)

  it("errbacks at once when a child already failed under fire_on_one_errback", function()
    local l = defer.list({defer.fail("early"), defer.new()},
      {fire_on_one_errback = true, consume_errors = true})
    assert.are.equal("failure", l:state())
    assert.are.equal(1, l.result.value.index)
    l:add_errback(function() end)
  end)

  it("never errbacks without fire_on_one_errback", function()
    local l = defer.list({defer.fail("x")}, {consume_errors = true})
    assert.are.equal("success", l:state())
  end)

  it("lets the child's own errback still see the failure without consume_errors (Twisted testDeferredListDontConsumeErrors)", function()
    local d = defer.new()
    local l = defer.list({d})
    local seen
    d:errback("Bang")
    d:add_errback(function(f) seen = f.value end)
    assert.are.equal("Bang", seen)
    assert.are.same({{false, "Bang"}}, pairs_of(l.result))
  end)

  it("hands nil on down the child's chain with consume_errors (Twisted testDeferredListConsumeErrors)", function()
    local d = defer.new()
    local l = defer.list({d}, {consume_errors = true})
    local seen = {}
    d:errback("Bang")
    d:add_errback(function(f) seen[#seen + 1] = f end)
    d:add_callback(function(v) seen[#seen + 1] = tostring(v) end)
    assert.are.same({"nil"}, seen)
    assert.are.same({{false, "Bang"}}, pairs_of(l.result))
  end)

  it("reports a child's failure as unhandled without consume_errors when nothing handles it", function()
    local seen = with_unhandled(function()
      local d = defer.new()
      local l = defer.list({d})
      d:errback("lost")
      assert.is_true(l.called)
    end)
    assert.are.equal(1, #seen)
    assert.are.equal("lost", seen[1].value)
  end)

  it("never reports a child's failure with consume_errors", function()
    local seen = with_unhandled(function()
      local d = defer.new()
      defer.list({d}, {consume_errors = true})
      d:errback("kept")
    end)
    assert.are.equal(0, #seen)
  end)

  it("calls on_progress(done, total) each time a child fires", function()
    local calls = {}
    local ds = {defer.new(), defer.new(), defer.new()}
    defer.list(ds, {on_progress = function(done, total)
      calls[#calls + 1] = done .. "/" .. total
    end})
    ds[2]:callback(1)
    ds[1]:callback(1)
    ds[3]:callback(1)
    assert.are.same({"1/3", "2/3", "3/3"}, calls)
  end)

  it("calls on_progress for children already fired when it was made", function()
    local calls = 0
    defer.list({defer.succeed(1), defer.succeed(2)}, {on_progress = function() calls = calls + 1 end})
    assert.are.equal(2, calls)
  end)

  it("copies the input: a deferred added to the table later is not part of it", function()
    local ds = {defer.new()}
    local l = defer.list(ds)
    local late = defer.new()
    ds[2] = late
    ds[1]:callback(1)
    assert.is_true(l.called)
    l:cancel()
    assert.is_false(late.called)
  end)

  describe("cancel", function()
    it("cancels every child that has not fired (Twisted test_cancelDeferredList)", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {consume_errors = true})
      l:cancel()
      assert.is_true(defer.is_a(l.result[1][2].value, defer.CancelledError))
      assert.is_true(defer.is_a(l.result[2][2].value, defer.CancelledError))
    end)

    it("keeps a child's canceller's callback value (Twisted test_cancelDeferredListCallback)", function()
      local d1 = defer.new(function(d) d:callback("Callback Result") end)
      local d2 = defer.new()
      local l = defer.list({d1, d2}, {consume_errors = true})
      l:cancel()
      assert.are.same({true, "Callback Result"}, {l.result[1][1], l.result[1][2]})
      assert.is_false(l.result[2][1])
    end)

    it("fires with {value, index} when a canceller calls back under fire_on_one_callback", function()
      local d1 = defer.new(function(d) d:callback("Callback Result") end)
      local l = defer.list({d1, defer.new()}, {fire_on_one_callback = true, consume_errors = true})
      l:cancel()
      assert.are.same({"Callback Result", 1}, l.result)
    end)

    it("fails with a FirstError of the CancelledError under fire_on_one_errback", function()
      local l = defer.list({defer.new(), defer.new()}, {fire_on_one_errback = true, consume_errors = true})
      l:cancel()
      assert.is_true(defer.is_a(l.result.value, defer.FirstError))
      assert.is_true(defer.is_a(l.result.value.failure.value, defer.CancelledError))
      l:add_errback(function() end)
    end)

    it("still cancels the other children when one canceller raises", function()
      local d1 = defer.new(function() error("canceller broke", 0) end)
      local d2 = defer.new()
      local seen = with_unhandled(function()
        local l = defer.list({d1, d2}, {consume_errors = true})
        l:cancel()
      end)
      assert.is_true(d2.called)
      assert.is_true(#seen >= 1)
    end)

    it("does nothing to the children once the list fired (Twisted test_cancelFiredOnOneCallbackDeferredList)", function()
      local d1, d2 = defer.new(), defer.new()
      local l = defer.list({d1, d2}, {fire_on_one_callback = true})
      d1:callback("first")
      l:cancel()
      assert.is_false(d2.called)
    end)
  end)

  describe("bad input", function()
    it("rejects a non-table", function()
      local ok, err = pcall(defer.list, 5)
      assert.is_false(ok)
      assert.truthy(err:find("bad argument #1 to 'list' (table expected, got number)", 1, true))
    end)

    it("rejects a non-deferred, naming its index", function()
      local d = defer.new()
      local ok, err = pcall(defer.list, {d, "x"})
      assert.is_false(ok)
      assert.truthy(err:find("index 2", 1, true))
      d:callback(1) -- d was left alone: no entry was added
      assert.are.equal(1, d.result)
    end)

    it("rejects an unknown option", function()
      local ok, err = pcall(defer.list, {}, {fire_on_one = true})
      assert.is_false(ok)
      assert.truthy(err:find("unknown option 'fire_on_one'", 1, true))
    end)

    it("rejects an on_progress that is not a function", function()
      local ok, err = pcall(defer.list, {}, {on_progress = 3})
      assert.is_false(ok)
      assert.truthy(err:find("on_progress", 1, true))
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
      assert.are.equal(n, #l.result)
      assert.are.same({true, n}, l.result[n])
    end)

    it("gathers a million and gives the memory back afterwards", function()
      collectgarbage("collect")
      local before = collectgarbage("count")
      do
        local n = scale(1000000)
        local ds = {}
        for i = 1, n do ds[i] = defer.new() end
        local g = defer.gather(ds)
        for i = n, 1, -1 do ds[i]:callback(i) end
        assert.are.equal(n, #g.result)
        assert.are.equal(7, g.result[7])
      end
      collectgarbage("collect")
      collectgarbage("collect")
      -- a little slack for interned strings and table growth elsewhere
      assert.is_true(collectgarbage("count") < before * 1.1 + 64)
    end)
  end)
end)

describe("defer.gather", function()
  it("fires with the values in input order (Twisted test_gatherResults)", function()
    local g = defer.gather({defer.succeed(1), defer.succeed(2)})
    assert.are.same({1, 2}, g.result)
  end)

  it("fires at once with {} for an empty list", function()
    assert.are.same({}, defer.gather({}).result)
  end)

  it("errbacks with a FirstError on the first failure", function()
    local d1, d2 = defer.new(), defer.new()
    local g = defer.gather({d1, d2})
    d2:errback("boom")
    assert.are.equal("failure", g:state())
    assert.are.equal(2, g.result.value.index)
    assert.are.equal("boom", g.result.value.failure.value)
    g:add_errback(function() end)
    d2:add_errback(function() end)
  end)

  it("hands the child's later errback nothing with consume_errors (Twisted test_gatherResultsWithConsumeErrors)", function()
    local d = defer.new()
    local g = defer.gather({d}, true)
    d:errback("x")
    local seen = false
    d:add_errback(function() seen = true end)
    assert.is_false(seen)
    assert.is_true(defer.is_a(g.result.value, defer.FirstError))
    g:add_errback(function() end)
  end)

  it("fails with a FirstError of a CancelledError when cancelled (Twisted test_cancelGatherResults)", function()
    local g = defer.gather({defer.new(), defer.new()}, true)
    g:cancel()
    assert.is_true(defer.is_a(g.result.value.failure.value, defer.CancelledError))
    g:add_errback(function() end)
  end)

  it("lets a callback return a gather that waits (Twisted test_continueCallbackNotFirst)", function()
    local a = defer.new()
    local got
    defer.succeed(nil):add_callback(function() return defer.gather({a}) end)
      :add_callback(function(v) got = v end)
    a:callback("withers")
    assert.are.same({"withers"}, got)
  end)
end)

describe("defer.race", function()
  it("fires with {value, index} of the first success and cancels the rest", function()
    local cancelled = {}
    local function canceller(i) return function() cancelled[#cancelled + 1] = i end end
    local a, b, c = defer.new(canceller(1)), defer.new(canceller(2)), defer.new(canceller(3))
    local r = defer.race({a, b, c})
    b:callback("B")
    assert.are.same({"B", 2}, r.result)
    table.sort(cancelled)
    assert.are.same({1, 3}, cancelled)
  end)

  it("ignores later successes", function()
    local a, b = defer.new(), defer.new()
    local r = defer.race({a, b})
    a:callback(1)
    assert.are.same({1, 1}, r.result)
  end)

  it("errbacks with a FailureGroup holding every failure in index order when all fail", function()
    local a, b = defer.new(), defer.new()
    local r = defer.race({a, b})
    b:errback("second")
    a:errback("first")
    local e = r.result.value
    assert.is_true(defer.is_a(e, defer.FailureGroup))
    assert.are.equal("first", e.failures[1].value)
    assert.are.equal("second", e.failures[2].value)
    r:add_errback(function() end)
  end)

  it("keeps the winner when a loser's canceller calls back (Twisted test_resultFromCancel)", function()
    local a = defer.new()
    local b = defer.new(function(d) d:callback("late") end)
    local r = defer.race({a, b})
    a:callback("expected")
    assert.are.same({"expected", 1}, r.result)
  end)

  it("cancels every input when cancelled, failing with a FailureGroup", function()
    local a, b = defer.new(), defer.new()
    local r = defer.race({a, b})
    r:cancel()
    assert.is_true(a.called and b.called)
    assert.is_true(defer.is_a(r.result.value, defer.FailureGroup))
    r:add_errback(function() end)
  end)

  it("never fires over an empty list", function()
    assert.is_false(defer.race({}).called)
  end)
end)

describe("examples/progress.lua", function()
  it("draws a bar from on_progress and ends with the summary", function()
    local out = helpers.run_lua("examples/progress.lua 500")
    if not out then pending("DEFER_SPEC_LUA is not set") return end
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(11, #lines) -- ten lines of 10% each, then the summary
    assert.truthy(lines[1]:find("50/500", 1, true))
    assert.truthy(lines[10]:find("[" .. ("#"):rep(40) .. "] 100% 500/500", 1, true))
    assert.are.equal("done: 500 jobs, 495 succeeded (sum of results 123750), 5 failed, first: job 100: timed out", lines[11])
  end)
end)
