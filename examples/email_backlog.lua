-- The job defer was made for: send a large backlog of e-mails over real SMTP
-- while never holding more than --limit sessions at once.
--
--   lua5.4 examples/email_backlog.lua [--count N] [--limit N] [--retries N]
--                                      [--fail-rate R] [--smtp HOST:PORT]
--
-- With no --smtp it starts its own SMTP sink on 127.0.0.1 in the same
-- process: it answers each command after a small random delay, counts the
-- sessions open at once, and rejects a share of messages with a temporary
-- 451 (--fail-rate).  Temporary failures are retried with exponential
-- backoff on the loop's timers; permanent ones are counted.  Everything runs
-- on libuv through luv, driven by defer.luv.
local uv = require "luv"
local defer = require "defer"
local dluv = require "defer.luv"

local USAGE = [[
usage: email_backlog.lua [options]
  --count N       messages to send (default 10000)
  --limit N       SMTP sessions open at once, at most (default 20)
  --retries N     retries of a temporary failure (default 3)
  --fail-rate R   share of messages the embedded sink rejects with 451
                  (default 0.05; 0 to 1)
  --smtp H:P      send to this server instead of the embedded sink
  --help          this text]]

local function die(msg)
  io.stderr:write("email_backlog: ", msg, "\n")
  os.exit(2)
end

-- options ------------------------------------------------------------------

local opts = {count = 10000, limit = 20, retries = 3, fail_rate = 0.05}
do
  local i = 1
  local function value(name)
    local v = arg[i + 1]
    if v == nil then die(name .. " needs a value") end
    i = i + 1
    return v
  end
  local function whole(name, v, min)
    local n = tonumber(v)
    if not n or n % 1 ~= 0 or n < min then
      die(("%s must be a whole number >= %d, got %q"):format(name, min, v))
    end
    return n
  end
  while arg[i] do
    local a = arg[i]
    if a == "--help" or a == "-h" then print(USAGE) os.exit(0)
    elseif a == "--count" then opts.count = whole(a, value(a), 1)
    elseif a == "--limit" then opts.limit = whole(a, value(a), 1)
    elseif a == "--retries" then opts.retries = whole(a, value(a), 0)
    elseif a == "--fail-rate" then
      local v = value(a)
      local r = tonumber(v)
      if not r or r < 0 or r > 1 then die("--fail-rate must be a number from 0 to 1, got " .. v) end
      opts.fail_rate = r
    elseif a == "--smtp" then
      local v = value(a)
      local host, port = v:match("^([^:]+):(%d+)$")
      if not host then die("--smtp takes HOST:PORT, got " .. v) end
      opts.host, opts.port = host, tonumber(port)
    else
      die("unknown option " .. a .. " (try --help)")
    end
    i = i + 1
  end
end

local loop = defer.loop
math.randomseed(os.time())

-- the embedded SMTP sink --------------------------------------------------

local sink = {open = 0, peak = 0, received = 0}

local function start_sink(fail_rate)
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  server:listen(128, function(err)
    if err then return end
    local client = uv.new_tcp()
    server:accept(client)
    sink.open = sink.open + 1
    if sink.open > sink.peak then sink.peak = sink.open end
    local closed, in_data, buf = false, false, ""
    local function reply(text, then_close)
      -- a realistic small delay before each answer: 1 to 5 ms
      loop:call_later(0.001 + math.random() * 0.004, function()
        if closed then return end
        client:write(text .. "\r\n")
        if then_close then
          closed = true
          sink.open = sink.open - 1
          client:close()
        end
      end)
    end
    local function command(line)
      if in_data then
        if line == "." then
          in_data = false
          if math.random() < fail_rate then reply("451 4.3.0 try again later")
          else sink.received = sink.received + 1 reply("250 2.0.0 queued") end
        end
        return
      end
      local verb = line:sub(1, 4):upper()
      if verb == "EHLO" then reply("250-sink.localhost\r\n250-8BITMIME\r\n250 SIZE 10485760")
      elseif verb == "HELO" then reply("250 sink.localhost")
      elseif verb == "MAIL" then reply("250 2.1.0 ok")
      elseif verb == "RCPT" then reply("250 2.1.5 ok")
      elseif verb == "DATA" then in_data = true reply("354 end with <CRLF>.<CRLF>")
      elseif verb == "QUIT" then reply("221 2.0.0 bye", true)
      elseif verb == "RSET" or verb == "NOOP" then reply("250 ok")
      else reply("502 5.5.2 command not recognised") end
    end
    client:read_start(function(rerr, chunk)
      if rerr or chunk == nil then
        if not closed then
          closed = true
          sink.open = sink.open - 1
          client:close()
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
    reply("220 sink.localhost ESMTP ready")
  end)
  return server, server:getsockname().port
end

-- the SMTP client ----------------------------------------------------------

local Temporary = defer.error_type("SmtpTemporary")
local Permanent = defer.error_type("SmtpPermanent")

local client_open, client_peak = 0, 0

-- Waits for d without raising (PUC Lua 5.1 cannot yield inside pcall, so
-- the dialogue checks outcomes instead): the value, or nil and the Failure.
local function outcome(d)
  local box = defer.await(d:add_both(function(r) return {r} end))
  if defer.is_failure(box[1]) then return nil, box[1] end
  return box[1]
end

-- Reads one reply (all its lines); returns an error object unless its code
-- starts with want.
local function expect(reader, want)
  local code, sep
  repeat
    local line, f = outcome(reader.line())
    if f then return Temporary("read failed: " .. f:message()) end
    if line == nil then return Temporary("connection closed by the server") end
    code, sep = line:match("^(%d%d%d)([ -])")
    if not code then return Permanent("malformed reply: " .. line) end
  until sep == " "
  if code:sub(1, 1) ~= want then
    local kind = code:sub(1, 1) == "4" and Temporary or Permanent
    return kind(("%s after expecting %sxx"):format(code, want))
  end
end

local function message_body(i)
  return table.concat({
    "From: newsletter@example.org",
    "To: reader" .. i .. "@example.net",
    "Subject: Daily digest #" .. i,
    "",
    "Hello reader " .. i .. ",",
    ".a line starting with a dot is doubled on the wire",
    "Bye.",
  }, "\r\n")
end

-- The dialogue on a connected socket: nil when the message was accepted,
-- else an error object.
local function dialogue(tcp, reader, i)
  local function say(line)
    local _, f = outcome(dluv.call(uv.write, tcp, line .. "\r\n"))
    return f and Temporary("write failed: " .. f:message())
  end
  local err = expect(reader, "2")
  if err then return err end
  err = say("EHLO client.localhost") or expect(reader, "2")
  if err then
    err = say("HELO client.localhost") or expect(reader, "2")
    if err then return err end
  end
  local body = message_body(i):gsub("\r\n%.", "\r\n..")
  local steps = {
    {"MAIL FROM:<newsletter@example.org>", "2"},
    {"RCPT TO:<reader" .. i .. "@example.net>", "2"},
    {"DATA", "3"},
    {body .. "\r\n.", "2"},
  }
  for _, st in ipairs(steps) do
    err = say(st[1]) or expect(reader, st[2])
    if err then return err end
  end
end

-- One SMTP session; a Deferred of true, or a failure.
local function send_once(i)
  return defer.spawn(function()
    local tcp = uv.new_tcp()
    client_open = client_open + 1
    if client_open > client_peak then client_peak = client_open end
    local err, reader
    local _, f = outcome(dluv.call(uv.tcp_connect, tcp, opts.host, opts.port))
    if f then
      -- a refused connection is final
      err = Permanent("connect failed: " .. f:message())
    else
      reader = dluv.lines(tcp)
      err = dialogue(tcp, reader, i)
      -- end the session properly, so that the server has closed it before
      -- the token goes to the next one
      if not (outcome(dluv.call(uv.write, tcp, "QUIT\r\n")) and expect(reader, "2") == nil)
         and not err then
        err = Temporary("QUIT was not answered")
      end
      reader.close()
    end
    client_open = client_open - 1
    if not tcp:is_closing() then tcp:close() end
    if err then error(err, 0) end
    return true
  end)
end

local stats = {sent = 0, failed = 0, retried = 0}

-- One message with retries: exponential backoff on temporary failures.
local function deliver(i)
  return defer.spawn(function()
    local delay = 0.01
    for attempt = 0, opts.retries do
      local _, f = outcome(send_once(i))
      if not f then
        stats.sent = stats.sent + 1
        return true
      end
      if not defer.is_a(f.value, Temporary) or attempt == opts.retries then
        stats.failed = stats.failed + 1
        return false
      end
      stats.retried = stats.retried + 1
      defer.await(loop:sleep(delay))
      delay = delay * 2
    end
  end)
end

-- progress -------------------------------------------------------------------

local tty = uv.guess_handle(1) == "tty"
local started = uv.hrtime()
local last_line = -1

local function progress(final)
  local done = stats.sent + stats.failed
  local elapsed = (uv.hrtime() - started) / 1e9
  local rate = elapsed > 0 and done / elapsed or 0
  if tty then
    local width = 30
    local filled = math.floor(width * done / opts.count)
    io.write(("\r[%s%s] %d/%d  %.0f msg/s  in flight %d  failed %d  "):format(
      ("#"):rep(filled), ("."):rep(width - filled), done, opts.count, rate,
      client_open, stats.failed))
    if final then io.write("\n") end
    io.flush()
  else
    local step = math.floor(10 * done / opts.count)
    if step > last_line or final then
      last_line = step
      print(("progress: %d/%d sent %d failed %d in flight %d rate %.0f msg/s"):format(
        done, opts.count, stats.sent, stats.failed, client_open, rate))
    end
  end
end

-- main -------------------------------------------------------------------------

local server
if not opts.host then
  local port
  server, port = start_sink(opts.fail_rate)
  opts.host, opts.port = "127.0.0.1", port
end

-- an unreachable server is one line and an exit code, not a traceback
do
  local probe = uv.new_tcp()
  local reachable, why
  probe:connect(opts.host, opts.port, function(err)
    reachable, why = err == nil, err
    probe:close()
  end)
  while reachable == nil do uv.run("once") end
  if not reachable then
    die(("cannot reach %s:%d: %s"):format(opts.host, opts.port, tostring(why)))
  end
  -- the embedded sink must have seen the probe go before counting sessions
  while server and sink.open > 0 do uv.run("once") end
  sink.peak = 0
end

local sem = defer.semaphore(opts.limit)
local all = {}
for i = 1, opts.count do all[i] = sem:run(deliver, i) end

local ticker
local function tick()
  progress(false)
  ticker = loop:call_later(0.1, tick)
end
tick()

local finished = false
defer.list(all):add_callback(function()
  finished = true
  ticker:cancel()
  if server then server:close() end
end)

dluv.run(loop)
progress(true)

local elapsed = (uv.hrtime() - started) / 1e9
local peak = server and sink.peak or client_peak
print(("sent: %d"):format(stats.sent))
print(("retried: %d"):format(stats.retried))
print(("failed: %d"):format(stats.failed))
print(("peak concurrent sessions: %d"):format(peak))
print(("elapsed: %.2f s"):format(elapsed))
print(("rate: %.0f msg/s"):format(elapsed > 0 and opts.count / elapsed or 0))

if not finished or stats.sent + stats.failed ~= opts.count then
  die(("lost messages: sent %d + failed %d ~= %d"):format(stats.sent, stats.failed, opts.count))
end
if peak > opts.limit then
  die(("the limit was broken: %d sessions at once, limit %d"):format(peak, opts.limit))
end
