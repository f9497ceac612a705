"""twisted_work.py: runs ONE Twisted measurement in its own process.

Usage: python3 twisted_work.py WORKLOAD N LIMIT
  WORKLOAD  w1 | w2 | w2q | flat | nestnow | unwind | drain
Prints one line, as bench/worker.lua does:
  RESULT cpu=<s> rss0=<kB> hwm=<kB> held=- list=DeferredList ok=1
or
  RESULT fail=<reason>
cpu is time.process_time() around the workload only; rss0 is VmRSS just
before it and hwm VmHWM (peak RSS) right after it.
"""
import sys
import time
from collections import deque

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed

WL, N, LIMIT = sys.argv[1], int(float(sys.argv[2])), int(float(sys.argv[3]))


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def check_list(res):
    assert len(res) == N, "list fired with %d results" % len(res)
    for i, (ok, v) in enumerate(res, 1):
        assert ok and v == i, "result %d is not a success with %d" % (i, i)


def w1():
    count = 0

    def work(i):
        nonlocal count
        count += 1
        return i

    fired = []
    sem = DeferredSemaphore(LIMIT)
    ds = [sem.run(work, i) for i in range(1, N + 1)]
    DeferredList(ds).addCallback(fired.append)
    assert fired, "the list did not fire"
    check_list(fired[0])
    assert count == N, "counter is %d" % count
    assert sem.tokens == LIMIT, "tokens back: %d" % sem.tokens


if WL == "w2":  # imported (and installed) before the clock starts
    from twisted.internet import reactor


def w2():
    count = 0
    call_later = reactor.callLater

    def work(i):
        nonlocal count
        count += 1
        d = Deferred()
        call_later(0, d.callback, i)
        return d

    fired = []

    def done(res):
        fired.append(res)
        reactor.stop()

    sem = DeferredSemaphore(LIMIT)
    ds = [sem.run(work, i) for i in range(1, N + 1)]
    DeferredList(ds).addCallback(done)
    reactor.run(installSignalHandlers=False)
    assert fired, "the list did not fire"
    check_list(fired[0])
    assert count == N, "counter is %d" % count
    assert sem.tokens == LIMIT, "tokens back: %d" % sem.tokens


def w2q():
    count = 0
    q = deque()
    post = q.append

    def work(i):
        nonlocal count
        count += 1
        d = Deferred()
        post((d.callback, i))
        return d

    fired = []
    sem = DeferredSemaphore(LIMIT)
    ds = [sem.run(work, i) for i in range(1, N + 1)]
    DeferredList(ds).addCallback(fired.append)
    pop = q.popleft
    while q:
        f, a = pop()
        f(a)
    assert fired, "the list did not fire"
    check_list(fired[0])
    assert count == N, "counter is %d" % count
    assert sem.tokens == LIMIT, "tokens back: %d" % sem.tokens


def flat():
    def inc(x):
        return x + 1

    d = Deferred()
    for _ in range(N):
        d.addCallback(inc)
    d.callback(0)
    out = []
    d.addCallback(out.append)
    assert out == [N], "flat chain gave %r" % (out,)


def nestnow():
    def nest(x):
        return succeed(x + 1)

    d = Deferred()
    for _ in range(N):
        d.addCallback(nest)
    d.callback(0)
    out = []
    d.addCallback(out.append)
    assert out == [N], "nestnow chain gave %r" % (out,)


def unwind():
    ds = [Deferred() for _ in range(N + 1)]

    def nxt(_, i):
        return ds[i + 1]

    for i in range(N):
        ds[i].addCallback(nxt, i)
    for i in range(N):
        ds[i].callback(i)
    ds[N].callback("innermost")
    out = []
    ds[0].addCallback(out.append)
    assert out == ["innermost"], "unwind gave %r" % (out[:1],)


ran = 0
errors = {}


def drain():
    global ran

    def work(i):
        global ran
        ran += 1
        return i

    def record(f):
        name = f.type.__name__ if f.type else str(f.value)
        errors[name] = errors.get(name, 0) + 1
        return None

    sem = DeferredSemaphore(1)
    first = Deferred()
    sem.run(lambda: first).addErrback(record)
    for i in range(1, N + 1):
        sem.run(work, i).addErrback(record)
    first.callback(0)
    if ran != N or errors:
        why = ", ".join("%s x%d" % kv for kv in sorted(errors.items())) or "no error"
        raise AssertionError("only %d of %d tasks ran (%s)" % (ran, N, why))
    assert sem.tokens == 1, "tokens back: %d" % sem.tokens


WORKLOADS = dict(w1=w1, w2=w2, w2q=w2q, flat=flat, nestnow=nestnow, unwind=unwind, drain=drain)


def main():
    fn = WORKLOADS.get(WL)
    if fn is None:
        print("RESULT fail=no such workload: %s" % WL)
        return
    import gc
    gc.collect()
    rss0 = status("VmRSS")
    t0 = time.process_time()
    try:
        fn()
    except BaseException as e:  # RecursionError, AssertionError, MemoryError...
        msg = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        print("RESULT fail=%s" % msg)
        sys.stdout.flush()
        return
    t1 = time.process_time()
    hwm = status("VmHWM")
    print("RESULT cpu=%.9f rss0=%d hwm=%d held=- list=DeferredList ok=1" % (t1 - t0, rss0, hwm))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
