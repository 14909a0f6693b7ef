/*
 * lbind.c - the Lua binding's shared helpers (see lbind.h).
 */
#include "lbind.h"

#include <string.h>

#include "defaults.h"

void kl_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  kl_class_up(L, name, meta, methods, 0);
}

void kl_class_up(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods, int nup) {
  int first = lua_gettop(L) - nup + 1;
  luaL_newmetatable(L, name);
  for (int i = 0; i < nup; i++) lua_pushvalue(L, first + i);
  luaL_setfuncs(L, meta, nup);
  lua_newtable(L);
  for (int i = 0; i < nup; i++) lua_pushvalue(L, first + i);
  luaL_setfuncs(L, methods, nup);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1 + nup);
}

const char *kl_opt_string(lua_State *L, int t, const char *k) {
  const char *s = NULL;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    size_t n;
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", k);
    s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n) luaL_error(L, "option '%s' must not hold a NUL byte", k);
  }
  lua_pop(L, 1); /* the string stays alive: it is referenced by the table */
  return s;
}

double kl_opt_number(lua_State *L, int t, const char *k, double dflt) {
  double v = dflt;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "option '%s' must be a number", k);
  }
  lua_pop(L, 1);
  return v;
}

int kl_opt_bool(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

long kl_seconds_to_ms(lua_State *L, const char *k, double s) {
  if (!(s >= 0) || s > KL_SECONDS_MAX) luaL_error(L, "option '%s' must be between 0 and 1e7 seconds", k);
  return (long)(s * 1000.0 + 0.5);
}

void kl_set_string(lua_State *L, const char *k, const char *v) {
  if (v && v[0]) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
  }
}
