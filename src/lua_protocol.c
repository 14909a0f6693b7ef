/*
 * lua_protocol.c - kling.core.protocol: the protocol statement of
 * protocol.c, for the Lua layer (lua/kling/protocol.lua is its face).
 *
 *   STATUS[word] -> the status kling reports; TERMINAL[status] -> true
 *   OUTCOME[word] -> "cancelled" | "not_cancellable" | "requested"
 *   FIELDS -> { name, ... }: the answer fields kling reads
 *   ROUTES[name] -> { method =, path = } (path with {model_id} or {request_id})
 *   UNUSABLE_TRIES, ID_MAX, ID_RULE, ID_PATTERN, MODEL_ID_MAX
 *   url(base, route, arg) -> url | nil, message
 *   url_under(url, base) -> boolean (a URL the service gave that kling may use)
 *   valid_id(v), valid_model_id(v) -> boolean
 *   error_code(v) -> integer | nil
 *   answer_kind(status [, code]) -> kind, retryable | nil (a success)
 *   transient(curl_code [, proxy_status]) -> retryable, never_sent
 *   queue_position(v) -> integer | nil
 *   usable_status(v) -> boolean
 *   retry_after(s) -> seconds | nil
 *   not_ready(route, code) -> boolean (400005 on the result route); NOT_READY_CODE
 *   cancel_means(status, outcome) -> "cancelled" | "requested" | "not_cancellable" | nil
 */
#include <string.h>

#include "lbind.h"
#include "protocol.h"

/* core.protocol.error_code(v) -> integer | nil */
static int l_error_code(lua_State *L) {
  long long code;
  int ok = 0;
  luaL_checkany(L, 1);
  if (lua_type(L, 1) == LUA_TNUMBER) {
    ok = lua_isinteger(L, 1) ? kproto_code_integer((long long)lua_tointeger(L, 1), &code)
                             : kproto_code_number(lua_tonumber(L, 1), &code);
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    ok = kproto_code_string(s, n, &code);
  }
  if (ok) lua_pushinteger(L, (lua_Integer)code);
  else lua_pushnil(L);
  return 1;
}

/* core.protocol.answer_kind(status [, code]) -> kind, retryable | nil */
static int l_answer_kind(lua_State *L) {
  lua_Integer status = luaL_checkinteger(L, 1);
  int has_code = !lua_isnoneornil(L, 2);
  long long code = has_code ? (long long)luaL_checkinteger(L, 2) : 0;
  int retryable;
  const char *kind = kproto_answer_kind((long)status, has_code, code, &retryable);
  if (kind == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, kind);
  lua_pushboolean(L, retryable);
  return 2;
}

/* core.protocol.transient(curl_code [, proxy_status]) -> retryable, never_sent */
static int l_transient(lua_State *L) {
  lua_Integer code = luaL_checkinteger(L, 1);
  lua_Integer proxy = luaL_optinteger(L, 2, 0);
  int never;
  lua_pushboolean(L, kproto_transient((CURLcode)code, (long)proxy, &never));
  lua_pushboolean(L, never);
  return 2;
}

static int l_valid_id(lua_State *L) {
  size_t n;
  const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  lua_pushboolean(L, s != NULL && kproto_valid_id(s, n));
  return 1;
}

static int l_valid_model_id(lua_State *L) {
  size_t n;
  const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  lua_pushboolean(L, s != NULL && kproto_valid_model_id(s, n));
  return 1;
}

/* core.protocol.url_under(url, base) -> true when url is a string that may
 * stand for a route of base (kproto_url_under), else false */
static int l_url_under(lua_State *L) {
  size_t n, bn;
  const char *base = luaL_checklstring(L, 2, &bn);
  const char *url = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  lua_pushboolean(L, url != NULL && kproto_url_under(url, n, base, bn));
  return 1;
}

/* core.protocol.url(base, route, arg) -> url | nil, message */
static int l_url(lua_State *L) {
  const char *base = luaL_checkstring(L, 1);
  int r = kproto_route_named(luaL_checkstring(L, 2));
  if (r < 0) return luaL_argerror(L, 2, "no such route");
  size_t n = 0;
  const char *arg = lua_type(L, 3) == LUA_TSTRING ? lua_tolstring(L, 3, &n) : "";
  size_t cap = strlen(base) + n + 32;
  char *out = lua_newuserdata(L, cap); /* scratch, collected (every Lua has it) */
  if (kproto_url(out, cap, base, (kproto_route)r, arg, n) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "invalid %s", KPROTO_ROUTES[r].no_arg ? "argument (the route takes none)"
                                     : KPROTO_ROUTES[r].arg_is_model ? "model id" : "request id");
    return 2;
  }
  lua_pushstring(L, out);
  return 1;
}

static int l_queue_position(lua_State *L) {
  long long pos;
  if (lua_type(L, 1) == LUA_TNUMBER && kproto_queue_position(lua_tonumber(L, 1), &pos))
    lua_pushinteger(L, (lua_Integer)pos);
  else
    lua_pushnil(L);
  return 1;
}

/* a usable status: a JSON string of at least one byte (protocol.h) */
static int l_usable_status(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TSTRING && lua_rawlen(L, 1) > 0);
  return 1;
}

static int l_retry_after(lua_State *L) {
  double s = kproto_retry_after(luaL_optstring(L, 1, NULL));
  if (s < 0) lua_pushnil(L);
  else lua_pushnumber(L, s);
  return 1;
}

/* core.protocol.not_ready(route, code) -> boolean (code: an integer or nil) */
static int l_not_ready(lua_State *L) {
  int r = kproto_route_named(luaL_checkstring(L, 1));
  if (r < 0) return luaL_argerror(L, 1, "no such route");
  int has_code = lua_isinteger(L, 2);
  lua_pushboolean(L, kproto_not_ready((kproto_route)r, has_code, has_code ? (long long)lua_tointeger(L, 2) : 0));
  return 1;
}

/* core.protocol.cancel_means(status, outcome) -> meaning | nil (a value that is
 * no string counts as absent) */
static int l_cancel_means(lua_State *L) {
  size_t sn = 0, on = 0;
  const char *st = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &sn) : NULL;
  const char *oc = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &on) : NULL;
  const char *m = kproto_cancel_means(st, sn, oc, on);
  if (m) lua_pushstring(L, m);
  else lua_pushnil(L);
  return 1;
}

void kl_open_protocol(lua_State *L) {
  static const luaL_Reg functions[] = {
    { "error_code", l_error_code }, { "answer_kind", l_answer_kind }, { "transient", l_transient },
    { "valid_id", l_valid_id },     { "valid_model_id", l_valid_model_id }, { "url", l_url },
    { "url_under", l_url_under },
    { "queue_position", l_queue_position }, { "usable_status", l_usable_status },
    { "retry_after", l_retry_after }, { "not_ready", l_not_ready },
    { "cancel_means", l_cancel_means }, { NULL, NULL },
  };
  luaL_setfuncs(L, functions, 0);
  lua_createtable(L, 0, (int)KPROTO_NWORDS);
  for (size_t i = 0; i < KPROTO_NWORDS; i++) {
    lua_pushstring(L, kproto_status_name(KPROTO_WORDS[i].status));
    lua_setfield(L, -2, KPROTO_WORDS[i].raw);
  }
  lua_setfield(L, -2, "STATUS");
  lua_newtable(L);
  for (int s = KS_UNKNOWN; s < KS_NSTATUS; s++)
    if (kproto_terminal((kproto_status)s)) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, kproto_status_name((kproto_status)s));
    }
  lua_setfield(L, -2, "TERMINAL");
  lua_newtable(L);
  for (size_t i = 0; i < KPROTO_NOUTCOMES; i++) {
    lua_pushstring(L, KPROTO_OUTCOMES[i].means);
    lua_setfield(L, -2, KPROTO_OUTCOMES[i].raw);
  }
  lua_setfield(L, -2, "OUTCOME");
  lua_createtable(L, (int)KPROTO_NFIELDS, 0);
  for (size_t i = 0; i < KPROTO_NFIELDS; i++) {
    lua_pushstring(L, KPROTO_FIELDS[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "FIELDS");
  lua_newtable(L);
  for (int r = 0; r < KP_NROUTES; r++) {
    const kproto_route_info *ri = &KPROTO_ROUTES[r];
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ri->method);
    lua_setfield(L, -2, "method");
    lua_pushfstring(L, "%s%s%s", ri->prefix, ri->no_arg ? "" : ri->arg_is_model ? "{model_id}" : "{request_id}", ri->suffix);
    lua_setfield(L, -2, "path");
    lua_setfield(L, -2, ri->name);
  }
  lua_setfield(L, -2, "ROUTES");
  lua_pushinteger(L, KPROTO_UNUSABLE_TRIES);
  lua_setfield(L, -2, "UNUSABLE_TRIES");
  lua_pushinteger(L, KPROTO_ID_MAX);
  lua_setfield(L, -2, "ID_MAX");
  lua_pushliteral(L, KPROTO_ID_RULE);
  lua_setfield(L, -2, "ID_RULE");
  lua_pushliteral(L, KPROTO_ID_PATTERN);
  lua_setfield(L, -2, "ID_PATTERN");
  lua_pushinteger(L, (lua_Integer)KPROTO_CODE_NOT_READY);
  lua_setfield(L, -2, "NOT_READY_CODE");
  lua_pushinteger(L, KPROTO_MODEL_ID_MAX);
  lua_setfield(L, -2, "MODEL_ID_MAX");
}
