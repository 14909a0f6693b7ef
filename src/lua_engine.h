/*
 * lua_engine.h - the engine userdata, shared by the two files that bind it
 * (lua_engine.c: requests and stepping; lua_poller.c: watched jobs).
 */
#ifndef KLING_LUA_ENGINE_H
#define KLING_LUA_ENGINE_H

#include "engine.h"
#include "lbind.h"
#include "poller.h"

#define ENGINE_MT "kling.core.engine"

typedef struct lengine {
  kengine e;
  kpoller p;
  int open;
} lengine;

/* The open engine at stack index i (raises otherwise). Call it only from a
 * function that holds kl_class_upvalues' upvalues (1 and 2), or no upvalues
 * at all (then it checks by the class name): it reads upvalue 1 as the
 * engine's metatable. */
lengine *kl_check_engine(lua_State *L, int i);

/* Pushes the upvalues every function of the engine's and the transfer's
 * classes holds (their metatables: the type check of kl_check_engine); the
 * poller's methods (lua_poller.c) hold them too. */
void kl_class_upvalues(lua_State *L);

/* Pushes the table x:result() gives for a finished transfer. */
void kl_push_result(lua_State *L, kxfer *x);

#endif
