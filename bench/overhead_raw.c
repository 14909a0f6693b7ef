/*
 * bench/overhead_raw.c - raw libcurl loops for bench/overhead.lua: the same
 * status GETs kling's job:refresh() makes, with the same headers.
 *   overhead_raw easy URL TOKEN N UA        N GETs one after the other, one easy handle
 *   overhead_raw multi URL TOKEN N UA CAP   N GETs at once on a multi handle, CAP connections
 * UA: the User-Agent kling sent (a line of its header list, as in src/net.c).
 * Prints the CPU seconds (user + system) of the loop and the wall seconds.
 * Built by bench/overhead.lua: cc -O2 bench/overhead_raw.c -o DIR/overhead_raw -lcurl
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "raw_clock.h" /* cpu(), wall() */

typedef struct { char *p; size_t n, cap; } body;

static size_t sink(char *p, size_t s, size_t n, void *ud) {
  body *b = ud;
  size_t k = s * n;
  if (b->n + k > b->cap) {
    size_t cap = (b->n + k) * 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) return 0;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, k);
  b->n += k;
  return k;
}

static struct curl_slist *headers(const char *token, const char *ua) {
  char auth[512], agent[512];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
  snprintf(agent, sizeof agent, "User-Agent: %s", ua);
  /* kling's list for a GET, in its order */
  struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
  h = curl_slist_append(h, auth);
  h = curl_slist_append(h, agent);
  return curl_slist_append(h, "Expect:");
}

static void setup(CURL *h, const char *url, struct curl_slist *hd, body *b) {
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)b);
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: overhead_raw easy|multi URL TOKEN N UA [CAP]\n");
    return 2;
  }
  const char *url = argv[2];
  int n = atoi(argv[4]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  struct curl_slist *hd = headers(argv[3], argv[5]);
  double c0, w0;
  if (strcmp(argv[1], "easy") == 0) {
    CURL *h = curl_easy_init();
    body b = { 0 };
    setup(h, url, hd, &b);
    c0 = cpu();
    w0 = wall();
    for (int i = 0; i < n; i++) {
      b.n = 0;
      if (curl_easy_perform(h) != CURLE_OK) return 1;
    }
    curl_easy_cleanup(h);
    free(b.p);
  } else {
    long cap = argc > 6 ? atol(argv[6]) : 8;
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, cap);
    CURL **hs = calloc((size_t)n, sizeof *hs);
    body *bs = calloc((size_t)n, sizeof *bs);
    if (!hs || !bs) return 1;
    c0 = cpu();
    w0 = wall();
    /* at most cap in the multi handle at once, as kling's engine on HTTP/1.1 */
    int next = 0, running = 0, done = 0;
    while (done < n) {
      while (running < cap && next < n) {
        hs[next] = curl_easy_init();
        setup(hs[next], url, hd, &bs[next]);
        curl_multi_add_handle(m, hs[next]);
        next++;
        running++;
      }
      int still;
      curl_multi_perform(m, &still);
      CURLMsg *msg;
      int left;
      while ((msg = curl_multi_info_read(m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        if (msg->data.result != CURLE_OK) return 1;
        curl_multi_remove_handle(m, msg->easy_handle);
        curl_easy_cleanup(msg->easy_handle);
        running--;
        done++;
      }
      if (done < n) curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    for (int i = 0; i < n; i++) free(bs[i].p);
    free(bs);
    free(hs);
    curl_multi_cleanup(m);
  }
  printf("%.6f %.6f\n", cpu() - c0, wall() - w0);
  curl_slist_free_all(hd);
  curl_global_cleanup();
  return 0;
}
