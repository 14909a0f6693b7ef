/*
 * journal.h - durable, shared appends and compaction of the job journal.
 */
#ifndef KLING_JOURNAL_H
#define KLING_JOURNAL_H

#include <lua.h>

/* Adds journal_append and journal_lock to the module table on top of the stack. */
void kjournal_open(lua_State *L);

#endif
