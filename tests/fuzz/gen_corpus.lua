-- gen_corpus.lua: writes the seed corpus of the fuzz target, one small
-- program per file, together covering every operation and action of
-- ops.lua (whose tables give the opcodes).
-- Usage: lua5.4 tests/fuzz/gen_corpus.lua [DIR]   (default: corpus/ next to it)

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local dir = arg[1] or (here .. "/corpus")
local OPS, ACTIONS = assert(loadfile(here .. "/ops.lua"))("list-ops")

local function index(list)
  local t = {}
  for i, name in ipairs(list) do t[name] = i - 1 end
  return t
end
local OP, ACT = index(OPS), index(ACTIONS)

local function bytes(...)
  local out = {}
  for _, v in ipairs({...}) do
    if type(v) == "string" then out[#out + 1] = v
    else out[#out + 1] = string.char(v) end
  end
  return table.concat(out)
end

-- A behaviour: kind k (see ops.lua), value v, and for k 6 and 7 one or two
-- actions (each made by act()).
local function beh(k, v, a1, a2)
  if k >= 6 then
    return bytes(k + (a2 and 8 or 0), v, a1, a2 or "")
  end
  return bytes(k, v)
end

-- An action; run, schedule and add carry a behaviour of their own.
local function act(name, a, b, nested)
  local s = bytes(ACT[name], a, b)
  if name == "run" or name == "schedule" or name == "add" then
    s = s .. (nested or beh(0, 0))
  end
  return s
end

local function op(name, ...) return bytes(OP[name], ...) end

-- The header: the three semaphore limits (byte % 3 + 1), the queue's size
-- and backlog (byte % 5: none, 0, 1, 2, 3).
local function prog(l1, l2, l3, size, backlog, ...)
  return bytes(l1 - 1, l2 - 1, l3 - 1, size, backlog, ...)
end

-- The first byte that decodes as wanted (pred mirrors ops.lua's decoding).
local function find(pred)
  for b = 0, 255 do
    if pred(b) then return b end
  end
  error("no byte decodes so")
end

-- acquire's byte: semaphore i (4: the lock), n tokens
local function acq(i, n)
  return op("acquire", find(function(b) return b % 4 + 1 == i and (b >> 2) % 4 + 1 == n end))
end
-- limit's byte: semaphore i, limit n, `sem.limit = n` when syntax
local function lim(i, n, syntax)
  return op("limit", find(function(b)
    return b % 4 + 1 == i and (b >> 2) % 3 + 1 == n and (b >= 128) == (syntax or false)
  end))
end
-- list's first byte: mode (0 list, 1 gather, 2 race) and the child count
local function list(mode, picks, flags, pbeh)
  local b = find(function(x) return x % 3 == mode and (x >> 2) % 5 == #picks end)
  return op("list", b, bytes(table.unpack(picks)), flags, pbeh or "")
end

-- The optional header of fuzz_ops.c: a full collection at every
-- (16 + 4 * p)-th growing allocation ("gc"), or a memory error at
-- allocation k ("oom").
local function gc_mode(p, program) return bytes(0xFF, p, 0) .. program end
local function oom_mode(k, program) return bytes(0xFF, k % 256, 1 + 2 * (k // 256)) .. program end

local seeds = {
  ["01-semaphore-fifo"] = prog(2, 1, 3, 0, 0,
    acq(1, 2), acq(1, 1), acq(1, 2), op("release", 0), op("release", 0), op("release", 0),
    op("release", 0)),
  ["02-semaphore-cancel-head"] = prog(2, 2, 2, 0, 0,
    acq(1, 1), acq(1, 2), acq(1, 1), op("cancel", 1), op("release", 0), op("release", 0)),
  ["03-semaphore-limit"] = prog(1, 1, 1, 0, 0,
    acq(2, 1), acq(2, 1), acq(2, 1), lim(2, 3), lim(2, 1, true), op("release", 0),
    op("release", 0), op("release", 0), lim(2, 2)),
  ["04-run-tasks"] = prog(1, 2, 3, 0, 0,
    op("new", 0), op("run", 0, beh(5, 0)), op("run", 0, beh(1, 9)), op("run", 0, beh(2, 3)),
    op("run", 0, beh(4, 4)), op("fire", 0, 0), op("run", 1, beh(3, 1))),
  ["05-run-cancel"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("run", 0, beh(5, 0)), op("run", 0, beh(0, 0)), op("cancel", 2),
    op("cancel", 1), op("fire", 0, 0),
    acq(4, 1), op("run", 3, beh(6, 0, act("release", 0, 0))), op("release", 0),
    op("run", 3, beh(7, 0, act("acquire", 3, 0)))),
  ["06-lock"] = prog(1, 1, 1, 0, 0,
    acq(4, 1), acq(4, 1), op("run", 3, beh(0, 1)), op("release", 0), op("release", 0),
    lim(4, 2, true), op("misuse", 4, 0)),
  ["07-queue"] = prog(1, 1, 1, 3, 2,
    op("get"), op("get"), op("get"), op("put"), op("put"), op("put"), op("put"), op("put"),
    op("put"), op("get"), op("cancel", 2)),
  ["08-queue-unbounded"] = prog(1, 1, 1, 0, 0,
    op("put"), op("put"), op("get"), op("get"), op("get"), op("put")),
  ["09-deferred-callbacks"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("add", 0, 0, 1, beh(1, 5)), op("add", 0, 1, 0, beh(0, 0)),
    op("add", 0, 2, 2, beh(2, 0)), op("add", 0, 3, 0, beh(0, 0), beh(1, 1)),
    op("fire", 0, 0), op("fire", 0, 1), op("add", 0, 3, 1, beh(4, 0), beh(0, 0))),
  ["10-cancel-and-late-fire"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 1, beh(0, 0)), op("new", 1, beh(1, 0)), op("new", 1, beh(3, 0)),
    op("cancel", 0), op("cancel", 1), op("cancel", 2), op("cancel", 3), op("fire", 0, 0),
    op("fire", 0, 0), op("fire", 1, 0), op("fire", 3, 2)),
  ["11-pause-chain"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0), op("pause", 0, 1), op("chain", 0, 1), op("fire", 0, 0),
    op("pause", 0, 0), op("add", 1, 2, 0, beh(0, 0))),
  ["12-chaining-returned"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0), op("new", 0), op("add", 0, 0, 0, beh(5, 0)),
    op("add", 1, 0, 0, beh(5, 0)), op("fire", 0, 0), op("fire", 1, 0), op("fire", 2, 0)),
  ["13-list-options"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0), op("new", 0),
    list(0, {0, 1, 2}, 8 + 4, beh(0, 0)), list(0, {0, 1}, 1), list(0, {1, 2}, 2),
    op("fire", 0, 1), op("fire", 1, 0), op("fire", 2, 0), list(0, {}, 0)),
  ["14-gather-race"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0), op("new", 1, beh(0, 0)),
    list(1, {0, 1}, 4), list(2, {0, 1, 2}, 0), op("fire", 1, 0), op("fire", 0, 1),
    list(2, {}, 0), op("cancel", 4)),
  ["15-loop-calls"] = prog(1, 1, 1, 0, 0,
    op("soon", beh(0, 0)), op("later", 2, beh(2, 0)), op("later", 1, beh(0, 0)),
    op("soon", beh(3, 0)), op("hcancel", 2), op("run_once", 1), op("advance", 2),
    op("advance", 3), op("later", 4, beh(0, 0)), op("loop_run")),
  ["16-sleep-timeout"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("sleep", 2), op("timeout", 0, 1), op("timeout", 1, 4),
    op("advance", 1), op("advance", 3), op("cancel", 1), op("run_once", 4)),
  ["17-misuse"] = prog(1, 1, 1, 0, 0, op("new", 0),
    op("misuse", 0, 0), op("misuse", 1, 0), op("misuse", 2, 1), op("misuse", 3, 2),
    op("misuse", 4, 0), op("misuse", 5, 0), op("misuse", 6, 0), op("misuse", 7, 0),
    op("misuse", 8, 0), op("misuse", 9, 0), op("misuse", 10, 0), op("misuse", 11, 0),
    op("misuse", 12, 0), op("misuse", 13, 0), op("misuse", 14, 0), op("misuse", 15, 0),
    op("misuse", 16, 0), op("misuse", 17, 0), op("misuse", 18, 0), op("misuse", 19, 0),
    op("misuse", 20, 0), op("misuse", 21, 0)),
  ["18-unhandled-gc"] = prog(1, 1, 1, 0, 0,
    op("garbage", 0), op("garbage", 1), op("garbage", 2), op("garbage", 3), op("gc"),
    op("new", 0), op("fire", 0, 1), op("gc")),
  ["19-reentrant-fire-release"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0), acq(1, 1), acq(1, 1),
    op("add", 2, 2, 0, beh(6, 0, act("fire", 1, 0), act("release", 0, 0))),
    op("add", 1, 2, 0, beh(6, 0, act("release", 0, 0))),
    op("release", 0), op("fire", 0, 0)),
  ["20-reentrant-queue"] = prog(1, 1, 1, 2, 2,
    op("get"), op("add", 0, 2, 0, beh(6, 0, act("put", 0, 0), act("get", 0, 0))),
    op("put"), op("put")),
  ["21-reentrant-run-limit"] = prog(1, 1, 1, 0, 0,
    op("run", 0, beh(6, 0, act("run", 0, 0, beh(6, 0, act("limit", 0, 2))),
                            act("acquire", 0, 0))),
    op("run", 0, beh(0, 0))),
  ["22-reentrant-cancel-schedule"] = prog(2, 1, 1, 0, 0,
    op("new", 1, beh(4, 0, act("fire", 0, 0))), acq(1, 2),
    op("add", 0, 2, 0, beh(6, 0, act("cancel", 1, 0), act("schedule", 1, 1, beh(2, 0)))),
    op("fire", 0, 0), op("advance", 2)),
  ["23-reentrant-pass-add-pause"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0),
    op("soon", beh(6, 0, act("pass", 1, 0), act("add", 0, 1, beh(1, 1)))),
    op("later", 1, beh(6, 0, act("pause", 1, 1))), op("advance", 2), op("fire", 0, 0),
    op("fire", 1, 0),
    -- calls made by a loop call (a timer due now, a queued call) wait for the next pass
    op("soon", beh(6, 0, act("schedule", 0, 1, beh(0, 0)), act("schedule", 0, 0, beh(0, 0)))),
    op("advance", 0), op("advance", 0)),
  ["24-maybe"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("maybe", beh(1, 0)), op("maybe", beh(2, 0)), op("maybe", beh(5, 0)),
    op("maybe", beh(4, 0))),
  ["25-progress-cancel"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 1, beh(3, 0)),
    list(0, {0, 1}, 8, beh(6, 0, act("cancel", 2, 0))), op("fire", 0, 0), op("cancel", 2)),
  -- spawn's byte: the step count, async when >= 128; each step: a user,
  -- protected when odd, a behaviour; then the final behaviour
  ["26-spawn-await"] = prog(1, 1, 1, 0, 0,
    op("new", 0), op("new", 0), op("new", 0),
    op("spawn", 2, 0, 1, beh(0, 0), 1, 0, beh(6, 0, act("fire", 2, 0)), beh(1, 3)),
    op("fire", 0, 1), op("spawn", 128 + 1, 2, 0, beh(0, 0), beh(2, 0)), op("cancel", 4),
    op("inspect")),
  ["27-spawn-cancel"] = prog(1, 1, 1, 0, 0,
    op("new", 1, beh(3, 0)), op("spawn", 1, 0, 1, beh(0, 0), beh(1, 1)), op("cancel", 1),
    op("fire", 0, 0), op("inspect")),
  ["28-burst-inspect"] = prog(1, 1, 1, 0, 0,
    op("burst", 3), op("burst", 0), op("burst", 6), op("run_once", 1), op("burst", 7),
    op("new", 0), op("add", 0, 2, 0, beh(5, 7)),
    op("fire", 0, 0), op("advance", 4), op("inspect"), op("loop_run")),
}
seeds["29-gc-stress"] = gc_mode(0, seeds["19-reentrant-fire-release"] .. seeds["25-progress-cancel"]:sub(6)
  .. seeds["26-spawn-await"]:sub(6))
seeds["30-memory-error"] = oom_mode(40, seeds["21-reentrant-run-limit"] .. seeds["07-queue"]:sub(6)
  .. seeds["15-loop-calls"]:sub(6))

os.execute("mkdir -p '" .. dir .. "'")
local names = {}
for name in pairs(seeds) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(seeds[name])
  f:close()
end
print(("%d seeds in %s"):format(#names, dir))
