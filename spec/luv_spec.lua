-- defer.luv: the loop driven from libuv, with real luv timers and sockets on
-- 127.0.0.1.
local have_luv, uv = pcall(require, "luv")
local defer = require "defer"

describe("defer.luv", function()
  if not have_luv then
    it("needs luv", function() pending("luv is not installed") end)
    return
  end
  local dluv = require "defer.luv"
  local slow = os.getenv("DEFER_SPEC_SLOW") ~= nil

  -- Runs uv (mode "default" unless given) with a watchdog: a test that
  -- leaves something alive fails after 5 s instead of hanging the suite.
  local function run_uv(mode)
    local dog = uv.new_timer()
    local barked = false
    dog:start(5000, 0, function() barked = true uv.stop() end)
    dog:unref()
    uv.run(mode)
    dog:close()
    uv.run("nowait")
    assert.is_false(barked, "uv.run did not return within 5 s")
  end

  local function now() return uv.hrtime() / 1e9 end

  -- A TCP server on 127.0.0.1 (ephemeral port) that calls on_client(tcp)
  -- for each connection; returns the server handle and its port.
  local function server(on_client)
    local s = uv.new_tcp()
    assert(s:bind("127.0.0.1", 0))
    assert(s:listen(16, function(err)
      assert(not err, err)
      local c = uv.new_tcp()
      s:accept(c)
      on_client(c)
    end))
    return s, s:getsockname().port
  end

  it("fires the loop's timers in order under uv.run and returns when idle", function()
    local loop = defer.new_loop()
    local log = {}
    loop:call_later(0.03, function() log[#log + 1] = "c" end)
    loop:call_later(0.01, function() log[#log + 1] = "a" end)
    loop:call_later(0.02, function() log[#log + 1] = "b" end)
    loop:call_soon(function() log[#log + 1] = "soon" end)
    local t0 = now()
    dluv.run(loop)
    assert.are.same({"soon", "a", "b", "c"}, log)
    assert.is_true(now() - t0 >= 0.029)
    assert.is_nil(loop:next_timeout())
  end)

  it("drives defer.loop by default, and deferreds awaiting its timers", function()
    local got
    defer.spawn(function()
      local t0 = defer.loop:time()
      defer.await(defer.loop:sleep(0.02))
      got = defer.loop:time() - t0
    end)
    dluv.run()
    assert.is_true(got >= 0.02, tostring(got))
  end)

  it("lets uv.run() return when defer's loop is idle and nothing else is alive", function()
    local loop = defer.new_loop()
    local h = dluv.attach(loop)
    local fired = false
    loop:call_later(0.02, function()
      fired = true
      loop:call_later(0.01, function() fired = "again" end)
    end)
    h:kick() -- queued after attach, outside any uv callback
    local t0 = now()
    run_uv()
    assert.are.equal("again", fired)
    assert.is_true(now() - t0 >= 0.029)
    -- still attached: new work runs on the next uv.run
    loop:call_soon(function() fired = "third" end)
    h:kick()
    run_uv()
    assert.are.equal("third", fired)
    h:close()
    h:close() -- twice is harmless
    uv.run("nowait")
    -- detached: uv has nothing to run and returns at once
    loop:call_soon(function() fired = "never" end)
    run_uv()
    assert.are.equal("third", fired)
  end)

  it("does not keep uv alive while defer's loop is idle, and waits for other handles", function()
    local loop = defer.new_loop()
    local h = dluv.attach(loop)
    local t = uv.new_timer()
    local log = {}
    t:start(30, 0, function()
      log[#log + 1] = "uv"
      loop:call_later(0.01, function() log[#log + 1] = "defer" end)
      t:close()
    end)
    run_uv()
    assert.are.same({"uv", "defer"}, log)
    h:close()
    uv.run("nowait")
  end)

  it("runs a call queued from a luv I/O callback in the same uv iteration", function()
    local loop = defer.new_loop()
    local h = dluv.attach(loop)
    local iter, log = 0, {}
    local counter = uv.new_prepare() -- counts iterations, before each poll
    counter:start(function() iter = iter + 1 end)
    counter:unref()
    local seen = false
    uv.fs_stat(".", function()
      seen = true
      log[#log + 1] = "uv " .. iter
      loop:call_soon(function() log[#log + 1] = "defer " .. iter end)
    end)
    -- the fs callback runs in the poll phase; "once" returns at the end of
    -- that iteration, so the check handle must already have run the call
    while not seen do uv.run("once") end
    assert.are.equal(2, #log, table.concat(log, ", "))
    assert.are.equal(log[1]:sub(4), log[2]:sub(7))
    counter:close()
    h:close()
    uv.run("nowait")
  end)

  it("runs a call queued from a uv timer callback without waiting for the next poll", function()
    local loop = defer.new_loop()
    local h = dluv.attach(loop)
    local keep = uv.new_timer() -- keeps uv polling for 300 ms
    keep:start(300, 0, function() keep:close() end)
    local t = uv.new_timer()
    local queued, ran
    t:start(10, 0, function()
      -- (closing a handle here would make uv skip the poll's wait)
      queued = now()
      loop:call_soon(function() ran = now() t:close() end)
    end)
    run_uv()
    assert.truthy(ran)
    assert.is_true(ran - queued < 0.1, "the call waited " .. (ran - queued) .. " s")
    h:close()
    uv.run("nowait")
  end)

  it("sleeps rather than spins while waiting for a timer", function()
    local loop = defer.new_loop()
    loop:call_later(0.2, function() end)
    local cpu0, wall0 = os.clock(), now()
    dluv.run(loop)
    local wall, cpu = now() - wall0, os.clock() - cpu0
    assert.is_true(wall >= 0.19, "woke too early: " .. wall)
    assert.is_true(cpu < (slow and 0.1 or 0.05), "spun: " .. cpu .. " s of CPU")
  end)

  it("does not let a call that re-queues itself starve uv", function()
    local loop = defer.new_loop()
    local passes, uv_ran = 0, false
    local function again()
      passes = passes + 1
      if not uv_ran then loop:call_soon(again) end
    end
    loop:call_soon(again)
    local t = uv.new_timer()
    uv.update_time() -- (uv's cached time may be old: the 10 ms count from now)
    t:start(10, 0, function() uv_ran = true t:close() end)
    dluv.run(loop)
    assert.is_true(uv_ran)
    assert.is_true(passes > 1)
  end)

  it("turns callback-style luv functions into deferreds", function()
    local got, failed, none, raised
    dluv.call(uv.fs_stat, "."):add_callback(function(st) got = st.type end)
    dluv.call(uv.fs_stat, "/no/such/path"):add_errback(function(f) failed = f:message() end)
    local s, port = server(function(c) c:close() end)
    local tcp = uv.new_tcp()
    dluv.call(uv.tcp_connect, tcp, "127.0.0.1", port):add_callback(function(v)
      none = v
      tcp:close()
      s:close()
    end)
    -- luv raises on a bad address: the deferred errbacks instead
    local bad = uv.new_tcp()
    dluv.call(uv.tcp_connect, bad, "not an address", 1):add_errback(function(f)
      raised = f:message()
    end)
    bad:close()
    run_uv()
    assert.are.equal("directory", got)
    assert.truthy(failed:find("ENOENT", 1, true), failed)
    assert.are.equal(true, none)
    assert.truthy(raised)
  end)

  it("ignores the late answer of a cancelled call", function()
    local d = dluv.call(uv.fs_stat, ".")
    local outcome
    d:add_errback(function(f) outcome = f:check(defer.CancelledError) and "cancelled" end)
    d:cancel()
    run_uv() -- the stat answers later: no AlreadyCalledError
    assert.are.equal("cancelled", outcome)
  end)

  it("reads lines split across chunks, with \\r\\n, and the rest at the end", function()
    local s, port = server(function(c)
      c:write("one\r\ntw")
      local t = uv.new_timer()
      t:start(10, 0, function()
        c:write("o\n\nthree\r\nrest")
        c:shutdown(function() c:close() end)
        t:close()
      end)
    end)
    local got = {}
    local tcp = uv.new_tcp()
    dluv.call(uv.tcp_connect, tcp, "127.0.0.1", port):add_callback(function()
      local reader = dluv.lines(tcp)
      -- asked all at once, answered in order; a cancelled one is skipped
      local ds = {}
      for k = 1, 7 do ds[k] = reader.line() end
      ds[2]:add_errback(function() end)
      ds[2]:cancel()
      for k = 1, 7 do
        if k ~= 2 then
          ds[k]:add_callback(function(line) got[#got + 1] = tostring(line) end)
        end
      end
      defer.list(ds):add_callback(function()
        tcp:close()
        s:close()
      end)
    end)
    dluv.run()
    assert.are.same({"one", "two", "", "three", "rest", "nil"}, got)
  end)

  it("errbacks pending lines on a read error and ends them on close", function()
    local reader_d
    local fake = {}
    local cb
    function fake.read_start(_, f) cb = f end
    function fake.read_stop() cb = nil end
    function fake.is_closing() return false end
    local reader = dluv.lines(fake)
    reader_d = reader.line()
    cb(nil, "a\nb")
    assert.are.equal("a", reader_d.result)
    local d2 = reader.line()
    cb("ECONNRESET", nil)
    local msg
    d2:add_errback(function(f) msg = f:message() end)
    assert.truthy(msg:find("ECONNRESET", 1, true))
    local r2 = dluv.lines(fake)
    local d3 = r2.line()
    r2.close()
    assert.is_true(d3.called)
    assert.is_nil(d3.result)
  end)

  it("runs a TCP echo server and client that exchange lines through deferreds", function()
    -- the server: one deferred chain per line, answered after a defer timer
    local s, port = server(function(c)
      local reader = dluv.lines(c)
      local function serve()
        reader.line():add_callback(function(line)
          if line == nil then c:close() return end
          return defer.loop:sleep(0.001):add_callback(function()
            return dluv.call(uv.write, c, "echo " .. line .. "\n")
          end):add_callback(serve)
        end)
      end
      serve()
    end)
    -- the client: a coroutine awaiting each step
    local got = {}
    defer.spawn(function()
      local tcp = uv.new_tcp()
      defer.await(dluv.call(uv.tcp_connect, tcp, "127.0.0.1", port))
      local reader = dluv.lines(tcp)
      for _, word in ipairs({"one", "two", "three"}) do
        defer.await(dluv.call(uv.write, tcp, word .. "\n"))
        got[#got + 1] = defer.await(reader.line())
      end
      defer.await(dluv.call(uv.shutdown, tcp))
      got[#got + 1] = tostring(defer.await(reader.line())) -- the server closed
      tcp:close()
      s:close()
    end):add_errback(function(f) got[#got + 1] = "error: " .. f:message() end)
    dluv.run()
    assert.are.same({"echo one", "echo two", "echo three", "nil"}, got)
  end)

  it("keeps many connections going at once under a semaphore", function()
    local open, peak = 0, 0
    local s, port = server(function(c)
      open = open + 1
      if open > peak then peak = open end
      local reader = dluv.lines(c)
      reader.line():add_callback(function(line)
        return defer.loop:sleep(0.002):add_callback(function()
          open = open - 1
          c:write(line .. "!\n", function() c:close() end)
        end)
      end)
    end)
    local sem = defer.semaphore(4)
    local tasks = {}
    for i = 1, 40 do
      tasks[i] = sem:run(function()
        local tcp = uv.new_tcp()
        local reader
        return dluv.call(uv.tcp_connect, tcp, "127.0.0.1", port):add_callback(function()
          reader = dluv.lines(tcp)
          return dluv.call(uv.write, tcp, "n" .. i .. "\n")
        end):add_callback(function()
          return reader.line()
        end):add_both(function(r)
          tcp:close()
          return r
        end)
      end)
    end
    local results
    defer.gather(tasks):add_callback(function(r) results = r s:close() end)
    dluv.run()
    assert.are.equal(40, #results)
    assert.are.equal("n17!", results[17])
    assert.is_true(peak >= 1 and peak <= 4, "peak " .. peak)
  end)
end)
