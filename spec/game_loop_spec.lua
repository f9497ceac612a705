-- The game-loop pattern of examples/game_loop.lua (and examples/love/):
-- a backlog of simulated asset loads through a semaphore, a manual clock
-- advanced by dt each frame, at most `budget` calls of work per frame
-- (loop:run_once(budget)).  The example's own logic is loaded as a module.
local defer = require "defer"

package.path = "examples/?.lua;" .. package.path
local game = require "game_loop"

describe("the game-loop example", function()
  it("loads 3,000 assets within the frames, never over the budget or the limit", function()
    local g = game.run{assets = 3000, budget = 20, limit = 32, max_frames = 1000}
    assert.is_true(g.finished())
    assert.are.equal(3000, g.loaded)
    -- 32 loads in flight of 25 ms on average: about 21 a frame at 60 fps
    assert.is_true(g.frames >= 150 and g.frames <= 400, "frames: " .. g.frames)
    assert.are.equal(g.frames, g.done_frame)
    assert.is_true(g.max_calls <= 20, "calls in one frame: " .. g.max_calls)
    assert.are.equal(20, g.max_calls) -- the budget did bind
    assert.are.equal(32, g.max_active)
    -- everything put back: tokens, queues, timers
    assert.are.equal(32, g.sem.tokens)
    assert.are.equal(0, g.sem.waiting)
    assert.are.equal(0, g.io:pending())
    assert.are.equal(0, g.work:pending())
    local results = nil
    g.all:add_callback(function(r) results = r end)
    assert.are.equal(3000, #results)
    for i = 1, 3000, 499 do
      assert.is_true(results[i][1])
      assert.are.equal(i, results[i][2].id)
    end
  end)

  it("a smaller budget spreads the same work over more frames", function()
    local g = game.run{assets = 600, budget = 3, limit = 32, max_frames = 1000}
    assert.is_true(g.finished())
    assert.are.equal(3, g.max_calls)
    assert.is_true(g.frames >= 200, "frames: " .. g.frames) -- 600 / 3
    -- work left over waits in order for the next frames
    local g2 = game.new{assets = 100, budget = 3, limit = 100}
    g2.io:advance(1) -- every load done at once: 100 calls queued
    assert.are.equal(100, g2.work:pending())
    assert.are.equal(3, g2.frame())
    assert.are.equal(3, g2.loaded)
    assert.are.equal(3, g2.frame())
    assert.are.equal(6, g2.loaded)
  end)

  it("does nothing between frames: only advance and run_once move it", function()
    local g = game.new{assets = 50, budget = 10, limit = 4}
    assert.are.equal(0, g.loaded)
    assert.are.equal(4, g.sem.active)
    assert.are.equal(46, g.sem.waiting)
    assert.are.equal(0, g.io:time())
    g.frame()
    assert.are.equal(1 / 60, g.io:time())
    -- the first frame reaches 16.7 ms: the loads of 5..16 ms are done
    assert.is_true(g.loaded <= 4)
  end)

  it("is deterministic: the same figures every run", function()
    local a = game.run{assets = 500, budget = 7, limit = 16}
    local b = game.run{assets = 500, budget = 7, limit = 16}
    assert.are.same({a.frames, a.max_calls, a.max_active},
                    {b.frames, b.max_calls, b.max_active})
  end)

  it("the pattern by hand: one manual loop, advance and run_once per frame", function()
    -- the same idea with the library alone: loads finish on a manual clock,
    -- their completions wait on a second loop that each frame drains under
    -- a budget
    local clock, work = defer.new_loop{clock = "manual"}, defer.new_loop{clock = "manual"}
    local sem = defer.semaphore(5)
    local done, most = 0, 0
    for i = 1, 200 do
      sem:run(function()
        local d = defer.new()
        clock:call_later(0.01 * (i % 3 + 1), function() work:call_soon(d.callback, d, i) end)
        return d
      end):add_callback(function() done = done + 1 end)
    end
    local frames = 0
    while done < 200 and frames < 1000 do
      frames = frames + 1
      clock:advance(1 / 60)
      local ran = work:run_once(4)
      if ran > most then most = ran end
    end
    assert.are.equal(200, done)
    assert.is_true(most <= 4)
    assert.is_true(frames < 1000)
    assert.are.equal(5, sem.tokens)
  end)

  it("runs as a script and prints its progress", function()
    local out = (require "helpers").run_lua("examples/game_loop.lua 300 10 8")
    if out == nil then return end -- not under tools/run-specs
    assert.truthy(out:find("loaded 300 of 300 assets in %d+ frames"), out)
    assert.truthy(out:find("at most %d+ calls in one frame %(budget 10%), at most 8 loads in flight %(limit 8%)"), out)
    assert.truthy(out:find("frame +20 +%["), out)
  end)
end)
