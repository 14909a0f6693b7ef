/*
 * engine.h - a client's HTTP engine: one libcurl multi handle, its
 * settings (token, API origin, timeouts, TLS), and the transfers in flight.
 *
 * libcurl's socket and timer callbacks only update an epoll set and a
 * deadline; kengine_step waits on them. API requests may be held back by a
 * client-wide cap on requests per second (a token bucket).
 *
 * The engine decides which requests carry the token: only those whose
 * origin (scheme, host, port) is the API's. It refuses plain http to any
 * host but loopback unless the caller allowed it.
 */
#ifndef KLING_ENGINE_H
#define KLING_ENGINE_H

#include <curl/curl.h>

#include "http.h"

/* What the body of an API answer says, as the engine's retries need it. */
typedef struct kbody_info {
  int has_code;            /* it holds an error_code (kcore_error_code says what counts) ... */
  long long code;          /* ... this one */
  int has_status;          /* a usable "status": a string of at least one byte */
  int has_id;              /* a "request_id" (a string or a number, usable or not) */
} kbody_info;

/* A status or result answer without a usable status (not JSON, truncated,
 * {}, [], a status that is no string...) is asked again, like one that
 * cannot be decoded: at most this many such answers in a row, then the
 * caller gets the last one (kind protocol). The poller (a wait) and the
 * engine (job:refresh, job:result, with the client's retries) count alike. */
#define KANSWER_UNUSABLE_TRIES 5

typedef struct kengine {
  CURLM *multi;
  int epfd;                /* libcurl's sockets, as its socket callback asks */
  double curl_deadline;    /* libcurl's timer; < 0 when unset */
  double wake_at;          /* the poller's next due time; < 0 when none */
  double max_rps;          /* API requests per second; 0 = no cap */
  double tokens, tokens_at;
  kxfer *queued_head, *queued_tail; /* API transfers waiting for a token */
  int nqueued;
  kxfer *owned_done;       /* finished transfers that belong to the poller */
  void **user_done;        /* the caller's transfers that ended since it last asked */
  int nuser_done, capuser_done;
  kxfer *delayed;          /* transfers waiting to be tried again (linked by next) */
  int max_retries;         /* tries after the first */
  double retry_base, retry_cap, retry_after_cap;
  unsigned long long rng;
  long long retries;       /* tries made again */
  int max_active;          /* API transfers in the multi handle at once */
  int nactive_api;
  CURL *pool[64];          /* reset easy handles for reuse */
  int npool;
  long long requests;      /* API requests started */
  long long connects;      /* TCP connections opened (CURLINFO_NUM_CONNECTS) */
  int sockets_open, sockets_peak; /* counted by the open/close socket callbacks */
  long long sockets_opened;
  char *token;             /* NULL when none */
  char *auth_header;       /* "Authorization: Bearer ..." */
  char *api_scheme, *api_host, *api_port;
  char *ca_file;
  char *user_agent;
  long timeout_ms, connect_timeout_ms;
  size_t max_body;         /* cap on in-memory response bodies */
  int allow_insecure_http;
  long max_connections;
  /* Reads the body of an API answer (see kbody_info): returns 1 and fills
   * *info when the body is JSON it could decode, else 0. Set by the Lua
   * binding; NULL: the HTTP status alone decides. */
  int (*body_info)(void *ud, const kxfer *x, struct kbody_info *info);
  void *body_info_ud;
  char *no_proxy;          /* CURLOPT_NOPROXY of every transfer: the user's list and loopback */
  kxfer *inflight;         /* doubly linked */
  int ninflight;
  int completed;           /* finished during the current drive */
} kengine;

typedef struct kengine_opts {
  const char *token, *api_base, *ca_file, *user_agent;
  long timeout_ms, connect_timeout_ms, max_connections;
  double max_rps;
  size_t max_body;
  int allow_insecure_http;
  int max_retries;         /* -1: the default (4) */
  double retry_base, retry_cap, retry_after_cap; /* 0: the defaults */
} kengine_opts;

/* Returns 0, or -1 with a reason in err. */
int kengine_init(kengine *e, const kengine_opts *o, char *err, size_t errlen);
void kengine_close(kengine *e);

/* Is the URL acceptable (http/https, TLS unless loopback or allowed)?
 * Fills is_api when its origin is the API's. Returns 0 or -1 with err. */
int kengine_check_url(const kengine *e, const char *url, int *is_api, char *err, size_t errlen);

/* Adds a configured transfer to the multi handle. Returns 0 or -1. */
int kengine_add(kengine *e, kxfer *x, char *err, size_t errlen);
/* Detaches a transfer (finished or not) from the engine. */
void kengine_remove(kengine *e, kxfer *x);

/* libcurl's open/close socket callbacks: count the engine's sockets. */
curl_socket_t kengine_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr);
int kengine_close_socket(void *ud, curl_socket_t fd);

/* Drives the engine for at most timeout seconds, returning early once any
 * transfer has finished or the poller is due (wake_at). Sleeps in the
 * kernel (epoll) while nothing is ready. Returns the number of transfers
 * that finished; those owned by the poller are left on owned_done. */
int kengine_step(kengine *e, double timeout);

/* Seconds until the engine has something to do (libcurl's timer, the
 * poller, a rate token), or -1 when it waits only on sockets or nothing. */
double kengine_timeout(const kengine *e);

double kengine_now(void);

/* A Retry-After value (delta-seconds or HTTP-date) as seconds from now, or -1. */
double kengine_retry_after(const char *v);

/* The one rule for reading an answer of the service; every layer uses it (the
 * engine, the poller, and the Lua layer through kling.core.answer_kind). See
 * the comment at its definition in engine.c.
 * status: the HTTP status; has_code, code: RunComfy's error_code of the body
 * (kcore_error_code says what counts as one). Returns NULL for a success,
 * else the error kind ("auth", "payment", "not_found", "bad_request",
 * "timeout", "rate_limited", "server", "protocol"); *retryable (may be NULL)
 * says whether the same request may be tried again. */
const char *kanswer_kind(long status, int has_code, long long code, int *retryable);

/* Masks the token in the NUL-terminated text s (a buffer of cap bytes): every
 * occurrence becomes "***", cut at cap. For the parts of a message kling builds
 * that quote what a server sent (a redirect's Location, a Content-Range). */
void kengine_mask(const kengine *e, char *s, size_t cap);

/* Must a transfer to url go straight to its host, never through a proxy?
 * Yes for loopback hosts, and for a plain-http request that carries the token
 * (a proxy would read it in clear text). Returns 1 or 0. */
int kengine_direct_only(const char *url, int is_api);

/* The HTTP status a proxy answered a CONNECT with, when it refused to open the
 * tunnel (not 2xx); 0 when no proxy refused (or none was used). */
long kengine_proxy_refusal(CURL *easy);

#endif
