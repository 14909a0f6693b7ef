/*
 * lua_poller.c - the poller's methods on the engine userdata (poller.h):
 *
 *   eng:watch{ status_url=, result_url=, status=, delay= } -> handle
 *   eng:unwatch(handle)
 *   eng:answers() -> { answer, ... } | nil: every finished poll since the last call (nil: none),
 *       each the table x:result() gives for it, with handle=, route=
 *       ("status" or "result") and, when the request could not even start,
 *       ended = true (the wait has ended: no observation follows)
 *   eng:observe(handle, what [, a, b]) -> true when the wait has ended (the
 *       answer is its outcome), false when polling goes on. what: "status"
 *       (a = the status word, b = queue_position or nil), "retry" (a = the
 *       answer's Retry-After header or nil), "unusable", "end"
 *   eng:set_poll{ initial=, min=, max=, near=, factor=, jitter= }
 *   eng:poll_stats() -> { watched=, polls=, fetches=, retries=, run_min=, queue_rate= }
 *
 * The Lua layer decodes each answer and reads it by the protocol (client.lua,
 * Client:_read_poll); the poller schedules from what it is told.
 */
#include <string.h>

#include "defaults.h"
#include "lua_engine.h"
#include "protocol.h"

static const char *field_string(lua_State *L, int t, const char *k, int required) {
  lua_getfield(L, t, k);
  size_t n = 0;
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  lua_pop(L, 1);
  if (required && s == NULL) luaL_error(L, "field '%s' must be a string", k);
  if (s && strlen(s) != n) luaL_error(L, "field '%s' must not hold a NUL byte", k);
  return s;
}

/* eng:watch{ status_url=, result_url=, delay=, status=, expect= } -> handle
 * expect: seconds before which the job is not expected to end (kpoller_expect) */
static int l_watch(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *su = field_string(L, 2, "status_url", 1);
  const char *ru = field_string(L, 2, "result_url", 1);
  size_t stlen = 0;
  lua_getfield(L, 2, "status");
  const char *st = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &stlen) : NULL;
  lua_pop(L, 1); /* the string stays alive: the table holds it */
  lua_getfield(L, 2, "delay");
  double delay = luaL_optnumber(L, -1, le->p.o.initial);
  lua_pop(L, 1);
  lua_getfield(L, 2, "expect");
  double expect = luaL_optnumber(L, -1, 0);
  lua_pop(L, 1);
  int handle = kpoller_watch(&le->p, &le->e, su, ru, st, stlen, delay);
  if (handle < 0) return luaL_error(L, "out of memory");
  if (expect > 0) kpoller_expect(&le->p, handle, expect);
  lua_pushinteger(L, handle);
  return 1;
}

/* eng:unwatch(handle): stops polling that job (idempotent) */
static int l_unwatch(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  lua_Integer h = luaL_checkinteger(L, 2);
  if (h >= 1 && h <= le->p.nslots) kpoller_unwatch(&le->p, &le->e, (int)h);
  return 0;
}

/* eng:answers() -> { answer, ... } | nil (nil: no answer waits; no table
 * made for nothing) */
static int l_answers(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  kpoll_answer a;
  int n = 0;
  while (kpoller_next_answer(&le->p, &a)) {
    if (n == 0) lua_newtable(L);
    if (a.x) {
      kl_push_result(L, a.x);
    } else { /* the request could not start: nothing was sent, and the wait has ended */
      lua_createtable(L, 0, 4);
      lua_pushinteger(L, 0);
      lua_setfield(L, -2, "status");
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "network");
      lua_setfield(L, -2, "kind");
      lua_pushstring(L, a.error);
      lua_setfield(L, -2, "message");
      lua_pushboolean(L, 0);
      lua_setfield(L, -2, "sent");
      lua_setfield(L, -2, "error");
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "ended");
    }
    lua_pushinteger(L, a.handle);
    lua_setfield(L, -2, "handle");
    lua_pushstring(L, KPROTO_ROUTES[a.route].name);
    lua_setfield(L, -2, "route");
    lua_rawseti(L, -2, ++n);
  }
  return n > 0 ? 1 : 0;
}

/* eng:observe(handle, what [, a, b]) -> true | false */
static int l_observe(lua_State *L) {
  static const char *const whats[] = { "status", "retry", "unusable", "end", NULL };
  lengine *le = kl_check_engine(L, 1);
  lua_Integer h = luaL_checkinteger(L, 2);
  kpoll_obs o;
  memset(&o, 0, sizeof o);
  o.qpos = -1;
  o.retry_after = -1;
  switch (luaL_checkoption(L, 3, NULL, whats)) {
  case 0:
    o.kind = KOBS_STATUS;
    o.raw = luaL_checklstring(L, 4, &o.rawlen);
    if (!lua_isnoneornil(L, 5)) o.qpos = luaL_checkinteger(L, 5);
    break;
  case 1:
    o.kind = KOBS_RETRY;
    o.retry_after = kproto_retry_after(luaL_optstring(L, 4, NULL));
    break;
  case 2: o.kind = KOBS_UNUSABLE; break;
  default: o.kind = KOBS_END; break;
  }
  int rc = h >= 1 && h <= le->p.nslots ? kpoller_observe(&le->p, &le->e, (int)h, &o) : -1;
  if (rc < 0) return luaL_argerror(L, 2, "no answer of this watch awaits an observation");
  lua_pushboolean(L, rc == KPOLL_DONE);
  return 1;
}

static void poll_field(lua_State *L, int t, const char *k, double *v) {
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    int ok;
    double d = lua_tonumberx(L, -1, &ok);
    if (!ok || !(d >= 0) || d > KL_POLL_VALUE_MAX) luaL_error(L, "poll.%s must be a number between 0 and 1e6", k);
    *v = d;
  }
  lua_pop(L, 1);
}

/* eng:set_poll{ initial=, min=, max=, near=, factor=, jitter= }: the fields
 * given replace the schedule's (kpoller_check_opts says what is refused) */
static int l_set_poll(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  kpoll_opts o = le->p.o;
  poll_field(L, 2, "initial", &o.initial);
  poll_field(L, 2, "min", &o.min);
  poll_field(L, 2, "max", &o.max);
  poll_field(L, 2, "near", &o.near);
  poll_field(L, 2, "factor", &o.factor);
  poll_field(L, 2, "jitter", &o.jitter);
  char err[128];
  if (kpoller_check_opts(&o, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  le->p.o = o;
  return 0;
}

/* eng:poll_stats() -> { watched=, polls=, fetches=, retries=, run_min=, queue_rate= } */
static int l_poll_stats(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  kpoller *p = &le->p;
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, kpoller_watched(p));
  lua_setfield(L, -2, "watched");
  lua_pushinteger(L, (lua_Integer)p->polls);
  lua_setfield(L, -2, "polls");
  lua_pushinteger(L, (lua_Integer)p->fetches);
  lua_setfield(L, -2, "fetches");
  lua_pushinteger(L, (lua_Integer)p->retries);
  lua_setfield(L, -2, "retries");
  if (p->run_min >= 0) {
    lua_pushnumber(L, p->run_min);
    lua_setfield(L, -2, "run_min");
  }
  if (p->queue_rate >= 0) {
    lua_pushnumber(L, p->queue_rate);
    lua_setfield(L, -2, "queue_rate");
  }
  return 1;
}

void kl_open_poller(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "watch", l_watch },       { "unwatch", l_unwatch },       { "answers", l_answers },
    { "observe", l_observe },   { "set_poll", l_set_poll },     { "poll_stats", l_poll_stats },
    { NULL, NULL },
  };
  luaL_getmetatable(L, ENGINE_MT); /* the poller's methods join the engine's */
  lua_getfield(L, -1, "__index");
  kl_class_upvalues(L);
  luaL_setfuncs(L, methods, 2);
  lua_pop(L, 2);
}
