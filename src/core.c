/*
 * core.c - the Lua module kling.core: the C engine as two userdata classes.
 *
 *   local core = require "kling.core"
 *   local eng = core.new{ base_url=, token=, timeout=, connect_timeout=,
 *                         ca_file=, allow_insecure_http=, max_body=,
 *                         max_connections=, user_agent= }
 *   local x, err, path = eng:request{ method=, url=, body=, download=, timeout=,
 *                               fresh=, max_bytes=, resume=, low_speed_limit=,
 *                               low_speed_time=, deadline= }
 *   eng:step(seconds)  -> transfers finished     eng:pending() -> in flight
 *   eng:scrub(s)       -> s with the token masked
 *   x:done(), x:result() -> table, x:progress() -> bytes, total, x:abort()
 *   core.now() -> monotonic seconds
 *   core.check_download_target(path) -> true | nil, message, bad_path
 *   core.json_encoder(mode [, null2]) -> encode: the JSON writer (jsonw.c)
 *   core.json_max_depth -> 4096: how deep the writer writes and answers are decoded
 *   core.unusable_tries -> 5: status answers without a usable status asked in a row
 *
 * Bad arguments raise; transport failures come back as data in x:result().
 * No Lua code ever runs inside a libcurl callback.
 */
#include <lua.h>
#include <lauxlib.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "http.h"
#include "journal.h"
#include "jsonw.h"
#include "schema.h"
#include "term.h"

#define XFER_MT "kling.core.transfer"
#define DEFAULT_MAX_BODY (8u * 1024u * 1024u)

typedef struct { kxfer *x; } lxfer;

lengine *kcore_check_engine(lua_State *L, int i) {
  lengine *le = luaL_checkudata(L, i, ENGINE_MT);
  if (!le->open) luaL_argerror(L, i, "client is closed");
  return le;
}
#define check_engine kcore_check_engine

static kxfer *check_xfer(lua_State *L, int i) {
  lxfer *lx = luaL_checkudata(L, i, XFER_MT);
  if (lx->x == NULL) luaL_argerror(L, i, "transfer is released");
  return lx->x;
}

static const char *opt_string(lua_State *L, int t, const char *k) {
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

static double opt_number(lua_State *L, int t, const char *k, double dflt) {
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

static int opt_bool(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static long seconds_to_ms(lua_State *L, const char *k, double s) {
  if (!(s >= 0) || s > 1e7) luaL_error(L, "option '%s' must be between 0 and 1e7 seconds", k);
  return (long)(s * 1000.0 + 0.5);
}

int kcore_error_code(lua_State *L, int idx, long long *code) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    if (lua_isinteger(L, idx)) {
      lua_Integer v = lua_tointeger(L, idx);
      if (v < 0 || v > (lua_Integer)9007199254740992LL) return 0;
      *code = (long long)v;
      return 1;
    }
    double d = lua_tonumber(L, idx);
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return 0;
    *code = (long long)d;
    return 1;
  }
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (n < 1 || n > 15) return 0;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
      if (s[i] < '0' || s[i] > '9') return 0;
      v = v * 10 + (s[i] - '0');
    }
    *code = v;
    return 1;
  }
  return 0;
}

/* Run protected (no error can escape into the engine): what the body of the
 * transfer at index 1 (a light userdata) says, filled into the kbody_info at
 * index 3; returns true when the body decoded. */
static int protected_body_info(lua_State *L) {
  const kxfer *x = lua_touserdata(L, 1);
  lengine *le = lua_touserdata(L, 2);
  kbody_info *info = lua_touserdata(L, 3);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, le->p.decode_ref);
  lua_pushlstring(L, x->body.data, x->body.len);
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1)) return 0;
  lua_getfield(L, 1, "error_code");
  info->has_code = kcore_error_code(L, -1, &info->code);
  lua_getfield(L, 1, "status");
  info->has_status = lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0;
  lua_getfield(L, 1, "request_id");
  info->has_id = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER;
  lua_pushboolean(L, 1);
  return 1;
}

/* The engine's body_info hook: reads an API answer with the poller's
 * lua-cjson decoder, during eng:step (when a Lua state drives the engine;
 * otherwise the status alone decides). The collector is held still
 * meanwhile, so that no finalizer runs inside the engine. */
static int body_info(void *ud, const kxfer *x, kbody_info *info) {
  lengine *le = ud;
  lua_State *L = le->L;
  if (L == NULL || x->body.len == 0 || le->p.decode_ref == LUA_NOREF || !lua_checkstack(L, 6)) return 0;
  int gc = lua_gc(L, LUA_GCISRUNNING);
  if (gc) lua_gc(L, LUA_GCSTOP);
  int top = lua_gettop(L), ok = 0;
  kbody_info got;
  memset(&got, 0, sizeof got);
  lua_pushcfunction(L, protected_body_info);
  lua_pushlightuserdata(L, (void *)x);
  lua_pushlightuserdata(L, le);
  lua_pushlightuserdata(L, &got);
  if (lua_pcall(L, 3, 1, 0) == LUA_OK && lua_toboolean(L, -1)) {
    *info = got;
    ok = 1;
  }
  lua_settop(L, top);
  if (gc) lua_gc(L, LUA_GCRESTART);
  return ok;
}

/* core.error_code(v) -> integer | nil: RunComfy's error_code of a decoded
 * value, by the one rule (kcore_error_code). */
static int l_error_code(lua_State *L) {
  long long code;
  luaL_checkany(L, 1);
  if (kcore_error_code(L, 1, &code)) lua_pushinteger(L, (lua_Integer)code);
  else lua_pushnil(L);
  return 1;
}

/* core.answer_kind(status, code) -> kind, retryable | nil: what an answer with
 * this HTTP status and error_code (an integer, or nil) is, by the one rule
 * (kanswer_kind in engine.c); nil for a success. */
static int l_answer_kind(lua_State *L) {
  lua_Integer status = luaL_checkinteger(L, 1);
  int has_code = !lua_isnoneornil(L, 2);
  long long code = has_code ? (long long)luaL_checkinteger(L, 2) : 0;
  int retryable;
  const char *kind = kanswer_kind((long)status, has_code, code, &retryable);
  if (kind == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, kind);
  lua_pushboolean(L, retryable);
  return 2;
}

/* core.new(opts) */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  kengine_opts o;
  memset(&o, 0, sizeof o);
  o.api_base = opt_string(L, 1, "base_url");
  if (o.api_base == NULL) luaL_error(L, "option 'base_url' is required");
  o.token = opt_string(L, 1, "token");
  o.ca_file = opt_string(L, 1, "ca_file");
  o.user_agent = opt_string(L, 1, "user_agent");
  o.timeout_ms = seconds_to_ms(L, "timeout", opt_number(L, 1, "timeout", 30));
  o.connect_timeout_ms = seconds_to_ms(L, "connect_timeout", opt_number(L, 1, "connect_timeout", 10));
  double mb = opt_number(L, 1, "max_body", DEFAULT_MAX_BODY);
  if (!(mb >= 1024) || mb > 1e12) luaL_error(L, "option 'max_body' must be at least 1024 bytes");
  o.max_body = (size_t)mb;
  double mc = opt_number(L, 1, "max_connections", 8);
  if (!(mc >= 1) || mc > 65536) luaL_error(L, "option 'max_connections' must be between 1 and 65536");
  o.max_connections = (long)mc;
  o.allow_insecure_http = opt_bool(L, 1, "allow_insecure_http");
  o.max_rps = opt_number(L, 1, "max_rps", 0);
  o.max_retries = -1;
  lua_getfield(L, 1, "retries");
  if (lua_istable(L, -1)) {
    int t = lua_gettop(L);
    double m = opt_number(L, t, "max", 4);
    if (!(m >= 0) || m > 100) luaL_error(L, "option 'retries.max' must be between 0 and 100");
    o.max_retries = (int)m;
    o.retry_base = opt_number(L, t, "base", 0.5);
    o.retry_cap = opt_number(L, t, "cap", 30);
    o.retry_after_cap = opt_number(L, t, "retry_after_cap", 120);
    if (!(o.retry_base > 0) || !(o.retry_cap > 0) || !(o.retry_after_cap > 0))
      luaL_error(L, "options 'retries.base', 'cap' and 'retry_after_cap' must be > 0");
  } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    o.max_retries = 0;
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'retries' must be a table or false");
  }
  lua_pop(L, 1);
  if (!(o.max_rps >= 0) || o.max_rps > 1e6) luaL_error(L, "option 'max_rps' must be between 0 (no cap) and 1e6");

  lengine *le = lua_newuserdatauv(L, sizeof *le, 0);
  le->open = 0;
  luaL_setmetatable(L, ENGINE_MT);
  char err[256];
  if (kengine_init(&le->e, &o, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  kpoller_init(L, &le->p, (int)(o.max_connections * 4));
  le->L = NULL;
  le->e.body_info = body_info;
  le->e.body_info_ud = le;
  le->open = 1;
  return 1;
}

static int l_engine_close(lua_State *L) {
  lengine *le = luaL_checkudata(L, 1, ENGINE_MT);
  if (le->open) {
    le->open = 0;
    kpoller_close(L, &le->p, &le->e);
    kengine_close(&le->e);
  }
  return 0;
}

static int l_engine_tostring(lua_State *L) {
  lengine *le = luaL_checkudata(L, 1, ENGINE_MT);
  if (!le->open) lua_pushstring(L, "kling.core.engine (closed)");
  else lua_pushfstring(L, "kling.core.engine (%s://%s:%s, %d in flight)", le->e.api_scheme,
                       le->e.api_host, le->e.api_port, le->e.ninflight);
  return 1;
}

/* eng:request(spec) -> transfer | nil, message */
static int l_request(lua_State *L) {
  lengine *le = check_engine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  kx_spec s;
  memset(&s, 0, sizeof s);
  s.method = opt_string(L, 2, "method");
  if (s.method == NULL) s.method = "GET";
  lua_getfield(L, 2, "url");
  size_t url_len = 0;
  s.url = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &url_len) : NULL;
  lua_pop(L, 1);
  if (s.url == NULL) return luaL_argerror(L, 2, "field 'url' is required");
  if (strlen(s.url) != url_len) { /* never cut a URL short at a NUL byte */
    lua_pushnil(L);
    lua_pushliteral(L, "not a valid URL (it holds a NUL byte)");
    return 2;
  }
  lua_getfield(L, 2, "body");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_argerror(L, 2, "field 'body' must be a string");
    s.body = lua_tolstring(L, -1, &s.body_len);
  }
  lua_pop(L, 1);
  s.download = opt_string(L, 2, "download");
  s.timeout_ms = seconds_to_ms(L, "timeout", opt_number(L, 2, "timeout", 0));
  s.fresh = opt_bool(L, 2, "fresh");
  s.resume = opt_bool(L, 2, "resume");
  const char *retry = opt_string(L, 2, "retry");
  if (retry == NULL) s.retry = KX_RETRY_NONE;
  else if (strcmp(retry, "safe") == 0) s.retry = KX_RETRY_SAFE;
  else if (strcmp(retry, "submit") == 0) s.retry = KX_RETRY_SUBMIT;
  else return luaL_argerror(L, 2, "field 'retry' must be \"safe\" or \"submit\"");
  double mb = opt_number(L, 2, "max_bytes", 0);
  if (!(mb >= 0) || mb > 9e18) return luaL_argerror(L, 2, "field 'max_bytes' must be >= 0");
  s.max_bytes = (curl_off_t)mb;
  double lsl = opt_number(L, 2, "low_speed_limit", 0);
  if (!(lsl >= 0) || lsl > 1e12) return luaL_argerror(L, 2, "field 'low_speed_limit' must be >= 0 bytes/s");
  s.low_speed_limit = (long)lsl;
  double lst = opt_number(L, 2, "low_speed_time", 0);
  if (!(lst >= 0) || lst > 1e7) return luaL_argerror(L, 2, "field 'low_speed_time' must be between 0 and 1e7 seconds");
  s.low_speed_time = lst > 0 && lst < 1 ? 1 : (long)(lst + 0.5); /* libcurl counts whole seconds */
  s.status_answer = opt_bool(L, 2, "status_answer");
  s.deadline = opt_number(L, 2, "deadline", 0);
  if (!(s.deadline >= 0) || s.deadline > 1e7) return luaL_argerror(L, 2, "field 'deadline' must be between 0 and 1e7 seconds");

  lxfer *lx = lua_newuserdatauv(L, sizeof *lx, 1);
  lx->x = NULL;
  luaL_setmetatable(L, XFER_MT);
  lua_pushvalue(L, 1); /* the transfer keeps its engine alive */
  lua_setiuservalue(L, -2, 1);

  char err[1200];
  kx_new_error why;
  kxfer *x = kxfer_new_ex(&le->e, &s, err, sizeof err, &why);
  if (x == NULL || kengine_add(&le->e, x, err, sizeof err) != 0) {
    /* third value: true when the message is about the caller's own file (a
     * download's path), not about the URL: the caller's text, never masked */
    int is_api, local = x == NULL && s.download && kengine_check_url(&le->e, s.url, &is_api, NULL, 0) == 0;
    kxfer_free(x);
    lua_pushnil(L);
    lua_pushstring(L, err);
    /* third value: the path of a local file problem (err.path), else nil */
    if (x == NULL && why.io) lua_pushstring(L, why.path);
    else lua_pushnil(L);
    lua_pushboolean(L, local);
    return 4;
  }
  lx->x = x;
  return 1;
}

/* eng:step([seconds]) -> how many things happened: transfers of the caller
 * that finished, plus watched jobs with news (read them with eng:updates()).
 * Waits at most `seconds` (default 0) in the kernel; the poller's own
 * requests are handled inside without returning. */
static int l_step(lua_State *L) {
  lengine *le = check_engine(L, 1);
  double t = luaL_optnumber(L, 2, 0);
  double deadline = kengine_now() + (t > 0 ? t : 0);
  int happened = 0, owned;
  happened += kpoller_run(L, &le->p, &le->e, &owned); /* news from before, due polls */
  for (;;) {
    double left = deadline - kengine_now();
    le->L = L; /* for the engine's body_info hook, during this call only */
    int n = kengine_step(&le->e, left > 0 ? left : 0);
    le->L = NULL;
    happened += kpoller_run(L, &le->p, &le->e, &owned);
    happened += n - owned;
    if (happened > 0 || kengine_now() >= deadline || !le->open) break;
  }
  lua_pushinteger(L, happened);
  return 1;
}

/* eng:finished() -> { key, ... }: the x:key() of the caller's transfers
 * that ended since the last call (a scheduler wakes their waiters). */
static int l_finished(lua_State *L) {
  lengine *le = check_engine(L, 1);
  kengine *e = &le->e;
  lua_createtable(L, e->nuser_done, 0);
  for (int i = 0; i < e->nuser_done; i++) {
    lua_pushlightuserdata(L, e->user_done[i]);
    lua_rawseti(L, -2, i + 1);
  }
  e->nuser_done = 0;
  return 1;
}

/* x:key() -> a light userdata naming this transfer in eng:finished() */
static int l_xfer_key(lua_State *L) {
  lxfer *lx = luaL_checkudata(L, 1, XFER_MT);
  if (lx->x == NULL) return luaL_argerror(L, 1, "transfer is released");
  lua_pushlightuserdata(L, lx->x);
  return 1;
}

/* eng:timeout() -> seconds until the engine has work of its own (nil: none
 * but sockets). For foreign event loops, with eng:pollfd(). */
static int l_timeout(lua_State *L) {
  lengine *le = check_engine(L, 1);
  double t = kengine_timeout(&le->e);
  if (t < 0) lua_pushnil(L);
  else lua_pushnumber(L, t);
  return 1;
}

/* eng:pollfd() -> a descriptor that is readable when the engine has work */
static int l_pollfd(lua_State *L) {
  lengine *le = check_engine(L, 1);
  lua_pushinteger(L, le->e.epfd);
  return 1;
}

/* eng:stats() -> { requests=, connects=, inflight=, queued= } */
static int l_stats(lua_State *L) {
  lengine *le = check_engine(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)le->e.requests);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, (lua_Integer)le->e.connects);
  lua_setfield(L, -2, "connects");
  lua_pushinteger(L, le->e.ninflight);
  lua_setfield(L, -2, "inflight");
  lua_pushinteger(L, le->e.nqueued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, le->e.sockets_open);
  lua_setfield(L, -2, "sockets_open");
  lua_pushinteger(L, (lua_Integer)le->e.retries);
  lua_setfield(L, -2, "retries");
  lua_pushinteger(L, le->e.sockets_peak);
  lua_setfield(L, -2, "sockets_peak");
  lua_pushinteger(L, (lua_Integer)le->e.sockets_opened);
  lua_setfield(L, -2, "sockets_opened");
  return 1;
}

static int l_pending(lua_State *L) {
  lengine *le = check_engine(L, 1);
  lua_pushinteger(L, le->e.ninflight);
  return 1;
}

/* The first occurrence of needle (nn bytes, nn > 0) in hay (hn bytes), or NULL.
 * Byte strings: NUL bytes are bytes like any other. */
static const char *find_bytes(const char *hay, size_t hn, const char *needle, size_t nn) {
  while (hn >= nn) {
    const char *c = memchr(hay, needle[0], hn - nn + 1);
    if (c == NULL) return NULL;
    if (memcmp(c, needle, nn) == 0) return c;
    hn -= (size_t)(c - hay) + 1;
    hay = c + 1;
  }
  return NULL;
}

/* eng:scrub(s): every occurrence of the token in the whole byte string s
 * (past any NUL byte) replaced by "***". For text that came from a server. */
static int l_scrub(lua_State *L) {
  lengine *le = luaL_checkudata(L, 1, ENGINE_MT);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  const char *tok = le->open ? le->e.token : NULL;
  size_t tn = tok ? strlen(tok) : 0;
  if (tn == 0 || find_bytes(s, n, tok, tn) == NULL) {
    lua_settop(L, 2);
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  const char *p = s, *end = s + n, *hit;
  while ((hit = find_bytes(p, (size_t)(end - p), tok, tn)) != NULL) {
    luaL_addlstring(&b, p, (size_t)(hit - p));
    luaL_addstring(&b, "***");
    p = hit + tn;
  }
  luaL_addlstring(&b, p, (size_t)(end - p));
  luaL_pushresult(&b);
  return 1;
}

static int l_xfer_done(lua_State *L) {
  kxfer *x = check_xfer(L, 1);
  lua_pushboolean(L, x->state == KX_DONE);
  return 1;
}

static int l_xfer_progress(lua_State *L) {
  kxfer *x = check_xfer(L, 1);
  curl_off_t total = kxfer_length(x);
  lua_pushinteger(L, (lua_Integer)(x->offset + x->bytes));
  if (total >= 0) lua_pushinteger(L, (lua_Integer)(x->offset + total));
  else lua_pushnil(L);
  return 2;
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v && v[0]) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
  }
}

/* x:result() -> nil while running; then { status=, body=, bytes=, path=,
 *   resumed_from=, complete=, content_type=, content_length=, retry_after=,
 *   time=, error = nil | { kind=, message=, curl_code=, sent=, path= } }
 * (a download: path is set when the file is in place; error.path names the
 * file of an "io" error) */
static int l_xfer_result(lua_State *L) {
  kxfer *x = check_xfer(L, 1);
  if (x->state != KX_DONE) return 0;
  kcore_push_result(L, x);
  return 1;
}

void kcore_push_result(lua_State *L, kxfer *x) {
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, x->status);
  lua_setfield(L, -2, "status");
  if (x->body.len > 0 || !x->path) {
    lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
    lua_setfield(L, -2, "body");
  }
  lua_pushinteger(L, (lua_Integer)(x->offset + x->bytes)); /* a download: the whole file */
  lua_setfield(L, -2, "bytes");
  if (x->path) {
    lua_pushinteger(L, (lua_Integer)x->resumed_from);
    lua_setfield(L, -2, "resumed_from");
  }
  static const char *const versions[] = { "?", "1.0", "1.1", "2" };
  const char *hv = x->http_version >= 1 && x->http_version <= 3 ? versions[x->http_version]
                   : x->http_version == 30 ? "3" : NULL;
  if (hv) {
    lua_pushstring(L, hv);
    lua_setfield(L, -2, "http_version");
  }
  set_str(L, "content_type", x->content_type);
  set_str(L, "content_length", x->content_length);
  set_str(L, "retry_after", x->retry_after);
  lua_pushnumber(L, x->total_time);
  lua_setfield(L, -2, "time");
  lua_pushinteger(L, x->attempts);
  lua_setfield(L, -2, "attempts");
  int sent;
  const char *kind = kxfer_error_kind(x, &sent);
  if (kind) {
    char msg[1024];
    kxfer_error_message(x, msg, sizeof msg);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, (lua_Integer)x->code);
    lua_setfield(L, -2, "curl_code");
    lua_pushboolean(L, sent);
    lua_setfield(L, -2, "sent");
    if (x->io_error && x->io_path) {
      lua_pushstring(L, x->io_path);
      lua_setfield(L, -2, "path");
    }
    if (x->proxy_status) {
      lua_pushinteger(L, x->proxy_status);
      lua_setfield(L, -2, "proxy_status");
    }
    lua_setfield(L, -2, "error");
  } else if (x->path && x->to_file) {
    lua_pushstring(L, x->path);
    lua_setfield(L, -2, "path");
    if (x->complete) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "complete");
    }
  }
}

/* Releases the transfer: aborts it when still running. Idempotent. */
static int l_xfer_close(lua_State *L) {
  lxfer *lx = luaL_checkudata(L, 1, XFER_MT);
  if (lx->x) {
    if (lx->x->engine) kengine_remove(lx->x->engine, lx->x);
    kxfer_free(lx->x);
    lx->x = NULL;
  }
  return 0;
}

/* x:abort(): stops a running transfer; its result then says "aborted". */
static int l_xfer_abort(lua_State *L) {
  kxfer *x = check_xfer(L, 1);
  if (x->engine) kengine_remove(x->engine, x);
  return 0;
}

static int l_xfer_tostring(lua_State *L) {
  lxfer *lx = luaL_checkudata(L, 1, XFER_MT);
  static const char *const names[] = { "new", "running", "done" };
  if (lx->x == NULL) lua_pushstring(L, "kling.core.transfer (released)");
  else lua_pushfstring(L, "kling.core.transfer (%s)", names[lx->x->state]);
  return 1;
}

/* core.wait_fds({fd, ...}, seconds) -> true when one is readable, false on
 * timeout: the kernel wait of a scheduler that drives several clients. */
static int l_wait_fds(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  double t = luaL_checknumber(L, 2);
  struct pollfd fds[64];
  lua_Integer n = luaL_len(L, 1);
  if (n > 64) return luaL_argerror(L, 1, "at most 64 descriptors");
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    fds[i].fd = (int)luaL_checkinteger(L, -1);
    fds[i].events = POLLIN;
    fds[i].revents = 0;
    lua_pop(L, 1);
  }
  int ms = t <= 0 ? 0 : t > 86400 ? 86400000 : (int)ceil(t * 1000.0);
  int rc = poll(fds, (nfds_t)n, ms);
  if (rc < 0 && errno != EINTR) return luaL_error(L, "poll: %s", strerror(errno));
  lua_pushboolean(L, rc > 0);
  return 1;
}

/* core.check_download_target(path) -> true | nil, message, bad_path: could a
 * download to path start now (kx_check_download_target)? Sends nothing. */
static int l_check_download_target(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  if (n == 0 || strlen(path) != n) return luaL_argerror(L, 1, "a path: not empty, no NUL byte");
  char err[1200];
  kx_new_error why;
  if (kx_check_download_target(path, err, sizeof err, &why) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, err);
  if (why.io) lua_pushstring(L, why.path);
  else lua_pushnil(L);
  return 3;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, kengine_now());
  return 1;
}

static const luaL_Reg engine_methods[] = {
  { "request", l_request }, { "step", l_step },     { "pending", l_pending },
  { "scrub", l_scrub },     { "timeout", l_timeout }, { "pollfd", l_pollfd },
  { "stats", l_stats },     { "finished", l_finished }, { "close", l_engine_close },
  { NULL, NULL },
};
static const luaL_Reg engine_meta[] = {
  { "__gc", l_engine_close }, { "__close", l_engine_close },
  { "__tostring", l_engine_tostring }, { NULL, NULL },
};
static const luaL_Reg xfer_methods[] = {
  { "done", l_xfer_done }, { "result", l_xfer_result }, { "progress", l_xfer_progress },
  { "abort", l_xfer_abort }, { "close", l_xfer_close }, { "key", l_xfer_key }, { NULL, NULL },
};
static const luaL_Reg xfer_meta[] = {
  { "__gc", l_xfer_close }, { "__close", l_xfer_close },
  { "__tostring", l_xfer_tostring }, { NULL, NULL },
};
static const luaL_Reg functions[] = {
  { "new", l_new }, { "now", l_now }, { "wait_fds", l_wait_fds },
  { "check_download_target", l_check_download_target },
  { "error_code", l_error_code }, { "answer_kind", l_answer_kind }, { NULL, NULL },
};

void kcore_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen_kling_core(lua_State *L) {
  static int curl_ready = 0;
  luaL_checkversion(L);
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "curl_global_init failed");
    curl_ready = 1;
  }
  kcore_class(L, ENGINE_MT, engine_meta, engine_methods);
  luaL_getmetatable(L, ENGINE_MT); /* the poller's methods join the engine's */
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, kpoller_methods, 0);
  lua_pop(L, 2);
  kcore_class(L, XFER_MT, xfer_meta, xfer_methods);
  luaL_newlib(L, functions);
  kschema_open(L);
  kjsonw_open(L);
  kjournal_open(L);
  kterm_open(L); /* kling.core.term: isatty, size (term.c) */
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_setfield(L, -2, "curl_version");
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
  lua_pushinteger(L, KJSONW_MAX_DEPTH); /* how deep answers are decoded: as deep as the writer writes */
  lua_setfield(L, -2, "json_max_depth");
  lua_pushinteger(L, KANSWER_UNUSABLE_TRIES); /* status answers without a usable status, in a row */
  lua_setfield(L, -2, "unusable_tries");
#ifdef __SANITIZE_ADDRESS__
  lua_pushboolean(L, 1); /* built by `make check` */
#else
  lua_pushboolean(L, 0);
#endif
  lua_setfield(L, -2, "sanitized");
  return 1;
}
