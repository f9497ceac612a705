-- main.lua: a LÖVE 11 loading screen.  3,000 simulated assets load through
-- a defer semaphore (at most LIMIT loads in flight) while each frame does
-- at most BUDGET calls of work, and a progress bar is drawn: the game never
-- stalls, however large the backlog.  examples/game_loop.lua is the same
-- pattern in plain Lua.
--
-- Two defer loops, moved only by the frames:
--   io    a manual clock advanced by the frame's step (loop:advance(dt)):
--         it stands for the disk or the network; a load's delay is a timer
--         on it, and when it falls due the finished load is posted to work.
--   work  the game's queue: each frame runs at most BUDGET of the calls
--         waiting there (loop:run_once(BUDGET)); firing a load's deferred
--         there gives the token back and starts the next load.
-- The simulation steps by a fixed 1/60 s per frame (a fixed-step game
-- clock), so that a run gives the same figures whatever the frame rate.
--
-- Run from the repository root after `make LUA=luajit` (LÖVE runs LuaJIT):
--   love examples/love
-- DEFER_CPATH names the folder of defer.so when it is elsewhere.
-- Headless runs (tools/test-love):
--   love examples/love --frames 400 [--out figures.txt]
-- or the variables DEFER_LOVE_FRAMES and DEFER_LOVE_OUT: after that many
-- frames it writes its figures (key=value lines: frames, assets, loaded,
-- done_frame, max_calls, budget, max_active, limit) and quits.
local cpath = os.getenv("DEFER_CPATH")
package.cpath = (cpath and cpath .. "/?.so;" or "") .. "./build/luajit/?.so;" .. package.cpath
local defer = require "defer"

local ASSETS, LIMIT, BUDGET, STEP = 3000, 32, 20, 1 / 60
local MIN_DELAY, MAX_DELAY = 0.005, 0.045 -- a load's simulated time

local io_loop, work, sem
local state = {
  frames = 0, loaded = 0, failed = 0, calls = 0,
  max_calls = 0, max_active = 0, done_frame = nil,
}
local quit_after, out_path

-- Park and Miller's generator: the same delays on every run.
local seed = 7
local function rand()
  seed = (seed * 16807) % 2147483647
  return seed / 2147483647
end

local function finish(d, asset) d:callback(asset) end

-- One simulated load: a deferred fired on `work` once its delay passed.
local function load(i)
  if sem.active > state.max_active then state.max_active = sem.active end
  local d = defer.new()
  io_loop:call_later(MIN_DELAY + (MAX_DELAY - MIN_DELAY) * rand(), function()
    work:call_soon(finish, d, {id = i, bytes = 1000 + i})
  end)
  return d
end

local function write_figures()
  if not out_path then return end
  local f = assert(io.open(out_path, "w"))
  for _, k in ipairs{"frames", "assets", "loaded", "failed", "done_frame",
                     "max_calls", "budget", "max_active", "limit"} do
    local v = state[k]
    if k == "assets" then v = ASSETS elseif k == "budget" then v = BUDGET
    elseif k == "limit" then v = LIMIT end
    f:write(k, "=", tostring(v == nil and -1 or v), "\n")
  end
  f:close()
end

function love.load(args)
  args = args or {}
  for i = 1, #args do
    if args[i] == "--frames" then quit_after = tonumber(args[i + 1])
    elseif args[i] == "--out" then out_path = args[i + 1] end
  end
  quit_after = quit_after or tonumber(os.getenv("DEFER_LOVE_FRAMES") or "")
  out_path = out_path or os.getenv("DEFER_LOVE_OUT")

  io_loop = defer.new_loop{clock = "manual"}
  work = defer.new_loop{clock = "manual"}
  sem = defer.semaphore(LIMIT)
  local loads = {}
  for i = 1, ASSETS do loads[i] = sem:run(load, i) end
  defer.list(loads, {
    consume_errors = true,
    on_progress = function(done)
      state.loaded = done
      if done == ASSETS then state.done_frame = state.frames end
    end,
  }):add_callback(function(results)
    for _, pair in ipairs(results) do
      if not pair[1] then state.failed = state.failed + 1 end
    end
  end)
end

function love.update()
  state.frames = state.frames + 1
  io_loop:advance(STEP)
  local ran = work:run_once(BUDGET)
  state.calls = ran
  if ran > state.max_calls then state.max_calls = ran end
  if quit_after and state.frames >= quit_after then
    write_figures()
    love.event.quit(0)
  end
end

function love.keypressed(key)
  if key == "escape" then love.event.quit(0) end
end

function love.draw()
  local g = love.graphics
  local w = g.getWidth()
  local x, y, bw, bh = 40, 80, w - 80, 28
  g.clear(0.08, 0.09, 0.11)
  g.setColor(1, 1, 1)
  g.print(state.loaded < ASSETS and "Loading assets..." or "All assets loaded", x, 40)
  g.setColor(0.25, 0.27, 0.32)
  g.rectangle("fill", x, y, bw, bh)
  g.setColor(0.35, 0.75, 0.45)
  g.rectangle("fill", x, y, bw * state.loaded / ASSETS, bh)
  g.setColor(1, 1, 1)
  g.rectangle("line", x, y, bw, bh)
  g.print(("%d / %d assets   %2d in flight (limit %d)   %2d calls this frame (budget %d)")
    :format(state.loaded, ASSETS, sem.active, LIMIT, state.calls, BUDGET), x, y + bh + 14)
  g.print(("frame %d   most calls in a frame %d%s"):format(state.frames, state.max_calls,
    state.done_frame and ("   done at frame " .. state.done_frame) or ""), x, y + bh + 34)
end
