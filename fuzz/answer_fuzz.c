/*
 * answer_fuzz.c - libFuzzer target: what the C core does with the server's
 * answers while it polls a job.
 *
 * Once per process: a Lua state with kling.core linked in (fuzz_common.h)
 * and one real engine, core.new{ base_url = "http://127.0.0.1:9/v1" }, with
 * its poller (nothing is ever sent: the transfers below never get an easy
 * handle). For each input: the poller's learned state is reset, a job is
 * watched (eng:watch), and then, for each exchange the input describes, a
 * transfer is built (kxfer_fuzz_new), fed header lines through libcurl's
 * header callback and body bytes through its write callback, finished with
 * a status code and CURLcode from the input, classified (kxfer_error_kind,
 * kxfer_error_message, the table x:result() gives) and handed to the
 * poller's finished() as the answer to the request the poller would have
 * sent (kpoller_fuzz_answer): status absorption, error bodies, decode
 * failures, retries and Retry-After, the result fetch. Between exchanges the
 * clock moves on by an amount the input gives, and eng:updates() may be
 * read. At the end the job is unwatched.
 *
 * Input layout:
 *   byte 0: bits 0-2 the watch's initial status (see INITIAL), bit 3 read
 *           eng:updates() after every answer
 *   then exchanges, each:
 *     c0 c1  HTTP status, big-endian, modulo 1000
 *     c2     bits 0-6 the CURLcode the transfer ended with (0: CURLE_OK);
 *            bit 7 the request went out (pretransfer time > 0)
 *     c3     size of the pieces the body is written in (0: all at once)
 *     c4     eighths of a second since the previous answer
 *     c5     max_body: 0 the default (8 MiB), else c5 * 16 bytes
 *     header lines, each up to and including its '\n', ended by an empty
 *     line ("\n" or "\r\n"); then the body, up to "\n%%\n" or the input's end.
 *
 * Checked besides ASan/UBSan/LSan: the Lua stack is balanced after every
 * answer, the poller's count of requests in flight returns to 0, an error
 * kind is one the Lua layer knows, updates have the documented shape, the
 * registry does not grow without bound (no leaked references), and nothing
 * is watched once the job is unwatched.
 *
 *   make fuzz-build && build-fuzz/answer_fuzz fuzz/corpus/answer
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "../src/core.h"

kxfer *kxfer_fuzz_new(size_t max_body);
size_t kxfer_fuzz_header(kxfer *x, char *line, size_t n);
size_t kxfer_fuzz_body(kxfer *x, char *p, size_t n);
void kxfer_fuzz_finish(kxfer *x, CURLcode code, long status, curl_off_t pretransfer, double total_time);
void kpoller_fuzz_reset(kpoller *p);
int kpoller_fuzz_answer(lua_State *L, kpoller *p, kengine *e, int handle, kxfer *x, double now,
                        int *phase_was_result, int *inflight_after);
int kpoller_fuzz_phase(kpoller *p, int handle);

#define API "http://127.0.0.1:9/v1"
#define MAX_EXCHANGES 64
#define REGISTRY_BOUND 4096 /* live references stay far below this unless some leak */

static const char *const INITIAL[8] = {
  NULL, "in_queue", "in_progress", "completed", "succeeded", "paused_by_operator",
  "a-status-word-longer-than-the-forty-eight-bytes-the-poller-keeps", "",
};

static const char *const KINDS[] = {
  "aborted", "too_large", "io", "memory", "resolve", "connect", "tls",
  "timeout", "truncated", "redirect", "network", "proxy", NULL,
};

static lua_State *L;
static int eng_ref = LUA_NOREF;
static lengine *le;
static int verbose; /* KLING_FUZZ_VERBOSE=1: say what each answer did (to replay an input) */

static void setup(void) {
  L = fuzz_new_state();
  lua_getfield(L, -1, "new");
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, API);
  lua_setfield(L, -2, "base_url");
  lua_pushliteral(L, "fuzz-token-never-sent");
  lua_setfield(L, -2, "token");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "core.new failed: %s\n", lua_tostring(L, -1));
    abort();
  }
  le = luaL_checkudata(L, -1, ENGINE_MT);
  verbose = getenv("KLING_FUZZ_VERBOSE") != NULL;
  eng_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1); /* kling.core */
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setup();
  return 0;
}

/* Calls eng:<method>(arg) where arg is the value at index a (0: no argument);
 * leaves nresults values on the stack. Aborts when it raises. */
static void call_engine(const char *method, int a, int nresults) {
  if (a < 0) a = lua_gettop(L) + a + 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, eng_ref);
  lua_getfield(L, -1, method);
  lua_insert(L, -2);
  if (a) lua_pushvalue(L, a);
  if (lua_pcall(L, a ? 2 : 1, nresults, 0) != LUA_OK) {
    fprintf(stderr, "\n*** eng:%s raised: %s\n", method, lua_tostring(L, -1));
    abort();
  }
}

/* eng:updates(), checked for the documented shape. */
static void read_updates(lua_Integer handle) {
  int top = lua_gettop(L);
  call_engine("updates", 0, 1);
  FUZZ_CHECK(lua_istable(L, -1), "updates is not a table");
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    FUZZ_CHECK(lua_istable(L, -1), "update %lld is not a table", (long long)i);
    lua_getfield(L, -1, "handle");
    FUZZ_CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == handle, "update for a handle never watched");
    lua_pop(L, 1);
    lua_getfield(L, -1, "status");
    FUZZ_CHECK(lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, "update status is not a string");
    lua_pop(L, 1);
    lua_getfield(L, -1, "queue_position");
    FUZZ_CHECK(lua_isnil(L, -1) || (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0),
               "queue_position is not a non-negative integer");
    lua_pop(L, 1);
    lua_getfield(L, -1, "done");
    int done = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (verbose) {
      lua_getfield(L, -1, "status");
      lua_getfield(L, -2, "queue_position");
      fprintf(stderr, "  update: status %s, queue_position %s%s\n", luaL_optstring(L, -2, "-"),
              lua_isnil(L, -1) ? "-" : lua_tostring(L, -1), done ? ", done" : "");
      lua_pop(L, 2);
    }
    lua_getfield(L, -1, "result");
    int has_result = lua_istable(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "failure");
    int has_failure = lua_istable(L, -1);
    if (has_failure) {
      lua_getfield(L, -1, "status");
      FUZZ_CHECK(lua_isinteger(L, -1), "failure without an integer status");
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "route");
    const char *route = lua_tostring(L, -1);
    FUZZ_CHECK(has_failure ? route && (strcmp(route, "status") == 0 || strcmp(route, "result") == 0) : route == NULL,
               "a failure without its route (status or result), or a route without a failure");
    lua_pop(L, 1);
    FUZZ_CHECK(!done || has_result + has_failure == 1, "a done job has %d of result and failure",
               has_result + has_failure);
    FUZZ_CHECK(done || has_result + has_failure == 0, "a job that is not done has a result or failure");
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

/* The error classification of a finished transfer, as the Lua layer reads it. */
static void classify(kxfer *x) {
  int sent = -1;
  const char *kind = kxfer_error_kind(x, &sent);
  FUZZ_CHECK(sent == 0 || sent == 1, "sent is %d", sent);
  if (kind) {
    int known = 0;
    for (int i = 0; KINDS[i]; i++) known |= strcmp(kind, KINDS[i]) == 0;
    FUZZ_CHECK(known, "unknown error kind '%s'", kind);
  }
  char msg[CURL_ERROR_SIZE + 128];
  memset(msg, 'x', sizeof msg);
  kxfer_error_message(x, msg, sizeof msg);
  FUZZ_CHECK(memchr(msg, '\0', sizeof msg) != NULL && msg[0] != '\0', "error message not a C string");
  int top = lua_gettop(L);
  kcore_push_result(L, x);
  FUZZ_CHECK(lua_gettop(L) == top + 1 && lua_istable(L, -1), "x:result() pushed %d values", lua_gettop(L) - top);
  lua_getfield(L, -1, "error");
  FUZZ_CHECK(lua_isnil(L, -1) == (kind == NULL), "x:result().error disagrees with kxfer_error_kind");
  lua_settop(L, top);
}

/* Feeds one header line, as libcurl does: in a buffer of exactly its size. */
static void feed_header(kxfer *x, const uint8_t *p, size_t n) {
  char *line = malloc(n ? n : 1);
  FUZZ_CHECK(line != NULL, "out of memory");
  memcpy(line, p, n);
  size_t r = kxfer_fuzz_header(x, line, n);
  free(line);
  FUZZ_CHECK(r == n, "the header callback took %zu of %zu bytes", r, n);
}

/* Feeds the body in pieces; returns the CURLcode libcurl would end with. */
static CURLcode feed_body(kxfer *x, const uint8_t *p, size_t n, size_t piece) {
  size_t off = 0;
  while (off < n) {
    size_t k = piece && n - off > piece ? piece : n - off;
    char *buf = malloc(k);
    FUZZ_CHECK(buf != NULL, "out of memory");
    memcpy(buf, p + off, k);
    size_t r = kxfer_fuzz_body(x, buf, k);
    free(buf);
    if (r != k) return CURLE_WRITE_ERROR; /* libcurl stops the transfer */
    off += k;
  }
  return CURLE_OK;
}

static const uint8_t *find_sep(const uint8_t *p, size_t n) {
  static const char sep[] = "\n%%\n";
  size_t k = sizeof sep - 1;
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp(p + i, sep, k) == 0) return p + i;
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  if (size < 1) return 0;
  int top = lua_gettop(L);
  kpoller *p = &le->p;
  kengine *e = &le->e;
  kpoller_fuzz_reset(p);

  /* watch a job */
  const char *initial = INITIAL[data[0] & 7];
  int updates_each = (data[0] & 8) != 0;
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, API "/requests/fuzz-1/status");
  lua_setfield(L, -2, "status_url");
  lua_pushliteral(L, API "/requests/fuzz-1/result");
  lua_setfield(L, -2, "result_url");
  lua_pushnumber(L, 0);
  lua_setfield(L, -2, "delay");
  if (initial) {
    lua_pushstring(L, initial);
    lua_setfield(L, -2, "status");
  }
  call_engine("watch", -1, 1);
  FUZZ_CHECK(lua_isinteger(L, -1), "eng:watch gave no handle");
  lua_Integer handle = lua_tointeger(L, -1);
  lua_settop(L, top);

  double now = kengine_now();
  size_t pos = 1;
  for (int ex = 0; ex < MAX_EXCHANGES && size - pos >= 6; ex++) {
    const uint8_t *c = data + pos;
    long status = (long)(((unsigned)c[0] << 8 | c[1]) % 1000);
    CURLcode code = (CURLcode)(c[2] & 0x7f);
    curl_off_t pretransfer = (c[2] & 0x80) ? 1500 : 0;
    size_t piece = c[3];
    now += c[4] / 8.0;
    size_t max_body = c[5] ? (size_t)c[5] * 16 : 8u * 1024u * 1024u;
    pos += 6;

    const uint8_t *end = find_sep(data + pos, size - pos);
    size_t len = end ? (size_t)(end - (data + pos)) : size - pos;
    const uint8_t *q = data + pos, *qend = q + len;
    pos += len + (end ? 4 : 0);

    kxfer *x = kxfer_fuzz_new(max_body);
    FUZZ_CHECK(x != NULL, "out of memory");
    while (q < qend) { /* header lines */
      const uint8_t *nl = memchr(q, '\n', (size_t)(qend - q));
      size_t n = nl ? (size_t)(nl - q) + 1 : (size_t)(qend - q);
      int blank = (n == 1 && q[0] == '\n') || (n == 2 && q[0] == '\r' && q[1] == '\n');
      feed_header(x, q, n);
      q += n;
      if (blank) break;
    }
    CURLcode body_code = feed_body(x, q, (size_t)(qend - q), piece);
    if (body_code != CURLE_OK) code = body_code; /* a refused write ends the transfer */
    kxfer_fuzz_finish(x, code, status, pretransfer, c[4] / 8.0);
    classify(x);

    int was_result = 0, inflight = -1;
    if (kpoller_fuzz_answer(L, p, e, (int)handle, x, now, &was_result, &inflight) != 0) {
      kxfer_free(x); /* the job has ended: no more answers */
      break;
    }
    FUZZ_CHECK(lua_gettop(L) == top, "the poller left the Lua stack at %d (was %d) after a %s answer",
               lua_gettop(L), top, was_result ? "result" : "status");
    FUZZ_CHECK(inflight == 0, "the poller counts %d requests in flight", inflight);
    if (verbose) {
      fprintf(stderr, "answer %d to the %s request: HTTP %ld, curl %d, %zu body bytes -> %s\n", ex + 1,
              was_result ? "result" : "status", status, (int)code, (size_t)(qend - q),
              kpoller_fuzz_phase(p, (int)handle) == 3 ? "done" : "polling on");
    }
    if (updates_each) read_updates(handle);
  }

  read_updates(handle);
  lua_pushinteger(L, handle);
  call_engine("unwatch", -1, 0);
  lua_settop(L, top);
  FUZZ_CHECK(kpoller_fuzz_phase(p, (int)handle) == -1, "the job is still watched after unwatch");
  call_engine("poll_stats", 0, 1);
  lua_getfield(L, -1, "watched");
  FUZZ_CHECK(lua_tointeger(L, -1) == 0, "%lld jobs still watched", (long long)lua_tointeger(L, -1));
  lua_settop(L, top);
  /* A full collection after every input: libFuzzer then sees as many frees
   * as mallocs and goes on checking for leaks after every input (Lua's
   * garbage would otherwise look like a leak, and it would stop trying). */
  lua_gc(L, LUA_GCCOLLECT);
  FUZZ_CHECK(lua_rawlen(L, LUA_REGISTRYINDEX) < REGISTRY_BOUND, "the registry holds %llu references",
             (unsigned long long)lua_rawlen(L, LUA_REGISTRYINDEX));
  return 0;
}
