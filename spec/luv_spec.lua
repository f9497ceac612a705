-- defer.luv: the loop driven from libuv, with real luv timers and sockets.
local have_luv, uv = pcall(require, "luv")
local defer = require "defer"

describe("defer.luv", function()
  if not have_luv then
    it("needs luv", function() pending("luv is not installed") end)
    return
  end
  local dluv = require "defer.luv"

  it("fires the loop's timers in order under uv.run and returns when idle", function()
    local loop = defer.new_loop()
    local log = {}
    loop:call_later(0.03, function() log[#log + 1] = "c" end)
    loop:call_later(0.01, function() log[#log + 1] = "a" end)
    loop:call_later(0.02, function() log[#log + 1] = "b" end)
    dluv.run(loop)
    assert.are.same({"a", "b", "c"}, log)
    assert.is_nil(loop:next_timeout())
  end)

  it("runs a call queued from a luv callback in the same uv iteration", function()
    local loop = defer.new_loop()
    local h = dluv.attach(loop)
    local log = {}
    local t = uv.new_timer()
    t:start(5, 0, function()
      log[#log + 1] = "uv"
      loop:call_soon(function() log[#log + 1] = "defer" end)
      t:close()
    end)
    uv.run("once") -- the timer fires; the check handle runs the queued call
    uv.run("nowait")
    assert.are.same({"uv", "defer"}, log)
    h.close()
    uv.run("nowait")
  end)

  it("sleeps rather than spins while waiting for a timer", function()
    local loop = defer.new_loop()
    local cpu0, wall0 = os.clock(), uv.hrtime()
    loop:call_later(0.2, function() end)
    dluv.run(loop)
    local wall = (uv.hrtime() - wall0) / 1e9
    assert.is_true(wall >= 0.19, "woke too early: " .. wall)
    assert.is_true(os.clock() - cpu0 < 0.05, "spun: " .. (os.clock() - cpu0))
  end)

  it("turns callback-style luv functions into deferreds", function()
    local got
    dluv.call(uv.fs_stat, "."):add_callback(function(st) got = st.type end)
    local failed
    dluv.call(uv.fs_stat, "/no/such/path"):add_errback(function(f) failed = f:message() end)
    uv.run()
    assert.are.equal("directory", got)
    assert.truthy(failed:find("ENOENT", 1, true))
  end)

  it("exchanges lines over TCP through deferreds and coroutines", function()
    local server = uv.new_tcp()
    assert(server:bind("127.0.0.1", 0))
    server:listen(8, function()
      local c = uv.new_tcp()
      server:accept(c)
      local buf = ""
      c:read_start(function(err, chunk)
        if err or not chunk then c:close() return end
        buf = buf .. chunk
        for line in buf:gmatch("([^\n]*)\n") do c:write("echo " .. line .. "\n") end
        buf = buf:match("[^\n]*$")
      end)
    end)
    local port = server:getsockname().port
    local got = {}
    defer.spawn(function()
      local tcp = uv.new_tcp()
      defer.await(dluv.call(uv.tcp_connect, tcp, "127.0.0.1", port))
      local reader = dluv.lines(tcp)
      for _, word in ipairs({"one", "two"}) do
        defer.await(dluv.call(uv.write, tcp, word .. "\n"))
        got[#got + 1] = defer.await(reader.line())
      end
      reader.close()
      tcp:close()
      server:close()
    end)
    dluv.run()
    assert.are.same({"echo one", "echo two"}, got)
  end)
end)

describe("examples/email_backlog.lua", function()
  local lua = os.getenv("DEFER_SPEC_LUA")
  local function run(args)
    local p = io.popen(lua .. " examples/email_backlog.lua " .. args .. " 2>&1; echo \"exit $?\"")
    local out = p:read("*a")
    p:close()
    return out
  end

  it("sends every message under the limit, retrying temporary failures", function()
    if not lua or not have_luv then pending("needs DEFER_SPEC_LUA and luv") return end
    local out = run("--count 300 --limit 5 --fail-rate 0.2")
    local sent = tonumber(out:match("\nsent: (%d+)"))
    local failed = tonumber(out:match("\nfailed: (%d+)"))
    local retried = tonumber(out:match("\nretried: (%d+)"))
    local peak = tonumber(out:match("\npeak concurrent sessions: (%d+)"))
    assert.truthy(sent, out)
    assert.are.equal(300, sent + failed)
    assert.is_true(peak <= 5 and peak >= 1)
    assert.is_true(retried > 0)
    assert.truthy(out:find("exit 0", 1, true))
  end)

  it("gives a one-line error and a non-zero exit for bad options and an unreachable server", function()
    if not lua or not have_luv then pending("needs DEFER_SPEC_LUA and luv") return end
    for _, args in ipairs({"--limit 0", "--count abc", "--bogus", "--smtp nohost", "--smtp 127.0.0.1:1"}) do
      local out = run(args)
      assert.truthy(out:match("^email_backlog: [^\n]+\nexit 2\n$"), args .. ": " .. out)
    end
  end)
end)
