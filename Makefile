# kling: build, test and install the Lua 5.4 module (C core kling.core + Lua layer).
#
#   make            build build/kling/core.so
#   make test       install what is missing (Debian), build, run the whole suite
#   make demo       install, build, start the emulator, generate a clip, download it
#   make check      the suite again with the C core under ASan + UBSan
#   make install    PREFIX=/usr/local DESTDIR= : module paths of Lua 5.4
#   make deps       install the Debian packages the project needs, when missing

LUA          ?= lua5.4
PKG_CONFIG   ?= pkg-config
CC           ?= cc
PREFIX       ?= /usr/local
DESTDIR      ?=
LUA_LIBDIR   ?= $(PREFIX)/lib/lua/5.4
LUA_SHAREDIR ?= $(PREFIX)/share/lua/5.4
BINDIR       ?= $(PREFIX)/bin

CFLAGS       ?= -O2 -g
WARN          = -std=c99 -Wall -Wextra -Werror -pedantic
PKG_CFLAGS    = $(shell $(PKG_CONFIG) --cflags lua5.4 libcurl 2>/dev/null)
PKG_LIBS      = $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null)
SAN           = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

SRC  = src/buf.c src/http.c src/engine.c src/poller.c src/schema.c src/journal.c src/core.c
HDR  = src/buf.h src/http.h src/engine.h src/poller.h src/schema.h src/journal.h src/core.h
LUA_MODULES = $(wildcard lua/kling/*.lua)

DEB_PACKAGES = lua5.4 liblua5.4-dev libcurl4-openssl-dev pkg-config gcc make curl \
               lua-cjson lua-busted lua-cqueues lua-luv luarocks ca-certificates \
               nginx-light openssl
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

BUSTED = $(LUA) /usr/bin/busted

.PHONY: all deps test demo check install uninstall clean rock

all: build/kling/core.so

build/kling/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -fPIC -shared $(PKG_CFLAGS) -o $@ $(SRC) $(PKG_LIBS)

build-check/kling/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(SAN) -fPIC -shared $(PKG_CFLAGS) -o $@ $(SRC) $(PKG_LIBS)

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: deps all
	$(BUSTED)

demo: deps all
	@sh examples/demo.sh

# The suite with the sanitized core: lua5.4 is not built with ASan, so its
# runtime is preloaded; the processes the specs start do not get it
# (spec/sanitized_children.lua). Any ASan, UBSan or leak report fails the run.
check: deps all build-check/kling/core.so
	KLING_CPATH=build-check/?.so KLING_EXPECT_SANITIZED=1 \
	KLING_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	sh -c 'LD_PRELOAD="$$KLING_PRELOAD" exec $(BUSTED) --cpath="$$KLING_CPATH" --helper=spec/sanitized_children.lua'

install: all
	install -d $(DESTDIR)$(LUA_LIBDIR)/kling $(DESTDIR)$(LUA_SHAREDIR)/kling/schemas $(DESTDIR)$(BINDIR)
	install -m 0755 build/kling/core.so $(DESTDIR)$(LUA_LIBDIR)/kling/core.so
	install -m 0644 lua/kling.lua $(DESTDIR)$(LUA_SHAREDIR)/kling.lua
	install -m 0644 $(LUA_MODULES) $(DESTDIR)$(LUA_SHAREDIR)/kling/
	install -m 0644 lua/kling/schemas/*.json $(DESTDIR)$(LUA_SHAREDIR)/kling/schemas/
	install -m 0755 bin/kling-emulator $(DESTDIR)$(BINDIR)/kling-emulator

uninstall:
	rm -rf $(DESTDIR)$(LUA_LIBDIR)/kling $(DESTDIR)$(LUA_SHAREDIR)/kling $(DESTDIR)$(LUA_SHAREDIR)/kling.lua \
	       $(DESTDIR)$(BINDIR)/kling-emulator

# Build and install with luarocks into ~/.luarocks (Debian keeps curl.h in the multiarch dir).
rock:
	luarocks --lua-version=5.4 make --local --deps-mode=none kling-scm-1.rockspec \
	  CURL_INCDIR=$$($(PKG_CONFIG) --variable=includedir libcurl)/$$($(CC) -print-multiarch)

clean:
	rm -rf build build-check
