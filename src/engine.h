/*
 * engine.h - a client's HTTP engine: one libcurl multi handle, the client's
 * settings (net.h), and the transfers it holds, each on one list: in
 * flight, queued (waiting for a rate token), delayed (waiting to be tried
 * again) or done (a poller's transfer that has ended).
 *
 * libcurl's socket and timer callbacks only update the event set (event.h)
 * and a deadline; kengine_step waits on them. API requests may be held back
 * by a client-wide cap on requests per second (a token bucket).
 *
 * Retries: a transfer that fails on the way is tried again here, by the
 * protocol's rule for transport failures (kproto_transient; a paid submit
 * only when it provably never reached the server), and a file host's
 * answer by its HTTP status. An API answer is never judged here: its body
 * decides, and the engine cannot read it; the Lua layer reads it and asks
 * for another try with kengine_again, which applies the same backoff.
 *
 * Pure C: no Lua. Calls go one way: engine -> http (transfers) -> net.
 */
#ifndef KLING_ENGINE_H
#define KLING_ENGINE_H

#include <sys/queue.h>
#include <curl/curl.h>

#include "defaults.h"
#include "event.h"
#include "http.h"
#include "net.h"
#include "util.h"

TAILQ_HEAD(kxfer_list, kxfer);

typedef struct kengine_opts {
  knet_opts net;
  long max_connections;    /* connections at once (CURLMOPT_MAX_TOTAL_CONNECTIONS) */
  int max_active;          /* API transfers in the multi handle at once (over HTTP/2; over
                            * HTTP/1.1 at most max_connections) */
  double max_rps;          /* API requests per second; 0 = no cap */
  int max_retries;         /* tries after the first */
  double retry_base, retry_cap, retry_after_cap; /* seconds (defaults.h: the backoff) */
} kengine_opts;

typedef struct kengine {
  knet net;                /* the settings every transfer reads */
  CURLM *multi;
  kev *ev;                 /* libcurl's sockets, as its socket callback asks */
  double curl_deadline;    /* libcurl's timer; < 0 when unset */
  double wake_at;          /* the poller's next due time; < 0 when none */
  double max_rps;
  double tokens, tokens_at;
  struct kxfer_list inflight, queued, delayed, done;
  int ninflight, nqueued;
  void **user_done;        /* the caller's transfers that ended since it last asked */
  int nuser_done, capuser_done;
  int max_retries;
  double retry_base, retry_cap, retry_after_cap;
  krng rng;
  long long retries;       /* tries made again */
  int max_active;           /* now: the connections on HTTP/1.1, max_active_h2 once the API spoke HTTP/2 */
  int max_active_h2;
  int h2;                   /* an API answer came over HTTP/2 */
  int nactive_api, active_peak; /* API transfers in libcurl now, and at most so far */
  CURL *pool[KL_EASY_POOL]; /* reset easy handles for reuse */
  int npool;
  CURL *warm[KL_EASY_POOL]; /* easy handles an API request left configured (http.c) */
  int nwarm;
  long long requests;      /* API requests started */
  long long connects;      /* TCP connections opened (CURLINFO_NUM_CONNECTS) */
  long max_connections;
  int failed_starts;       /* held transfers that could not start, during kengine_step */
} kengine;

/* The defaults of defaults.h, for the binding to start from. */
void kengine_defaults(kengine_opts *o);

/* Returns 0, or -1 with a reason in err. */
int kengine_init(kengine *e, const kengine_opts *o, char *err, size_t errlen);
void kengine_close(kengine *e);

/* Adds a transfer (from kxfer_new) to the engine: it starts now, or is
 * queued behind the rate cap. Returns 0 or -1 with err (x is then not held). */
int kengine_add(kengine *e, kxfer *x, char *err, size_t errlen);
/* Detaches a transfer from the engine, whatever list holds it; one that has
 * not ended is aborted (its result then says so, and the caller's is noted
 * for kengine_finished). */
void kengine_remove(kengine *e, kxfer *x);

/* Sends a caller's finished transfer again, after the backoff of the
 * engine's retries (at least its answer's Retry-After): for an answer the
 * Lua layer judged retryable by the protocol's rule. Returns 1 when it will
 * go again, 0 when the retries are spent or the answer asks to wait longer
 * than retry_after_cap (x is left as it was), -1 when x is not a finished,
 * detached transfer. */
int kengine_again(kengine *e, kxfer *x);

/* Drives the engine for at most timeout seconds, returning early once any
 * transfer has ended or the poller is due (wake_at). Sleeps in the kernel
 * while nothing is ready. Returns the number of transfers that ended (the
 * poller's wait on the done list: kengine_take_done). */
int kengine_step(kengine *e, double timeout);

/* The next of the poller's transfers that ended (detached), or NULL. */
kxfer *kengine_take_done(kengine *e);

/* Seconds until the engine has something to do (libcurl's timer, the
 * poller, a delayed retry, a queued API transfer that may start: now, or at
 * the next rate token, when a place is free), or -1 when it waits only on
 * sockets or nothing. */
double kengine_timeout(const kengine *e);

/* The descriptor that is readable when the engine has work (event.h). */
int kengine_pollfd(const kengine *e);
/* The descriptors to watch for the engine (event.h, kev_fds): count, or -1 when closed. */
int kengine_pollfds(const kengine *e, int *fds, int *whats, int max);

#endif
