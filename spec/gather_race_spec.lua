-- defer.gather and defer.race, from the user's side: the API clauses,
-- Twisted's gatherResults tests (TWISTED.md 1.13, 2.3) and race tests (H8,
-- 2.4) one by one, bad input, scale and memory; and examples/progress.lua.
local defer = require "defer"
local helpers = require "helpers"
local scale, errmsg, with_unhandled = helpers.scale, helpers.errmsg, helpers.with_unhandled

local function is_cancelled(f)
  return defer.is_failure(f) and defer.is_a(f.value, defer.CancelledError)
end

local function handled(d) d:add_errback(function() end) end

-- A deferred whose canceller counts its calls in counts[i].
local function counted(counts, i, on_cancel)
  counts[i] = 0
  return defer.new(function(d)
    counts[i] = counts[i] + 1
    if on_cancel then on_cancel(d) end
  end)
end

describe("defer.gather", function()
  describe("API clauses", function()
    it("fires with the array of values in input order", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local g = defer.gather({a, b, c})
      c:callback("c")
      a:callback("a")
      assert.is_false(g.called)
      b:callback("b")
      assert.are.same({"a", "b", "c"}, g.result)
    end)

    it("errbacks with a FirstError on the first failure", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local g = defer.gather({a, b, c}, true)
      a:callback(1)
      local f = defer.failure("b broke")
      b:errback(f)
      assert.are.equal("failure", g:state())
      local e = g.result.value
      assert.is_true(defer.is_a(e, defer.FirstError))
      assert.are.equal(f, e.failure)
      assert.are.equal(2, e.index)
      assert.are.equal("FirstError: item 2 failed: b broke", tostring(e))
      c:errback("later") -- later results are ignored (G3)
      assert.are.equal(e, g.result.value)
      handled(g)
    end)

    it("consume_errors: the children's failures are never reported as unhandled", function()
      local seen = with_unhandled(function()
        local a, b = defer.new(), defer.new()
        local g = defer.gather({a, b}, true)
        a:errback("one")
        b:errback("two")
        handled(g)
      end)
      assert.are.same({}, seen)
    end)

    it("without consume_errors a child's failure still reaches on_unhandled when nothing handles it", function()
      local seen = with_unhandled(function()
        local a = defer.new()
        local g = defer.gather({a})
        a:errback("reported")
        handled(g)
      end)
      assert.are.equal(1, #seen)
      assert.are.equal("reported", seen[1].value)
    end)

    it("reports nothing when the FirstError is handled and the children are consumed", function()
      local seen = with_unhandled(function()
        local g = defer.gather({defer.fail("x"), defer.new()}, true)
        g:add_errback(function(f) return f.value.index end)
      end)
      assert.are.same({}, seen)
    end)
  end)

  describe("Twisted G1-G5", function()
    it("G1: a success hands each child's value on unchanged", function()
      local d = defer.new()
      defer.gather({d})
      local got
      d:add_callback(function(v) got = v end)
      d:callback("v")
      assert.are.equal("v", got)
    end)

    it("G2: an empty input gives {} at once", function()
      local g = defer.gather({})
      assert.is_true(g.called)
      assert.are.same({}, g.result)
    end)

    it("G2: values in index order, not completion order", function()
      local ds = {}
      for i = 1, 5 do ds[i] = defer.new() end
      local g = defer.gather(ds)
      for i = 5, 1, -1 do ds[i]:callback(i * 2) end
      assert.are.same({2, 4, 6, 8, 10}, g.result)
    end)

    it("G3: the FirstError wraps the child's failure, not the raw error", function()
      local g = defer.gather({defer.fail("raw")}, true)
      assert.is_true(defer.is_a(g.result.value, defer.FirstError))
      assert.are.equal("raw", g.result.value.failure.value)
      handled(g)
    end)

    it("G4: cancel cancels every child; the result is a FirstError of the CancelledError", function()
      local counts = {}
      local g = defer.gather({counted(counts, 1), counted(counts, 2)}, true)
      g:cancel()
      assert.are.same({1, 1}, counts)
      assert.is_true(is_cancelled(g.result.value.failure))
      assert.are.equal(1, g.result.value.index)
      handled(g)
    end)
  end)

  describe("Twisted tests (TWISTED.md 2.3)", function()
    it("test_gatherResults", function()
      local results = {}
      defer.gather({defer.succeed(1), defer.succeed(2)}):add_callback(function(r) results[#results + 1] = r end)
      assert.are.same({{1, 2}}, results)
      local errors = {}
      local ValueError = defer.error_type("ValueError")
      local failing = defer.fail(ValueError("bad"))
      defer.gather({defer.succeed(1), failing}):add_errback(function(f) errors[#errors + 1] = f end)
      assert.are.equal(1, #errors)
      assert.is_true(defer.is_a(errors[1].value, defer.FirstError))
      handled(failing)
    end)

    it("test_gatherResultsWithConsumeErrors", function()
      local RuntimeError = defer.error_type("RuntimeError")
      local dgood = defer.succeed(1)
      local dbad = defer.fail(RuntimeError("oh noes"))
      local d = defer.gather({dgood, dbad}, true)
      local unconsumed, gathered = {}, {}
      dbad:add_errback(function(f) unconsumed[#unconsumed + 1] = f end)
      d:add_errback(function(f) gathered[#gathered + 1] = f end)
      assert.are.same({}, unconsumed)
      assert.are.equal(1, #gathered)
      local e = gathered[1].value
      assert.is_true(defer.is_a(e, defer.FirstError))
      assert.is_true(defer.is_a(e.failure.value, RuntimeError))
    end)

    it("test_cancelGatherResults", function()
      local d1, d2 = defer.new(), defer.new()
      local g = defer.gather({d1, d2})
      g:cancel()
      assert.is_true(is_cancelled(d1.result))
      assert.is_true(is_cancelled(d2.result))
      assert.is_true(defer.is_a(g.result.value, defer.FirstError))
      assert.is_true(is_cancelled(g.result.value.failure))
      handled(g) handled(d1) handled(d2)
    end)

    it("test_cancelGatherResultsWithAllDeferredsCallback", function()
      local function cb(d) d:callback("Callback Result") end
      local g = defer.gather({defer.new(cb), defer.new(cb)})
      g:cancel()
      assert.are.same({"Callback Result", "Callback Result"}, g.result)
    end)

    it("test_continueCallbackNotFirst", function()
      local a = defer.new()
      local got
      defer.succeed(nil)
        :add_callback(function() return defer.gather({a}) end)
        :add_callback(function(v) got = v end)
      assert.is_nil(got)
      a:callback("withers")
      assert.are.same({"withers"}, got)
    end)
  end)

  describe("bad input", function()
    it("rejects a non-table", function()
      assert.truthy(errmsg(defer.gather, "x"):find("bad argument #1 to 'gather' (table expected, got string)", 1, true))
    end)

    it("rejects a non-deferred, naming its index", function()
      local err = errmsg(defer.gather, {defer.new(), defer.new(), 3})
      assert.truthy(err:find("bad argument #1 to 'gather' (Deferred expected at index 3, got number)", 1, true))
    end)

    it("rejects a consume_errors that is not a boolean", function()
      local err = errmsg(defer.gather, {}, {consume_errors = true})
      assert.truthy(err:find("bad argument #2 to 'gather' (boolean expected, got table)", 1, true))
    end)
  end)

  describe("at scale", function()
    it("gathers a million and gives the memory back afterwards", function()
      collectgarbage("collect")
      collectgarbage("collect")
      local before = collectgarbage("count")
      do
        local n = scale(1000000)
        local ds = {}
        for i = 1, n do ds[i] = defer.new() end
        local g = defer.gather(ds)
        for i = n, 1, -1 do ds[i]:callback(i) end
        local r = g.result
        assert.are.equal(n, #r)
        assert.are.equal(7, r[7])
        assert.are.equal(n, r[n])
      end
      collectgarbage("collect")
      collectgarbage("collect")
      local after = collectgarbage("count")
      assert.is_true(after < before + 256, ("%.0f KB before, %.0f KB after"):format(before, after))
    end)

    it("errbacks at the first of a million failures and lets the rest go", function()
      local n = scale(1000000)
      local ds = {}
      for i = 1, n do ds[i] = defer.new() end
      local g = defer.gather(ds, true)
      ds[n]:errback("last first")
      assert.are.equal(n, g.result.value.index)
      -- one Failure for all: an error value that is not one yet costs a traceback each
      local later = defer.failure("later", "")
      for i = 1, n - 1 do ds[i]:errback(later) end
      assert.are.equal(n, g.result.value.index)
      handled(g)
    end)
  end)
end)

describe("defer.race", function()
  describe("API clauses and Twisted H8", function()
    it("fires with {value, index} of the first success", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local r = defer.race({a, b, c})
      assert.is_false(r.called)
      b:callback("B")
      assert.are.same({"B", 2}, r.result)
    end)

    it("cancels the rest, never the winner, before its own callbacks run", function()
      local counts, order = {}, {}
      local a, b, c = counted(counts, 1), counted(counts, 2), counted(counts, 3)
      local r = defer.race({a, b, c})
      r:add_callback(function(v) order[#order + 1] = "race fired" return v end)
      a:add_both(function() order[#order + 1] = "a done" end)
      b:callback("B")
      assert.are.same({1, 0, 1}, counts)
      assert.are.same({"a done", "race fired"}, order)
    end)

    it("ignores later successes", function()
      local a, b = defer.new(), defer.new()
      local r = defer.race({a, b})
      a:callback(1)
      b:callback(2) -- b was cancelled (no canceller): one late fire is swallowed
      assert.are.same({1, 1}, r.result)
    end)

    it("errbacks with a FailureGroup holding every failure in index order when all fail", function()
      local a, b, c = defer.new(), defer.new(), defer.new()
      local r = defer.race({a, b, c})
      c:errback("third")
      a:errback("first")
      assert.is_false(r.called)
      b:errback("second")
      local e = r.result.value
      assert.are.equal(defer.FailureGroup, e.type)
      assert.are.equal(3, #e.failures)
      assert.are.equal("first", e.failures[1].value)
      assert.are.equal("second", e.failures[2].value)
      assert.are.equal("third", e.failures[3].value)
      assert.are.equal("FailureGroup: all 3 deferreds failed", tostring(e))
      handled(r)
    end)

    it("waits for a success after some failures", function()
      local a, b = defer.new(), defer.new()
      local r = defer.race({a, b})
      a:errback("no")
      b:callback("yes")
      assert.are.same({"yes", 2}, r.result)
    end)

    it("cancels every input when cancelled, failing with a FailureGroup", function()
      local counts = {}
      local r = defer.race({counted(counts, 1), counted(counts, 2)})
      r:cancel()
      assert.are.same({1, 1}, counts)
      assert.is_true(defer.is_a(r.result.value, defer.FailureGroup))
      assert.is_true(is_cancelled(r.result.value.failures[1]))
      assert.is_true(is_cancelled(r.result.value.failures[2]))
      handled(r)
    end)

    it("never fires over an empty list", function()
      local r = defer.race({})
      assert.is_false(r.called)
    end)

    it("counts the winner's index from 1 (exact points)", function()
      assert.are.same({"only", 1}, defer.race({defer.succeed("only")}).result)
    end)

    it("takes an input that had already succeeded at once, and cancels the others", function()
      local counts = {}
      local later = counted(counts, 2)
      local r = defer.race({defer.succeed("early"), later})
      assert.are.same({"early", 1}, r.result)
      assert.are.equal(1, counts[2])
      assert.is_true(is_cancelled(later.result) or later.result == nil)
    end)

    it("hands nil on down every input's chain, as Twisted's race does", function()
      local a, b = defer.new(), defer.new()
      defer.race({a, b})
      a:callback("won")
      local after_a, after_b = "unset", "unset"
      a:add_callback(function(v) after_a = v end)
      b:add_both(function(v) after_b = v end)
      assert.is_nil(after_a)
      assert.is_nil(after_b)
    end)

    it("never reports the losers' CancelledErrors or the inputs' failures as unhandled", function()
      local seen = with_unhandled(function()
        local r = defer.race({defer.new(), defer.new(), defer.new()})
        assert.is_false(r.called)
        local ds = {defer.new(), defer.new()}
        local r2 = defer.race(ds)
        ds[1]:errback("x")
        ds[2]:callback("y")
        assert.are.same({"y", 2}, r2.result)
      end)
      assert.are.same({}, seen)
    end)
  end)

  describe("Twisted tests (TWISTED.md 2.4)", function()
    it("test_success: any number of inputs before and after the winner", function()
      for before = 0, 3 do
        for after = 0, 3 do
          local counts, ds = {}, {}
          for i = 1, before + 1 + after do ds[i] = counted(counts, i) end
          local winner = before + 1
          local r = defer.race(ds)
          ds[winner]:callback("value")
          assert.are.same({"value", winner}, r.result)
          local expected = {}
          for i = 1, before + 1 + after do expected[i] = i == winner and 0 or 1 end
          assert.are.same(expected, counts)
        end
      end
    end)

    it("test_failure: every input fails the same way; nothing is cancelled", function()
      for n = 1, 4 do
        local counts, ds = {}, {}
        for i = 1, n do ds[i] = counted(counts, i) end
        local r = defer.race(ds)
        local f = defer.failure("same")
        for i = 1, n do ds[i]:errback(f) end
        local failures = r.result.value.failures
        assert.are.equal(n, #failures)
        for i = 1, n do
          assert.are.equal(f, failures[i])
          assert.are.equal(0, counts[i])
        end
        handled(r)
      end
    end)

    it("test_resultAfterCancel: inputs without cancellers that both succeed; nothing logged", function()
      local seen = with_unhandled(function()
        local a, b = defer.new(), defer.new()
        local r = defer.race({a, b})
        a:callback(nil)
        b:callback(nil)
        assert.are.same({nil, 1}, r.result)
        assert.are.equal(1, r.result[2])
      end)
      assert.are.same({}, seen)
    end)

    it("test_resultFromCancel: a loser's canceller that calls back changes nothing", function()
      local a = defer.new()
      local b = defer.new(function(d) d:callback("loser") end)
      local r = defer.race({a, b})
      a:callback("expected")
      assert.are.same({"expected", 1}, r.result)
    end)

    it("test_cancel: cancelling the race cancels each input once and fails with a FailureGroup", function()
      for n = 1, 3 do
        local counts, ds = {}, {}
        for i = 1, n do ds[i] = counted(counts, i) end
        local r = defer.race(ds)
        r:cancel()
        for i = 1, n do assert.are.equal(1, counts[i]) end
        assert.is_true(defer.is_a(r.result.value, defer.FailureGroup))
        assert.are.equal(n, #r.result.value.failures)
        handled(r)
      end
    end)
  end)

  describe("cancellers that misbehave", function()
    it("reports a loser's canceller that raises and still cancels the others", function()
      local counts = {}
      local a = defer.new()
      local b = defer.new(function() error("loser broke", 0) end)
      local c = counted(counts, 3)
      local r
      local seen = with_unhandled(function()
        r = defer.race({a, b, c})
        a:callback("A")
      end)
      assert.are.same({"A", 1}, r.result)
      assert.are.equal(1, counts[3])
      assert.are.equal(1, #seen)
      assert.are.equal("loser broke", seen[1].value)
    end)

    it("lets a loser's canceller fire another input", function()
      local a, c = defer.new(), defer.new()
      local b = defer.new(function(d) c:callback("from b's canceller") d:callback("b") end)
      local r = defer.race({a, b, c})
      a:callback("A")
      assert.are.same({"A", 1}, r.result)
      assert.is_true(c.called)
    end)
  end)

  describe("bad input", function()
    it("rejects a non-table and a non-deferred", function()
      assert.truthy(errmsg(defer.race, 1):find("bad argument #1 to 'race' (table expected, got number)", 1, true))
      assert.truthy(errmsg(defer.race, {defer.new(), false}):find(
        "bad argument #1 to 'race' (Deferred expected at index 2, got boolean)", 1, true))
    end)
  end)

  describe("at scale", function()
    it("races a million: the last to be made wins and every other is cancelled", function()
      local n = scale(1000000)
      -- the losers' canceller fails them with one Failure: a CancelledError
      -- made per loser would cost a traceback each
      local stopped, calls = defer.failure("stopped", ""), 0
      local function canceller(d)
        calls = calls + 1
        d:errback(stopped)
      end
      local ds = {}
      for i = 1, n do ds[i] = defer.new(canceller) end
      local r = defer.race(ds)
      ds[n]:callback("won")
      assert.are.same({"won", n}, r.result)
      assert.are.equal(n - 1, calls)
      assert.is_true(ds[1].called and ds[n - 1].called)
    end)

    it("races two thousand that are cancelled with CancelledErrors", function()
      local n = 2000
      local ds = {}
      for i = 1, n do ds[i] = defer.new() end
      local r = defer.race(ds)
      ds[1]:callback("first")
      assert.are.same({"first", 1}, r.result)
      assert.is_true(ds[n].called)
    end)
  end)
end)

describe("examples/progress.lua", function()
  it("draws a line per 10% from on_progress, then the summary", function()
    local out = helpers.run_lua("examples/progress.lua 500")
    if not out then pending("DEFER_SPEC_LUA is not set") return end
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(11, #lines, out)
    assert.are.equal("[####" .. ("."):rep(36) .. "]  10% 50/500", lines[1])
    for i = 1, 10 do
      local pct = ("%3d%%"):format(10 * i)
      assert.truthy(lines[i]:find(pct .. " " .. 50 * i .. "/500", 1, true), lines[i])
    end
    assert.are.equal("[" .. ("#"):rep(40) .. "] 100% 500/500", lines[10])
    assert.are.equal("done: 500 jobs, 495 succeeded (sum of results 123750), 5 failed, "
      .. "first: job 100: timed out", lines[11])
  end)

  it("runs with the default count", function()
    local out = helpers.run_lua("examples/progress.lua")
    if not out then pending("DEFER_SPEC_LUA is not set") return end
    assert.truthy(out:find("done: 3000 jobs, 2970 succeeded", 1, true), out)
  end)
end)
