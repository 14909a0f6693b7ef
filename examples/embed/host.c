/*
 * examples/embed/host.c - a C program with its own poll() loop that embeds
 * Lua 5.4 and kling, runs one job to its download, and is never blocked by
 * kling: the Lua side runs in a coroutine whose waiter yields back here; the
 * loop watches client:pollfds() at most client:timeout() (and 10 ms, its own
 * tick), then resumes it. job:on_update and job:on_done report from the
 * client's steps. The loop measures its longest gap between two turns.
 *
 *   cc -std=c99 -o host examples/embed/host.c $(pkg-config --cflags --libs lua5.4)
 *   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' ./host BASE_URL TOKEN OUT.mp4
 *
 * Prints "ticks N" (turns of the loop while the job ran), "longest_gap_ms X"
 * and "done PATH BYTES" (or "error KIND MESSAGE"); exits 0 when the
 * download is complete.
 */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *SCRIPT =
  "local base, token, path = ...\n"
  "local kling = require 'kling'\n"
  "client = kling.new { base_url = base, token = token, poll = { initial = 0.05, near = 0.1 },\n"
  "  waiter = function() coroutine.yield() end } -- the host resumes us\n"
  "return coroutine.create(function()\n"
  "  local job = assert(client:generate { prompt = 'an embedded host @emu:bytes=300000' })\n"
  "  job:on_update(function(j) io.write('status ', j.status, '\\n') end)\n"
  "  job:on_done(function(j, out, err) io.write('ended ', j.status, '\\n') end)\n"
  "  local got, bytes = job:download(path)\n"
  "  if not got then return 'error ' .. bytes.kind .. ' ' .. bytes.message end\n"
  "  return 'done ' .. got .. ' ' .. bytes\n"
  "end)\n";

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Fills fds from client:pollfds(); returns the timeout in ms (at most cap). */
static int watch(lua_State *L, struct pollfd *fds, int max, int *n, int cap) {
  *n = 0;
  lua_getglobal(L, "client");
  lua_getfield(L, -1, "pollfds");
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  for (int i = 1; *n < max; i++) {
    if (lua_rawgeti(L, -1, i) != LUA_TTABLE) {
      lua_pop(L, 1);
      break;
    }
    lua_getfield(L, -1, "fd");
    lua_getfield(L, -2, "events");
    const char *ev = lua_tostring(L, -1);
    fds[*n].fd = (int)lua_tointeger(L, -2);
    fds[*n].events = (short)((strchr(ev, 'r') ? POLLIN : 0) | (strchr(ev, 'w') ? POLLOUT : 0));
    fds[*n].revents = 0;
    (*n)++;
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "timeout");
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  int ms = cap;
  if (lua_isnumber(L, -1)) {
    double t = lua_tonumber(L, -1) * 1000;
    if (t < ms) ms = t < 0 ? 0 : (int)t;
  }
  lua_pop(L, 2);
  return ms;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s BASE_URL TOKEN OUT.mp4\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_loadstring(L, SCRIPT) != LUA_OK) goto fail;
  for (int i = 1; i <= 3; i++) lua_pushstring(L, argv[i]);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) goto fail;
  lua_State *co = lua_tothread(L, -1);
  double last = now_ms(), longest = 0;
  long ticks = 0;
  int status = LUA_YIELD, nres = 0;
  while (status == LUA_YIELD) {
    status = lua_resume(co, L, 0, &nres);
    if (status == LUA_YIELD) lua_pop(co, nres);
    struct pollfd fds[64];
    int n;
    int ms = watch(L, fds, 64, &n, 10);
    poll(fds, (nfds_t)n, ms); /* the host's own wait: never more than its tick */
    ticks++;
    double t = now_ms();
    if (t - last > longest) longest = t - last;
    last = t;
  }
  if (status != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(co, -1));
    lua_close(L);
    return 1;
  }
  const char *result = nres > 0 ? lua_tostring(co, -1) : "no result";
  printf("ticks %ld\nlongest_gap_ms %.1f\n%s\n", ticks, longest, result);
  int ok = strncmp(result, "done ", 5) == 0;
  lua_close(L);
  return ok ? 0 : 1;
fail:
  fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return 1;
}
