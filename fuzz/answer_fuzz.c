/*
 * answer_fuzz.c - libFuzzer target: what kling does with the service's
 * answers while it waits on a job, from the bytes on the wire to the job's
 * outcome.
 *
 * Once per process: a Lua state with kling.core linked in (fuzz_common.h)
 * and fuzz/answer_harness.lua loaded, which makes one client (kling.new on a
 * loopback address: nothing is ever sent; the transfers below never get an
 * easy handle). For each input: the poller's learned state is reset, a job
 * is waited on (harness.watch), and then, for each exchange the input
 * describes, a transfer is built (kxfer_fuzz_new), fed header lines through
 * libcurl's header callback and body bytes through its write callback,
 * finished with a status code and CURLcode from the input, classified
 * (kxfer_error_kind, kxfer_error_message, the table x:result() gives) and
 * queued on the poller as the answer to the request it would have sent
 * (kpoller_fuzz_answer). The harness then runs the client's own intake
 * (Client:_pump): the answer decoded and masked where it enters, read by the
 * protocol (kling.protocol.judge), handed back to the C poller as an
 * observation (eng:observe), which schedules the next poll (backoff,
 * Retry-After, the result fetch) or ends the wait, and applied to the job.
 * The C poller itself never reads a body: this target covers both halves of
 * the rule. At the end the wait stops.
 *
 * Input layout:
 *   byte 0: bits 0-2 the job's status word so far (see INITIAL); bit 3 unused
 *   then exchanges, each:
 *     c0 c1  HTTP status, big-endian, modulo 1000
 *     c2     bits 0-6 the CURLcode the transfer ended with (0: CURLE_OK);
 *            bit 7 the request went out (pretransfer time > 0)
 *     c3     size of the pieces the body is written in (0: all at once)
 *     c4     eighths of a second of transfer time
 *     c5     max_body: 0 the default (8 MiB), else c5 * 16 bytes
 *     header lines, each up to and including its '\n', ended by an empty
 *     line ("\n" or "\r\n"); then the body, up to "\n%%\n" or the input's end.
 *
 * Checked besides ASan/UBSan/LSan: the Lua stack is balanced, every answer
 * queued is observed (no watch is left waiting for the Lua layer), the
 * poller's count of requests in flight stays 0, an error kind is one the Lua
 * layer knows, the harness's invariants on the job (its status, queue
 * position and outcome; the token masked everywhere), the registry does not
 * grow without bound, and nothing is watched once the wait stops.
 *
 *   make fuzz-build && build-fuzz/answer_fuzz fuzz/corpus/answer
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "../src/lua_engine.h"

kxfer *kxfer_fuzz_new(size_t max_body);
size_t kxfer_fuzz_header(kxfer *x, char *line, size_t n);
size_t kxfer_fuzz_body(kxfer *x, char *p, size_t n);
void kxfer_fuzz_finish(kxfer *x, CURLcode code, long status, curl_off_t pretransfer, double total_time);

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
static int harness_ref = LUA_NOREF, traceback_ref = LUA_NOREF;
static lengine *le;
static int verbose; /* KLING_FUZZ_VERBOSE=1: say what each answer did (to replay an input) */

/* Calls harness[fn](arg) (arg: a string, or NULL for none, or the integer
 * *iarg when iarg is given); leaves nresults values. Aborts when it raises. */
static void call_harness(const char *fn, const char *arg, int nresults) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, traceback_ref);
  int tb = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, harness_ref);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  int nargs = 0;
  if (arg) {
    lua_pushstring(L, arg);
    nargs = 1;
  }
  if (lua_pcall(L, nargs, nresults, tb) != LUA_OK) {
    fprintf(stderr, "\n*** answer_fuzz: harness.%s: %s\n", fn, lua_tostring(L, -1));
    abort();
  }
  lua_remove(L, tb);
}

static void setup(void) {
  L = fuzz_new_state();
  lua_pop(L, 1); /* kling.core */
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "answer_harness");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
    fprintf(stderr, "cannot load fuzz/answer_harness.lua: %s\n", lua_tostring(L, -1));
    abort();
  }
  harness_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  call_harness("engine", NULL, 1);
  le = luaL_checkudata(L, -1, ENGINE_MT);
  lua_pop(L, 1); /* the harness's client keeps it alive */
  verbose = getenv("KLING_FUZZ_VERBOSE") != NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setup();
  return 0;
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
  kl_push_result(L, x);
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

  call_harness("watch", INITIAL[data[0] & 7], 1);
  FUZZ_CHECK(lua_isinteger(L, -1), "harness.watch gave no handle");
  int handle = (int)lua_tointeger(L, -1);
  lua_settop(L, top);

  size_t pos = 1;
  for (int ex = 0; ex < MAX_EXCHANGES && size - pos >= 6; ex++) {
    const uint8_t *c = data + pos;
    long status = (long)(((unsigned)c[0] << 8 | c[1]) % 1000);
    CURLcode code = (CURLcode)(c[2] & 0x7f);
    curl_off_t pretransfer = (c[2] & 0x80) ? 1500 : 0;
    size_t piece = c[3];
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

    int route = -1;
    if (kpoller_fuzz_answer(p, e, handle, x, &route) != 0) {
      kxfer_free(x); /* the wait has ended: no more answers */
      break;
    }
    call_harness("pump", NULL, 1);
    int ended = lua_toboolean(L, -1);
    lua_settop(L, top);
    int phase = kpoller_fuzz_phase(p, handle);
    FUZZ_CHECK(phase != 3 && phase != 4, "an answer was left unread (phase %d)", phase);
    FUZZ_CHECK(p->inflight == 0, "the poller counts %d requests in flight", p->inflight);
    FUZZ_CHECK(ended == (phase == -1), "the wait %s but the poller %s", ended ? "has an outcome" : "goes on",
               phase == -1 ? "has let the job go" : "still watches it");
    if (verbose) {
      fprintf(stderr, "answer %d to the %s request: HTTP %ld, curl %d, %zu body bytes -> %s\n", ex + 1,
              route == KP_RESULT ? "result" : "status", status, (int)code, (size_t)(qend - q),
              ended ? "the wait ended" : "polling on");
    }
    if (ended) break;
  }

  call_harness("finish", NULL, 0);
  lua_settop(L, top);
  FUZZ_CHECK(kpoller_watched(p) == 0, "%d jobs still watched", kpoller_watched(p));
  /* A full collection after every input: libFuzzer then sees as many frees
   * as mallocs and goes on checking for leaks after every input (Lua's
   * garbage would otherwise look like a leak, and it would stop trying). */
  lua_gc(L, LUA_GCCOLLECT);
  FUZZ_CHECK(lua_rawlen(L, LUA_REGISTRYINDEX) < REGISTRY_BOUND, "the registry holds %llu references",
             (unsigned long long)lua_rawlen(L, LUA_REGISTRYINDEX));
  return 0;
}
