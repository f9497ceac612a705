-- Errors from the unhandled-failure handler (which runs from a deferred's
-- finalizer) and from the loop's error handler never abort the process or
-- stop the work that follows.
local defer = require "defer"

local function collect()
  for _ = 1, 4 do collectgarbage("collect") end
end

describe("a handler that raises", function()
  it("in on_unhandled, while failures are collected in bulk, stops nothing", function()
    local calls = 0
    local prev = defer.on_unhandled(function() calls = calls + 1 error("handler broke", 0) end)
    for i = 1, 500 do defer.fail("lost " .. i) end
    collect()
    defer.on_unhandled(prev)
    assert.is_true(calls >= 500)
    assert.are.equal(3, defer.succeed(3).result)
  end)

  it("in the loop's on_error stops nothing: the next calls run", function()
    local loop = defer.new_loop{clock = "manual"}
    loop:on_error(function() error("the error handler broke", 0) end)
    local ran = 0
    for _ = 1, 10 do
      loop:call_soon(function() error("a call broke", 0) end)
      loop:call_soon(function() ran = ran + 1 end)
    end
    pcall(loop.advance, loop, 1)
    while loop:pending() > 0 do pcall(loop.advance, loop, 1) end
    assert.are.equal(10, ran)
  end)
end)
