-- Every ```lua example in docs/API.md and README.md runs, each as a chunk
-- of its own, and asserts what the text says.  A block fenced with another
-- word after "lua" (```lua ngx) needs a host and is skipped.
local helpers = require "helpers"
local has_luv = pcall(require, "luv")

local read = helpers.read_file

-- The ```lua blocks of a file: {line = first line of code, code = text}.
local function blocks(path)
  local out, n, current = {}, 0, nil
  for line in (read(path) .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if current then
      if line:match("^```%s*$") then
        out[#out + 1] = current
        current = nil
      else
        current.code[#current.code + 1] = line
      end
    elseif line:match("^```lua%s*$") then
      current = {line = n + 1, code = {}}
    end
  end
  assert(current == nil, path .. ": a ```lua block is not closed")
  for _, b in ipairs(out) do b.code = table.concat(b.code, "\n") end
  return out
end

-- Runs code as a chunk named after its place, with globals of its own.
local function run(name, code)
  local env = setmetatable({}, {__index = _G})
  local chunk, err
  if setfenv then
    chunk, err = loadstring(code, "=" .. name)
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = load(code, "=" .. name, "t", env)
  end
  assert(chunk, err)
  chunk()
end

for _, path in ipairs({"docs/API.md", "README.md"}) do
  describe(path, function()
    local list = blocks(path)

    it("has examples", function()
      assert.is_true(#list > 0)
    end)

    for _, b in ipairs(list) do
      local name = ("%s:%d"):format(path, b.line)
      it("runs the example at line " .. b.line, function()
        if b.code:find('require "luv"', 1, true) and not has_luv then
          pending("luv is not installed for this Lua")
          return
        end
        local defer = require "defer"
        local prev = defer.on_unhandled(function() end)
        local ok, err = pcall(run, name, b.code)
        defer.on_unhandled(prev)
        assert(ok, err)
        -- an example leaves the default loop as it found it
        assert.are.equal(0, defer.loop:pending(), name .. " left work on defer.loop")
      end)
    end
  end)
end
