/*
 * lua_engine.c - the engine and its transfers as two Lua userdata classes
 * (kling.core.engine):
 *
 *   local eng = core.new{ base_url=, token=, timeout=, connect_timeout=,
 *                         ca_file=, allow_insecure_http=, max_body=,
 *                         max_connections=, max_rps=, retries=, user_agent= }
 *   local x, err, path = eng:request{ method=, url=, body=, download=, timeout=,
 *                               fresh=, retry=, max_bytes=, resume=, low_speed_limit=,
 *                               low_speed_time=, deadline= }
 *   eng:step(seconds)  -> things that happened     eng:pending() -> in flight
 *   eng:finished() -> keys of the caller's transfers that ended (nil: none)
 *   eng:scrub(s)       -> s with the token masked
 *   eng:timeout(), eng:pollfd(), eng:stats(), eng:close()
 *   x:done(), x:result() -> table, x:progress() -> bytes, total, x:again(),
 *   x:abort(), x:close(), x:key()
 *   core.now() -> monotonic seconds; core.wait_fds(fds, seconds)
 *   core.check_download_target(path) -> true | nil, message, bad_path
 *
 * Options left out take the defaults of defaults.h (kling.core.DEFAULTS).
 * Bad arguments raise; transport failures come back as data in x:result().
 * No Lua code ever runs inside the engine: it is pure C (engine.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "lua_engine.h"

#define XFER_MT "kling.core.transfer"

typedef struct { kxfer *x; } lxfer;

/* Every function of the two classes (methods, metamethods, and the poller's
 * methods: lua_poller.c) holds the two metatables as upvalues KL_UP_ENGINE and
 * KL_UP_XFER (kl_class_upvalues): a type check per call then compares two
 * values, with no lookup by the class name (luaL_checkudata). */
#define KL_UP_ENGINE 1
#define KL_UP_XFER 2

/* The userdata at i when its metatable is the one in upvalue up of the
 * running function, else luaL_checkudata's answer (and its error, which names
 * the class); a function without that upvalue always takes the second way. */
static void *check_class(lua_State *L, int i, int up, const char *name) {
  void *p = lua_touserdata(L, i);
  if (p != NULL && lua_getmetatable(L, i)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(up));
    lua_pop(L, 1);
    if (same) return p;
  }
  return luaL_checkudata(L, i, name);
}

void kl_class_upvalues(lua_State *L) {
  luaL_getmetatable(L, ENGINE_MT);
  luaL_getmetatable(L, XFER_MT);
}

lengine *kl_check_engine(lua_State *L, int i) {
  lengine *le = check_class(L, i, KL_UP_ENGINE, ENGINE_MT);
  if (!le->open) luaL_argerror(L, i, "client is closed");
  return le;
}

static kxfer *check_xfer(lua_State *L, int i) {
  lxfer *lx = check_class(L, i, KL_UP_XFER, XFER_MT);
  if (lx->x == NULL) luaL_argerror(L, i, "transfer is released");
  return lx->x;
}

/* retries = { max =, base =, cap =, retry_after_cap = } | false | nil */
static void read_retries(lua_State *L, int t, kengine_opts *o) {
  lua_getfield(L, t, "retries");
  if (lua_istable(L, -1)) {
    int r = lua_gettop(L);
    double m = kl_opt_number(L, r, "max", KD_RETRIES_MAX);
    if (!(m >= 0) || m > KL_RETRIES_MAX) luaL_error(L, "option 'retries.max' must be between 0 and 100");
    o->max_retries = (int)m;
    o->retry_base = kl_opt_number(L, r, "base", KD_RETRY_BASE);
    o->retry_cap = kl_opt_number(L, r, "cap", KD_RETRY_CAP);
    o->retry_after_cap = kl_opt_number(L, r, "retry_after_cap", KD_RETRY_AFTER_CAP);
    if (!(o->retry_base > 0) || !(o->retry_cap > 0) || !(o->retry_after_cap > 0))
      luaL_error(L, "options 'retries.base', 'cap' and 'retry_after_cap' must be > 0");
  } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    o->max_retries = 0;
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'retries' must be a table or false");
  }
  lua_pop(L, 1);
}

/* core.new(opts) */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  kengine_opts o;
  kengine_defaults(&o);
  o.net.api_base = kl_opt_string(L, 1, "base_url");
  if (o.net.api_base == NULL) luaL_error(L, "option 'base_url' is required");
  o.net.token = kl_opt_string(L, 1, "token");
  o.net.ca_file = kl_opt_string(L, 1, "ca_file");
  o.net.user_agent = kl_opt_string(L, 1, "user_agent");
  o.net.timeout_ms = kl_seconds_to_ms(L, "timeout", kl_opt_number(L, 1, "timeout", KD_TIMEOUT));
  o.net.connect_timeout_ms = kl_seconds_to_ms(L, "connect_timeout", kl_opt_number(L, 1, "connect_timeout", KD_CONNECT_TIMEOUT));
  double mb = kl_opt_number(L, 1, "max_body", KD_MAX_BODY);
  if (!(mb >= KL_MAX_BODY_MIN) || mb > KL_MAX_BODY_MAX) luaL_error(L, "option 'max_body' must be at least 1024 bytes");
  o.net.max_body = (size_t)mb;
  o.net.allow_insecure_http = kl_opt_bool(L, 1, "allow_insecure_http");
  double mc = kl_opt_number(L, 1, "max_connections", KD_MAX_CONNECTIONS);
  if (!(mc >= 1) || mc > KL_MAX_CONNECTIONS) luaL_error(L, "option 'max_connections' must be between 1 and 65536");
  o.max_connections = (long)mc;
  o.max_active = (int)(o.max_connections * KD_ACTIVE_PER_CONNECTION);
  o.max_rps = kl_opt_number(L, 1, "max_rps", KD_MAX_RPS);
  if (!(o.max_rps >= 0) || o.max_rps > KL_MAX_RPS) luaL_error(L, "option 'max_rps' must be between 0 (no cap) and 1e6");
  read_retries(L, 1, &o);

  lengine *le = lua_newuserdatauv(L, sizeof *le, 0);
  le->open = 0;
  luaL_setmetatable(L, ENGINE_MT);
  char err[256];
  if (kengine_init(&le->e, &o, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  kpoll_opts po;
  kpoller_defaults(&po);
  kpoller_init(&le->p, &po, o.max_active);
  le->open = 1;
  return 1;
}

static int l_engine_close(lua_State *L) {
  lengine *le = check_class(L, 1, KL_UP_ENGINE, ENGINE_MT);
  if (le->open) {
    le->open = 0;
    kpoller_close(&le->p, &le->e);
    kengine_close(&le->e);
  }
  return 0;
}

static int l_engine_tostring(lua_State *L) {
  lengine *le = check_class(L, 1, KL_UP_ENGINE, ENGINE_MT);
  if (!le->open) lua_pushstring(L, "kling.core.engine (closed)");
  else lua_pushfstring(L, "kling.core.engine (%s://%s:%s, %d in flight)", le->e.net.api_scheme,
                       le->e.net.api_host, le->e.net.api_port, le->e.ninflight);
  return 1;
}

/* The request of the table at index t, into s (strings borrowed from it).
 * Returns NULL, or a message for a URL that cannot be sent (not raised). */
static const char *read_spec(lua_State *L, int t, kx_spec *s) {
  memset(s, 0, sizeof *s);
  s->method = kl_opt_string(L, t, "method");
  if (s->method == NULL) s->method = "GET";
  lua_getfield(L, t, "url");
  size_t url_len = 0;
  s->url = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &url_len) : NULL;
  lua_pop(L, 1);
  if (s->url == NULL) luaL_argerror(L, t, "field 'url' is required");
  lua_getfield(L, t, "body");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, t, "field 'body' must be a string");
    s->body = lua_tolstring(L, -1, &s->body_len);
  }
  lua_pop(L, 1);
  s->download = kl_opt_string(L, t, "download");
  s->timeout_ms = kl_seconds_to_ms(L, "timeout", kl_opt_number(L, t, "timeout", 0));
  s->fresh = kl_opt_bool(L, t, "fresh");
  s->resume = kl_opt_bool(L, t, "resume");
  const char *retry = kl_opt_string(L, t, "retry");
  if (retry == NULL) s->retry = KX_RETRY_NONE;
  else if (strcmp(retry, "safe") == 0) s->retry = KX_RETRY_SAFE;
  else if (strcmp(retry, "submit") == 0) s->retry = KX_RETRY_SUBMIT;
  else luaL_argerror(L, t, "field 'retry' must be \"safe\" or \"submit\"");
  double mb = kl_opt_number(L, t, "max_bytes", 0);
  if (!(mb >= 0) || mb > KL_BYTES_MAX) luaL_argerror(L, t, "field 'max_bytes' must be >= 0");
  s->max_bytes = (curl_off_t)mb;
  double lsl = kl_opt_number(L, t, "low_speed_limit", 0);
  if (!(lsl >= 0) || lsl > KL_RATE_MAX) luaL_argerror(L, t, "field 'low_speed_limit' must be >= 0 bytes/s");
  s->low_speed_limit = (long)lsl;
  double lst = kl_opt_number(L, t, "low_speed_time", 0);
  if (!(lst >= 0) || lst > KL_SECONDS_MAX) luaL_argerror(L, t, "field 'low_speed_time' must be between 0 and 1e7 seconds");
  s->low_speed_time = lst > 0 && lst < 1 ? 1 : (long)(lst + 0.5); /* libcurl counts whole seconds */
  s->deadline = kl_opt_number(L, t, "deadline", 0);
  if (!(s->deadline >= 0) || s->deadline > KL_SECONDS_MAX) luaL_argerror(L, t, "field 'deadline' must be between 0 and 1e7 seconds");
  if (strlen(s->url) != url_len) return "not a valid URL (it holds a NUL byte)"; /* never cut a URL short */
  return NULL;
}

/* eng:request(spec) -> transfer | nil, message, path (the path of a local
 * file problem: the caller's own text, never masked) */
static int l_request(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  kx_spec s;
  const char *bad = read_spec(L, 2, &s);
  if (bad) {
    lua_pushnil(L);
    lua_pushstring(L, bad);
    return 2;
  }
  lxfer *lx = lua_newuserdatauv(L, sizeof *lx, 1);
  lx->x = NULL;
  luaL_setmetatable(L, XFER_MT);
  lua_pushvalue(L, 1); /* the transfer keeps its engine alive */
  lua_setiuservalue(L, -2, 1);

  char err[1200];
  kx_new_error why;
  kxfer *x = kxfer_new_ex(&le->e.net, &s, err, sizeof err, &why);
  if (x == NULL || kengine_add(&le->e, x, err, sizeof err) != 0) {
    kxfer_free(x);
    lua_pushnil(L);
    lua_pushstring(L, err);
    if (x == NULL && why.io) lua_pushstring(L, why.path);
    else lua_pushnil(L);
    return 3;
  }
  lx->x = x;
  return 1;
}

/* eng:step([seconds]) -> how many things happened: transfers of the caller
 * that ended, plus watched jobs' answers waiting to be read (eng:answers()).
 * Waits at most `seconds` (default 0) in the kernel. */
static int l_step(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  double t = luaL_optnumber(L, 2, 0);
  double deadline = know() + (t > 0 ? t : 0);
  int happened = 0, owned;
  happened += kpoller_run(&le->p, &le->e, &owned); /* due polls */
  for (;;) {
    double left = deadline - know();
    int n = kengine_step(&le->e, left > 0 ? left : 0);
    happened += kpoller_run(&le->p, &le->e, &owned);
    happened += n - owned;
    if (happened > 0 || know() >= deadline || !le->open) break;
  }
  lua_pushinteger(L, happened);
  return 1;
}

/* eng:finished() -> { key, ... } | nil: the x:key() of the caller's
 * transfers that ended since the last call (a scheduler wakes their
 * waiters); nil when none did (no table made for nothing). */
static int l_finished(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  kengine *e = &le->e;
  if (e->nuser_done == 0) return 0;
  lua_createtable(L, e->nuser_done, 0);
  for (int i = 0; i < e->nuser_done; i++) {
    lua_pushlightuserdata(L, e->user_done[i]);
    lua_rawseti(L, -2, i + 1);
  }
  e->nuser_done = 0;
  return 1;
}

/* eng:timeout() -> seconds until the engine has work of its own (nil: none
 * but sockets). For foreign event loops, with eng:pollfd(). */
static int l_timeout(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  double t = kengine_timeout(&le->e);
  if (t < 0) lua_pushnil(L);
  else lua_pushnumber(L, t);
  return 1;
}

/* eng:pollfd() -> a descriptor that is readable when the engine has work */
static int l_pollfd(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  lua_pushinteger(L, kengine_pollfd(&le->e));
  return 1;
}

/* eng:pollfds() -> { { fd = n, events = "r" | "w" | "rw" }, ... }: every
 * descriptor a foreign loop watches for the engine (one, the pollfd, with
 * epoll and kqueue; each socket with the poll backend) */
static int l_pollfds(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  int n = kengine_pollfds(&le->e, NULL, NULL, 0);
  if (n < 0) n = 0;
  int *fds = lua_newuserdata(L, 2 * (size_t)(n ? n : 1) * sizeof *fds), *whats = fds + n;
  n = kengine_pollfds(&le->e, fds, whats, n);
  if (n < 0) n = 0;
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, fds[i]);
    lua_setfield(L, -2, "fd");
    lua_pushstring(L, whats[i] == (KEV_IN | KEV_OUT) ? "rw" : whats[i] == KEV_OUT ? "w" : "r");
    lua_setfield(L, -2, "events");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* eng:stats() -> { requests=, connects=, inflight=, queued=, sockets_open=,
 *   retries=, sockets_peak=, sockets_opened=, active_cap=, active_peak= }
 * active_cap: API transfers let into libcurl at once now (max_connections
 * on HTTP/1.1, more once the API answered over HTTP/2); active_peak: the
 * most there were so far */
static int l_stats(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
  const kengine *e = &le->e;
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, (lua_Integer)e->requests);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, (lua_Integer)e->connects);
  lua_setfield(L, -2, "connects");
  lua_pushinteger(L, e->ninflight);
  lua_setfield(L, -2, "inflight");
  lua_pushinteger(L, e->nqueued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, e->net.sockets_open);
  lua_setfield(L, -2, "sockets_open");
  lua_pushinteger(L, (lua_Integer)e->retries);
  lua_setfield(L, -2, "retries");
  lua_pushinteger(L, e->net.sockets_peak);
  lua_setfield(L, -2, "sockets_peak");
  lua_pushinteger(L, (lua_Integer)e->net.sockets_opened);
  lua_setfield(L, -2, "sockets_opened");
  lua_pushinteger(L, e->max_active);
  lua_setfield(L, -2, "active_cap");
  lua_pushinteger(L, e->active_peak);
  lua_setfield(L, -2, "active_peak");
  return 1;
}

static int l_pending(lua_State *L) {
  lengine *le = kl_check_engine(L, 1);
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

/* Pushes s (n bytes) with every occurrence of tok (NULL or "": none)
 * replaced by "***"; returns 0 when there was none (then pushes nothing). */
static int push_scrubbed(lua_State *L, const char *s, size_t n, const char *tok) {
  size_t tn = tok ? strlen(tok) : 0;
  if (tn == 0 || find_bytes(s, n, tok, tn) == NULL) return 0;
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

/* eng:scrub(s): every occurrence of the token in the whole byte string s
 * (past any NUL byte) replaced by "***". For text that came from a server. */
static int l_scrub(lua_State *L) {
  lengine *le = check_class(L, 1, KL_UP_ENGINE, ENGINE_MT);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (!push_scrubbed(L, s, n, le->open ? le->e.net.token : NULL)) lua_settop(L, 2);
  return 1;
}

/* Sets field k of the table on top to v, a header value from a server, with
 * the client's token masked (as eng:scrub); nothing for NULL or "". */
static void set_header(lua_State *L, const kxfer *x, const char *k, const char *v) {
  if (v == NULL || v[0] == '\0') return;
  if (!push_scrubbed(L, v, strlen(v), x->net && !x->net->closed ? x->net->token : NULL)) lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* ------------------------------------------------------------ transfers */

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

/* x:key() -> a light userdata naming this transfer in eng:finished() */
static int l_xfer_key(lua_State *L) {
  lxfer *lx = check_class(L, 1, KL_UP_XFER, XFER_MT);
  if (lx->x == NULL) return luaL_argerror(L, 1, "transfer is released");
  lua_pushlightuserdata(L, lx->x);
  return 1;
}

/* x:result() -> nil while running; then { status=, body=, bytes=, path=,
 *   resumed_from=, complete=, content_type=, content_length=, retry_after=
 *   (header values, the token masked as eng:scrub masks it),
 *   http_version=, time=, attempts=, error = nil | { kind=, message=,
 *   curl_code=, sent=, path=, proxy_status= } }
 * (a download: path is set when the file is in place; error.path names the
 * file of an "io" error) */
static int l_xfer_result(lua_State *L) {
  kxfer *x = check_xfer(L, 1);
  if (x->state != KX_DONE) return 0;
  kl_push_result(L, x);
  return 1;
}

void kl_push_result(lua_State *L, kxfer *x) {
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
  set_header(L, x, "content_type", x->content_type);
  set_header(L, x, "content_length", x->content_length);
  set_header(L, x, "retry_after", x->retry_after);
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

/* x:again() -> true | false: sends a finished API request again, after the
 * engine's backoff (at least its answer's Retry-After), for an answer the
 * caller read as retryable by the protocol (kproto_answer_kind, or a status
 * answer without a usable status); false when the client's retries are
 * spent or the answer asks to wait longer than retries.retry_after_cap. */
static int l_xfer_again(lua_State *L) {
  kxfer *x = check_xfer(L, 1);
  lua_getiuservalue(L, 1, 1);
  lengine *le = kl_check_engine(L, -1);
  int rc = kengine_again(&le->e, x);
  if (rc < 0) return luaL_argerror(L, 1, "not a finished API request");
  lua_pushboolean(L, rc);
  return 1;
}

/* Releases the transfer: aborts it when still running. Idempotent. */
static int l_xfer_close(lua_State *L) {
  lxfer *lx = check_class(L, 1, KL_UP_XFER, XFER_MT);
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
  lxfer *lx = check_class(L, 1, KL_UP_XFER, XFER_MT);
  static const char *const names[] = { "new", "running", "done" };
  if (lx->x == NULL) lua_pushstring(L, "kling.core.transfer (released)");
  else lua_pushfstring(L, "kling.core.transfer (%s)", names[lx->x->state]);
  return 1;
}

/* --------------------------------------------------------- module functions */

/* core.wait_fds({fd | { fd =, events = "r" | "w" | "rw" }, ...}, seconds) ->
 * true when one is ready (a bare fd: readable), false on timeout: the kernel
 * wait of a scheduler that drives several clients (client:pollfds()). */
static int l_wait_fds(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  double t = luaL_checknumber(L, 2);
  struct pollfd few[KL_WAIT_FDS], *fds = few;
  lua_Integer n = luaL_len(L, 1);
  if (n > KL_WAIT_FDS_MAX) return luaL_argerror(L, 1, "too many descriptors (LIMITS.wait_fds)");
  /* more than fit on the C stack (the poll backend gives a descriptor per
   * connection of each client): a block the collector frees, also on a raise */
  if (n > KL_WAIT_FDS) fds = lua_newuserdatauv(L, (size_t)n * sizeof *fds, 0);
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    fds[i].events = POLLIN;
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "events");
      const char *w = luaL_optstring(L, -1, "r");
      fds[i].events = (short)((strchr(w, 'r') ? POLLIN : 0) | (strchr(w, 'w') ? POLLOUT : 0));
      lua_pop(L, 1);
      lua_getfield(L, -1, "fd");
      lua_replace(L, -2);
    }
    fds[i].fd = (int)luaL_checkinteger(L, -1);
    fds[i].revents = 0;
    lua_pop(L, 1);
  }
  int rc = poll(fds, (nfds_t)n, kwait_ms(t));
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
  lua_pushnumber(L, know());
  return 1;
}

void kl_open_engine(lua_State *L) {
  static const luaL_Reg engine_methods[] = {
    { "request", l_request }, { "step", l_step },     { "pending", l_pending },
    { "scrub", l_scrub },     { "timeout", l_timeout }, { "pollfd", l_pollfd },
    { "stats", l_stats },     { "finished", l_finished }, { "close", l_engine_close },
    { "pollfds", l_pollfds },
    { NULL, NULL },
  };
  static const luaL_Reg engine_meta[] = {
    { "__gc", l_engine_close }, { "__close", l_engine_close },
    { "__tostring", l_engine_tostring }, { NULL, NULL },
  };
  static const luaL_Reg xfer_methods[] = {
    { "done", l_xfer_done }, { "result", l_xfer_result }, { "progress", l_xfer_progress },
    { "again", l_xfer_again }, { "abort", l_xfer_abort }, { "close", l_xfer_close },
    { "key", l_xfer_key }, { NULL, NULL },
  };
  static const luaL_Reg xfer_meta[] = {
    { "__gc", l_xfer_close }, { "__close", l_xfer_close },
    { "__tostring", l_xfer_tostring }, { NULL, NULL },
  };
  static const luaL_Reg functions[] = {
    { "new", l_new }, { "now", l_now }, { "wait_fds", l_wait_fds },
    { "check_download_target", l_check_download_target }, { NULL, NULL },
  };
  luaL_newmetatable(L, ENGINE_MT);
  luaL_newmetatable(L, XFER_MT);
  lua_pop(L, 2);
  kl_class_upvalues(L);
  kl_class_up(L, ENGINE_MT, engine_meta, engine_methods, 2);
  kl_class_upvalues(L);
  kl_class_up(L, XFER_MT, xfer_meta, xfer_methods, 2);
  luaL_setfuncs(L, functions, 0);
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_setfield(L, -2, "curl_version");
  lua_pushstring(L, kev_name); /* the event seam's backend: epoll, kqueue or poll */
  lua_setfield(L, -2, "event_backend");
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
}
