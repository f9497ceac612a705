# host-checks.sh: sourced by tools/test-nginx and tools/test-love.  One line
# per check ("ok - ..." or "not ok - ..."), a last line "N passed, N failed",
# and the LuaJIT build both hosts load (build/luajit/defer.so).
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
not_ok() { echo "not ok - $*"; fail=$((fail + 1)); }
check() { # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then ok "$name"; else not_ok "$name"; fi
}
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit
}

# build_luajit LOG: make's LuaJIT build; sets cpath to its folder.
build_luajit() {
  if make --no-print-directory LUA=luajit all >"$1" 2>&1; then
    ok "build defer.so for LuaJIT"
  else
    sed 's/^/    /' "$1"; not_ok "build defer.so for LuaJIT"; finish
  fi
  cpath=$(pwd)/build/luajit
}
