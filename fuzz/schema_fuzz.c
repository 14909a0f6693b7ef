/*
 * schema_fuzz.c - libFuzzer target: input validation against the shipped
 * Kling 3.0 Pro schema.
 *
 * Once per process (fuzz_harness.h): a Lua state with kling.core linked in
 * and fuzz/schema_harness.lua loaded; the schema itself is compiled by
 * kling.models on first use, from lua/kling/schemas/ (JSON) with the
 * annotations the Lua layer adds (x-order, x-sum-of), exactly as a submit
 * gets it. For each input the harness decodes the bytes as JSON with
 * lua-cjson (skipping what is not JSON) and validates the value and a few
 * variants JSON cannot express, checking every answer against its own model
 * of the rules. A Lua error out of the harness (an oracle that disagrees,
 * or validation raising) aborts: libFuzzer keeps the input.
 *
 *   make fuzz-build && build-fuzz/schema_fuzz fuzz/corpus/schema
 */
#define FUZZ_HARNESS "schema_harness"
#define FUZZ_TARGET "schema_fuzz"
#include "fuzz_harness.h"
