/*
 * journal.h - durable, shared appends and compaction of the job journal.
 */
#ifndef KLING_JOURNAL_H
#define KLING_JOURNAL_H

#include <lua.h>

/* Adds journal_append, journal_read, journal_lock, sha256 and random_key to
 * the module table on top of the stack (see journal.c). */
void kjournal_open(lua_State *L);

#endif
