-- The handlers of tools/test-nginx (t/nginx/nginx.conf.in).  Each worker
-- loads this module once: `sem` is that worker's limit, shared by all its
-- requests.
local defer = require "defer"
local dngx = require "defer.ngx"

local M = {}

local LIMIT = 8
local sem = defer.semaphore(LIMIT)

------------------------------------------------------------------ backend

-- Counts the requests in progress in the shared dict; "level:k" is set once
-- k requests were in progress at the same time (a plain max would lose
-- updates between workers: the dict has no compare-and-set).
function M.backend()
  local args = ngx.req.get_uri_args()
  local dict = ngx.shared.backend
  local n = dict:incr("current", 1, 0)
  dict:incr("hits", 1, 0)
  if not dict:get("level:" .. n) then dict:set("level:" .. n, true) end
  local ms = tonumber(args.ms) or 10
  if ms > 0 then ngx.sleep(ms / 1000) end
  dict:incr("current", -1, 0)
  local body = "ok " .. tostring(args.i) .. "\n"
  if args.fail then
    ngx.status = 500
    body = "backend failure for unit " .. tostring(args.i) .. "\n"
  end
  ngx.header.content_length = #body
  ngx.print(body)
end

function M.reset()
  ngx.shared.backend:flush_all()
  ngx.say("reset")
end

local function backend_max()
  local dict, k = ngx.shared.backend, 0
  while dict:get("level:" .. (k + 1)) do k = k + 1 end
  return k
end

function M.stats()
  local dict = ngx.shared.backend
  local s = sem:stats()
  ngx.say(("max=%d current=%d hits=%d pid=%d tokens=%d waiting=%d active=%d")
    :format(backend_max(), dict:get("current") or 0, dict:get("hits") or 0,
      ngx.worker.pid(), s.tokens, s.waiting, s.active))
end

------------------------------------------------------------------ client

-- One GET to the backend over a cosocket (HTTP/1.1, kept alive in the
-- worker's connection pool); returns the body, raises on a non-200.
local function fetch(i, port, ms, fail)
  local sock = ngx.socket.tcp()
  sock:settimeout(10000)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then error(("unit %d: connect: %s"):format(i, err)) end
  local req = ("GET /backend?i=%d&ms=%d%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    :format(i, ms, fail and "&fail=1" or "")
  ok, err = sock:send(req)
  if not ok then error(("unit %d: send: %s"):format(i, err)) end
  local line
  line, err = sock:receive("*l")
  if not line then error(("unit %d: receive: %s"):format(i, err)) end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  local len
  repeat
    line, err = sock:receive("*l")
    if not line then error(("unit %d: receive: %s"):format(i, err)) end
    len = len or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
  until line == ""
  local body
  body, err = sock:receive(len or 0)
  if not body then error(("unit %d: receive: %s"):format(i, err)) end
  sock:setkeepalive(10000, 64)
  if status ~= 200 then
    error(("unit %d: the backend answered %s"):format(i, tostring(status)), 0)
  end
  return (body:gsub("\n$", ""))
end
M.fetch = fetch

-- GET /fanout?n=200&ms=10[&fail=k][&via=timer][&exit=1]: n units through
-- the worker's semaphore, each a light thread (dngx.thread; via=timer: an
-- ngx.timer, dngx.timer) doing one backend request; exit=1 ends the
-- handler with ngx.exit(200).
function M.fanout()
  local args = ngx.req.get_uri_args()
  local n = tonumber(args.n) or 200
  local ms = tonumber(args.ms) or 10
  local fail = tonumber(args.fail)
  local port = tonumber(ngx.var.server_port)
  local start = args.via == "timer" and dngx.timer or dngx.thread
  local ds = {}
  for i = 1, n do
    ds[i] = sem:run(function() return start(fetch, i, port, ms, i == fail) end)
  end
  local values, f = dngx.wait(defer.gather(ds, true), 60)
  if args.exit then
    ngx.say(values and ("ok n=%d"):format(n) or ("failure " .. f:message()))
    return ngx.exit(200)
  end
  if values == nil then
    local e = f.value
    if defer.is_a(e, defer.FirstError) then
      ngx.say(("failure %s index=%d: %s"):format(e.type == defer.FirstError
        and "FirstError" or tostring(e.type), e.index, e.failure:message()))
    else
      ngx.say("failure ", f:message())
    end
    return
  end
  for i = 1, n do
    if values[i] ~= "ok " .. i then
      ngx.say("wrong value for unit ", i, ": ", tostring(values[i]))
      return
    end
  end
  local s = sem:stats()
  ngx.say(("ok n=%d tokens=%d waiting=%d active=%d"):format(n, s.tokens, s.waiting, s.active))
end

------------------------------------------------------------------ checks

-- GET /checks: the adapter's behaviours, one line each: "ok name" or
-- "FAIL name: why".
function M.checks()
  local loop = defer.loop
  local function check(name, f)
    local ok, why = pcall(f)
    if ok and why == nil then ngx.say("ok ", name)
    else ngx.say("FAIL ", name, ": ", tostring(why)) end
  end
  local function msg(f) return f and f:message() or "no failure" end

  check("wait: a fired deferred answers at once", function()
    local v = dngx.wait(defer.succeed(5))
    if v ~= 5 then return "got " .. tostring(v) end
  end)
  check("wait: a failed deferred gives nil, failure", function()
    local v, f = dngx.wait(defer.fail("boom"))
    if v ~= nil or not defer.is_failure(f) or not msg(f):find("boom") then
      return "got " .. tostring(v) .. ", " .. tostring(f)
    end
  end)
  check("wait: the pump drives loop:sleep", function()
    ngx.update_time()
    local t0 = ngx.now()
    local v = dngx.wait(loop:sleep(0.05):add_callback(function() return "slept" end))
    ngx.update_time()
    local dt = ngx.now() - t0
    if v ~= "slept" or dt < 0.04 or dt > 1 then
      return ("got %s after %.3f s"):format(tostring(v), dt)
    end
  end)
  check("wait: timeout gives a TimeoutError and leaves d pending", function()
    local d = defer.new()
    local v, f = dngx.wait(d, 0.05)
    if v ~= nil or not (f and f:check(defer.TimeoutError)) or d.called then
      return "got " .. tostring(v) .. ", " .. tostring(f)
    end
    d:callback(1) -- the late result goes on down the chain
    if d.result ~= 1 then return "late result " .. tostring(d.result) end
  end)
  check("wait: add_timeout (the pump) cancels the work", function()
    local cancelled = false
    local d = defer.new(function() cancelled = true end):add_timeout(0.05)
    local v, f = dngx.wait(d)
    if v ~= nil or not (f and f:check(defer.TimeoutError)) or not cancelled then
      return "got " .. tostring(v) .. ", " .. tostring(f)
    end
  end)
  check("thread: the first return value", function()
    local v = dngx.wait(dngx.thread(function(a, b) ngx.sleep(0.01) return a + b, "x" end, 40, 2))
    if v ~= 42 then return "got " .. tostring(v) end
  end)
  check("thread: cosocket I/O inside", function()
    local port = tonumber(ngx.var.server_port)
    local v = dngx.wait(dngx.thread(fetch, 3, port, 1))
    if v ~= "ok 3" then return "got " .. tostring(v) end
  end)
  check("thread: an error becomes a Failure with its traceback", function()
    local v, f = dngx.wait(dngx.thread(function() ngx.sleep(0.001) error("bad unit") end))
    if v ~= nil or not msg(f):find("bad unit") or not tostring(f.traceback):find("traceback") then
      return "got " .. tostring(v) .. ", " .. tostring(f)
    end
  end)
  check("thread: cancel kills the light thread", function()
    local ran_on = false
    local d = dngx.thread(function() ngx.sleep(0.2) ran_on = true return 1 end)
    d:cancel()
    local v, f = dngx.wait(d)
    ngx.sleep(0.3)
    if v ~= nil or not (f and f:check(defer.CancelledError)) or ran_on then
      return ("got %s, %s, ran on: %s"):format(tostring(v), tostring(f), tostring(ran_on))
    end
  end)
  check("timer: f runs in an ngx.timer of its own", function()
    local v = dngx.wait(dngx.timer(function(a)
      ngx.sleep(0.01)
      return a .. " in " .. ngx.get_phase()
    end, "ran"))
    if v ~= "ran in timer" then return "got " .. tostring(v) end
    local _, f = dngx.wait(dngx.timer(function() error("timer unit failed") end))
    if not (f and f:message():find("timer unit failed")) then return "got " .. tostring(f) end
  end)
  check("callbacks may yield: wait inside a callback", function()
    local v = dngx.wait(defer.succeed(1):add_callback(function(x)
      return x + dngx.wait(dngx.thread(function() ngx.sleep(0.01) return 10 end))
    end))
    if v ~= 11 then return "got " .. tostring(v) end
  end)
  check("spawn/await over a light thread", function()
    local v = dngx.wait(defer.spawn(function()
      return defer.await(dngx.thread(function() ngx.sleep(0.01) return 20 end)) + 1
    end))
    if v ~= 21 then return "got " .. tostring(v) end
  end)
  check("semaphore of 2 over light threads", function()
    local s2, now, max = defer.semaphore(2), 0, 0
    local ds = {}
    for i = 1, 10 do
      ds[i] = s2:run(function()
        return dngx.thread(function()
          now = now + 1
          if now > max then max = now end
          ngx.sleep(0.005)
          now = now - 1
          return i
        end)
      end)
    end
    local v = dngx.wait(defer.gather(ds))
    if not v or #v ~= 10 or max ~= 2 or s2.tokens ~= 2 then
      return ("got %s, max %d, tokens %d"):format(tostring(v), max, s2.tokens)
    end
  end)
  check("a C boundary gives a clear error", function()
    local err
    string.gsub("x", "x", function()
      local _
      _, err = pcall(dngx.wait, defer.new())
    end)
    if not tostring(err):find("cannot wait on a pending Deferred here") then
      return "got " .. tostring(err)
    end
    local ran = false
    table.sort({1, 2}, function(a, b)
      local _
      _, err = pcall(dngx.thread, function() ran = true end)
      return a < b
    end)
    if ran or not tostring(err):find("cannot start a light thread here") then
      return "thread: got " .. tostring(err)
    end
    -- a module's top level runs under require, a C function in LuaJIT
    package.loaded["defer_test.waits_at_load"] = nil
    package.preload["defer_test.waits_at_load"] = function()
      local _
      _, err = pcall(dngx.wait, defer.new())
      return true
    end
    require "defer_test.waits_at_load"
    if not tostring(err):find("cannot wait on a pending Deferred here") then
      return "require: got " .. tostring(err)
    end
  end)
  check("pump: loop:call_soon from a handler runs soon", function()
    local d = defer.new()
    loop:call_soon(function() d:callback("ran") end)
    local v = dngx.wait(d, 1)
    if v ~= "ran" then return "got " .. tostring(v) end
  end)
  check("pump: kicks do not pile up timers", function()
    local before = ngx.timer.pending_count()
    local n = 0
    for _ = 1, 1000 do
      loop:call_soon(function() n = n + 1 end)
      dngx.pump()
    end
    local pending = ngx.timer.pending_count() - before
    ngx.sleep(0.05)
    if pending > 3 or n ~= 1000 then
      return ("%d more timers pending, %d of 1000 calls ran"):format(pending, n)
    end
  end)
  check("pump: a loop callback may yield (ngx.sleep in a loop timer)", function()
    local d = defer.new()
    loop:call_later(0.01, function()
      ngx.sleep(0.02)
      d:callback("slept in the loop")
    end)
    local v = dngx.wait(d, 2)
    if v ~= "slept in the loop" then return "got " .. tostring(v) end
  end)
  check("pump is idempotent", function()
    local p = dngx.pump()
    if p ~= dngx.pump() or p.stopped or p.ticks < 1 then return tostring(p) end
  end)
  check("bad arguments are named", function()
    local ok, err = pcall(dngx.wait, 5)
    if ok or not tostring(err):find("bad argument #1 to 'defer.ngx.wait'") then
      return tostring(err)
    end
    ok, err = pcall(dngx.thread, nil)
    if ok or not tostring(err):find("bad argument #1 to 'defer.ngx.thread'") then
      return tostring(err)
    end
  end)
end

-- GET /timer: dngx.thread and dngx.wait inside an ngx.timer callback.
function M.timer()
  local port = tonumber(ngx.var.server_port)
  local done = defer.new()
  local ok, err = ngx.timer.at(0.001, function()
    local v, f = dngx.wait(dngx.thread(fetch, 9, port, 1))
    done:callback(v or ("failure " .. tostring(f)))
  end)
  if not ok then ngx.say("FAIL timer: ", err) return end
  local v, f = dngx.wait(done, 5)
  ngx.say(v == "ok 9" and "ok timer" or ("FAIL timer: " .. tostring(v or f)))
end

------------------------------------------------------------------ phases

local function oneline(s) return (tostring(s):gsub("%s+", " ")) end

-- Run in init_by_lua: waiting, spawning and pumping are impossible there.
-- The module is loaded in the master, so the workers inherit what it saw.
local init_seen = {}
function M.init_phase_checks()
  local ok, err = pcall(dngx.wait, defer.new())
  init_seen.wait = ok and "no error" or oneline(err)
  ok, err = pcall(dngx.pump)
  init_seen.pump = ok and "no error" or oneline(err)
  init_seen.fired = tostring(dngx.wait(defer.succeed("fired")))
end

function M.init_errors()
  ngx.say("wait: ", init_seen.wait)
  ngx.say("pump: ", init_seen.pump)
  ngx.say("fired: ", init_seen.fired)
end

function M.header_filter()
  local ok, err = pcall(dngx.wait, defer.new())
  ngx.header["X-Wait"] = ok and "no error" or oneline(err)
  ok, err = pcall(dngx.thread, function() end)
  ngx.header["X-Thread"] = ok and "no error" or oneline(err)
end

return M
