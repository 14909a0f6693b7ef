/*
 * fuzz_common.h - what the libFuzzer targets of kling share: one Lua state
 * per process with the standard libraries, Debian's lua-cjson reachable
 * through package.cpath, the repository's Lua layer (lua/), fuzz/ and
 * Debian's pure-Lua modules (dkjson) through package.path, and the C core
 * linked into the target itself,
 * registered as package.loaded["kling.core"] (so no core.so is ever loaded).
 *
 * Paths come from the build (make fuzz-build):
 *   KLING_FUZZ_ROOT   the repository root (absolute)
 *   KLING_FUZZ_CPATH  where lua-cjson lives, as a package.cpath template
 *   KLING_FUZZ_LPATH  where dkjson lives, as a package.path template
 * and can be overridden at run time with the environment variables of the
 * same names.
 */
#ifndef KLING_FUZZ_COMMON_H
#define KLING_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifndef KLING_FUZZ_ROOT
#define KLING_FUZZ_ROOT "."
#endif
#ifndef KLING_FUZZ_CPATH
#define KLING_FUZZ_CPATH "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so"
#endif
#ifndef KLING_FUZZ_LPATH
#define KLING_FUZZ_LPATH "/usr/share/lua/5.4/?.lua"
#endif

int luaopen_kling_core(lua_State *L);

/* Reports a broken invariant and aborts, so that libFuzzer keeps the input. */
#define FUZZ_CHECK(cond, ...)                                         \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "\n*** fuzz invariant broken (%s:%d): ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, "\n");                                          \
      abort();                                                        \
    }                                                                 \
  } while (0)

static const char *fuzz_setting(const char *name, const char *dflt) {
  const char *v = getenv(name);
  return v && v[0] ? v : dflt;
}

/* A new state as described above, with the kling.core module table left on
 * top of the stack. Aborts when anything is missing: a fuzz run without its
 * setup would only test the error path. */
static lua_State *fuzz_new_state(void) {
  lua_State *L = luaL_newstate();
  FUZZ_CHECK(L != NULL, "luaL_newstate failed");
  luaL_openlibs(L);
  const char *root = fuzz_setting("KLING_FUZZ_ROOT", KLING_FUZZ_ROOT);
  const char *cpath = fuzz_setting("KLING_FUZZ_CPATH", KLING_FUZZ_CPATH);
  const char *lpath = fuzz_setting("KLING_FUZZ_LPATH", KLING_FUZZ_LPATH);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/fuzz/?.lua;%s", root, root, root, lpath);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  luaL_requiref(L, "kling.core", luaopen_kling_core, 0);
  /* lua-cjson must load: every target needs it */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "cannot load lua-cjson (KLING_FUZZ_CPATH=%s): %s\n", cpath, lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
  return L;
}

#endif
