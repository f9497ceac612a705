---@meta defer
-- Lua Language Server definitions for `require "defer"` (completion and type
-- checks in an editor; see types/README.md).  Nothing here runs.

---@class defer
---@field _VERSION string The module's version, "major.minor.patch".
---@field loop defer.Loop The default loop.
---@field CancelledError defer.ErrorType A deferred was cancelled.
---@field TimeoutError defer.ErrorType A deadline passed (add_timeout).
---@field AlreadyCalledError defer.ErrorType A deferred was fired twice.
---@field FirstError defer.ErrorType A list's first failure (`failure`, `index`).
---@field QueueOverflow defer.ErrorType A put over the queue's size.
---@field QueueUnderflow defer.ErrorType A get over the queue's backlog.
---@field FailureGroup defer.ErrorType Every racer failed (`failures`).
local defer = {}

---A result that arrives later, with callbacks (Twisted's Deferred).
---@class defer.Deferred
---@field called boolean Whether it has fired.
---@field paused integer How many pauses are in force.
---@field result any The current result (a Failure after a failure; nil while pending).
local Deferred = {}

---Fires it with a value.
---@param value any
function Deferred:callback(value) end

---Fires it with a failure (any error value, wrapped in a Failure).
---@param err any
function Deferred:errback(err) end

---Adds a callback, called as `f(result, ...)`; what it returns is the next result.
---@param f fun(result: any, ...: any): any
---@param ... any Extra arguments for f.
---@return defer.Deferred self
function Deferred:add_callback(f, ...) end

---Adds an errback, called as `f(failure, ...)`.
---@param f fun(failure: defer.Failure, ...: any): any
---@param ... any
---@return defer.Deferred self
function Deferred:add_errback(f, ...) end

---Adds a function called on success and on failure alike.
---@param f fun(result: any, ...: any): any
---@param ... any
---@return defer.Deferred self
function Deferred:add_both(f, ...) end

---Adds a callback and an errback at the same place in the chain (nil: pass).
---@param cb? fun(result: any): any
---@param eb? fun(failure: defer.Failure): any
---@return defer.Deferred self
function Deferred:add_callbacks(cb, eb) end

---Fires `other` with this deferred's result, and passes nil on.
---@param other defer.Deferred
---@return defer.Deferred self
function Deferred:chain(other) end

---Stops the chain from running until a matching unpause().
---@return defer.Deferred self
function Deferred:pause() end

---@return defer.Deferred self
function Deferred:unpause() end

---Cancels it: the canceller runs; if it did not fire it, a CancelledError.
function Deferred:cancel() end

---Cancels it after `seconds` on the loop; the CancelledError becomes a TimeoutError.
---@param seconds number
---@param loop? defer.Loop
---@return defer.Deferred self
function Deferred:add_timeout(seconds, loop) end

---@return "pending"|"success"|"failure"
function Deferred:state() end

---An error value with the traceback of where it was raised.
---@class defer.Failure
---@field value any The error value.
---@field traceback string
local Failure = {}

---The first of the types that the value is a (see defer.is_a), or nil.
---@param ... defer.ErrorType
---@return defer.ErrorType|nil
function Failure:check(...) end

---The same as check, but raises the Failure again when none matches.
---@param ... defer.ErrorType
---@return defer.ErrorType
function Failure:trap(...) end

---@return string
function Failure:message() end

---Raises the Failure.
function Failure:raise() end

---An error type: call it with a message to make an error object.
---@class defer.ErrorType
---@field name string
---@field parent? defer.ErrorType
---@overload fun(message?: string): defer.Error

---An error object.
---@class defer.Error
---@field type defer.ErrorType
---@field message string
---@field failure? defer.Failure A FirstError's failure.
---@field index? integer A FirstError's index (from 1).
---@field failures? defer.Failure[] A FailureGroup's failures.

---A semaphore of N tokens that queues its waiters in order.
---@class defer.Semaphore
---@field tokens integer Free now.
---@field limit integer The number of tokens; may be set (sem.limit = n).
---@field waiting integer Queued acquires and runs.
---@field active integer Tokens taken.
local Semaphore = {}

---A Deferred that fires with the semaphore once n tokens (default 1) are taken.
---@param n? integer
---@return defer.Deferred
function Semaphore:acquire(n) end

---Gives n tokens (default 1) back and wakes the waiters in order.
---@param n? integer
function Semaphore:release(n) end

---Takes a token, calls f(...) (as defer.maybe) and gives the token back
---when its result fires; the Deferred fires with that result.
---@param f fun(...: any): any
---@param ... any
---@return defer.Deferred
function Semaphore:run(f, ...) end

---Runs f(item, i) for every item through the semaphore: a Deferred of the
---array of results, or a FirstError on the first failure.
---@param list any[]
---@param f fun(item: any, i: integer): any
---@return defer.Deferred
function Semaphore:map(list, f) end

---Changes the limit at run time.
---@param n integer
---@return defer.Semaphore self
function Semaphore:set_limit(n) end

---@class defer.SemaphoreStats
---@field tokens integer
---@field limit integer
---@field waiting integer
---@field active integer
---@field started integer Tasks started.
---@field finished integer Tasks that ended, failures included.
---@field failed integer

---@return defer.SemaphoreStats
function Semaphore:stats() end

---A semaphore of one token.
---@class defer.Lock
---@field locked boolean
---@field waiting integer
---@field active integer
local Lock = {}

---@return defer.Deferred
function Lock:acquire() end

function Lock:release() end

---@param f fun(...: any): any
---@param ... any
---@return defer.Deferred
function Lock:run(f, ...) end

---A queue of values and of waiting gets.
---@class defer.Queue
---@field pending integer Stored values (also #q).
---@field waiting integer Waiting gets.
---@field size? integer At most this many stored values (nil: no bound).
---@field backlog? integer At most this many waiting gets (nil: no bound).
local Queue = {}

---Hands v to the oldest waiting get, or stores it.
---@param v any
function Queue:put(v) end

---A Deferred of the next value.
---@return defer.Deferred
function Queue:get() end

---A call queued or timed on a loop.
---@class defer.Handle
---@field active boolean False from the moment the call starts or is cancelled.
---@field when? number A timer's due time on the loop's clock.
local Handle = {}

function Handle:cancel() end

---Ready calls and a timer heap.
---@class defer.Loop
local Loop = {}

---@param f fun(...: any)
---@param ... any
---@return defer.Handle
function Loop:call_soon(f, ...) end

---@param seconds number
---@param f fun(...: any)
---@param ... any
---@return defer.Handle
function Loop:call_later(seconds, f, ...) end

---A Deferred fired after `seconds`.
---@param seconds number
---@return defer.Deferred
function Loop:sleep(seconds) end

---Runs until stop() or until nothing is queued or timed.
function Loop:run() end

---Runs what is ready now (at most `budget` calls); never blocks.
---@param budget? integer
---@return integer ran
function Loop:run_once(budget) end

---Moves a manual clock by dt and runs what fell due.
---@param dt number
---@return integer ran
function Loop:advance(dt) end

function Loop:stop() end

---@return number seconds
function Loop:time() end

---Queued plus timed calls.
---@return integer
function Loop:pending() end

---Seconds until the next timer, 0 when calls are queued, nil when idle.
---@return number|nil
function Loop:next_timeout() end

---Sets the handler of errors in loop calls, called as fn(err, traceback).
---@param fn fun(err: any, traceback: string)
function Loop:on_error(fn) end

---@class defer.LoopOptions
---@field clock? "monotonic"|"manual"|fun(): number

---@class defer.ListOptions
---@field fire_on_one_callback? boolean Fire with {value, index} at the first success.
---@field fire_on_one_errback? boolean Errback with a FirstError at the first failure.
---@field consume_errors? boolean The children's failures are handled.
---@field on_progress? fun(done: integer, total: integer)

---A pending Deferred; canceller(d) runs on d:cancel().
---@param canceller? fun(d: defer.Deferred)
---@return defer.Deferred
function defer.new(canceller) end

---A Deferred fired with v.
---@param v any
---@return defer.Deferred
function defer.succeed(v) end

---A Deferred failed with err.
---@param err any
---@return defer.Deferred
function defer.fail(err) end

---Calls f(...) now: its Deferred, or one fired with its value or error.
---@param f fun(...: any): any
---@param ... any
---@return defer.Deferred
function defer.maybe(f, ...) end

---Wraps an error value in a Failure (a Failure comes back as it is).
---@param value any
---@param traceback? string
---@return defer.Failure
function defer.failure(value, traceback) end

---@param x any
---@return boolean
function defer.is_failure(x) end

---Whether value is an error object of that type or of one derived from it.
---@param value any
---@param type defer.ErrorType
---@return boolean
function defer.is_a(value, type) end

---Makes an error type.
---@param name string
---@param parent? defer.ErrorType
---@return defer.ErrorType
function defer.error_type(name, parent) end

---Sets the handler of failures nobody handled; returns the previous one.
---@param fn fun(failure: defer.Failure)
---@return fun(failure: defer.Failure)
function defer.on_unhandled(fn) end

---@param tokens integer
---@return defer.Semaphore
function defer.semaphore(tokens) end

---@return defer.Lock
function defer.lock() end

---@param size? integer
---@param backlog? integer
---@return defer.Queue
function defer.queue(size, backlog) end

---Fires with an array of {ok, value} pairs once every deferred has fired.
---@param deferreds defer.Deferred[]
---@param opts? defer.ListOptions
---@return defer.Deferred
function defer.list(deferreds, opts) end

---Fires with the array of values, or a FirstError on the first failure.
---@param deferreds defer.Deferred[]
---@param consume_errors? boolean
---@return defer.Deferred
function defer.gather(deferreds, consume_errors) end

---Fires with {value, index} of the first success and cancels the rest.
---@param deferreds defer.Deferred[]
---@return defer.Deferred
function defer.race(deferreds) end

---@param opts? defer.LoopOptions
---@return defer.Loop
function defer.new_loop(opts) end

---Runs f(...) in a new coroutine now: a Deferred of its return value or error.
---@param f fun(...: any): any
---@param ... any
---@return defer.Deferred
function defer.spawn(f, ...) end

---Inside a spawned coroutine: waits for d; its value, or raises its Failure.
---@param d defer.Deferred
---@return any
function defer.await(d) end

---A function that spawns f with its arguments.
---@param f fun(...: any): any
---@return fun(...: any): defer.Deferred
function defer.async(f) end

return defer
