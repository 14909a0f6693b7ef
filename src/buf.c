/*
 * buf.c - growable byte buffer with a size cap (see buf.h).
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void kbuf_init(kbuf *b, size_t limit) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->limit = limit;
}

int kbuf_append(kbuf *b, const char *p, size_t n) {
  if (n == 0) return 0;
  if (b->limit && (n > b->limit || b->len > b->limit - n)) return -2;
  if (b->len + n > b->cap) {
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + n) {
      if (ncap > (size_t)-1 / 2) return -1;
      ncap *= 2;
    }
    char *nd = realloc(b->data, ncap);
    if (nd == NULL) return -1;
    b->data = nd;
    b->cap = ncap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void kbuf_reset(kbuf *b) { b->len = 0; }

void kbuf_free(kbuf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
