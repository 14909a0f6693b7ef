# kling: build, test and install the Lua 5.4 module (C core kling.core + Lua layer).
#
#   make            build build/kling/core.so
#   make test       install what is missing (Debian), build, run the whole suite
#   make test-unit  only the fast in-process specs; make test-integration the others
#   make demo       install, build, start the emulator, generate a clip, download it
#   make check      the suite again with the C core under ASan + UBSan
#   make install    PREFIX=/usr/local DESTDIR= : module paths of Lua 5.4, the manual page
#                   kling(1) and the shell completions of kling
#   make man        write doc/kling.1 from the command line's definitions
#   make deps       install the Debian packages the project needs, when missing

LUA          ?= lua5.4
PKG_CONFIG   ?= pkg-config
CC           ?= cc
PREFIX       ?= /usr/local
DESTDIR      ?=
LUA_LIBDIR   ?= $(PREFIX)/lib/lua/5.4
LUA_SHAREDIR ?= $(PREFIX)/share/lua/5.4
BINDIR       ?= $(PREFIX)/bin
MANDIR       ?= $(PREFIX)/share/man
BASHCOMPDIR  ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR   ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR  ?= $(PREFIX)/share/fish/vendor_completions.d

CFLAGS       ?= -O2 -g
WARN          = -std=c99 -Wall -Wextra -Werror -pedantic
PKG_CFLAGS    = $(shell $(PKG_CONFIG) --cflags lua5.4 libcurl 2>/dev/null)
PKG_LIBS      = $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null)
SAN           = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The C core (pure C, no lua.h): util, protocol, the event seam (EVENT: one
# backend), buffers, SHA-256, settings and URL rules (net), transfers (http),
# the engine, the poller, the journal's files. The Lua binding: lbind, one
# lua_*.c per subsystem, core.c (the module's entry).
#
# EVENT: the event seam's backend (src/event_$(EVENT).c): epoll on Linux,
# kqueue on macOS and the BSDs, poll elsewhere; `make EVENT=poll` forces the
# poll(2) one (the build remembers it: build/event-*.stamp). macOS links a
# bundle whose Lua symbols the host resolves. Only luaopen_kling_core is
# exported from core.so (-fvisibility=hidden).
UNAME := $(shell uname -s)
ifeq ($(UNAME),Linux)
EVENT ?= epoll
else ifneq ($(filter Darwin FreeBSD OpenBSD NetBSD DragonFly,$(UNAME)),)
EVENT ?= kqueue
else
EVENT ?= poll
endif
ifeq ($(UNAME),Darwin)
SHARED = -bundle -undefined dynamic_lookup
else
SHARED = -shared
endif
VISIBILITY = -fvisibility=hidden
CORE_SRC = src/util.c src/protocol.c src/event_$(EVENT).c src/buf.c src/sha256.c src/net.c src/http.c src/engine.c \
           src/poller.c src/journal.c src/media.c
BIND_SRC = src/lbind.c src/lua_engine.c src/lua_poller.c src/lua_protocol.c src/lua_journal.c \
           src/lua_schema.c src/lua_jsonw.c src/lua_term.c src/lua_media.c src/core.c
SRC  = $(CORE_SRC) $(BIND_SRC)
HDR  = $(wildcard src/*.h)
LUA_MODULES = $(wildcard lua/kling/*.lua)

DEB_PACKAGES = lua5.4 liblua5.4-dev lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev \
               luajit libluajit-5.1-dev neovim libcurl4-openssl-dev pkg-config gcc make curl \
               lua-cjson lua-dkjson lua-busted lua-cqueues lua-luv luarocks ca-certificates \
               nginx-light openssl lua-socket tmux lua-argparse lua-filesystem
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

BUSTED = $(LUA) /usr/bin/busted

.PHONY: all deps test test-unit test-integration test-all test-curl768 curl768 check-kqueue demo check install uninstall clean rock schemas

all: build/kling/core.so

build/event-$(EVENT).stamp:
	@mkdir -p $(@D)
	@rm -f build/event-*.stamp build/*/kling/core.so
	@touch $@

build/kling/core.so: $(SRC) $(HDR) build/event-$(EVENT).stamp
	@mkdir -p $(@D)
	@$(PKG_CONFIG) --atleast-version=7.68.0 libcurl || { echo "kling needs libcurl 7.68.0 or newer" \
	  "(pkg-config says libcurl $$($(PKG_CONFIG) --modversion libcurl 2>/dev/null || echo missing))"; exit 1; }
	$(CC) $(WARN) $(CFLAGS) $(VISIBILITY) -fPIC $(SHARED) $(PKG_CFLAGS) -o $@ $(SRC) $(PKG_LIBS)

# The core for another Lua: build/<LUA>/kling/core.so, LUA one of LUAS (their
# pkg-config names); `make lua5.1` builds build/lua5.1/kling/core.so.
LUAS = lua5.1 lua5.2 lua5.3 lua5.4 luajit
.PHONY: $(LUAS)
$(LUAS): %: build/%/kling/core.so

build/%/kling/core.so: $(SRC) $(HDR) build/event-$(EVENT).stamp
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(VISIBILITY) -fPIC $(SHARED) $(shell $(PKG_CONFIG) --cflags $* libcurl 2>/dev/null) -o $@ $(SRC) $(PKG_LIBS)

# The kqueue backend compiled (not run: Linux has no kqueue) against the
# declarations of its manual page (spec/kqueue_stub/sys/event.h).
check-kqueue:
	$(CC) $(WARN) -D_POSIX_C_SOURCE=200809L -Ispec/kqueue_stub -fsyntax-only src/event_kqueue.c
	@echo "src/event_kqueue.c compiles against the kqueue(2) declarations"

# The core with the branches of libcurl 7.68 taken on this newer libcurl
# (src/curlcompat.h): `make test-curl768` runs the library's specs on it.
build-curl768/kling/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(VISIBILITY) -DKLING_FORCE_CURL_7_68 -DCURL_DISABLE_DEPRECATION -fPIC $(SHARED) $(PKG_CFLAGS) -o $@ $(SRC) $(PKG_LIBS)
curl768: build-curl768/kling/core.so
test-curl768: deps build-curl768/kling/core.so
	$(BUSTED) --cpath="build-curl768/?.so" $(LIB_SPECS) $(LIB_SPECS_53)

build-check/kling/core.so: $(SRC) $(HDR) build/event-$(EVENT).stamp
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(SAN) $(VISIBILITY) -fPIC $(SHARED) $(PKG_CFLAGS) -o $@ $(SRC) $(PKG_LIBS)

# `make test-all`: the library's specs on each Lua of LUAS (busted --lua=X,
# the core of build/X), each run ending with its own summary line, then the
# total. LIB_SPECS run on all five; LIB_SPECS_53 need the emulator in the
# spec's own process (it counts in 64-bit integers: Lua 5.3+) or check the
# JSON writer's 64-bit integer edges (wire), and run on 5.3 and 5.4 only. The
# other specs (the command-line tool, the emulator, the
# install) are the tool's and the emulator's, which run on Lua 5.4: `make test`.
LIB_SPECS = spec/core_spec.lua spec/validation_spec.lua spec/engine_spec.lua spec/journal_spec.lua \
            spec/jobs_spec.lua spec/retry_spec.lua spec/loops_spec.lua \
            spec/answers_spec.lua spec/masking_spec.lua spec/scheduler_spec.lua spec/edges_spec.lua \
            spec/status_answers_spec.lua spec/submit_ids_spec.lua spec/deep_answers_spec.lua \
            spec/file_size_spec.lua spec/secrets_spec.lua spec/proxy_spec.lua spec/portability_spec.lua \
            spec/hosts_spec.lua spec/observed_client_spec.lua spec/catalog_spec.lua spec/media_spec.lua \
            spec/warm_submits_spec.lua spec/transfers_spec.lua spec/learned_polling_spec.lua spec/include_cost_spec.lua
LIB_SPECS_53 = spec/download_spec.lua spec/faults_spec.lua spec/wire_spec.lua
# Real hosts, once (under lua5.4; each host runs its own Lua): Neovim on
# LuaJIT (build/luajit), the C host of examples/embed/host.c; luarocks make
# for each Lua, the release rockspec, luarocks pack.
HOST_SPECS = spec/embed_spec.lua spec/rocks_spec.lua

test-all: deps $(LUAS:%=build/%/kling/core.so)
	@mkdir -p build/test-all; p=0; f=0; k=0; \
	for l in $(LUAS); do \
	  specs="$(LIB_SPECS)"; \
	  case $$l in lua5.3|lua5.4) specs="$$specs $(LIB_SPECS_53)";; \
	    *) echo "== $$l: not run here ($(LIB_SPECS_53)): they need the emulator in process, Lua 5.3+";; esac; \
	  echo "== $$l: $$specs"; \
	  busted --lua=$$l --cpath="build/$$l/?.so" $$specs 2>&1 | tee build/test-all/$$l.log; \
	  line=$$(tail -n 1 build/test-all/$$l.log); \
	  set -- $$(echo "$$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$$/\1 \2 \3/p'); \
	  if [ $$# -ne 3 ]; then echo "== $$l: no summary line (the run broke)"; set -- 0 1 0; fi; \
	  p=$$((p + $$1)); f=$$((f + $$2)); k=$$((k + $$3)); \
	  echo "== $$l: $$1 passed, $$2 failed, $$3 skipped"; \
	done; \
	echo "== hosts: $(HOST_SPECS)"; \
	busted --cpath="build/?.so" $(HOST_SPECS) 2>&1 | tee build/test-all/hosts.log; \
	line=$$(tail -n 1 build/test-all/hosts.log); \
	set -- $$(echo "$$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$$/\1 \2 \3/p'); \
	if [ $$# -ne 3 ]; then echo "== hosts: no summary line (the run broke)"; set -- 0 1 0; fi; \
	p=$$((p + $$1)); f=$$((f + $$2)); k=$$((k + $$3)); \
	echo "test-all ($(LUAS), hosts): $$p passed, $$f failed, $$k skipped"; \
	[ $$f -eq 0 ]

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The specs come in two sets (doc/DESIGN.md, "Specs"). Unit specs run in busted's own
# process and wait on no real time: the C core, the Lua layer, the CLI's parts, the docs,
# the emulator in-process on its manual clock (spec/emulator_harness.lua); they start no
# server. Every other spec file is an integration spec: it starts the emulator (or a small
# loopback server of spec/) and runs the programs. `make test` runs both sets in one busted
# run, so the suite still ends with one line `N passed, N failed, N skipped`.
UNIT_SPECS = spec/docs_spec.lua spec/cli_parts_spec.lua spec/emulator_docs_spec.lua \
             spec/emulator_http_spec.lua spec/emulator_observed_spec.lua spec/fuzz_spec.lua
INTEGRATION_SPECS = $(filter-out $(UNIT_SPECS),$(sort $(wildcard spec/*_spec.lua)))

test: deps all build/luajit/kling/core.so
	$(BUSTED) $(UNIT_SPECS) $(INTEGRATION_SPECS)

test-unit: deps all
	$(BUSTED) $(UNIT_SPECS)

test-integration: deps all build/luajit/kling/core.so
	$(BUSTED) $(INTEGRATION_SPECS)

demo: deps all
	@sh examples/demo.sh

# The suite with the sanitized core: lua5.4 is not built with ASan, so its
# runtime is preloaded; the processes the specs start do not get it
# (spec/sanitized_children.lua). Any ASan, UBSan or leak report fails the run.
check: deps all build-check/kling/core.so build/luajit/kling/core.so
	KLING_CPATH=build-check/?.so KLING_EXPECT_SANITIZED=1 \
	KLING_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	sh -c 'LD_PRELOAD="$$KLING_PRELOAD" exec $(BUSTED) --cpath="$$KLING_CPATH" --helper=spec/sanitized_children.lua'

install: all
	install -d $(DESTDIR)$(LUA_LIBDIR)/kling $(DESTDIR)$(LUA_SHAREDIR)/kling/schemas \
	  $(DESTDIR)$(LUA_SHAREDIR)/kling/cli $(DESTDIR)$(LUA_SHAREDIR)/kling/emulator $(DESTDIR)$(BINDIR)
	install -m 0755 build/kling/core.so $(DESTDIR)$(LUA_LIBDIR)/kling/core.so
	install -m 0644 lua/kling.lua $(DESTDIR)$(LUA_SHAREDIR)/kling.lua
	install -m 0644 $(LUA_MODULES) $(DESTDIR)$(LUA_SHAREDIR)/kling/
	install -m 0644 lua/kling/schemas/*.json lua/kling/schemas/*.lua $(DESTDIR)$(LUA_SHAREDIR)/kling/schemas/
	install -m 0644 lua/kling/cli/*.lua $(DESTDIR)$(LUA_SHAREDIR)/kling/cli/
	install -m 0644 lua/kling/emulator/*.lua $(DESTDIR)$(LUA_SHAREDIR)/kling/emulator/
	install -m 0755 bin/kling $(DESTDIR)$(BINDIR)/kling
	install -m 0755 bin/kling-emulator $(DESTDIR)$(BINDIR)/kling-emulator
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 doc/kling.1 $(DESTDIR)$(MANDIR)/man1/kling.1
	$(KLING) completion bash > $(DESTDIR)$(BASHCOMPDIR)/kling
	$(KLING) completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_kling
	$(KLING) completion fish > $(DESTDIR)$(FISHCOMPDIR)/kling.fish

uninstall:
	rm -rf $(DESTDIR)$(LUA_LIBDIR)/kling $(DESTDIR)$(LUA_SHAREDIR)/kling $(DESTDIR)$(LUA_SHAREDIR)/kling.lua \
	       $(DESTDIR)$(BINDIR)/kling-emulator $(DESTDIR)$(BINDIR)/kling $(DESTDIR)$(MANDIR)/man1/kling.1 \
	       $(DESTDIR)$(BASHCOMPDIR)/kling $(DESTDIR)$(ZSHCOMPDIR)/_kling $(DESTDIR)$(FISHCOMPDIR)/kling.fish

# The tool from this checkout (its modules and core), for what make writes with it.
KLING = env -u LUA_PATH -u LUA_CPATH $(LUA) bin/kling

# The manual page, written from the command line's own definitions (kling.cli.manpage);
# spec/cli_install_spec.lua fails when doc/kling.1 is not what they write.
man: all
	$(LUA) -e 'package.path = "lua/?.lua;" .. package.path; package.cpath = "build/?.so;" .. package.cpath' \
	  -e 'io.write(require("kling.cli.manpage").render())' > doc/kling.1

# The shipped schemas as Lua modules (lua/kling/schemas/*.lua, each returning
# its .json's text), so a host that loads kling through package.preload or a
# bundle gets them without a search of package.path for a data file;
# spec/portability_spec.lua fails when one differs from its .json.
SCHEMA_JSON = $(wildcard lua/kling/schemas/*.json)
schemas: $(SCHEMA_JSON:.json=.lua)
lua/kling/schemas/%.lua: lua/kling/schemas/%.json
	$(LUA) -e 'local src = "$<"; local f = assert(io.open(src, "rb")); local t = f:read("*a"); f:close(); local eq = ""; while t:find("]" .. eq .. "]", 1, true) do eq = eq .. "=" end; io.write("-- Generated by `make schemas` from ", src:match("[^/]*$$"), ": do not edit.\n", "return [", eq, "[\n", t, "]", eq, "]\n")' > $@

# Build and install with luarocks into ~/.luarocks (Debian keeps curl.h in the multiarch dir).
rock:
	luarocks --lua-version=5.4 make --local --deps-mode=none kling-scm-1.rockspec \
	  CURL_INCDIR=$$($(PKG_CONFIG) --variable=includedir libcurl)/$$($(CC) -print-multiarch)

clean:
	rm -rf build build-check build-curl768

# ---------------------------------------------------------------------------
# Fuzzing and valgrind (fuzz/).
#
#   make fuzz-build   build-fuzz/schema_fuzz, answer_fuzz and jsonw_fuzz: libFuzzer
#                     targets (clang, ASan + UBSan) linking src/*.c with -DKLING_FUZZ
#   make fuzz         run each for FUZZ_SECONDS (default 60) on a copy of its seed
#                     corpus (fuzz/corpus/<name>) in build-fuzz/corpus/; fails on any
#                     crash, leak, sanitizer report, timeout or memory blow-up
#   make valgrind     the C-heavy specs under valgrind's memcheck: any memory error
#                     or definite leak fails (children of the specs are not traced)
#
# libFuzzer and the sanitizer runtimes of Debian 12's clang 14 come in the
# package libclang-rt-14-dev.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_RSS_MB  ?= 2048
FUZZ_TIMEOUT ?= 10
FUZZ_DIR      = build-fuzz
FUZZ_TARGETS  = schema answer jsonw
FUZZ_CMOD    ?= $(shell $(PKG_CONFIG) --variable=INSTALL_CMOD lua5.4 2>/dev/null)
FUZZ_LMOD    ?= $(shell $(PKG_CONFIG) --variable=INSTALL_LMOD lua5.4 2>/dev/null)
FUZZ_CFLAGS   = -std=c99 -Wall -Wextra -pedantic -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -DKLING_FUZZ \
                -DKLING_FUZZ_ROOT='"$(CURDIR)"' -DKLING_FUZZ_CPATH='"$(FUZZ_CMOD)/?.so"' \
                -DKLING_FUZZ_LPATH='"$(FUZZ_LMOD)/?.lua"'
FUZZ_LIBS     = $(shell $(PKG_CONFIG) --libs lua5.4 libcurl 2>/dev/null) -lm
FUZZ_DEB_PACKAGES = clang libclang-rt-14-dev valgrind

VALGRIND       ?= valgrind
VALGRIND_SPECS  = spec/core_spec.lua spec/validation_spec.lua spec/engine_spec.lua spec/journal_spec.lua spec/wire_spec.lua \
                  spec/download_spec.lua
# A CPU-time budget, not a memory property: valgrind's slowdown alone breaks it.
VALGRIND_SKIP   = waits in the kernel: little CPU
VALGRIND_FLAGS  = --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
                  --trace-children=no --num-callers=40 --suppressions=$(CURDIR)/fuzz/valgrind.supp

.PHONY: fuzz fuzz-build fuzz-deps valgrind

fuzz-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(FUZZ_DEB_PACKAGES)"

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%_fuzz)

$(FUZZ_DIR)/%_fuzz: fuzz/%_fuzz.c fuzz/fuzz_common.h fuzz/fuzz_harness.h $(SRC) $(HDR) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(SRC) $(FUZZ_LIBS)

# Each target gets its seeds copied into build-fuzz/corpus/<name> (what earlier
# runs found there is kept); crashes are written to build-fuzz/<name>-crash-*.
fuzz: fuzz-build
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t && cp fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus/$$t/ || exit 1; \
	  echo "== $${t}_fuzz: $(FUZZ_SECONDS) s"; \
	  $(FUZZ_DIR)/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=$(FUZZ_RSS_MB) \
	    -timeout=$(FUZZ_TIMEOUT) -dict=fuzz/$$t.dict -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/$$t- $(FUZZ_DIR)/corpus/$$t || failed="$$failed $${t}_fuzz"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (inputs in $(FUZZ_DIR)/)"; exit 1; fi; \
	echo "fuzz: no crash in $(FUZZ_TARGETS:%=%_fuzz)"

valgrind: fuzz-deps all
	KLING_NO_SPARE=1 $(VALGRIND) $(VALGRIND_FLAGS) $(LUA) /usr/bin/busted --ignore-lua \
	  --filter-out="$(VALGRIND_SKIP)" $(VALGRIND_SPECS)
