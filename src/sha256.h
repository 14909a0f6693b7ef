/*
 * sha256.h - SHA-256 (FIPS 180-4), for the journal's digests of submitted
 * bodies and a download sidecar's digest of its URL. Pure C.
 */
#ifndef KLING_SHA256_H
#define KLING_SHA256_H

#include <stddef.h>

/* The digest of the n bytes at p, as 64 lowercase hex digits and a NUL byte. */
void ksha256_hex(const void *p, size_t n, char hex[65]);

#endif
