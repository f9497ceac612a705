-- progress.lua: a progress bar over a backlog.  A few thousand jobs (here,
-- plain deferreds) finish in random order, one in a hundred failing, and
-- defer.list's on_progress(done, total) draws the bar: redrawn in place on
-- a terminal, else one line every 10%.  The list's {ok, value} pairs then
-- give the summary.
-- Usage: lua examples/progress.lua [count]   (default 3000)
local defer = require "defer"

local total = math.floor(tonumber(arg and arg[1]) or 3000)
local status = os.execute("test -t 1") -- 0 on Lua 5.1, true later
local tty = status == true or status == 0

local width, next_line = 40, 10
local function draw(done, n)
  local filled = math.floor(width * done / n)
  local bar = ("[%s%s] %3d%% %d/%d"):format(("#"):rep(filled),
    ("."):rep(width - filled), math.floor(100 * done / n), done, n)
  if tty then
    io.write("\r", bar, done == n and "\n" or "")
    io.flush()
  elseif 100 * done >= next_line * n then
    print(bar)
    while 100 * done >= next_line * n do next_line = next_line + 10 end
  end
end

local jobs = {}
for i = 1, total do jobs[i] = defer.new() end

local summary
defer.list(jobs, {on_progress = draw, consume_errors = true})
  :add_callback(function(results)
    local ok, failed, sum, first = 0, 0, 0, nil
    for i, pair in ipairs(results) do
      if pair[1] then
        ok, sum = ok + 1, sum + pair[2]
      else
        failed = failed + 1
        first = first or ("job %d: %s"):format(i, pair[2]:message())
      end
    end
    summary = ("done: %d jobs, %d succeeded (sum of results %d), %d failed%s")
      :format(#results, ok, sum, failed, first and ", first: " .. first or "")
  end)

-- the jobs finish in a random order: a shuffled index
math.randomseed(42)
local order = {}
for i = 1, total do order[i] = i end
for i = total, 2, -1 do
  local j = math.random(i)
  order[i], order[j] = order[j], order[i]
end
for _, i in ipairs(order) do
  if i % 100 == 0 then jobs[i]:errback("timed out")
  else jobs[i]:callback(i) end
end

print(summary)
