/*
 * engine.c - the client's libcurl multi handle and the transfers in flight
 * (see engine.h). libcurl tells its sockets to on_socket (an epoll set) and
 * its timer to on_timer (a deadline); driving the engine waits in
 * epoll_wait until a socket is ready, a deadline passes, or the caller's
 * time is up, then hands the events to curl_multi_socket_action.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

double kengine_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dupstr(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* scheme, host and port of a URL, lower-cased by libcurl; port filled in
 * from the scheme's default. The caller frees with curl_free. */
static int url_origin(const char *url, char **scheme, char **host, char **port) {
  *scheme = *host = *port = NULL;
  CURLU *u = curl_url();
  if (u == NULL) return -1;
  int rc = -1;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK
      && curl_url_get(u, CURLUPART_SCHEME, scheme, 0) == CURLUE_OK
      && curl_url_get(u, CURLUPART_HOST, host, 0) == CURLUE_OK
      && curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) == CURLUE_OK)
    rc = 0;
  curl_url_cleanup(u);
  if (rc != 0) {
    curl_free(*scheme);
    curl_free(*host);
    curl_free(*port);
    *scheme = *host = *port = NULL;
  }
  return rc;
}

/* localhost, ::1, or an IPv4 literal 127.a.b.c (not a name that starts with "127.") */
static int is_loopback(const char *host) {
  if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0) return 1;
  if (strncmp(host, "127.", 4) != 0) return 0;
  int dots = 0;
  for (const char *p = host + 4; *p; p++) {
    if (*p == '.') {
      if (p[-1] == '.' || p[1] == '\0') return 0;
      dots++;
    } else if (*p < '0' || *p > '9') {
      return 0;
    }
  }
  return dots == 2;
}

int kengine_direct_only(const char *url, int is_api) {
  char *scheme, *host, *port;
  if (url_origin(url, &scheme, &host, &port) != 0) return 1;
  int direct = is_loopback(host) || (is_api && strcmp(scheme, "http") == 0);
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  return direct;
}

int kengine_check_url(const kengine *e, const char *url, int *is_api, char *err, size_t errlen) {
  char *scheme, *host, *port;
  *is_api = 0;
  if (url_origin(url, &scheme, &host, &port) != 0) {
    snprintf(err, errlen, "not a valid URL");
    return -1;
  }
  int rc = 0;
  if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
    snprintf(err, errlen, "refusing URL scheme '%s' (http and https only)", scheme);
    rc = -1;
  } else if (strcmp(scheme, "http") == 0 && !is_loopback(host) && !e->allow_insecure_http) {
    snprintf(err, errlen, "refusing plain http to '%s': use https (or allow_insecure_http = true)", host);
    rc = -1;
  } else {
    *is_api = e->api_scheme && strcmp(scheme, e->api_scheme) == 0 && strcmp(host, e->api_host) == 0
              && strcmp(port, e->api_port) == 0;
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  return rc;
}

/* libcurl's socket callback: keep the epoll set in step. Pure C. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  kengine *e = userp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (socketp) epoll_ctl(e->epfd, EPOLL_CTL_DEL, s, NULL);
    curl_multi_assign(e->multi, s, NULL);
    return 0;
  }
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.data.fd = s;
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  if (socketp) {
    if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
      epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev);
  } else {
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
      epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev);
    curl_multi_assign(e->multi, s, (void *)e);
  }
  return 0;
}

curl_socket_t kengine_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr) {
  kengine *e = ud;
  (void)purpose;
  curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (fd != CURL_SOCKET_BAD) {
    e->sockets_opened++;
    if (++e->sockets_open > e->sockets_peak) e->sockets_peak = e->sockets_open;
  }
  return fd;
}

int kengine_close_socket(void *ud, curl_socket_t fd) {
  kengine *e = ud;
  e->sockets_open--;
  return close(fd);
}

/* libcurl's timer callback: one deadline. Pure C. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  kengine *e = userp;
  (void)multi;
  e->curl_deadline = timeout_ms < 0 ? -1.0 : kengine_now() + (double)timeout_ms / 1000.0;
  return 0;
}

int kengine_init(kengine *e, const kengine_opts *o, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  e->epfd = -1;
  e->curl_deadline = -1;
  e->wake_at = -1;
  e->max_rps = o->max_rps > 0 ? o->max_rps : 0;
  e->max_active = o->max_connections > 0 ? (int)(o->max_connections * 4) : 32;
  e->max_retries = o->max_retries >= 0 ? o->max_retries : 4;
  e->retry_base = o->retry_base > 0 ? o->retry_base : 0.5;
  e->retry_cap = o->retry_cap > 0 ? o->retry_cap : 30;
  e->retry_after_cap = o->retry_after_cap > 0 ? o->retry_after_cap : 120;
  e->rng = (unsigned long long)(kengine_now() * 1e9) | 1;
  e->tokens = e->max_rps > 1 ? e->max_rps : 1;
  e->tokens_at = kengine_now();
  e->timeout_ms = o->timeout_ms;
  e->connect_timeout_ms = o->connect_timeout_ms;
  e->max_body = o->max_body;
  e->allow_insecure_http = o->allow_insecure_http;
  e->max_connections = o->max_connections;

  char *scheme, *host, *port;
  if (url_origin(o->api_base, &scheme, &host, &port) != 0) {
    snprintf(err, errlen, "base_url is not a valid URL");
    return -1;
  }
  e->api_scheme = dupstr(scheme);
  e->api_host = dupstr(host);
  e->api_port = dupstr(port);
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  if (!e->api_scheme || !e->api_host || !e->api_port) goto oom;

  int dummy;
  if (kengine_check_url(e, o->api_base, &dummy, err, errlen) != 0) {
    kengine_close(e);
    return -1;
  }
  if (o->token && o->token[0]) {
    static const char prefix[] = "Authorization: Bearer ";
    size_t n = strlen(o->token);
    if (strpbrk(o->token, "\r\n") != NULL) {
      snprintf(err, errlen, "token contains a line break");
      kengine_close(e);
      return -1;
    }
    e->token = dupstr(o->token);
    e->auth_header = malloc(sizeof prefix + n);
    if (!e->token || !e->auth_header) goto oom;
    memcpy(e->auth_header, prefix, sizeof prefix - 1);
    memcpy(e->auth_header + sizeof prefix - 1, o->token, n + 1);
  }
  if (o->ca_file && !(e->ca_file = dupstr(o->ca_file))) goto oom;
  { /* the user's no_proxy (as libcurl reads it), and loopback: never through a proxy */
    static const char loopback[] = "localhost,127.0.0.0/8,::1";
    const char *np = getenv("no_proxy");
    if (np == NULL || np[0] == '\0') np = getenv("NO_PROXY");
    if (np == NULL) np = "";
    size_t lead = strspn(np, " \t");
    if (np[lead] == '*' && np[lead + 1 + strspn(np + lead + 1, " \t")] == '\0') {
      e->no_proxy = dupstr("*"); /* no proxy for any host (libcurl reads "*" only alone) */
    } else {
      size_t n = strlen(np);
      e->no_proxy = malloc(n + sizeof loopback + 1);
      if (e->no_proxy) snprintf(e->no_proxy, n + sizeof loopback + 1, "%s%s%s", np, n ? "," : "", loopback);
    }
    if (e->no_proxy == NULL) goto oom;
  }
  if (o->user_agent && !(e->user_agent = dupstr(o->user_agent))) goto oom;

  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0) {
    snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
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

oom:
  snprintf(err, errlen, "out of memory");
  kengine_close(e);
  return -1;
}

static void wipe(char *s) {
  if (s) {
    volatile char *p = s;
    while (*p) *p++ = 0;
  }
}

void kengine_close(kengine *e) {
  while (e->inflight) kengine_remove(e, e->inflight);
  while (e->queued_head) kengine_remove(e, e->queued_head);
  while (e->delayed) kengine_remove(e, e->delayed);
  e->owned_done = NULL; /* their owner frees them */
  if (e->multi) curl_multi_cleanup(e->multi);
  e->multi = NULL;
  while (e->npool > 0) curl_easy_cleanup(e->pool[--e->npool]);
  free(e->user_done);
  e->user_done = NULL;
  e->nuser_done = e->capuser_done = 0;
  if (e->epfd >= 0) close(e->epfd);
  e->epfd = -1;
  wipe(e->token);
  wipe(e->auth_header);
  free(e->token);
  free(e->auth_header);
  free(e->api_scheme);
  free(e->api_host);
  free(e->api_port);
  free(e->ca_file);
  free(e->user_agent);
  free(e->no_proxy);
  e->token = e->auth_header = e->api_scheme = e->api_host = e->api_port = NULL;
  e->ca_file = e->user_agent = e->no_proxy = NULL;
}

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

static void link_inflight(kengine *e, kxfer *x) {
  x->prev = NULL;
  x->next = e->inflight;
  if (e->inflight) e->inflight->prev = x;
  e->inflight = x;
  e->ninflight++;
}

static void give_back_easy(kengine *e, kxfer *x) {
  CURL *easy = kxfer_take_easy(x);
  if (easy == NULL) return;
  if (e->npool < (int)(sizeof e->pool / sizeof e->pool[0])) e->pool[e->npool++] = easy;
  else curl_easy_cleanup(easy);
}

static int start(kengine *e, kxfer *x, char *err, size_t errlen) {
  x->attempts++;
  CURL *easy = e->npool ? e->pool[--e->npool] : NULL;
  if (kxfer_begin(x, e, easy) != 0) {
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
  x->queued = 0;
  if (x->is_api) {
    e->requests++;
    e->nactive_api++;
  }
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
  x->engine = e;
  x->state = KX_RUNNING;
  if (x->is_api && (e->queued_head || !may_start(e, kengine_now()))) {
    x->queued = 1; /* starts when the rate allows, in order */
    x->next = NULL;
    x->prev = e->queued_tail;
    if (e->queued_tail) e->queued_tail->next = x;
    else e->queued_head = x;
    e->queued_tail = x;
    e->nqueued++;
    return 0;
  }
  if (start(e, x, err, errlen) != 0) {
    x->engine = NULL;
    x->state = KX_NEW;
    return -1;
  }
  link_inflight(e, x);
  return 0;
}

/* Notes that a transfer of the caller ended (for eng:finished()). */
static void note_user_done(kengine *e, kxfer *x) {
  if (x->owner) return;
  if (e->nuser_done == e->capuser_done) {
    int ncap = e->capuser_done ? e->capuser_done * 2 : 64;
    void **n = realloc(e->user_done, (size_t)ncap * sizeof *n);
    if (n == NULL) return; /* the caller then finds out by asking x:done() */
    e->user_done = n;
    e->capuser_done = ncap;
  }
  e->user_done[e->nuser_done++] = x;
}

void kengine_remove(kengine *e, kxfer *x) {
  if (x->engine != e) return;
  if (x->delayed) {
    for (kxfer **pp = &e->delayed; *pp; pp = &(*pp)->next)
      if (*pp == x) {
        *pp = x->next;
        break;
      }
    x->delayed = 0;
  } else if (x->queued) {
    if (x->prev) x->prev->next = x->next;
    else e->queued_head = x->next;
    if (x->next) x->next->prev = x->prev;
    else e->queued_tail = x->prev;
    e->nqueued--;
    x->queued = 0;
  } else {
    if (e->multi && x->easy) curl_multi_remove_handle(e->multi, x->easy);
    if (x->prev) x->prev->next = x->next;
    else e->inflight = x->next;
    if (x->next) x->next->prev = x->prev;
    e->ninflight--;
    if (x->is_api) e->nactive_api--;
  }
  x->prev = x->next = NULL;
  x->engine = NULL;
  if (x->state == KX_RUNNING) { /* torn down before it ended */
    x->aborted = 1;
    kxfer_finish(x, CURLE_ABORTED_BY_CALLBACK);
    note_user_done(e, x);
  }
  if (e->multi) give_back_easy(e, x);
}

/* Starts queued API transfers as far as the rate allows. */
static void start_queued(kengine *e) {
  double now = kengine_now();
  while (e->queued_head && may_start(e, now)) {
    kxfer *x = e->queued_head;
    e->queued_head = x->next;
    if (e->queued_head) e->queued_head->prev = NULL;
    else e->queued_tail = NULL;
    e->nqueued--;
    x->next = x->prev = NULL;
    if (start(e, x, NULL, 0) != 0) {
      x->queued = 0;
      x->engine = NULL;
      kxfer_finish(x, CURLE_FAILED_INIT);
      if (x->owner) {
        x->next_done = e->owned_done;
        e->owned_done = x;
      }
      continue;
    }
    link_inflight(e, x);
  }
}

static double rnd01(kengine *e) { /* xorshift64*, in [0, 1) */
  e->rng ^= e->rng >> 12;
  e->rng ^= e->rng << 25;
  e->rng ^= e->rng >> 27;
  return (double)((e->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

double kengine_retry_after(const char *v) {
  if (v == NULL || v[0] == '\0') return -1;
  char *end;
  double s = strtod(v, &end);
  if (end != v && *end == '\0') return s >= 0 && isfinite(s) ? s : -1;
  time_t t = curl_getdate(v, NULL); /* the HTTP-date form */
  if (t < 0) return -1;
  double d = difftime(t, time(NULL));
  return d > 0 ? d : 0;
}

/*
 * The one rule for reading an answer of the service. Every layer reads answers
 * with it: the engine (below: which exchanges to try again), the poller (a
 * watched job's status and result answers), and the Lua layer (errors.lua,
 * through kling.core.answer_kind and kling.core.error_code). README.md,
 * "Errors", says the same in words.
 *
 * An answer is an error when its HTTP status is not 2xx, or when its body holds
 * an error_code, whatever the HTTP status (RunComfy sometimes answers 200 with
 * an error body). An error_code is a JSON number without a fraction, from 0 to
 * 2^53, or a string of 1 to 15 ASCII digits; anything else (1.5, "12abc", "",
 * null, true) is no error code, and the answer is read for what else it holds
 * (kcore_error_code). The kind:
 *   1. error_code 400002 is payment; 400004 and 403001 are auth; 404001 is
 *      not_found, whatever the HTTP status;
 *   2. otherwise the HTTP status decides when it is not 2xx; with a 2xx status
 *      the error_code's family decides (code / 1000: 500001 -> 500), read as a
 *      status;
 *   3. 401 and 403 auth, 402 payment, 404 not_found, 408 timeout, 429
 *      rate_limited, any other 4xx bad_request, any 5xx server; anything else
 *      (a 1xx or 3xx status, a family such as 0 or 12) protocol.
 * Retryable: timeout (408), rate_limited (429) and server (5xx), and nothing
 * else: the same request is tried again (with backoff, honouring Retry-After)
 * whether the error came as an HTTP status or inside a 2xx body. The paid
 * submit has a stricter rule of its own (want_retry).
 */
static const struct { long lo, hi; const char *kind; int retryable; } ANSWER_STATUS[] = {
  { 401, 401, "auth", 0 },     { 402, 402, "payment", 0 },        { 403, 403, "auth", 0 },
  { 404, 404, "not_found", 0 }, { 408, 408, "timeout", 1 },       { 429, 429, "rate_limited", 1 },
  { 400, 499, "bad_request", 0 }, { 500, 599, "server", 1 },
};
static const struct { long long code; const char *kind; } ANSWER_CODE[] = {
  { 400002, "payment" }, { 400004, "auth" }, { 403001, "auth" }, { 404001, "not_found" },
};

const char *kanswer_kind(long status, int has_code, long long code, int *retryable) {
  int ok2xx = status >= 200 && status <= 299;
  if (retryable) *retryable = 0;
  if (ok2xx && !has_code) return NULL;
  if (has_code)
    for (size_t i = 0; i < sizeof ANSWER_CODE / sizeof ANSWER_CODE[0]; i++)
      if (ANSWER_CODE[i].code == code) return ANSWER_CODE[i].kind;
  long long s = ok2xx ? code / 1000 : status;
  for (size_t i = 0; i < sizeof ANSWER_STATUS / sizeof ANSWER_STATUS[0]; i++)
    if (s >= ANSWER_STATUS[i].lo && s <= ANSWER_STATUS[i].hi) {
      if (retryable) *retryable = ANSWER_STATUS[i].retryable;
      return ANSWER_STATUS[i].kind;
    }
  return "protocol";
}

void kengine_mask(const kengine *e, char *s, size_t cap) {
  const char *tok = e ? e->token : NULL;
  size_t tn = tok ? strlen(tok) : 0;
  if (tn == 0 || cap == 0 || strstr(s, tok) == NULL) return;
  char *out = malloc(cap);
  if (out == NULL) { /* no room to rewrite it: say nothing of it rather than the token */
    snprintf(s, cap, "***");
    return;
  }
  size_t o = 0;
  const char *p = s, *hit;
  while ((hit = strstr(p, tok)) != NULL) {
    size_t before = (size_t)(hit - p);
    if (o + before >= cap) before = cap - 1 - o;
    memcpy(out + o, p, before);
    o += before;
    for (int k = 0; k < 3 && o + 1 < cap; k++) out[o++] = '*';
    p = hit + tn;
    if (o + 1 >= cap) break;
  }
  size_t rest = strlen(p);
  if (o + rest >= cap) rest = cap - 1 - o;
  memcpy(out + o, p, rest);
  o += rest;
  out[o] = '\0';
  memcpy(s, out, o + 1);
  free(out);
}

/* Did a proxy refuse to open the tunnel (CONNECT answered, not 2xx)? */
long kengine_proxy_refusal(CURL *easy) {
  long cc = 0;
  if (easy == NULL || curl_easy_getinfo(easy, CURLINFO_HTTP_CONNECTCODE, &cc) != CURLE_OK) return 0;
  return cc != 0 && (cc < 200 || cc > 299) ? cc : 0;
}

/* Should x be tried again after this outcome? Sets the delay. A submit only
 * when it provably never reached the server, or was refused with 429; any
 * other request when the transport failed on the way, or the answer is
 * retryable by the one rule above (kanswer_kind). */
static int want_retry(kengine *e, kxfer *x, CURLcode code, long status, double *delay) {
  if (x->retry == KX_RETRY_NONE || x->attempts > e->max_retries) return 0;
  if (x->too_large || x->io_error || x->oom || x->aborted) return 0;
  if (x->path && (x->redirect_error || x->range_error || x->complete)) return 0;
  int never_sent = code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY
                   || code == CURLE_COULDNT_CONNECT;
  int transient = never_sent || code == CURLE_OPERATION_TIMEDOUT || code == CURLE_RECV_ERROR
                  || code == CURLE_SEND_ERROR || code == CURLE_GOT_NOTHING || code == CURLE_PARTIAL_FILE
                  || code == CURLE_HTTP2 || code == CURLE_HTTP2_STREAM;
  long refused = kengine_proxy_refusal(x->easy);
  if (refused) { /* the proxy's own answer, read by the same rule; the request never left */
    int again = 0;
    kanswer_kind(refused, 0, 0, &again);
    transient = never_sent = again;
  }
  int ok;
  kbody_info bi;
  memset(&bi, 0, sizeof bi);
  int read = code == CURLE_OK && x->is_api && !x->path && e->body_info && e->body_info(e->body_info_ud, x, &bi);
  if (code != CURLE_OK) ok = x->retry == KX_RETRY_SUBMIT ? never_sent : transient;
  else if (x->retry == KX_RETRY_SUBMIT) ok = status == 429 && !(read && bi.has_id); /* an answer with an id is never "not sent" */
  else {
    const char *kind = kanswer_kind(status, read && bi.has_code, bi.code, &ok);
    /* a status or result answer without a usable status: asked again, a few times */
    if (kind == NULL && x->status_answer && !(read && bi.has_status) && x->attempts < KANSWER_UNUSABLE_TRIES) ok = 1;
  }
  if (!ok) return 0;
  double ceiling = e->retry_base * pow(2, x->attempts - 1);
  if (ceiling > e->retry_cap) ceiling = e->retry_cap;
  *delay = rnd01(e) * ceiling; /* full jitter */
  double ra = code == CURLE_OK ? kengine_retry_after(x->retry_after) : -1;
  if (ra >= 0) {
    if (ra > e->retry_after_cap) return 0; /* the server asks for longer than we wait: say so */
    if (ra > *delay) *delay = ra;
  }
  if (x->deadline_at > 0 && kengine_now() + *delay >= x->deadline_at) {
    x->deadline_hit = 1; /* a download's deadline would pass before the next try */
    return 0;
  }
  return 1;
}

/* Takes x out of the multi handle and files it to be tried again. A
 * download's next hop or fresh start (again: 0) is not a retry: it takes
 * nothing from the retry budget. */
static void requeue(kengine *e, kxfer *x, double delay, int again) {
  curl_multi_remove_handle(e->multi, x->easy);
  if (x->prev) x->prev->next = x->next;
  else e->inflight = x->next;
  if (x->next) x->next->prev = x->prev;
  e->ninflight--;
  if (x->is_api) e->nactive_api--;
  give_back_easy(e, x);
  kxfer_rewind(x);
  x->retry_at = kengine_now() + delay;
  x->delayed = 1;
  x->prev = NULL;
  x->next = e->delayed;
  e->delayed = x;
  if (again) e->retries++;
  else x->attempts--;
}

static void delay_retry(kengine *e, kxfer *x, double delay) {
  requeue(e, x, delay, 1);
}

/* Starts the delayed transfers whose time has come (through the queue). */
static void start_delayed(kengine *e) {
  double now = kengine_now();
  kxfer **pp = &e->delayed;
  while (*pp) {
    kxfer *x = *pp;
    if (x->retry_at > now) {
      pp = &x->next;
      continue;
    }
    *pp = x->next;
    x->delayed = 0;
    x->next = NULL;
    char err[128];
    if (kengine_add(e, x, err, sizeof err) != 0) {
      x->engine = NULL;
      kxfer_finish(x, CURLE_FAILED_INIT);
      note_user_done(e, x);
    }
  }
}

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
    double delay;
    /* a download's bytes on disk before anything is decided: a write that fails ends it */
    if (x->path && !x->owner) kxfer_flush(x);
    if (x->path && !x->owner && !x->io_error && kxfer_review(x, e, status) != 0) {
      if (x->deadline_at > 0 && kengine_now() >= x->deadline_at) {
        x->deadline_hit = 1;
      } else {
        requeue(e, x, 0, 0);
        continue;
      }
    }
    if (!x->owner && want_retry(e, x, code, status, &delay)) {
      delay_retry(e, x, delay);
      continue;
    }
    kxfer_finish(x, code);
    kengine_remove(e, x); /* the easy handle goes back to the pool */
    if (x->owner) {
      x->next_done = e->owned_done;
      e->owned_done = x;
    } else {
      note_user_done(e, x);
    }
    n++;
  }
  return n;
}

double kengine_timeout(const kengine *e) {
  double now = kengine_now(), at = -1;
  if (e->curl_deadline >= 0) at = e->curl_deadline;
  if (e->wake_at >= 0 && (at < 0 || e->wake_at < at)) at = e->wake_at;
  if (e->nqueued && e->max_rps > 0) {
    double t = next_token_at(e);
    if (at < 0 || t < at) at = t;
  }
  for (const kxfer *x = e->delayed; x; x = x->next)
    if (at < 0 || x->retry_at < at) at = x->retry_at;
  if (at < 0) return -1;
  return at > now ? at - now : 0;
}

#define MAX_EVENTS 256

int kengine_step(kengine *e, double timeout) {
  if (e->multi == NULL) return 0;
  int running, done = 0;
  double deadline = kengine_now() + (timeout > 0 ? timeout : 0);
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    start_delayed(e);
    start_queued(e);
    done += collect(e);
    double now = kengine_now();
    if (done || (e->wake_at >= 0 && now >= e->wake_at)) break;
    double wait = deadline - now;
    double t = kengine_timeout(e);
    if (t >= 0 && t < wait) wait = t;
    int ms = wait <= 0 ? 0 : wait > 86400.0 ? 86400000 : (int)ceil(wait * 1000.0);
    int n = epoll_wait(e->epfd, evs, MAX_EVENTS, ms);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      int action = 0;
      if (evs[i].events & (EPOLLIN | EPOLLHUP)) action |= CURL_CSELECT_IN;
      if (evs[i].events & EPOLLOUT) action |= CURL_CSELECT_OUT;
      if (evs[i].events & EPOLLERR) action |= CURL_CSELECT_ERR;
      curl_multi_socket_action(e->multi, evs[i].data.fd, action, &running);
    }
    if (e->curl_deadline >= 0 && kengine_now() >= e->curl_deadline) {
      e->curl_deadline = -1;
      curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    done += collect(e);
    if (done || kengine_now() >= deadline) break;
  }
  return done;
}
