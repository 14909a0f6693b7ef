/*
 * compat.h - one source for five Luas: 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1.
 *
 * The binding is written against the Lua 5.4 API; this header gives the
 * older Luas what it uses, as static functions of each binding file (no
 * symbol is exported, nothing of the host's Lua state is changed: kling is
 * loaded into other people's processes and patches no global).
 *
 *   lua_newuserdatauv, lua_setiuservalue, lua_getiuservalue
 *       5.2 and 5.3 have one user value (5.2: a table only), 5.1 and
 *       LuaJIT an environment table: the value is kept at [1] of a table.
 *       Only user value 1 is used.
 *   lua_isinteger
 *       5.1, 5.2 and LuaJIT have no integer subtype: a number is an
 *       integer when it is integral and exactly representable
 *       (|n| < 2^53). An integer beyond 2^53 (a seed of 2^60 on LuaJIT)
 *       is a float there, and the JSON writer writes it as one.
 *   luaL_setfuncs, luaL_setmetatable, lua_tonumberx, lua_rawlen, luaL_len,
 *   luaL_checkversion, LUA_OK
 *       5.1 (LuaJIT 2.1 has the first three and LUA_OK).
 *   luaL_getmetatable returning the type
 *       5.1 and 5.2 return nothing: kl_getmetatable does.
 *
 * lua_Integer is ptrdiff_t on 5.1 and LuaJIT (64 bits on the platforms
 * kling supports), but a Lua number there is a double: values beyond 2^53
 * lose their low bits on the way into Lua.
 */
#ifndef KLING_COMPAT_H
#define KLING_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#include <math.h>

/* PUC Lua 5.1; LuaJIT 2.1 says 501 too, but has luaL_newlib (a macro). */
#if LUA_VERSION_NUM == 501 && !defined(luaL_newlib)
#define KLING_LUA51_PUC 1
#endif

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#endif

#ifdef KLING_LUA51_PUC
#define LUA_OK 0

static inline void kl_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name != NULL; l++) {
    for (int i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#define luaL_setfuncs kl_compat_setfuncs

static inline void kl_compat_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#define luaL_setmetatable kl_compat_setmetatable

static inline lua_Number kl_compat_tonumberx(lua_State *L, int i, int *isnum) {
  lua_Number n = lua_tonumber(L, i);
  if (isnum != NULL) *isnum = n != 0 || lua_isnumber(L, i);
  return n;
}
#define lua_tonumberx kl_compat_tonumberx
#endif

#if LUA_VERSION_NUM < 502
static inline lua_Integer kl_compat_len(lua_State *L, int i) {
  return (lua_Integer)lua_objlen(L, i); /* kling calls it on plain tables only */
}
#define luaL_len kl_compat_len
#define luaL_checkversion(L) ((void)(L))
#endif

#if LUA_VERSION_NUM < 503
static inline int kl_compat_isinteger(lua_State *L, int i) {
  if (lua_type(L, i) != LUA_TNUMBER) return 0;
  lua_Number n = lua_tonumber(L, i);
  return n == floor(n) && fabs(n) < 9007199254740992.0;
}
#define lua_isinteger kl_compat_isinteger
#endif

#if LUA_VERSION_NUM < 504
static inline void *kl_compat_newuserdatauv(lua_State *L, size_t size, int nuv) {
  (void)nuv;
  return lua_newuserdata(L, size);
}
#define lua_newuserdatauv kl_compat_newuserdatauv

/* Sets user value n (1) of the userdata at ud to the value on top (popped). */
static inline int kl_compat_setiuservalue(lua_State *L, int ud, int n) {
  (void)n;
#if LUA_VERSION_NUM >= 503
  lua_setuservalue(L, ud);
#else
  if (ud < 0) ud = lua_gettop(L) + ud + 1;
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
#if LUA_VERSION_NUM == 502
  lua_setuservalue(L, ud);
#else
  lua_setfenv(L, ud);
#endif
#endif
  return 1;
}
#define lua_setiuservalue kl_compat_setiuservalue

/* Pushes user value n (1) of the userdata at ud; returns its type. */
static inline int kl_compat_getiuservalue(lua_State *L, int ud, int n) {
  (void)n;
#if LUA_VERSION_NUM >= 503
  lua_getuservalue(L, ud);
#else
#if LUA_VERSION_NUM == 502
  lua_getuservalue(L, ud);
#else
  lua_getfenv(L, ud);
#endif
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
#endif
  return lua_type(L, -1);
}
#define lua_getiuservalue kl_compat_getiuservalue
#endif

/* luaL_getmetatable(L, name), returning the type of what it pushed. */
static inline int kl_getmetatable(lua_State *L, const char *name) {
  luaL_getmetatable(L, name);
  return lua_type(L, -1);
}

#endif
