/*
 * bench/tls_raw.c - raw libcurl, for bench/tls.lua: N requests one after the
 * other on one easy handle (its connection kept alive), each a POST of a
 * JSON body or a GET, with the same settings kling uses (TLS verified, the
 * CA file given, the token header). Prints the CPU seconds (user + system)
 * of the N requests, the wall seconds and the connections opened:
 *   tls_raw URL TOKEN CA_FILE N post|get [fresh] [capath]
 * fresh: a new connection for every request (CURLOPT_FRESH_CONNECT);
 * capath: leave libcurl's compiled-in CA directory set (as kling did).
 * Built by bench/tls.lua: cc -O2 bench/tls_raw.c -o build/tls_raw -lcurl
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "raw_clock.h" /* cpu(), wall() */

static size_t sink(char *p, size_t s, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return s * n;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: tls_raw URL TOKEN CA_FILE N post|get [fresh] [capath]\n");
    return 2;
  }
  const char *url = argv[1], *ca = argv[3];
  int n = atoi(argv[4]), post = strcmp(argv[5], "post") == 0, fresh = 0, keep_capath = 0;
  for (int i = 6; i < argc; i++) {
    if (strcmp(argv[i], "fresh") == 0) fresh = 1;
    if (strcmp(argv[i], "capath") == 0) keep_capath = 1;
  }
  char auth[512];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL *h = curl_easy_init();
  if (h == NULL) return 1;
  struct curl_slist *hd = curl_slist_append(NULL, auth);
  hd = curl_slist_append(hd, "Accept: application/json");
  hd = curl_slist_append(hd, "Content-Type: application/json");
  hd = curl_slist_append(hd, "Expect:");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(h, CURLOPT_CAINFO, ca);
  if (!keep_capath) curl_easy_setopt(h, CURLOPT_CAPATH, (char *)NULL);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(h, CURLOPT_URL, url);
  if (fresh) curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
  char body[128];
  long connects = 0;
  double c0 = cpu(), w0 = wall();
  for (int i = 0; i < n; i++) {
    if (post) {
      snprintf(body, sizeof body, "{\"prompt\":\"raw %d\"}", i);
      curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0, nc = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nc);
    connects += nc;
    if (rc != CURLE_OK || status != 200) {
      fprintf(stderr, "tls_raw: request %d: %s, HTTP %ld\n", i, curl_easy_strerror(rc), status);
      return 1;
    }
  }
  printf("%.6f %.6f %ld\n", cpu() - c0, wall() - w0, connects);
  curl_slist_free_all(hd);
  curl_easy_cleanup(h);
  curl_global_cleanup();
  return 0;
}
