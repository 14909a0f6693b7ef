/*
 * core.h - what the pieces of the Lua binding (core.c, poller.c) share:
 * the engine userdata and the table a finished transfer is read into.
 */
#ifndef KLING_CORE_H
#define KLING_CORE_H

#include <lua.h>
#include <lauxlib.h>

#include "engine.h"
#include "poller.h"

#define ENGINE_MT "kling.core.engine"

typedef struct lengine {
  kengine e;
  kpoller p;
  int open;
  lua_State *L;            /* the state driving the engine, during eng:step only */
} lengine;

/* The open engine at stack index i (raises otherwise). */
lengine *kcore_check_engine(lua_State *L, int i);

/* Makes the metatable `name` of a userdata class: the metamethods in meta,
 * the methods in methods as its __index. Leaves the stack as it was. */
void kcore_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

/* RunComfy's error_code of the value at index idx, by the one rule (see
 * kanswer_kind in engine.c): a number without a fraction from 0 to 2^53, or a
 * string of 1 to 15 ASCII digits. Returns 1 and sets *code, or 0 when the
 * value is no error code (nil, null, 1.5, "12abc", "", a boolean, a table). */
int kcore_error_code(lua_State *L, int idx, long long *code);

/* Pushes the table x:result() returns for a finished transfer. */
void kcore_push_result(lua_State *L, kxfer *x);

#endif
