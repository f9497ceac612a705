-- The job defer was made for: send a large backlog of e-mails over real SMTP
-- while never holding more than --limit sessions open at once.
--
--   lua5.4 examples/email_backlog.lua [--count N] [--limit N] [--retries N]
--       [--fail-rate R] [--timeout S] [--smtp HOST:PORT] [--help]
--
-- Every message is one SMTP session over TCP (luv): the 220 greeting, EHLO
-- (HELO when EHLO gets a 5xx), MAIL FROM, RCPT TO, DATA (354), the message
-- with its dot-stuffing, ".", QUIT; every reply code is read and checked,
-- multi-line replies included.  Each session runs through
-- defer.semaphore(limit):run, so no more than --limit are open at once.
-- A temporary failure (4xx, a lost connection, a timeout) is retried after an
-- exponential backoff on the loop's timers (loop:sleep), up to --retries
-- times; a permanent one (5xx, a refused connection, retries exhausted) is
-- counted.  At the end, sent + failed = count.
--
-- With no --smtp it starts its own SMTP sink on 127.0.0.1 (an ephemeral
-- port) in the same process: it answers each command after a small random
-- delay (on defer's loop timers), counts the sessions open at once (the peak
-- is reported), and rejects a share of messages (--fail-rate) with a
-- temporary 451, half at RCPT and half at the end of DATA.  With --smtp it
-- sends to that server instead (a local Postfix, say).
--
-- Everything runs on libuv, with defer's loop driven by defer.luv.
local function die(msg, code)
  io.stderr:write("email_backlog: ", msg, "\n")
  os.exit(code or 2)
end

local have_uv, uv = pcall(require, "luv")
if not have_uv then die("needs luv (the lua-luv package): " .. tostring(uv):match("[^\n]*")) end
local defer = require "defer"
local dluv = require "defer.luv"

local USAGE = [[
usage: email_backlog.lua [options]
  --count N       messages to send (default 10000)
  --limit N       SMTP sessions open at once, at most (default 20)
  --retries N     retries of a temporary failure (default 3)
  --fail-rate R   share of messages the embedded sink rejects with a
                  temporary 451, from 0 to 1 (default 0.05)
  --timeout S     seconds to wait for a connection or a reply (default 30)
  --smtp H:P      send to the SMTP server at host H, port P, instead of the
                  embedded sink (for example --smtp 127.0.0.1:25)
  --help          this text
Prints progress, then a summary: sent, retried, failed, peak concurrent
sessions, elapsed, rate.]]

-- options ------------------------------------------------------------------

local opts = {count = 10000, limit = 20, retries = 3, fail_rate = 0.05, timeout = 30}
do
  local args, i = {}, 1
  for k = 1, #arg do
    -- --name=value is --name value
    local name, v = arg[k]:match("^(%-%-[%w-]+)=(.*)$")
    if name then args[#args + 1] = name args[#args + 1] = v
    else args[#args + 1] = arg[k] end
  end
  local function value(name)
    local v = args[i + 1]
    if v == nil then die(name .. " needs a value (try --help)") end
    i = i + 1
    return v
  end
  local function whole(name, v, min, max)
    local n = tonumber(v)
    if not n or n % 1 ~= 0 or n < min or (max and n > max) then
      die(("%s takes a whole number %s, got '%s'"):format(name,
        max and ("from %d to %d"):format(min, max) or (">= %d"):format(min), v))
    end
    return math.floor(n)
  end
  local function number(name, v, min, max)
    local n = tonumber(v)
    if not n or n ~= n or n < min or n > max then
      die(("%s takes a number from %g to %g, got '%s'"):format(name, min, max, v))
    end
    return n
  end
  while args[i] do
    local a = args[i]
    if a == "--help" or a == "-h" then print(USAGE) os.exit(0)
    elseif a == "--count" then opts.count = whole(a, value(a), 1)
    elseif a == "--limit" then opts.limit = whole(a, value(a), 1)
    elseif a == "--retries" then opts.retries = whole(a, value(a), 0, 30)
    elseif a == "--fail-rate" then opts.fail_rate = number(a, value(a), 0, 1)
    elseif a == "--timeout" then opts.timeout = number(a, value(a), 0.001, 86400)
    elseif a == "--smtp" then
      local v = value(a)
      local host, port = v:match("^%[(.+)%]:(%d+)$") -- [::1]:25
      if not host then host, port = v:match("^([^:]+):(%d+)$") end
      port = tonumber(port)
      if not host or port < 1 or port > 65535 then
        die("--smtp takes HOST:PORT (a port from 1 to 65535), got '" .. v .. "'")
      end
      opts.host, opts.port = host, port
    else
      die("unknown option '" .. a .. "' (try --help)")
    end
    i = i + 1
  end
end

local loop = defer.loop
math.randomseed(os.time())
io.stdout:setvbuf("line")

-- the embedded SMTP sink ---------------------------------------------------

local DELAY_MIN, DELAY_MAX = 0.001, 0.005 -- seconds before each reply
local sink = {open = 0, peak = 0, received = 0, rejected = 0}

local function start_sink(fail_rate)
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  assert(server:listen(128, function(err)
    if err then return end
    local client = uv.new_tcp()
    if not server:accept(client) then client:close() return end
    sink.open = sink.open + 1
    if sink.open > sink.peak then sink.peak = sink.open end

    local closed, buf = false, ""
    local state = "helo" -- then "mail", "rcpt", "data", "body"
    local reject             -- where this transaction fails: "rcpt", "data"
    local function close()
      if closed then return end
      closed = true
      sink.open = sink.open - 1
      client:close()
    end
    -- the session counts as closed when its last reply goes out, before the
    -- client can see it: the client's token comes back after that
    local function reply(text, last)
      loop:call_later(DELAY_MIN + math.random() * (DELAY_MAX - DELAY_MIN), function()
        if closed then return end
        client:write(text .. "\r\n")
        if last then close() end
      end)
    end
    local function command(line)
      if state == "body" then
        if line == "." then
          state = "mail"
          if reject == "data" then
            sink.rejected = sink.rejected + 1
            reply("451 4.3.0 Queue busy, try again later")
          else
            sink.received = sink.received + 1
            reply("250 2.0.0 Ok: queued")
          end
        end
        return
      end
      local verb = line:match("^(%a+)")
      verb = verb and verb:upper()
      if verb == "QUIT" then reply("221 2.0.0 Bye", true)
      elseif verb == "NOOP" then reply("250 2.0.0 Ok")
      elseif verb == "RSET" then
        if state ~= "helo" then state = "mail" end
        reply("250 2.0.0 Ok")
      elseif verb == "EHLO" then
        state = "mail"
        reply("250-sink.localhost\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 SMTPUTF8")
      elseif verb == "HELO" then state = "mail" reply("250 sink.localhost")
      elseif state == "helo" then reply("503 5.5.1 Error: send HELO/EHLO first")
      elseif verb == "MAIL" then
        if state ~= "mail" then reply("503 5.5.1 Error: nested MAIL command") return end
        reject = nil
        if math.random() < fail_rate then
          reject = math.random() < 0.5 and "rcpt" or "data"
        end
        state = "rcpt"
        reply("250 2.1.0 Ok")
      elseif verb == "RCPT" then
        if state ~= "rcpt" and state ~= "data" then reply("503 5.5.1 Error: need MAIL command") return end
        if reject == "rcpt" then
          sink.rejected = sink.rejected + 1
          reply("451 4.7.1 <" .. (line:match("<(.-)>") or "") .. ">: Recipient address rejected: Greylisted")
        else
          state = "data"
          reply("250 2.1.5 Ok")
        end
      elseif verb == "DATA" then
        if state ~= "data" then reply("554 5.5.1 Error: no valid recipients") return end
        state = "body"
        reply("354 End data with <CR><LF>.<CR><LF>")
      else
        reply("502 5.5.2 Error: command not recognized")
      end
    end
    client:read_start(function(rerr, chunk)
      if rerr or chunk == nil then close() return end
      buf = buf .. chunk
      local start = 1
      while true do
        local i = buf:find("\r\n", start, true)
        if not i then break end
        command(buf:sub(start, i - 1))
        start = i + 2
      end
      buf = buf:sub(start)
    end)
    reply("220 sink.localhost ESMTP defer example sink")
  end))
  return server, server:getsockname().port
end

-- the SMTP client ----------------------------------------------------------

-- error types: a 4xx reply is temporary (retried); a lost connection or a
-- timeout too, but the session cannot end with QUIT; the rest is permanent
local Temporary = defer.error_type("SmtpTemporary")
local Broken = defer.error_type("SmtpConnectionLost", Temporary)
local Permanent = defer.error_type("SmtpPermanent")

local client_open, client_peak = 0, 0

-- Waits for d; returns true and its value, or false and its Failure (PUC Lua
-- 5.1 cannot yield inside pcall, so the dialogue checks outcomes instead).
local function try(d)
  local box = defer.await(d:add_both(function(r) return {r} end))
  local r = box[1]
  if defer.is_failure(r) then return false, r end
  return true, r
end

-- Reads one reply, all of its lines ("250-..." then "250 ..."); returns its
-- code, or nil and an error object when it does not start with `want`.
local function expect(reader, want)
  local code, sep, text
  repeat
    local ok, line = try(reader.line():add_timeout(opts.timeout))
    if not ok then
      if line:check(defer.TimeoutError) then
        return nil, Broken(("no reply in %g s"):format(opts.timeout))
      end
      return nil, Broken("reading a reply: " .. line:message())
    end
    if line == nil then return nil, Broken("the server closed the connection") end
    local c
    c, sep, text = line:match("^(%d%d%d)([ -]?)(.*)$")
    if not c or (code and c ~= code) then
      return nil, Permanent("malformed reply: " .. line)
    end
    code = c
  until sep ~= "-"
  if code:sub(1, 1) ~= want then
    local kind = code:sub(1, 1) == "4" and Temporary or Permanent
    return nil, kind(("%s %s (expected %sxx)"):format(code, text, want)), code
  end
  return code
end

local function say(tcp, data)
  local ok, f = try(dluv.call(uv.write, tcp, data))
  if not ok then return Broken("writing: " .. f:message()) end
end

-- Lines that begin with a dot get one more (RFC 5321, 4.5.2).
local function dot_stuff(text)
  return (text:gsub("^%.", ".."):gsub("\n%.", "\n.."))
end

local function message(i)
  return table.concat({
    "From: Newsletter <newsletter@example.org>",
    "To: <reader" .. i .. "@example.net>",
    "Subject: Daily digest #" .. i,
    "Message-ID: <digest." .. i .. "@example.org>",
    "",
    "Hello reader " .. i .. ",",
    "",
    ".. and this line begins with a dot, doubled on the wire.",
    ".",
    "Bye.",
  }, "\r\n")
end

-- The dialogue on a connected socket, from the greeting to the end of DATA:
-- nil when the message was accepted, else an error object.
local function dialogue(tcp, reader, i)
  local _, err = expect(reader, "2")
  if err then return err end
  local e = say(tcp, "EHLO client.localhost\r\n")
  if e then return e end
  local code
  _, err, code = expect(reader, "2")
  if code and code:sub(1, 1) == "5" then -- an old server: HELO
    e = say(tcp, "HELO client.localhost\r\n")
    if e then return e end
    _, err = expect(reader, "2")
  end
  if err then return err end
  local steps = {
    {"MAIL FROM:<newsletter@example.org>\r\n", "2"},
    {"RCPT TO:<reader" .. i .. "@example.net>\r\n", "2"},
    {"DATA\r\n", "3"},
    {dot_stuff(message(i)) .. "\r\n.\r\n", "2"},
  }
  for _, step in ipairs(steps) do
    e = say(tcp, step[1])
    if e then return e end
    _, err = expect(reader, step[2])
    if err then return err end
  end
end

-- One SMTP session, the function given to the semaphore: a Deferred of the
-- whole dialogue, fired with true or failed with an error object.
local function session(i)
  return defer.spawn(function()
    local tcp = uv.new_tcp()
    client_open = client_open + 1
    if client_open > client_peak then client_peak = client_open end
    local err
    local ok, f = try(dluv.call(uv.tcp_connect, tcp, opts.host, opts.port)
                        :add_timeout(opts.timeout))
    if not ok then
      if f:check(defer.TimeoutError) then
        err = Broken(("no connection in %g s"):format(opts.timeout))
      else
        err = Permanent("connecting: " .. f:message()) -- refused: final
      end
    else
      local reader = dluv.lines(tcp)
      err = dialogue(tcp, reader, i)
      if not defer.is_a(err, Broken) then
        -- end properly: the server closes the session before the token
        -- goes to the next one
        local e = say(tcp, "QUIT\r\n")
        if not e then e = select(2, expect(reader, "2")) end
        if e and not err then err = e end
      end
      reader.close()
    end
    if not tcp:is_closing() then tcp:close() end
    client_open = client_open - 1
    if err then error(err, 0) end
    return true
  end)
end

local stats = {sent = 0, failed = 0, retried = 0, reasons = {}}
local sem = defer.semaphore(opts.limit)

-- One message: a session through the semaphore; a temporary failure is
-- retried after an exponential backoff (0.05 s, 0.1 s, 0.2 s, ...) spent
-- outside the semaphore.  Fires with true or false, never fails.
local function deliver(i, attempt)
  attempt = attempt or 0
  return sem:run(session, i):add_callbacks(function()
    stats.sent = stats.sent + 1
    return true
  end, function(f)
    if f:check(Temporary) and attempt < opts.retries then
      stats.retried = stats.retried + 1
      return loop:sleep(0.05 * 2 ^ attempt):add_callback(function()
        return deliver(i, attempt + 1)
      end)
    end
    stats.failed = stats.failed + 1
    -- grouped by reason: addresses left out
    local why = f:message():gsub("<[^>]*>", "<...>")
    if attempt > 0 and f:check(Temporary) then
      why = ("%s (after %d %s)"):format(why, attempt, attempt == 1 and "retry" or "retries")
    end
    stats.reasons[why] = (stats.reasons[why] or 0) + 1
    return false
  end)
end

-- progress -------------------------------------------------------------------

local term = os.getenv("TERM")
local tty = uv.guess_handle(1) == "tty" and term ~= nil and term ~= "" and term ~= "dumb"
local started = uv.hrtime()
local last_line = 0

local function elapsed() return (uv.hrtime() - started) / 1e9 end

local function progress(final)
  local done = stats.sent + stats.failed
  local t = elapsed()
  local rate = t > 0 and done / t or 0
  if tty then
    local width = 24
    local filled = math.floor(width * done / opts.count)
    io.write(("\r[%s%s] %d/%d  %.0f msg/s  in flight %d  failed %d  retried %d\27[K"):format(
      ("#"):rep(filled), ("."):rep(width - filled), done, opts.count, rate,
      client_open, stats.failed, stats.retried))
    if final then io.write("\n") end
    io.flush()
  elseif final or t - last_line >= 1 then
    last_line = t
    print(("progress: %d/%d sent %d failed %d retried %d in flight %d rate %.0f msg/s"):format(
      done, opts.count, stats.sent, stats.failed, stats.retried, client_open, rate))
  end
end

local function summary()
  local t = elapsed()
  local peak = opts.embedded and sink.peak or client_peak
  print(("sent: %d"):format(stats.sent))
  print(("retried: %d"):format(stats.retried))
  print(("failed: %d"):format(stats.failed))
  print(("peak concurrent sessions: %d"):format(peak))
  print(("elapsed: %.2f s"):format(t))
  print(("rate: %.0f msg/s"):format(t > 0 and (stats.sent + stats.failed) / t or 0))
  local reasons = {}
  for why, n in pairs(stats.reasons) do reasons[#reasons + 1] = {why, n} end
  table.sort(reasons, function(a, b) return a[2] > b[2] end)
  for k = 1, math.min(#reasons, 5) do
    print(("  failure: %d x %s"):format(reasons[k][2], reasons[k][1]))
  end
  return peak
end

-- main -------------------------------------------------------------------------

local server
if opts.host then
  -- a name becomes an address (luv connects to addresses only)
  local addrs, why = uv.getaddrinfo(opts.host, nil, {socktype = "stream"})
  if not addrs or not addrs[1] then
    die(("cannot resolve %s: %s"):format(opts.host, tostring(why)))
  end
  opts.addr = addrs[1].addr
else
  local port
  server, port = start_sink(opts.fail_rate)
  opts.embedded = true
  opts.host, opts.addr, opts.port = "127.0.0.1", "127.0.0.1", port
end
local where = opts.host .. ":" .. opts.port
opts.host = opts.addr

-- an unreachable server is one line and an exit code, not a traceback
do
  local probe, timer = uv.new_tcp(), uv.new_timer()
  local reachable, why
  local ok, err = pcall(probe.connect, probe, opts.host, opts.port, function(cerr)
    if reachable == nil then reachable, why = cerr == nil, cerr end
  end)
  if not ok then reachable, why = false, err end
  timer:start(math.ceil(opts.timeout * 1000), 0, function()
    if reachable == nil then reachable, why = false, "no answer in " .. opts.timeout .. " s" end
  end)
  while reachable == nil do uv.run("once") end
  timer:close()
  probe:close()
  if not reachable then die(("cannot reach %s: %s"):format(where, tostring(why))) end
  -- the embedded sink must see the probe go before it counts sessions
  while server and sink.open > 0 do uv.run("once") end
  uv.run("nowait")
  sink.peak = 0
end

started = uv.hrtime()
local all = {}
for i = 1, opts.count do all[i] = deliver(i) end

local ticker
local function tick()
  progress(false)
  ticker = loop:call_later(0.1, tick)
end
tick()

-- Ctrl-C: the summary so far
local sigint = uv.new_signal()
sigint:start("sigint", function()
  progress(true)
  summary()
  die("interrupted", 130)
end)
sigint:unref()

local finished = false
defer.list(all):add_callback(function()
  finished = true
  ticker:cancel()
  sigint:close()
  if server then server:close() end
end)

dluv.run(loop)
progress(true)
local peak = summary()

if not finished or stats.sent + stats.failed ~= opts.count then
  die(("lost messages: sent %d + failed %d ~= %d"):format(stats.sent, stats.failed, opts.count), 1)
end
if peak > opts.limit or client_peak > opts.limit then
  die(("the limit was broken: %d sessions at once, limit %d"):format(
    math.max(peak, client_peak), opts.limit), 1)
end
