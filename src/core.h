/*
 * core.h - what the pieces of the Lua binding (core.c, poller.c) share:
 * the engine userdata and the table a finished transfer is read into.
 */
#ifndef KLING_CORE_H
#define KLING_CORE_H

#include <lua.h>

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

/* Pushes the table x:result() returns for a finished transfer. */
void kcore_push_result(lua_State *L, kxfer *x);

#endif
