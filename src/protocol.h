/*
 * protocol.h - RunComfy's Model API as kling speaks it, stated once: the
 * routes, the status words, how an error answer is recognised and what kind
 * it is, which failures are tried again, Retry-After, and the rules for
 * request ids and model ids. doc/PROTOCOL.md says the same in words.
 *
 * Pure C: no Lua, no JSON. Nothing here decodes an answer: the Lua layer
 * decodes it (lua-cjson) and reads it with these rules, which it gets from
 * kling.core.protocol (lua_protocol.c; lua/kling/protocol.lua is its Lua
 * face); the engine reads transport failures and HTTP statuses with them,
 * and the poller the status words of the observations it is handed.
 */
#ifndef KLING_PROTOCOL_H
#define KLING_PROTOCOL_H

#include <stddef.h>
#include <curl/curl.h>

/* ---- routes ------------------------------------------------------------ */

typedef enum { KP_SUBMIT = 0, KP_STATUS, KP_RESULT, KP_CANCEL, KP_MODELS, KP_MODEL, KP_NROUTES } kproto_route;

typedef struct kproto_route_info {
  const char *name;        /* "submit", "status", "result", "cancel", "models", "model" */
  const char *method;      /* "POST" or "GET" */
  const char *prefix;      /* the path after the base URL, before the argument */
  const char *suffix;      /* ... and after it */
  int arg_is_model;        /* the argument is a model id (else a request id) */
  int status_answer;       /* its 2xx answer must hold a usable status */
  int no_arg;              /* takes no argument (the catalog's list) */
} kproto_route_info;

extern const kproto_route_info KPROTO_ROUTES[KP_NROUTES];

/* The route called name, or -1. */
int kproto_route_named(const char *name);

/* The URL of route r for arg (a model id or a request id, checked here) under
 * base (no trailing slash), into out (size n). Returns 0, or -1 when arg
 * breaks its rule or the URL does not fit. */
int kproto_url(char *out, size_t n, const char *base, kproto_route r, const char *arg, size_t arglen);

/* ---- ids --------------------------------------------------------------- */

#define KPROTO_ID_MAX 128          /* bytes of a request id */
#define KPROTO_MODEL_ID_MAX 256    /* bytes of a model id */
/* The request id rule as a Lua pattern (for messages and the Lua layer). */
#define KPROTO_ID_PATTERN "^[A-Za-z0-9_-]+$"
#define KPROTO_ID_RULE "^[A-Za-z0-9_-]{1,128}$"

/* A request id that may go into a URL: 1 to 128 of A-Z a-z 0-9 _ -. */
int kproto_valid_id(const char *s, size_t n);

/* A URL the service gave (a submit answer's status_url, result_url,
 * cancel_url) that kling may use in place of the one it builds: it starts with
 * base followed by '/' (so the token is never sent elsewhere), and holds no
 * byte from 0 to 32 nor 127 (C would read it cut short at a NUL; a control
 * character or a space has no place in a URL). */
int kproto_url_under(const char *url, size_t n, const char *base, size_t bn);
/* A model id: slash-separated names of letters, digits, '.', '_' and '-'
 * (each starting with a letter or digit), 1 to 256 bytes in all. */
int kproto_valid_model_id(const char *s, size_t n);

/* ---- statuses ---------------------------------------------------------- */

typedef enum {
  KS_UNKNOWN = 0, KS_IN_QUEUE, KS_IN_PROGRESS, KS_COMPLETED, KS_FAILED, KS_CANCELLED, KS_NSTATUS
} kproto_status;

/* A word the service uses for a status, and the status kling reports. */
typedef struct kproto_word {
  const char *raw;
  kproto_status status;
} kproto_word;

extern const kproto_word KPROTO_WORDS[];
extern const size_t KPROTO_NWORDS;

/* The status of the word raw (len bytes); KS_UNKNOWN for any other word (a
 * word holding a NUL byte is no known word). */
kproto_status kproto_status_of(const char *raw, size_t len);
/* The name kling reports for s ("in_queue", ...; "" for KS_UNKNOWN). */
const char *kproto_status_name(kproto_status s);
/* Has a job in status s ended (completed, failed, cancelled)? */
int kproto_terminal(kproto_status s);
/* A usable status: a JSON string of at least one byte. A 2xx answer of a
 * status_answer route without one is asked again, at most this many such
 * answers in a row, then the call ends with kind protocol. */
#define KPROTO_UNUSABLE_TRIES 5

/* queue_position, read while the job is in_queue: a number without a
 * fraction from 0 to 2^53. Returns 1 and sets *pos, or 0 (no position). */
int kproto_queue_position(double v, long long *pos);

/* ---- cancel outcomes --------------------------------------------------- */

/* The outcome words of a cancel answer and what they mean. */
typedef struct kproto_outcome {
  const char *raw;
  const char *means;       /* "cancelled", "not_cancellable", "requested" */
} kproto_outcome;

extern const kproto_outcome KPROTO_OUTCOMES[];
extern const size_t KPROTO_NOUTCOMES;

/* What a cancel answer means, by its status word and its outcome word (either
 * may be NULL: absent or not a string). The status decides when it says the
 * job is cancelled, whatever the outcome word; a status completed or failed
 * is "not_cancellable", whatever the outcome word; otherwise the outcome word
 * (KPROTO_OUTCOMES); with no outcome, a status "cancellation_requested" means
 * the cancel was accepted but is not final yet ("requested": poll until the
 * status says cancelled), and any other status kling knows "not_cancellable".
 * Returns "cancelled", "requested", "not_cancellable", or NULL for an outcome
 * word kling does not know, or no outcome with no status or one kling does
 * not know. */
const char *kproto_cancel_means(const char *status, size_t slen, const char *outcome, size_t olen);

/* ---- the field names kling reads --------------------------------------- */

/* Every field name of an answer kling reads (never masked: kling's own words). */
extern const char *const KPROTO_FIELDS[];
extern const size_t KPROTO_NFIELDS;

/* ---- errors ------------------------------------------------------------ */

/* RunComfy's error_code: a JSON number without a fraction from 0 to 2^53, or
 * a string of 1 to 15 ASCII digits. Each returns 1 and sets *code, or 0 when
 * the value is no error code (1.5, -1, "12abc", "", and any other type). */
int kproto_code_integer(long long v, long long *code);
int kproto_code_number(double v, long long *code);
int kproto_code_string(const char *s, size_t n, long long *code);

/* The one rule for reading an answer (see protocol.c): NULL for a success,
 * else the error kind ("auth", "payment", "not_found", "bad_request",
 * "timeout", "rate_limited", "server", "protocol"); *retryable (may be NULL)
 * says whether the same request may be sent again. status: the HTTP status;
 * has_code, code: the body's error_code by the rule above. */
const char *kproto_answer_kind(long status, int has_code, long long code, int *retryable);

/* RunComfy's error_code for "the request has not completed yet" (observed on
 * the result route, with HTTP 400, also for a while after the status already
 * said completed). */
#define KPROTO_CODE_NOT_READY 400005LL

/* Is an answer of route r with this error_code (has_code 0: none) "not ready"
 * (poll again), whatever its HTTP status? Only on the result route: 400005
 * there is never "the service refused the input". Returns 1 or 0. */
int kproto_not_ready(kproto_route r, int has_code, long long code);

/* Is a transfer that failed on the way (libcurl's code; the HTTP status a
 * proxy refused the tunnel with, or 0) worth another try? Returns 1 or 0;
 * *never_sent (may be NULL) says the request provably never reached the
 * server (the only failures after which a paid submit is sent again). */
int kproto_transient(CURLcode code, long proxy_status, int *never_sent);

/* A Retry-After value (delta-seconds or an HTTP-date) as seconds from now,
 * or -1 when there is none or it cannot be read. */
double kproto_retry_after(const char *v);

#endif
