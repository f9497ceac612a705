-- luacheck: the settings for every Lua file of the tree (make lint).
-- One source tree runs on Lua 5.1 to 5.4 and LuaJIT: allow all their globals.
std = "max"
max_line_length = 120
-- the build tree and luarocks' trees are not ours
exclude_files = {"build/", "lua_modules/", ".luarocks/"}

-- specs: busted's globals; a test's name may make a long line
-- (and dropping a reference before collecting, `x = nil` or a table of
-- deferreds kept only to hold them, is how a spec tests the collector)
files["spec/"] = {std = "+busted", max_line_length = false, ignore = {"311", "241"}}
files["src/defer/ngx.lua"] = {std = "+ngx_lua"}
files["t/nginx/"] = {std = "+ngx_lua"}
-- a LÖVE game sets its callbacks in the global love
files["examples/love/"] = {globals = {"love"}}
-- the out-of-memory scenarios keep their records in the global T
files["tests/oom/"] = {globals = {"T"}}
-- editor definitions: functions without bodies, classes never read
files["types/"] = {unused_args = false, ignore = {"241"}}
