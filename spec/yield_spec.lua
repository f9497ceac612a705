-- Yields from user code: defer calls callbacks, errbacks and cancellers from
-- Lua frames, so on Lua 5.2, 5.3, 5.4 and LuaJIT a callback may yield the
-- coroutine that fired its deferred; the chain stops mid-way and goes on
-- when the coroutine is resumed.  PUC Lua 5.1 cannot yield across the
-- protected call, so there the yield is an error that becomes a Failure.
local defer = require "defer"

local PUC51 = _VERSION == "Lua 5.1" and not jit

local function consume(d)
  d:add_errback(function() end)
end

describe("a callback that yields outside any coroutine", function()
  it("turns the error of the yield into a Failure of its deferred", function()
    local d = defer.new()
    d:add_callback(function() coroutine.yield("nowhere") return "not reached" end)
    d:callback(1)
    assert.are.equal("failure", d:state())
    assert.truthy(string.find(tostring(d.result.value), "yield", 1, true))
    consume(d)
  end)
end)

if PUC51 then
  describe("on PUC Lua 5.1, a callback that yields inside a coroutine", function()
    local function fire_in_coroutine(d, v)
      local co = coroutine.create(function() d:callback(v) return "done" end)
      return co, {coroutine.resume(co)}
    end

    it("fails its deferred with an error about yielding across a boundary", function()
      local d = defer.new()
      d:add_callback(function(v) coroutine.yield("paused") return v + 1 end)
      fire_in_coroutine(d, 1)
      assert.are.equal("failure", d:state())
      assert.truthy(string.find(tostring(d.result.value), "attempt to yield across", 1, true))
      consume(d)
    end)

    it("does not suspend the coroutine: firing returns and the coroutine ends", function()
      local d = defer.new()
      d:add_callback(function() coroutine.yield("paused") end)
      local co, res = fire_in_coroutine(d, 1)
      assert.are.same({true, "done"}, res)
      assert.are.equal("dead", coroutine.status(co))
      consume(d)
    end)

    it("sends the Failure on to the next errback", function()
      local got
      local d = defer.new()
      d:add_callback(function() coroutine.yield("paused") end)
      d:add_callback(function() got = "callback" end)
      d:add_errback(function(f) got = f end)
      fire_in_coroutine(d, 1)
      assert.is_true(defer.is_failure(got))
      assert.truthy(string.find(tostring(got.value), "yield", 1, true))
    end)
  end)
  return
end

describe("a callback that yields the coroutine that fired its deferred", function()
  -- d's first callback yields "paused" and then returns its input + 1; the
  -- second records what it sees.
  local log, d, co

  before_each(function()
    log = {}
    d = defer.new()
    d:add_callback(function(v)
      log[#log + 1] = "cb1 " .. v
      local r = coroutine.yield("paused")
      log[#log + 1] = "resumed with " .. tostring(r)
      return v + 1
    end)
    d:add_callback(function(v)
      log[#log + 1] = "cb2 " .. v
      return v * 10
    end)
    co = coroutine.create(function()
      d:callback(10)
      return "done"
    end)
  end)

  it("suspends the coroutine: resume gives true and the yielded value", function()
    assert.are.same({true, "paused"}, {coroutine.resume(co)})
    assert.are.equal("suspended", coroutine.status(co))
  end)

  it("leaves the chain mid-way: the second callback has not run", function()
    coroutine.resume(co)
    assert.are.same({"cb1 10"}, log)
  end)

  it("leaves the deferred called while suspended", function()
    coroutine.resume(co)
    assert.is_true(d.called)
  end)

  it("lets other deferreds fire and run their callbacks meanwhile", function()
    coroutine.resume(co)
    local got
    local other = defer.new()
    other:add_callback(function(v) got = v * 2 return got end)
    other:callback(21)
    assert.are.equal(42, got)
    assert.are.equal(42, other.result)
  end)

  it("lets other deferreds chain and cancel meanwhile", function()
    coroutine.resume(co)
    local inner = defer.new()
    local outer = defer.succeed(1):add_callback(function() return inner end)
    inner:callback("chained")
    assert.are.equal("chained", outer.result)
    local c = defer.new()
    c:cancel()
    assert.is_true(defer.is_a(c.result.value, defer.CancelledError))
    consume(c)
  end)

  it("queues a callback added to the suspended deferred instead of running it", function()
    coroutine.resume(co)
    local ran = false
    d:add_callback(function(v) ran = true return v end)
    assert.is_false(ran)
    assert.are.same({"cb1 10"}, log)
  end)

  it("hands the resume value to the yield inside the callback", function()
    coroutine.resume(co)
    coroutine.resume(co, "R")
    assert.are.equal("resumed with R", log[2])
  end)

  it("finishes the chain with the right values when resumed", function()
    coroutine.resume(co)
    assert.are.same({true, "done"}, {coroutine.resume(co, "R")})
    assert.are.same({"cb1 10", "resumed with R", "cb2 11"}, log)
    assert.are.equal(110, d.result)
    assert.are.equal("success", d:state())
  end)

  it("runs a callback queued while suspended after the rest of the chain", function()
    coroutine.resume(co)
    d:add_callback(function(v) log[#log + 1] = "cb3 " .. v return v end)
    coroutine.resume(co, "R")
    assert.are.same({"cb1 10", "resumed with R", "cb2 11", "cb3 110"}, log)
  end)

  it("runs callbacks added after the chain finished at once again", function()
    coroutine.resume(co)
    coroutine.resume(co, "R")
    local got
    d:add_callback(function(v) got = v end)
    assert.are.equal(110, got)
  end)

  it("raises AlreadyCalledError for a second fire while suspended, and finishes later", function()
    coroutine.resume(co)
    local ok, err = pcall(d.callback, d, 0)
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.AlreadyCalledError))
    coroutine.resume(co, "R")
    assert.are.equal(110, d.result)
  end)
end)

describe("a coroutine suspended in a callback", function()
  it("may yield several times in one callback", function()
    local d = defer.new()
    d:add_callback(function(v)
      local a = coroutine.yield("one")
      local b = coroutine.yield("two")
      return v + a + b
    end)
    local co = coroutine.create(function() d:callback(1) end)
    assert.are.same({true, "one"}, {coroutine.resume(co)})
    assert.are.same({true, "two"}, {coroutine.resume(co, 10)})
    assert.are.same({true}, {coroutine.resume(co, 100)})
    assert.are.equal(111, d.result)
  end)

  it("turns an error raised after resuming into a Failure of the chain", function()
    local got
    local d = defer.new()
    d:add_callback(function()
      coroutine.yield("paused")
      error("after resume", 0)
    end)
    d:add_errback(function(f) got = f.value end)
    local co = coroutine.create(function() d:callback(1) return "done" end)
    coroutine.resume(co)
    assert.are.same({true, "done"}, {coroutine.resume(co)})
    assert.are.equal("after resume", got)
  end)

  it("may be one of two, each suspended in its own deferred, resumed in reverse order", function()
    local function make(tag)
      local d = defer.new()
      d:add_callback(function(v) coroutine.yield(tag) return v .. tag end)
      d:add_callback(function(v) return v .. "!" end)
      local co = coroutine.create(function() d:callback("x") end)
      return d, co
    end
    local d1, co1 = make("1")
    local d2, co2 = make("2")
    coroutine.resume(co1)
    coroutine.resume(co2)
    coroutine.resume(co2)
    assert.are.equal("x2!", d2.result)
    assert.are_not.equal("x1!", d1.result)
    coroutine.resume(co1)
    assert.are.equal("x1!", d1.result)
  end)

  it("may be in an errback", function()
    local d = defer.new()
    d:add_errback(function(f) return coroutine.yield(f.value) end)
    local co = coroutine.create(function() d:errback("bad") end)
    assert.are.same({true, "bad"}, {coroutine.resume(co)})
    coroutine.resume(co, "recovered")
    assert.are.equal("recovered", d.result)
    assert.are.equal("success", d:state())
  end)

  it("may be in a callback run at once by add_callback on a fired deferred", function()
    local d = defer.succeed(5)
    local co = coroutine.create(function()
      d:add_callback(function(v) return v + coroutine.yield("in add") end)
      return "added"
    end)
    assert.are.same({true, "in add"}, {coroutine.resume(co)})
    assert.are.same({true, "added"}, {coroutine.resume(co, 1)})
    assert.are.equal(6, d.result)
  end)

  it("may be in a canceller, and the CancelledError follows when it returns", function()
    local d = defer.new(function() coroutine.yield("cancelling") end)
    local co = coroutine.create(function() d:cancel() return "cancelled" end)
    assert.are.same({true, "cancelling"}, {coroutine.resume(co)})
    assert.are.equal("pending", d:state())
    assert.are.same({true, "cancelled"}, {coroutine.resume(co)})
    assert.is_true(defer.is_a(d.result.value, defer.CancelledError))
    consume(d)
  end)
end)

describe("a yield in the callback of a deferred chained to another", function()
  local inner, outer, co

  before_each(function()
    inner = defer.new()
    inner:add_callback(function(v) return v .. coroutine.yield("inner paused") end)
    outer = defer.new()
    outer:add_callback(function() return inner end)
    outer:add_callback(function(v) return v .. "+outer" end)
    outer:callback(0)
    co = coroutine.create(function() inner:callback("in") return "done" end)
  end)

  it("suspends the coroutine that fired the inner deferred", function()
    assert.are.same({true, "inner paused"}, {coroutine.resume(co)})
  end)

  it("keeps the outer deferred waiting while suspended", function()
    coroutine.resume(co)
    assert.are_not.equal("in-out+outer", outer.result)
    assert.truthy(string.find(tostring(outer), "waiting on", 1, true))
  end)

  it("hands the value on to the outer deferred when resumed", function()
    coroutine.resume(co)
    assert.are.same({true, "done"}, {coroutine.resume(co, "-out")})
    assert.are.equal("in-out+outer", outer.result)
    assert.are.equal("success", outer:state())
  end)

  it("leaves nil on the inner deferred once handed over", function()
    coroutine.resume(co)
    coroutine.resume(co, "-out")
    assert.is_nil(inner.result)
  end)
end)
