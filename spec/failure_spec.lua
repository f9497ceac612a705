-- Errors and failures from the user's side: the error types and
-- defer.error_type, defer.is_a, the Failure (value, traceback, check, trap,
-- message, raise, tostring), what a raising callback turns into, and the
-- report of unhandled failures when a failed deferred is collected.
local defer = require "defer"

local function raised(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error to be raised")
  return err
end

local function collect()
  collectgarbage("collect")
  collectgarbage("collect")
end

local BUILTIN = {
  "CancelledError", "TimeoutError", "AlreadyCalledError", "FirstError",
  "QueueOverflow", "QueueUnderflow", "FailureGroup",
}

describe("the built-in error types", function()
  for _, name in ipairs(BUILTIN) do
    it(("include defer.%s, whose tostring names it"):format(name), function()
      local T = defer[name]
      assert.is_not_nil(T)
      assert.truthy(string.find(tostring(T), name, 1, true))
    end)

    it(("make an error object with type and message when defer.%s is called"):format(name), function()
      local e = defer[name]("it went wrong")
      assert.are.equal(defer[name], e.type)
      assert.are.equal("it went wrong", e.message)
    end)

    it(("print an error object of defer.%s as Name: message"):format(name), function()
      assert.are.equal(name .. ": it went wrong", tostring(defer[name]("it went wrong")))
    end)

    it(("make defer.is_a true for an error object of defer.%s and its type"):format(name), function()
      assert.is_true(defer.is_a(defer[name]("x"), defer[name]))
    end)
  end

  it("print a TimeoutError as TimeoutError: 5 s passed", function()
    assert.are.equal("TimeoutError: 5 s passed", tostring(defer.TimeoutError("5 s passed")))
  end)

  it("give a message that is a string", function()
    assert.are.equal("string", type(defer.CancelledError("stop").message))
  end)

  it("keep a TimeoutError apart from a CancelledError", function()
    assert.is_false(defer.is_a(defer.TimeoutError("late"), defer.CancelledError))
    assert.is_false(defer.is_a(defer.CancelledError("stop"), defer.TimeoutError))
  end)

  it("take a FirstError's failure and index from the second table", function()
    local f = defer.failure("first one")
    local e = defer.FirstError("msg", {failure = f, index = 2})
    assert.are.equal(f, e.failure)
    assert.are.equal(2, e.index)
    assert.are.equal("msg", e.message)
    assert.are.equal(defer.FirstError, e.type)
  end)

  it("take a FailureGroup's failures from the second table", function()
    local fs = {defer.failure("a"), defer.failure("b")}
    local e = defer.FailureGroup("all failed", {failures = fs})
    assert.are.equal(fs[1], e.failures[1])
    assert.are.equal(fs[2], e.failures[2])
    assert.are.equal(2, #e.failures)
  end)
end)

describe("defer.error_type", function()
  it("makes a type whose tostring names it", function()
    local T = defer.error_type("NetError")
    assert.truthy(string.find(tostring(T), "NetError", 1, true))
  end)

  it("makes a type whose error objects print as Name: message", function()
    local T = defer.error_type("NetError")
    assert.are.equal("NetError: host down", tostring(T("host down")))
  end)

  it("makes a type whose error objects carry it and the message", function()
    local T = defer.error_type("NetError")
    local e = T("host down")
    assert.are.equal(T, e.type)
    assert.are.equal("host down", e.message)
    assert.is_true(defer.is_a(e, T))
  end)

  it("makes a derived type whose error objects are also of the parent type", function()
    local Net = defer.error_type("NetError")
    local Dns = defer.error_type("DnsError", Net)
    assert.is_true(defer.is_a(Dns("no such host"), Net))
    assert.is_true(defer.is_a(Dns("no such host"), Dns))
  end)

  it("does not make a parent's error objects of the derived type", function()
    local Net = defer.error_type("NetError")
    local Dns = defer.error_type("DnsError", Net)
    assert.is_false(defer.is_a(Net("down"), Dns))
  end)

  it("makes derivation transitive", function()
    local A = defer.error_type("A")
    local B = defer.error_type("B", A)
    local C = defer.error_type("C", B)
    assert.is_true(defer.is_a(C("c"), A))
  end)

  it("derives from a built-in type", function()
    local MyCancel = defer.error_type("MyCancel", defer.CancelledError)
    assert.is_true(defer.is_a(MyCancel("stop"), defer.CancelledError))
    assert.is_false(defer.is_a(MyCancel("stop"), defer.TimeoutError))
  end)

  it("makes a new type each time, even for the same name", function()
    local A1 = defer.error_type("Same")
    local A2 = defer.error_type("Same")
    assert.are_not.equal(A1, A2)
    assert.is_false(defer.is_a(A1("x"), A2))
  end)
end)

describe("defer.is_a", function()
  local T = defer.error_type("SomeError")

  for _, case in ipairs({{"a string", "SomeError: x"}, {"a number", 42},
                         {"a plain table", {}}, {"true", true}}) do
    it("is false for " .. case[1], function()
      assert.is_false(defer.is_a(case[2], T))
    end)
  end

  it("is false for nil", function()
    assert.is_false(defer.is_a(nil, T))
  end)

  it("is false for an error object of an unrelated type", function()
    local U = defer.error_type("OtherError")
    assert.is_false(defer.is_a(U("x"), T))
  end)
end)

describe("defer.failure", function()
  it("wraps a string, keeping it as the value", function()
    local f = defer.failure("boom")
    assert.is_true(defer.is_failure(f))
    assert.are.equal("boom", f.value)
  end)

  it("wraps a table, keeping the same table as the value", function()
    local t = {code = 42}
    assert.are.equal(t, defer.failure(t).value)
  end)

  it("wraps a number, keeping it as the value", function()
    assert.are.equal(17, defer.failure(17).value)
  end)

  it("wraps an error object, keeping the same object as the value", function()
    local e = defer.TimeoutError("5 s passed")
    assert.are.equal(e, defer.failure(e).value)
  end)

  it("gives a Failure back as the same object", function()
    local f = defer.failure("once")
    assert.are.equal(f, defer.failure(f))
  end)

  it("has a traceback that is a string", function()
    assert.are.equal("string", type(defer.failure("boom").traceback))
  end)

  it("keeps a traceback given to it", function()
    assert.are.equal("my traceback", defer.failure("boom", "my traceback").traceback)
  end)
end)

describe("a Failure", function()
  local Parent = defer.error_type("ParentError")
  local Child = defer.error_type("ChildError", Parent)
  local Unrelated = defer.error_type("UnrelatedError")

  it("checks to the first matching type given", function()
    local f = defer.failure(Child("x"))
    assert.are.equal(Parent, f:check(Unrelated, Parent, Child))
  end)

  it("checks to the exact type when only it matches", function()
    local f = defer.failure(defer.CancelledError("stop"))
    assert.are.equal(defer.CancelledError, f:check(defer.TimeoutError, defer.CancelledError))
  end)

  it("checks to nil when no type matches", function()
    assert.is_nil(defer.failure(Child("x")):check(Unrelated, defer.TimeoutError))
  end)

  it("checks to nil for a value that is not an error object", function()
    assert.is_nil(defer.failure("plain"):check(Parent))
  end)

  it("traps to the matching type", function()
    assert.are.equal(Parent, defer.failure(Child("x")):trap(Parent))
  end)

  it("raises itself from trap when no type matches", function()
    local f = defer.failure(Child("x"))
    assert.are.equal(f, raised(f.trap, f, Unrelated))
  end)

  it("goes on to the next errback as the same object when trap does not match", function()
    local f = defer.failure(Child("x"))
    local seen
    defer.fail(f)
      :add_errback(function(x) x:trap(Unrelated) return "trapped" end)
      :add_errback(function(x) seen = x end)
    assert.are.equal(f, seen)
  end)

  it("stops in the errback that traps a matching type", function()
    local d = defer.fail(Child("x"))
    d:add_errback(function(x) x:trap(Parent) return "trapped" end)
    assert.are.equal("success", d:state())
    assert.are.equal("trapped", d.result)
  end)

  it("gives a message that is a string", function()
    assert.are.equal("string", type(defer.failure({}):message()))
  end)

  it("gives a message holding a string value", function()
    assert.truthy(string.find(defer.failure("boom"):message(), "boom", 1, true))
  end)

  it("gives a message holding an error object's message", function()
    local m = defer.failure(defer.TimeoutError("5 s passed")):message()
    assert.truthy(string.find(m, "5 s passed", 1, true))
  end)

  it("raises itself from raise", function()
    local f = defer.failure("boom")
    assert.are.equal(f, raised(f.raise, f))
  end)

  it("names a string value in tostring", function()
    assert.truthy(string.find(tostring(defer.failure("boom")), "boom", 1, true))
  end)

  it("names an error object's type in tostring", function()
    local s = tostring(defer.failure(defer.TimeoutError("5 s passed")))
    assert.truthy(string.find(s, "TimeoutError", 1, true))
  end)
end)

describe("defer.is_failure", function()
  it("is true for a Failure", function()
    assert.is_true(defer.is_failure(defer.failure("x")))
  end)

  for _, case in ipairs({{"a string", "x"}, {"a number", 1}, {"a plain table", {}},
                         {"an error object", defer.CancelledError("x")}}) do
    it("is false for " .. case[1], function()
      assert.is_false(defer.is_failure(case[2]))
    end)
  end

  it("is false for nil", function()
    assert.is_false(defer.is_failure(nil))
  end)

  it("is false for a Deferred", function()
    assert.is_false(defer.is_failure(defer.new()))
  end)
end)

describe("a callback that raises", function()
  local function failure_of(raise)
    local got
    defer.succeed(1):add_callback(raise):add_errback(function(f) got = f end)
    return got
  end

  it("turns a raised string into a Failure holding exactly that string", function()
    local f = failure_of(function() error("plain", 0) end)
    assert.is_true(defer.is_failure(f))
    assert.are.equal("plain", f.value)
  end)

  it("keeps the message of a string raised with position information", function()
    local f = failure_of(function() error("with position") end)
    assert.are.equal("string", type(f.value))
    assert.truthy(string.find(f.value, "with position", 1, true))
  end)

  it("turns a raised table into a Failure holding the same table", function()
    local t = {code = 42}
    assert.are.equal(t, failure_of(function() error(t) end).value)
  end)

  it("turns a raised error object into a Failure holding the same object", function()
    local e = defer.TimeoutError("late")
    local f = failure_of(function() error(e) end)
    assert.are.equal(e, f.value)
    assert.are.equal(defer.TimeoutError, f:check(defer.TimeoutError))
  end)

  it("turns a raised number into a Failure holding that number", function()
    assert.are.equal(17, failure_of(function() error(17, 0) end).value)
  end)

  it("turns a runtime error into a Failure with Lua's message (testCallbackErrors)", function()
    local f = failure_of(function(v) return v.field.missing end)
    assert.are.equal("string", type(f.value))
    assert.truthy(string.find(f.value, "attempt to index", 1, true))
  end)

  it("gives a Failure whose traceback says stack traceback and names the raising function", function()
    local function explode_here() error("deep", 0) end
    local f = failure_of(function() explode_here() end)
    assert.are.equal("string", type(f.traceback))
    assert.truthy(string.find(f.traceback, "stack traceback", 1, true))
    assert.truthy(string.find(f.traceback, "explode_here", 1, true))
  end)

  it("gives a Failure whose traceback names this file", function()
    local f = failure_of(function() error("here", 0) end)
    assert.truthy(string.find(f.traceback, "failure_spec", 1, true))
  end)

  it("names each function as its caller did, one level a line", function()
    local obj = {why = "here"}
    function obj:blow_up() error(self.why, 0) end
    local f = failure_of(function() obj:blow_up() end)
    assert.truthy(f.traceback:find("\n\t[^\n]*failure_spec.lua:%d+: in method 'blow_up'"), f.traceback)
    assert.truthy(f.traceback:find("in function <[^>]*failure_spec.lua:%d+>"), f.traceback)
  end)

  it("keeps the first ten and the last eleven levels of a deep stack", function()
    local function dig(n)
      if n == 0 then return defer.fail("at the bottom") end
      return (dig(n - 1)) -- not a tail call: every level stays
    end
    local d = dig(200)
    local tb = d.result.traceback
    d:add_errback(function() end)
    local lines = 0
    for _ in tb:gmatch("\n") do lines = lines + 1 end
    local skipped = tonumber(tb:match("\n\t%.%.%.\t%(skipping (%d+) levels%)"))
    assert.truthy(skipped and skipped > 150, tb)
    assert.are.equal(10 + 1 + 11, lines)
    assert.truthy(tb:find("^stack traceback:\n\t[^\n]*failure_spec.lua:%d+: in upvalue 'dig'"), tb)
  end)
end)

describe("a callback that returns a Failure", function()
  it("turns the result into that very Failure (test_callbackMaybeReturnsFailure)", function()
    local f = defer.failure("returned")
    local got
    defer.succeed(1):add_callback(function() return f end):add_errback(function(x) got = x end)
    assert.are.equal(f, got)
  end)

  it("skips the callbacks after it", function()
    local ran = false
    local d = defer.succeed(1)
      :add_callback(function() return defer.failure("returned") end)
      :add_callback(function() ran = true end)
    assert.is_false(ran)
    assert.are.equal("failure", d:state())
    d:add_errback(function() end)
  end)
end)

describe("unhandled failures", function()
  local previous, seen

  before_each(function()
    collect() -- earlier garbage is reported to the handler of its time
    seen = {}
    previous = defer.on_unhandled(function(f) seen[#seen + 1] = f end)
  end)

  after_each(function()
    defer.on_unhandled(previous)
  end)

  -- How many of the reported failures hold the value v.
  local function reported(v)
    local n = 0
    for _, f in ipairs(seen) do
      if f.value == v then n = n + 1 end
    end
    return n
  end

  -- The scenes build deferreds in their own function so that no stack slot
  -- of the test keeps them alive when the garbage is collected.

  it("are reported once when the failed deferred is collected", function()
    local marker = {}
    local function scene() defer.fail(marker) end
    scene()
    collect()
    assert.are.equal(1, reported(marker))
  end)

  it("are reported once only, whatever later collections", function()
    local marker = {}
    local function scene() defer.fail(marker) end
    scene()
    collect()
    collect()
    assert.are.equal(1, reported(marker))
  end)

  it("are not reported while the failed deferred is still referenced", function()
    local marker = {}
    local d = defer.fail(marker)
    collect()
    assert.are.equal(0, reported(marker))
    d:add_errback(function() end)
  end)

  it("are reported to the handler as the Failure object itself", function()
    local f = defer.failure("the very one")
    local function scene() defer.fail(f) end
    scene()
    collect()
    assert.are.equal(1, reported("the very one"))
    for _, x in ipairs(seen) do
      if x.value == "the very one" then assert.are.equal(f, x) end
    end
  end)

  it("are reported for a callback that raised on a deferred nobody kept (test_errorLog)", function()
    local marker = {}
    local function scene()
      local d = defer.new()
      d:add_callback(function() error(marker) end)
      d:callback(1)
    end
    scene()
    collect()
    assert.are.equal(1, reported(marker))
  end)

  it("are not reported once an errback handled them", function()
    local marker = {}
    local function scene()
      local d = defer.new()
      d:add_errback(function() return "handled" end)
      d:errback(marker)
    end
    scene()
    collect()
    assert.are.equal(0, reported(marker))
  end)

  it("are not reported once an errback added after the failure handled them", function()
    local marker = {}
    local function scene()
      local d = defer.fail(marker)
      d:add_errback(function() end)
    end
    scene()
    collect()
    assert.are.equal(0, reported(marker))
  end)

  it("are still reported when the errbacks re-raised them", function()
    local marker = {}
    local function scene()
      local d = defer.fail(marker)
      d:add_errback(function(f) f:raise() end)
    end
    scene()
    collect()
    assert.are.equal(1, reported(marker))
  end)

  it("are not reported by a failed deferred a callback returned and whose failure was handled (test_chainedErrorCleanup)", function()
    local marker = {}
    local function scene()
      local d = defer.succeed(1)
      d:add_callback(function() return defer.fail(marker) end)
      d:add_errback(function() end)
    end
    scene()
    collect()
    assert.are.equal(0, reported(marker))
  end)

  it("are not reported when the inner deferred fails later and the outer handles it", function()
    local marker = {}
    local function scene()
      local inner = defer.new()
      local outer = defer.succeed(1)
      outer:add_callback(function() return inner end)
      outer:add_errback(function() end)
      inner:errback(marker)
    end
    scene()
    collect()
    assert.are.equal(0, reported(marker))
  end)

  it("are reported once, not twice, when the outer deferred of a chain did not handle them", function()
    local marker = {}
    local function scene()
      local inner = defer.new()
      local outer = defer.succeed(1)
      outer:add_callback(function() return inner end)
      inner:errback(marker)
    end
    scene()
    collect()
    assert.are.equal(1, reported(marker))
  end)

  it("are not reported after an errback returned an unfired deferred (test_errorClearedByChaining)", function()
    local marker = {}
    local function scene()
      local d = defer.fail(marker)
      d:add_errback(function() return defer.new() end)
    end
    scene()
    collect()
    assert.are.equal(0, reported(marker))
  end)

  it("are not reported when passed by chain() to a deferred that handled them", function()
    local marker = {}
    local function scene()
      local a, b = defer.new(), defer.new()
      b:add_errback(function() end)
      a:chain(b)
      a:errback(marker)
    end
    scene()
    collect()
    assert.are.equal(0, reported(marker))
  end)

  it("are reported once when passed by chain() to a deferred that did not handle them", function()
    local marker = {}
    local function scene()
      local a, b = defer.new(), defer.new()
      a:chain(b)
      a:errback(marker)
    end
    scene()
    collect()
    assert.are.equal(1, reported(marker))
  end)

  it("give on_unhandled's previous handler back from it", function()
    local mine = function() end
    local before = defer.on_unhandled(mine)
    local back = defer.on_unhandled(before)
    assert.are.equal(mine, back)
  end)

  it("do not stop the program when the handler raises", function()
    local calls = 0
    defer.on_unhandled(function() calls = calls + 1 error("handler broke") end)
    local function scene() defer.fail("for a broken handler") end
    scene()
    collect()
    assert.is_true(calls >= 1)
    assert.are.equal(2, defer.succeed(2).result)
  end)

  it("go to stderr by default, with the header, the message and a traceback, once", function()
    local lua = os.getenv("DEFER_SPEC_LUA")
    if not lua then
      pending("DEFER_SPEC_LUA is not set")
      return
    end
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write([[
local defer = require "defer"
local function explode() error("lost one", 0) end
local function scene()
  local d = defer.new()
  d:add_callback(function() explode() end)
  d:callback(1)
end
scene()
collectgarbage("collect")
collectgarbage("collect")
io.stdout:write("this went to stdout\n")
]])
    fh:close()
    -- stderr into the pipe, stdout thrown away
    local p = assert(io.popen(lua .. " " .. path .. " 2>&1 >/dev/null"))
    local out = p:read("*a")
    p:close()
    os.remove(path)
    assert.truthy(string.find(out, "Unhandled error in Deferred:", 1, true), out)
    assert.truthy(string.find(out, "lost one", 1, true), out)
    assert.truthy(string.find(out, "stack traceback:", 1, true), out)
    assert.is_nil(string.find(out, "this went to stdout", 1, true))
    local _, count = string.gsub(out, "Unhandled error in Deferred:", "")
    assert.are.equal(1, count)
  end)
end)
