-- The editor definitions in types/ match the module: every public name of
-- the module is defined there, and every name defined there exists.
local defer = require "defer"

local read = require("helpers").read_file

-- Parses a definition file: its classes (fields, and methods written as
-- `function Local:name(` or `Local.name(`), and the functions of `modvar`.
local function parse(path, modvar)
  local classes, order, current = {}, {}, nil
  local locals = {} -- local variable -> class
  local funcs = {}
  local pending_class
  for line in read(path):gmatch("[^\n]*") do
    local cls = line:match("^%-%-%-@class ([%w%.]+)")
    if cls then
      current = {name = cls, fields = {}, optional = {}, methods = {}}
      classes[cls] = current
      order[#order + 1] = cls
      pending_class = cls
    end
    local field, opt = line:match("^%-%-%-@field ([%w_]+)(%??)")
    if field and current then
      current.fields[field] = true
      if opt == "?" then current.optional[field] = true end
    end
    local var = line:match("^local ([%w_]+) = {}")
    if var and pending_class then
      locals[var] = classes[pending_class]
      pending_class = nil
    end
    local owner, name = line:match("^function ([%w_]+)[%.:]([%w_]+)%(")
    if owner == modvar then funcs[name] = true
    elseif owner and locals[owner] then locals[owner].methods[name] = true end
  end
  return classes, funcs
end

-- The methods table behind a userdata's __index (a C closure's upvalue, or
-- the table itself).
local function methods_of(obj)
  local index = getmetatable(obj).__index
  if type(index) == "table" then return index end
  local _, t = debug.getupvalue(index, 1)
  return type(t) == "table" and t or {}
end

local function sorted(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("types/defer.lua", function()
  local classes, funcs = parse("types/defer.lua", "defer")
  local module_fields = classes.defer.fields

  it("defines every name of the module, and only those", function()
    local missing, extra = {}, {}
    for k, v in pairs(defer) do
      local defined = type(v) == "function" and funcs[k] or module_fields[k]
      if not defined then missing[#missing + 1] = k end
    end
    for k in pairs(funcs) do
      if type(defer[k]) ~= "function" then extra[#extra + 1] = k end
    end
    for k in pairs(module_fields) do
      if defer[k] == nil then extra[#extra + 1] = k end
    end
    table.sort(missing)
    table.sort(extra)
    assert.are.same({}, missing, "not in types/defer.lua")
    assert.are.same({}, extra, "defined but not in the module")
  end)

  -- one of each kind, and the class that describes it
  local prev
  setup(function() prev = defer.on_unhandled(function() end) end)
  teardown(function() defer.on_unhandled(prev) end)
  local loop = defer.new_loop{clock = "manual"}
  local kinds = {
    {"defer.Deferred", function() return defer.succeed(1) end},
    {"defer.Failure", function() return defer.failure("x") end},
    {"defer.Semaphore", function() return defer.semaphore(2) end},
    {"defer.Lock", function() return defer.lock() end},
    {"defer.Queue", function() return defer.queue(2, 2) end},
    {"defer.Loop", function() return loop end},
    {"defer.Handle", function() return loop:call_later(1, function() end) end},
    {"defer.Error", function() return defer.TimeoutError("late") end},
    {"defer.ErrorType", function() return defer.TimeoutError end},
  }

  for _, kind in ipairs(kinds) do
    local cname, make = kind[1], kind[2]
    it("defines " .. cname .. ": its methods exist, and every method is defined", function()
      local c = assert(classes[cname], cname .. " is not defined")
      local obj = make()
      for _, m in ipairs(sorted(c.methods)) do
        assert.are.equal("function", type(obj[m]), cname .. ":" .. m)
      end
      if type(obj) == "userdata" or cname == "defer.Failure" then
        local undefined = {}
        for m in pairs(methods_of(obj)) do
          if not c.methods[m] then undefined[#undefined + 1] = m end
        end
        table.sort(undefined)
        assert.are.same({}, undefined, "methods of " .. cname .. " not in types/defer.lua")
      end
    end)

    it("defines " .. cname .. "'s fields, and they can be read", function()
      local c = classes[cname]
      local obj = make()
      for _, f in ipairs(sorted(c.fields)) do
        if not c.optional[f] then
          assert.is_not_nil(obj[f], cname .. "." .. f)
        end
      end
    end)
  end
end)

describe("types/ for the adapters", function()
  -- the names each adapter defines: M.name, and the methods of what it returns
  local function source_names(path, pattern)
    local names = {}
    for name in read(path):gmatch(pattern) do names[name] = true end
    return names
  end

  it("defer.luv: every function is defined, and every definition exists", function()
    local classes, funcs = parse("types/defer.luv.lua", "dluv")
    assert.are.same(sorted(source_names("src/defer/luv.lua", "\nfunction M%.([%w_]+)%(")), sorted(funcs))
    assert.are.same(sorted(source_names("src/defer/luv.lua", "\n  function handle%.([%w_]+)%(")),
      sorted(classes["defer.luv.Attached"].methods))
    assert.are.same(sorted(source_names("src/defer/luv.lua", "\n  function reader%.([%w_]+)%(")),
      sorted(classes["defer.luv.Reader"].methods))
  end)

  it("defer.ngx: every function is defined, and every definition exists", function()
    local classes, funcs = parse("types/defer.ngx.lua", "dngx")
    assert.are.same(sorted(source_names("src/defer/ngx.lua", "\nfunction M%.([%w_]+)%(")), sorted(funcs))
    assert.are.same(sorted(source_names("src/defer/ngx.lua", "\nfunction Pump%.([%w_]+)%(")),
      sorted(classes["defer.ngx.Pump"].methods))
    assert.truthy(read("src/defer/ngx.lua"):find("\nM%._VERSION = "))
    assert.is_true(classes["defer.ngx"].fields._VERSION)
  end)
end)
