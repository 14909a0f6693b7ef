/*
 * lua_media.c - kling.core.media: a local media file as a data: URI, built in
 * one buffer of its final size (no copies of a large string in Lua).
 *
 *   media.data_uri(path) -> uri, mime, bytes | nil, message, why
 *     why: "io" (the file cannot be read), "type" (not a type kling knows),
 *     "size" (above its kind's limit: media.h, defaults.h)
 *   media.sniff(head) -> mime, kind, max | nil
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "lbind.h"
#include "media.h"

#define CHUNK (3 * 16384) /* bytes read at a time: a multiple of 3 */

static int fail(lua_State *L, const char *why, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, why);
  return 3;
}

static int l_data_uri(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  /* a FIFO or a device is refused before it is opened: opening a FIFO
   * without a writer would block */
  if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
    return fail(L, "io", "%s: %s", path, S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
  FILE *f = fopen(path, "rb");
  if (f == NULL) return fail(L, "io", "%s: %s", path, strerror(errno));
  if (fstat(fileno(f), &st) != 0) {
    int e = errno;
    fclose(f);
    return fail(L, "io", "%s: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    fclose(f);
    return fail(L, "io", "%s: %s", path, S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
  }
  unsigned char head[16];
  size_t hn = fread(head, 1, sizeof head, f);
  const kmedia_type *t = kmedia_sniff(head, hn);
  if (t == NULL) {
    fclose(f);
    return fail(L, "type", "%s: not a media file kling knows by its first bytes (PNG, JPEG, GIF, WebP, BMP, MP4, "
                "MOV, WebM, MP3, WAV, OGG, FLAC, M4A)", path);
  }
  if ((long long)st.st_size > (long long)t->max) {
    fclose(f);
    char bytes[32]; /* lua_pushfstring of Lua 5.1 and LuaJIT has no integer wider than int */
    snprintf(bytes, sizeof bytes, "%lld", (long long)st.st_size);
    return fail(L, "size", "%s: %s (%s) of %s bytes, above the %d MiB RunComfy takes for %s %s as a data: URI",
                path, t->kind, t->mime, bytes, (int)(t->max / (1024 * 1024)),
                t->kind[0] == 'v' ? "a" : "an", t->kind);
  }
  if (fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return fail(L, "io", "%s: %s", path, strerror(errno));
  }
  size_t size = (size_t)st.st_size;
  char prefix[64];
  int pn = snprintf(prefix, sizeof prefix, "data:%s;base64,", t->mime);
  size_t total = (size_t)pn + kmedia_b64_len(size);
  unsigned char *chunk = lua_newuserdatauv(L, CHUNK, 0); /* freed by the collector, also on a raise */
  /* the URI is built in one block of its final size, then made a string (as a
   * luaL_Buffer of that size would, on every Lua from 5.1 on) */
  char *out = lua_newuserdatauv(L, total, 0);
  memcpy(out, prefix, (size_t)pn);
  size_t o = (size_t)pn, got = 0;
  for (;;) {
    size_t n = fread(chunk, 1, CHUNK, f);
    if (n == 0) break;
    if (got + n > size) break; /* grew while read */
    /* every piece but the last is a whole CHUNK (a multiple of 3): the padding comes at the end */
    o += kmedia_b64(chunk, n, out + o);
    got += n;
    if (n < CHUNK) break;
  }
  int err = ferror(f), grew = fgetc(f) != EOF;
  fclose(f);
  if (err || got != size || grew) {
    lua_settop(L, 1);
    return fail(L, "io", "%s: %s", path, err ? "read error" : "changed while it was read");
  }
  lua_pushlstring(L, out, o);
  lua_pushstring(L, t->mime);
  lua_pushinteger(L, (lua_Integer)size);
  return 3;
}

static int l_sniff(lua_State *L) {
  size_t n;
  const char *h = luaL_checklstring(L, 1, &n);
  const kmedia_type *t = kmedia_sniff((const unsigned char *)h, n);
  if (t == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, t->mime);
  lua_pushstring(L, t->kind);
  lua_pushinteger(L, t->max);
  return 3;
}

void kl_open_media(lua_State *L) {
  static const luaL_Reg functions[] = { { "data_uri", l_data_uri }, { "sniff", l_sniff }, { NULL, NULL } };
  luaL_setfuncs(L, functions, 0);
}
