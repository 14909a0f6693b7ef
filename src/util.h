/*
 * util.h - what every C file of the core may need, and nothing else: string
 * copies, the monotonic clock, seconds and milliseconds, a small random
 * number generator, and bytes from the kernel's random source. Pure C (no
 * lua.h, no curl.h); the Lua binding's own helpers are in lbind.h.
 */
#ifndef KLING_UTIL_H
#define KLING_UTIL_H

#include <stddef.h>

/* A copy of s in new memory; NULL when s is NULL or memory runs out. */
char *kstrdup(const char *s);

/* a followed by b, in new memory; NULL when memory runs out. */
char *kconcat(const char *a, const char *b);

/* Seconds on the monotonic clock (CLOCK_MONOTONIC). */
double know(void);

/* A wait of s seconds as whole milliseconds for poll(2) or epoll_wait(2):
 * rounded up, 0 for s <= 0, at most a day. */
int kwait_ms(double s);

/* xorshift64*: fast, not for secrets (jitter and backoff only). */
typedef struct krng {
  unsigned long long s;
} krng;

/* Seeds r from the clock (never 0). */
void krng_seed(krng *r);
/* The next number in [0, 1). */
double krng_next(krng *r);

/* Fills p with n bytes from the kernel's random source (getrandom, else
 * /dev/urandom). Returns 0, or -1 with errno set. For keys, not jitter. */
int krandom_bytes(void *p, size_t n);

/* The n bytes at p as 2n lowercase hex digits and a NUL byte, into out. */
void khex(const unsigned char *p, size_t n, char *out);

#endif
