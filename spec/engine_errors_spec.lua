-- An error that escapes the engine between two user calls (memory running
-- out; on Lua 5.1 to 5.3, another object's finalizer raising during one of
-- the engine's allocations) goes on to the caller, and leaves no work stuck:
-- the next call into the module resumes what it interrupted.  Lua 5.4 makes
-- finalizer errors warnings, and LuaJIT itself does not survive a raising
-- finalizer under busted, so the finalizer case runs on 5.1 to 5.3 (the
-- memory case is tests/oom/, on 5.4).
local defer = require "defer"

local finalizers_raise = not jit and _VERSION ~= "Lua 5.4"

-- Leaves an unreachable object whose finalizer raises.
local function bomb()
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = function() error("bomb", 0) end
  else
    setmetatable({}, {__gc = function() error("bomb", 0) end})
  end
end

describe("an error escaping the engine", function()
  local it_ = finalizers_raise and it or pending
  it_("leaves no waiter, task or list stuck", function()
    for _ = 1, 50 do
      local sem = defer.semaphore(1)
      local gate = defer.new()
      sem:run(function() return gate end)
      local ran, ds = {}, {}
      for i = 1, 200 do ran[i] = 0 end
      -- the tasks allocate nothing: the collector steps inside the engine
      for i = 1, 200 do
        ds[i] = sem:run(function(a) ran[a] = ran[a] + 1 return a end, i, i, i)
      end
      local l = defer.list(ds)
      bomb()
      local pause = collectgarbage("setpause", 10)
      local mul = collectgarbage("setstepmul", 400)
      local ok, err = pcall(gate.callback, gate, "go")
      assert(ok or err == "bomb" or tostring(err):find("bomb"), tostring(err))
      -- until the finalizer has gone off; then any call resumes the rest
      for _ = 1, 100 do if pcall(collectgarbage) then break end end
      collectgarbage("setpause", pause)
      collectgarbage("setstepmul", mul)
      defer.succeed(1):add_callback(function() end)
      -- each task ran at most once, and ran or its deferred failed with the
      -- error; it may have done both, when the error came inside its call
      for i = 1, 200 do
        assert.is_true(ds[i].called)
        assert.is_true(ran[i] <= 1)
        if ds[i]:state() == "failure" then
          assert.truthy(tostring(ds[i].result):find("bomb"))
        else
          assert.are.equal(1, ran[i])
          assert.are.equal(i, ds[i].result)
        end
      end
      assert.is_true(l.called)
      assert.are.equal(0, sem.active)
      assert.are.equal(0, sem.waiting)
      local st = sem:stats()
      assert.are.equal(st.started, st.finished)
    end
  end)
end)
