-- Loaded by busted before the specs (tools/run-specs passes it as the
-- helper): luv is required once for the whole run.  Busted insulates each
-- spec file and forgets the modules it loaded; luv loaded again in the same
-- Lua state makes a new uv loop, and the collector then frees the first
-- one under the handles still on it (a crash inside libuv).
pcall(require, "luv")
