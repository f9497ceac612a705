-- worker.lua: runs ONE measurement in its own process and prints one line
--   RESULT cpu=<s> rss0=<kB> hwm=<kB> held=<bytes> list=<how> ok=1
-- or
--   RESULT fail=<reason>
-- Usage: lua worker.lua IMPL WORKLOAD N LIMIT [SODIR]
--   IMPL      defer | naive | floor
--   WORKLOAD  w1 | w2 | flat | nestnow | unwind | drain | loop | store | pairs | chain
--   SODIR     folder holding defer.so (for IMPL defer)
-- cpu is process CPU time (os.clock) around the workload only; rss0 is VmRSS
-- just before it, hwm is VmHWM (peak RSS) read right after it; held is the
-- growth of collectgarbage("count") after a full collection while the
-- workload's tasks are still referenced (W1 only).
local impl, wl, N, limit, sodir = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]) or 0, arg[5]
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = here .. "/?.lua;" .. package.path
if sodir then package.cpath = sodir .. "/?.so;" .. package.cpath end
N = math.floor(N)
limit = math.floor(limit)

local clock = os.clock

local function status(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) or 0
end

local function fmt(x)
  if math.type and math.type(x) == "integer" then return tostring(x) end
  return string.format("%.17g", x)
end

---------------------------------------------------------------- floor
local function floor_loop()
  local count = 0
  local function f(i) count = count + 1 return i end
  return function()
    for i = 1, N do f(i) end
    assert(count == N)
  end
end

local function floor_store()
  local count, r = 0, {}
  local function f(i) count = count + 1 return i end
  return function()
    for i = 1, N do r[i] = f(i) end
    assert(count == N and #r == N)
  end
end

-- What API.md asks of any W1 run: the list hands over one {ok, value} pair
-- per task, in an array.
local function floor_pairs()
  local count, r = 0, {}
  local function f(i) count = count + 1 return i end
  return function()
    for i = 1, N do r[i] = { true, f(i) } end
    assert(count == N and #r == N)
  end
end

local function floor_chain()
  local function f(x) return { x[1] + 1 } end
  return function()
    local x = { 0 }
    for _ = 1, N do x = f(x) end
    assert(x[1] == N)
  end
end

---------------------------------------------------------------- naive
local function naive_w1()
  local naive = require "naive"
  local count, n, results = 0, 0, {}
  local function work(i) count = count + 1 return i end
  local function done(i, v) results[i] = v n = n + 1 end
  local sem
  return function()
    sem = naive.semaphore(limit)
    for i = 1, N do sem:run(work, i, done) end
    assert(n == N and count == N and sem.tokens == limit, "not all tasks done")
  end, function() return results end
end

local function naive_w2()
  local naive = require "naive"
  local count, n, results = 0, 0, {}
  local ready = naive.ready()
  local function work(i, k) count = count + 1 ready:post(k, i) end
  local function done(i, v) results[i] = v n = n + 1 end
  return function()
    local sem = naive.semaphore(limit)
    for i = 1, N do sem:run_async(work, i, done) end
    ready:run()
    assert(n == N and count == N and sem.tokens == limit, "not all tasks done")
  end, function() return results end
end

local naive_count = 0
local function naive_drain()
  local naive = require "naive"
  local n = 0
  local function work(i) naive_count = naive_count + 1 return i end
  local function done() n = n + 1 end
  return function()
    local sem = naive.semaphore(1)
    local first
    sem:run_async(function(_, k) first = k end, 0, done)
    for i = 1, N do sem:run(work, i, done) end
    first(0)
    assert(naive_count == N and n == N + 1 and sem.tokens == 1, "not all tasks ran")
  end
end

---------------------------------------------------------------- defer
local defer, listnote
local function load_defer()
  defer = require "defer"
  listnote = defer.list and "list" or "fallback"
end

-- The list over ds: defer.list when the module has it, else a count of
-- results taken with add_callback.  on_done(results) when all have fired.
local function over(ds, on_done)
  if defer.list then
    defer.list(ds):add_callback(on_done)
  else
    local got, n, total = {}, 0, #ds
    local function collect(v, i)
      got[i] = v
      n = n + 1
      if n == total then on_done(got) end
      return v
    end
    for i = 1, total do ds[i]:add_callback(collect, i) end
  end
end

local function check_results(res)
  assert(#res == N, "list fired with " .. #res .. " results")
  if defer.list then
    for i = 1, N do
      local p = res[i]
      if not (p[1] == true and p[2] == i) then -- no message built per task
        error("result " .. i .. " is not a success with " .. i)
      end
    end
  else -- the fallback keeps the values only
    for i = 1, N do
      if res[i] ~= i then error("result " .. i .. " is not " .. i) end
    end
  end
end

local function defer_w1()
  load_defer()
  local count, ds, fired = 0, nil, false
  local function work(i) count = count + 1 return i end
  local function on_done(res) check_results(res) fired = true end
  return function()
    local sem = defer.semaphore(limit)
    ds = {}
    for i = 1, N do ds[i] = sem:run(work, i) end
    over(ds, on_done)
    assert(fired, "the list did not fire")
    assert(count == N, "counter is " .. count)
    assert(sem.tokens == limit, "tokens back: " .. tostring(sem.tokens))
  end, function() return ds end
end

local function defer_w2()
  load_defer()
  local count, ds, fired = 0, nil, false
  local loop = defer.loop
  local new = defer.new
  local function fire(d, i) d:callback(i) end
  local function work(i)
    count = count + 1
    local d = new()
    loop:call_soon(fire, d, i)
    return d
  end
  local function on_done(res) check_results(res) fired = true end
  return function()
    local sem = defer.semaphore(limit)
    ds = {}
    for i = 1, N do ds[i] = sem:run(work, i) end
    over(ds, on_done)
    loop:run()
    assert(fired, "the list did not fire")
    assert(count == N, "counter is " .. count)
    assert(sem.tokens == limit, "tokens back: " .. tostring(sem.tokens))
  end
end

local function defer_flat()
  load_defer()
  local function inc(x) return x + 1 end
  return function()
    local d = defer.new()
    for _ = 1, N do d:add_callback(inc) end
    d:callback(0)
    assert(d.result == N, "flat chain gave " .. tostring(d.result))
  end
end

local function defer_nestnow()
  load_defer()
  local succeed = defer.succeed
  local function nest(x) return succeed(x + 1) end
  return function()
    local d = defer.new()
    for _ = 1, N do d:add_callback(nest) end
    d:callback(0)
    assert(d.result == N, "nestnow chain gave " .. tostring(d.result))
  end
end

local function defer_unwind()
  load_defer()
  return function()
    local new, ds = defer.new, {}
    for i = 1, N + 1 do ds[i] = new() end
    local function nxt(_, i) return ds[i + 1] end
    for i = 1, N do ds[i]:add_callback(nxt, i) end
    for i = 1, N do ds[i]:callback(i) end
    ds[N + 1]:callback("innermost")
    assert(ds[1].result == "innermost", "unwind gave " .. tostring(ds[1].result))
  end
end

local defer_count = 0
local function defer_drain()
  load_defer()
  local function work(i) defer_count = defer_count + 1 return i end
  return function()
    local sem = defer.semaphore(1)
    local first = defer.new()
    local d0 = sem:run(function() return first end)
    for i = 1, N do sem:run(work, i) end
    assert(defer_count == 0, "tasks ran before the first ended")
    first:callback(0)
    assert(d0.called, "the first task did not end")
    assert(defer_count == N, "only " .. defer_count .. " of " .. N .. " tasks ran")
    assert(sem.tokens == 1, "tokens back: " .. tostring(sem.tokens))
  end
end

local make = {
  floor = { loop = floor_loop, store = floor_store, pairs = floor_pairs, chain = floor_chain },
  naive = { w1 = naive_w1, w2 = naive_w2, drain = naive_drain },
  defer = { w1 = defer_w1, w2 = defer_w2, flat = defer_flat, nestnow = defer_nestnow,
            unwind = defer_unwind, drain = defer_drain },
}

local function oneline(s)
  s = tostring(s):gsub("%s*stack traceback:.*$", "")
  return (s:gsub("[\r\n]+", " | "))
end

local mk = make[impl] and make[impl][wl]
if not mk then
  io.write("RESULT fail=no such workload: ", tostring(impl), " ", tostring(wl), "\n")
  os.exit(0)
end

local ok, run, held = pcall(mk)
if not ok then
  io.write("RESULT fail=", oneline(run), "\n")
  os.exit(0)
end

collectgarbage("collect")
collectgarbage("collect")
local gc0 = collectgarbage("count")
local rss0 = status("VmRSS")
local t0 = clock()
local ok2, err = pcall(run)
local t1 = clock()
local hwm = status("VmHWM")
if not ok2 then
  local ran = (impl == "naive" and naive_count) or (impl == "defer" and defer_count) or nil
  local msg = oneline(err)
  if ran and wl == "drain" then msg = msg .. " (" .. ran .. " of " .. N .. " ran)" end
  io.write("RESULT fail=", msg, "\n")
  os.exit(0)
end
local heldb = "-"
if held then
  -- what held() returns stays referenced (a parameter) while it is counted
  local function count_held(_)
    collectgarbage("collect")
    collectgarbage("collect")
    return fmt(math.floor((collectgarbage("count") - gc0) * 1024))
  end
  heldb = count_held(held())
end
io.write(string.format("RESULT cpu=%s rss0=%d hwm=%d held=%s list=%s ok=1\n",
  fmt(t1 - t0), rss0, hwm, heldb, listnote or "-"))
