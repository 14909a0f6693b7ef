/*
 * http.c - configuring one transfer, the libcurl callbacks that fill it,
 * and reading its outcome (see http.h).
 *
 * Downloads stream into "<path>.part" and are renamed to <path> only when
 * the body is complete; on failure the .part file is removed. Downloads
 * never carry the token and follow redirects; API requests carry it and
 * follow none.
 */
#define _GNU_SOURCE /* sync_file_range */
#include "http.h"
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <unistd.h>

#define KX_ERROR_BODY_CAP 65536 /* error answers of the file host, kept in memory */
#define KX_LOW_SPEED_TIME_DEFAULT 60L

static char *kx_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static void copy_header_value(char *dst, size_t dstlen, const char *v, size_t n) {
  if (memchr(v, '\0', n) != NULL) n = 0; /* a value with a NUL byte is no value: never read it cut short */
  while (n > 0 && (*v == ' ' || *v == '\t')) { v++; n--; }
  while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  if (n >= dstlen) n = dstlen - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

static int header_is(const char *line, size_t n, const char *name, const char **value, size_t *vlen) {
  size_t k = strlen(name);
  if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0) return 0;
  *value = line + k + 1;
  *vlen = n - k - 1;
  return 1;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud) {
  kxfer *x = ud;
  size_t n = size * nitems;
  const char *v;
  size_t vn;
  if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    /* A new response (after a redirect or a 100 Continue): forget the last one's. */
    x->retry_after[0] = x->content_type[0] = x->content_length[0] = '\0';
    x->status_checked = 0;
  } else if (header_is(line, n, "retry-after", &v, &vn)) {
    copy_header_value(x->retry_after, sizeof x->retry_after, v, vn);
  } else if (header_is(line, n, "content-type", &v, &vn)) {
    copy_header_value(x->content_type, sizeof x->content_type, v, vn);
  } else if (header_is(line, n, "content-length", &v, &vn)) {
    copy_header_value(x->content_length, sizeof x->content_length, v, vn);
  }
  return n;
}

/* Every KX_WRITEBACK bytes, asks the kernel to start writing the file out
 * (without waiting), so the fsync at the end finds little left to do. */
#define KX_WRITEBACK (8 << 20)
static void start_writeback(kxfer *x) {
  curl_off_t at = x->offset + x->bytes;
  if (at - x->written_back < KX_WRITEBACK) return;
  if (fflush(x->file) != 0) return;
#ifdef SYNC_FILE_RANGE_WRITE
  sync_file_range(fileno(x->file), (off_t)x->written_back, (off_t)(at - x->written_back), SYNC_FILE_RANGE_WRITE);
#endif
  x->written_back = at;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  kxfer *x = ud;
  size_t n = size * nmemb;
  if (x->file && !x->status_checked) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    x->to_file = code >= 200 && code < 300;
    x->status_checked = 1;
    if (code != 206 && x->offset > 0 && x->to_file) {
      /* the server ignored the Range: the whole file comes again */
      fflush(x->file);
      if (ftruncate(fileno(x->file), 0) != 0) {
        x->io_error = 1;
        x->io_errno = errno;
        return 0;
      }
      x->offset = 0;
    }
  }
  if (x->file && x->to_file) {
    if (x->max_bytes > 0 && x->offset + x->bytes + (curl_off_t)n > x->max_bytes) {
      x->too_large = 1;
      return 0;
    }
    if (fwrite(p, 1, n, x->file) != n) {
      x->io_error = 1;
      x->io_errno = errno;
      return 0;
    }
    x->bytes += (curl_off_t)n;
    start_writeback(x);
    return n;
  }
  if (x->file) { /* an error answer from the file host: keep its start */
    size_t room = x->body.len < KX_ERROR_BODY_CAP ? KX_ERROR_BODY_CAP - x->body.len : 0;
    if (kbuf_append(&x->body, p, n < room ? n : room) == -1) {
      x->oom = 1;
      return 0;
    }
    return n;
  }
  switch (kbuf_append(&x->body, p, n)) {
  case -1: x->oom = 1; return 0;
  case -2: x->too_large = 1; return 0;
  default: x->bytes += (curl_off_t)n; return n;
  }
}

static int add_header(kxfer *x, const char *h) {
  struct curl_slist *l = curl_slist_append(x->headers, h);
  if (l == NULL) return -1;
  x->headers = l;
  return 0;
}

#define SETOPT(opt, val) do { if (curl_easy_setopt(x->easy, opt, val) != CURLE_OK) return -1; } while (0)

kxfer *kxfer_new(kengine *e, const kx_spec *s, char *err, size_t errlen) {
  int is_api = 0;
  if (kengine_check_url(e, s->url, &is_api, err, errlen) != 0) return NULL;
  if (s->download) is_api = 0; /* downloads never carry the token */
  int method;
  if (strcmp(s->method, "GET") == 0) method = KX_GET;
  else if (strcmp(s->method, "POST") == 0) method = KX_POST;
  else if (strcmp(s->method, "HEAD") == 0) method = KX_HEAD;
  else {
    snprintf(err, errlen, "unsupported method '%s'", s->method);
    return NULL;
  }

  kxfer *x = calloc(1, sizeof *x);
  if (x == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  kbuf_init(&x->body, s->download ? 0 : e->max_body);
  x->is_api = is_api;
  x->method = method;
  x->max_bytes = s->max_bytes;
  x->timeout_ms = s->timeout_ms > 0 ? s->timeout_ms : e->timeout_ms;
  x->fresh = s->fresh;
  x->retry = s->retry;
  x->length = -1;
  x->url = kx_strdup(s->url);
  if (x->url == NULL) goto fail_oom;
  if (method == KX_POST) {
    x->req_body_len = s->body ? s->body_len : 0;
    x->req_body = malloc(x->req_body_len + 1);
    if (x->req_body == NULL) goto fail_oom;
    if (s->body) memcpy(x->req_body, s->body, x->req_body_len);
    x->req_body[x->req_body_len] = '\0';
  }
  if (s->download) {
    size_t n = strlen(s->download);
    x->path = kx_strdup(s->download);
    x->part = malloc(n + sizeof ".part");
    if (x->path == NULL || x->part == NULL) goto fail_oom;
    memcpy(x->part, s->download, n);
    memcpy(x->part + n, ".part", sizeof ".part");
    x->file = fopen(x->part, s->resume ? "ab" : "wb");
    if (x->file != NULL) setvbuf(x->file, NULL, _IOFBF, 1u << 20);
    if (x->file != NULL && s->resume) {
      if (fseek(x->file, 0, SEEK_END) == 0) {
        long at = ftell(x->file);
        x->offset = x->resumed_from = at > 0 ? (curl_off_t)at : 0;
      }
    }
    if (x->file == NULL) {
      snprintf(err, errlen, "cannot open '%s' for writing: %s", x->part, strerror(errno));
      kxfer_free(x);
      return NULL;
    }
  }
  return x;

fail_oom:
  snprintf(err, errlen, "out of memory");
  kxfer_free(x);
  return NULL;
}

static int configure(kxfer *x, kengine *e) {
  SETOPT(CURLOPT_URL, x->url);
  SETOPT(CURLOPT_PRIVATE, (void *)x);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, (void *)x);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, (void *)x);
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
  SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
  if (e->ca_file) SETOPT(CURLOPT_CAINFO, e->ca_file);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, e->connect_timeout_ms);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  if (e->user_agent) SETOPT(CURLOPT_USERAGENT, e->user_agent);
  if (x->fresh) SETOPT(CURLOPT_FRESH_CONNECT, 1L);
  /* Proxies (from the environment, as libcurl reads it): never for loopback nor
   * for plain http carrying the token; always as a CONNECT tunnel, with no
   * header of ours (the token) in the CONNECT request. */
  SETOPT(CURLOPT_NOPROXY, e->no_proxy);
  SETOPT(CURLOPT_HTTPPROXYTUNNEL, 1L);
  SETOPT(CURLOPT_HEADEROPT, (long)CURLHEADER_SEPARATE);
  if (kengine_direct_only(x->url, x->is_api)) SETOPT(CURLOPT_PROXY, "");
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, kengine_open_socket);
  SETOPT(CURLOPT_OPENSOCKETDATA, (void *)e);
  SETOPT(CURLOPT_CLOSESOCKETFUNCTION, kengine_close_socket);
  SETOPT(CURLOPT_CLOSESOCKETDATA, (void *)e);

  if (x->path) {
    /* A large file may take long: give up only when it stalls. */
    long stall = x->timeout_ms > 0 ? (x->timeout_ms + 999) / 1000 : KX_LOW_SPEED_TIME_DEFAULT;
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, stall);
    SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(CURLOPT_MAXREDIRS, 5L);
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, e->allow_insecure_http ? "http,https" : "https");
    SETOPT(CURLOPT_BUFFERSIZE, 512L * 1024L); /* fewer, larger writes */
    if (x->offset > 0) {
      /* our own Range header, not CURLOPT_RESUME_FROM: libcurl would fail any answer
       * without a Content-Range (a 503 too) instead of letting on_body decide */
      char range[64];
      snprintf(range, sizeof range, "Range: bytes=%lld-", (long long)x->offset);
      if (add_header(x, range) != 0) return -1;
    }
  } else {
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_TIMEOUT_MS, x->timeout_ms);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    if (add_header(x, "Accept: application/json") != 0) return -1;
  }
  if (x->is_api && e->auth_header && add_header(x, e->auth_header) != 0) return -1;
  if (add_header(x, "Expect:") != 0) return -1;

  if (x->method == KX_POST) {
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->req_body_len);
    SETOPT(CURLOPT_POSTFIELDS, x->req_body);
    if (x->req_body_len && add_header(x, "Content-Type: application/json") != 0) return -1;
  } else if (x->method == KX_HEAD) {
    SETOPT(CURLOPT_NOBODY, 1L);
  }
  SETOPT(CURLOPT_HTTPHEADER, x->headers);
  return 0;
}

int kxfer_begin(kxfer *x, kengine *e, CURL *easy) {
  x->easy = easy ? easy : curl_easy_init();
  if (x->easy == NULL) return -1;
  if (configure(x, e) != 0) {
    snprintf(x->errbuf, sizeof x->errbuf, "cannot configure the transfer (out of memory?)");
    return -1;
  }
  return 0;
}

CURL *kxfer_take_easy(kxfer *x) {
  CURL *easy = x->easy;
  x->easy = NULL;
  if (easy) curl_easy_reset(easy);
  curl_slist_free_all(x->headers); /* after the reset: libcurl no longer points at it */
  x->headers = NULL;
  return easy;
}

curl_off_t kxfer_length(const kxfer *x) {
  curl_off_t len = -1;
  if (x->easy == NULL) return x->length;
  if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len) != CURLE_OK) return -1;
  return len;
}

static void finish_download(kxfer *x) {
  int ok = x->code == CURLE_OK && x->to_file && x->status >= 200 && x->status < 300;
  curl_off_t expected = x->length;
  if (ok && expected >= 0 && expected != x->bytes) {
    ok = 0;
    x->code = CURLE_PARTIAL_FILE;
  }
  if (ok && (fflush(x->file) != 0 || fsync(fileno(x->file)) != 0)) {
    ok = 0;
    x->io_error = 1;
    x->io_errno = errno;
  }
  if (fclose(x->file) != 0 && ok) {
    ok = 0;
    x->io_error = 1;
    x->io_errno = errno;
  }
  x->file = NULL;
  if (ok && rename(x->part, x->path) != 0) {
    ok = 0;
    x->io_error = 1;
    x->io_errno = errno;
  }
  /* A transfer that broke off keeps its .part, to go on from later (Range);
   * one the server refused, or that was too big or not writable, does not. */
  int resumable = !x->io_error && !x->too_large && !x->oom && x->code != CURLE_OK
                  && (x->status == 0 || x->status == 200 || x->status == 206);
  if (!ok && !resumable) remove(x->part);
  if (x->io_error && x->code == CURLE_OK) x->code = CURLE_WRITE_ERROR;
  if (!x->status_checked && x->code == CURLE_OK && x->status >= 200 && x->status < 300) {
    /* an empty body: the file exists, with nothing in it */
    x->to_file = 1;
  }
}

void kxfer_finish(kxfer *x, CURLcode code) {
  x->code = code;
  x->state = KX_DONE;
  if (x->easy) {
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &x->total_time);
    curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &x->pretransfer);
    curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &x->http_version);
    x->length = kxfer_length(x);
    long refused = code != CURLE_OK ? kengine_proxy_refusal(x->easy) : 0;
    if (refused) { /* say it was the proxy, not the service, that refused */
      char *ip = NULL;
      long port = 0;
      curl_easy_getinfo(x->easy, CURLINFO_PRIMARY_IP, &ip);
      curl_easy_getinfo(x->easy, CURLINFO_PRIMARY_PORT, &port);
      x->proxy_status = refused;
      snprintf(x->errbuf, sizeof x->errbuf, "the proxy %s%s%s:%ld refused to open a tunnel (it answered the CONNECT with HTTP %ld)",
               ip && strchr(ip, ':') ? "[" : "", ip && ip[0] ? ip : "?", ip && strchr(ip, ':') ? "]" : "", port, refused);
    }
  }
  if (x->file) finish_download(x);
}

void kxfer_rewind(kxfer *x) {
  kbuf_reset(&x->body);
  x->bytes = 0;
  x->status = 0;
  x->code = CURLE_OK;
  x->too_large = x->io_error = x->oom = 0;
  x->proxy_status = 0;
  x->to_file = x->status_checked = 0;
  x->errbuf[0] = '\0';
  x->retry_after[0] = x->content_type[0] = x->content_length[0] = '\0';
  x->length = -1;
  if (x->file) { /* go on from what the last try wrote */
    long at = -1;
    if (fflush(x->file) == 0 && fseek(x->file, 0, SEEK_END) == 0) at = ftell(x->file);
    if (at < 0) x->io_error = 1;
    else x->offset = (curl_off_t)at;
  }
}

void kxfer_free(kxfer *x) {
  if (x == NULL) return;
  if (x->file) {
    fclose(x->file);
    x->file = NULL;
    if (x->part) remove(x->part);
  }
  if (x->easy) curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->headers);
  kbuf_free(&x->body);
  free(x->url);
  free(x->req_body);
  free(x->path);
  free(x->part);
  free(x);
}

const char *kxfer_error_kind(const kxfer *x, int *sent) {
  *sent = 1;
  if (x->aborted) return "aborted";
  if (x->too_large) return "too_large";
  if (x->io_error) return "io";
  if (x->oom) return "memory";
  if (x->code == CURLE_OK) return NULL;
  if (x->proxy_status || x->code == CURLE_PROXY || x->code == CURLE_COULDNT_RESOLVE_PROXY) {
    *sent = 0; /* the request never went past the proxy */
    return "proxy";
  }
  switch (x->code) {
  case CURLE_COULDNT_RESOLVE_HOST:
    *sent = 0;
    return "resolve";
  case CURLE_COULDNT_CONNECT:
    *sent = 0;
    return "connect";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
    *sent = 0;
    return "tls";
  case CURLE_OPERATION_TIMEDOUT:
    if (x->pretransfer == 0) *sent = 0; /* timed out before the request could go out */
    return "timeout";
  case CURLE_PARTIAL_FILE:
    return "truncated";
  case CURLE_TOO_MANY_REDIRECTS:
  case CURLE_UNSUPPORTED_PROTOCOL:
    return "redirect";
  default:
    return "network";
  }
}

void kxfer_error_message(const kxfer *x, char *out, size_t outlen) {
  if (x->aborted) snprintf(out, outlen, "transfer aborted");
  else if (x->too_large && x->path) snprintf(out, outlen, "download larger than the %lld-byte cap", (long long)x->max_bytes);
  else if (x->too_large) snprintf(out, outlen, "answer larger than the %zu-byte cap", x->body.limit);
  else if (x->io_error) snprintf(out, outlen, "cannot write '%s': %s", x->part ? x->part : "?", strerror(x->io_errno));
  else if (x->oom) snprintf(out, outlen, "out of memory");
  else if (x->code == CURLE_PARTIAL_FILE) snprintf(out, outlen, "transfer ended after %lld bytes, before the announced length", (long long)x->bytes);
  else if (x->errbuf[0]) snprintf(out, outlen, "%s", x->errbuf);
  else snprintf(out, outlen, "%s", curl_easy_strerror(x->code));
}

#ifdef KLING_FUZZ
/* Test entry points for fuzz/answer_fuzz.c, compiled only with -DKLING_FUZZ:
 * an API transfer with no easy handle, fed header lines and body bytes
 * through the same callbacks libcurl calls, then finished as libcurl would
 * finish it (status code and timing taken from the caller). */
kxfer *kxfer_fuzz_new(size_t max_body) {
  kxfer *x = calloc(1, sizeof *x);
  if (x == NULL) return NULL;
  kbuf_init(&x->body, max_body);
  x->is_api = 1;
  x->method = KX_GET;
  x->retry = KX_RETRY_NONE;
  x->length = -1;
  x->state = KX_RUNNING;
  return x;
}

size_t kxfer_fuzz_header(kxfer *x, char *line, size_t n) { return on_header(line, 1, n, x); }

size_t kxfer_fuzz_body(kxfer *x, char *p, size_t n) { return on_body(p, 1, n, x); }

void kxfer_fuzz_finish(kxfer *x, CURLcode code, long status, curl_off_t pretransfer, double total_time) {
  x->status = status;
  x->pretransfer = pretransfer;
  x->total_time = total_time;
  x->attempts = 1;
  kxfer_finish(x, code);
}
#endif
