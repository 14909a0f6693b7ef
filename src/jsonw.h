/*
 * jsonw.h - the JSON writer of kling: request bodies, journal lines and the
 * command-line tool's --json output, written from Lua values (no parser
 * here: decoding is lua-cjson's and dkjson's).
 */
#ifndef KLING_JSONW_H
#define KLING_JSONW_H

#include <lua.h>

/* Adds core.json_encoder to the module table on top of the stack. Needs the
 * array metatable (KLING_ARRAY_MT, made by kschema_open) to exist. */
void kjsonw_open(lua_State *L);

/* Deepest nesting of tables the writer accepts (the value itself is level 1). */
#define KJSONW_MAX_DEPTH 4096

#endif
