/*
 * engine.c - the client's libcurl multi handle and the transfers it holds
 * (see engine.h). libcurl tells its sockets to on_socket (the event set,
 * event.h) and its timer to on_timer (a deadline); driving the engine waits
 * in the event set until a socket is ready, a deadline passes, or the
 * caller's time is up, then hands the events to curl_multi_socket_action.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

void kengine_defaults(kengine_opts *o) {
  memset(o, 0, sizeof *o);
  o->net.timeout_ms = (long)(KD_TIMEOUT * 1000);
  o->net.connect_timeout_ms = (long)(KD_CONNECT_TIMEOUT * 1000);
  o->net.max_body = (size_t)KD_MAX_BODY;
  o->max_connections = KD_MAX_CONNECTIONS;
  o->max_active = KD_MAX_CONNECTIONS * KD_ACTIVE_PER_CONNECTION;
  o->max_rps = KD_MAX_RPS;
  o->max_retries = KD_RETRIES_MAX;
  o->retry_base = KD_RETRY_BASE;
  o->retry_cap = KD_RETRY_CAP;
  o->retry_after_cap = KD_RETRY_AFTER_CAP;
}

/* libcurl's socket callback: keep the event set in step. Pure C. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  kengine *e = userp;
  (void)easy;
  (void)socketp;
  if (what == CURL_POLL_REMOVE) kev_watch(e->ev, s, 0);
  else kev_watch(e->ev, s, ((what & CURL_POLL_IN) ? KEV_IN : 0) | ((what & CURL_POLL_OUT) ? KEV_OUT : 0));
  return 0;
}

/* libcurl's timer callback: one deadline. Pure C. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  kengine *e = userp;
  (void)multi;
  e->curl_deadline = timeout_ms < 0 ? -1.0 : know() + (double)timeout_ms / 1000.0;
  return 0;
}

int kengine_init(kengine *e, const kengine_opts *o, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  TAILQ_INIT(&e->inflight);
  TAILQ_INIT(&e->queued);
  TAILQ_INIT(&e->delayed);
  TAILQ_INIT(&e->done);
  e->curl_deadline = -1;
  e->wake_at = -1;
  e->max_rps = o->max_rps > 0 ? o->max_rps : 0;
  /* API transfers in libcurl at once: as many as connections while the API
   * speaks HTTP/1.1 (more would only wait inside libcurl, which costs it
   * about twice the work per request), raised to max_active once an answer
   * came over HTTP/2 (streams share a connection) */
  e->max_active_h2 = o->max_active;
  e->max_active = o->max_connections > 0 && o->max_connections < o->max_active ? (int)o->max_connections
                                                                                : o->max_active;
  e->max_retries = o->max_retries;
  e->retry_base = o->retry_base;
  e->retry_cap = o->retry_cap;
  e->retry_after_cap = o->retry_after_cap;
  e->max_connections = o->max_connections;
  krng_seed(&e->rng);
  e->tokens = e->max_rps > 1 ? e->max_rps : 1;
  e->tokens_at = know();
  if (knet_init(&e->net, &o->net, err, errlen) != 0) return -1;
  e->ev = kev_new(err, errlen);
  if (e->ev == NULL) {
    kengine_close(e);
    return -1;
  }
  e->multi = curl_multi_init();
  if (e->multi == NULL) {
    snprintf(err, errlen, "curl_multi_init failed");
    kengine_close(e);
    return -1;
  }
  if (e->max_connections > 0)
    curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, e->max_connections);
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, (void *)e);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, (void *)e);
  return 0;
}

void kengine_close(kengine *e) {
  kxfer *x;
  while ((x = TAILQ_FIRST(&e->inflight)) != NULL) kengine_remove(e, x);
  while ((x = TAILQ_FIRST(&e->queued)) != NULL) kengine_remove(e, x);
  while ((x = TAILQ_FIRST(&e->delayed)) != NULL) kengine_remove(e, x);
  while ((x = TAILQ_FIRST(&e->done)) != NULL) kengine_remove(e, x); /* their owner frees them */
  if (e->multi) curl_multi_cleanup(e->multi);
  e->multi = NULL;
  while (e->npool > 0) curl_easy_cleanup(e->pool[--e->npool]);
  while (e->nwarm > 0) curl_easy_cleanup(e->warm[--e->nwarm]);
  free(e->user_done);
  e->user_done = NULL;
  e->nuser_done = e->capuser_done = 0;
  kev_free(e->ev);
  e->ev = NULL;
  knet_close(&e->net);
}

int kengine_pollfd(const kengine *e) {
  return e->ev ? kev_fd(e->ev) : -1;
}

int kengine_pollfds(const kengine *e, int *fds, int *whats, int max) {
  return e->ev ? kev_fds(e->ev, fds, whats, max) : -1;
}

/* ---- the lists ------------------------------------------------------- */

/* Puts x (on no list) on the list `list` of e. */
static void put(kengine *e, kxfer *x, enum kx_list list) {
  x->engine = e;
  x->list = list;
  switch (list) {
  case KX_INFLIGHT:
    TAILQ_INSERT_TAIL(&e->inflight, x, link);
    e->ninflight++;
    if (x->is_api && ++e->nactive_api > e->active_peak) e->active_peak = e->nactive_api;
    break;
  case KX_QUEUED:
    TAILQ_INSERT_TAIL(&e->queued, x, link);
    e->nqueued++;
    break;
  case KX_DELAYED: TAILQ_INSERT_TAIL(&e->delayed, x, link); break;
  case KX_ENDED: TAILQ_INSERT_TAIL(&e->done, x, link); break;
  case KX_NOWHERE: break;
  }
}

/* Takes x off whichever list holds it (out of the multi handle too). The
 * one place a transfer leaves the engine's books. */
static void unlink_xfer(kengine *e, kxfer *x) {
  switch (x->list) {
  case KX_INFLIGHT:
    if (e->multi && x->easy) curl_multi_remove_handle(e->multi, x->easy);
    TAILQ_REMOVE(&e->inflight, x, link);
    e->ninflight--;
    if (x->is_api) e->nactive_api--;
    break;
  case KX_QUEUED:
    TAILQ_REMOVE(&e->queued, x, link);
    e->nqueued--;
    break;
  case KX_DELAYED: TAILQ_REMOVE(&e->delayed, x, link); break;
  case KX_ENDED: TAILQ_REMOVE(&e->done, x, link); break;
  case KX_NOWHERE: break;
  }
  x->list = KX_NOWHERE;
  x->engine = NULL;
}

static void give_back_easy(kengine *e, kxfer *x) {
  int warm;
  CURL *easy = kxfer_take_easy(x, &warm);
  if (easy == NULL) return;
  if (warm && e->nwarm < (int)(sizeof e->warm / sizeof e->warm[0])) e->warm[e->nwarm++] = easy;
  else if (!warm && e->npool < (int)(sizeof e->pool / sizeof e->pool[0])) e->pool[e->npool++] = easy;
  else curl_easy_cleanup(easy);
}

/* Notes that a transfer of the caller ended (for eng:finished()). */
static void note_user_done(kengine *e, kxfer *x) {
  if (e->nuser_done == e->capuser_done) {
    int ncap = e->capuser_done ? e->capuser_done * 2 : 64;
    void **n = realloc(e->user_done, (size_t)ncap * sizeof *n);
    if (n == NULL) return; /* the caller then finds out by asking x:done() */
    e->user_done = n;
    e->capuser_done = ncap;
  }
  e->user_done[e->nuser_done++] = x;
}

/* A transfer has ended (detached): the poller's goes on the done list, the
 * caller's is noted for eng:finished(). Every end goes through here. */
static void report(kengine *e, kxfer *x) {
  if (x->owner) put(e, x, KX_ENDED);
  else note_user_done(e, x);
}

/* A held transfer (taken off its list) that could not be started, later than
 * kengine_add (from the queue or the delayed list), ends with
 * CURLE_FAILED_INIT, reported like any other end: the caller's waiter
 * wakes, the poller reads it. */
static void fail_start(kengine *e, kxfer *x) {
  x->state = KX_RUNNING;
  kxfer_finish(x, CURLE_FAILED_INIT);
  give_back_easy(e, x);
  report(e, x);
  e->failed_starts++; /* an end like collect's: kengine_step counts it */
}

kxfer *kengine_take_done(kengine *e) {
  kxfer *x = TAILQ_FIRST(&e->done);
  if (x) unlink_xfer(e, x);
  return x;
}

/* ---- starting -------------------------------------------------------- */

/* Refills the token bucket; true when a request may start now. */
static int take_token(kengine *e, double now) {
  if (e->max_rps <= 0) return 1;
  double burst = e->max_rps > 1 ? e->max_rps : 1;
  e->tokens += (now - e->tokens_at) * e->max_rps;
  if (e->tokens > burst) e->tokens = burst;
  e->tokens_at = now;
  if (e->tokens < 1) return 0;
  e->tokens -= 1;
  return 1;
}

static double next_token_at(const kengine *e) {
  return e->tokens_at + (1 - e->tokens) / e->max_rps;
}

/* Puts x (on no list) into the multi handle and the in-flight list. */
static int start(kengine *e, kxfer *x, char *err, size_t errlen) {
  x->attempts++;
  /* an API request takes a handle an earlier one left configured, when there is one */
  int warm = x->is_api && !x->path && x->method != KX_HEAD && e->nwarm > 0;
  CURL *easy = warm ? e->warm[--e->nwarm] : e->npool ? e->pool[--e->npool] : NULL;
  if (kxfer_begin(x, &e->net, easy, warm) != 0) {
    if (err) snprintf(err, errlen, "%s", x->errbuf[0] ? x->errbuf : "curl_easy_init failed");
    give_back_easy(e, x);
    return -1;
  }
  CURLMcode mc = curl_multi_add_handle(e->multi, x->easy);
  if (mc != CURLM_OK) {
    if (err) snprintf(err, errlen, "%s", curl_multi_strerror(mc));
    give_back_easy(e, x);
    return -1;
  }
  if (x->is_api) e->requests++;
  put(e, x, KX_INFLIGHT);
  return 0;
}

/* May an API transfer start now (concurrency, then rate)? */
static int may_start(kengine *e, double now) {
  return e->nactive_api < e->max_active && take_token(e, now);
}

int kengine_add(kengine *e, kxfer *x, char *err, size_t errlen) {
  if (e->multi == NULL) {
    snprintf(err, errlen, "client is closed");
    return -1;
  }
  x->state = KX_RUNNING;
  if (x->is_api && (!TAILQ_EMPTY(&e->queued) || !may_start(e, know()))) {
    put(e, x, KX_QUEUED); /* starts when the rate allows, in order */
    return 0;
  }
  if (start(e, x, err, errlen) != 0) {
    x->state = KX_NEW;
    return -1;
  }
  return 0;
}

void kengine_remove(kengine *e, kxfer *x) {
  if (x->engine != e) return;
  unlink_xfer(e, x);
  if (x->state == KX_RUNNING) { /* torn down before it ended */
    x->aborted = 1;
    kxfer_finish(x, CURLE_ABORTED_BY_CALLBACK);
    if (!x->owner) note_user_done(e, x);
  }
  if (e->multi) give_back_easy(e, x);
}

/* Starts queued API transfers as far as the rate allows. */
static void start_queued(kengine *e) {
  double now = know();
  kxfer *x;
  while ((x = TAILQ_FIRST(&e->queued)) != NULL && may_start(e, now)) {
    unlink_xfer(e, x);
    if (start(e, x, NULL, 0) != 0) fail_start(e, x);
  }
}

/* ---- retries --------------------------------------------------------- */

/* The delay before x's next try, by the engine's backoff (full jitter) and
 * at least ra (a Retry-After in seconds, < 0 none). 0 when x may not go
 * again: its retries are spent, ra asks for longer than retry_after_cap, or
 * a download's deadline would pass first. */
static int retry_delay(kengine *e, kxfer *x, double ra, double *delay) {
  if (x->attempts > e->max_retries) return 0;
  double ceiling = e->retry_base * pow(2, x->attempts - 1);
  if (ceiling > e->retry_cap) ceiling = e->retry_cap;
  *delay = krng_next(&e->rng) * ceiling;
  if (ra >= 0) {
    if (ra > e->retry_after_cap) return 0; /* the server asks for longer than we wait: say so */
    if (ra > *delay) *delay = ra;
  }
  if (x->deadline_at > 0 && know() + *delay >= x->deadline_at) {
    x->deadline_hit = 1; /* a download's deadline would pass before the next try */
    return 0;
  }
  return 1;
}

/* Should x be tried again after this outcome? Sets the delay. A failure on
 * the way by the protocol's rule (kproto_transient; a submit only when it
 * provably never reached the server); a file host's answer by its HTTP
 * status (kproto_answer_kind). An API answer: never here (engine.h). */
static int want_retry(kengine *e, kxfer *x, CURLcode code, long status, double *delay) {
  if (x->retry == KX_RETRY_NONE) return 0;
  if (x->too_large || x->io_error || x->oom || x->aborted) return 0;
  if (x->path && (x->redirect_error || x->range_error || x->complete)) return 0;
  int ok;
  if (code != CURLE_OK) {
    int never_sent;
    int transient = kproto_transient(code, knet_proxy_refusal(x->easy), &never_sent);
    ok = x->retry == KX_RETRY_SUBMIT ? never_sent : transient;
  } else if (x->is_api) {
    return 0;
  } else {
    kproto_answer_kind(status, 0, 0, &ok);
  }
  if (!ok) return 0;
  return retry_delay(e, x, code == CURLE_OK ? kproto_retry_after(x->retry_after) : -1, delay);
}

/* Files x (detached, its easy handle given back) to go again after delay. A
 * download's next hop or fresh start (again: 0) is not a retry: it takes
 * nothing from the retry budget. */
static void delay_xfer(kengine *e, kxfer *x, double delay, int again) {
  kxfer_rewind(x);
  x->retry_at = know() + delay;
  put(e, x, KX_DELAYED);
  if (again) e->retries++;
  else x->attempts--;
}

/* Takes x (in flight) out of the multi handle and files it to go again. */
static void requeue(kengine *e, kxfer *x, double delay, int again) {
  unlink_xfer(e, x);
  give_back_easy(e, x);
  delay_xfer(e, x, delay, again);
}

int kengine_again(kengine *e, kxfer *x) {
  if (e->multi == NULL || x->state != KX_DONE || x->list != KX_NOWHERE || x->owner || x->path) return -1;
  double delay;
  if (!retry_delay(e, x, kproto_retry_after(x->retry_after), &delay)) return 0;
  x->state = KX_RUNNING;
  delay_xfer(e, x, delay, 1);
  return 1;
}

/* Starts the delayed transfers whose time has come (through the queue). */
static void start_delayed(kengine *e) {
  double now = know();
  kxfer *x, *next;
  for (x = TAILQ_FIRST(&e->delayed); x != NULL; x = next) {
    next = TAILQ_NEXT(x, link);
    if (x->retry_at > now) continue;
    unlink_xfer(e, x);
    char err[128];
    if (kengine_add(e, x, err, sizeof err) != 0) fail_start(e, x);
  }
}

/* ---- driving --------------------------------------------------------- */

static int collect(kengine *e) {
  int n = 0, left;
  CURLMsg *m;
  while ((m = curl_multi_info_read(e->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    kxfer *x = NULL;
    CURLcode code = m->data.result;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (x == NULL) continue;
    long connects = 0, status = 0;
    if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK) e->connects += connects;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (x->is_api && !e->h2) {
      long hv = 0;
      if (curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &hv) == CURLE_OK && hv == CURL_HTTP_VERSION_2_0) {
        e->h2 = 1;
        e->max_active = e->max_active_h2;
      }
    }
    double delay;
    /* a download's bytes on disk before anything is decided: a write that fails ends it */
    if (x->path && !x->owner) kxfer_flush(x);
    if (x->path && !x->owner && !x->io_error && kxfer_review(x, &e->net, status) != 0) {
      if (x->deadline_at > 0 && know() >= x->deadline_at) {
        x->deadline_hit = 1;
      } else {
        requeue(e, x, 0, 0);
        continue;
      }
    }
    if (!x->owner && want_retry(e, x, code, status, &delay)) {
      requeue(e, x, delay, 1);
      continue;
    }
    kxfer_finish(x, code);
    kengine_remove(e, x); /* the easy handle goes back to the pool */
    report(e, x);
    n++;
  }
  return n;
}

double kengine_timeout(const kengine *e) {
  double now = know(), at = -1;
  if (e->curl_deadline >= 0) at = e->curl_deadline;
  if (e->wake_at >= 0 && (at < 0 || e->wake_at < at)) at = e->wake_at;
  if (e->nqueued && e->nactive_api < e->max_active) {
    /* a queued transfer may start now, or when the rate allows: the caller's
     * loop must step then (with the cap full, an end says so: no spinning) */
    double t = e->max_rps > 0 ? next_token_at(e) : now;
    if (at < 0 || t < at) at = t;
  }
  const kxfer *x;
  TAILQ_FOREACH(x, &e->delayed, link)
    if (at < 0 || x->retry_at < at) at = x->retry_at;
  if (at < 0) return -1;
  return at > now ? at - now : 0;
}

/* The event set's callback: a socket is ready. */
static void on_ready(void *ud, int fd, int what) {
  kengine *e = ud;
  int action = 0, running;
  if (what & KEV_IN) action |= CURL_CSELECT_IN;
  if (what & KEV_OUT) action |= CURL_CSELECT_OUT;
  if (what & KEV_ERR) action |= CURL_CSELECT_ERR;
  curl_multi_socket_action(e->multi, fd, action, &running);
}

int kengine_step(kengine *e, double timeout) {
  if (e->multi == NULL) return 0;
  int running, done = 0;
  double deadline = know() + (timeout > 0 ? timeout : 0);
  e->failed_starts = 0;
  for (;;) {
    start_delayed(e);
    start_queued(e);
    done += collect(e) + e->failed_starts;
    e->failed_starts = 0;
    double now = know();
    if (done || (e->wake_at >= 0 && now >= e->wake_at)) break;
    double wait = deadline - now;
    double t = kengine_timeout(e);
    if (t >= 0 && t < wait) wait = t;
    if (kev_wait(e->ev, kwait_ms(wait), on_ready, e) < 0) break;
    if (e->curl_deadline >= 0 && know() >= e->curl_deadline) {
      e->curl_deadline = -1;
      curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    done += collect(e);
    if (done || know() >= deadline) break;
  }
  if (done) {
    /* the places of the transfers that ended go to queued ones now, not at the
     * next step: a caller's loop may wait timeout() before it steps again */
    start_queued(e);
    done += e->failed_starts;
    e->failed_starts = 0;
  }
  return done;
}
