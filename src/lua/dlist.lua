-- dlist.lua: defer.list, defer.gather and defer.race.  The bookkeeping is in
-- C (dlist.c); here the result deferred gets its canceller (which calls the
-- children's cancellers, user code) and the list is started.
local M, core = ...

local drive, start = core.drive, core.start
local list_new, list_children = core.list_new, core.list_children
local set_canceller = core.set_canceller
local pcall, report = pcall, nil

-- Cancelling a list cancels every child that has not fired; a canceller
-- that raises is reported, and the others are still cancelled.
local function cancel_children(lst)
  local children = list_children(lst)
  for i = 1, #children do
    local d = children[i]
    if not d.called then
      local ok, err = pcall(d.cancel, d)
      if not ok then
        report = report or function(e)
          M.fail(e) -- an unhandled failure: reported when collected
        end
        report(err)
      end
    end
  end
end

local function settle(r, top, ...)
  if top ~= nil then drive(top, ...) end
  return r
end

local function make(ds, opts, mode, before)
  local lst, r = list_new(ds, opts, mode)
  set_canceller(r, function() cancel_children(lst) end)
  if before then r:add_both(before(lst)) end
  return settle(r, start(lst))
end

function M.list(ds, opts) return make(ds, opts, 0) end

function M.gather(ds, consume_errors) return make(ds, consume_errors, 1) end

-- race: the first success wins and the others are cancelled first.
local is_failure = M.is_failure
function M.race(ds)
  return make(ds, nil, 2, function(lst)
    return function(result)
      if not is_failure(result) then cancel_children(lst) end
      return result
    end
  end)
end
