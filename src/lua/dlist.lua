-- dlist.lua: defer.list, defer.gather and defer.race.  The bookkeeping is in
-- C (dlist.c); here is what calls user code: the canceller of the result
-- deferred R (it cancels the children), a race cancelling its losers, and
-- the text of a FirstError (tostring may meet a __tostring).  One closure
-- per list, none per child.
local M, core = ...

local drive, call, start = core.drive, core.call, core.start
local list_new, list_failure, list_flush = core.list_new, core.list_failure, core.list_flush
local report, set_canceller = core.list_report, core.set_canceller
local cancel = core.Deferred.cancel
local FirstError = M.FirstError
local pcall, tostring, type = pcall, tostring, type

-- A child's canceller that raises is reported, and the others are still
-- cancelled (Twisted DL8).
local function cancel_one(d)
  local ok, f = call(cancel, d)
  if not ok then report(f) end
end

-- race: the first success wins and every other input is cancelled before
-- R fires (Twisted's race), never the winner.
local function cancel_losers(children, winner)
  local w = children[winner]
  for i = 1, #children do
    local d = children[i]
    if d ~= w then cancel_one(d) end
  end
end

-- FirstError(failure, index), its message "item 2 failed: <the error>".
local function first_error(f, i)
  local ok, text = pcall(tostring, f.value)
  if not ok or type(text) ~= "string" then text = type(f.value) end
  return FirstError(("item %d failed: %s"):format(i, text), {failure = f, index = i})
end

core.list_init(cancel_losers, first_error)

-- R's canceller: cancels every child; if the list was busy with a user call
-- meanwhile (R cancelled from on_progress), R takes the result the children
-- decided now rather than a CancelledError.
local function cancel_all(lst, children)
  for i = 1, #children do cancel_one(children[i]) end
  local f, i = list_failure(lst)
  local e = f ~= nil and first_error(f, i) or nil
  return drive(list_flush(lst, e))
end

local function make(ds, opts, mode)
  local lst, r, children = list_new(ds, opts, mode)
  set_canceller(r, function() return cancel_all(lst, children) end)
  drive(start(lst))
  return r
end

function M.list(ds, opts) return make(ds, opts, 0) end

function M.gather(ds, consume_errors) return make(ds, consume_errors, 1) end

function M.race(ds) return make(ds, nil, 2) end
