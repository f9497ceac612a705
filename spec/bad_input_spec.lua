-- Misuse from the user's side: every public function of the Deferred and
-- the Failure, given a wrong type, a missing argument or nil, raises at once
-- with a message naming the function and the argument, as Lua's own
-- luaL_argerror does (for a method, arguments are counted after self), and
-- leaves the object as it was.
local defer = require "defer"

-- The message of the error f(...) raises; fails the test when it does not.
local function message_of(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error to be raised")
  return tostring(err)
end

local function assert_mentions(msg, parts)
  for _, part in ipairs(parts) do
    assert.truthy(string.find(msg, part, 1, true), ("%q not found in %q"):format(part, msg))
  end
end

local function leak() return "leaked" end

-- Misuse of a method on a pending deferred d.  `call(d)` makes the bad call;
-- any valid function it passes is `leak`, which must not end up in the chain.
local deferred_cases = {
  {"add_callback(42)", function(d) d:add_callback(42) end,
   {"bad argument #1 to 'add_callback'", "function expected, got number"}},
  {"add_callback()", function(d) d:add_callback() end,
   {"bad argument #1 to 'add_callback'", "function expected"}},
  {"add_callback(nil, extra)", function(d) d:add_callback(nil, "extra") end,
   {"bad argument #1 to 'add_callback'", "function expected"}},
  {"add_errback('x')", function(d) d:add_errback("x") end,
   {"bad argument #1 to 'add_errback'", "function expected, got string"}},
  {"add_errback()", function(d) d:add_errback() end,
   {"bad argument #1 to 'add_errback'", "function expected"}},
  {"add_both({})", function(d) d:add_both({}) end,
   {"bad argument #1 to 'add_both'", "function expected, got table"}},
  {"add_both()", function(d) d:add_both() end,
   {"bad argument #1 to 'add_both'", "function expected"}},
  {"add_callbacks(42, f)", function(d) d:add_callbacks(42, leak) end,
   {"bad argument #1 to 'add_callbacks'", "function expected"}},
  {"add_callbacks(f, 42)", function(d) d:add_callbacks(leak, 42) end,
   {"bad argument #2 to 'add_callbacks'", "function expected"}},
  {"add_callbacks(nil, 'x')", function(d) d:add_callbacks(nil, "x") end,
   {"bad argument #2 to 'add_callbacks'", "function expected"}},
  {"errback()", function(d) d:errback() end,
   {"bad argument #1 to 'errback'"}},
  {"errback(nil)", function(d) d:errback(nil) end,
   {"bad argument #1 to 'errback'"}},
  {"callback(a pending Deferred)", function(d) d:callback(defer.new()) end,
   {"callback"}},
  {"callback(a fired Deferred)", function(d) d:callback(defer.succeed(1)) end,
   {"callback"}},
  {"chain(5)", function(d) d:chain(5) end,
   {"bad argument #1 to 'chain'"}},
  {"chain()", function(d) d:chain() end,
   {"bad argument #1 to 'chain'"}},
  {"chain({})", function(d) d:chain({}) end,
   {"bad argument #1 to 'chain'"}},
  {"unpause() without pause", function(d) d:unpause() end,
   {"unpause"}},
  {"add_timeout('soon')", function(d) d:add_timeout("soon") end,
   {"bad argument #1 to 'add_timeout'"}},
  {"add_timeout()", function(d) d:add_timeout() end,
   {"bad argument #1 to 'add_timeout'"}},
  {"add_timeout(-1)", function(d) d:add_timeout(-1) end,
   {"bad argument #1 to 'add_timeout'"}},
  {"add_timeout(1, 42)", function(d) d:add_timeout(1, 42) end,
   {"bad argument #2 to 'add_timeout'"}},
}

describe("a Deferred method given bad input", function()
  for _, case in ipairs(deferred_cases) do
    local label, call, parts = case[1], case[2], case[3]

    it(("raises at once from d:%s naming the function and the argument"):format(label), function()
      assert_mentions(message_of(call, defer.new()), parts)
    end)

    it(("leaves the deferred pending after d:%s"):format(label), function()
      local d = defer.new()
      pcall(call, d)
      assert.are.equal("pending", d:state())
      assert.is_false(d.called)
      assert.is_nil(d.result)
      assert.are.equal(0, d.paused)
    end)

    it(("still runs the callbacks, and only those, after d:%s"):format(label), function()
      local log = {}
      local d = defer.new()
      d:add_callback(function(v) log[#log + 1] = v return v end)
      pcall(call, d)
      d:add_callback(function(v) log[#log + 1] = v + 1 return v end)
      d:callback(7)
      assert.are.same({7, 8}, log)
      assert.are.equal(7, d.result)
    end)
  end

  it("does not count an unpause without a pause against a later pause", function()
    local d = defer.new()
    pcall(d.unpause, d)
    d:pause()
    d:callback(1)
    assert.are.equal(1, d.paused)
    d:unpause()
    assert.are.equal(0, d.paused)
  end)
end)

describe("a Deferred method called on something that is not a Deferred", function()
  local d = defer.new()
  local methods = {
    {"callback", 1}, {"errback", "e"}, {"add_callback", leak}, {"add_errback", leak},
    {"add_both", leak}, {"add_callbacks", leak}, {"pause"}, {"unpause"},
    {"cancel"}, {"chain", defer.new()}, {"state"}, {"add_timeout", 1},
  }
  for _, m in ipairs(methods) do
    local name, arg = m[1], m[2]
    it(("raises naming '%s' and a Deferred expected for a number as self"):format(name), function()
      assert_mentions(message_of(d[name], 5, arg), {name, "Deferred expected"})
    end)
  end

  it("raises naming 'callback' and a Deferred expected for a plain table as self", function()
    assert_mentions(message_of(d.callback, {}, 1), {"callback", "Deferred expected"})
  end)

  it("raises naming 'callback' and a Deferred expected for a Failure as self", function()
    assert_mentions(message_of(d.callback, defer.failure("x"), 1), {"callback", "Deferred expected"})
  end)

  it("raises naming 'cancel' and a Deferred expected for nil as self", function()
    assert_mentions(message_of(d.cancel, nil), {"cancel", "Deferred expected"})
  end)

  it("leaves the deferred the method was taken from untouched", function()
    local got
    local e = defer.new():add_callback(function(v) got = v end)
    pcall(e.callback, 5, 1)
    assert.are.equal("pending", e:state())
    e:callback(2)
    assert.are.equal(2, got)
  end)
end)

describe("defer.new", function()
  it("raises for a number canceller: bad argument #1 to 'new' (function expected, got number)", function()
    assert_mentions(message_of(defer.new, 5),
      {"bad argument #1 to 'new' (function expected, got number)"})
  end)

  it("raises for a string canceller naming 'new' and #1", function()
    assert_mentions(message_of(defer.new, "x"),
      {"bad argument #1 to 'new'", "function expected, got string"})
  end)

  it("raises for a table canceller naming 'new' and #1", function()
    assert_mentions(message_of(defer.new, {}), {"bad argument #1 to 'new'", "function expected"})
  end)

  it("accepts nil as no canceller", function()
    assert.are.equal("pending", defer.new(nil):state())
  end)
end)

describe("the helpers given bad input", function()
  it("raise from defer.fail() naming 'fail' and #1", function()
    assert_mentions(message_of(defer.fail), {"bad argument #1 to 'fail'"})
  end)

  it("raise from defer.fail(nil) naming 'fail' and #1", function()
    assert_mentions(message_of(defer.fail, nil), {"bad argument #1 to 'fail'"})
  end)

  it("raise from defer.maybe(3) naming 'maybe', #1 and a function expected", function()
    assert_mentions(message_of(defer.maybe, 3),
      {"bad argument #1 to 'maybe'", "function expected, got number"})
  end)

  it("raise from defer.maybe() naming 'maybe' and #1", function()
    assert_mentions(message_of(defer.maybe), {"bad argument #1 to 'maybe'", "function expected"})
  end)
end)

describe("the Failure functions given bad input", function()
  local T = defer.error_type("SomeError")

  it("raise from defer.failure() naming 'failure' and #1", function()
    assert_mentions(message_of(defer.failure), {"bad argument #1 to 'failure'"})
  end)

  it("raise from defer.failure(nil) naming 'failure' and #1", function()
    assert_mentions(message_of(defer.failure, nil), {"bad argument #1 to 'failure'"})
  end)

  it("raise from defer.failure with a number traceback naming 'failure' and #2", function()
    assert_mentions(message_of(defer.failure, "x", 42), {"bad argument #2 to 'failure'"})
  end)

  it("raise from defer.error_type(42) naming 'error_type' and #1", function()
    assert_mentions(message_of(defer.error_type, 42), {"bad argument #1 to 'error_type'"})
  end)

  it("raise from defer.error_type() naming 'error_type' and #1", function()
    assert_mentions(message_of(defer.error_type), {"bad argument #1 to 'error_type'"})
  end)

  it("raise from defer.error_type with a parent that is not a type naming 'error_type' and #2", function()
    assert_mentions(message_of(defer.error_type, "X", 42), {"bad argument #2 to 'error_type'"})
  end)

  it("raise from defer.is_a(e, 42) naming 'is_a' and #2", function()
    assert_mentions(message_of(defer.is_a, T("x"), 42), {"bad argument #2 to 'is_a'"})
  end)

  it("raise from defer.is_a(e) naming 'is_a' and #2", function()
    assert_mentions(message_of(defer.is_a, T("x")), {"bad argument #2 to 'is_a'"})
  end)

  it("raise from f:check(42) naming 'check'", function()
    local f = defer.failure(T("x"))
    assert_mentions(message_of(f.check, f, 42), {"check"})
  end)

  it("raise from f:check with a bad type after a good one naming 'check'", function()
    local f = defer.failure(T("x"))
    assert_mentions(message_of(f.check, f, defer.CancelledError, "x"), {"check"})
  end)

  it("raise from f:trap(42) naming 'trap', not re-raising the failure", function()
    local f = defer.failure(T("x"))
    local ok, err = pcall(f.trap, f, 42)
    assert.is_false(ok)
    assert.is_false(defer.is_failure(err))
    assert_mentions(tostring(err), {"trap"})
  end)

  it("leave the Failure as it was after a bad check", function()
    local e = T("x")
    local f = defer.failure(e)
    pcall(f.check, f, 42)
    assert.are.equal(e, f.value)
    assert.are.equal(T, f:check(T))
  end)

  for _, name in ipairs({"check", "trap", "message", "raise"}) do
    it(("raise naming '%s' when self is not a Failure"):format(name), function()
      local f = defer.failure("x")
      local ok, err = pcall(f[name], 5, T)
      assert.is_false(ok)
      assert.are_not.equal(5, err)
      assert_mentions(tostring(err), {name})
    end)
  end
end)

describe("defer.on_unhandled given bad input", function()
  local previous
  before_each(function() previous = defer.on_unhandled(function() end) end)
  after_each(function() defer.on_unhandled(previous) end)

  it("raises for a number naming 'on_unhandled' and #1", function()
    assert_mentions(message_of(defer.on_unhandled, 42), {"bad argument #1 to 'on_unhandled'"})
  end)

  it("raises for a string naming 'on_unhandled' and #1", function()
    assert_mentions(message_of(defer.on_unhandled, "x"), {"bad argument #1 to 'on_unhandled'"})
  end)

  it("keeps the handler in place after a bad call", function()
    local mine = function() end
    defer.on_unhandled(mine)
    pcall(defer.on_unhandled, 42)
    assert.are.equal(mine, defer.on_unhandled(mine))
  end)
end)
