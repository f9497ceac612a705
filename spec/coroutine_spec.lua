-- defer.spawn, defer.await and defer.async.  Catching an error raised by an
-- await that suspends needs pcall across a yield: PUC Lua 5.1 cannot do
-- that, LuaJIT and Lua 5.2+ can; the specs that need it say so.
local defer = require "defer"

local PUC51 = _VERSION == "Lua 5.1" and not jit

local ValueError = defer.error_type("ValueError")

-- The result d fired with: ok (true for a success) and the value or Failure.
-- Adding this last handles a failure, so nothing is reported as unhandled.
local function result_of(d)
  local ok, value = nil, nil
  d:add_callbacks(function(v) ok, value = true, v end,
                  function(f) ok, value = false, f end)
  return ok, value
end

local function recorder()
  local list = {}
  return list, function(x) list[#list + 1] = x end
end

-- Defines the spec only where pcall can catch across an await that suspends
-- (busted's own `it`, so that a failure points at the spec's line).
local it_with_pcall_across_yield = it
if PUC51 then it_with_pcall_across_yield = function() end end

describe("defer.spawn", function()
  it("runs f at once, before spawn returns", function()
    local list, log = recorder()
    defer.spawn(function() log("in f") end)
    log("after spawn")
    assert.are.same({"in f", "after spawn"}, list)
  end)

  it("runs f in a new coroutine", function()
    local outer = coroutine.running()
    local inner
    defer.spawn(function() inner = coroutine.running() end)
    assert.are.equal("thread", type(inner))
    assert.are_not.equal(outer, inner)
  end)

  it("passes its extra arguments to f, nils included", function()
    local got
    defer.spawn(function(...) got = {n = select("#", ...), ...} end, "a", nil, 3)
    assert.are.same({n = 3, "a", nil, 3}, got)
  end)

  it("returns a Deferred that fires with f's return value", function()
    local d = defer.spawn(function(a, b) return a + b end, 20, 22)
    assert.are.same({true, 42}, {result_of(d)})
  end)

  it("returns a Deferred that fails with f's error as a Failure of the value raised", function()
    local raised = {reason = "broken"}
    local d = defer.spawn(function() error(raised) end)
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.is_true(defer.is_failure(f))
    assert.are.equal(raised, f.value)
  end)

  it("gives the Failure of f's error a traceback that shows where it was raised", function()
    local function explode() error("Oh no!") end
    local d = defer.spawn(function() explode() end)
    local _, f = result_of(d)
    assert.is_string(f.traceback)
    assert.matches("explode", f.traceback)
  end)

  it("gives an error raised after an await a traceback that shows where it was raised", function()
    local function explode() error("Oh no!") end
    local wait = defer.new()
    local d = defer.spawn(function() defer.await(wait); explode() end)
    wait:callback(nil)
    local _, f = result_of(d)
    assert.is_string(f.traceback)
    assert.matches("explode", f.traceback)
  end)

  it("returns a Deferred that stays pending while f waits", function()
    local d = defer.spawn(function() return defer.await(defer.new()) end)
    assert.are.equal("pending", d:state())
  end)
end)

describe("defer.await", function()
  it("suspends the coroutine until the Deferred fires", function()
    local list, log = recorder()
    local d = defer.new()
    defer.spawn(function()
      log("before await")
      log(defer.await(d))
    end)
    log("spawn returned")
    d:callback("fired")
    assert.are.same({"before await", "spawn returned", "fired"}, list)
  end)

  it("returns the very value the Deferred fired with", function()
    local value = {}
    local d = defer.new()
    local got
    defer.spawn(function() got = defer.await(d) end)
    d:callback(value)
    assert.are.equal(value, got)
  end)

  it("lets the spawned Deferred fire with what f returns after the await", function()
    local d = defer.new()
    local s = defer.spawn(function() return defer.await(d) * 2 end)
    d:callback(21)
    assert.are.same({true, 42}, {result_of(s)})
  end)

  it("returns at once on a Deferred that has already fired", function()
    local list, log = recorder()
    local s = defer.spawn(function()
      log(defer.await(defer.succeed("ready")))
      return "finished"
    end)
    log("spawn returned")
    assert.are.same({"ready", "spawn returned"}, list)
    assert.are.same({true, "finished"}, {result_of(s)})
  end)

  it("raises the Failure of a Deferred that fails: the spawned Deferred fails with it", function()
    local raised = ValueError("Boom")
    local d = defer.new()
    local after = false
    local s = defer.spawn(function() defer.await(d); after = true end)
    d:errback(raised)
    local ok, f = result_of(s)
    assert.is_false(ok)
    assert.are.equal(raised, f.value)
    assert.is_false(after)
  end)

  it("brings a string error across as a Failure with a traceback string", function()
    local d = defer.new()
    local s = defer.spawn(function() return defer.await(d) end)
    d:errback("disk full")
    local _, f = result_of(s)
    assert.is_true(defer.is_failure(f))
    assert.are.equal("disk full", f.value)
    assert.is_string(f.traceback)
  end)

  it("raises at once on a Deferred that has already failed, catchable with pcall", function()
    local caught
    defer.spawn(function()
      local ok, e = pcall(defer.await, defer.fail(ValueError("Boom")))
      caught = {ok, e}
    end)
    assert.is_false(caught[1])
    assert.is_true(defer.is_failure(caught[2]))
    assert.are.equal("Boom", caught[2].value.message)
  end)

  it_with_pcall_across_yield("raises the Failure as the error value, catchable with pcall (Lua 5.2+, LuaJIT)", function()
    local raised = ValueError("Boom")
    local d = defer.new()
    local caught
    defer.spawn(function()
      local ok, e = pcall(defer.await, d)
      caught = {ok, e}
    end)
    d:errback(raised)
    assert.is_false(caught[1])
    assert.is_true(defer.is_failure(caught[2]))
    assert.are.equal(raised, caught[2].value)
  end)

  if PUC51 then
    it("fails inside pcall on PUC Lua 5.1, with an error about yielding", function()
      local caught
      defer.spawn(function()
        local ok, e = pcall(defer.await, defer.new())
        caught = {ok, tostring(e)}
      end)
      assert.is_false(caught[1])
      assert.matches("yield", caught[2])
    end)

    it("leaves the Deferred alone after an await inside pcall failed on PUC Lua 5.1", function()
      local d = defer.new()
      local s = defer.spawn(function()
        pcall(defer.await, d)
        return "went on"
      end)
      d:callback("d's own value")
      assert.are.same({true, "d's own value"}, {result_of(d)})
      assert.are.same({true, "went on"}, {result_of(s)})
    end)
  else
    it("works inside pcall on Lua 5.2+ and LuaJIT", function()
      local d = defer.new()
      local caught
      defer.spawn(function()
        caught = {pcall(defer.await, d)}
      end)
      d:callback("through pcall")
      assert.are.same({true, "through pcall"}, caught)
    end)
  end

  it("raises a clear error outside any coroutine", function()
    local ok, e = pcall(defer.await, defer.new())
    assert.is_false(ok)
    assert.matches("await", tostring(e))
    assert.matches("spawn", tostring(e))
  end)

  it("raises a clear error in a coroutine that spawn did not start", function()
    local co = coroutine.create(function() return defer.await(defer.new()) end)
    local ok, e = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("await", tostring(e))
    assert.matches("spawn", tostring(e))
  end)

  it("rejects an argument that is not a Deferred, naming the function", function()
    local caught
    defer.spawn(function()
      local ok, e = pcall(defer.await, 42)
      caught = {ok, tostring(e)}
    end)
    assert.is_false(caught[1])
    assert.matches("await", caught[2])
  end)

  it("waits on a loop's sleep until the manual clock reaches it", function()
    local loop = defer.new_loop{clock = "manual"}
    local woke_at
    defer.spawn(function()
      defer.await(loop:sleep(3))
      woke_at = loop:time()
    end)
    loop:advance(2.5)
    assert.is_nil(woke_at)
    loop:advance(0.5)
    assert.are.equal(3, woke_at)
  end)
end)

describe("defer.async", function()
  it("returns a function", function()
    assert.is_function(defer.async(function() end))
  end)

  it("does not run f until the function it returns is called", function()
    local ran = false
    defer.async(function() ran = true end)
    assert.is_false(ran)
  end)

  it("returns a function that spawns f with its arguments and returns its Deferred", function()
    local add = defer.async(function(a, b) return a + b end)
    assert.are.same({true, 7}, {result_of(add(3, 4))})
  end)

  it("returns a function that starts a new coroutine on every call", function()
    local gates = {defer.new(), defer.new()}
    local wait_for = defer.async(function(i) return defer.await(gates[i]) end)
    local first, second = wait_for(1), wait_for(2)
    gates[2]:callback("two")
    assert.are.equal("pending", first:state())
    assert.are.same({true, "two"}, {result_of(second)})
    gates[1]:callback("one")
    assert.are.same({true, "one"}, {result_of(first)})
  end)

  it("rejects an argument that is not a function, naming the function", function()
    local ok, e = pcall(defer.async, "not a function")
    assert.is_false(ok)
    assert.matches("async", tostring(e))
  end)
end)

describe("cancelling the Deferred of a spawned coroutine", function()
  it("cancels the Deferred the coroutine awaits", function()
    local cancelled = 0
    local inner = defer.new(function() cancelled = cancelled + 1 end)
    local s = defer.spawn(function() return defer.await(inner) end)
    s:cancel()
    assert.are.equal(1, cancelled)
    result_of(s)
  end)

  it("raises the CancelledError at the await: the code after it does not run", function()
    local inner = defer.new()
    local after = false
    local s = defer.spawn(function() defer.await(inner); after = true end)
    s:cancel()
    local ok, f = result_of(s)
    assert.is_false(ok)
    assert.is_true(defer.is_a(f.value, defer.CancelledError))
    assert.is_false(after)
  end)

  it("raises at the await whatever the awaited Deferred's canceller gave", function()
    local inner = defer.new(function(self) self:callback("stopped early") end)
    local s = defer.spawn(function() return "got " .. defer.await(inner) end)
    s:cancel()
    assert.are.same({true, "got stopped early"}, {result_of(s)})
  end)

  it_with_pcall_across_yield("lets the coroutine catch the CancelledError (Lua 5.2+, LuaJIT)", function()
    local caught
    local s = defer.spawn(function()
      local ok, e = pcall(defer.await, defer.new())
      caught = {ok, e}
    end)
    s:cancel()
    assert.is_false(caught[1])
    assert.is_true(defer.is_failure(caught[2]))
    assert.is_true(defer.is_a(caught[2].value, defer.CancelledError))
    result_of(s)
  end)

  it_with_pcall_across_yield("fires with the coroutine's return value when it catches the error and returns", function()
    local s = defer.spawn(function()
      local ok = pcall(defer.await, defer.new())
      return ok and "not cancelled" or "cleaned up"
    end)
    s:cancel()
    assert.are.same({true, "cleaned up"}, {result_of(s)})
  end)

  it_with_pcall_across_yield("stays pending while a coroutine that caught it goes on to await more", function()
    local next_step = defer.new()
    local s = defer.spawn(function()
      pcall(defer.await, defer.new())
      return "then " .. defer.await(next_step)
    end)
    s:cancel()
    assert.are.equal("pending", s:state())
    next_step:callback("done")
    assert.are.same({true, "then done"}, {result_of(s)})
  end)

  it_with_pcall_across_yield("cancels the next awaited Deferred on a second cancel (test_inlineCallbacksCancelCaptured)", function()
    local first_cancels, second_cancels = 0, 0
    local first = defer.new(function() first_cancels = first_cancels + 1 end)
    local second = defer.new(function() second_cancels = second_cancels + 1 end)
    local s = defer.spawn(function()
      pcall(defer.await, first)
      return defer.await(second)
    end)
    s:cancel()
    assert.are.same({1, 0}, {first_cancels, second_cancels})
    assert.are.equal("pending", s:state())
    s:cancel()
    assert.are.same({1, 1}, {first_cancels, second_cancels})
    local ok, f = result_of(s)
    assert.is_false(ok)
    assert.is_true(defer.is_a(f.value, defer.CancelledError))
  end)

  it("does nothing once the coroutine has finished", function()
    local s = defer.spawn(function() return "done" end)
    s:cancel()
    assert.are.same({true, "done"}, {result_of(s)})
  end)
end)

describe("coroutines, as Twisted's test_defer_await", function()
  it("test_twoDeep: a coroutine awaiting a coroutine, each sleeping on a manual clock", function()
    local loop = defer.new_loop{clock = "manual"}
    local sections = {}
    local function section(n) sections[#sections + 1] = n end

    local runone = defer.async(function()
      section(2)
      defer.await(loop:sleep(1))
      section(3)
      return "Yay!"
    end)
    local run = defer.async(function()
      section(1)
      local result = defer.await(runone())
      section(4)
      defer.await(loop:sleep(1))
      section(5)
      return result
    end)

    local d = run()
    loop:advance(0.9)
    assert.are.same({1, 2}, sections)
    loop:advance(0.1)
    assert.are.same({1, 2, 3, 4}, sections)
    loop:advance(0.9)
    assert.are.same({1, 2, 3, 4}, sections)
    loop:advance(0.1)
    assert.are.same({1, 2, 3, 4, 5}, sections)
    assert.are.same({true, "Yay!"}, {result_of(d)})
  end)

  it("test_reraise: awaiting an already failed Deferred raises its error in the coroutine", function()
    local d = defer.spawn(function()
      local ok, e = pcall(defer.await, defer.fail(ValueError("Boom")))
      if not ok and e:check(ValueError) then
        assert.are.equal("Boom", e.value.message)
        return 1
      end
      return 0
    end)
    assert.are.same({true, 1}, {result_of(d)})
  end)

  it("test_exception: an error raised in the coroutine fails its Deferred", function()
    local d = defer.spawn(function() error(ValueError("Oh no!")) end)
    local ok, f = result_of(d)
    assert.is_false(ok)
    assert.are.equal(ValueError, f:check(ValueError))
    assert.are.equal("Oh no!", f.value.message)
  end)
end)
