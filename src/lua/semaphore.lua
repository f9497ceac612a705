-- semaphore.lua: the semaphore's, lock's and queue's methods that can run
-- user code (a run's function, the callbacks of woken waiters).
local M, core = ...

local S, Lk, Q = core.Semaphore, core.Lock, core.Queue
local drive, call = core.drive, core.call
local take, ran, queue_run = core.sem_take, core.sem_ran, core.sem_queue_run
local release, set_limit, put = core.sem_release, core.sem_set_limit, core.queue_put
local type, error, tostring = type, error, tostring


-- run(f, ...): with a free token and nobody waiting, f runs now, here;
-- take() gives the run's deferred, ran() settles it and gives what must run
-- next.
local run
if core.pcall_tb and not jit then -- PUC 5.1
  run = function(sem, f, ...)
    local d = take(sem, f)
    if d then
      drive(ran(sem, d, call(f, ...)))
      return d
    end
    return queue_run(sem, f, ...)
  end
else
  local xpcall, handler = xpcall, core.handler
  run = function(sem, f, ...)
    local d = take(sem, f)
    if d then
      drive(ran(sem, d, xpcall(f, handler, ...)))
      return d
    end
    return queue_run(sem, f, ...)
  end
end

S.run, Lk.run = run, run

local function rel(sem, n) drive(release(sem, n)) end
S.release = rel
function Lk.release(lock) drive(release(lock)) end

function S.set_limit(sem, n) drive(set_limit(sem, n)) return sem end

-- sem.limit = n changes the limit; other fields are read-only.
local function newindex(name)
  return function(obj, k, v)
    if k == "limit" and name == "Semaphore" then return S.set_limit(obj, v) end
    error(("cannot set field '%s' of a %s"):format(tostring(k), name), 2)
  end
end
core.SemaphoreMT.__newindex = newindex("Semaphore")
core.LockMT.__newindex = newindex("Lock")

-- map(list, f): f(item, i) for every item through the semaphore; the array
-- of results in list order, or a FirstError on the first failure.
function S.map(sem, list, f)
  if type(list) ~= "table" then
    error(("bad argument #1 to 'map' (table expected, got %s)")
      :format(list == nil and "no value" or type(list)), 2)
  end
  if type(f) ~= "function" then
    error(("bad argument #2 to 'map' (function expected, got %s)")
      :format(f == nil and "no value" or type(f)), 2)
  end
  local ds = {}
  for i = 1, #list do ds[i] = run(sem, f, list[i], i) end
  return M.gather(ds, true)
end

function Q.put(q, v) return drive(put(q, v)) end
