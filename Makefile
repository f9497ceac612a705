# defer: build, test and check.  `make` builds build/lua5.4/defer.so;
# `make LUA=lua5.1` (lua5.2, lua5.3, luajit) builds for that interpreter.

LUA ?= lua5.4
LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit
PKG_lua5.1 := lua5.1
PKG_lua5.2 := lua5.2
PKG_lua5.3 := lua5.3
PKG_lua5.4 := lua5.4
PKG_luajit := luajit
# the Lua version an interpreter's modules are installed for
LUAV_lua5.1 := 5.1
LUAV_lua5.2 := 5.2
LUAV_lua5.3 := 5.3
LUAV_lua5.4 := 5.4
LUAV_luajit := 5.1

ifeq ($(filter $(LUA),$(LUAS)),)
$(error LUA=$(LUA): use one of $(LUAS))
endif

BUILD := build/$(LUA)
SRCS := $(wildcard src/*.c)
OBJS := $(patsubst src/%.c,$(BUILD)/%.o,$(SRCS))
# the Lua parts compiled into the module: the driver first
PARTS := src/lua/driver.lua $(filter-out src/lua/driver.lua,$(sort $(wildcard src/lua/*.lua)))
# any interpreter regenerates the embedded parts (the header is committed)
GEN_LUA := $(firstword $(foreach l,lua5.4 lua5.3 lua5.2 lua5.1 luajit,$(shell command -v $(l) 2>/dev/null)))

WARN := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
        -Wpointer-arith -Wcast-qual -Wundef
CFLAGS ?= -O2 -g
LUA_CFLAGS = $(shell pkg-config --cflags $(PKG_$(LUA)))
ALL_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden \
             $(WARN) $(CFLAGS) $(LUA_CFLAGS)

# $(call build_for,LUAS...): builds the module for each interpreter named
build_for = @for l in $(1); do $(MAKE) --no-print-directory LUA=$$l all >/dev/null || exit 1; done

.PHONY: all test specs asan valgrind rock clean bench demo print-parts
.PHONY: test-nginx test-love lint install rockspec gc-stress oom fuzz

all: $(BUILD)/defer.so

$(BUILD)/defer.so: $(OBJS)
	$(CC) -shared $(LDFLAGS) -o $@ $(OBJS)

$(BUILD)/%.o: src/%.c src/driver_lua.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD):
	mkdir -p $@

src/driver_lua.h: tools/embed.lua $(PARTS)
	@if [ -n "$(GEN_LUA)" ]; then \
	  $(GEN_LUA) tools/embed.lua $@.tmp $(PARTS) && mv $@.tmp $@; \
	else echo "no Lua interpreter: keeping the committed $@"; touch $@; fi

-include $(OBJS:.o=.d)

# the embedded parts in order (tools/check-rockspec regenerates the header)
print-parts:
	@echo $(PARTS)

# Every spec under every interpreter; the last line is "N passed, N failed".
test:
	tools/install-deps test
	$(call build_for,$(LUAS))
	tools/run-specs $(LUAS)

# The suite under lua5.4 with the module built with AddressSanitizer and
# UndefinedBehaviorSanitizer.  The interpreter is not instrumented, so the
# runtime is preloaded into it (only into it: tools/run-specs does that);
# leak detection is off (at exit it would see the uninstrumented
# interpreter's memory, and `make valgrind` checks leaks); every error
# aborts the run.
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer -shared-libsan
asan:
	tools/install-deps test asan
	$(MAKE) --no-print-directory LUA=lua5.4 BUILD=build/asan CC=clang \
	  CFLAGS="-O1 -g $(ASAN_FLAGS)" LDFLAGS="$(ASAN_FLAGS)" all
	DEFER_SPEC_SLOW=1 DEFER_BUILD=build/asan \
	  DEFER_PRELOAD="$$(clang -print-file-name=libclang_rt.asan-x86_64.so)" \
	  ASAN_SYMBOLIZER_PATH="$$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || echo /usr/lib/llvm-14/bin/llvm-symbolizer)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  tools/run-specs lua5.4

# The suite under valgrind's memcheck on every interpreter: no error, no
# definite leak.
valgrind:
	tools/install-deps test valgrind
	$(call build_for,$(LUAS))
	DEFER_SPEC_SLOW=1 DEFER_VALGRIND=1 tools/run-specs $(LUAS)

# The version lives in src/defer.h alone; a release rockspec is made from
# the scm one with it (build/defer-<version>-1.rockspec).
VERSION := $(shell sed -n 's/^\#define DFR_VERSION "\(.*\)"/\1/p' src/defer.h)
rockspec: build/defer-$(VERSION)-1.rockspec
build/defer-$(VERSION)-1.rockspec: rockspec/defer-scm-1.rockspec src/defer.h
	@mkdir -p build
	sed -e 's/^version = "scm-1"/version = "$(VERSION)-1"/' \
	    -e 's/^\(  url = .*\)$$/\1\n  tag = "v$(VERSION)",/' $< >$@

# The suite with the collector at its most aggressive (spec/gc_stress.lua):
# nothing used after it was collected, no callback lost because only C held
# it.  Lua 5.4 and 5.1 by default (GC_LUAS=...: others; 5.2 and 5.3 take
# ten minutes and more there).
GC_LUAS ?= lua5.4 lua5.1
gc-stress:
	tools/install-deps test
	$(call build_for,$(GC_LUAS))
	DEFER_SPEC_SLOW=1 DEFER_GC_STRESS=1 tools/run-specs $(GC_LUAS)

# Out of memory at every allocation (tests/oom/): no crash, only memory
# errors, every byte back at lua_close.  ASAN=1 under the sanitizers;
# STRICT=1 also fails on work that an error left stuck (listed).
oom:
	tools/install-deps test $(if $(ASAN),asan)
	tests/oom/run $(if $(ASAN),--asan) $(if $(STRICT),--strict)

# The libFuzzer target (tests/fuzz/): SECONDS of fuzzing (default 60) from a
# copy of the seed corpus; a crash leaves its input under build/fuzz/artifacts/.
SECONDS ?= 60
fuzz:
	tools/install-deps test asan
	tests/fuzz/run $(SECONDS)

# Installs the rock into a temporary tree and requires it from there.
rock:
	tools/install-deps test
	tools/check-rockspec
	tools/test-rock

# defer.ngx in a real nginx with its Lua module (a temporary prefix on
# 127.0.0.1, stopped by its pid afterwards).
test-nginx:
	tools/test-nginx

# examples/love/ in a real LÖVE 11 under xvfb-run, for a fixed number of
# frames; its figures are checked.
test-love:
	tools/test-love

# luacheck on every Lua file (.luacheckrc), cppcheck on the C sources with
# the headers of Lua 5.1, LuaJIT and 5.4 (compat.h differs between them).
CPPCHECK := cppcheck --enable=warning,style,performance,portability --std=c99 \
            --error-exitcode=1 --inline-suppr --quiet -I src \
            --suppress=missingIncludeSystem --suppress=toomanyconfigs -ULUA_USER_H
lint:
	tools/install-deps test lint
	luacheck -q .
	@for l in lua5.1 luajit lua5.4; do \
	  echo "cppcheck with $$l"; \
	  $(CPPCHECK) $$(pkg-config --cflags-only-I $$l) src/*.c || exit 1; \
	done
	@for f in tests/*/*.c; do \
	  $(CPPCHECK) $$(pkg-config --cflags-only-I lua5.4) $$f || exit 1; \
	done

# Installs the module for $(LUA) under PREFIX (default /usr/local), where
# that Lua looks: lib/lua/<version>/defer.so, share/lua/<version>/defer/.
PREFIX ?= /usr/local
install: $(BUILD)/defer.so
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUAV_$(LUA)) \
	  $(DESTDIR)$(PREFIX)/share/lua/$(LUAV_$(LUA))/defer
	install -m 755 $(BUILD)/defer.so $(DESTDIR)$(PREFIX)/lib/lua/$(LUAV_$(LUA))/
	install -m 644 src/defer/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUAV_$(LUA))/defer/

clean:
	rm -rf build

# The main job: an e-mail backlog over real SMTP through a semaphore, driven
# by libuv (ARGS="--count 1000 --limit 5" passes options).
demo:
	tools/demo $(ARGS)

# Benchmarks against Twisted, a naive pure-Lua semaphore and the bare loop
# (QUICK=1 for a short run).
bench:
	bench/run
