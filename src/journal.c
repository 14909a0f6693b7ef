/*
 * journal.c - durable appends for the job journal (lua/kling/journal.lua).
 *
 *   core.journal_append(path, line)   -> true | nil, err
 *       appends line (which must end with "\n") under an exclusive flock and
 *       fsyncs it before returning; several processes may append at once.
 *   core.journal_lock(path)           -> lock | nil, err
 *       lock:read() -> text, lock:replace(text) -> true | nil, err,
 *       lock:close(): for compaction, which rewrites the file (via a
 *       temporary file, fsync and rename) while appenders wait.
 *
 * An appender that took the lock on a file that compaction has since
 * replaced notices (the inode behind the path changed) and appends to the
 * new file instead.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include <lua.h>
#include <lauxlib.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "journal.h"

#define LOCK_MT "kling.core.journal_lock"

typedef struct { int fd; char *path; } jlock;

static int push_errno(lua_State *L, const char *what, const char *path) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s '%s': %s", what, path, strerror(errno));
  return 2;
}

/* Opens path for appending and takes the lock, on the file the path names now. */
static int open_locked(const char *path, int flags) {
  for (int tries = 0; tries < 100; tries++) {
    int fd = open(path, flags | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    while (flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
      }
    }
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) return fd;
    close(fd); /* compaction replaced the file meanwhile: take the new one */
  }
  errno = EAGAIN;
  return -1;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int l_append(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *line = luaL_checklstring(L, 2, &n);
  if (n == 0 || line[n - 1] != '\n') return luaL_argerror(L, 2, "a journal line ends with a newline");
  int fd = open_locked(path, O_WRONLY | O_APPEND);
  if (fd < 0) return push_errno(L, "cannot open the journal", path);
  if (write_all(fd, line, n) != 0 || fsync(fd) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return push_errno(L, "cannot write the journal", path);
  }
  close(fd); /* releases the lock */
  lua_pushboolean(L, 1);
  return 1;
}

static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  jlock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
  lk->fd = -1;
  lk->path = NULL;
  luaL_setmetatable(L, LOCK_MT);
  lk->path = malloc(strlen(path) + 1);
  if (lk->path == NULL) return luaL_error(L, "out of memory");
  strcpy(lk->path, path);
  lk->fd = open_locked(path, O_RDWR);
  if (lk->fd < 0) return push_errno(L, "cannot open the journal", path);
  return 1;
}

static jlock *check_lock(lua_State *L) {
  jlock *lk = luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd < 0) luaL_argerror(L, 1, "journal lock is closed");
  return lk;
}

static int l_lock_read(lua_State *L) {
  jlock *lk = check_lock(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char chunk[65536];
  if (lseek(lk->fd, 0, SEEK_SET) < 0) return push_errno(L, "cannot read the journal", lk->path);
  for (;;) {
    ssize_t r = read(lk->fd, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      return push_errno(L, "cannot read the journal", lk->path);
    }
    if (r == 0) break;
    luaL_addlstring(&b, chunk, (size_t)r);
  }
  luaL_pushresult(&b);
  return 1;
}

/* lock:replace(text): text becomes the journal, atomically. The lock stays
 * held (on the old file: appenders see the new one and retry). */
static int l_lock_replace(lua_State *L) {
  jlock *lk = check_lock(L);
  size_t n;
  const char *text = luaL_checklstring(L, 2, &n);
  size_t pl = strlen(lk->path);
  char *tmp = malloc(pl + 16);
  if (tmp == NULL) return luaL_error(L, "out of memory");
  snprintf(tmp, pl + 16, "%s.compact", lk->path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int ok = fd >= 0 && write_all(fd, text, n) == 0 && fsync(fd) == 0;
  int saved = errno;
  if (fd >= 0) close(fd);
  if (ok && rename(tmp, lk->path) != 0) {
    ok = 0;
    saved = errno;
  }
  if (!ok) {
    unlink(tmp);
    free(tmp);
    errno = saved;
    return push_errno(L, "cannot rewrite the journal", lk->path);
  }
  free(tmp);
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

void kjournal_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "read", l_lock_read }, { "replace", l_lock_replace }, { "close", l_lock_close }, { NULL, NULL },
  };
  static const luaL_Reg meta[] = { { "__gc", l_lock_close }, { "__close", l_lock_close }, { NULL, NULL } };
  kcore_class(L, LOCK_MT, meta, methods);
  lua_pushcfunction(L, l_append);
  lua_setfield(L, -2, "journal_append");
  lua_pushcfunction(L, l_lock);
  lua_setfield(L, -2, "journal_lock");
}
