-- examples/email_backlog.lua, run as a script under the interpreter named by
-- DEFER_SPEC_LUA (LUA_PATH and LUA_CPATH are inherited): its summary, its
-- limit, its retries, its errors; and, with --smtp, a dialogue with another
-- SMTP server (an old one without EHLO, with multi-line replies and
-- permanent rejections) run by this spec with luv.
local have_luv, uv = pcall(require, "luv")

-- the repository's root, from this file's path
local root = (debug.getinfo(1, "S").source:match("^@(.*)[/\\]spec[/\\][^/\\]*$") or ".")
local script = root .. "/examples/email_backlog.lua"
local lua = os.getenv("DEFER_SPEC_LUA")

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs the example; returns its stdout, its stderr and its exit status.
local function run(args)
  local errfile = os.tmpname()
  local p = io.popen(("%s %s %s 2>%s; echo \"exit $?\""):format(
    lua, quote(script), args, quote(errfile)))
  local out = p:read("*a")
  p:close()
  local f = io.open(errfile)
  local err = f:read("*a")
  f:close()
  os.remove(errfile)
  local status = tonumber(out:match("exit (%d+)\n$"))
  return out:gsub("exit %d+\n$", ""), err, status
end

-- The summary's labelled lines, as numbers.
local function summary(out)
  return {
    sent = tonumber(out:match("\nsent: (%d+)\n")),
    retried = tonumber(out:match("\nretried: (%d+)\n")),
    failed = tonumber(out:match("\nfailed: (%d+)\n")),
    peak = tonumber(out:match("\npeak concurrent sessions: (%d+)\n")),
    elapsed = tonumber(out:match("\nelapsed: ([%d.]+) s\n")),
    rate = tonumber(out:match("\nrate: ([%d.]+) msg/s\n")),
  }
end

describe("examples/email_backlog.lua", function()
  if not lua or not have_luv then
    it("needs DEFER_SPEC_LUA and luv", function()
      pending("set DEFER_SPEC_LUA to an interpreter, and install luv")
    end)
    return
  end

  it("sends every message under the limit, retrying temporary failures", function()
    local out, err, status = run("--count 300 --limit 5 --fail-rate 0.2")
    assert.are.equal(0, status, out .. err)
    assert.are.equal("", err)
    local s = summary(out)
    for _, k in ipairs({"sent", "retried", "failed", "peak", "elapsed", "rate"}) do
      assert.truthy(s[k], "no '" .. k .. "' in the summary:\n" .. out)
    end
    assert.are.equal(300, s.sent + s.failed)
    assert.is_true(s.peak >= 1 and s.peak <= 5, "peak " .. s.peak)
    assert.is_true(s.retried > 0)
    -- 20% rejected, three retries: few (if any) run out of them
    assert.is_true(s.sent > 250, "sent " .. s.sent)
    -- not a terminal: plain progress lines, no carriage returns
    assert.truthy(out:find("^progress: "))
    assert.falsy(out:find("\r", 1, true))
  end)

  it("counts a message as failed once its retries run out", function()
    local out, err, status = run("--count 30 --limit 4 --fail-rate 1 --retries 1")
    assert.are.equal(0, status, out .. err)
    local s = summary(out)
    assert.are.same({0, 30, 30}, {s.sent, s.failed, s.retried})
    assert.truthy(out:find("failure: %d+ x SmtpTemporary: 451"), out)
  end)

  it("sends everything at once without failures, the limit reached", function()
    local out, err, status = run("--count 200 --limit 8 --fail-rate 0")
    assert.are.equal(0, status, out .. err)
    local s = summary(out)
    assert.are.same({200, 0, 0}, {s.sent, s.failed, s.retried})
    assert.is_true(s.peak <= 8 and s.peak >= 2, "peak " .. s.peak)
  end)

  it("gives a one-line error and a non-zero exit for bad input and an unreachable server", function()
    local cases = {"--limit 0", "--count abc", "--count", "--bogus", "--fail-rate 2",
                   "--retries -1", "--smtp nohost", "--smtp 127.0.0.1", "--smtp 127.0.0.1:0",
                   "--smtp 127.0.0.1:1"}
    for _, args in ipairs(cases) do
      local out, err, status = run(args)
      assert.is_true(status ~= nil and status ~= 0, args .. ": exit " .. tostring(status))
      assert.are.equal("", out, args)
      assert.truthy(err:match("^email_backlog: [^\n]+\n$"), args .. ": " .. err)
    end
  end)

  it("prints its usage with --help", function()
    local out, err, status = run("--help")
    assert.are.equal(0, status)
    assert.are.equal("", err)
    assert.truthy(out:find("^usage: "))
    for _, o in ipairs({"--count", "--limit", "--retries", "--fail-rate", "--smtp"}) do
      assert.truthy(out:find(o, 1, true), o)
    end
  end)

  it("talks to another server with --smtp: HELO after a 5xx EHLO, multi-line replies, 5xx rejections", function()
    -- an old server: no EHLO; multi-line greeting and MAIL reply; refuses
    -- every seventh recipient for good; keeps what it received
    local open, peak, helos, bodies = 0, 0, 0, {}
    local server = uv.new_tcp()
    assert(server:bind("127.0.0.1", 0))
    assert(server:listen(32, function()
      local c = uv.new_tcp()
      server:accept(c)
      -- a session counts from its first command: the script's reachability
      -- probe connects and goes without a word, and its end may reach this
      -- server after the sessions have begun
      local buf, body, closed, counted = "", nil, false, false
      local function send(text, last)
        c:write(text .. "\r\n")
        if last and not closed then
          closed = true
          if counted then open = open - 1 end
          c:close()
        end
      end
      local function command(line)
        if not counted then
          counted = true
          open = open + 1
          if open > peak then peak = open end
        end
        if body then
          if line == "." then
            bodies[#bodies + 1] = table.concat(body, "\r\n")
            body = nil
            send("250 2.0.0 queued")
          else
            body[#body + 1] = line:sub(1, 1) == "." and line:sub(2) or line
          end
        elseif line:find("^EHLO") then send("502 5.5.2 Error: command not recognized")
        elseif line:find("^HELO") then helos = helos + 1 send("250 old.example")
        elseif line:find("^MAIL") then send("250-Sender ok\r\n250-still ok\r\n250 2.1.0 Ok")
        elseif line:find("^RCPT") then
          local n = tonumber(line:match("reader(%d+)@"))
          if n % 7 == 0 then send("550 5.1.1 <reader" .. n .. "@example.net>: no such user")
          else send("250 2.1.5 Ok") end
        elseif line:find("^DATA") then body = {} send("354 go ahead")
        elseif line:find("^QUIT") then send("221 2.0.0 Bye", true)
        else send("500 what?") end
      end
      c:read_start(function(err, chunk)
        if err or not chunk then
          if not closed then
            closed = true
            if counted then open = open - 1 end
            c:close()
          end
          return
        end
        buf = buf .. chunk
        while true do
          local i = buf:find("\r\n", 1, true)
          if not i then break end
          command(buf:sub(1, i - 1))
          buf = buf:sub(i + 2)
        end
      end)
      send("220-old.example SMTP\r\n220 ready")
    end))
    local port = server:getsockname().port

    local out, err = {}, {}
    local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
    local status
    local child = uv.spawn(lua, {
      args = {script, "--smtp", "127.0.0.1:" .. port, "--count", "20", "--limit", "3"},
      stdio = {nil, stdout, stderr},
    }, function(code)
      status = code
      server:close()
    end)
    assert.truthy(child)
    stdout:read_start(function(_, chunk)
      if chunk then out[#out + 1] = chunk else stdout:close() end
    end)
    stderr:read_start(function(_, chunk)
      if chunk then err[#err + 1] = chunk else stderr:close() end
    end)
    local dog = uv.new_timer()
    dog:start(60000, 0, function() child:kill("sigkill") end)
    dog:unref()
    uv.run()
    dog:close()
    child:close()
    uv.run("nowait")

    out, err = table.concat(out), table.concat(err)
    assert.are.equal(0, status, out .. err)
    local s = summary(out)
    assert.are.same({18, 2, 0}, {s.sent, s.failed, s.retried}) -- 7 and 14 refused
    assert.is_true(s.peak >= 1 and s.peak <= 3, "peak " .. s.peak)
    assert.is_true(peak >= 1 and peak <= 3, "server's peak " .. peak)
    assert.are.equal(20, helos)
    assert.are.equal(18, #bodies)
    -- the dots came back as they were written
    local b = bodies[1]
    assert.truthy(b:find("\r\n.\r\nBye.$"), b)
    assert.truthy(b:find("\r\n.. and this line begins with a dot", 1, true), b)
    assert.truthy(out:find("failure: 2 x SmtpPermanent: 550", 1, true), out)
  end)
end)
