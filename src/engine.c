/*
 * engine.c - the client's libcurl multi handle and the transfers in flight
 * (see engine.h). Driving it waits in the kernel (curl_multi_poll) until a
 * socket is ready, libcurl's own timer fires, or the caller's deadline.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <stdio.h>
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

static int is_loopback(const char *host) {
  return strcasecmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0
      || strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0;
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

int kengine_init(kengine *e, const kengine_opts *o, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
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
  if (o->user_agent && !(e->user_agent = dupstr(o->user_agent))) goto oom;

  e->multi = curl_multi_init();
  if (e->multi == NULL) {
    snprintf(err, errlen, "curl_multi_init failed");
    kengine_close(e);
    return -1;
  }
  if (e->max_connections > 0)
    curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, e->max_connections);
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
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
  if (e->multi) curl_multi_cleanup(e->multi);
  e->multi = NULL;
  wipe(e->token);
  wipe(e->auth_header);
  free(e->token);
  free(e->auth_header);
  free(e->api_scheme);
  free(e->api_host);
  free(e->api_port);
  free(e->ca_file);
  free(e->user_agent);
  e->token = e->auth_header = e->api_scheme = e->api_host = e->api_port = NULL;
  e->ca_file = e->user_agent = NULL;
}

int kengine_add(kengine *e, kxfer *x, char *err, size_t errlen) {
  if (e->multi == NULL) {
    snprintf(err, errlen, "client is closed");
    return -1;
  }
  CURLMcode mc = curl_multi_add_handle(e->multi, x->easy);
  if (mc != CURLM_OK) {
    snprintf(err, errlen, "%s", curl_multi_strerror(mc));
    return -1;
  }
  x->engine = e;
  x->state = KX_RUNNING;
  x->prev = NULL;
  x->next = e->inflight;
  if (e->inflight) e->inflight->prev = x;
  e->inflight = x;
  e->ninflight++;
  return 0;
}

void kengine_remove(kengine *e, kxfer *x) {
  if (x->engine != e) return;
  if (e->multi) curl_multi_remove_handle(e->multi, x->easy);
  if (x->prev) x->prev->next = x->next;
  else e->inflight = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = NULL;
  x->engine = NULL;
  e->ninflight--;
  if (x->state == KX_RUNNING) { /* torn down before it ended */
    x->aborted = 1;
    kxfer_finish(x, CURLE_ABORTED_BY_CALLBACK);
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
    kxfer_finish(x, code);
    kengine_remove(e, x);
    n++;
  }
  return n;
}

int kengine_step(kengine *e, double timeout) {
  if (e->multi == NULL) return 0;
  int running, done;
  double deadline = kengine_now() + (timeout > 0 ? timeout : 0);
  curl_multi_perform(e->multi, &running);
  done = collect(e);
  while (done == 0) {
    double left = deadline - kengine_now();
    if (left <= 0) break;
    int ms = left > 86400.0 ? 86400000 : (int)(left * 1000.0 + 0.999);
    int nfds;
    if (curl_multi_poll(e->multi, NULL, 0, ms, &nfds) != CURLM_OK) break;
    curl_multi_perform(e->multi, &running);
    done = collect(e);
  }
  return done;
}
