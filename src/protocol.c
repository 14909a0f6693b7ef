/*
 * protocol.c - RunComfy's Model API as kling speaks it (see protocol.h and
 * doc/PROTOCOL.md). Every fact about the service that the C core or the Lua
 * layer needs is written here, once.
 */
#define _POSIX_C_SOURCE 200809L
#include "protocol.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- routes (doc/PROTOCOL.md, "Routes") -------------------------------- */

const kproto_route_info KPROTO_ROUTES[KP_NROUTES] = {
  [KP_SUBMIT] = { "submit", "POST", "/models/", "", 1, 0 },
  [KP_STATUS] = { "status", "GET", "/requests/", "/status", 0, 1 },
  [KP_RESULT] = { "result", "GET", "/requests/", "/result", 0, 1 },
  [KP_CANCEL] = { "cancel", "POST", "/requests/", "/cancel", 0, 0 },
  /* the model catalog (observed: RunComfy's own CLI reads it); the list takes a query */
  [KP_MODELS] = { "models", "GET", "/models", "", 0, 0, 1 },
  [KP_MODEL] = { "model", "GET", "/models/", "", 1, 0 },
};

int kproto_route_named(const char *name) {
  for (int r = 0; r < KP_NROUTES; r++)
    if (strcmp(KPROTO_ROUTES[r].name, name) == 0) return r;
  return -1;
}

int kproto_url(char *out, size_t n, const char *base, kproto_route r, const char *arg, size_t arglen) {
  if ((int)r < 0 || r >= KP_NROUTES) return -1;
  const kproto_route_info *ri = &KPROTO_ROUTES[r];
  if (ri->no_arg ? arglen != 0
                 : ri->arg_is_model ? !kproto_valid_model_id(arg, arglen) : !kproto_valid_id(arg, arglen))
    return -1;
  int w = snprintf(out, n, "%s%s%s%s", base, ri->prefix, arg, ri->suffix);
  return w >= 0 && (size_t)w < n ? 0 : -1;
}

/* ---- ids --------------------------------------------------------------- */

static int id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Observed: what RunComfy's own clients accept; an id that breaks it never
 * goes into a URL (it could hold "/", "..", "?" or the token). */
int kproto_valid_id(const char *s, size_t n) {
  if (n < 1 || n > KPROTO_ID_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!id_char(s[i])) return 0;
  return 1;
}

int kproto_url_under(const char *url, size_t n, const char *base, size_t bn) {
  if (n <= bn || url[bn] != '/' || memcmp(url, base, bn) != 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 32 || c == 127) return 0;
  }
  return 1;
}

int kproto_valid_model_id(const char *s, size_t n) {
  if (n < 1 || n > KPROTO_MODEL_ID_MAX) return 0;
  int start = 1;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '/') {
      if (start) return 0; /* an empty name */
      start = 1;
    } else if (start) {
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return 0;
      start = 0;
    } else if (!id_char(c) && c != '.') {
      return 0;
    }
  }
  return !start;
}

/* ---- statuses (doc/PROTOCOL.md, "Statuses") ---------------------------- */

const kproto_word KPROTO_WORDS[] = {
  { "in_queue", KS_IN_QUEUE },       { "pending", KS_IN_QUEUE },        { "waiting", KS_IN_QUEUE },
  { "cancellation_requested", KS_IN_QUEUE }, /* observed after a cancel accepted but not final yet */
  { "in_progress", KS_IN_PROGRESS }, { "starting", KS_IN_PROGRESS },    { "processing", KS_IN_PROGRESS },
  { "completed", KS_COMPLETED },     { "succeeded", KS_COMPLETED },     { "failed", KS_FAILED },
  { "cancelled", KS_CANCELLED },     { "canceled", KS_CANCELLED },
};
const size_t KPROTO_NWORDS = sizeof KPROTO_WORDS / sizeof KPROTO_WORDS[0];

static const char *const STATUS_NAMES[KS_NSTATUS] = {
  "", "in_queue", "in_progress", "completed", "failed", "cancelled",
};

kproto_status kproto_status_of(const char *raw, size_t len) {
  for (size_t i = 0; i < KPROTO_NWORDS; i++)
    if (strlen(KPROTO_WORDS[i].raw) == len && memcmp(KPROTO_WORDS[i].raw, raw, len) == 0) return KPROTO_WORDS[i].status;
  return KS_UNKNOWN;
}

const char *kproto_status_name(kproto_status s) {
  return (int)s >= 0 && s < KS_NSTATUS ? STATUS_NAMES[s] : "";
}

int kproto_terminal(kproto_status s) {
  return s == KS_COMPLETED || s == KS_FAILED || s == KS_CANCELLED;
}

int kproto_queue_position(double v, long long *pos) {
  if (!(v >= 0) || v > 9007199254740992.0 || floor(v) != v) return 0;
  *pos = (long long)v;
  return 1;
}

/* ---- cancel outcomes (doc/PROTOCOL.md, "Cancelling") ------------------- */

const kproto_outcome KPROTO_OUTCOMES[] = {
  { "cancelled", "cancelled" }, { "canceled", "cancelled" }, { "not_cancellable", "not_cancellable" },
  { "cancellation_requested", "requested" },
};
const size_t KPROTO_NOUTCOMES = sizeof KPROTO_OUTCOMES / sizeof KPROTO_OUTCOMES[0];

static const char *outcome_means(const char *raw, size_t len) {
  for (size_t i = 0; i < KPROTO_NOUTCOMES; i++)
    if (strlen(KPROTO_OUTCOMES[i].raw) == len && memcmp(KPROTO_OUTCOMES[i].raw, raw, len) == 0)
      return KPROTO_OUTCOMES[i].means;
  return NULL;
}

/* Observed: {"status":"cancelled","outcome":"cancellation_requested"} is
 * cancelled (the status says so); {"status":"cancelled"} with no outcome is
 * cancelled; {"status":"cancellation_requested"} with no outcome is accepted,
 * not final yet. */
const char *kproto_cancel_means(const char *status, size_t slen, const char *outcome, size_t olen) {
  kproto_status st = status ? kproto_status_of(status, slen) : KS_UNKNOWN;
  if (st == KS_CANCELLED) return "cancelled";
  /* a job whose status says it completed or failed ended so, whatever the
   * outcome word: never taken as cancelled (its output would be lost) */
  if (st == KS_COMPLETED || st == KS_FAILED) return "not_cancellable";
  if (outcome) return outcome_means(outcome, olen);
  if (status) {
    const char *m = outcome_means(status, slen);
    if (m && strcmp(m, "requested") == 0) return m;
  }
  /* no outcome: a status kling knows says the job goes on; none, or a word
   * kling does not know, says nothing (NULL: kind protocol, never a guess) */
  return st != KS_UNKNOWN ? "not_cancellable" : NULL;
}

/* ---- field names ------------------------------------------------------- */

const char *const KPROTO_FIELDS[] = {
  "request_id", "status_url", "result_url", "cancel_url", "status", "queue_position", "instance_id",
  "output", "video", "videos", "cost", "error", "error_code", "error_message", "message", "detail",
  "loc", "msg", "outcome",
};
const size_t KPROTO_NFIELDS = sizeof KPROTO_FIELDS / sizeof KPROTO_FIELDS[0];

/* ---- errors (doc/PROTOCOL.md, "Errors") -------------------------------- */

#define CODE_MAX 9007199254740992LL /* 2^53 */

int kproto_code_integer(long long v, long long *code) {
  if (v < 0 || v > CODE_MAX) return 0;
  *code = v;
  return 1;
}

int kproto_code_number(double d, long long *code) {
  if (!(d >= 0) || d > (double)CODE_MAX || floor(d) != d) return 0;
  *code = (long long)d;
  return 1;
}

int kproto_code_string(const char *s, size_t n, long long *code) {
  if (n < 1 || n > 15) return 0;
  long long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  *code = v;
  return 1;
}

/*
 * The one rule for reading an answer of the service. Every layer reads
 * answers with it: the engine (a file host's status, a proxy's refusal), the
 * Lua layer (errors.lua, the reading of poll answers and of direct calls,
 * through kling.core.protocol.answer_kind and error_code).
 *
 * An answer is an error when its HTTP status is not 2xx, or when its body holds
 * an error_code, whatever the HTTP status (RunComfy sometimes answers 200 with
 * an error body). An error_code is a JSON number without a fraction, from 0 to
 * 2^53, or a string of 1 to 15 ASCII digits; anything else (1.5, "12abc", "",
 * null, true) is no error code, and the answer is read for what else it holds.
 * The kind:
 *   1. error_code 400002 is payment; 400004 and 403001 are auth; 404001 is
 *      not_found, whatever the HTTP status;
 *   2. otherwise the HTTP status decides when it is not 2xx; with a 2xx status
 *      the error_code's family decides (code / 1000: 500001 -> 500), read as a
 *      status;
 *   3. 401 and 403 auth, 402 payment, 404 not_found, 408 timeout, 429
 *      rate_limited, any other 4xx bad_request, any 5xx server; anything else
 *      (a 1xx or 3xx status, a family such as 0 or 12) protocol.
 * Retryable: timeout (408), rate_limited (429) and server (5xx), and nothing
 * else: the same request is sent again (with backoff, honouring Retry-After)
 * whether the error came as an HTTP status or inside a 2xx body. The paid
 * submit has a stricter rule (client.lua: only a 429 without a request id,
 * or a failure with never_sent below).
 */
static const struct { long lo, hi; const char *kind; int retryable; } ANSWER_STATUS[] = {
  { 401, 401, "auth", 0 },     { 402, 402, "payment", 0 },        { 403, 403, "auth", 0 },
  { 404, 404, "not_found", 0 }, { 408, 408, "timeout", 1 },       { 429, 429, "rate_limited", 1 },
  { 400, 499, "bad_request", 0 }, { 500, 599, "server", 1 },
};
static const struct { long long code; const char *kind; } ANSWER_CODE[] = {
  { 400002, "payment" }, { 400004, "auth" }, { 403001, "auth" }, { 404001, "not_found" },
};

const char *kproto_answer_kind(long status, int has_code, long long code, int *retryable) {
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

/* Observed (RunComfy's own integration tests): the result route answers HTTP
 * 400 with error_code 400005 for a request that has not completed, also for a
 * short while after its status said completed. The code decides, whatever the
 * HTTP status, on the result route only. */
int kproto_not_ready(kproto_route r, int has_code, long long code) {
  return r == KP_RESULT && has_code && code == KPROTO_CODE_NOT_READY;
}

/*
 * Failures on the way, tried again: the name did not resolve, the connection
 * was refused (these three never reached the server), the request timed out,
 * the connection broke (a reset, nothing answered, a body cut short, an
 * HTTP/2 stream error). A proxy that refused the tunnel is read by the rule
 * for answers (a 503 may pass, a 403 will not); the request never left. Any
 * other failure (TLS, a bad answer, a local problem) ends the call.
 */
int kproto_transient(CURLcode code, long proxy_status, int *never_sent) {
  int never = code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY
              || code == CURLE_COULDNT_CONNECT;
  int transient = never || code == CURLE_OPERATION_TIMEDOUT || code == CURLE_RECV_ERROR
                  || code == CURLE_SEND_ERROR || code == CURLE_GOT_NOTHING || code == CURLE_PARTIAL_FILE
                  || code == CURLE_HTTP2 || code == CURLE_HTTP2_STREAM;
  if (proxy_status) {
    int again = 0;
    kproto_answer_kind(proxy_status, 0, 0, &again);
    transient = never = again;
  }
  if (never_sent) *never_sent = never;
  return transient;
}

double kproto_retry_after(const char *v) {
  if (v == NULL || v[0] == '\0') return -1;
  char *end;
  double s = strtod(v, &end);
  if (end != v && *end == '\0') return s >= 0 && isfinite(s) ? s : -1;
  time_t t = curl_getdate(v, NULL); /* the HTTP-date form */
  if (t < 0) return -1;
  double d = difftime(t, time(NULL));
  return d > 0 ? d : 0;
}
