-- defer.lock and defer.queue from the user's side: the lock's acquire,
-- release, run and locked (Twisted L1-L6); the queue's put, get, #q,
-- pending and waiting, its size and backlog limits (Twisted Q1-Q6);
-- cancelling a waiting acquire or get; a million waiters served without
-- recursion; re-entrant puts and gets from callbacks.
-- Twisted's tests are named in brackets where one is translated.
local defer = require "defer"

local helpers = require "helpers"
local scale, raised, failure_of, is_cancelled =
  helpers.scale, helpers.raised, helpers.failure_of, helpers.is_cancelled

-- {#q, q.pending, q.waiting}
local function qcounts(q)
  return {#q, q.pending, q.waiting}
end

describe("defer.lock()", function()
  it("starts unlocked (Twisted L1)", function()
    assert.is_false(defer.lock().locked)
  end)

  it("fires acquire at once with the lock and locks it (Twisted L2)", function()
    local lock = defer.lock()
    local d = lock:acquire()
    assert.are.equal("success", d:state())
    assert.are.equal(lock, d.result)
    assert.is_true(lock.locked)
  end)

  it("makes a second acquire wait while it is locked", function()
    local lock = defer.lock()
    lock:acquire()
    local d = lock:acquire()
    assert.are.equal("pending", d:state())
    assert.are.equal(1, lock.waiting)
  end)

  it("hands itself to the oldest waiter on release and stays locked (Twisted L3)", function()
    local lock = defer.lock()
    lock:acquire()
    local a, b = lock:acquire(), lock:acquire()
    lock:release()
    assert.is_true(a.called)
    assert.is_false(b.called)
    assert.is_true(lock.locked)
  end)

  it("fires the waiter inside release, before release returns", function()
    local lock, log = defer.lock(), {}
    lock:acquire()
    lock:acquire():add_callback(function() log[#log + 1] = "got it" end)
    lock:release()
    log[#log + 1] = "release returned"
    assert.are.same({"got it", "release returned"}, log)
  end)

  it("serves four waiters in the order they queued", function()
    local lock, order = defer.lock(), {}
    lock:acquire()
    for i = 1, 4 do
      lock:acquire():add_callback(function() order[#order + 1] = i end)
    end
    for _ = 1, 4 do lock:release() end
    assert.are.same({1, 2, 3, 4}, order)
    assert.is_true(lock.locked)
    lock:release()
    assert.is_false(lock.locked)
  end)

  it("unlocks on release when nobody waits", function()
    local lock = defer.lock()
    lock:acquire()
    lock:release()
    assert.is_false(lock.locked)
  end)

  it("raises an error naming 'release' when released while unlocked (Twisted L3)", function()
    local lock = defer.lock()
    local err = raised(lock.release, lock)
    assert.is_truthy(tostring(err):find("release", 1, true))
  end)

  it("says in that error that the lock is not locked", function()
    local lock = defer.lock()
    local err = raised(lock.release, lock)
    assert.is_truthy(tostring(err):find("not locked", 1, true))
  end)

  it("still works after a release while unlocked raised", function()
    local lock = defer.lock()
    lock:acquire()
    lock:release()
    raised(lock.release, lock)
    assert.is_false(lock.locked)
    assert.is_true(lock:acquire().called)
    assert.is_false(lock:acquire().called)
  end)

  it("queues an acquire made inside its own critical section behind itself (Twisted L6)", function()
    local lock, log = defer.lock(), {}
    lock:acquire():add_callback(function(l)
      l:acquire():add_callback(function() log[#log + 1] = "inner" end)
      log[#log + 1] = "outer holds"
    end)
    assert.are.same({"outer holds"}, log)
    lock:release()
    assert.are.same({"outer holds", "inner"}, log)
    assert.is_true(lock.locked)
  end)

  it("fails a cancelled pending acquire with a CancelledError (test_cancelLockBeforeAcquired)", function()
    local lock = defer.lock()
    lock:acquire()
    local d = lock:acquire()
    d:cancel()
    assert.is_true(is_cancelled(failure_of(d)))
    assert.are.equal(0, lock.waiting)
  end)

  it("unlocks on release when the only waiter was cancelled", function()
    local lock = defer.lock()
    lock:acquire()
    local d = lock:acquire()
    d:cancel()
    failure_of(d)
    lock:release()
    assert.is_false(lock.locked)
  end)

  it("hands itself to the waiter behind a cancelled one", function()
    local lock = defer.lock()
    lock:acquire()
    local a, b = lock:acquire(), lock:acquire()
    a:cancel()
    failure_of(a)
    lock:release()
    assert.are.equal(lock, b.result)
    assert.is_true(lock.locked)
  end)

  it("does nothing when a fired acquire is cancelled: it stays locked (test_cancelLockAfterAcquired)", function()
    local lock = defer.lock()
    local d = lock:acquire()
    d:cancel()
    assert.are.equal("success", d:state())
    assert.is_true(lock.locked)
  end)

  it("runs f under the lock with its arguments and fires with its value (Twisted L5)", function()
    local lock = defer.lock()
    local inside
    local d = lock:run(function(a, b) inside = lock.locked return a .. b end, "x", "y")
    assert.is_true(inside)
    assert.are.equal("xy", d.result)
    assert.is_false(lock.locked)
  end)

  it("keeps the lock until the deferred f returned fires", function()
    local lock = defer.lock()
    local inner = defer.new()
    local d = lock:run(function() return inner end)
    assert.is_true(lock.locked)
    inner:callback("done")
    assert.are.equal("done", d.result)
    assert.is_false(lock.locked)
  end)

  it("unlocks when f raises, and fails with its error", function()
    local lock = defer.lock()
    local d = lock:run(function() error("in lock", 0) end)
    assert.are.equal("in lock", failure_of(d).value)
    assert.is_false(lock.locked)
  end)

  it("unlocks when f returns a failed deferred", function()
    local lock = defer.lock()
    local d = lock:run(function() return defer.fail("failed") end)
    assert.are.equal("failed", failure_of(d).value)
    assert.is_false(lock.locked)
  end)

  it("unlocks when the deferred f returned fails later", function()
    local lock = defer.lock()
    local inner = defer.new()
    local d = lock:run(function() return inner end)
    inner:errback("later")
    assert.are.equal("later", failure_of(d).value)
    assert.is_false(lock.locked)
  end)

  it("waits to run f until the lock is free, then hands the lock on", function()
    local lock = defer.lock()
    local inner = defer.new()
    lock:run(function() return inner end)
    local ran = false
    local d = lock:run(function() ran = true return "second" end)
    assert.is_false(ran)
    inner:callback()
    assert.are.equal("second", d.result)
    assert.is_false(lock.locked)
  end)

  it("raises an error naming 'run' when f is not a function (Twisted L5)", function()
    local lock = defer.lock()
    local err = raised(lock.run, lock)
    assert.is_truthy(tostring(err):find("run", 1, true))
    assert.is_false(lock.locked)
  end)

  it("goes through Twisted's testLock in the same order", function()
    local lock = defer.lock()
    local counter = 0
    local function inc() counter = counter + 1 end
    lock:acquire():add_callback(inc)
    assert.are.equal(1, counter)
    assert.is_true(lock.locked)
    lock:acquire():add_callback(inc)
    assert.are.equal(1, counter)
    lock:release()
    assert.is_true(lock.locked)
    assert.are.equal(2, counter)
    lock:release()
    assert.is_false(lock.locked)

    local first_value, controlD = nil, defer.new()
    local results = {}
    lock:run(function(value) first_value = value return controlD end, "A")
      :add_callback(function(r) results[#results + 1] = r end)
    assert.is_true(lock.locked)
    assert.are.equal("A", first_value)
    lock:acquire():add_callback(inc)
    assert.are.equal(2, counter)
    controlD:callback("B")
    assert.are.same({"B"}, results)
    assert.are.equal(3, counter)
    assert.is_true(lock.locked)

    local d = lock:acquire()
    local got
    d:add_both(function(r) got = r end)
    assert.is_nil(got)
    d:cancel()
    assert.is_true(is_cancelled(got))
    lock:release()
    assert.is_false(lock.locked)
  end)
end)

describe("defer.queue([size [, backlog]])", function()
  it("starts empty with nobody waiting", function()
    assert.are.same({0, 0, 0}, qcounts(defer.queue()))
  end)

  it("stores a put value when no get waits", function()
    local q = defer.queue()
    q:put("a")
    assert.are.same({1, 1, 0}, qcounts(q))
  end)

  it("returns an already fired deferred from get when a value is stored (Twisted Q2)", function()
    local q = defer.queue()
    q:put("a")
    local d = q:get()
    assert.are.equal("success", d:state())
    assert.are.equal("a", d.result)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("makes get wait when no value is stored", function()
    local q = defer.queue()
    local d = q:get()
    assert.are.equal("pending", d:state())
    assert.are.same({0, 0, 1}, qcounts(q))
  end)

  it("hands a put value to the oldest waiting get at once, inside put (Twisted Q1)", function()
    local q, log = defer.queue(), {}
    q:get():add_callback(function(v) log[#log + 1] = "got " .. v end)
    q:put("a")
    log[#log + 1] = "put returned"
    assert.are.same({"got a", "put returned"}, log)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("gives stored values out first in, first out, beyond two", function()
    local q = defer.queue()
    for i = 1, 5 do q:put(i * 10) end
    local got = {}
    for i = 1, 5 do got[i] = q:get().result end
    assert.are.same({10, 20, 30, 40, 50}, got)
  end)

  it("serves waiting gets first in, first out", function()
    local q = defer.queue()
    local ds = {}
    for i = 1, 4 do ds[i] = q:get() end
    for i = 1, 4 do q:put("v" .. i) end
    assert.are.same({"v1", "v2", "v3", "v4"},
      {ds[1].result, ds[2].result, ds[3].result, ds[4].result})
  end)

  it("stores and gives out nil like any value", function()
    local q = defer.queue()
    q:put(nil)
    assert.are.equal(1, #q)
    local d = q:get()
    assert.are.equal("success", d:state())
    assert.is_nil(d.result)
  end)

  it("raises a QueueOverflow at once when a put would store more than size values", function()
    local q = defer.queue(2)
    q:put(1)
    q:put(2)
    local ok, err = pcall(q.put, q, 3)
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueOverflow))
  end)

  it("keeps its stored values when a put overflows", function()
    local q = defer.queue(2)
    q:put(1)
    q:put(2)
    pcall(q.put, q, 3)
    assert.are.same({2, 2, 0}, qcounts(q))
    assert.are.equal(1, q:get().result)
    assert.are.equal(2, q:get().result)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("accepts a put again once a get made room", function()
    local q = defer.queue(1)
    q:put("a")
    assert.is_false(pcall(q.put, q, "b"))
    q:get()
    q:put("c")
    assert.are.equal("c", q:get().result)
  end)

  it("hands a put to a waiting get even with size 0 (Twisted Q1)", function()
    local q = defer.queue(0)
    local d = q:get()
    q:put("x")
    assert.are.equal("x", d.result)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("raises a QueueOverflow for a put with size 0 when no get waits", function()
    local q = defer.queue(0)
    local ok, err = pcall(q.put, q, "x")
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueOverflow))
  end)

  it("raises a QueueUnderflow at once when a get would wait beyond the backlog", function()
    local q = defer.queue(nil, 2)
    q:get()
    q:get()
    local ok, err = pcall(q.get, q)
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueUnderflow))
    assert.are.same({0, 0, 2}, qcounts(q))
  end)

  it("raises a QueueUnderflow for a get with backlog 0 when no value is stored", function()
    local q = defer.queue(nil, 0)
    local ok, err = pcall(q.get, q)
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueUnderflow))
  end)

  it("gives a stored value to a get even with backlog 0 (Twisted Q2)", function()
    local q = defer.queue(nil, 0)
    q:put("stored")
    local d = q:get()
    assert.are.equal("success", d:state())
    assert.are.equal("stored", d.result)
  end)

  it("goes through Twisted's testQueue in the same order", function()
    local q = defer.queue(2, 2)
    local gotten = {}
    for _ = 1, 2 do
      q:get():add_callback(function(v) gotten[#gotten + 1] = v end)
    end
    local ok, err = pcall(q.get, q)
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueUnderflow))
    q:put(0)
    assert.are.same({0}, gotten)
    q:put(1)
    assert.are.same({0, 1}, gotten)
    q:put(2)
    q:put(3)
    ok, err = pcall(q.put, q, 4)
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueOverflow))
    q:get():add_callback(function(v) gotten[#gotten + 1] = v end)
    assert.are.same({0, 1, 2}, gotten)
    q:get():add_callback(function(v) gotten[#gotten + 1] = v end)
    assert.are.same({0, 1, 2, 3}, gotten)
  end)

  it("fails a cancelled waiting get with a CancelledError (test_cancelQueueAfterGet)", function()
    local q = defer.queue()
    local d = q:get()
    d:cancel()
    assert.is_true(is_cancelled(failure_of(d)))
  end)

  it("takes a cancelled get out of the waiting count", function()
    local q = defer.queue()
    local d = q:get()
    q:get()
    d:cancel()
    failure_of(d)
    assert.are.same({0, 0, 1}, qcounts(q))
  end)

  it("hands the next put to the get behind a cancelled one (Twisted Q4)", function()
    local q = defer.queue()
    local a, b = q:get(), q:get()
    a:cancel()
    failure_of(a)
    q:put("v")
    assert.are.equal("v", b.result)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("stores the next put when the only waiting get was cancelled: no value is lost", function()
    local q = defer.queue()
    local d = q:get()
    d:cancel()
    failure_of(d)
    q:put("kept")
    assert.are.same({1, 1, 0}, qcounts(q))
    assert.are.equal("kept", q:get().result)
  end)

  it("does not count a cancelled get against the backlog", function()
    local q = defer.queue(nil, 1)
    local d = q:get()
    d:cancel()
    failure_of(d)
    local e = q:get()
    assert.are.equal("pending", e:state())
    q:put(7)
    assert.are.equal(7, e.result)
  end)

  it("does not let a cancelled get take a value from a size 0 queue", function()
    local q = defer.queue(0)
    local d = q:get()
    d:cancel()
    failure_of(d)
    local ok, err = pcall(q.put, q, "x")
    assert.is_false(ok)
    assert.is_true(defer.is_a(err, defer.QueueOverflow))
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("lets a cancelled get's errback put and get again (test_cancelQueueAfterGet)", function()
    local q = defer.queue()
    local d = q:get()
    d:add_errback(function()
      q:put("again")
      return q:get()
    end)
    local done = {}
    d:add_callback(function(v) done[#done + 1] = v end)
    d:cancel()
    assert.are.same({"again"}, done)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("does nothing when a get that already fired is cancelled (test_cancelQueueAfterSynchronousGet)", function()
    local q = defer.queue()
    local d = q:get()
    q:put("v")
    d:cancel()
    assert.are.equal("success", d:state())
    assert.are.equal("v", d.result)
  end)

  it("delivers puts made in get callbacks before the outer put returns, in order (Twisted Q5)", function()
    local q, log = defer.queue(), {}
    q:get():add_callback(function(v) log[#log + 1] = v q:put(2) end)
    q:get():add_callback(function(v) log[#log + 1] = v q:put(3) end)
    q:get():add_callback(function(v) log[#log + 1] = v end)
    q:put(1)
    log[#log + 1] = "put returned"
    assert.are.same({1, 2, 3, "put returned"}, log)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("queues a get made in a get callback behind the gets already waiting", function()
    local q, log = defer.queue(), {}
    q:get():add_callback(function(v)
      log[#log + 1] = "a:" .. v
      q:get():add_callback(function(w) log[#log + 1] = "late:" .. w end)
    end)
    q:get():add_callback(function(v) log[#log + 1] = "b:" .. v end)
    q:put(1)
    q:put(2)
    q:put(3)
    assert.are.same({"a:1", "b:2", "late:3"}, log)
  end)

  it("gives a get made in a get callback the value stored behind the one delivered", function()
    local q, got = defer.queue(), nil
    q:put(1)
    q:put(2)
    q:get():add_callback(function() got = q:get().result end)
    assert.are.equal(2, got)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("keeps the size limit for puts made in a get callback", function()
    local q = defer.queue(1)
    local errs = {}
    q:get():add_callback(function()
      q:put("kept")
      local ok, err = pcall(q.put, q, "too many")
      errs[#errs + 1] = (not ok) and defer.is_a(err, defer.QueueOverflow)
    end)
    q:put("first")
    assert.are.same({true}, errs)
    assert.are.same({1, 1, 0}, qcounts(q))
    assert.are.equal("kept", q:get().result)
  end)

  it("loses no value when a get callback puts and then cancels the get behind it", function()
    local q = defer.queue()
    local b
    q:get():add_callback(function()
      q:put("second")
      b:cancel()
    end)
    b = q:get()
    q:put("first")
    -- b either got the value or was cancelled and the value was kept
    if b:state() == "success" then
      assert.are.equal("second", b.result)
      assert.are.same({0, 0, 0}, qcounts(q))
    else
      assert.is_true(is_cancelled(failure_of(b)))
      assert.are.same({1, 1, 0}, qcounts(q))
      assert.are.equal("second", q:get().result)
    end
  end)
end)

describe("serving a million waiters without recursion", function()
  it("drains a million synchronous lock runs queued behind a slow one, in order", function()
    local n = scale(1000000)
    local lock = defer.lock()
    local slow = defer.new()
    lock:run(function() return slow end)
    local count, disorder = 0, 0
    local function task(i)
      count = count + 1
      if i ~= count then disorder = disorder + 1 end
    end
    for i = 1, n do lock:run(task, i) end
    assert.are.equal(n, lock.waiting)
    slow:callback()
    assert.are.equal(n, count)
    assert.are.equal(0, disorder)
    assert.is_false(lock.locked)
    assert.are.equal(0, lock.waiting)
  end)

  it("drains a million lock acquires whose callbacks release at once, in order", function()
    local n = scale(1000000)
    local lock = defer.lock()
    lock:acquire()
    local count, disorder = 0, 0
    local function step(l, i)
      count = count + 1
      if i ~= count then disorder = disorder + 1 end
      l:release()
    end
    for i = 1, n do lock:acquire():add_callback(step, i) end
    lock:release()
    assert.are.equal(n, count)
    assert.are.equal(0, disorder)
    assert.is_false(lock.locked)
  end)

  it("feeds a million waiting gets from one put when each get's callback puts the next value", function()
    local n = scale(1000000)
    local q = defer.queue()
    local count, disorder = 0, 0
    local function step(v)
      count = count + 1
      if v ~= count then disorder = disorder + 1 end
      if v < n then q:put(v + 1) end
    end
    for _ = 1, n do q:get():add_callback(step) end
    q:put(1)
    assert.are.equal(n, count)
    assert.are.equal(0, disorder)
    assert.are.same({0, 0, 0}, qcounts(q))
  end)

  it("feeds a million waiting gets from one put when each get's callback puts the next value and gets again", function()
    local n = scale(1000000)
    local q = defer.queue()
    local count, disorder, late = 0, 0, 0
    local function on_late() late = late + 1 end
    local function step(v)
      count = count + 1
      if v ~= count then disorder = disorder + 1 end
      q:get():add_callback(on_late)
      if v < n then q:put(v + 1) end
    end
    for _ = 1, n do q:get():add_callback(step) end
    q:put(1)
    assert.are.equal(n, count)
    assert.are.equal(0, disorder)
    -- the gets made in the callbacks queued behind the first million
    assert.are.equal(0, late)
    assert.are.same({0, 0, n}, qcounts(q))
  end)
end)
