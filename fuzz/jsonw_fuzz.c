/*
 * jsonw_fuzz.c - libFuzzer target: the JSON writer (src/lua_jsonw.c).
 *
 * Once per process: a Lua state with kling.core linked in (fuzz_common.h)
 * and fuzz/jsonw_harness.lua loaded. For each input the harness reads the
 * bytes as JSON (kling.json.decode_input) and writes the value again, and
 * also runs them as a little program that builds a Lua value of any shape;
 * every answer of the writer (in its three modes) is checked against the
 * harness's own model of the rules, and what it writes is read back with
 * lua-cjson and dkjson. A Lua error out of the harness (an oracle that
 * disagrees, or the writer raising) aborts: libFuzzer keeps the input.
 *
 *   make fuzz-build && build-fuzz/jsonw_fuzz fuzz/corpus/jsonw
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

static lua_State *L;
static int run_ref = LUA_NOREF;
static int traceback_ref = LUA_NOREF;

static void setup(void) {
  L = fuzz_new_state();
  lua_pop(L, 1); /* kling.core */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "jsonw_harness");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TFUNCTION) {
    fprintf(stderr, "cannot load fuzz/jsonw_harness.lua: %s\n", lua_tostring(L, -1));
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
    fprintf(stderr, "\n*** jsonw_fuzz: %s\n", msg ? msg : "(an error that is not a string)");
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
