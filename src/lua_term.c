/*
 * lua_term.c - kling.core.term: what the command-line tool asks of its terminal,
 * without running a program (no `test -t`, no `stty size`).
 *
 *   term.isatty(fd) -> true | false    is descriptor fd (0, 1, 2...) a terminal?
 *   term.size(fd)   -> rows, columns   the size of the terminal on fd (TIOCGWINSZ),
 *                   | nil              or nil: not a terminal, or a size of 0
 *
 * A descriptor that is not a small non-negative integer is an argument error.
 * Nothing here changes the terminal (no modes, no signals).
 */
#define _DEFAULT_SOURCE
#include <lua.h>
#include <lauxlib.h>

#include <limits.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lbind.h"

static int check_fd(lua_State *L, int i) {
  lua_Integer fd = luaL_checkinteger(L, i);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, i, "a file descriptor (an integer >= 0)");
  return (int)fd;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty(check_fd(L, 1)) == 1);
  return 1;
}

static int l_size(lua_State *L) {
  struct winsize ws;
  int fd = check_fd(L, 1);
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, ws.ws_row);
  lua_pushinteger(L, ws.ws_col);
  return 2;
}

void kl_open_term(lua_State *L) {
  static const luaL_Reg functions[] = { { "isatty", l_isatty }, { "size", l_size }, { NULL, NULL } };
  luaL_setfuncs(L, functions, 0);
}
