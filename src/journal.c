/*
 * journal.c - durable appends for the job journal (lua/kling/journal.lua)
 * and for every other append-only JSON-lines file kling keeps (the batch
 * state of `kling batch`).
 *
 *   core.journal_append(path, line)   -> true | nil, message, errno
 *       appends line (which must end with "\n") under an exclusive flock and
 *       fsyncs it before returning; several processes may append at once.
 *       An append that fails part-way (a full disk, a file-size limit, a
 *       failed fsync) truncates the file back to its size before the append,
 *       under the lock: the file is left as it was. When the file does not
 *       end with "\n" (a writer was killed mid-line), the new line begins on
 *       a fresh line, so it is never glued onto the fragment.
 *   core.journal_read(path)           -> text | nil, message, errno
 *       the whole file, read under a shared lock (so no append is seen half
 *       done); a file that does not exist reads as "" (an empty journal).
 *
 * All three refuse anything but a regular file (a directory, a FIFO, a
 * device, a socket), before taking a lock; the open never blocks (a FIFO
 * with no writer would wait forever).
 *   core.journal_lock(path)           -> lock | nil, message, errno
 *       lock:read() -> text, lock:replace(text) -> true | nil, message, errno,
 *       lock:close(): for compaction, which rewrites the file (via a
 *       temporary file, fsync and rename) while appenders wait.
 *   core.sha256(s)                    -> 64 lowercase hex digits (FIPS 180-4)
 *   core.random_key()                 -> 32 lowercase hex digits from the
 *       kernel's random source (getrandom, else /dev/urandom)
 *   core.ignore_sigxfsz()             -> true: SIGXFSZ ignored in this process,
 *       so a write past a file-size limit fails with EFBIG (kind io) instead
 *       of killing it. For a program's own process (bin/kling calls it); the
 *       library never changes a signal's disposition by itself.
 *
 * Messages name the path and the system's reason ("cannot write '/x/jobs.jsonl':
 * No space left on device"); the Lua layer turns them into errors of kind io.
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
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "journal.h"

#define LOCK_MT "kling.core.journal_lock"

typedef struct { int fd; char *path; } jlock;

/* Pushes nil, "WHAT 'PATH': REASON", errno; returns 2 + 1. */
static int push_error(lua_State *L, const char *what, const char *path, int err) {
  lua_pushnil(L);
  if (err == -1) { /* ENOTREGULAR, defined below */
    lua_pushfstring(L, "%s '%s': not a regular file (a FIFO, a device or a socket is refused)", what, path);
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  lua_pushfstring(L, "%s '%s': %s", what, path, strerror(err));
  lua_pushinteger(L, err);
  return 3;
}

static int push_errno(lua_State *L, const char *what, const char *path) {
  return push_error(L, what, path, errno);
}

/* errno of a journal that is not a regular file (a FIFO, a device, a socket) */
#define ENOTREGULAR (-1)

/* Opens path and takes the lock (LOCK_EX or LOCK_SH), on the file the path
 * names now. The open never blocks (a FIFO would wait for a writer): it is
 * non-blocking, and anything but a regular file is refused before the lock
 * (-1 with errno EISDIR for a directory, ENOTREGULAR for the rest). */
static int open_locked(const char *path, int flags, int how) {
  for (int tries = 0; tries < 100; tries++) {
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      int saved = errno;
      if (fstat(fd, &st) == 0) saved = S_ISDIR(st.st_mode) ? EISDIR : ENOTREGULAR;
      close(fd);
      errno = saved;
      return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl != -1) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    while (flock(fd, how) != 0) {
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
    if (w == 0) { /* no progress and no error: treat as a full device */
      errno = ENOSPC;
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
  int fd = open_locked(path, O_RDWR | O_APPEND | O_CREAT, LOCK_EX);
  if (fd < 0) return push_errno(L, "cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int saved = errno;
    close(fd);
    return push_error(L, "cannot open", path, saved);
  }
  int regular = S_ISREG(st.st_mode);
  off_t size = regular ? st.st_size : 0;
  int fresh = 0;
  if (size > 0) { /* a fragment left by a writer killed mid-line: start a fresh line */
    char last = '\n';
    ssize_t r;
    do r = pread(fd, &last, 1, size - 1); while (r < 0 && errno == EINTR);
    if (r < 0) {
      int saved = errno;
      close(fd);
      return push_error(L, "cannot read", path, saved);
    }
    fresh = r == 1 && last != '\n';
  }
  if ((fresh && write_all(fd, "\n", 1) != 0) || write_all(fd, line, n) != 0 || fsync(fd) != 0) {
    int saved = errno;
    /* leave the file as it was: no fragment for the next line to be glued onto */
    int undone = !regular || (ftruncate(fd, size) == 0 && fsync(fd) == 0);
    int why = errno;
    close(fd); /* releases the lock */
    if (!undone) {
      lua_pushnil(L);
      lua_pushfstring(L, "cannot write '%s': %s (and the partial line could not be taken back: %s)", path,
                      strerror(saved), strerror(why));
      lua_pushinteger(L, saved);
      return 3;
    }
    return push_error(L, "cannot write", path, saved);
  }
  close(fd); /* releases the lock */
  lua_pushboolean(L, 1);
  return 1;
}

static jlock *new_lock(lua_State *L, const char *path) {
  jlock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
  lk->fd = -1;
  lk->path = NULL;
  luaL_setmetatable(L, LOCK_MT);
  lk->path = malloc(strlen(path) + 1);
  if (lk->path == NULL) luaL_error(L, "out of memory");
  strcpy(lk->path, path);
  return lk;
}

static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  jlock *lk = new_lock(L, path);
  lk->fd = open_locked(path, O_RDWR | O_CREAT, LOCK_EX);
  if (lk->fd < 0) return push_errno(L, "cannot open", path);
  return 1;
}

static jlock *check_lock(lua_State *L) {
  jlock *lk = luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd < 0) luaL_argerror(L, 1, "journal lock is closed");
  return lk;
}

/* Pushes the whole file behind lk (a regular file only). Returns 1, or 3
 * (nil, message, errno). The descriptor stays with lk (closed by its __gc
 * should a memory error raise). */
static int read_all(lua_State *L, jlock *lk) {
  struct stat st;
  if (fstat(lk->fd, &st) != 0) return push_errno(L, "cannot read", lk->path);
  if (S_ISDIR(st.st_mode)) return push_error(L, "cannot read", lk->path, EISDIR);
  if (!S_ISREG(st.st_mode)) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot read '%s': not a regular file", lk->path);
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  if (lseek(lk->fd, 0, SEEK_SET) < 0) return push_errno(L, "cannot read", lk->path);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    char *chunk = luaL_prepbuffer(&b);
    ssize_t r = read(lk->fd, chunk, LUAL_BUFFERSIZE);
    if (r < 0) {
      if (errno == EINTR) continue;
      return push_errno(L, "cannot read", lk->path);
    }
    if (r == 0) break;
    luaL_addsize(&b, (size_t)r);
  }
  luaL_pushresult(&b);
  return 1;
}

static int l_lock_read(lua_State *L) {
  return read_all(L, check_lock(L));
}

static int l_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  jlock *lk = new_lock(L, path);
  lk->fd = open_locked(path, O_RDONLY, LOCK_SH);
  if (lk->fd < 0) {
    if (errno == ENOENT) { /* not written yet: an empty journal */
      lua_pushliteral(L, "");
      return 1;
    }
    return push_errno(L, "cannot open", path);
  }
  int n = read_all(L, lk);
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
    return push_error(L, "cannot rewrite", lk->path, saved);
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

/* ------------------------------------------------------------ SHA-256 */

typedef struct {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t fill;
} sha256_ctx;

static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const unsigned char *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) {
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  }
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t S1 = ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = h + S1 + ch + K256[i] + w[i];
    uint32_t S0 = ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22);
    uint32_t maj = (a & b) ^ (a & cc) ^ (b & cc);
    uint32_t t2 = S0 + maj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = cc;
    cc = b;
    b = a;
    a = t1 + t2;
  }
  c->h[0] += a;
  c->h[1] += b;
  c->h[2] += cc;
  c->h[3] += d;
  c->h[4] += e;
  c->h[5] += f;
  c->h[6] += g;
  c->h[7] += h;
}

static void sha256_init(sha256_ctx *c) {
  static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
  memcpy(c->h, h0, sizeof h0);
  c->len = 0;
  c->fill = 0;
}

static void sha256_update(sha256_ctx *c, const unsigned char *p, size_t n) {
  c->len += (uint64_t)n;
  while (n > 0) {
    size_t take = 64 - c->fill;
    if (take > n) take = n;
    memcpy(c->buf + c->fill, p, take);
    c->fill += take;
    p += take;
    n -= take;
    if (c->fill == 64) {
      sha256_block(c, c->buf);
      c->fill = 0;
    }
  }
}

static void sha256_final(sha256_ctx *c, unsigned char out[32]) {
  uint64_t bits = c->len * 8;
  unsigned char pad = 0x80;
  sha256_update(c, &pad, 1);
  unsigned char zero = 0;
  while (c->fill != 56) sha256_update(c, &zero, 1);
  unsigned char lenbuf[8];
  for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_update(c, lenbuf, 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (unsigned char)(c->h[i] >> 24);
    out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
    out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
    out[4 * i + 3] = (unsigned char)c->h[i];
  }
}

static void push_hex(lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char hex[128];
  for (size_t i = 0; i < n && i < 64; i++) {
    hex[2 * i] = digits[p[i] >> 4];
    hex[2 * i + 1] = digits[p[i] & 15];
  }
  lua_pushlstring(L, hex, 2 * (n < 64 ? n : 64));
}

void ksha256_hex(const void *p, size_t n, char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  sha256_ctx c;
  unsigned char out[32];
  sha256_init(&c);
  sha256_update(&c, (const unsigned char *)p, n);
  sha256_final(&c, out);
  for (size_t i = 0; i < sizeof out; i++) {
    hex[2 * i] = digits[out[i] >> 4];
    hex[2 * i + 1] = digits[out[i] & 15];
  }
  hex[64] = '\0';
}

static int l_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sha256_ctx c;
  unsigned char out[32];
  sha256_init(&c);
  sha256_update(&c, (const unsigned char *)s, n);
  sha256_final(&c, out);
  push_hex(L, out, sizeof out);
  return 1;
}

static int l_random_key(lua_State *L) {
  unsigned char r[16];
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = getrandom(r + got, sizeof r - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += (size_t)n;
  }
  if (got < sizeof r) { /* no getrandom (old kernel): the device */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return luaL_error(L, "no random source: %s", strerror(errno));
    got = 0;
    while (got < sizeof r) {
      ssize_t n = read(fd, r + got, sizeof r - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
    }
    close(fd);
    if (got < sizeof r) return luaL_error(L, "no random source: /dev/urandom gave too few bytes");
  }
  push_hex(L, r, sizeof r);
  return 1;
}

static int l_ignore_sigxfsz(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGXFSZ, &sa, NULL) != 0) return luaL_error(L, "sigaction(SIGXFSZ): %s", strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

void kjournal_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "read", l_lock_read }, { "replace", l_lock_replace }, { "close", l_lock_close }, { NULL, NULL },
  };
  static const luaL_Reg meta[] = { { "__gc", l_lock_close }, { "__close", l_lock_close }, { NULL, NULL } };
  kcore_class(L, LOCK_MT, meta, methods);
  lua_pushcfunction(L, l_append);
  lua_setfield(L, -2, "journal_append");
  lua_pushcfunction(L, l_read);
  lua_setfield(L, -2, "journal_read");
  lua_pushcfunction(L, l_lock);
  lua_setfield(L, -2, "journal_lock");
  lua_pushcfunction(L, l_sha256);
  lua_setfield(L, -2, "sha256");
  lua_pushcfunction(L, l_random_key);
  lua_setfield(L, -2, "random_key");
  lua_pushcfunction(L, l_ignore_sigxfsz);
  lua_setfield(L, -2, "ignore_sigxfsz");
}
