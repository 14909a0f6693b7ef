/*
 * bench/many_jobs_raw.c - the raw libcurl peer of bench/many_jobs.lua: the
 * same HTTP requests kling's run made, on one multi handle with the same
 * connection cap, the same headers and the same submit bodies.
 *   many_jobs_raw API TOKEN N CAP POLLS MODEL BODY_PREFIX BODY_SUFFIX USER_AGENT [INFLIGHT]
 * API: the emulator's base URL (".../v1"); MODEL: the model id of the submit
 * route (POST API/models/MODEL); the body of submit i (1..N) is
 * BODY_PREFIX .. i .. BODY_SUFFIX (many_jobs.lua cuts the body kling sent for
 * its job 1 around its "1"); POLLS: the status GETs kling made in all;
 * CAP: the connections (CURLMOPT_MAX_TOTAL_CONNECTIONS); INFLIGHT (default
 * CAP): the transfers in the multi handle at once, kling's active_cap.
 *
 * What it does, and why it matches kling's run request for request:
 * - N submits (POST), at most INFLIGHT in the multi handle at once: kling's
 *   engine lets at most max_connections API transfers into libcurl over
 *   HTTP/1.1 (src/engine.c; its max_active when that is lower: eng:stats()'s
 *   active_cap), whatever its 64 submitting tasks ask; the request id is
 *   found with strstr (a peer decodes nothing it does not need).
 * - exactly POLLS status GETs, spread over the jobs as evenly as they go
 *   (POLLS / N each, one more for the first POLLS % N jobs), in rounds: the
 *   first 1 s after the last submit (kling's waits start once every job is
 *   submitted, and poll first after its `initial` 1 s), then one every 1.5 s
 *   (kling's factor). Exactly kling's count, not "until completed": the
 *   count is what the CPU is compared on, and a peer that polled until it
 *   saw `completed` would make another number of requests (its schedule is
 *   not kling's).
 * - N result GETs, one per job, not before 5 s after the last submit (the
 *   longest job of the emulator's --load mode), so that each finds its job
 *   completed and gets the same answer kling's fetch got; it counts those
 *   that say completed.
 * Each answer must be HTTP 200 (else the run fails: exit 1). Easy handles
 * are kept and reused (kling keeps an API request's handle configured too).
 *
 * Prints one line: cpu SECONDS (user + system, getrusage, from the first
 * submit to the last answer) wall SECONDS submits N polls N results N
 * completed N connections N (CURLINFO_NUM_CONNECTS summed) rss_mib MiB.
 * Built by bench/many_jobs.lua: cc -O2 bench/many_jobs_raw.c -o DIR/many_jobs_raw -lcurl
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "raw_clock.h" /* cpu(), wall() */

#define ID_MAX 128
#define FIRST_POLL 1.0 /* s after the last submit */
#define POLL_GAP 1.5   /* s between rounds of polls */
#define SETTLE 5.0     /* s after the last submit: every --load job has ended */

enum { K_SUBMIT, K_STATUS, K_RESULT };

typedef struct {
  CURL *h;
  int busy, kind, job;
  char *b;
  size_t n, cap;
} slot;

static size_t sink(char *p, size_t s, size_t n, void *ud) {
  slot *sl = ud;
  size_t k = s * n;
  if (sl->n + k + 1 > sl->cap) {
    size_t cap = (sl->n + k + 1) * 2;
    char *q = realloc(sl->b, cap);
    if (q == NULL) return 0;
    sl->b = q;
    sl->cap = cap;
  }
  memcpy(sl->b + sl->n, p, k);
  sl->n += k;
  sl->b[sl->n] = '\0';
  return k;
}

static void die(const char *what) {
  fprintf(stderr, "many_jobs_raw: %s\n", what);
  exit(1);
}

/* The value of "request_id" in a submit answer, copied into id (ID_MAX). */
static int find_id(const char *body, char *id) {
  const char *p = body ? strstr(body, "\"request_id\"") : NULL;
  if (p == NULL) return -1;
  p = strchr(p + 12, '"');
  if (p == NULL) return -1;
  const char *e = strchr(++p, '"');
  if (e == NULL || e == p || e - p >= ID_MAX) return -1;
  memcpy(id, p, (size_t)(e - p));
  id[e - p] = '\0';
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 10) {
    fprintf(stderr, "usage: many_jobs_raw API TOKEN N CAP POLLS MODEL BODY_PREFIX BODY_SUFFIX USER_AGENT [INFLIGHT]\n");
    return 2;
  }
  const char *api = argv[1], *prefix = argv[7], *suffix = argv[8], *ua = argv[9];
  int n = atoi(argv[3]), conns_cap = atoi(argv[4]);
  int cap = argc > 10 ? atoi(argv[10]) : conns_cap; /* transfers at once: one slot each */
  long long polls = atoll(argv[5]);
  if (n < 1 || cap < 1 || conns_cap < 1 || polls < 0) die("N, CAP and INFLIGHT must be at least 1, POLLS at least 0");
  curl_global_init(CURL_GLOBAL_DEFAULT);

  char auth[512], agent[512];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", argv[2]);
  snprintf(agent, sizeof agent, "User-Agent: %s", ua);
  /* kling's two lists (src/net.c), in its order: the User-Agent a line of
   * them, as kling's (CURLOPT_USERAGENT would make libcurl format it again
   * before every request, work kling no longer does) */
  struct curl_slist *get_h = curl_slist_append(NULL, "Accept: application/json");
  get_h = curl_slist_append(get_h, auth);
  get_h = curl_slist_append(get_h, agent);
  get_h = curl_slist_append(get_h, "Expect:");
  struct curl_slist *post_h = curl_slist_append(NULL, "Accept: application/json");
  post_h = curl_slist_append(post_h, auth);
  post_h = curl_slist_append(post_h, agent);
  post_h = curl_slist_append(post_h, "Expect:");
  post_h = curl_slist_append(post_h, "Content-Type: application/json");
  if (!get_h || !post_h) die("out of memory");

  size_t submit_len = strlen(api) + strlen("/models/") + strlen(argv[6]) + 1;
  char *submit_url = malloc(submit_len);
  char (*ids)[ID_MAX] = calloc((size_t)n, sizeof *ids);
  int *left = calloc((size_t)n, sizeof *left); /* status GETs still to make, per job */
  slot *slots = calloc((size_t)cap, sizeof *slots);
  char *url = malloc(strlen(api) + ID_MAX + 32);
  char **bodies = calloc((size_t)cap, sizeof *bodies);
  if (!submit_url || !ids || !left || !slots || !url || !bodies) die("out of memory");
  snprintf(submit_url, submit_len, "%s/models/%s", api, argv[6]);
  for (int i = 0; i < n; i++) left[i] = (int)(polls / n + (i < polls % n ? 1 : 0));
  int rounds = (int)(polls / n + (polls % n ? 1 : 0));

  CURLM *m = curl_multi_init();
  if (m == NULL) die("curl_multi_init failed");
  curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)conns_cap);
  for (int s = 0; s < cap; s++) {
    CURL *h = slots[s].h = curl_easy_init();
    bodies[s] = malloc(strlen(prefix) + strlen(suffix) + 24);
    if (h == NULL || bodies[s] == NULL) die("out of memory");
    /* what kling sets on every API request (src/http.c, configure_common) */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)&slots[s]);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  }

  double c0 = cpu(), w0 = wall(), submitted_at = -1;
  int next_submit = 0, submits = 0, round = 0, next_job = 0, results_next = 0, results = 0, completed = 0;
  long long polls_done = 0;
  long conns = 0;
  int running = 0;
  for (;;) {
    double now = wall();
    /* fill the free slots: submits first, then the current round of polls, then results */
    for (int s = 0; s < cap; s++) {
      if (slots[s].busy) continue;
      slot *sl = &slots[s];
      CURL *h = sl->h;
      if (next_submit < n) {
        snprintf(bodies[s], strlen(prefix) + strlen(suffix) + 24, "%s%d%s", prefix, next_submit + 1, suffix);
        curl_easy_setopt(h, CURLOPT_URL, submit_url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, post_h);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, bodies[s]);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(bodies[s]));
        sl->kind = K_SUBMIT;
        sl->job = next_submit++;
      } else if (submitted_at < 0) {
        break; /* submits still in flight */
      } else {
        while (round < rounds && next_job < n && left[next_job] == 0) next_job++;
        if (round < rounds && next_job >= n) { /* the round is out: the next one */
          round++;
          next_job = 0;
          s--;
          continue;
        }
        if (round < rounds) {
          if (now < submitted_at + FIRST_POLL + POLL_GAP * round) break;
          snprintf(url, strlen(api) + ID_MAX + 32, "%s/requests/%s/status", api, ids[next_job]);
          left[next_job]--;
          sl->kind = K_STATUS;
          sl->job = next_job++;
        } else if (results_next < n) {
          if (now < submitted_at + SETTLE) break;
          snprintf(url, strlen(api) + ID_MAX + 32, "%s/requests/%s/result", api, ids[results_next]);
          sl->kind = K_RESULT;
          sl->job = results_next++;
        } else {
          break;
        }
        curl_easy_setopt(h, CURLOPT_URL, url); /* libcurl copies it */
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, get_h);
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
      }
      sl->n = 0;
      sl->busy = 1;
      running++;
      if (curl_multi_add_handle(m, h) != CURLM_OK) die("curl_multi_add_handle failed");
    }
    if (running == 0 && results_next >= n && next_submit >= n) break;
    int still;
    curl_multi_perform(m, &still);
    CURLMsg *msg;
    int nleft;
    while ((msg = curl_multi_info_read(m, &nleft)) != NULL) {
      if (msg->msg != CURLMSG_DONE) continue;
      slot *sl = NULL;
      for (int s = 0; s < cap; s++)
        if (slots[s].h == msg->easy_handle) sl = &slots[s];
      if (sl == NULL) die("an answer to no request");
      if (msg->data.result != CURLE_OK) {
        fprintf(stderr, "many_jobs_raw: %s\n", curl_easy_strerror(msg->data.result));
        exit(1);
      }
      long code = 0, nc = 0;
      curl_easy_getinfo(sl->h, CURLINFO_RESPONSE_CODE, &code);
      curl_easy_getinfo(sl->h, CURLINFO_NUM_CONNECTS, &nc);
      conns += nc;
      if (code != 200) {
        fprintf(stderr, "many_jobs_raw: HTTP %ld: %s\n", code, sl->b ? sl->b : "");
        exit(1);
      }
      if (sl->kind == K_SUBMIT) {
        if (find_id(sl->b, ids[sl->job]) != 0) die("a submit answer without a request_id");
        if (++submits == n) submitted_at = wall();
      } else if (sl->kind == K_STATUS) {
        polls_done++;
      } else {
        results++;
        if (sl->b && strstr(sl->b, "\"completed\"")) completed++;
      }
      curl_multi_remove_handle(m, sl->h);
      sl->busy = 0;
      running--;
    }
    /* wait for a socket, or until the next round is due (never a busy loop:
     * with nothing left to start, only the sockets wake it) */
    int timeout = 1000;
    if (running < cap && submitted_at >= 0 && (round < rounds || results_next < n)) {
      double due = round < rounds ? submitted_at + FIRST_POLL + POLL_GAP * round : submitted_at + SETTLE;
      double ms = (due - wall()) * 1000;
      timeout = ms <= 0 ? 0 : ms < 1000 ? (int)ms + 1 : 1000;
    }
    if (running > 0 || timeout > 0) curl_multi_poll(m, NULL, 0, timeout, NULL);
  }
  double c = cpu() - c0, w = wall() - w0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("cpu %.6f wall %.6f submits %d polls %lld results %d completed %d connections %ld rss_mib %.1f\n", c, w,
         submits, polls_done, results, completed, conns, ru.ru_maxrss / 1024.0);
  for (int s = 0; s < cap; s++) {
    curl_easy_cleanup(slots[s].h);
    free(slots[s].b);
    free(bodies[s]);
  }
  curl_multi_cleanup(m);
  curl_slist_free_all(get_h);
  curl_slist_free_all(post_h);
  free(bodies);
  free(slots);
  free(url);
  free(left);
  free(ids);
  free(submit_url);
  curl_global_cleanup();
  return 0;
}
