-- ops.lua: the interpreter of the fuzz target (fuzz_ops.c).  It decodes the
-- input bytes into operations on three semaphores, a lock, a bounded queue,
-- a handful of deferreds, lists over them and a loop with a manual clock;
-- callbacks, tasks, cancellers and loop calls fire, fail, re-enter and
-- cancel as the bytes say.  A model of every object is kept alongside and
-- checked after each operation; at the end everything is drained and
-- checked again.  A broken invariant calls fuzz_abort (set by fuzz_ops.c:
-- it aborts, so that libFuzzer keeps the input).
--
-- By hand, to replay an input and print the operations it decodes:
--   lua5.4 tests/fuzz/ops.lua FILE [trace]    (defer.so on package.cpath)
-- `lua5.4 tests/fuzz/ops.lua list-ops` prints the operation names (the
-- corpus generator encodes seeds with them).

-- The top-level operations, in opcode order (opcode = byte % #OPS).
local OPS = {
  "new", "fire", "add", "cancel", "pause", "chain", "timeout", "acquire",
  "release", "run", "limit", "put", "get", "list", "soon", "later",
  "hcancel", "sleep", "advance", "run_once", "loop_run", "misuse", "garbage",
  "gc", "maybe", "spawn", "burst", "inspect",
}
-- The operations a callback can do (action = byte % #ACTIONS).
local ACTIONS = {
  "fire", "cancel", "release", "put", "get", "run", "acquire", "limit",
  "schedule", "pass", "add", "pause",
}

local input, trace, run_mode = ...
local fuzz_abort = rawget(_G, "fuzz_abort")
if input == "list-ops" then
  if not fuzz_abort and arg and (arg[0] or ""):match("ops%.lua$") then
    print(table.concat(OPS, " "))
  end
  return OPS, ACTIONS
end
if not fuzz_abort then -- run by hand: ... is the command line
  local f = assert(io.open(assert(input, "usage: ops.lua FILE [trace]"), "rb"))
  input = f:read("a")
  f:close()
  trace = trace ~= nil
  run_mode = "normal"
  if #input >= 3 and input:byte(1) == 0xFF then -- fuzz_ops.c's header: it
    input = input:sub(4)                         -- alone can fail allocations
    io.stderr:write("fuzz: the header of the gc/oom modes is skipped\n")
  end
  fuzz_abort = function(msg)
    io.stderr:write(debug.traceback("fuzz: invariant violated: " .. msg, 2), "\n")
    os.exit(1)
  end
end

local defer = require "defer"
local is_failure, is_a = defer.is_failure, defer.is_a
local CancelledError, AlreadyCalledError = defer.CancelledError, defer.AlreadyCalledError
local QueueOverflow, QueueUnderflow = defer.QueueOverflow, defer.QueueUnderflow
local FirstError, FailureGroup = defer.FirstError, defer.FailureGroup
local TimeoutError = defer.TimeoutError
local fmt, select, type, pcall, tostring = string.format, select, type, pcall, tostring
local math_type = math.type

-- In "oom" mode an allocation fails somewhere: the model may then be wrong,
-- so a broken invariant only ends the operation, and the program goes on.
-- A memory error inside a pass can leave the loop marked as in a pass for
-- good, and loop:run() then never returns: this mode looks for crashes, so
-- it advances the clock instead of calling run().
local OOM = run_mode == "oom"
if OOM then fuzz_abort = function(msg) error("fuzz: " .. msg, 0) end end

local MAXW = 3     -- the highest semaphore limit (and acquire weight)
local MAXUSERS = 12
local MAXPOOL = 40

------------------------------------------------------------------ basics

local function violation(msg, ...)
  if select("#", ...) > 0 then msg = fmt(msg, ...) end
  fuzz_abort(msg)
end

local function check(cond, msg, ...)
  if not cond then violation(msg, ...) end
end

local function T(s, ...)
  if trace then io.stderr:write(fmt(s, ...), "\n") end
end

local pos, len = 1, #input
local function byte()
  local b = input:byte(pos)
  pos = pos + 1
  return b or 0
end

local function pick(list, b)
  if #list == 0 then return nil end
  return list[b % #list + 1]
end

local function remove_value(list, v)
  for i = #list, 1, -1 do
    if list[i] == v then table.remove(list, i) return end
  end
end

-- A canceller's error: the one error a cancel() may raise.
local CERR = setmetatable({}, {__tostring = function() return "canceller error" end})

local function estr(e)
  if is_failure(e) then return "Failure(" .. estr(e.value) .. ")" end
  if type(e) == "string" then return fmt("%q", e) end
  return tostring(e)
end

local function is_cancelled(r)
  return is_failure(r) and is_a(r.value, CancelledError)
end

------------------------------------------------------------------ model

local sems = {}     -- 1..3 semaphores, 4 the lock: {obj, lock, limit, recs, seq, name}
local holds = {}    -- tokens taken by granted acquires: {sem, left, name}
local users = {}    -- deferreds made with defer.new: {d, rank, canc, swallowed, name}
local info = {}     -- deferred -> {name, rank, pauses, d}
local all = {}      -- every info, in creation order
local pool = {}     -- the deferreds operations pick from
local pausables = {}
local Q             -- {obj, size, backlog, puts, delivered, gets}
local loop
local handles, sleeps, timeouts, lists, cbs = {}, {}, {}, {}, {}
local hseq = 0      -- creation counter of loop calls and sleeps
local active_h, n_active = {}, 0 -- the loop calls still to run
local hwin = 0      -- where the next check of handle flags starts
local pass          -- the pass running now (started by this file), or nil
local budget = 300  -- actions left: bounds re-entrant work
local counter = {}
local unhandled_n, loop_errors, loop_errors_expected = 0, 0, 0
local tags, tags_seen = {}, {}

local function newname(kind)
  counter[kind] = (counter[kind] or 0) + 1
  return kind .. counter[kind]
end

local function nm(d)
  local i = info[d]
  return i and i.name or tostring(d)
end

local function register(d, name, rank, pausable)
  if info[d] then return info[d] end
  local inf = {name = name, rank = rank or 0, pauses = 0, d = d}
  info[d] = inf
  all[#all + 1] = inf
  if #pool < MAXPOOL then pool[#pool + 1] = d end
  if pausable then pausables[#pausables + 1] = d end
  return inf
end

local function waiting_of(i)
  local n = 0
  for _, r in ipairs(sems[i].recs) do
    if r.state == "pending" or r.state == "queued" then n = n + 1 end
  end
  return n
end

local function active_of(i)
  local n = 0
  for _, h in ipairs(holds) do
    if h.sem == i then n = n + h.left end
  end
  for _, r in ipairs(sems[i].recs) do
    if r.state == "started" then n = n + 1 end
  end
  return n
end

-- A waiter is served only when every waiter queued before it on the same
-- semaphore was served or cancelled.
local function fifo_check(rec)
  for _, r in ipairs(sems[rec.sem].recs) do
    if r.seq >= rec.seq then break end
    check(r.state ~= "pending" and r.state ~= "queued",
          "%s served before %s, queued earlier on %s", rec.name, r.name,
          sems[rec.sem].name)
  end
end

------------------------------------------------------------- behaviours

-- A behaviour: what a callback, task, canceller or loop call does.  Parsed
-- from the bytes when the function is made, run when it is called.
--   k 0: pass its input on, 1: return a number, 2: raise a string,
--   3: raise an error object, 4: return defer.fail(...), 5: return a user
--   deferred (of higher rank: no waiting cycles), 6: actions then pass,
--   7: actions then raise.
local parse_beh

local function parse_action(depth)
  local act = {op = byte() % #ACTIONS + 1, a = byte(), b = byte()}
  local name = ACTIONS[act.op]
  if name == "run" or name == "schedule" or name == "add" then
    act.beh = parse_beh(depth)
  end
  return act
end

function parse_beh(depth)
  local b = byte()
  local beh = {k = b % 8, v = byte()}
  if beh.k >= 6 and depth < 2 then
    beh.acts = {}
    for i = 1, 1 + (b >> 3) % 2 do beh.acts[i] = parse_action(depth + 1) end
  end
  return beh
end

local function bstr(beh)
  local k = ({"pass", "value", "raise", "raise_obj", "fail", "return_user",
              "act+pass", "act+raise"})[beh.k + 1]
  local s = k .. "(" .. beh.v
  if beh.acts then
    local a = {}
    for i, act in ipairs(beh.acts) do
      a[i] = ACTIONS[act.op] .. ":" .. act.a .. ":" .. act.b ..
             (act.beh and ("{" .. bstr(act.beh) .. "}") or "")
    end
    s = s .. "; " .. table.concat(a, ", ")
  end
  return s .. ")"
end

local do_actions

-- Runs the behaviour: its actions, then its outcome (r: what it passes on).
local function act_out(beh, rank, r, self)
  local k = beh.k
  if beh.acts then do_actions(beh.acts) end
  if k == 0 or k == 6 then return r
  elseif k == 1 then return beh.v
  elseif k == 2 then error("boom " .. beh.v)
  elseif k == 3 then error(TimeoutError("t" .. beh.v))
  elseif k == 4 then return defer.fail("fail " .. beh.v)
  elseif k == 5 then
    if self and beh.v % 8 == 7 then return self end -- a Failure, not a wait
    local c = {}
    for _, u in ipairs(users) do
      if u.rank > rank then c[#c + 1] = u end
    end
    if #c == 0 then return r end
    return c[beh.v % #c + 1].d
  else
    error("after " .. beh.v)
  end
end

local function raises(beh)
  return beh.k == 2 or beh.k == 3 or beh.k == 7
end

------------------------------------------------------------- deferreds

local fire_user

local function new_user(cbeh, top)
  if #users >= MAXUSERS then return end
  local u = {rank = #users + 1, canc = cbeh ~= nil, swallowed = 0, ccalls = 0}
  u.name = "u" .. u.rank
  local canceller
  if cbeh then
    canceller = function(d)
      check(d == u.d, "%s: canceller called with %s", u.name, nm(d))
      u.ccalls = u.ccalls + 1
      check(u.ccalls == 1, "%s: canceller called twice", u.name)
      local k = cbeh.k % 6
      if k == 1 then fire_user(u, 0, false)
      elseif k == 2 then fire_user(u, 1, false)
      elseif k == 3 then error(CERR)
      elseif k >= 4 then
        if cbeh.acts then do_actions(cbeh.acts) end
        if k == 5 then fire_user(u, 0, false) end
      end
    end
  end
  u.d = defer.new(canceller)
  users[#users + 1] = u
  register(u.d, u.name, u.rank, true).user = u
  if top then T("%s = defer.new(%s)", u.name, cbeh and ("canceller " .. bstr(cbeh)) or "") end
  check(not u.d.called and u.d:state() == "pending", "%s: a new deferred is not pending", u.name)
end

-- how: 0 callback(number), 1 errback(string), 2 errback(a Failure)
function fire_user(u, how, top, v)
  local d = u.d
  local before = d.called
  v = v or (how == 0 and 1000 + pos) or (how == 1 and ("err " .. pos)) or
      defer.failure(TimeoutError("late " .. pos))
  if top then T("%s:%s(%s)", u.name, how == 0 and "callback" or "errback", estr(v)) end
  local ok, e = pcall(how == 0 and d.callback or d.errback, d, v)
  if ok then
    if before then -- a late fire swallowed after a cancel without canceller
      check(not u.canc, "%s: a late fire was swallowed though it has a canceller", u.name)
      u.swallowed = u.swallowed + 1
      check(u.swallowed <= 1, "%s: a second late fire was swallowed", u.name)
    end
    check(d.called, "%s: not called after firing", u.name)
  else
    check(before and is_a(e, AlreadyCalledError), "%s: firing raised %s (called before: %s)",
          u.name, estr(e), tostring(before))
  end
end

local function do_cancel(d, top)
  if top then T("%s:cancel()", nm(d)) end
  local ok, e = pcall(d.cancel, d)
  check(ok or e == CERR, "%s:cancel() raised %s", nm(d), estr(e))
end

-- Adds a callback (mode 0 add_callback, 1 add_errback, 2 add_both,
-- 3 add_callbacks) to d that runs beh; extra arguments are checked.
local function add_cb(d, mode, beh, beh2, sub, nextra, top)
  local rank = info[d] and info[d].rank or 0
  local c = {ran = 0, name = newname("cb")}
  cbs[#cbs + 1] = c
  local extras = {}
  for i = 1, nextra do extras[i] = 5000 + i end
  local function wrap(b)
    return function(r, ...)
      c.ran = c.ran + 1
      check(c.ran == 1, "%s (on %s) ran twice", c.name, nm(d))
      local n = select("#", ...)
      check(n == nextra, "%s: %d extra arguments, not %d", c.name, n, nextra)
      for i = 1, nextra do
        check(select(i, ...) == extras[i], "%s: extra argument %d is wrong", c.name, i)
      end
      return act_out(b, rank, r, d)
    end
  end
  local ok, ret
  if mode < 3 then
    c.must = mode == 2
    local method = ({"add_callback", "add_errback", "add_both"})[mode + 1]
    if top then T("%s:%s(%s %s, +%d args)", nm(d), method, c.name, bstr(beh), nextra) end
    ok, ret = pcall(d[method], d, wrap(beh), table.unpack(extras))
  else
    local cb = sub % 4 ~= 1 and wrap(beh) or nil
    local eb = sub % 4 ~= 2 and wrap(beh2) or nil
    if sub % 4 == 3 then cb, eb = nil, nil end
    c.must = cb ~= nil and eb ~= nil
    nextra = 0
    if top then
      T("%s:add_callbacks(%s %s, %s)", nm(d), c.name, cb and bstr(beh) or "nil",
        eb and bstr(beh2) or "nil")
    end
    ok, ret = pcall(d.add_callbacks, d, cb, eb)
  end
  check(ok, "adding a callback to %s raised %s", nm(d), estr(ret))
  check(ret == d, "adding a callback did not return the deferred")
end

------------------------------------------------------ semaphores, lock

local function acquire(i, n, top)
  local S = sems[i]
  local s = S.obj
  if S.lock then n = 1 end
  local before_wait, before_tokens = waiting_of(i), s.tokens
  local rec = {kind = "acquire", sem = i, n = n, state = "pending", name = newname("acq")}
  if top then T("%s = %s:acquire(%s)", rec.name, S.name, n) end
  local ok, d
  if S.lock then ok, d = pcall(s.acquire, s)
  else ok, d = pcall(s.acquire, s, n) end
  if not ok then
    check(not S.lock and n > S.limit, "%s:acquire(%d) raised %s (limit %d)", S.name, n,
          estr(d), S.limit)
    check(type(d) == "string" and d:find("acquire", 1, true),
          "acquire's error does not name it: %s", estr(d))
    return
  end
  check(S.lock or n <= S.limit, "%s:acquire(%d) above the limit %d did not raise", S.name,
        n, S.limit)
  S.seq = S.seq + 1
  rec.seq, rec.d = S.seq, d
  S.recs[#S.recs + 1] = rec
  register(d, rec.name, 0, false)
  d:add_both(function(r)
    check(rec.state == "pending", "%s: first callback ran twice", rec.name)
    if r == s then
      rec.state = "granted"
      fifo_check(rec)
      holds[#holds + 1] = {sem = i, left = n, name = rec.name}
    elseif is_cancelled(r) then
      rec.state = "cancelled"
    else
      violation("%s fired with %s", rec.name, estr(r))
    end
    return r
  end)
  if top then
    local now = before_wait == 0 and n <= before_tokens
    check((rec.state == "granted") == now,
          "%s: granted at once is %s, expected %s (waiting %d, tokens %d)", rec.name,
          tostring(rec.state == "granted"), tostring(now), before_wait, before_tokens)
  end
end

local function release(h, top)
  local S = sems[h.sem]
  local s = S.obj
  local n = S.lock and 1 or math.min(h.left, S.limit)
  -- the model first: the release may run callbacks that release again
  h.left = h.left - n
  if h.left == 0 then remove_value(holds, h) end
  if top then T("%s:release(%d) -- %s", S.name, n, h.name) end
  local ok, e
  if S.lock then ok, e = pcall(s.release, s)
  else ok, e = pcall(s.release, s, n) end
  check(ok, "%s:release(%d) raised %s", S.name, n, estr(e))
end

local function run_task(i, beh, top)
  local S = sems[i]
  local s = S.obj
  local before_wait, before_tokens = waiting_of(i), s.tokens
  S.seq = S.seq + 1
  local rec = {kind = "run", sem = i, seq = S.seq, state = "queued", ran = 0,
               name = newname("run")}
  S.recs[#S.recs + 1] = rec
  if top then T("%s = %s:run(%s)", rec.name, S.name, bstr(beh)) end
  local function task(arg, ...)
    rec.ran = rec.ran + 1
    check(rec.ran == 1, "%s ran twice", rec.name)
    check(arg == rec.seq and select("#", ...) == 0, "%s: wrong arguments", rec.name)
    check(rec.state == "queued", "%s started in state %s", rec.name, rec.state)
    fifo_check(rec)
    rec.state = "started"
    check(s.active >= 1, "%s runs but %s.active is %d", rec.name, S.name, s.active)
    return act_out(beh, 0, 100 + rec.seq)
  end
  local ok, d = pcall(s.run, s, task, rec.seq)
  check(ok, "%s:run raised %s", S.name, estr(d))
  rec.d = d
  register(d, rec.name, 0, false)
  d:add_both(function(r)
    if rec.state == "started" then
      rec.state = "ended"
      rec.failed = is_failure(r)
    elseif rec.state == "queued" then
      check(is_cancelled(r), "%s ended without running, with %s", rec.name, estr(r))
      rec.state = "cancelled"
    else
      violation("%s: first callback ran in state %s", rec.name, rec.state)
    end
    return r
  end)
  if top then
    local now = before_wait == 0 and before_tokens >= 1
    check((rec.ran == 1) == now, "%s: ran at once is %s, expected %s", rec.name,
          tostring(rec.ran == 1), tostring(now))
  end
end

local function set_limit(i, n, top, syntax)
  local S = sems[i]
  local s = S.obj
  local valid = not S.lock and math_type(n) == "integer" and n >= 1
  local old = S.limit
  if S.lock then syntax = true end -- a Lock has no set_limit method
  if valid then S.limit = n end -- first: it may wake waiters
  if top then T(syntax and "%s.limit = %s" or "%s:set_limit(%s)", S.name, tostring(n)) end
  local ok, e
  if syntax then ok, e = pcall(function() s.limit = n end)
  else ok, e = pcall(s.set_limit, s, n) end
  if valid then
    check(ok, "%s:set_limit(%s) raised %s", S.name, tostring(n), estr(e))
  else
    S.limit = old
    check(not ok, "%s:set_limit(%s) did not raise", S.name, tostring(n))
    check(type(e) == "string" and (e:find("limit", 1, true)),
          "set_limit's error does not say so: %s", estr(e))
  end
end

------------------------------------------------------------------ queue

local function stored() return Q.puts - Q.delivered end
local function gets_waiting()
  local n = 0
  for _, g in ipairs(Q.gets) do
    if g.state == "pending" then n = n + 1 end
  end
  return n
end

local function put(top)
  local st, w = stored(), gets_waiting()
  local v = Q.puts + 1
  Q.puts = v -- first: the put may run callbacks that put again
  if top then T("q:put(%d)", v) end
  local ok, e = pcall(Q.obj.put, Q.obj, v)
  local full = Q.size and w == 0 and st >= Q.size
  if not ok then
    Q.puts = v - 1
    check(is_a(e, QueueOverflow), "q:put raised %s", estr(e))
    if top then check(full, "q:put overflowed (stored %d, waiting %d)", st, w) end
  elseif top then
    check(not full, "q:put did not overflow (stored %d, size %s)", st, tostring(Q.size))
  end
end

local function get(top)
  local st, w = stored(), gets_waiting()
  local rec = {state = "pending", name = newname("get")}
  if top then T("%s = q:get()", rec.name) end
  local ok, d = pcall(Q.obj.get, Q.obj)
  local under = st == 0 and Q.backlog and w >= Q.backlog
  if not ok then
    check(is_a(d, QueueUnderflow), "q:get raised %s", estr(d))
    if top then check(under, "q:get underflowed (stored %d, waiting %d)", st, w) end
    return
  end
  if top then check(not under, "q:get did not underflow") end
  rec.d = d
  Q.gets[#Q.gets + 1] = rec
  register(d, rec.name, 0, false)
  d:add_both(function(r)
    check(rec.state == "pending", "%s: first callback ran twice", rec.name)
    if math_type(r) == "integer" then
      check(r == Q.delivered + 1, "%s got %d, expected %d", rec.name, r, Q.delivered + 1)
      Q.delivered = r
      rec.state = "got"
    elseif is_cancelled(r) then
      rec.state = "cancelled"
    else
      violation("%s fired with %s", rec.name, estr(r))
    end
    return r
  end)
  if top then
    check((rec.state == "got") == (st > 0), "%s: served at once is %s, stored %d", rec.name,
          tostring(rec.state == "got"), st)
  end
end

------------------------------------------------------------------ lists

local function check_list_result(rec, r)
  local n, mode = rec.n, rec.mode
  local function pairs_ok()
    if type(r) ~= "table" then return false end
    for i = 1, n do
      local p = r[i]
      if type(p) ~= "table" or type(p[1]) ~= "boolean" then return false end
      if not p[1] and not is_failure(p[2]) then return false end
    end
    return true
  end
  local function one_ok()
    return type(r) == "table" and math_type(r[2]) == "integer" and r[2] >= 1 and r[2] <= n
  end
  if is_cancelled(r) then return end
  if mode == "list" then
    if is_failure(r) then
      check(rec.on_errback and is_a(r.value, FirstError), "%s failed with %s", rec.name, estr(r))
    elseif rec.on_callback then
      check(one_ok() or pairs_ok(), "%s: bad result", rec.name)
    else
      check(pairs_ok(), "%s: bad result", rec.name)
    end
  elseif mode == "gather" then
    if is_failure(r) then
      check(is_a(r.value, FirstError), "%s failed with %s", rec.name, estr(r))
    else
      check(type(r) == "table", "%s: result %s", rec.name, estr(r))
    end
  else
    if is_failure(r) then
      check(is_a(r.value, FailureGroup) and type(r.value.failures) == "table",
            "%s failed with %s", rec.name, estr(r))
    else
      check(one_ok(), "%s: bad result %s", rec.name, estr(r))
    end
  end
  if is_failure(r) and is_a(r.value, FirstError) then
    local e = r.value
    check(math_type(e.index) == "integer" and e.index >= 1 and e.index <= n and
          is_failure(e.failure), "%s: bad FirstError", rec.name)
  end
end

local function make_list(mode, children, flags, pbeh, top)
  local rec = {mode = mode, n = #children, fired = false, progress = 0,
               name = newname(mode)}
  local opts
  if mode == "list" then
    opts = {}
    if flags & 1 ~= 0 then opts.fire_on_one_callback = true rec.on_callback = true end
    if flags & 2 ~= 0 then opts.fire_on_one_errback = true rec.on_errback = true end
    if flags & 4 ~= 0 then opts.consume_errors = true end
    if pbeh then
      rec.has_progress = true
      opts.on_progress = function(done, total)
        check(total == rec.n and done == rec.progress + 1,
              "%s: on_progress(%s, %s) after %d", rec.name, tostring(done), tostring(total),
              rec.progress)
        rec.progress = done
        return act_out(pbeh, 0, nil)
      end
    end
  elseif mode == "gather" then
    opts = flags & 4 ~= 0
  end
  if top then
    local names = {}
    for i, d in ipairs(children) do names[i] = nm(d) end
    T("%s = defer.%s({%s}, flags %d%s)", rec.name, mode, table.concat(names, ", "), flags,
      pbeh and (", progress " .. bstr(pbeh)) or "")
  end
  local ok, R = pcall(defer[mode], children, opts)
  check(ok, "defer.%s raised %s", mode, estr(R))
  rec.R = R
  lists[#lists + 1] = rec
  register(R, rec.name, 0, true)
  R:add_both(function(r)
    check(not rec.fired, "%s fired twice", rec.name)
    rec.fired = true
    check_list_result(rec, r)
    return r
  end)
  -- (an empty race never fires, as Twisted's: no success, no failure)
  if rec.n == 0 and not rec.on_callback and mode ~= "race" then
    check(rec.fired, "%s: an empty list did not fire at once", rec.name)
  end
end

------------------------------------------------------------------ loop

local function set_hstate(rec, state)
  if rec.state == "active" then
    active_h[rec] = nil
    n_active = n_active - 1
  end
  rec.state = state
end

local function schedule(kind, delay, beh, top)
  hseq = hseq + 1
  local rec = {kind = kind, seq = hseq, state = "active", name = newname("h")}
  if raises(beh) then rec.raises = true end
  local function f(...)
    check(select("#", ...) == 1 and (...) == rec.seq, "%s: wrong arguments", rec.name)
    check(rec.state == "active", "%s ran in state %s", rec.name, rec.state)
    check(rec.h.active == false, "%s: handle.active is true while it runs", rec.name)
    set_hstate(rec, "ran")
    local p = pass
    check(p ~= nil, "%s ran outside a pass", rec.name)
    if not p.run then
      check(rec.seq <= p.made_before, "%s ran in the pass it was made in", rec.name)
      if kind == "soon" then
        check(not p.timer_seen, "%s (a queued call) ran after a timer", rec.name)
        check(rec.seq > p.last_soon, "%s: queued calls out of order", rec.name)
        p.last_soon = rec.seq
      else
        check(rec.due <= loop:time(), "%s ran before it was due", rec.name)
        check(rec.due > p.last_due or (rec.due == p.last_due and rec.seq > p.last_tseq),
              "%s: timers out of order", rec.name)
        p.timer_seen, p.last_due, p.last_tseq = true, rec.due, rec.seq
      end
      p.mine = p.mine + 1
    end
    if rec.raises then loop_errors_expected = loop_errors_expected + 1 end
    act_out(beh, 0, nil)
  end
  local ok, h
  if kind == "soon" then
    if top then T("%s = loop:call_soon(%s)", rec.name, bstr(beh)) end
    ok, h = pcall(loop.call_soon, loop, f, rec.seq)
  else
    rec.due = loop:time() + delay
    if top then T("%s = loop:call_later(%s, %s)", rec.name, delay, bstr(beh)) end
    ok, h = pcall(loop.call_later, loop, delay, f, rec.seq)
  end
  check(ok, "scheduling raised %s", estr(h))
  check(h.active == true, "%s: a new handle is not active", rec.name)
  rec.h = h
  handles[#handles + 1] = rec
  active_h[rec] = true
  n_active = n_active + 1
end

local function handle_cancel(rec, top)
  if top then T("%s:cancel()", rec.name) end
  rec.h:cancel()
  if rec.state == "active" then set_hstate(rec, "cancelled") end
  check(rec.h.active == false, "%s: active after cancel", rec.name)
end

local function sleep(delay, top)
  hseq = hseq + 1
  local rec = {seq = hseq, due = loop:time() + delay, name = newname("slp")}
  if top then T("%s = loop:sleep(%s)", rec.name, delay) end
  rec.d = loop:sleep(delay)
  sleeps[#sleeps + 1] = rec
  register(rec.d, rec.name, 0, true)
end

local function add_timeout(d, delay, top)
  local rec = {cleared = false, name = newname("to")}
  if top then T("%s:add_timeout(%s, loop) -- %s", nm(d), delay, rec.name) end
  local ok, r = pcall(d.add_timeout, d, delay, loop)
  check(ok and r == d, "add_timeout raised %s", estr(r))
  timeouts[#timeouts + 1] = rec
  d:add_both(function(x)
    rec.cleared = true
    return x
  end)
end

-- how: "advance" (arg dt), "run_once" (arg budget or nil), "run".
local function do_pass(how, arg, top)
  if top then T("loop:%s(%s)", how, arg ~= nil and tostring(arg) or "") end
  if pass then -- the loop is in a pass already: nothing runs, the clock moves
    if how == "advance" then
      loop:advance(arg)
      if arg > 0 then pass.clock_moved = true end
    elseif how == "run_once" then
      loop:run_once(arg)
    end -- run() inside a pass never returns: not done here
    return
  end
  local p = {made_before = hseq, last_soon = 0, timer_seen = false, last_due = -math.huge,
             last_tseq = 0, mine = 0, run = how == "run"}
  pass = p
  local ok, n
  if how == "advance" then ok, n = pcall(loop.advance, loop, arg)
  elseif how == "run_once" then ok, n = pcall(loop.run_once, loop, arg)
  else ok, n = pcall(loop.run, loop) end
  pass = nil
  check(ok, "loop:%s raised %s", how, estr(n))
  if how == "run" then
    check(loop:pending() == 0, "loop:run() returned with %d pending", loop:pending())
    return
  end
  check(math_type(n) == "integer" and n >= p.mine, "loop:%s returned %s, ran %d of ours",
        how, tostring(n), p.mine)
  if arg and how == "run_once" then
    check(n <= arg, "run_once(%d) ran %d", arg, n)
    if n == arg then return end
  end
  if p.clock_moved then return end
  local now = loop:time()
  for h in pairs(active_h) do
    if h.seq <= p.made_before then
      check(h.kind == "later" and h.due > now, "%s due but not run by the pass", h.name)
    end
  end
  for _, s in ipairs(sleeps) do
    if s.seq <= p.made_before and s.due <= now then
      check(s.d.called, "%s due but not fired by the pass", s.name)
    end
  end
end

------------------------------------------------------------------ actions

function do_actions(acts)
  for _, act in ipairs(acts) do
    if budget <= 0 then return end
    budget = budget - 1
    local name, a, b = ACTIONS[act.op], act.a, act.b
    if name == "fire" then
      local u = pick(users, a)
      if u then fire_user(u, b % 3, false) end
    elseif name == "cancel" then
      local d = pick(pool, a)
      if d then do_cancel(d, false) end
    elseif name == "release" then
      local h = pick(holds, a)
      if h then release(h, false) end
    elseif name == "put" then put(false)
    elseif name == "get" then get(false)
    elseif name == "run" then run_task(a % 4 + 1, act.beh, false)
    elseif name == "acquire" then
      local i = a % 4 + 1
      acquire(i, b % sems[i].limit + 1, false)
    elseif name == "limit" then set_limit(a % 3 + 1, b % MAXW + 1, false)
    elseif name == "schedule" then
      if b % 2 == 0 then schedule("soon", nil, act.beh, false)
      else schedule("later", a % 3, act.beh, false) end
    elseif name == "pass" then
      if b % 2 == 0 then do_pass("advance", a % 3, false)
      else do_pass("run_once", nil, false) end
    elseif name == "add" then
      local d = pick(pool, a)
      if d then add_cb(d, 2, act.beh, nil, 0, b % 2, false) end
    elseif name == "pause" then
      local d = pick(pausables, a)
      if d then
        local inf = info[d]
        if inf.pauses > 0 and b % 2 == 0 then
          inf.pauses = inf.pauses - 1
          local ok, e = pcall(d.unpause, d)
          check(ok, "%s:unpause() raised %s", inf.name, estr(e))
        else
          inf.pauses = inf.pauses + 1
          d:pause()
        end
      end
    end
  end
end

------------------------------------------------------------------ checks

local function check_all(where)
  for i, S in ipairs(sems) do
    local s = S.obj
    local act, w = active_of(i), waiting_of(i)
    check(s.limit == S.limit, "%s: limit %d, expected %d (%s)", S.name, s.limit, S.limit, where)
    check(s.active == act, "%s: active %d, expected %d (%s)", S.name, s.active, act, where)
    check(s.tokens >= 0 and s.tokens == math.max(0, S.limit - act),
          "%s: tokens %d with limit %d, active %d (%s)", S.name, s.tokens, S.limit, act, where)
    check(s.waiting == w, "%s: waiting %d, expected %d (%s)", S.name, s.waiting, w, where)
    if S.lock then
      check(s.locked == (act > 0), "%s: locked is %s with %d taken", S.name,
            tostring(s.locked), act)
    else
      local st = s:stats()
      local started, finished, failed = 0, 0, 0
      for _, r in ipairs(S.recs) do
        if r.kind == "run" and r.ran > 0 then
          started = started + 1
          if r.state == "ended" then
            finished = finished + 1
            if r.failed then failed = failed + 1 end
          end
        end
      end
      check(st.tokens == s.tokens and st.limit == S.limit and st.waiting == w and
            st.active == act, "%s: stats() disagrees with the fields", S.name)
      check(st.started == started and st.finished == finished and st.failed == failed,
            "%s: stats started/finished/failed %d/%d/%d, expected %d/%d/%d (%s)", S.name,
            st.started, st.finished, st.failed, started, finished, failed, where)
    end
    for _, r in ipairs(S.recs) do
      local pend = r.state == "pending" or r.state == "queued"
      check(pend == not r.d.called, "%s: state %s but called is %s (%s)", r.name, r.state,
            tostring(r.d.called), where)
    end
  end
  local q = Q.obj
  local w = gets_waiting()
  check(q.waiting == w, "queue: waiting %d, expected %d (%s)", q.waiting, w, where)
  check(#q == stored() and q.pending == stored(), "queue: %d stored, expected %d (%s)", #q,
        stored(), where)
  for _, g in ipairs(Q.gets) do
    check((g.state == "pending") == not g.d.called, "%s: state %s, called %s", g.name, g.state,
          tostring(g.d.called))
  end
  for _, inf in ipairs(all) do
    local d = inf.d
    local st = d:state()
    local waiting = d.called and st == "pending"
    check(d.called or st == "pending", "%s: not called but state %s", inf.name, st)
    check(d.paused == inf.pauses + (waiting and 1 or 0), "%s: paused %d, expected %d + %s (%s)",
          inf.name, d.paused, inf.pauses, tostring(waiting), where)
  end
  for _, l in ipairs(lists) do
    if l.R.called and info[l.R].pauses == 0 then
      check(l.fired, "%s: called but its first callback did not run (%s)", l.name, where)
    end
  end
  -- the loop
  for h in pairs(active_h) do
    check(h.h.active == true, "%s: not active though it has not run", h.name)
  end
  local nh = #handles -- the others 64 at a time: a burst makes thousands
  for i = 1, math.min(64, nh) do
    local h = handles[(hwin + i) % nh + 1]
    check(h.h.active == (h.state == "active"), "%s: active is %s in state %s", h.name,
          tostring(h.h.active), h.state)
  end
  hwin = hwin + 64
  local lo = n_active
  for _, s in ipairs(sleeps) do
    if not s.d.called then lo = lo + 1 end
  end
  local hi = lo
  for _, t in ipairs(timeouts) do
    if not t.cleared then hi = hi + 1 end
  end
  local p = loop:pending()
  check(p >= lo and p <= hi, "loop:pending() is %d, expected %d..%d (%s)", p, lo, hi, where)
  local nt = loop:next_timeout()
  if p == 0 then
    check(nt == nil, "loop:next_timeout() is %s with nothing pending", tostring(nt))
  else
    check(type(nt) == "number" and nt >= 0, "loop:next_timeout() is %s with %d pending",
          tostring(nt), p)
  end
  check(loop_errors >= loop_errors_expected, "loop: %d errors reported, %d raised",
        loop_errors, loop_errors_expected)
end

------------------------------------------------------------------ setup

defer.on_unhandled(function(f)
  check(is_failure(f), "on_unhandled got a %s", type(f))
  unhandled_n = unhandled_n + 1
  local v = f.value
  if type(v) == "table" and tags[v] then
    check(not tags_seen[v], "%s reported twice as unhandled", tags[v])
    tags_seen[v] = true
  end
end)

loop = defer.new_loop({clock = "manual"})
loop:on_error(function(err, tb)
  check(type(tb) == "string", "on_error got a %s traceback", type(tb))
  check(err ~= nil, "on_error got no error")
  loop_errors = loop_errors + 1
end)

for i = 1, 3 do
  local limit = byte() % MAXW + 1
  sems[i] = {obj = defer.semaphore(limit), limit = limit, recs = {}, seq = 0, name = "S" .. i}
  T("S%d = defer.semaphore(%d)", i, limit)
end
sems[4] = {obj = defer.lock(), limit = 1, recs = {}, seq = 0, name = "lock", lock = true}
do
  local sizes = {false, 0, 1, 2, 3}
  local size, backlog = sizes[byte() % 5 + 1], sizes[byte() % 5 + 1]
  Q = {obj = defer.queue(size or nil, backlog or nil), size = size or nil,
       backlog = backlog or nil, puts = 0, delivered = 0, gets = {}}
  T("q = defer.queue(%s, %s)", tostring(Q.size), tostring(Q.backlog))
end
T("loop = defer.new_loop{clock = 'manual'}")

local DELAYS = {0, 0.5, 1, 2, 3}

------------------------------------------------------------ coroutines

local spawns = {}

-- A coroutine that awaits user deferreds (some inside pcall), runs a
-- behaviour after each, and returns a number or raises.  Its deferred must
-- end with the coroutine's own outcome, cancelled or not.
local function spawn(steps, final, use_async, top)
  local rec = {name = newname("co"), awaited = 0}
  local function inner(arg)
    check(arg == 42, "%s: wrong argument", rec.name)
    for _, st in ipairs(steps) do
      local u = pick(users, st.u)
      if u then
        rec.awaited = rec.awaited + 1
        if st.protected then
          local ok, v = pcall(defer.await, u.d)
          check(ok or is_failure(v), "%s: await raised %s", rec.name, estr(v))
        else
          defer.await(u.d)
        end
      end
      act_out(st.beh, 0, nil)
    end
    if raises(final) then act_out(final, 0, nil) end
    return 700 + final.v
  end
  local function body(arg)
    local ok, r = pcall(inner, arg)
    check(rec.outcome == nil, "%s ended twice", rec.name)
    rec.outcome = {ok = ok, value = r}
    if ok then return r end
    error(r, 0)
  end
  if top then
    local t = {}
    for i, st in ipairs(steps) do
      t[i] = fmt("await(users[%d])%s; %s", st.u, st.protected and " in pcall" or "", bstr(st.beh))
    end
    T("%s = defer.%s(function() %s; %s end)", rec.name, use_async and "async" or "spawn",
      table.concat(t, "; "), bstr(final))
  end
  local ok, d
  if use_async then ok, d = pcall(defer.async(body), 42)
  else ok, d = pcall(defer.spawn, body, 42) end
  check(ok, "defer.spawn raised %s", estr(d))
  rec.d = d
  spawns[#spawns + 1] = rec
  register(d, rec.name, 0, false)
  d:add_both(function(r)
    check(not rec.fired, "%s: first callback ran twice", rec.name)
    rec.fired = true
    local o = rec.outcome
    check(o ~= nil, "%s fired before its coroutine ended, with %s", rec.name, estr(r))
    if o.ok then
      check(r == o.value, "%s fired with %s, the coroutine returned %s", rec.name, estr(r),
            estr(o.value))
    else
      check(is_failure(r) and (r == o.value or r.value == o.value),
            "%s fired with %s, the coroutine raised %s", rec.name, estr(r), estr(o.value))
    end
    return r
  end)
end

-- More timers than the heap's first allocation (k 0..5), or more queued
-- calls than a ring keeps once drained (k 6, 7), then maybe all cancelled
-- (the memory is given back when they are gone).
local function burst(k, top)
  local n, kind = k < 6 and 70 or 1100, k < 6 and "later" or "soon"
  local cancel_all = k == 7 or (k >= 3 and k < 6)
  if #handles > 2500 then return end -- every check walks them all
  if top then T("burst of %d %s calls%s", n, kind, cancel_all and ", cancelled" or "") end
  local made = {}
  for i = 1, n do
    schedule(kind, DELAYS[i % 5 + 1], {k = 1, v = i}, false)
    made[i] = handles[#handles]
  end
  if cancel_all then
    for _, h in ipairs(made) do handle_cancel(h, false) end
  end
end

-- Reads every field and tostring of everything, and the methods of the
-- Failures found in results.
local function inspect()
  T("inspect")
  for _, inf in ipairs(all) do
    local d = inf.d
    check(type(tostring(d)) == "string", "tostring of a deferred")
    local st = d:state()
    if d.called and st ~= "pending" then
      local r = d.result
      check((st == "failure") == is_failure(r), "%s: state %s but result %s", inf.name, st,
            estr(r))
      if is_failure(r) then
        local f = r
        check(type(f:message()) == "string" and type(tostring(f)) == "string" and
              type(f.traceback) == "string", "%s: a Failure's message or traceback", inf.name)
        local c = f:check(TimeoutError, CancelledError)
        local want = is_a(f.value, TimeoutError) and TimeoutError or
                     is_a(f.value, CancelledError) and CancelledError or nil
        check(c == want, "%s: Failure:check gave %s", inf.name, tostring(c))
        local ok, e = pcall(f.trap, f, CancelledError)
        if is_a(f.value, CancelledError) then
          check(ok and e == CancelledError, "%s: trap did not match", inf.name)
        else
          check(not ok and e == f, "%s: trap did not raise the Failure again", inf.name)
        end
        local ok2, e2 = pcall(f.raise, f)
        check(not ok2 and e2 == f, "%s: Failure:raise", inf.name)
      end
    end
  end
  for _, S in ipairs(sems) do check(type(tostring(S.obj)) == "string", "tostring") end
  check(type(tostring(Q.obj)) == "string" and type(tostring(loop)) == "string", "tostring")
  check(Q.obj.size == Q.size and Q.obj.backlog == Q.backlog, "queue: size or backlog field")
  for _, h in ipairs(handles) do
    check(type(tostring(h.h)) == "string", "tostring of a handle")
    if h.state == "active" and h.kind == "later" then
      check(h.h.when == h.due, "%s: when is %s, due %s", h.name, tostring(h.h.when), h.due)
    end
  end
end

local function misuse(k, b)
  local fname, f
  local S = sems[b % 3 + 1]
  local d = pick(pool, b)
  if k == 0 then fname, f = "semaphore", function() return defer.semaphore(({0, -1, 1.5, "x"})[b % 4 + 1]) end
  elseif k == 1 then fname, f = "acquire", function() return S.obj:acquire(({0, 1.5, "x"})[b % 3 + 1]) end
  elseif k == 2 then fname, f = "acquire", function() return S.obj:acquire(S.limit + 1) end
  elseif k == 3 then
    local n = S.obj.active + 1
    fname, f = "release", function() return S.obj:release(n) end
  elseif k == 4 then
    if sems[4].obj.locked then return end
    fname, f = "release", function() return sems[4].obj:release() end
  elseif k == 5 then
    if not d then return end
    fname, f = "add_callback", function() return d:add_callback(nil) end
  elseif k == 6 then
    local x = pick(pausables, b)
    if not x or info[x].pauses > 0 then return end
    fname, f = "unpause", function() return x:unpause() end
  elseif k == 7 then fname, f = "call_later", function() return loop:call_later(-1, print) end
  elseif k == 8 then fname, f = "advance", function() return loop:advance(-1) end
  elseif k == 9 then fname, f = "list", function() return defer.list({1}) end
  elseif k == 10 then
    local u = pick(users, b)
    if not u then return end
    fname, f = "errback", function() return u.d:errback(nil) end
  elseif k == 11 then fname, f = "fail", function() return defer.fail(nil) end
  elseif k == 12 then
    if not d then return end
    fname, f = "chain", function() return d:chain(d) end
  elseif k == 13 then fname, f = "limit", function() sems[4].obj.limit = 2 end
  elseif k == 14 then fname, f = "set_limit", function() S.obj.limit = 0 end
  elseif k == 15 then fname, f = "run_once", function() return loop:run_once(-1) end
  elseif k == 16 then fname, f = "set_limit", function() return S.obj:set_limit(1.5) end
  elseif k == 17 then fname, f = "sleep", function() return loop:sleep(-1) end
  elseif k == 18 then fname, f = "await", function() return defer.await(defer.new()) end
  elseif k == 19 then
    local u = pick(users, b)
    if not u then return end
    fname, f = "callback", function() return u.d:callback(defer.new()) end
  elseif k == 20 then fname, f = "queue", function() return defer.queue(-1) end
  else fname, f = "race", function() return defer.race(nil) end end
  T("misuse: %s (case %d)", fname, k)
  local ok, e = pcall(f)
  check(not ok, "misuse of %s did not raise", fname)
  check(type(e) == "string" and e:find(fname, 1, true), "misuse of %s raised %s", fname, estr(e))
end

local function garbage(k)
  local tag = {}
  tags[tag] = newname("tag")
  T("garbage %d (%s)", k, tags[tag])
  if k == 0 then
    defer.fail(tag)
  elseif k == 1 then
    defer.new():errback(tag)
  elseif k == 2 then
    local d = defer.new()
    d:add_callback(function() error(tag) end)
    d:callback(1)
  else
    defer.succeed(1):add_callback(function() return defer.fail(tag) end)
  end
end

local function gc()
  T("collectgarbage()")
  local expect = {}
  for tag in pairs(tags) do expect[#expect + 1] = tag end
  collectgarbage()
  collectgarbage()
  for _, tag in ipairs(expect) do
    check(tags_seen[tag], "%s: an unhandled failure was collected but not reported", tags[tag])
  end
end

------------------------------------------------------------------ the program

local nops = 0
local fuzz_arm = rawget(_G, "fuzz_arm")

local function step(op)
  if op == "new" then
    local b = byte()
    new_user(b % 2 == 1 and parse_beh(0) or nil, true)
  elseif op == "fire" then
    local u, how = pick(users, byte()), byte() % 3
    if u then fire_user(u, how, true) end
  elseif op == "add" then
    local d, mode, sub = pick(pool, byte()), byte() % 4, byte()
    local beh = parse_beh(0)
    local beh2 = mode == 3 and parse_beh(0) or nil
    if d then add_cb(d, mode, beh, beh2, sub, sub % 3, true) end
  elseif op == "cancel" then
    local d = pick(pool, byte())
    if d then do_cancel(d, true) end
  elseif op == "pause" then
    local d, b = pick(pausables, byte()), byte()
    if d then
      local inf = info[d]
      if inf.pauses > 0 and b % 2 == 0 then
        T("%s:unpause()", inf.name)
        inf.pauses = inf.pauses - 1
        local ok, e = pcall(d.unpause, d)
        check(ok, "%s:unpause() raised %s", inf.name, estr(e))
      else
        T("%s:pause()", inf.name)
        inf.pauses = inf.pauses + 1
        check(d:pause() == d, "pause() did not return the deferred")
      end
    end
  elseif op == "chain" then
    local a, u = pick(pool, byte()), pick(users, byte())
    if a and u and a ~= u.d then
      T("%s:chain(%s)", nm(a), u.name)
      local ok, r = pcall(a.chain, a, u.d)
      check(ok and r == a, "chain raised %s", estr(r))
    end
  elseif op == "timeout" then
    local d, b = pick(pool, byte()), byte()
    if d then add_timeout(d, DELAYS[b % 5 + 1], true) end
  elseif op == "acquire" then
    local b = byte()
    acquire(b % 4 + 1, (b >> 2) % (MAXW + 1) + 1, true)
  elseif op == "release" then
    local h = pick(holds, byte())
    if h then release(h, true) end
  elseif op == "run" then
    local i = byte() % 4 + 1
    run_task(i, parse_beh(0), true)
  elseif op == "limit" then
    local b = byte()
    set_limit(b % 4 + 1, (b >> 2) % MAXW + 1, true, b >= 128)
  elseif op == "put" then put(true)
  elseif op == "get" then get(true)
  elseif op == "list" then
    local b = byte()
    local mode = ({"list", "gather", "race"})[b % 3 + 1]
    local children = {}
    for _ = 1, (b >> 2) % 5 do
      local d = pick(pool, byte())
      if d then children[#children + 1] = d end
    end
    local flags = byte()
    local pbeh = mode == "list" and flags & 8 ~= 0 and parse_beh(0) or nil
    make_list(mode, children, flags, pbeh, true)
  elseif op == "soon" then schedule("soon", nil, parse_beh(0), true)
  elseif op == "later" then
    local delay = DELAYS[byte() % 5 + 1]
    schedule("later", delay, parse_beh(0), true)
  elseif op == "hcancel" then
    local h = pick(handles, byte())
    if h then handle_cancel(h, true) end
  elseif op == "sleep" then sleep(DELAYS[byte() % 5 + 1], true)
  elseif op == "advance" then do_pass("advance", DELAYS[byte() % 5 + 1], true)
  elseif op == "run_once" then
    local b = byte()
    do_pass("run_once", b % 5 ~= 4 and b % 5 or nil, true)
  elseif op == "loop_run" then
    if OOM then do_pass("advance", 1000, true) else do_pass("run", nil, true) end
  elseif op == "misuse" then
    local k, b = byte(), byte()
    misuse(k % 22, b)
  elseif op == "garbage" then garbage(byte() % 4)
  elseif op == "gc" then gc()
  elseif op == "maybe" then
    local beh = parse_beh(0)
    T("defer.maybe(%s)", bstr(beh))
    local ok, d = pcall(defer.maybe, function(x) return act_out(beh, 0, x) end, 7)
    -- f's own deferred comes back as it is; anything else fired
    check(ok and type(d) == "userdata" and (d.called == true or (info[d] and info[d].user)),
          "defer.maybe returned %s", estr(d))
    register(d, newname("mb"), 0, false)
  elseif op == "spawn" then
    local b = byte()
    local steps = {}
    for i = 1, b % 4 do
      local u, m = byte(), byte()
      steps[i] = {u = u, protected = m % 2 == 1, beh = parse_beh(1)}
    end
    spawn(steps, parse_beh(2), b >= 128, true)
  elseif op == "burst" then burst(byte() % 8, true)
  elseif op == "inspect" then inspect()
  end
end

if fuzz_arm then fuzz_arm() end -- the allocation failures of the mode begin
while pos <= len do
  local op = OPS[byte() % #OPS + 1]
  nops = nops + 1
  if OOM then
    local ok, e = pcall(step, op)
    if not ok then T("  -- %s ended with %s", op, estr(e)) end
  else
    step(op)
    check_all("after " .. op)
  end
end

------------------------------------------------------------------ drain

local function unsettled()
  for _, S in ipairs(sems) do
    for _, r in ipairs(S.recs) do
      if r.state == "pending" or r.state == "queued" or r.state == "started" then
        return r.name .. " is " .. r.state
      end
    end
    if S.obj.active > 0 then return S.name .. " has tokens taken" end
  end
  if #holds > 0 then return holds[1].name .. " holds tokens" end
  for _, u in ipairs(users) do
    if not u.d.called then return u.name .. " is pending" end
  end
  for _, inf in ipairs(all) do
    if inf.pauses > 0 then return inf.name .. " is paused" end
    if inf.d.called and inf.d:state() == "pending" then return inf.name .. " still waits" end
  end
  for _, g in ipairs(Q.gets) do
    if g.state == "pending" then return g.name .. " waits for a value" end
  end
  if loop:pending() > 0 then return loop:pending() .. " loop calls pending" end
  for _, l in ipairs(lists) do
    if not l.fired then return l.name .. " did not fire" end
  end
  for _, s in ipairs(sleeps) do
    if not s.d.called then return s.name .. " did not fire" end
  end
  for _, c in ipairs(spawns) do
    if not c.fired then return c.name .. " did not end" end
  end
  return nil
end

-- Raises every limit, releases every token, fires every user deferred,
-- puts values for every waiting get and runs the loop, until nothing is
-- pending anywhere; returns what is still pending if that never happens.
local function drain()
  local why
  for round = 1, 60 do
    for _, inf in ipairs(all) do
      while inf.pauses > 0 do
        inf.pauses = inf.pauses - 1
        local ok, e = pcall(inf.d.unpause, inf.d)
        check(ok, "%s:unpause() raised %s", inf.name, estr(e))
      end
    end
    for i = 1, 3 do
      if sems[i].limit < MAXW then set_limit(i, MAXW, false) end
    end
    for _ = 1, 50 do
      if #holds == 0 then break end
      release(holds[#holds], false)
    end
    for _, u in ipairs(users) do
      if not u.d.called then fire_user(u, 0, false) end
    end
    for _ = 1, 50 do
      if gets_waiting() == 0 then break end
      put(false)
    end
    if loop:pending() > 0 then
      if OOM then do_pass("advance", 1000, false) else do_pass("run", nil, false) end
    end
    if round > 2 then
      for _, l in ipairs(lists) do
        if not l.R.called then do_cancel(l.R, false) end
      end
    end
    if not OOM then check_all("drain round " .. round) end
    why = unsettled()
    if not why then break end
  end
  return why
end

T("-- drain")
if OOM then -- whatever state a memory error left must still drain safely
  pcall(drain)
  pcall(gc)
  return
end
local why = drain()
check(not why, "nothing moves any more: %s", tostring(why))

------------------------------------------------------------------ final checks

for _, S in ipairs(sems) do
  local s = S.obj
  check(s.waiting == 0 and s.active == 0 and s.tokens == S.limit,
        "%s: not idle at the end", S.name)
  for _, r in ipairs(S.recs) do
    if r.kind == "run" then
      check((r.ran == 1 and r.state == "ended") or (r.ran == 0 and r.state == "cancelled"),
            "%s: ran %d times, ended %s", r.name, r.ran, r.state)
    else
      check(r.state == "granted" or r.state == "cancelled", "%s: %s at the end", r.name, r.state)
    end
  end
end
check(Q.obj.waiting == 0, "queue: gets waiting at the end")
for _, h in ipairs(handles) do
  check(h.state == "ran" or h.state == "cancelled", "%s: %s at the end", h.name, h.state)
end
check(loop:pending() == 0 and loop:next_timeout() == nil, "loop: not idle at the end")
for _, l in ipairs(lists) do
  check(l.fired, "%s: never fired", l.name)
  if l.has_progress then
    check(l.progress == l.n, "%s: on_progress reached %d of %d", l.name, l.progress, l.n)
  end
end
for _, c in ipairs(cbs) do
  if c.must then check(c.ran == 1, "%s: ran %d times", c.name, c.ran) end
end
for _, c in ipairs(spawns) do
  check(c.fired, "%s: never fired", c.name)
end
for _, t in ipairs(timeouts) do
  check(t.cleared, "%s: the deferred never got past its timeout", t.name)
end
check(loop_errors >= loop_errors_expected, "loop errors: %d reported, %d raised", loop_errors,
      loop_errors_expected)
gc()
T("-- %d operations, %d actions, %d unhandled reported, %d loop errors", nops, 300 - budget,
  unhandled_n, loop_errors)
