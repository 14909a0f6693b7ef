/*
 * lbind.h - the Lua binding's shared helpers (a userdata class, reading an
 * options table) and the entry of each subsystem's binding. Only the
 * binding files include lua.h: core.c (the module), lua_engine.c,
 * lua_poller.c, lua_protocol.c, lua_journal.c, lua_term.c, and lua_schema.c and
 * lua_jsonw.c, which walk Lua tables by nature (the validator and the JSON
 * writer read Lua values). The core under them (engine, http, net, poller,
 * protocol, event, journal, sha256, util) is pure C and never calls Lua.
 */
#ifndef KLING_LBIND_H
#define KLING_LBIND_H

#include <lua.h>
#include <lauxlib.h>

#include "compat.h" /* the Lua 5.4 API on 5.1, 5.2, 5.3 and LuaJIT */

/* Makes the metatable `name` of a userdata class: the metamethods in meta,
 * the methods in methods as its __index. Leaves the stack as it was. */
void kl_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

/* kl_class with the nup values on top of the stack as upvalues of every
 * function of the class (they are popped). */
void kl_class_up(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods, int nup);

/* Options of the table at index t: a string (NULL when absent; raises when
 * it is no string or holds a NUL byte), a number (dflt when absent; raises
 * when it is no number), a boolean (Lua truth). */
const char *kl_opt_string(lua_State *L, int t, const char *k);
double kl_opt_number(lua_State *L, int t, const char *k, double dflt);
int kl_opt_bool(lua_State *L, int t, const char *k);
/* s seconds as milliseconds; raises unless 0 <= s <= KL_SECONDS_MAX. */
long kl_seconds_to_ms(lua_State *L, const char *k, double s);

/* Sets t[k] = v for the table on top of the stack, when v is a non-empty string. */
void kl_set_string(lua_State *L, const char *k, const char *v);

/* Registry key of the metatable that marks a Lua table as a JSON array. */
#define KLING_ARRAY_MT "kling.array"

/* Each subsystem's binding fills the table on top of the stack (core.c
 * makes one per subsystem: kling.core.engine, .protocol, ...). */
void kl_open_engine(lua_State *L);   /* new, now, wait_fds, check_download_target; the engine's
                                        and a transfer's methods (lua_engine.c) */
void kl_open_poller(lua_State *L);   /* adds watch, answers, observe... to the engine's methods
                                        (lua_poller.c; after kl_open_engine) */
void kl_open_protocol(lua_State *L); /* the protocol statement (lua_protocol.c) */
void kl_open_journal(lua_State *L);  /* append, read, lock, sha256, random_key, ignore_sigxfsz */
void kl_open_schema(lua_State *L);   /* compile (lua_schema.c); makes the array metatable */
void kl_open_json(lua_State *L);     /* encoder, array_mt, max_depth (lua_jsonw.c; after kl_open_schema) */
void kl_open_media(lua_State *L);    /* data: URIs of local media files (lua_media.c) */
void kl_open_term(lua_State *L);     /* isatty, size: the command-line tool's terminal (lua_term.c) */

#endif
