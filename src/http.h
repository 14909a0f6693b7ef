/*
 * http.h - one HTTP exchange (a "transfer") on a client's libcurl multi handle.
 *
 * A transfer owns its easy handle, its request headers, its response body
 * buffer (or the file it streams a download into) and what it learned of the
 * response: HTTP status, the headers the client needs, the byte counts and,
 * on failure, a classified error. Callbacks here are pure C: they only fill
 * buffers and flags. A transfer reads its client's settings and URL rules
 * (net.h); engine.c owns the multi handle and the engine's lists of
 * transfers and drives them; lua_engine.c exposes both to Lua.
 */
#ifndef KLING_HTTP_H
#define KLING_HTTP_H

#include <stdio.h>
#include <sys/queue.h>
#include <curl/curl.h>

#include "buf.h"
#include "net.h"

struct kengine;

enum kx_state { KX_NEW = 0, KX_RUNNING, KX_DONE };
enum kx_method { KX_GET = 0, KX_POST, KX_HEAD };

/* What a caller asks for. Strings are borrowed for the duration of kxfer_start. */
typedef struct kx_spec {
  const char *method;   /* "GET", "POST", "HEAD" */
  const char *url;
  const char *body;     /* POST body (JSON), may be NULL */
  size_t body_len;
  const char *download; /* stream the response to this path (via path.part) */
  long timeout_ms;      /* 0 = the engine's default */
  int fresh;            /* use a new connection: a request that must not be replayed */
  curl_off_t max_bytes; /* downloads: refuse more than this; 0 = no cap */
  int retry;            /* KX_RETRY_NONE, _SAFE (may be repeated) or _SUBMIT (only if it never arrived, or 429) */
  int resume;           /* downloads: go on from an existing path.part (HTTP Range) */
  long low_speed_limit; /* downloads: a try ends below this many bytes/s ... (0 = 1024) */
  long low_speed_time;  /* ... kept up for this many seconds (0 = timeout_ms, else 30) */
  double deadline;      /* downloads: seconds for the whole download, retries included; 0 = none */
} kx_spec;

/* What went wrong when kxfer_new refuses: a local file problem (io = 1, with
 * the path and errno) or anything else (io = 0). */
typedef struct kx_new_error {
  int io;
  int errnum;
  char path[1024];
} kx_new_error;

enum { KX_RETRY_NONE = 0, KX_RETRY_SAFE, KX_RETRY_SUBMIT };

/* Which of the engine's lists a transfer is on (one at a time, by `link`). */
enum kx_list { KX_NOWHERE = 0, KX_INFLIGHT, KX_QUEUED, KX_DELAYED, KX_ENDED };

typedef struct kxfer {
  CURL *easy;              /* only while it runs: made (or taken from a pool) at start */
  struct curl_slist *headers;
  /* the request, kept until it starts */
  char *url;
  char *req_body;
  size_t req_body_len;
  size_t req_sent;         /* POST: bytes of req_body handed to libcurl by this try */
  int configured;          /* kxfer_begin set every option of easy */
  int rewinds_refused;     /* a submit's body libcurl asked to send again (on a dead reused connection) */
  int method;              /* KX_GET, KX_POST, KX_HEAD */
  long timeout_ms;
  int fresh;
  knet *net;               /* the client's settings (the engine's) */
  struct kengine *engine;  /* set while the engine holds it (on one of its lists); for engine.c */
  TAILQ_ENTRY(kxfer) link; /* on the engine's list `list` */
  enum kx_list list;
  enum kx_state state;
  int is_api;              /* carries the token: API origin only */
  int retry;               /* KX_RETRY_* */
  int attempts;            /* tries made so far */
  double retry_at;         /* on the delayed list: when to try again */
  void *owner;             /* the poller's watch, when the poller made it */

  kbuf body;               /* response body (or an error body of a download) */
  char *path, *part;       /* download destination and its .part file */
  char *meta, *meta_tmp;   /* the .part's sidecar (path.part.meta) and its temporary */
  char *lock;              /* path.part.lock: flocked while this transfer may write the .part */
  int lock_fd;             /* the lock file, held (LOCK_EX) from kxfer_new to the end; else -1 */
  char *dir;               /* the directory of path */
  char *origin_url;        /* downloads: the URL the caller gave (redirects change url) */
  int fd;                  /* downloads: the .part while a try writes into it, else -1 */
  int opened;              /* downloads: this transfer created or truncated the .part */
  int part_trusted;        /* downloads: the .part may be gone on from (its sidecar is on disk, a validator guards it) */
  char *wbuf;              /* downloads: bytes received, not yet written to the .part */
  size_t wlen;
  curl_off_t part_size;    /* downloads: verified bytes in the .part (its length) */
  int to_file;             /* this response's body goes to the file */
  int status_checked;
  curl_off_t bytes;        /* body bytes received by this try (file or memory) */
  curl_off_t offset;       /* downloads: where this try's range starts (0: the whole file) */
  curl_off_t resumed_from; /* downloads: bytes that were there before the first try */
  curl_off_t written_back; /* downloads: bytes handed to the kernel's writeback */
  /* downloads: what identifies the file (from the .part's sidecar, or the first answer) */
  curl_off_t total;        /* its whole length, -1 unknown */
  char etag[256];          /* its ETag as sent ("" none; "\1" unusable) */
  char last_modified[64];  /* its Last-Modified ("" none) */
  long long date;          /* when that answer was made: its Date, else when it came (Unix s; 0 unknown) */
  /* downloads: this answer's headers */
  char r_etag[256], r_last_modified[64], r_content_range[128], r_date[64];
  long low_speed_limit, low_speed_time;
  double deadline_at;      /* know() past which no try starts; 0 = none */
  int deadline_hit;
  int restart;             /* the answer cannot be appended: start over from 0 */
  int restarts, hops;      /* starts over and redirects followed so far */
  int complete;            /* a 416 said the .part already holds the whole file */
  int empty;               /* a 2xx answer with no body and nothing in the .part */
  int range_error;         /* the file host's range answers kept not matching */
  int redirect_error;      /* a redirect was refused (redirect_msg says why) */
  char problem[640];       /* what the last range or redirect problem was */
  const char *io_path;     /* which file an io_error is about */
  long http_version;       /* CURL_HTTP_VERSION_* of the answer */
  curl_off_t max_bytes;

  long status;             /* HTTP status of the final response */
  CURLcode code;
  int too_large, io_error, oom, aborted;
  int io_errno;
  long proxy_status;       /* a proxy refused the tunnel with this HTTP status (0: none) */
  char errbuf[CURL_ERROR_SIZE];

  double total_time;       /* read when it ends, before the easy handle goes back */
  curl_off_t length;       /* Content-Length of the answer, -1 unknown */
  curl_off_t pretransfer;  /* microseconds until the request could go out */

  char retry_after[64];
  char content_type[128];
  char content_length[32];
} kxfer;

/* Allocates a transfer and keeps a copy of the request; the easy handle comes
 * at kxfer_begin. A download checks here that its directory can be written
 * and that none of its files (path, .part, .part.meta, .part.meta.tmp,
 * .part.lock) is a directory or another non-file, takes its lock (a second
 * download of the same path fails here, kind io), and reads the .part's
 * sidecar (see http.c), but creates no file other than the lock: the .part
 * is opened when the first verified byte arrives. On failure returns NULL
 * and writes a reason into err (size errlen); kxfer_new_ex also says whether
 * it is a local file problem (why may be NULL). */
kxfer *kxfer_new(knet *n, const kx_spec *spec, char *err, size_t errlen);
kxfer *kxfer_new_ex(knet *n, const kx_spec *spec, char *err, size_t errlen, kx_new_error *why);
/* Called by the engine when a download's try has ended, before it decides
 * whether to try again: follows a redirect (the target judged as the URL
 * itself would be: knet_check_url, and https never goes to http), reads a
 * 416, and asks to start over after a range answer that did not match.
 * Returns KX_NEXT_HOP or KX_START_OVER when the transfer must go out again
 * at once (the easy handle still attached), else 0. */
int kxfer_review(kxfer *x, const knet *n, long status);
enum { KX_NEXT_HOP = 1, KX_START_OVER = 2 };
/* Configures easy for the transfer and takes it: easy is new (NULL: made
 * here) or reset, or, warm = 1, configured by an earlier API request (then
 * only this transfer's own options are set; a handle that cannot be reused
 * so is configured in full). 0 or -1. */
int kxfer_begin(kxfer *x, knet *n, CURL *easy, int warm);
/* Called by the engine when libcurl reports the transfer done. */
void kxfer_finish(kxfer *x, CURLcode code);
/* A download: writes the bytes of this try still in memory to the .part.
 * Returns 0, or -1 with the io error set (the .part keeps what was written:
 * a verified prefix). Called before deciding whether to try again, so that a
 * full disk ends the download (kind io) instead of being retried. */
int kxfer_flush(kxfer *x);
/* Checks, without sending anything, that a download to path could start
 * now: its directory can be written, none of its files is a directory or
 * another non-file, and no other download holds its lock (taken and given
 * back at once). 0, or -1 with why filled (why->io, errnum, path) and a
 * message in err naming the path and the reason. */
int kx_check_download_target(const char *path, char *err, size_t errlen, kx_new_error *why);
/* Forgets the last try's answer (and truncates a download) before another. */
void kxfer_rewind(kxfer *x);
/* Gives the easy handle back for reuse, or NULL when it had none: reset, or
 * (*warm = 1, an API request's) kept configured for the next API request. */
CURL *kxfer_take_easy(kxfer *x, int *warm);
/* Bytes expected (Content-Length), -1 when unknown. */
curl_off_t kxfer_length(const kxfer *x);
void kxfer_free(kxfer *x);

/* Error classification of a finished transfer: NULL when it succeeded at the
 * transport level (any HTTP status). *sent tells whether the request may have
 * reached the server. */
const char *kxfer_error_kind(const kxfer *x, int *sent);
/* Human-readable transport error (never contains the token). */
void kxfer_error_message(const kxfer *x, char *out, size_t outlen);

#endif
