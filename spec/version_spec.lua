-- The version is written once, in src/defer.h; the module, the changelog,
-- the docs and the release rockspec (made by `make rockspec`) share it.
local defer = require "defer"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local header = assert(read("src/defer.h"), "run the specs from the repository")
local version = header:match('#define DFR_VERSION "([^"]+)"')

describe("the version", function()
  it("is defined once, in src/defer.h, as major.minor.patch", function()
    assert.truthy(version and version:match("^%d+%.%d+%.%d+$"), tostring(version))
  end)

  it("is the module's _VERSION", function()
    assert.are.equal(version, defer._VERSION)
  end)

  it("heads the changelog", function()
    local changelog = assert(read("CHANGELOG.md"))
    local first = changelog:match("\n## (%d+%.%d+%.%d+)")
    assert.are.equal(version, first)
  end)

  it("is the one the docs quote", function()
    local seen = 0
    for _, path in ipairs({"README.md", "docs/API.md"}) do
      local text = read(path) or ""
      for quoted in text:gmatch('_VERSION[^\n]-"(%d+%.%d+%.%d+)"') do
        assert.are.equal(version, quoted, path)
        seen = seen + 1
      end
    end
    assert.is_true(seen >= 1, "no doc quotes defer._VERSION")
  end)
end)
