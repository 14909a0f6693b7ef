/*
 * lua_journal.c - kling.core.journal: the journal's file machinery
 * (journal.h) for lua/kling/journal.lua, and the digests and keys its lines
 * carry.
 *
 *   append(path, line)   -> true | nil, message, errno   (see kjournal_append)
 *   read(path)           -> text | nil, message, errno   (under a shared lock;
 *                           a file that does not exist reads as "")
 *   lock(path)           -> lock | nil, message, errno   (an exclusive lock, for
 *                           compaction: lock:read() -> text, lock:replace(text)
 *                           -> true | nil, message, errno, lock:close())
 *   sha256(s)            -> 64 lowercase hex digits (FIPS 180-4)
 *   random_key()         -> 32 lowercase hex digits from the kernel's random source
 *   ignore_sigxfsz()     -> true: SIGXFSZ ignored in this process, so a write past
 *                           a file-size limit fails with EFBIG (kind io) instead of
 *                           killing it. For a program's own process (bin/kling); the
 *                           library never changes a signal's disposition by itself.
 *
 * Messages name the path and the system's reason; the Lua layer turns them
 * into errors of kind io.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "journal.h"
#include "lbind.h"
#include "sha256.h"
#include "util.h"

#define LOCK_MT "kling.core.journal_lock"
#define MSG 1200

typedef struct { int fd; char *path; } jlock;

static int push_failure(lua_State *L, const char *msg, int errnum) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushinteger(L, errnum);
  return 3;
}

static int l_append(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *line = luaL_checklstring(L, 2, &n);
  if (n == 0 || line[n - 1] != '\n') return luaL_argerror(L, 2, "a journal line ends with a newline");
  char msg[MSG];
  int err = kjournal_append(path, line, n, msg, sizeof msg);
  if (err) return push_failure(L, msg, err);
  lua_pushboolean(L, 1);
  return 1;
}

static jlock *new_lock(lua_State *L, const char *path) {
  jlock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
  lk->fd = -1;
  lk->path = NULL;
  luaL_setmetatable(L, LOCK_MT);
  lk->path = kstrdup(path);
  if (lk->path == NULL) luaL_error(L, "out of memory");
  return lk;
}

static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  jlock *lk = new_lock(L, path);
  char msg[MSG];
  int err;
  lk->fd = kjournal_open(path, O_RDWR | O_CREAT, LOCK_EX, &err, msg, sizeof msg);
  if (lk->fd < 0) return push_failure(L, msg, err);
  return 1;
}

static jlock *check_lock(lua_State *L) {
  jlock *lk = luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd < 0) luaL_argerror(L, 1, "journal lock is closed");
  return lk;
}

/* Pushes the whole file behind lk: 1 value, or 3 (nil, message, errno). The
 * descriptor stays with lk (closed by its __gc should a memory error raise). */
static int push_text(lua_State *L, jlock *lk) {
  char msg[MSG];
  int err = kjournal_rewind(lk->fd, lk->path, msg, sizeof msg);
  if (err) return push_failure(L, msg, err);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    char *chunk = luaL_prepbuffer(&b);
    long r = kjournal_read_some(lk->fd, chunk, LUAL_BUFFERSIZE);
    if (r < 0) {
      err = kjournal_failure("cannot read", lk->path, errno, msg, sizeof msg);
      return push_failure(L, msg, err);
    }
    if (r == 0) break;
    luaL_addsize(&b, (size_t)r);
  }
  luaL_pushresult(&b);
  return 1;
}

static int l_lock_read(lua_State *L) {
  return push_text(L, check_lock(L));
}

static int l_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  jlock *lk = new_lock(L, path);
  char msg[MSG];
  int err;
  lk->fd = kjournal_open(path, O_RDONLY, LOCK_SH, &err, msg, sizeof msg);
  if (lk->fd < 0) {
    if (err == ENOENT) { /* not written yet: an empty journal */
      lua_pushliteral(L, "");
      return 1;
    }
    return push_failure(L, msg, err);
  }
  int n = push_text(L, lk);
  close(lk->fd); /* releases the lock */
  lk->fd = -1;
  return n;
}

/* lock:replace(text): text becomes the journal, atomically. The lock stays
 * held (on the old file: appenders see the new one and retry). */
static int l_lock_replace(lua_State *L) {
  jlock *lk = check_lock(L);
  size_t n;
  const char *text = luaL_checklstring(L, 2, &n);
  char msg[MSG];
  int err = kjournal_replace(lk->path, text, n, msg, sizeof msg);
  if (err) return push_failure(L, msg, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_lock_close(lua_State *L) {
  jlock *lk = luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd >= 0) close(lk->fd);
  lk->fd = -1;
  free(lk->path);
  lk->path = NULL;
  return 0;
}

static int l_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char hex[65];
  ksha256_hex(s, n, hex);
  lua_pushlstring(L, hex, 64);
  return 1;
}

static int l_random_key(lua_State *L) {
  unsigned char r[16];
  char hex[33];
  if (krandom_bytes(r, sizeof r) != 0) return luaL_error(L, "no random source: %s", strerror(errno));
  khex(r, sizeof r, hex);
  lua_pushlstring(L, hex, 32);
  return 1;
}

static int l_ignore_sigxfsz(lua_State *L) {
  int err = kjournal_ignore_sigxfsz();
  if (err) return luaL_error(L, "sigaction(SIGXFSZ): %s", strerror(err));
  lua_pushboolean(L, 1);
  return 1;
}

void kl_open_journal(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "read", l_lock_read }, { "replace", l_lock_replace }, { "close", l_lock_close }, { NULL, NULL },
  };
  static const luaL_Reg meta[] = { { "__gc", l_lock_close }, { "__close", l_lock_close }, { NULL, NULL } };
  static const luaL_Reg functions[] = {
    { "append", l_append }, { "read", l_read }, { "lock", l_lock }, { "sha256", l_sha256 },
    { "random_key", l_random_key }, { "ignore_sigxfsz", l_ignore_sigxfsz }, { NULL, NULL },
  };
  kl_class(L, LOCK_MT, meta, methods);
  luaL_setfuncs(L, functions, 0);
}
