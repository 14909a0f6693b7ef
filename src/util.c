/*
 * util.c - the shared helpers of the C core (see util.h).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__) || defined(__FreeBSD__)
#include <sys/random.h> /* getrandom; elsewhere (macOS, ...) /dev/urandom */
#define KL_HAVE_GETRANDOM 1
#endif
#include <time.h>
#include <unistd.h>

char *kstrdup(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

char *kconcat(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  char *d = malloc(na + nb + 1);
  if (d) {
    memcpy(d, a, na);
    memcpy(d + na, b, nb + 1);
  }
  return d;
}

double know(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int kwait_ms(double s) {
  if (!(s > 0)) return 0;
  if (s > 86400.0) return 86400000;
  return (int)ceil(s * 1000.0);
}

void krng_seed(krng *r) {
  r->s = (unsigned long long)(know() * 1e9) | 1;
}

double krng_next(krng *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return (double)((r->s * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

int krandom_bytes(void *p, size_t n) {
  unsigned char *b = p;
  size_t got = 0;
#ifdef KL_HAVE_GETRANDOM
  while (got < n) {
    ssize_t r = getrandom(b + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += (size_t)r;
  }
  if (got == n) return 0;
#endif
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC); /* no getrandom (an old kernel): the device */
  if (fd < 0) return -1;
  got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got < n) {
    errno = EIO;
    return -1;
  }
  return 0;
}

void khex(const unsigned char *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}
