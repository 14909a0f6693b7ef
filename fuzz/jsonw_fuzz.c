/*
 * jsonw_fuzz.c - libFuzzer target: the JSON writer (src/lua_jsonw.c).
 *
 * Once per process (fuzz_harness.h): a Lua state with kling.core linked in
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
#define FUZZ_HARNESS "jsonw_harness"
#define FUZZ_TARGET "jsonw_fuzz"
#include "fuzz_harness.h"
