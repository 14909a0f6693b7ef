/*
 * bench/raw_clock.h - the clocks of the raw libcurl programs of the benches
 * (overhead_raw.c, tls_raw.c, many_jobs_raw.c): what each measures its loop by.
 */
#ifndef KLING_BENCH_RAW_CLOCK_H
#define KLING_BENCH_RAW_CLOCK_H

#include <sys/resource.h>
#include <time.h>

/* CPU seconds (user + system) of this process so far. */
static double cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Seconds of a monotonic clock. */
static double wall(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

#endif
