/*
 * poller.h - the polling engine: every watched job has its own next-poll
 * time in a heap; due jobs get a status request on the client's engine, an
 * ended job gets its result fetched once, and the schedule adapts.
 *
 * The poller never reads an answer's body. A finished poll is handed up as
 * it came (kpoller_next_answer); the Lua layer decodes it, reads it by the
 * protocol (protocol.h) and hands back an observation (kpoller_observe): a
 * status word and queue position, an answer to ask again after backoff, an
 * answer without a usable status, or the end of the wait. Pure C scheduling:
 * no Lua, no JSON.
 *
 * The schedule: a first poll soon after submit, intervals that grow (with
 * jitter) while nothing moves, capped at `near` once a job may end at any
 * moment; no polls before the shortest run time seen so far; tighter ones
 * when the queue moves; backoff (and Retry-After) after answers that are
 * asked again.
 */
#ifndef KLING_POLLER_H
#define KLING_POLLER_H

#include <stddef.h>

#include "engine.h"
#include "protocol.h"
#include "util.h"

typedef struct kpoll_opts {
  double initial;  /* s: first poll after a job is watched */
  double min;      /* s: shortest interval */
  double max;      /* s: longest interval */
  double near;     /* s: interval once the job may end at any moment */
  double factor;   /* growth per poll without news */
  double jitter;   /* +- fraction */
} kpoll_opts;

/* The defaults of defaults.h. */
void kpoller_defaults(kpoll_opts *o);
/* 0 when o is a consistent schedule, else -1 with the rule broken in err. */
int kpoller_check_opts(const kpoll_opts *o, char *err, size_t errlen);

struct kwatch;

typedef struct kpoller {
  struct kwatch **slots; /* handle - 1 -> watch (NULL when free) */
  int nslots, capslots;
  int *free_handles;
  int nfree, capfree;
  struct kwatch **heap;  /* by next poll time */
  int nheap, capheap;
  int *answers;          /* handles whose answer waits for the Lua layer, from answers_head */
  int answers_head, nanswers, capanswers;
  int unqueued;          /* an answer waits on its watch only (the queue could not grow) */
  int fresh;             /* answers queued during this kpoller_run */
  int inflight, max_inflight;
  kpoll_opts o;
  double run_min;        /* shortest run (in_progress -> ended) seen; < 0 unknown */
  int run_n;
  double queue_rate;     /* queue positions per second, smoothed; < 0 unknown */
  krng rng;
  long long polls, fetches, retries;
} kpoller;

void kpoller_init(kpoller *p, const kpoll_opts *o, int max_inflight);
/* Frees every watch (their transfers leave the engine). */
void kpoller_close(kpoller *p, kengine *e);

/* Watches a job: polls status_url until it ends, then fetches result_url.
 * raw (len bytes; NULL: unknown) is the status word known so far; the first
 * poll goes out after delay seconds. Returns the handle (>= 1), or -1 when
 * memory runs out. */
int kpoller_watch(kpoller *p, kengine *e, const char *status_url, const char *result_url, const char *raw,
                  size_t rawlen, double delay);
/* Learned polling: the job is not expected to end before `seconds` from now
 * (jobs of its model took that long in earlier processes: the client reads
 * the journal). Its polls after the first wait until then, one at least
 * every `max` seconds; from then on the usual schedule (`near`). */
void kpoller_expect(kpoller *p, int handle, double seconds);
/* Stops polling the job (its request in flight is aborted). Idempotent. */
void kpoller_unwatch(kpoller *p, kengine *e, int handle);

/* After an engine step: takes in finished polls (to be handed up), starts
 * due ones, sets the engine's wake_at. Returns the number of new answers;
 * *owned counts the finished transfers that were the poller's. */
int kpoller_run(kpoller *p, kengine *e, int *owned);

/* A finished poll, handed up. x: the exchange to read (the poller frees it
 * at kpoller_observe or kpoller_unwatch); NULL when the request could not
 * even start, and then the wait has ended, error says why, and no
 * observation follows. */
typedef struct kpoll_answer {
  int handle;
  kproto_route route;    /* KP_STATUS or KP_RESULT */
  kxfer *x;
  const char *error;     /* x NULL: why (valid until the next call into the poller) */
} kpoll_answer;

/* The next answer waiting, into *a. Returns 1, or 0 when there is none. The
 * watch then waits for kpoller_observe. */
int kpoller_next_answer(kpoller *p, kpoll_answer *a);

/* What the Lua layer read in an answer (by the protocol). */
enum kpoll_obs_kind {
  KOBS_STATUS,   /* a usable status: raw, and queue_position when in_queue */
  KOBS_RETRY,    /* a retryable error (an HTTP status, an error_code, a transient failure) */
  KOBS_UNUSABLE, /* a 2xx answer without a usable status */
  KOBS_END       /* an error that ends the wait */
};
typedef struct kpoll_obs {
  enum kpoll_obs_kind kind;
  const char *raw;       /* KOBS_STATUS: the status word (len bytes) */
  size_t rawlen;
  long long qpos;        /* KOBS_STATUS: queue_position, < 0 none */
  double retry_after;    /* KOBS_RETRY: seconds the answer asked to wait, < 0 none */
} kpoll_obs;

enum { KPOLL_POLLING = 0, KPOLL_DONE = 1 };
/* Takes in the observation of the answer handed up for `handle`; schedules
 * the next poll (or the result fetch). Returns KPOLL_DONE when the wait has
 * ended (a result answer of an ended job, an error that ends it, or
 * KPROTO_UNUSABLE_TRIES unusable answers in a row: the answer is then the
 * outcome), KPOLL_POLLING when polling goes on, -1 when the watch awaits no
 * observation. */
int kpoller_observe(kpoller *p, kengine *e, int handle, const kpoll_obs *o);

/* Sets the engine's wake_at from the next due poll. */
void kpoller_arm(kpoller *p, kengine *e);

/* Jobs watched now. */
int kpoller_watched(const kpoller *p);

#ifdef KLING_FUZZ
/* Test entry points (fuzz/answer_fuzz.c), compiled only with -DKLING_FUZZ. */
void kpoller_fuzz_reset(kpoller *p);
int kpoller_fuzz_answer(kpoller *p, kengine *e, int handle, kxfer *x, int *route);
int kpoller_fuzz_phase(kpoller *p, int handle);
#endif

#endif
