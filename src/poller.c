/*
 * poller.c - the polling engine (see poller.h).
 *
 * Runs only when the Lua layer drives the engine (eng:step), never inside a
 * libcurl callback; it decodes answers with lua-cjson through the Lua state.
 * What the Lua layer learns from it comes through eng:updates(): a table per
 * watched job whose status or queue position changed, that ended (with the
 * decoded result), or whose polling failed for good (with the exchange, as
 * x:result() gives it, for the Lua layer to turn into an error).
 */
#define _POSIX_C_SOURCE 200809L
#include "poller.h"
#include "core.h"
#include "jsonw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { W_WAIT, W_STATUS, W_RESULT, W_DONE };

typedef struct kwatch {
  int handle;
  char *status_url, *result_url;
  double next;
  int heap_pos;            /* -1 when not scheduled */
  int phase;
  int want_result;
  kxfer *x;
  char status[24];         /* in_queue, in_progress, completed, failed, cancelled; "" unknown */
  char raw[48];            /* the word the service used */
  long long qpos;          /* -1 when none */
  double status_since;     /* when the current status was first seen */
  double qpos_since;
  double interval;
  int failures, decode_failures;
  double retry_after;      /* from the last answer, < 0 when none */
  int dirty;
  int result_ref;          /* the decoded result, once ended */
  int failure_ref;         /* the failed exchange */
  int failed_on_result;    /* ... was a result request (else a status request) */
  int polls, fetches;
} kwatch;

/* ------------------------------------------------------------------ heap */

static int heap_less(kwatch *a, kwatch *b) { return a->next < b->next; }

static void heap_swap(kpoller *p, int i, int j) {
  kwatch *t = p->heap[i];
  p->heap[i] = p->heap[j];
  p->heap[j] = t;
  p->heap[i]->heap_pos = i;
  p->heap[j]->heap_pos = j;
}

static void heap_up(kpoller *p, int i) {
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (!heap_less(p->heap[i], p->heap[parent])) break;
    heap_swap(p, i, parent);
    i = parent;
  }
}

static void heap_down(kpoller *p, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < p->nheap && heap_less(p->heap[l], p->heap[m])) m = l;
    if (r < p->nheap && heap_less(p->heap[r], p->heap[m])) m = r;
    if (m == i) break;
    heap_swap(p, i, m);
    i = m;
  }
}

static void heap_remove(kpoller *p, kwatch *w) {
  int i = w->heap_pos;
  if (i < 0) return;
  p->nheap--;
  if (i != p->nheap) {
    p->heap[i] = p->heap[p->nheap];
    p->heap[i]->heap_pos = i;
    heap_down(p, i);
    heap_up(p, i);
  }
  w->heap_pos = -1;
}

static int grow(void **arr, int *cap, int need, size_t elem) {
  if (need <= *cap) return 0;
  int ncap = *cap ? *cap * 2 : 64;
  while (ncap < need) ncap *= 2;
  void *n = realloc(*arr, (size_t)ncap * elem);
  if (n == NULL) return -1;
  *arr = n;
  *cap = ncap;
  return 0;
}

static int schedule_at(kpoller *p, kwatch *w, double at) {
  w->next = at;
  if (w->heap_pos >= 0) {
    heap_down(p, w->heap_pos);
    heap_up(p, w->heap_pos);
    return 0;
  }
  if (grow((void **)&p->heap, &p->capheap, p->nheap + 1, sizeof *p->heap) != 0) return -1;
  w->heap_pos = p->nheap;
  p->heap[p->nheap++] = w;
  heap_up(p, w->heap_pos);
  return 0;
}

/* ---------------------------------------------------------------- helpers */

static double rnd(kpoller *p) { /* xorshift64*, in [0, 1) */
  p->rng ^= p->rng >> 12;
  p->rng ^= p->rng << 25;
  p->rng ^= p->rng >> 27;
  return (double)((p->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static double jittered(kpoller *p, double d) {
  return d * (1 + p->o.jitter * (2 * rnd(p) - 1));
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static void mark(kpoller *p, kwatch *w) {
  if (w->dirty) return;
  if (grow((void **)&p->events, &p->capevents, p->nevents + 1, sizeof *p->events) != 0) return;
  p->events[p->nevents++] = w->handle;
  w->dirty = 1;
}

static const char *normalize(const char *raw) {
  static const struct { const char *raw, *norm; } map[] = {
    { "in_queue", "in_queue" },     { "pending", "in_queue" },        { "waiting", "in_queue" },
    { "in_progress", "in_progress" }, { "starting", "in_progress" },  { "processing", "in_progress" },
    { "completed", "completed" },   { "succeeded", "completed" },     { "failed", "failed" },
    { "cancelled", "cancelled" },   { "canceled", "cancelled" },
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (strcmp(raw, map[i].raw) == 0) return map[i].norm;
  return "";
}

/* A status word as the poller keeps it: at most n - 1 bytes, a NUL byte
 * written as the two characters \0 (so that "completed\0x" is never read as
 * "completed", and reaches Lua as it can be shown). */
static void keep_word(char *dst, size_t n, const char *src, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 1 < n; i++) {
    if (src[i] != '\0') {
      dst[o++] = src[i];
    } else if (o + 2 < n) {
      dst[o++] = '\\';
      dst[o++] = '0';
    } else {
      break;
    }
  }
  dst[o] = '\0';
}

/* The normalized status of a word of len bytes ("" when unknown; a word with
 * a NUL byte in it is no known word). */
static const char *normalize_word(const char *raw, size_t len) {
  return memchr(raw, '\0', len) ? "" : normalize(raw);
}

static int terminal(const char *status) {
  return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0;
}

/* When to poll next, from what the job did and what the client has seen. */
static double next_delay(kpoller *p, kwatch *w, double now, int moved) {
  const kpoll_opts *o = &p->o;
  double d;
  if (w->failures > 0) {
    d = o->initial * pow(2, w->failures < 10 ? w->failures : 10);
    d = clampd(d, o->min, o->max);
    if (w->retry_after >= 0) d = w->retry_after > d ? w->retry_after : d;
    return clampd(jittered(p, d), o->min, o->max > w->retry_after ? o->max : w->retry_after);
  }
  if (strcmp(w->status, "in_queue") == 0) {
    if (moved && w->qpos >= 0 && p->queue_rate > 0) {
      /* the queue moves: look again about when the job reaches the front */
      d = clampd((double)(w->qpos + 1) / p->queue_rate, o->min, o->near);
    } else {
      d = clampd(w->interval * o->factor, o->min, o->near * 2);
    }
  } else {
    double elapsed = now - w->status_since;
    double earliest = p->run_n > 0 ? 0.9 * p->run_min : 0;
    if (strcmp(w->status, "in_progress") == 0 && elapsed + o->near < earliest) {
      /* no job has run this short yet: sleep towards the earliest end seen */
      d = clampd(earliest - elapsed, o->near, o->max);
    } else {
      d = clampd(w->interval * o->factor, o->min, o->near);
    }
  }
  return jittered(p, d);
}

static void free_watch(lua_State *L, kpoller *p, kengine *e, kwatch *w) {
  heap_remove(p, w);
  if (w->x) {
    if (w->x->engine) kengine_remove(e, w->x);
    if (w->phase == W_STATUS || w->phase == W_RESULT) p->inflight--;
    /* a finished poll may wait on the engine's owned_done list: unlink it */
    for (kxfer **pp = &e->owned_done; *pp; pp = &(*pp)->next_done)
      if (*pp == w->x) {
        *pp = w->x->next_done;
        break;
      }
    kxfer_free(w->x);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, w->result_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->failure_ref);
  p->slots[w->handle - 1] = NULL;
  if (grow((void **)&p->free_handles, &p->capfree, p->nfree + 1, sizeof *p->free_handles) == 0)
    p->free_handles[p->nfree++] = w->handle;
  free(w->status_url);
  free(w->result_url);
  free(w);
}

/* ------------------------------------------------------------- lifecycle */

void kpoller_init(lua_State *L, kpoller *p, int max_inflight) {
  memset(p, 0, sizeof *p);
  p->max_inflight = max_inflight > 0 ? max_inflight : 32;
  p->o.initial = 1;
  p->o.min = 0.5;
  p->o.max = 30;
  p->o.near = 5;
  p->o.factor = 1.5;
  p->o.jitter = 0.1;
  p->run_min = -1;
  p->queue_rate = -1;
  p->rng = (unsigned long long)(kengine_now() * 1e6) | 1;
  p->decode_ref = LUA_NOREF;
  /* a private lua-cjson instance: cjson.new().decode, as deep as the writer
   * writes (lua-cjson stops at 1000 levels by default) */
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    lua_getfield(L, -1, "new");
    if (lua_pcall(L, 0, 1, 0) == LUA_OK && lua_istable(L, -1)) {
      lua_getfield(L, -1, "decode_max_depth");
      lua_pushinteger(L, KJSONW_MAX_DEPTH);
      if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
      lua_getfield(L, -1, "decode");
      p->decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
  }
  lua_settop(L, top);
}

void kpoller_close(lua_State *L, kpoller *p, kengine *e) {
  for (int i = 0; i < p->nslots; i++)
    if (p->slots[i]) free_watch(L, p, e, p->slots[i]);
  luaL_unref(L, LUA_REGISTRYINDEX, p->decode_ref);
  p->decode_ref = LUA_NOREF;
  free(p->slots);
  free(p->free_handles);
  free(p->heap);
  free(p->events);
  p->slots = NULL;
  p->free_handles = NULL;
  p->heap = NULL;
  p->events = NULL;
  p->nslots = p->nfree = p->nheap = p->nevents = 0;
}

/* ---------------------------------------------------------------- answers */

/* Decodes the body of x; pushes a table and returns 1, or pushes nothing. */
static int decode(lua_State *L, kpoller *p, kxfer *x) {
  if (p->decode_ref == LUA_NOREF || x->body.len == 0) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->decode_ref);
  lua_pushlstring(L, x->body.data, x->body.len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Takes in a status (or result) body at the top of the stack. Returns 1
 * when the job's status is terminal. */
static int absorb(kpoller *p, kwatch *w, lua_State *L, double now, int *moved) {
  *moved = 0;
  lua_getfield(L, -1, "status");
  /* a usable status is a string of at least one byte (a number is none: no lua_tostring on it) */
  if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0) {
    lua_pop(L, 1);
    return -1;
  }
  size_t rawlen;
  const char *raw = lua_tolstring(L, -1, &rawlen);
  const char *norm = normalize_word(raw, rawlen);
  char kept[sizeof w->raw]; /* compared as it is kept, so a long word is not news every time */
  keep_word(kept, sizeof kept, raw, rawlen);
  int changed = strcmp(kept, w->raw) != 0;
  if (changed) {
    if (strcmp(w->status, "in_progress") == 0 && terminal(norm)) {
      double run = now - w->status_since; /* learn how long jobs run */
      if (p->run_min < 0 || run < p->run_min) p->run_min = run;
      p->run_n++;
    }
    memcpy(w->raw, kept, sizeof kept);
    snprintf(w->status, sizeof w->status, "%s", norm);
    w->status_since = now;
    w->interval = p->o.initial;
  }
  lua_pop(L, 1);
  long long qpos = -1;
  if (strcmp(norm, "in_queue") == 0) {
    lua_getfield(L, -1, "queue_position");
    if (lua_type(L, -1) == LUA_TNUMBER) {
      double d = lua_tonumber(L, -1);
      if (d >= 0 && d < 1e12) qpos = (long long)d;
    }
    lua_pop(L, 1);
  }
  if (qpos != w->qpos) {
    if (w->qpos > qpos && qpos >= 0 && now > w->qpos_since) {
      double rate = (double)(w->qpos - qpos) / (now - w->qpos_since);
      p->queue_rate = p->queue_rate < 0 ? rate : 0.8 * p->queue_rate + 0.2 * rate;
      *moved = 1;
    }
    w->qpos = qpos;
    w->qpos_since = now;
    changed = 1;
  }
  if (changed) mark(p, w);
  return terminal(norm);
}

/* Is a transport failure worth another try? (An answer is judged by
 * kanswer_kind, the one rule for answers; a proxy's refusal too.) */
static int transport_retryable(const kxfer *x, const char *kind) {
  if (strcmp(kind, "proxy") == 0) {
    int again = 0;
    if (x->proxy_status) kanswer_kind(x->proxy_status, 0, 0, &again);
    else again = x->code == CURLE_COULDNT_RESOLVE_PROXY;
    return again;
  }
  return strcmp(kind, "resolve") == 0 || strcmp(kind, "connect") == 0 || strcmp(kind, "timeout") == 0
         || strcmp(kind, "network") == 0 || strcmp(kind, "truncated") == 0;
}

static void fail(lua_State *L, kpoller *p, kwatch *w, kxfer *x, int was_result) {
  kcore_push_result(L, x);
  luaL_unref(L, LUA_REGISTRYINDEX, w->failure_ref);
  w->failure_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->failed_on_result = was_result;
  w->phase = W_DONE;
  heap_remove(p, w);
  mark(p, w);
}

static void finished(lua_State *L, kpoller *p, kengine *e, kwatch *w, kxfer *x, double now) {
  int was_result = w->phase == W_RESULT;
  w->x = NULL;
  w->phase = W_WAIT;
  p->inflight--;
  int retry = 0, moved = 0, sent, decoded = 0;
  const char *tkind = kxfer_error_kind(x, &sent);
  const char *ekind = NULL;
  int again = 0;
  if (tkind == NULL) { /* an answer: an error by the one rule (kanswer_kind), whatever its status? */
    decoded = decode(L, p, x);
    long long code = 0;
    int has_code = 0;
    if (decoded) {
      lua_getfield(L, -1, "error_code");
      has_code = kcore_error_code(L, -1, &code);
      lua_pop(L, 1);
    }
    ekind = kanswer_kind(x->status, has_code, code, &again);
    if (ekind && decoded) lua_pop(L, 1);
  }
  if (tkind != NULL || ekind != NULL) {
    if (tkind ? !transport_retryable(x, tkind) : !again) {
      fail(L, p, w, x, was_result); /* the Lua layer makes the error of it, by the same rule */
      kxfer_free(x);
      return;
    }
    retry = 1; /* a retryable error (as an HTTP status or inside a 2xx body): until the wait's deadline */
    w->retry_after = kengine_retry_after(x->retry_after);
    if (w->retry_after > e->retry_after_cap) w->retry_after = e->retry_after_cap;
  } else {
    int t = -1;
    if (decoded) {
      t = absorb(p, w, L, now, &moved);
      if (t < 0) lua_pop(L, 1);
    }
    if (t < 0) {
      /* no usable status: not JSON, truncated, {}, [], a status that is no string (the one
       * rule: KANSWER_UNUSABLE_TRIES in engine.h): ask again, a few times, then the Lua layer
       * says what it is (protocol) */
      retry = 1;
      w->retry_after = -1;
      if (++w->decode_failures >= KANSWER_UNUSABLE_TRIES) {
        fail(L, p, w, x, was_result);
        kxfer_free(x);
        return;
      }
      goto next;
    }
    w->decode_failures = 0;
    w->failures = 0;
    w->retry_after = -1;
    if (t == 1 && was_result) {
      w->result_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops the result */
      w->phase = W_DONE;
      mark(p, w);
      kxfer_free(x);
      return;
    }
    lua_pop(L, 1);
    w->want_result = t == 1;
  }
next:
  kxfer_free(x);
  if (retry) {
    w->failures++;
    p->retries++;
  }
  if (w->want_result && !retry) schedule_at(p, w, now); /* the result, at once */
  else {
    w->interval = next_delay(p, w, now, moved);
    schedule_at(p, w, now + w->interval);
  }
}

/* How early a poll may go out to share a wake-up with one that is due: a
 * fifth of its interval, at most COALESCE_MAX seconds. */
#define COALESCE_MAX 1.0
static double slack(const kwatch *w) {
  double s = 0.2 * w->interval;
  return s < COALESCE_MAX ? s : COALESCE_MAX;
}

/* Notes that x, a status or result request for w, is in flight. */
static void begin_exchange(kpoller *p, kwatch *w, kxfer *x) {
  w->x = x;
  x->owner = w;
  w->phase = w->want_result ? W_RESULT : W_STATUS;
  if (w->want_result) {
    w->fetches++;
    p->fetches++;
  } else {
    w->polls++;
    p->polls++;
  }
  p->inflight++;
}

static void start_due(lua_State *L, kpoller *p, kengine *e, double now) {
  int woke = p->nheap > 0 && p->heap[0]->next <= now;
  while (p->nheap > 0 && p->inflight < p->max_inflight
         && (p->heap[0]->next <= now || (woke && p->heap[0]->next - slack(p->heap[0]) <= now))) {
    kwatch *w = p->heap[0];
    heap_remove(p, w);
    kx_spec s;
    memset(&s, 0, sizeof s);
    s.method = "GET";
    s.url = w->want_result ? w->result_url : w->status_url;
    char err[256];
    kxfer *x = kxfer_new(e, &s, err, sizeof err);
    if (x != NULL) {
      x->owner = w;
      if (kengine_add(e, x, err, sizeof err) != 0) {
        kxfer_free(x);
        x = NULL;
      }
    }
    if (x == NULL) { /* a URL the engine refuses: nothing to retry */
      lua_createtable(L, 0, 2);
      lua_pushinteger(L, 0);
      lua_setfield(L, -2, "status");
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "network");
      lua_setfield(L, -2, "kind");
      lua_pushstring(L, err);
      lua_setfield(L, -2, "message");
      lua_pushboolean(L, 0);
      lua_setfield(L, -2, "sent");
      lua_setfield(L, -2, "error");
      w->failure_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      w->failed_on_result = w->want_result;
      w->phase = W_DONE;
      mark(p, w);
      continue;
    }
    begin_exchange(p, w, x);
  }
}

int kpoller_run(lua_State *L, kpoller *p, kengine *e, int *owned) {
  int before = p->nevents;
  double now = kengine_now();
  *owned = 0;
  while (e->owned_done) {
    kxfer *x = e->owned_done;
    e->owned_done = x->next_done;
    x->next_done = NULL;
    (*owned)++;
    finished(L, p, e, (kwatch *)x->owner, x, now);
  }
  start_due(L, p, e, now);
  if (p->nheap > 0 && p->inflight < p->max_inflight) e->wake_at = p->heap[0]->next;
  else e->wake_at = -1;
  return p->nevents - before;
}

/* ------------------------------------------------------------ Lua methods */

static const char *field_string(lua_State *L, int t, const char *k, int required) {
  lua_getfield(L, t, k);
  size_t n = 0;
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  lua_pop(L, 1);
  if (required && s == NULL) luaL_error(L, "field '%s' must be a string", k);
  if (s && strlen(s) != n) luaL_error(L, "field '%s' must not hold a NUL byte", k);
  return s;
}

/* eng:watch{ status_url=, result_url=, delay=, status= } -> handle */
static int l_watch(lua_State *L) {
  lengine *le = kcore_check_engine(L, 1);
  kpoller *p = &le->p;
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *su = field_string(L, 2, "status_url", 1);
  const char *ru = field_string(L, 2, "result_url", 1);
  size_t stlen = 0;
  lua_getfield(L, 2, "status");
  const char *st = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &stlen) : NULL;
  lua_pop(L, 1); /* the string stays alive: the table holds it */
  lua_getfield(L, 2, "delay");
  double delay = luaL_optnumber(L, -1, p->o.initial);
  lua_pop(L, 1);
  kwatch *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "out of memory");
  w->status_url = malloc(strlen(su) + 1);
  w->result_url = malloc(strlen(ru) + 1);
  if (!w->status_url || !w->result_url) {
    free(w->status_url);
    free(w->result_url);
    free(w);
    return luaL_error(L, "out of memory");
  }
  strcpy(w->status_url, su);
  strcpy(w->result_url, ru);
  double now = kengine_now();
  w->heap_pos = -1;
  w->qpos = -1;
  w->status_since = w->qpos_since = now;
  w->interval = p->o.initial;
  w->retry_after = -1;
  w->result_ref = w->failure_ref = LUA_NOREF;
  if (st) {
    keep_word(w->raw, sizeof w->raw, st, stlen);
    snprintf(w->status, sizeof w->status, "%s", normalize_word(st, stlen));
  }
  int handle;
  if (p->nfree > 0) {
    handle = p->free_handles[--p->nfree];
  } else {
    if (grow((void **)&p->slots, &p->capslots, p->nslots + 1, sizeof *p->slots) != 0) goto oom;
    handle = ++p->nslots;
  }
  w->handle = handle;
  p->slots[handle - 1] = w;
  if (schedule_at(p, w, now + (delay > 0 ? delay : 0)) != 0) {
    p->slots[handle - 1] = NULL;
    p->free_handles[p->nfree++] = handle; /* room is there: it was taken from it or never used */
    goto oom;
  }
  if (p->inflight < p->max_inflight && (le->e.wake_at < 0 || w->next < le->e.wake_at)) le->e.wake_at = w->next;
  lua_pushinteger(L, handle);
  return 1;
oom:
  free(w->status_url);
  free(w->result_url);
  free(w);
  return luaL_error(L, "out of memory");
}

static kwatch *check_watch(lua_State *L, kpoller *p, int i) {
  lua_Integer h = luaL_checkinteger(L, i);
  if (h < 1 || h > p->nslots || p->slots[h - 1] == NULL) return NULL;
  return p->slots[h - 1];
}

/* eng:unwatch(handle): stops polling that job (idempotent) */
static int l_unwatch(lua_State *L) {
  lengine *le = kcore_check_engine(L, 1);
  kwatch *w = check_watch(L, &le->p, 2);
  if (w) free_watch(L, &le->p, &le->e, w);
  return 0;
}

/* eng:updates() -> { { handle=, status=, raw_status=, queue_position=,
 *   done=, result=, failure=, route= }, ... } for every watched job with news
 *   (route: "status" or "result", the request whose answer is the failure) */
static int l_updates(lua_State *L) {
  lengine *le = kcore_check_engine(L, 1);
  kpoller *p = &le->p;
  lua_createtable(L, p->nevents, 0);
  int n = 0;
  for (int i = 0; i < p->nevents; i++) {
    int h = p->events[i];
    kwatch *w = h >= 1 && h <= p->nslots ? p->slots[h - 1] : NULL;
    if (w == NULL || !w->dirty) continue;
    w->dirty = 0;
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, h);
    lua_setfield(L, -2, "handle");
    if (w->raw[0]) {
      lua_pushstring(L, w->status[0] ? w->status : w->raw);
      lua_setfield(L, -2, "status");
      lua_pushstring(L, w->raw);
      lua_setfield(L, -2, "raw_status");
    }
    if (w->qpos >= 0) {
      lua_pushinteger(L, (lua_Integer)w->qpos);
      lua_setfield(L, -2, "queue_position");
    }
    if (w->phase == W_DONE) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "done");
      if (w->result_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->result_ref);
        lua_setfield(L, -2, "result");
      }
      if (w->failure_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->failure_ref);
        lua_setfield(L, -2, "failure");
        lua_pushstring(L, w->failed_on_result ? "result" : "status");
        lua_setfield(L, -2, "route");
      }
    }
    lua_rawseti(L, -2, ++n);
  }
  p->nevents = 0;
  return 1;
}

static int opt_field(lua_State *L, int t, const char *k, double *v) {
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    int ok;
    double d = lua_tonumberx(L, -1, &ok);
    if (!ok || !(d >= 0) || d > 1e6) {
      lua_pop(L, 1);
      return luaL_error(L, "poll.%s must be a number between 0 and 1e6", k);
    }
    *v = d;
  }
  lua_pop(L, 1);
  return 0;
}

/* eng:set_poll{ initial=, min=, max=, near=, factor=, jitter= } */
static int l_set_poll(lua_State *L) {
  lengine *le = kcore_check_engine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  kpoll_opts o = le->p.o;
  opt_field(L, 2, "initial", &o.initial);
  opt_field(L, 2, "min", &o.min);
  opt_field(L, 2, "max", &o.max);
  opt_field(L, 2, "near", &o.near);
  opt_field(L, 2, "factor", &o.factor);
  opt_field(L, 2, "jitter", &o.jitter);
  if (o.min <= 0 || o.max < o.min || o.near < o.min || o.near > o.max)
    return luaL_error(L, "poll: need 0 < min <= near <= max");
  if (o.factor < 1) return luaL_error(L, "poll.factor must be at least 1");
  if (o.jitter >= 1) return luaL_error(L, "poll.jitter must be below 1");
  le->p.o = o;
  return 0;
}

/* eng:poll_stats() -> { watched=, polls=, fetches=, retries=, run_min=, queue_rate= } */
static int l_poll_stats(lua_State *L) {
  lengine *le = kcore_check_engine(L, 1);
  kpoller *p = &le->p;
  int watched = 0;
  for (int i = 0; i < p->nslots; i++) watched += p->slots[i] != NULL;
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, watched);
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

const luaL_Reg kpoller_methods[] = {
  { "watch", l_watch },       { "unwatch", l_unwatch },       { "updates", l_updates },
  { "set_poll", l_set_poll }, { "poll_stats", l_poll_stats }, { NULL, NULL },
};

#ifdef KLING_FUZZ
/* Test entry points for fuzz/answer_fuzz.c, compiled only with -DKLING_FUZZ. */

/* Forgets what the poller learned from earlier jobs, so that every fuzz
 * input starts from the same state. */
void kpoller_fuzz_reset(kpoller *p) {
  p->run_min = -1;
  p->run_n = 0;
  p->queue_rate = -1;
  p->rng = 0x9E3779B97F4A7C15ULL;
  p->polls = p->fetches = p->retries = 0;
}

/* Hands x (finished, owned by the callee from here on) to the watch
 * `handle` as the answer to the request the poller would send it next: its
 * status, or its result once it has ended. Does what start_due and
 * kpoller_run do around finished(), without the network. Returns 0, or -1
 * when the watch is gone or expects no answer (x is then left to the
 * caller). *inflight_after is the poller's count of requests in flight
 * once the answer is taken in (0 when the books balance). */
int kpoller_fuzz_answer(lua_State *L, kpoller *p, kengine *e, int handle, kxfer *x, double now,
                        int *phase_was_result, int *inflight_after) {
  if (handle < 1 || handle > p->nslots || p->slots[handle - 1] == NULL) return -1;
  kwatch *w = p->slots[handle - 1];
  if (w->phase != W_WAIT || w->x != NULL) return -1;
  heap_remove(p, w);
  begin_exchange(p, w, x);
  *phase_was_result = w->phase == W_RESULT;
  finished(L, p, e, w, x, now);
  *inflight_after = p->inflight;
  return 0;
}

/* The state of watch `handle`: 0 waiting, 1 (status) or 2 (result) in
 * flight, 3 done; -1 when there is no such watch. */
int kpoller_fuzz_phase(kpoller *p, int handle) {
  if (handle < 1 || handle > p->nslots || p->slots[handle - 1] == NULL) return -1;
  return p->slots[handle - 1]->phase;
}
#endif
