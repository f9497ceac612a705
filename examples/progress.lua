-- A progress bar over a backlog: a few thousand deferreds fire in random
-- order on a manual-clock loop, and defer.list's on_progress(done, total)
-- draws the bar.  On a terminal the bar is redrawn in place; otherwise a
-- line is printed every 10%.  Usage: lua examples/progress.lua [count]
local defer = require "defer"

local total = tonumber(arg and arg[1]) or 3000
local r = os.execute("test -t 1")
local tty = r == true or r == 0

local loop = defer.new_loop{clock = "manual"}
math.randomseed(42)
local jobs = {}
for i = 1, total do
  -- each job finishes after a random simulated delay of up to 5 s
  jobs[i] = loop:sleep(math.random() * 5):add_callback(function() return i end)
end

local width, next_line = 40, 10
local function draw(done, n)
  local filled = math.floor(width * done / n)
  local bar = ("[%s%s] %3d%% %d/%d"):format(("#"):rep(filled), ("."):rep(width - filled),
    math.floor(100 * done / n), done, n)
  if tty then
    io.write("\r", bar)
    if done == n then io.write("\n") end
  elseif 100 * done / n >= next_line or done == n then
    print(bar)
    next_line = next_line + 10
  end
end

local summary
defer.list(jobs, {on_progress = draw}):add_callback(function(results)
  local sum = 0
  for _, pair in ipairs(results) do sum = sum + pair[2] end
  summary = ("done: %d jobs, sum of results %d, %.1f s simulated"):format(#results, sum, loop:time())
end)

while not summary do loop:advance(0.1) end
print(summary)
