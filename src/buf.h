/*
 * buf.h - a growable byte buffer with a hard size cap.
 *
 * Owns nothing but its own memory. Used for HTTP response bodies: the cap
 * keeps a misbehaving server from making the client allocate without bound.
 */
#ifndef KLING_BUF_H
#define KLING_BUF_H

#include <stddef.h>

typedef struct kbuf {
  char *data;
  size_t len;
  size_t cap;   /* allocated bytes */
  size_t limit; /* largest len allowed; 0 = no limit */
} kbuf;

void kbuf_init(kbuf *b, size_t limit);
/* Appends n bytes. Returns 0, or -1 when out of memory, -2 when over limit. */
int kbuf_append(kbuf *b, const char *p, size_t n);
void kbuf_reset(kbuf *b);
void kbuf_free(kbuf *b);

#endif
