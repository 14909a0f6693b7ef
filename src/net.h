/*
 * net.h - what every transfer of a client shares: its settings (token, the
 * API's origin, timeouts, TLS, proxies, the body cap) and the rules that
 * judge a URL against them. The engine owns one; transfers (http.c) read it.
 *
 * The token goes only to the API's origin (scheme, host, port); plain http
 * is refused for any host but loopback unless the caller allowed it;
 * loopback, and plain http that carries the token, never go through a
 * proxy. Pure C on libcurl's URL parser.
 */
#ifndef KLING_NET_H
#define KLING_NET_H

#include <stddef.h>
#include <curl/curl.h>

/* Freed transfers (a few KiB each) a client keeps for its next ones, at
 * most: malloc does not keep blocks that size at hand, and a client with many
 * jobs frees and starts several transfers per step. */
#define KNET_SPARES 16

typedef struct knet_opts {
  const char *api_base;    /* the API's base URL (required) */
  const char *token;       /* NULL or "" when none */
  const char *ca_file, *user_agent; /* NULL: libcurl's */
  long timeout_ms, connect_timeout_ms;
  size_t max_body;         /* cap on in-memory response bodies */
  int allow_insecure_http;
} knet_opts;

typedef struct knet {
  char *token;             /* NULL when none */
  char *auth_header;       /* "Authorization: Bearer ..." */
  char *api_scheme, *api_host, *api_port;
  char *ca_file;
  char *user_agent;
  char *no_proxy;          /* CURLOPT_NOPROXY of every transfer: the user's list and loopback */
  char *api_prefix;        /* the base URL up to the first '/' after "://": a URL that starts so is the API's */
  size_t api_prefix_len;
  int api_direct;          /* knet_direct_only of the API's URLs */
  struct curl_slist *api_headers, *api_json_headers; /* an API request's headers, built once (the latter with a JSON body) */
  struct curl_slist *api_proxy_headers; /* an API request's CONNECT to a proxy: the User-Agent (NULL: none) */
  int ca_dir_off;          /* a CA file is used (ca_file, or libcurl's default bundle): CURLOPT_CAPATH NULL */
  CURLSH *share;           /* TLS sessions, shared by every transfer of the client (NULL: none) */
  long timeout_ms, connect_timeout_ms;
  size_t max_body;
  int allow_insecure_http;
  void *spare[KNET_SPARES]; /* freed transfers' memory, for the next ones (http.c): spare[0..nspare) */
  int nspare;
  int closed;              /* knet_close ran: nothing is kept any more */
  int no_spare;            /* KLING_NO_SPARE in the environment: no freed transfer kept (make valgrind) */
  /* counted by the open/close socket callbacks */
  int sockets_open, sockets_peak;
  long long sockets_opened;
} knet;

/* Returns 0, or -1 with a reason in err (n is then cleaned up).
 *
 * TLS costs what it must (issue 13): Debian's libcurl has both a CA file
 * and a CA directory compiled in, and with a directory set it reads the
 * whole bundle again for every new connection. Where a CA file is used (the
 * caller's ca_file, or libcurl's default bundle when it is readable), every
 * transfer leaves the directory unset (CURLOPT_CAPATH NULL), so libcurl
 * keeps the parsed store in the client's multi handle (CA cache, libcurl
 * 7.87+) and checks every peer against the same certificates. TLS sessions
 * are shared by the client's transfers (curl_share, SSL_SESSION): a new
 * connection resumes. Verification is never weakened. */
int knet_init(knet *n, const knet_opts *o, char *err, size_t errlen);
/* Wipes the token and frees what n holds. Idempotent. */
void knet_close(knet *n);

/* Is the URL acceptable (http/https, TLS unless loopback or allowed)?
 * Sets *is_api when its origin is the API's. Returns 0 or -1 with err (err
 * may be NULL). */
int knet_check_url(const knet *n, const char *url, int *is_api, char *err, size_t errlen);

/* Must a transfer to url go straight to its host, never through a proxy?
 * Yes for loopback hosts, and for a plain-http request that carries the token
 * (a proxy would read it in clear text). Returns 1 or 0. */
int knet_direct_only(const char *url, int is_api);

/* Masks the token in the NUL-terminated text s (a buffer of cap bytes): every
 * occurrence becomes "***", cut at cap. For the parts of a message kling builds
 * that quote what a server sent (a redirect's Location, a Content-Range). n
 * may be NULL (nothing to mask). */
void knet_mask(const knet *n, char *s, size_t cap);

/* libcurl's open/close socket callbacks (ud: the knet): count the sockets. */
curl_socket_t knet_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr);
int knet_close_socket(void *ud, curl_socket_t fd);

/* The HTTP status a proxy answered a CONNECT with, when it refused to open the
 * tunnel (not 2xx); 0 when no proxy refused (or none was used). */
long knet_proxy_refusal(CURL *easy);

#endif
