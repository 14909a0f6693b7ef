/*
 * schema.h - input schemas compiled into C structures, and the validator
 * that checks a Lua table against one and builds the input to send.
 *
 * A schema arrives as a Lua table decoded by lua-cjson (nobody here parses
 * JSON). It is compiled once into a tree of knode; validation walks the
 * input and the tree together, reports every problem (path and message) in
 * schema order, and builds a normalised copy (integral floats as integers,
 * a total filled in from its parts, empty arrays marked as arrays).
 */
#ifndef KLING_SCHEMA_H
#define KLING_SCHEMA_H

#include <lua.h>

/* Registers core.compile_schema and the schema userdata class into the
 * module table on top of the stack. */
void kschema_open(lua_State *L);

/* Registry key of the metatable that marks a Lua table as a JSON array. */
#define KLING_ARRAY_MT "kling.array"

#endif
