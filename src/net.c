/*
 * net.c - a client's settings and the rules that judge a URL (see net.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

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

int knet_direct_only(const char *url, int is_api) {
  char *scheme, *host, *port;
  if (url_origin(url, &scheme, &host, &port) != 0) return 1;
  int direct = is_loopback(host) || (is_api && strcmp(scheme, "http") == 0);
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  return direct;
}

/* A URL that starts with the API's prefix (its scheme and authority, then
 * '/') has the API's origin, whatever follows: a parser reads the authority
 * up to that '/'. The rest is printable ASCII, so libcurl reads it as the
 * full parse would have. No URL is parsed twice for the requests a client
 * makes most (status and result polls). */
static int is_api_url_fast(const knet *n, const char *url) {
  if (n->api_prefix == NULL || strncmp(url, n->api_prefix, n->api_prefix_len) != 0) return 0;
  for (const unsigned char *p = (const unsigned char *)url + n->api_prefix_len; *p; p++)
    if (*p <= 0x20 || *p >= 0x7f) return 0;
  return 1;
}

int knet_check_url(const knet *n, const char *url, int *is_api, char *err, size_t errlen) {
  char *scheme, *host, *port;
  *is_api = 0;
  if (is_api_url_fast(n, url)) {
    *is_api = 1;
    return 0;
  }
  if (url_origin(url, &scheme, &host, &port) != 0) {
    if (err) snprintf(err, errlen, "not a valid URL");
    return -1;
  }
  int rc = 0;
  if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
    if (err) snprintf(err, errlen, "refusing URL scheme '%s' (http and https only)", scheme);
    rc = -1;
  } else if (strcmp(scheme, "http") == 0 && !is_loopback(host) && !n->allow_insecure_http) {
    if (err) snprintf(err, errlen, "refusing plain http to '%s': use https (or allow_insecure_http = true)", host);
    rc = -1;
  } else {
    *is_api = n->api_scheme && strcmp(scheme, n->api_scheme) == 0 && strcmp(host, n->api_host) == 0
              && strcmp(port, n->api_port) == 0;
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  return rc;
}

int knet_init(knet *n, const knet_opts *o, char *err, size_t errlen) {
  memset(n, 0, sizeof *n);
  n->timeout_ms = o->timeout_ms;
  n->connect_timeout_ms = o->connect_timeout_ms;
  n->max_body = o->max_body;
  n->allow_insecure_http = o->allow_insecure_http;
  /* (make valgrind: every freed transfer freed, so that memcheck sees a use after free) */
  n->no_spare = getenv("KLING_NO_SPARE") != NULL;

  char *scheme, *host, *port;
  if (o->api_base == NULL || url_origin(o->api_base, &scheme, &host, &port) != 0) {
    snprintf(err, errlen, "base_url is not a valid URL");
    return -1;
  }
  n->api_scheme = kstrdup(scheme);
  n->api_host = kstrdup(host);
  n->api_port = kstrdup(port);
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  if (!n->api_scheme || !n->api_host || !n->api_port) goto oom;

  int dummy;
  if (knet_check_url(n, o->api_base, &dummy, err, errlen) != 0) {
    knet_close(n);
    return -1;
  }
  { /* the prefix, once the base is known good (the fast path is off until here) */
    const char *sep = strstr(o->api_base, "://");
    const char *slash = sep ? strchr(sep + 3, '/') : NULL;
    size_t len = slash ? (size_t)(slash - o->api_base) + 1 : 0;
    if (len > 0 && strcspn(o->api_base, "?#") >= len) {
      n->api_prefix = malloc(len + 1);
      if (n->api_prefix == NULL) goto oom;
      memcpy(n->api_prefix, o->api_base, len);
      n->api_prefix[len] = '\0';
      n->api_prefix_len = len;
    }
    n->api_direct = is_loopback(n->api_host) || strcmp(n->api_scheme, "http") == 0;
  }
  if (o->token && o->token[0]) {
    static const char prefix[] = "Authorization: Bearer ";
    size_t len = strlen(o->token);
    if (strpbrk(o->token, "\r\n") != NULL) {
      snprintf(err, errlen, "token contains a line break");
      knet_close(n);
      return -1;
    }
    n->token = kstrdup(o->token);
    n->auth_header = malloc(sizeof prefix + len);
    if (!n->token || !n->auth_header) goto oom;
    memcpy(n->auth_header, prefix, sizeof prefix - 1);
    memcpy(n->auth_header + sizeof prefix - 1, o->token, len + 1);
  }
  if (o->ca_file && !(n->ca_file = kstrdup(o->ca_file))) goto oom;
  { /* the user's no_proxy (as libcurl reads it), and loopback: never through a proxy */
    static const char loopback[] = "localhost,127.0.0.0/8,::1";
    const char *np = getenv("no_proxy");
    if (np == NULL || np[0] == '\0') np = getenv("NO_PROXY");
    if (np == NULL) np = "";
    size_t lead = strspn(np, " \t");
    if (np[lead] == '*' && np[lead + 1 + strspn(np + lead + 1, " \t")] == '\0') {
      n->no_proxy = kstrdup("*"); /* no proxy for any host (libcurl reads "*" only alone) */
    } else {
      size_t len = strlen(np);
      n->no_proxy = malloc(len + sizeof loopback + 1);
      if (n->no_proxy) snprintf(n->no_proxy, len + sizeof loopback + 1, "%s%s%s", np, len ? "," : "", loopback);
    }
    if (n->no_proxy == NULL) goto oom;
  }
  if (o->user_agent && strpbrk(o->user_agent, "\r\n") != NULL) {
    snprintf(err, errlen, "user_agent contains a line break");
    knet_close(n);
    return -1;
  }
  if (o->user_agent && !(n->user_agent = kstrdup(o->user_agent))) goto oom;
  n->ca_dir_off = o->ca_file != NULL;
#if LIBCURL_VERSION_NUM >= 0x075400 && !defined(KLING_FORCE_CURL_7_68) /* CURLINFO_CAINFO: 7.84 */
  if (!n->ca_dir_off) {
    CURL *h = curl_easy_init();
    char *bundle = NULL;
    if (h && curl_easy_getinfo(h, CURLINFO_CAINFO, &bundle) == CURLE_OK && bundle && access(bundle, R_OK) == 0)
      n->ca_dir_off = 1;
    if (h) curl_easy_cleanup(h);
  }
#endif
  {
    /* An API request's User-Agent is a line of its lists (and of its proxy
     * CONNECT's): libcurl formats CURLOPT_USERAGENT into a header again before
     * every request, which costs a status poll about 5% of its instructions. */
    char *ua = NULL;
    if (n->user_agent) {
      static const char ua_prefix[] = "User-Agent: ";
      size_t len = strlen(n->user_agent);
      ua = malloc(sizeof ua_prefix + len);
      if (ua == NULL) goto oom;
      memcpy(ua, ua_prefix, sizeof ua_prefix - 1);
      memcpy(ua + sizeof ua_prefix - 1, n->user_agent, len + 1);
    }
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (h && n->auth_header) h = curl_slist_append(h, n->auth_header);
    if (h && ua) h = curl_slist_append(h, ua);
    if (h) h = curl_slist_append(h, "Expect:");
    n->api_headers = h;
    h = curl_slist_append(NULL, "Accept: application/json");
    if (h && n->auth_header) h = curl_slist_append(h, n->auth_header);
    if (h && ua) h = curl_slist_append(h, ua);
    if (h) h = curl_slist_append(h, "Expect:");
    if (h) h = curl_slist_append(h, "Content-Type: application/json");
    n->api_json_headers = h;
    n->api_proxy_headers = ua ? curl_slist_append(NULL, ua) : NULL;
    int lost = ua && !n->api_proxy_headers;
    free(ua);
    if (!n->api_headers || !n->api_json_headers || lost) goto oom;
  }
  n->share = curl_share_init();
  if (n->share && curl_share_setopt(n->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
    curl_share_cleanup(n->share);
    n->share = NULL; /* sessions then stay per handle: slower, as safe */
  }
  return 0;

oom:
  snprintf(err, errlen, "out of memory");
  knet_close(n);
  return -1;
}

static void wipe(char *s) {
  if (s) {
    volatile char *p = s;
    while (*p) *p++ = 0;
  }
}

void knet_close(knet *n) {
  n->closed = 1;
  while (n->nspare > 0) free(n->spare[--n->nspare]); /* (poisoned under ASan by http.c: free takes them as they are) */
  wipe(n->token);
  wipe(n->auth_header);
  free(n->token);
  free(n->auth_header);
  free(n->api_scheme);
  free(n->api_host);
  free(n->api_port);
  free(n->ca_file);
  free(n->user_agent);
  free(n->no_proxy);
  if (n->share) curl_share_cleanup(n->share); /* after every easy handle that used it */
  free(n->api_prefix);
  n->api_prefix = NULL;
  n->api_prefix_len = 0;
  /* the lists hold the token: wiped before they go */
  for (struct curl_slist *l = n->api_headers; l; l = l->next) wipe(l->data);
  for (struct curl_slist *l = n->api_json_headers; l; l = l->next) wipe(l->data);
  curl_slist_free_all(n->api_headers);
  curl_slist_free_all(n->api_json_headers);
  curl_slist_free_all(n->api_proxy_headers);
  n->api_headers = n->api_json_headers = n->api_proxy_headers = NULL;
  n->share = NULL;
  n->token = n->auth_header = n->api_scheme = n->api_host = n->api_port = NULL;
  n->ca_file = n->user_agent = n->no_proxy = NULL;
}

void knet_mask(const knet *n, char *s, size_t cap) {
  const char *tok = n ? n->token : NULL;
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

curl_socket_t knet_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr) {
  knet *n = ud;
  (void)purpose;
#ifdef SOCK_CLOEXEC
  curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
#else /* macOS: no SOCK_CLOEXEC; the flag right after (kling starts no process meanwhile) */
  curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
  if (fd != CURL_SOCKET_BAD) (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
  if (fd != CURL_SOCKET_BAD) {
    n->sockets_opened++;
    if (++n->sockets_open > n->sockets_peak) n->sockets_peak = n->sockets_open;
  }
  return fd;
}

int knet_close_socket(void *ud, curl_socket_t fd) {
  knet *n = ud;
  n->sockets_open--;
  return close(fd);
}

long knet_proxy_refusal(CURL *easy) {
  long cc = 0;
  if (easy == NULL || curl_easy_getinfo(easy, CURLINFO_HTTP_CONNECTCODE, &cc) != CURLE_OK) return 0;
  return cc != 0 && (cc < 200 || cc > 299) ? cc : 0;
}
