/*
 * journal.h - durable, shared appends and compaction of the job journal.
 */
#ifndef KLING_JOURNAL_H
#define KLING_JOURNAL_H

#include <lua.h>

/* Adds journal_append, journal_read, journal_lock, sha256 and random_key to
 * the module table on top of the stack (see journal.c). */
void kjournal_open(lua_State *L);

/* SHA-256 (FIPS 180-4) of n bytes at p, as 64 lowercase hex digits and a NUL
 * in hex (a download's sidecar keeps the digest of its whole URL). */
void ksha256_hex(const void *p, size_t n, char hex[65]);

#endif
