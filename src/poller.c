/*
 * poller.c - the polling engine (see poller.h).
 *
 * Runs only when the Lua layer drives the engine (eng:step) or hands it an
 * observation, never inside a libcurl callback, and never reads a body: a
 * watch goes W_WAIT (scheduled) -> W_STATUS or W_RESULT (a request in
 * flight) -> W_ANSWERED (its answer queued for the Lua layer) -> W_READING
 * (handed up) -> kpoller_observe -> W_WAIT again, or W_DONE.
 */
#define _POSIX_C_SOURCE 200809L
#include "poller.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"

enum { W_WAIT, W_STATUS, W_RESULT, W_ANSWERED, W_READING, W_DONE };

typedef struct kwatch {
  int handle;
  char *status_url, *result_url;
  double next;
  int heap_pos;            /* -1 when not scheduled */
  int phase;
  int want_result;
  kproto_route route;      /* of the request in flight or answered */
  kxfer *x;                /* the request in flight, or its answer (W_ANSWERED) */
  char *error;             /* W_ANSWERED without x: why the request could not start */
  kproto_status status;
  char raw[48];            /* the word the service used; "" unknown */
  long long qpos;          /* -1 when none */
  double status_since;     /* when the current status was first seen */
  double qpos_since;
  double interval;
  int failures, unusable;  /* answers asked again in a row; unusable ones among them */
  double retry_after;      /* from the last answer, < 0 when none */
  double expect_at;        /* when the job may end at the earliest, from earlier runs (kpoller_expect); 0 unknown */
} kwatch;

void kpoller_defaults(kpoll_opts *o) {
  o->initial = KD_POLL_INITIAL;
  o->min = KD_POLL_MIN;
  o->max = KD_POLL_MAX;
  o->near = KD_POLL_NEAR;
  o->factor = KD_POLL_FACTOR;
  o->jitter = KD_POLL_JITTER;
}

int kpoller_check_opts(const kpoll_opts *o, char *err, size_t errlen) {
  const double v[] = { o->initial, o->min, o->max, o->near, o->factor, o->jitter };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (!(v[i] >= 0) || v[i] > KL_POLL_VALUE_MAX) {
      snprintf(err, errlen, "poll: every value must be a number between 0 and %g", KL_POLL_VALUE_MAX);
      return -1;
    }
  if (o->min <= 0 || o->max < o->min || o->near < o->min || o->near > o->max) {
    snprintf(err, errlen, "poll: need 0 < min <= near <= max");
    return -1;
  }
  if (o->factor < 1) {
    snprintf(err, errlen, "poll.factor must be at least 1");
    return -1;
  }
  if (o->jitter >= 1) {
    snprintf(err, errlen, "poll.jitter must be below 1");
    return -1;
  }
  return 0;
}

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

static double jittered(kpoller *p, double d) {
  return d * (1 + p->o.jitter * (2 * krng_next(&p->rng) - 1));
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* A status word as the poller keeps it: at most n - 1 bytes, a NUL byte
 * written as the two characters \0 (so that "completed\0x" is never read as
 * "completed"). */
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
  if (w->expect_at > 0 && !kproto_terminal(w->status) && w->expect_at - now > o->near) {
    /* jobs of this model took this long before (kpoller_expect): no poll
     * before then, but one at least every `max` (an early failure) */
    double until = w->expect_at - now;
    return until < o->max ? until : clampd(jittered(p, o->max), o->min, o->max);
  }
  if (w->status == KS_IN_QUEUE) {
    if (moved && w->qpos >= 0 && p->queue_rate > 0) {
      /* the queue moves: look again about when the job reaches the front */
      d = clampd((double)(w->qpos + 1) / p->queue_rate, o->min, o->near);
    } else {
      d = clampd(w->interval * o->factor, o->min, o->near * 2);
    }
  } else {
    double elapsed = now - w->status_since;
    double earliest = p->run_n > 0 ? 0.9 * p->run_min : 0;
    if (w->status == KS_IN_PROGRESS && elapsed + o->near < earliest) {
      /* no job has run this short yet: sleep towards the earliest end seen */
      d = clampd(earliest - elapsed, o->near, o->max);
    } else {
      d = clampd(w->interval * o->factor, o->min, o->near);
    }
  }
  return clampd(jittered(p, d), o->min, o->max); /* the jitter never takes a wait above max */
}

static void drop_answer(kwatch *w) {
  kxfer_free(w->x);
  w->x = NULL;
  free(w->error);
  w->error = NULL;
}

static void free_watch(kpoller *p, kengine *e, kwatch *w) {
  heap_remove(p, w);
  if (w->x) {
    if (w->x->engine) kengine_remove(e, w->x); /* in flight, or on the engine's done list */
    if (w->phase == W_STATUS || w->phase == W_RESULT) p->inflight--;
  }
  drop_answer(w);
  p->slots[w->handle - 1] = NULL;
  if (grow((void **)&p->free_handles, &p->capfree, p->nfree + 1, sizeof *p->free_handles) == 0)
    p->free_handles[p->nfree++] = w->handle;
  free(w->status_url);
  free(w->result_url);
  free(w);
}

/* ------------------------------------------------------------- lifecycle */

void kpoller_init(kpoller *p, const kpoll_opts *o, int max_inflight) {
  memset(p, 0, sizeof *p);
  p->max_inflight = max_inflight > 0 ? max_inflight : 1;
  p->o = *o;
  p->run_min = -1;
  p->queue_rate = -1;
  krng_seed(&p->rng);
}

void kpoller_close(kpoller *p, kengine *e) {
  for (int i = 0; i < p->nslots; i++)
    if (p->slots[i]) free_watch(p, e, p->slots[i]);
  free(p->slots);
  free(p->free_handles);
  free(p->heap);
  free(p->answers);
  p->slots = NULL;
  p->free_handles = NULL;
  p->heap = NULL;
  p->answers = NULL;
  p->nslots = p->nfree = p->nheap = p->nanswers = 0;
}

int kpoller_watched(const kpoller *p) {
  int n = 0;
  for (int i = 0; i < p->nslots; i++) n += p->slots[i] != NULL;
  return n;
}

void kpoller_arm(kpoller *p, kengine *e) {
  e->wake_at = p->nheap > 0 && p->inflight < p->max_inflight ? p->heap[0]->next : -1;
}

int kpoller_watch(kpoller *p, kengine *e, const char *status_url, const char *result_url, const char *raw,
                  size_t rawlen, double delay) {
  kwatch *w = calloc(1, sizeof *w);
  if (w == NULL) return -1;
  w->status_url = kstrdup(status_url);
  w->result_url = kstrdup(result_url);
  if (!w->status_url || !w->result_url) goto oom;
  double now = know();
  w->heap_pos = -1;
  w->qpos = -1;
  w->status_since = w->qpos_since = now;
  w->interval = p->o.initial;
  w->retry_after = -1;
  if (raw) {
    keep_word(w->raw, sizeof w->raw, raw, rawlen);
    w->status = kproto_status_of(raw, rawlen);
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
  kpoller_arm(p, e);
  return handle;
oom:
  free(w->status_url);
  free(w->result_url);
  free(w);
  return -1;
}

static kwatch *find(kpoller *p, int handle) {
  return handle >= 1 && handle <= p->nslots ? p->slots[handle - 1] : NULL;
}

void kpoller_expect(kpoller *p, int handle, double seconds) {
  kwatch *w = find(p, handle);
  if (w && seconds > 0 && seconds < 1e7) w->expect_at = know() + seconds;
}

void kpoller_unwatch(kpoller *p, kengine *e, int handle) {
  kwatch *w = find(p, handle);
  if (w) free_watch(p, e, w);
  kpoller_arm(p, e);
}

/* ---------------------------------------------------------------- answers */

/* Queues w's answer (x, or none with error) for the Lua layer. */
static void answered(kpoller *p, kwatch *w, kxfer *x, const char *error) {
  w->x = x;
  if (x == NULL) w->error = kstrdup(error ? error : "the request could not start");
  w->phase = W_ANSWERED;
  p->fresh++;
  if (grow((void **)&p->answers, &p->capanswers, p->nanswers + 1, sizeof *p->answers) == 0)
    p->answers[p->nanswers++] = w->handle;
  else
    p->unqueued = 1; /* no memory for the queue: kpoller_next_answer finds it on its watch */
}

/* The next watch whose answer waits, from the queue (in order), else (after
 * the queue could not grow) from the slots. */
static kwatch *next_answered(kpoller *p) {
  while (p->answers_head < p->nanswers) {
    kwatch *w = find(p, p->answers[p->answers_head++]);
    if (w && w->phase == W_ANSWERED) return w; /* (else unwatched meanwhile) */
  }
  p->answers_head = p->nanswers = 0;
  if (p->unqueued) {
    for (int i = 0; i < p->nslots; i++)
      if (p->slots[i] && p->slots[i]->phase == W_ANSWERED) return p->slots[i];
    p->unqueued = 0;
  }
  return NULL;
}

int kpoller_next_answer(kpoller *p, kpoll_answer *a) {
  kwatch *w = next_answered(p);
  if (w) {
    a->handle = w->handle;
    a->route = w->route;
    a->x = w->x;
    a->error = w->error;
    if (a->x == NULL) {
      w->phase = W_DONE; /* nothing to observe: the wait has ended */
    } else {
      w->phase = W_READING;
    }
    return 1;
  }
  return 0;
}

/* Takes in a usable status. Returns 1 when it is terminal. */
static int absorb(kpoller *p, kwatch *w, const kpoll_obs *o, double now, int *moved) {
  *moved = 0;
  kproto_status st = kproto_status_of(o->raw, o->rawlen);
  char kept[sizeof w->raw]; /* compared as it is kept, so a long word is not news every time */
  keep_word(kept, sizeof kept, o->raw, o->rawlen);
  if (strcmp(kept, w->raw) != 0) {
    if (w->status == KS_IN_PROGRESS && kproto_terminal(st)) {
      double run = now - w->status_since; /* learn how long jobs run */
      if (p->run_min < 0 || run < p->run_min) p->run_min = run;
      p->run_n++;
    }
    memcpy(w->raw, kept, sizeof kept);
    w->status = st;
    w->status_since = now;
    w->interval = p->o.initial;
  }
  long long qpos = st == KS_IN_QUEUE && o->qpos >= 0 ? o->qpos : -1;
  if (qpos != w->qpos) {
    if (w->qpos > qpos && qpos >= 0 && now > w->qpos_since) {
      double rate = (double)(w->qpos - qpos) / (now - w->qpos_since);
      p->queue_rate = p->queue_rate < 0 ? rate : 0.8 * p->queue_rate + 0.2 * rate;
      *moved = 1;
    }
    w->qpos = qpos;
    w->qpos_since = now;
  }
  return kproto_terminal(st);
}

static int done(kpoller *p, kengine *e, kwatch *w) {
  w->phase = W_DONE;
  heap_remove(p, w);
  kpoller_arm(p, e);
  return KPOLL_DONE;
}

int kpoller_observe(kpoller *p, kengine *e, int handle, const kpoll_obs *o) {
  kwatch *w = find(p, handle);
  if (w == NULL || w->phase != W_READING) return -1;
  double now = know();
  int was_result = w->route == KP_RESULT, moved = 0, retry = 0;
  drop_answer(w); /* read: the transfer is done with */
  w->phase = W_WAIT;
  switch (o->kind) {
  case KOBS_STATUS: {
    int terminal = absorb(p, w, o, now, &moved);
    w->failures = w->unusable = 0;
    w->retry_after = -1;
    if (terminal && was_result) return done(p, e, w);
    w->want_result = terminal;
    break;
  }
  case KOBS_RETRY: /* a retryable error (as an HTTP status or inside a 2xx body): until the wait's deadline */
    retry = 1;
    w->retry_after = o->retry_after >= 0 && o->retry_after > e->retry_after_cap ? e->retry_after_cap : o->retry_after;
    break;
  case KOBS_UNUSABLE: /* no usable status: asked again, a few times, then the answer is the outcome */
    if (++w->unusable >= KPROTO_UNUSABLE_TRIES) return done(p, e, w);
    retry = 1;
    w->retry_after = -1;
    break;
  case KOBS_END:
  default:
    return done(p, e, w);
  }
  if (retry) {
    w->failures++;
    p->retries++;
  }
  if (w->want_result && !retry) schedule_at(p, w, now); /* the result, at once */
  else {
    w->interval = next_delay(p, w, now, moved);
    schedule_at(p, w, now + w->interval);
  }
  kpoller_arm(p, e);
  return KPOLL_POLLING;
}

/* ---------------------------------------------------------------- polling */

/* How early a poll may go out to share a wake-up with one that is due: a
 * fifth of its interval, at most KD_POLL_COALESCE seconds. */
static double slack(const kwatch *w) {
  double s = 0.2 * w->interval;
  return s < KD_POLL_COALESCE ? s : KD_POLL_COALESCE;
}

/* Notes that x, a status or result request for w, is in flight. */
static void begin_exchange(kpoller *p, kwatch *w, kxfer *x) {
  w->x = x;
  x->owner = w;
  w->route = w->want_result ? KP_RESULT : KP_STATUS;
  w->phase = w->want_result ? W_RESULT : W_STATUS;
  if (w->want_result) p->fetches++;
  else p->polls++;
  p->inflight++;
}

static void start_due(kpoller *p, kengine *e, double now) {
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
    kxfer *x = kxfer_new(&e->net, &s, err, sizeof err);
    if (x != NULL) {
      x->owner = w;
      if (kengine_add(e, x, err, sizeof err) != 0) {
        kxfer_free(x);
        x = NULL;
      }
    }
    if (x == NULL) { /* a request the engine refuses: nothing to retry */
      w->route = w->want_result ? KP_RESULT : KP_STATUS;
      answered(p, w, NULL, err);
      continue;
    }
    begin_exchange(p, w, x);
  }
}

int kpoller_run(kpoller *p, kengine *e, int *owned) {
  p->fresh = 0;
  *owned = 0;
  kxfer *x;
  while ((x = kengine_take_done(e)) != NULL) {
    kwatch *w = x->owner;
    (*owned)++;
    p->inflight--;
    answered(p, w, x, NULL);
  }
  start_due(p, e, know());
  kpoller_arm(p, e);
  return p->fresh;
}

#ifdef KLING_FUZZ
/* Forgets what the poller learned from earlier jobs, so that every fuzz
 * input starts from the same state. */
void kpoller_fuzz_reset(kpoller *p) {
  p->run_min = -1;
  p->run_n = 0;
  p->queue_rate = -1;
  p->rng.s = 0x9E3779B97F4A7C15ULL;
  p->polls = p->fetches = p->retries = 0;
}

/* Hands x (finished, owned by the poller from here on) to the watch
 * `handle` as the answer to the request the poller would send it next, as
 * start_due and kpoller_run would, without the network: it is then queued
 * for kpoller_next_answer. Returns 0 and sets *route (KP_STATUS or
 * KP_RESULT), or -1 when the watch is gone or expects no answer (x is then
 * left to the caller). */
int kpoller_fuzz_answer(kpoller *p, kengine *e, int handle, kxfer *x, int *route) {
  (void)e;
  kwatch *w = find(p, handle);
  if (w == NULL || w->phase != W_WAIT || w->x != NULL) return -1;
  heap_remove(p, w);
  begin_exchange(p, w, x);
  p->inflight--;
  answered(p, w, x, NULL);
  *route = (int)w->route;
  return 0;
}

/* The state of watch `handle`: 0 waiting, 1 (status) or 2 (result) in
 * flight, 3 answered, 4 handed up, 5 done; -1 when there is no such watch. */
int kpoller_fuzz_phase(kpoller *p, int handle) {
  kwatch *w = find(p, handle);
  return w ? w->phase : -1;
}
#endif
