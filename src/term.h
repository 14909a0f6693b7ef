/*
 * term.h - the terminal facts the command-line tool needs (term.c).
 */
#ifndef KLING_TERM_H
#define KLING_TERM_H

#include <lua.h>

/* Sets kling.core.term = { isatty, size } in the module table on top of the
 * stack (see term.c). */
void kterm_open(lua_State *L);

#endif
