/*
 * fuzz_harness.h - the whole C half of a libFuzzer target whose work is done
 * by a Lua harness (fuzz/NAME_harness.lua returning run(bytes, seed)):
 * schema_fuzz.c and jsonw_fuzz.c. Once per process a Lua state with
 * kling.core linked in (fuzz_common.h) and the harness loaded; for each
 * input, run(bytes, seed) under a traceback, with seed the FNV-1a hash of the
 * bytes (the harness's choice of mutations, so that an input replays the same
 * way on every run and in spec/fuzz_spec.lua). A Lua error out of the harness
 * (an oracle that disagrees, or the code under test raising) aborts: libFuzzer
 * keeps the input.
 *
 * A target defines FUZZ_HARNESS (the module, e.g. "jsonw_harness") and
 * FUZZ_TARGET (its name in messages) and includes this file.
 */
#ifndef KLING_FUZZ_HARNESS_H
#define KLING_FUZZ_HARNESS_H

#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

#if !defined(FUZZ_HARNESS) || !defined(FUZZ_TARGET)
#error "define FUZZ_HARNESS and FUZZ_TARGET before including fuzz_harness.h"
#endif

static lua_State *L;
static int run_ref = LUA_NOREF;
static int traceback_ref = LUA_NOREF;

static void setup(void) {
  L = fuzz_new_state();
  lua_pop(L, 1); /* kling.core */
  lua_getglobal(L, "require");
  lua_pushliteral(L, FUZZ_HARNESS);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TFUNCTION) {
    fprintf(stderr, "cannot load fuzz/" FUZZ_HARNESS ".lua: %s\n", lua_tostring(L, -1));
    abort();
  }
  run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setup();
  return 0;
}

/* FNV-1a of the input: the harness's choice of mutations, so that an input
 * replays the same way on every run. */
static lua_Integer seed_of(const uint8_t *data, size_t size) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 16777619u;
  return (lua_Integer)h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, traceback_ref); /* where a failure happened */
  lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
  lua_pushlstring(L, (const char *)data, size);
  lua_pushinteger(L, seed_of(data, size));
  if (lua_pcall(L, 2, 0, top + 1) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "\n*** " FUZZ_TARGET ": %s\n", msg ? msg : "(an error that is not a string)");
    abort();
  }
  lua_pop(L, 1); /* the traceback function */
  /* A full collection after every input: libFuzzer then sees as many frees
   * as mallocs and goes on checking for leaks after every input (Lua's
   * garbage would otherwise look like a leak, and it would stop trying). */
  lua_gc(L, LUA_GCCOLLECT);
  FUZZ_CHECK(lua_gettop(L) == top, "Lua stack grew from %d to %d", top, lua_gettop(L));
  return 0;
}

#endif
