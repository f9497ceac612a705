-- Chaining from the user's side: a callback or errback that returns a
-- Deferred, the steal and wait cases, paused inner deferreds, the order of
-- the callbacks across chained deferreds (Twisted's tests of section 2.7,
-- translated one by one), the self-return, and depth: a million callbacks,
-- a million nested deferreds, a million chain() links, on a flat C stack.
local defer = require "defer"
local helpers = require "helpers"

local scale = helpers.scale

local function consume(d)
  d:add_errback(function() end)
end

local RuntimeError = defer.error_type("RuntimeError")

describe("a callback that returns a fired Deferred (the steal case)", function()
  it("gives its result to the outer chain at once (test_synchronousImplicitChain)", function()
    local first = defer.succeed("result")
    local second = defer.new()
    second:add_callback(function() return first end)
    second:callback(nil)
    local got
    second:add_callback(function(v) got = v end)
    assert.are.equal("result", got)
  end)

  it("leaves nil to the returned deferred's later callbacks (test_synchronousImplicitChain)", function()
    local first = defer.succeed("result")
    local second = defer.new()
    second:add_callback(function() return first end)
    second:callback(nil)
    local got = "untouched"
    first:add_callback(function(v) got = v end)
    assert.is_nil(got)
  end)

  it("lets the outer chain go on before the firing call returns", function()
    local log = {}
    local d = defer.new()
    d:add_callback(function() return defer.succeed(7) end)
    d:add_callback(function(v) log[#log + 1] = v end)
    d:callback(0)
    log[#log + 1] = "returned"
    assert.are.same({7, "returned"}, log)
  end)

  it("takes the returned deferred's result after its own callbacks", function()
    local inner = defer.succeed(2):add_callback(function(v) return v * 10 end)
    local d = defer.succeed(0):add_callback(function() return inner end)
    assert.are.equal(20, d.result)
  end)

  it("moves a failed deferred's Failure to the outer chain (test_synchronousImplicitErrorChain)", function()
    local e = RuntimeError("inner failed")
    local first = defer.fail(e)
    local second = defer.new()
    second:add_callback(function() return first end)
    second:callback(nil)
    assert.are.equal("failure", second:state())
    assert.are.equal(e, second.result.value)
    consume(second)
  end)

  it("leaves the failed deferred a success with nil (test_synchronousImplicitErrorChain)", function()
    local first = defer.fail(RuntimeError("inner failed"))
    local second = defer.new()
    second:add_callback(function() return first end)
    second:callback(nil)
    local got = "untouched"
    first:add_callback(function(v) got = v end)
    assert.is_nil(got)
    consume(second)
  end)

  it("moves the very Failure object to the outer chain", function()
    local f = defer.failure("same object")
    local got
    defer.succeed(0)
      :add_callback(function() return defer.fail(f) end)
      :add_errback(function(x) got = x end)
    assert.are.equal(f, got)
  end)
end)

describe("a callback that returns an unfired Deferred (the wait case)", function()
  it("holds the outer chain until the returned one fires", function()
    local inner = defer.new()
    local got = "not yet"
    defer.succeed(0)
      :add_callback(function() return inner end)
      :add_callback(function(v) got = v end)
    assert.are.equal("not yet", got)
    inner:callback("now")
    assert.are.equal("now", got)
  end)

  it("keeps the outer deferred called while it waits", function()
    local inner = defer.new()
    local outer = defer.succeed(0):add_callback(function() return inner end)
    assert.is_true(outer.called)
  end)

  it("queues callbacks added to the waiting outer deferred until the value arrives", function()
    local inner = defer.new()
    local outer = defer.succeed(0):add_callback(function() return inner end)
    local got = "not yet"
    outer:add_callback(function(v) got = v end)
    assert.are.equal("not yet", got)
    inner:callback(5)
    assert.are.equal(5, got)
  end)

  it("hands the inner result over after the inner callbacks added before the return", function()
    local log = {}
    local inner = defer.new()
    inner:add_callback(function(v) log[#log + 1] = "inner-pre " .. v return v .. "!" end)
    local outer = defer.succeed(0):add_callback(function() return inner end)
    outer:add_callback(function(v) log[#log + 1] = "outer " .. v end)
    inner:add_callback(function(v) log[#log + 1] = "inner-post " .. tostring(v) end)
    inner:callback("S")
    assert.are.same({"inner-pre S", "outer S!", "inner-post nil"}, log)
  end)

  it("gives the outer errback the same Failure the inner one errbacked with", function()
    local f = defer.failure("inner failure")
    local inner = defer.new()
    local got
    defer.succeed(0)
      :add_callback(function() return inner end)
      :add_errback(function(x) got = x end)
    inner:errback(f)
    assert.are.equal(f, got)
  end)

  it("waits on the returned deferred and then goes on with its value (test_callbackReturnsDeferred)", function()
    local d1, d2 = defer.new(), defer.new()
    d2:pause()
    local got = "not yet"
    d1:add_callback(function() return d2 end)
    d1:add_callback(function(v) got = v end)
    d1:callback(1)
    assert.are.equal("not yet", got)
    d2:callback(2)
    assert.are.equal("not yet", got)
    d2:unpause()
    assert.are.equal(2, got)
  end)

  it("waits on a deferred returned by an errback (test_errbackReturnsDeferred)", function()
    local first, second = defer.new(), defer.new()
    local got = "not yet"
    first:add_errback(function() return second end)
    first:add_callback(function(v) got = v end)
    first:errback(RuntimeError("x"))
    assert.are.equal("not yet", got)
    second:callback("result")
    assert.are.equal("result", got)
  end)

  it("gives the returned deferred's later callbacks nil (test_asynchronousImplicitChain)", function()
    local first, second = defer.new(), defer.new()
    second:add_callback(function() return first end)
    second:callback(nil)
    local first_result, second_result = {}, {}
    first:add_callback(function(v) first_result[#first_result + 1] = tostring(v) end)
    second:add_callback(function(v) second_result[#second_result + 1] = v end)
    assert.are.same({}, first_result)
    assert.are.same({}, second_result)
    first:callback("r")
    assert.are.same({"nil"}, first_result)
    assert.are.same({"r"}, second_result)
  end)

  it("hands a later errback over to the outer errback, then recovers (test_asynchronousImplicitErrorChain)", function()
    local e = RuntimeError("First Deferred's Failure")
    local first, second = defer.new(), defer.new()
    second:add_callback(function() return first end)
    second:callback(nil)
    local second_error, first_result, second_result = {}, {}, {}
    second:add_errback(function(f) second_error[#second_error + 1] = f end)
    first:add_callback(function(v) first_result[#first_result + 1] = tostring(v) end)
    second:add_callback(function(v) second_result[#second_result + 1] = tostring(v) end)
    assert.are.same({}, first_result)
    assert.are.same({}, second_result)
    first:errback(e)
    assert.are.equal(1, #second_error)
    assert.are.equal(e, second_error[1].value)
    assert.are.same({"nil"}, first_result)
    assert.are.same({"nil"}, second_result)
  end)

  it("chains transitively, third on second on first (test_doubleAsynchronousImplicitChaining)", function()
    local first, second, third = defer.new(), defer.new(), defer.new()
    second:add_callback(function() return first end)
    third:add_callback(function() return second end)
    local got = {}
    third:add_callback(function(v) got[#got + 1] = v end)
    second:callback(nil)
    third:callback(nil)
    assert.are.same({}, got)
    first:callback("result")
    assert.are.same({"result"}, got)
  end)

  it("leaves nil on the middle deferred of three once all fired (test_resultOfDeferredResultOfDeferredOfFiredDeferredCalled)", function()
    local first, second, third = defer.new(), defer.new(), defer.new()
    first:add_callback(function() return second end)
    second:add_callback(function() return third end)
    second:callback(nil)
    first:callback(nil)
    third:callback("value")
    local results = {}
    second:add_callback(function(v) results[#results + 1] = tostring(v) end)
    assert.are.same({"nil"}, results)
  end)
end)

describe("a paused returned Deferred", function()
  it("holds the outer chain while paused even with a result (test_chainedPausedDeferredWithResult)", function()
    local paused = defer.new()
    paused:callback("expected")
    paused:pause()
    local chained = defer.new()
    chained:add_callback(function() return paused end)
    chained:callback(nil)
    local result = {}
    chained:add_callback(function(v) result[#result + 1] = v end)
    assert.are.same({}, result)
    paused:unpause()
    assert.are.same({"expected"}, result)
  end)

  it("holds the outer chain while paused and unfired, until fired and unpaused", function()
    local inner = defer.new()
    inner:pause()
    local got = "not yet"
    defer.succeed(0)
      :add_callback(function() return inner end)
      :add_callback(function(v) got = v end)
    inner:unpause()
    assert.are.equal("not yet", got)
    inner:callback("fired")
    assert.are.equal("fired", got)
  end)

  it("still hands its value to a paused outer deferred (test_pausedDeferredChained)", function()
    local first, second = defer.new(), defer.new()
    first:add_callback(function() return second end)
    first:callback(nil)
    first:pause()
    second:callback(nil)
    local result = {}
    second:add_callback(function(v) result[#result + 1] = tostring(v) end)
    assert.are.same({"nil"}, result)
  end)

  it("lets a paused outer deferred go on with the value once unpaused", function()
    local first, second = defer.new(), defer.new()
    local got = "not yet"
    first:add_callback(function() return second end)
    first:add_callback(function(v) got = v end)
    first:callback(nil)
    first:pause()
    second:callback("handed")
    assert.are.equal("not yet", got)
    first:unpause()
    assert.are.equal("handed", got)
  end)
end)

describe("the order of callbacks across chained deferreds", function()
  it("runs the inner chain's callbacks before the outer's next one (test_innerCallbacksPreserved)", function()
    local results, failures = {}, {}
    local inner = defer.new()
    local function cb(result)
      results[#results + 1] = "start-of-cb " .. result
      local d = defer.succeed("inner")
      d:add_callback(function()
        results[#results + 1] = "firstCallback inner"
        return inner
      end)
      d:add_callback(function(r)
        results[#results + 1] = "secondCallback " .. r
        return r .. r
      end)
      d:add_errback(function(f) failures[#failures + 1] = f end)
      return d
    end
    local outer = defer.succeed("outer")
    outer:add_callback(cb)
    inner:callback("orange")
    outer:add_callback(function(v) results[#results + 1] = v end)
    inner:add_errback(function(f) failures[#failures + 1] = f end)
    outer:add_errback(function(f) failures[#failures + 1] = f end)
    assert.are.same({}, failures)
    assert.are.same({"start-of-cb outer", "firstCallback inner",
                     "secondCallback orange", "orangeorange"}, results)
  end)

  it("runs the outer's final callback after the inner chain's second callback (test_callbackOrderPreserved)", function()
    local results, failures = {}, {}
    local a = defer.new()
    local function cb(result)
      results[#results + 1] = "cb " .. tostring(result)
      local d = defer.new()
      d:add_callback(function(ignored)
        results[#results + 1] = "firstCallback " .. tostring(ignored)
        return a -- Twisted returns gatherResults([a]); a itself keeps the order under test
      end)
      d:add_callback(function(r) results[#results + 1] = "secondCallback " .. r end)
      d:add_errback(function(f) failures[#failures + 1] = f end)
      d:callback(nil)
      return d
    end
    local outer = defer.new()
    outer:add_callback(cb)
    outer:add_callback(function() results[#results + 1] = "final" end)
    outer:add_errback(function(f) failures[#failures + 1] = f end)
    outer:callback(nil)
    assert.are.same({"cb nil", "firstCallback nil"}, results)
    a:callback("withers")
    assert.are.same({}, failures)
    assert.are.same({"cb nil", "firstCallback nil", "secondCallback withers", "final"}, results)
  end)

  it("delivers nested deferreds fired out of order (test_nestedAsynchronousChainedDeferreds)", function()
    local results, failures = {}, {}
    local inner = defer.new()
    local function cb(result)
      results[#results + 1] = "start-of-cb " .. result
      local d = defer.succeed("inner")
      d:add_callback(function()
        results[#results + 1] = "firstCallback inner"
        return inner
      end)
      d:add_callback(function(r)
        results[#results + 1] = "secondCallback " .. r
        return r .. r
      end)
      d:add_errback(function(f) failures[#failures + 1] = f end)
      return d
    end
    local outer = defer.succeed("outer")
    outer:add_callback(cb)
    outer:add_callback(function(v) results[#results + 1] = v end)
    assert.are.same({"start-of-cb outer", "firstCallback inner"}, results)
    inner:callback("orange")
    inner:add_errback(function(f) failures[#failures + 1] = f end)
    outer:add_errback(function(f) failures[#failures + 1] = f end)
    assert.are.same({}, failures)
    assert.are.same({"start-of-cb outer", "firstCallback inner",
                     "secondCallback orange", "orangeorange"}, results)
  end)

  it("applies an inner transform callback to nested deferreds fired out of order (test_nestedAsynchronousChainedDeferredsWithExtraCallbacks)", function()
    local results, failures = {}, {}
    local inner = defer.new()
    local function cb(result)
      results[#results + 1] = {"start-of-cb", result}
      local d = defer.succeed("inner")
      d:add_callback(function(ignored)
        results[#results + 1] = {"firstCallback", ignored}
        return inner:add_callback(function(x) return {x} end)
      end)
      d:add_callback(function(r)
        results[#results + 1] = {"secondCallback", r}
        return {r[1], r[1]}
      end)
      d:add_errback(function(f) failures[#failures + 1] = f end)
      return d
    end
    local outer = defer.succeed("outer")
    outer:add_callback(cb)
    outer:add_callback(function(v) results[#results + 1] = v end)
    assert.are.same({{"start-of-cb", "outer"}, {"firstCallback", "inner"}}, results)
    inner:callback("withers")
    outer:add_errback(function(f) failures[#failures + 1] = f end)
    inner:add_errback(function(f) failures[#failures + 1] = f end)
    assert.are.same({}, failures)
    assert.are.same({{"start-of-cb", "outer"}, {"firstCallback", "inner"},
                     {"secondCallback", {"withers"}}, {"withers", "withers"}}, results)
  end)
end)

describe("a callback that returns the Deferred it is on (test_circularChain)", function()
  it("turns the result into a Failure", function()
    local d = defer.new()
    d:add_callback(function() return d end)
    d:callback(1)
    assert.are.equal("failure", d:state())
    assert.is_true(defer.is_failure(d.result))
    consume(d)
  end)

  it("does not hang: the next errback runs with that Failure", function()
    local d = defer.new()
    local got
    d:add_callback(function() return d end)
    d:add_errback(function(f) got = f end)
    d:callback(1)
    assert.is_true(defer.is_failure(got))
  end)

  it("skips the callbacks after it", function()
    local ran = false
    local d = defer.new()
    d:add_callback(function() return d end)
    d:add_callback(function() ran = true end)
    d:callback(1)
    assert.is_false(ran)
    consume(d)
  end)
end)

describe("depth", function()
  it("runs a chain of a million callbacks on one deferred", function()
    local n = scale(1000000)
    local d = defer.new()
    local function inc(v) return v + 1 end
    for _ = 1, n do d:add_callback(inc) end
    d:callback(0)
    assert.are.equal("success", d:state())
    assert.are.equal(n, d.result)
  end)

  it("unwinds a nest of a million deferreds fired innermost last", function()
    local n = scale(1000000)
    local ds = {}
    for i = 1, n + 1 do ds[i] = defer.new() end
    local function next_of(_, i) return ds[i + 1] end
    local function inc(v) return v + 1 end
    for i = 1, n do ds[i]:add_callback(next_of, i):add_callback(inc) end
    for i = 1, n do ds[i]:callback(i) end
    assert.is_true(ds[1].called)
    ds[n + 1]:callback(0)
    assert.are.equal("success", ds[1]:state())
    assert.are.equal(n, ds[1].result)
  end)

  it("unwinds a failure through a nest of a million deferreds fired innermost last", function()
    local n = scale(1000000)
    local ds = {}
    for i = 1, n + 1 do ds[i] = defer.new() end
    local function next_of(_, i) return ds[i + 1] end
    for i = 1, n do ds[i]:add_callback(next_of, i) end
    for i = 1, n do ds[i]:callback(i) end
    local f = defer.failure("innermost failed")
    ds[n + 1]:errback(f)
    assert.are.equal("failure", ds[1]:state())
    assert.are.equal(f, ds[1].result)
    consume(ds[1])
  end)

  it("runs a million callbacks that each return an already fired deferred (nestnow)", function()
    local n = scale(1000000)
    local d = defer.new()
    local function nest(v) return defer.succeed(v + 1) end
    for _ = 1, n do d:add_callback(nest) end
    d:callback(0)
    assert.are.equal("success", d:state())
    assert.are.equal(n, d.result)
  end)

  it("runs a chain() line of a million deferreds fired at the first", function()
    local n = scale(1000000)
    local ds = {}
    for i = 1, n do ds[i] = defer.new() end
    for i = 1, n - 1 do ds[i]:chain(ds[i + 1]) end
    ds[1]:callback("end")
    assert.are.equal("success", ds[n]:state())
    assert.are.equal("end", ds[n].result)
    assert.is_nil(ds[1].result)
  end)

  it("carries a failure down a chain() line of a million deferreds", function()
    local n = scale(1000000)
    local ds = {}
    for i = 1, n do ds[i] = defer.new() end
    for i = 1, n - 1 do ds[i]:chain(ds[i + 1]) end
    local f = defer.failure("sent down")
    ds[1]:errback(f)
    assert.are.equal(f, ds[n].result)
    assert.are.equal("success", ds[1]:state())
    consume(ds[n])
  end)
end)
