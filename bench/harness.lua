-- harness.lua: drives the benchmark (run by bench/run under Lua 5.4).
-- Usage: lua5.4 bench/harness.lua ROOT BUILT-LUA...   (QUICK=1 in the
-- environment for the short version)
-- Every measurement is its own process (bench/worker.lua for Lua,
-- bench/twisted_work.py for Twisted); rounds are interleaved (every
-- measurement once per round, A B A B), and each cell is the median of its
-- rounds.  Prints one table, footnotes, and a targets section.
local ROOT = assert(arg[1], "usage: harness.lua ROOT BUILT-LUA...")
local BENCH = ROOT .. "/bench"
local built = {}
for i = 2, #arg do built[arg[i]] = true end

local quick = os.getenv("QUICK")
local QUICK = quick ~= nil and quick ~= "" and quick ~= "0"
local ROUNDS = QUICK and 3 or 5
local TW_LIMIT = 120 -- seconds per Twisted run
local LUA_LIMIT = 300 -- seconds per Lua run
local ONCE_AFTER = QUICK and 5 or 20 -- a run that took longer than this is not repeated

local function sh_ok(cmd) return os.execute(cmd .. " >/dev/null 2>&1") == true end
local function sh_out(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local s = p:read("a") or ""
  p:close()
  return (s:gsub("%s+$", ""))
end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function log(...) io.stderr:write("bench: ", string.format(...), "\n") io.stderr:flush() end

local PY = "/usr/bin/python3"
local has_twisted = sh_ok(PY .. " -c 'import twisted'")
local has = { ["5.4"] = built["lua5.4"] == true, JIT = built["luajit"] == true }
local VM = {
  ["5.4"] = { cmd = "lua5.4", so = ROOT .. "/build/lua5.4" },
  JIT = { cmd = "luajit", so = ROOT .. "/build/luajit" },
}

------------------------------------------------------------------ plan
local function Ns(full, quickset) return QUICK and quickset or full end
local W1N = Ns({ 1e4, 1e5, 1e6 }, { 1e4, 1e5 })
local W2N = Ns({ 1e4, 1e5 }, { 1e4 })
local W3N = Ns({ 1e5, 1e6 }, { 1e4, 1e5 })
local DRN = Ns({ 1e5, 1e6 }, { 1e4, 1e5 })

local jobs, joblist = {}, {}
-- job(kind, vm, wl, N, limit): one measurement, shared between rows.
local function job(kind, vm, wl, N, limit)
  local key = table.concat({ kind, vm or "-", wl, N, limit or 0 }, " ")
  if jobs[key] then return jobs[key] end
  local j = { key = key, kind = kind, vm = vm, wl = wl, N = N, limit = limit or 0, samples = {} }
  if kind == "twisted" then
    if not has_twisted then j.na = "Twisted not installed" end
    j.cmd = string.format("timeout -k 5 %d %s %s %s %d %d", TW_LIMIT, PY, q(BENCH .. "/twisted_work.py"),
      wl, N, j.limit)
    j.limit_s = TW_LIMIT
  else
    if not has[vm] then j.na = "no build for " .. vm end
    j.cmd = string.format("timeout -k 5 %d %s %s %s %s %d %d %s", LUA_LIMIT, VM[vm].cmd,
      q(BENCH .. "/worker.lua"), kind, wl, N, j.limit, q(VM[vm].so))
    j.limit_s = LUA_LIMIT
  end
  jobs[key] = j
  joblist[#joblist + 1] = j
  return j
end

local rows = {}
local function row(label, group, wl, N, limit, floorwl, opts)
  opts = opts or {}
  local r = { label = label, group = group, wl = wl, N = N, limit = limit, cells = {} }
  local c = r.cells
  c.d54 = job("defer", "5.4", wl, N, limit)
  c.dJIT = job("defer", "JIT", wl, N, limit)
  if opts.naive then
    c.n54 = job("naive", "5.4", wl, N, limit)
    c.nJIT = job("naive", "JIT", wl, N, limit)
  end
  c.tw = job("twisted", nil, opts.twwl or wl, N, limit)
  c.f54 = job("floor", "5.4", floorwl, N, 0)
  c.fJIT = job("floor", "JIT", floorwl, N, 0)
  rows[#rows + 1] = r
  return r
end

for _, lim in ipairs({ 2, 100 }) do
  for _, N in ipairs(W1N) do row("W1 lim " .. lim, "w1", "w1", N, lim, "pairs", { naive = true }) end
end
for _, lim in ipairs({ 2, 100 }) do
  for _, N in ipairs(W2N) do
    row("W2 lim " .. lim, "w2", "w2", N, lim, "store", { naive = true })
    row("W2q lim " .. lim, "w2q", "w2", N, lim, "store", { naive = true, twwl = "w2q" })
  end
end
for _, wl in ipairs({ "flat", "nestnow", "unwind" }) do
  for _, N in ipairs(W3N) do row("W3 " .. wl, wl, wl, N, 0, "chain") end
end
for _, N in ipairs(DRN) do row("Drain", "drain", "drain", N, 1, "loop", { naive = true }) end

------------------------------------------------------------------ run
local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("a"))
  p:close()
  return t or os.time()
end

local SIG = { [4] = "SIGILL", [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL",
  [11] = "SIGSEGV", [15] = "SIGTERM" }

local function run_job(j)
  local p = io.popen(j.cmd .. " </dev/null 2>&1")
  local out = p:read("a") or ""
  local _, how, code = p:close()
  -- reasons name files relative to the repository
  out = out:gsub(ROOT:gsub("%p", "%%%0") .. "/", "")
  local line = out:match("RESULT ([^\n]*)")
  if how == "exit" and code == 124 then
    j.fail, j.timeout = string.format("timeout (over %d s)", j.limit_s), true
    return
  end
  if line and line:match("^fail=") then
    j.fail = line:match("^fail=(.*)$")
    return
  end
  if not line or not line:match("ok=1") then
    local why
    if how == "signal" or (how == "exit" and code and code > 128) then
      local s = how == "signal" and code or code - 128
      why = "crashed: " .. (SIG[s] or ("signal " .. s))
      if s == 11 then why = why .. " (C stack overflow?)" end
    else
      why = "no result (exit " .. tostring(code) .. ")"
    end
    local tail = out:gsub("%s+$", ""):match("([^\n]*)$") or ""
    if tail ~= "" then why = why .. ": " .. tail:sub(1, 160) end
    j.fail, j.crash = why, true
    return
  end
  local s = {}
  for k, v in line:gmatch("(%w+)=(%S+)") do s[k] = tonumber(v) or v end
  j.samples[#j.samples + 1] = s
  if type(s.list) == "string" and j.kind == "defer" then j.listnote = s.list end
end

-- What fresh memory costs here: a workload's time includes the first touch
-- of every page its tasks fill, and on some virtual machines that is most
-- of it.  string.rep of 64 MiB touches 128 MiB of fresh pages (its buffer,
-- then the string), median of 3.
local function page_cost()
  local size, t = 64 * 1024 * 1024, {}
  for r = 1, 3 do
    local c = os.clock()
    t[r] = #string.rep("x", size) > 0 and os.clock() - c
    collectgarbage()
  end
  table.sort(t)
  return t[2] / (2 * size / 4096) * 1e6
end
local page_us = page_cost()

local t_start = now()
log("%s mode: %d rounds, %d measurements per round", QUICK and "QUICK" or "full", ROUNDS, #joblist)
for r = 1, ROUNDS do
  local t_round = now()
  for _, j in ipairs(joblist) do
    if not (j.na or j.fail or j.once) then
      run_job(j)
      local s = j.samples[#j.samples]
      if s and s.cpu > ONCE_AFTER then j.once = true end
    end
  end
  log("round %d/%d done in %.1f s", r, ROUNDS, now() - t_round)
end
local elapsed = now() - t_start

------------------------------------------------------------------ figures
local function median(xs)
  if #xs == 0 then return nil end
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local m = #t
  if m % 2 == 1 then return t[(m + 1) // 2] end
  return (t[m // 2] + t[m // 2 + 1]) / 2
end

local function field(j, f)
  if not j or #j.samples == 0 then return nil end
  local xs = {}
  for i, s in ipairs(j.samples) do xs[i] = f(s) end
  return median(xs)
end

local function ns(j) return field(j, function(s) return s.cpu / j.N * 1e9 end) end
local function peak_mb(j) return field(j, function(s) return s.hwm / 1024 end) end
local function bpt(j) return field(j, function(s) return (s.hwm - s.rss0) * 1024 / j.N end) end
local function gcb(j)
  return field(j, function(s) return type(s.held) == "number" and s.held / j.N or 0 end)
end

local function commas(n)
  local s = string.format("%d", math.floor(n + 0.5))
  local k
  repeat s, k = s:gsub("^(-?%d+)(%d%d%d)", "%1,%2") until k == 0
  return s
end
local function fN(n) -- 100000 -> "1e5"
  local e = math.floor(math.log(n, 10) + 0.5)
  if 10 ^ e == n then return "1e" .. e end
  return string.format("%d", n)
end
local function fnum(x)
  if x == nil then return "-" end
  if x < 10 then return string.format("%.1f", x) end
  return commas(x)
end
local function fratio(x, lower)
  if x == nil then return "-" end
  local s = x < 10 and string.format("%.2f", x) or x < 100 and string.format("%.1f", x) or commas(x)
  return (lower and ">=" or "") .. s .. "x"
end

local notes, noteof = {}, {}
local function note(j)
  if noteof[j] then return noteof[j] end
  local who = j.kind == "twisted" and "Twisted" or (j.kind .. " " .. j.vm)
  notes[#notes + 1] = string.format("%s %s N=%s%s: %s", who, j.wl, fN(j.N),
    j.limit > 0 and (" limit " .. j.limit) or "", j.fail or j.na)
  noteof[j] = #notes
  return #notes
end

local function cell(j)
  if not j then return "-" end
  if j.na then return "n/a" end
  if j.fail then
    return (j.timeout and "timeout" or "fails") .. "[" .. note(j) .. "]"
  end
  local v = ns(j)
  if not v then return "-" end
  local s = fnum(v)
  if #j.samples < ROUNDS then s = s .. "*" end
  return s
end

-- Ratio a/b of ns per task; when a timed out, a lower bound from its limit.
local function ratio(a, b)
  local nb = ns(b)
  if not nb or not a or a.na then return nil end
  if a.timeout then return a.limit_s * 1e9 / a.N / nb, true end
  local na_ = ns(a)
  if not na_ then return nil end
  return na_ / nb
end

local header = { "workload", "N", "defer 5.4", "defer JIT", "naive 5.4", "naive JIT", "Twisted",
  "floor 5.4", "floor JIT", "Tw/d 5.4", "Tw/d JIT", "nv/d 5.4", "nv/d JIT", "d/fl 5.4",
  "d/fl JIT", "peak MB d5.4", "peak MB dJIT", "peak MB Tw", "B/task d5.4", "B/task dJIT",
  "B/task nv5.4", "B/task Tw", "gc B/task d5.4" }
local right = {}
for i = 2, #header do right[i] = true end

local lines = {}
for _, r in ipairs(rows) do
  local c = r.cells
  local function rt(a, b)
    local x, lower = ratio(a, b)
    return fratio(x, lower)
  end
  local function mem(f, j) if not j or #j.samples == 0 then return "-" end return fnum(f(j)) end
  lines[#lines + 1] = {
    r.label, fN(r.N),
    cell(c.d54), cell(c.dJIT), cell(c.n54), cell(c.nJIT), cell(c.tw), cell(c.f54), cell(c.fJIT),
    rt(c.tw, c.d54), rt(c.tw, c.dJIT), rt(c.n54, c.d54), rt(c.nJIT, c.dJIT),
    rt(c.d54, c.f54), rt(c.dJIT, c.fJIT),
    mem(peak_mb, c.d54), mem(peak_mb, c.dJIT), mem(peak_mb, c.tw),
    mem(bpt, c.d54), mem(bpt, c.dJIT), mem(bpt, c.n54), mem(bpt, c.tw),
    r.group == "w1" and mem(gcb, c.d54) or "-",
  }
end

local width = {}
for i, h in ipairs(header) do width[i] = #h end
for _, l in ipairs(lines) do
  for i, v in ipairs(l) do if #v > width[i] then width[i] = #v end end
end
local function emit(l)
  local parts = {}
  for i, v in ipairs(l) do
    local pad = string.rep(" ", width[i] - #v)
    parts[i] = right[i] and (pad .. v) or (v .. pad)
  end
  print("| " .. table.concat(parts, " | ") .. " |")
end

------------------------------------------------------------------ print
local function version(cmd) return (sh_out(cmd):match("[^\n]*")) end
local listnote
for _, j in ipairs(joblist) do if j.listnote then listnote = j.listnote break end end

print(string.format("defer benchmarks (%s): %d rounds, interleaved; medians of process CPU time;"
  .. " this run took %.0f s", QUICK and "QUICK" or "full", ROUNDS, elapsed))
print(string.format("  %s | %s | %s",
  has["5.4"] and version("lua5.4 -v") or "Lua 5.4: not built",
  has.JIT and version("luajit -v"):gsub(" %-%-.*$", "") or "LuaJIT: not built",
  has_twisted and version(PY .. " -c 'import sys, twisted; print(\"CPython\","
    .. " sys.version.split()[0], \"Twisted\", twisted.__version__)'")
    or "Twisted: not installed"))
print(string.format("  fresh memory on this machine: %.2f us per 4 KiB page on first touch"
  .. " (%.2f ns per byte), paid by every workload for the bytes its tasks take", page_us, page_us * 1000 / 4096))
print("  ns per task (lower is better); ratios: Tw/d = Twisted / defer, nv/d = naive / defer"
  .. " (above 1: defer faster), d/fl = defer / floor (cost over a bare loop)")
if listnote == "fallback" then
  print("  NOTE: defer.list is missing in this build: the W1/W2 \"list\" is a count of results"
    .. " taken with add_callback (fallback)")
end
print("")
emit(header)
local sep = {}
for i = 1, #header do sep[i] = right[i] and (string.rep("-", width[i] + 1) .. ":") or string.rep("-", width[i] + 2) end
print("|" .. table.concat(sep, "|") .. "|")
for _, l in ipairs(lines) do emit(l) end
print("")
print("  floor: W1 pairs (the array of {true, value} pairs a list hands over), W2 store, W3 chain,"
  .. " Drain loop.  W2q rows: defer and naive as W2, Twisted with a plain deque instead of the reactor.")
print(string.format("  * fewer samples than rounds (a run over %d s is not repeated; a failure or timeout"
  .. " is not retried).  Twisted runs are capped at %d s.", ONCE_AFTER, TW_LIMIT))
for i, n in ipairs(notes) do print(string.format("  [%d] %s", i, n)) end

------------------------------------------------------------------ targets
local function find(group, N, limit)
  for _, r in ipairs(rows) do
    if r.group == group and r.N == N and (limit == nil or r.limit == limit) then return r end
  end
end
local BIG_W1, BIG_W2 = W1N[#W1N], W2N[#W2N]
local BIG_W3, SMALL_W3 = W3N[#W3N], W3N[#W3N - 1]
local BIG_DR, SMALL_DR = DRN[#DRN], DRN[#DRN - 1]

local results = { pass = 0, miss = 0 }
local function target(ok, text)
  if ok == nil then
    print(string.format("  n/a   %s", text))
    return
  end
  results[ok and "pass" or "miss"] = results[ok and "pass" or "miss"] + 1
  print(string.format("  %-5s %s", ok and "PASS" or "MISS", text))
end

local function at_least(a, b, k, what)
  local x, lower = ratio(a, b)
  if not x then
    local why = (b and b.fail) or (a and (a.fail or a.na)) or "no figure"
    return nil, string.format("%s: no figure (%s)", what, why)
  end
  if lower and x < k then
    return nil, string.format("%s: %s (peer timed out, bound too weak)", what, fratio(x, true))
  end
  return x >= k, string.format("%s: %s (target >= %gx)", what, fratio(x, lower), k)
end

local function completes(j, what)
  if not j or j.na then return nil, what .. ": not measured" end
  if j.fail then return false, what .. ": " .. j.fail end
  return #j.samples > 0, what .. ": completes (" .. fnum(ns(j)) .. " ns/task)"
end

local function linear(big, small, what)
  if not big or not small or big.na or small.na then return nil, what .. ": not measured" end
  if big.fail or small.fail then return false, what .. ": " .. (big.fail or small.fail) end
  local tb = ns(big) * big.N
  local ts = ns(small) * small.N
  local k = tb / ts
  return k <= 12 * (big.N / small.N) / 10, string.format("%s: time x%.2f for N x%g (target <= x%g)",
    what, k, big.N / small.N, 12 * (big.N / small.N) / 10)
end

print("")
print(string.format("targets (Lua 5.4 unless said; W1 at N=%s, W2 at N=%s, W3/Drain at N=%s vs %s%s)",
  fN(BIG_W1), fN(BIG_W2), fN(BIG_W3), fN(SMALL_W3), QUICK and "; QUICK: smaller N than the brief's" or ""))
for _, lim in ipairs({ 2, 100 }) do
  local r = find("w1", BIG_W1, lim)
  target(at_least(r.cells.tw, r.cells.d54, 25, "W1 limit " .. lim .. " vs Twisted"))
  target(at_least(r.cells.n54, r.cells.d54, 1, "W1 limit " .. lim .. " faster than naive (naive/defer)"))
end
do
  local r = find("w1", BIG_W1, 2)
  local d, t, f = r.cells.d54, r.cells.tw, r.cells.f54
  if f and t and #f.samples > 0 and #t.samples > 0 then -- the pairs alone, against 25x Twisted's budget
    print(string.format("  info  W1 floor pairs: %s ns and %s B per task for the list's {true, value} pairs"
      .. " alone; 25x Twisted leaves %s ns per task", fnum(ns(f)), fnum(bpt(f)), fnum(ns(t) / 25)))
  end
  if d and t and #d.samples > 0 and #t.samples > 0 then
    local bd, bt, g = bpt(d), bpt(t), gcb(d)
    target(bd <= bt / 2, string.format("W1 bytes per held task <= half of Twisted's: %s B (gc count %s B)"
      .. " vs Twisted %s B (target <= %s B)", fnum(bd), fnum(g), fnum(bt), fnum(bt / 2)))
  else
    target(nil, "W1 bytes per held task: no figure")
  end
end
for _, lim in ipairs({ 2, 100 }) do
  local r = find("w2", BIG_W2, lim)
  local rq = find("w2q", BIG_W2, lim)
  target(at_least(r.cells.tw, r.cells.d54, 25, "W2 limit " .. lim .. " vs Twisted (reactor)"))
  target(at_least(rq.cells.tw, rq.cells.d54, 25, "W2 limit " .. lim .. " vs Twisted (deque)"))
  target(at_least(r.cells.n54, r.cells.d54, 1, "W2 limit " .. lim .. " no slower than naive (naive/defer)"))
end
for _, wl in ipairs({ "flat", "nestnow", "unwind" }) do
  local big, small = find(wl, BIG_W3), find(wl, SMALL_W3)
  for _, vm in ipairs({ "54", "JIT" }) do
    local name = vm == "54" and "" or " (LuaJIT)"
    target(completes(big.cells["d" .. vm], string.format("W3 %s N=%s%s", wl, fN(BIG_W3), name)))
    target(linear(big.cells["d" .. vm], small.cells["d" .. vm], string.format("W3 %s linear%s", wl, name)))
  end
end
do
  local big = find("flat", BIG_W3)
  target(at_least(big.cells.tw, big.cells.d54, 100, string.format("W3 flat N=%s vs Twisted", fN(BIG_W3))))
end
do
  local big, small = find("drain", BIG_DR), find("drain", SMALL_DR)
  for _, vm in ipairs({ "54", "JIT" }) do
    local name = vm == "54" and "" or " (LuaJIT)"
    target(completes(big.cells["d" .. vm], string.format("Drain N=%s%s", fN(BIG_DR), name)))
    target(linear(big.cells["d" .. vm], small.cells["d" .. vm], "Drain linear" .. name))
  end
end
for _, g in ipairs({ { "w1", BIG_W1, "W1" }, { "w2", BIG_W2, "W2" }, { "w2q", BIG_W2, "W2q" } }) do
  for _, lim in ipairs({ 2, 100 }) do
    local r = find(g[1], g[2], lim)
    target(at_least(r.cells.tw, r.cells.dJIT, 10,
      string.format("LuaJIT %s limit %d vs Twisted", g[3], lim)))
    if g[1] ~= "w2q" then
      local x = ratio(r.cells.nJIT, r.cells.dJIT)
      print(string.format("  info  LuaJIT %s limit %d vs naive LuaJIT (naive/defer): %s", g[3], lim, fratio(x)))
    end
  end
end
print(string.format("  %d PASS, %d MISS", results.pass, results.miss))

-- A crash of a defer run is unexpected; everything else is a report.
local crashed = false
for _, j in ipairs(joblist) do
  if j.crash and j.kind == "defer" then crashed = true end
end
if crashed then
  io.stderr:write("bench: a defer run crashed (see the notes above)\n")
  os.exit(1)
end
os.exit(0)
