-- game_loop.lua: a loading screen in a fixed-step frame loop, in plain Lua
-- (examples/love/ is the same in LÖVE).  A few thousand assets load through
-- a semaphore (at most `limit` loads in flight) while each frame does at
-- most `budget` calls of work, so that no frame stalls however large the
-- backlog.
--
-- Two loops, both moved only by the frames:
--   io    a manual clock advanced by dt each frame (loop:advance(dt)): it
--         stands for the disk or the network; a load's delay is a timer on
--         it, and when it falls due the finished load is posted to `work`.
--   work  the game's own queue: each frame runs at most `budget` of the
--         calls waiting there (loop:run_once(budget)); the rest keep their
--         order for the next frame.  Firing a load's deferred there runs
--         its callbacks, gives the semaphore's token back and starts the
--         next load: that is the frame's work.
--
-- Usage: lua examples/game_loop.lua [assets [budget [limit]]]
--        (defaults 3000 20 32; prints a progress bar every 20 frames)
-- As a module (the spec): require "game_loop" (with examples/ on the path)
-- returns {new = new, run = run}; nothing is printed.
local defer = require "defer"

local M = {}

-- A small deterministic generator (Park and Miller's): exact in doubles
-- and in integers, so the same numbers on every Lua.
local function lcg(seed)
  local x = seed
  return function()
    x = (x * 16807) % 2147483647
    return x / 2147483647
  end
end

-- new(opts) -> game: opts.assets (3000), opts.budget (calls per frame, 20),
-- opts.limit (loads in flight, 32), opts.dt (seconds per frame, 1/60),
-- opts.min_delay and opts.max_delay (a load's simulated time, 5 and 45 ms).
function M.new(opts)
  opts = opts or {}
  local g = {
    total = opts.assets or 3000,
    budget = opts.budget or 20,
    limit = opts.limit or 32,
    dt = opts.dt or 1 / 60,
    frames = 0,       -- frames run
    calls = 0,        -- calls run in the last frame
    loaded = 0,       -- assets whose load finished
    failed = 0,
    max_calls = 0,    -- the most calls run in one frame on `work`
    max_active = 0,   -- the most loads in flight at once
    done_frame = nil, -- the frame in which the last asset arrived
  }
  local min_delay, max_delay = opts.min_delay or 0.005, opts.max_delay or 0.045
  local io_loop = defer.new_loop{clock = "manual"}
  local work = defer.new_loop{clock = "manual"}
  local sem = defer.semaphore(g.limit)
  local rand = lcg(opts.seed or 7)
  g.io, g.work, g.sem = io_loop, work, sem

  local function finish(d, asset) d:callback(asset) end

  -- One simulated load: a deferred fired on `work` once its delay passed.
  local function load(i)
    if sem.active > g.max_active then g.max_active = sem.active end
    local d = defer.new()
    local delay = min_delay + (max_delay - min_delay) * rand()
    io_loop:call_later(delay, function()
      work:call_soon(finish, d, {id = i, bytes = 1000 + i})
    end)
    return d
  end

  local loads = {}
  for i = 1, g.total do loads[i] = sem:run(load, i) end
  g.all = defer.list(loads, {
    consume_errors = true,
    on_progress = function(done)
      g.loaded = done
      if done == g.total then g.done_frame = g.frames end
    end,
  })

  -- One frame: the clock moves by dt, then at most `budget` calls of work.
  function g.frame()
    g.frames = g.frames + 1
    io_loop:advance(g.dt)
    local ran = work:run_once(g.budget)
    g.calls = ran
    if ran > g.max_calls then g.max_calls = ran end
    return ran
  end

  function g.finished() return g.loaded == g.total end

  return g
end

-- run(opts) -> game: frames until every asset is in, or opts.max_frames
-- (10,000); opts.on_frame(game) after each frame.
function M.run(opts)
  opts = opts or {}
  local g = M.new(opts)
  local max_frames = opts.max_frames or 10000
  while not g.finished() and g.frames < max_frames do
    g.frame()
    if opts.on_frame then opts.on_frame(g) end
  end
  return g
end

if select("#", ...) > 0 and (...) == "game_loop" then return M end

------------------------------------------------------------------ script

local args = arg or {}
local function bar(g)
  local width = 40
  local filled = math.floor(width * g.loaded / g.total)
  return ("frame %4d  [%s%s] %4d/%d  in flight %2d  calls this frame %2d")
    :format(g.frames, ("#"):rep(filled), ("."):rep(width - filled), g.loaded,
      g.total, g.sem.active, g.calls)
end

local g = M.run{
  assets = tonumber(args[1]), budget = tonumber(args[2]), limit = tonumber(args[3]),
  on_frame = function(game)
    if game.frames % 20 == 0 or game.finished() then print(bar(game)) end
  end,
}
print(("loaded %d of %d assets in %d frames (%.2f s of game time at %g fps);")
  :format(g.loaded, g.total, g.frames, g.frames * g.dt, 1 / g.dt))
print(("at most %d calls in one frame (budget %d), at most %d loads in flight (limit %d)")
  :format(g.max_calls, g.budget, g.max_active, g.limit))
if not g.finished() then os.exit(1) end
