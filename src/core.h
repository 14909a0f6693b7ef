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
} lengine;

/* The open engine at stack index i (raises otherwise). */
lengine *kcore_check_engine(lua_State *L, int i);

/* Makes the metatable `name` of a userdata class: the metamethods in meta,
 * the methods in methods as its __index. Leaves the stack as it was. */
void kcore_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

/* Pushes the table x:result() returns for a finished transfer. */
void kcore_push_result(lua_State *L, kxfer *x);

#endif
