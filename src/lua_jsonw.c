/*
 * lua_jsonw.c - the JSON writer of kling: request bodies, journal lines and
 * the command-line tool's --json output, written from Lua values
 * (kling.core.json; no parser here: decoding is lua-cjson's and dkjson's).
 * Binding code by nature: it walks Lua tables.
 *
 *   local encode = core.json.encoder(mode [, null2])
 *   local text = encode(value)             -- or nil, reason, path
 *
 * mode "wire" is for request bodies: anything without an exact JSON form is
 * refused. "text" (journal lines, batch state, the CLI's output) is the same
 * except that a string or field name that is not valid UTF-8 gets U+FFFD for
 * every byte that cannot begin or continue a character, so the result is
 * always valid UTF-8 JSON, and that an integral float below 2^53 is written
 * as an integer: the values written there mostly come from lua-cjson, which
 * reads every JSON number as a float (a server's "queue_position": 3 stays 3).
 * "display" is "text" that also writes NaN and the infinities as null, for
 * showing values that came from a server.
 * A refusal is an answer (nil, reason, path), never a Lua error; only running
 * out of memory raises.
 *
 * The rules (README.md, "JSON on the wire"):
 * - nil and the null sentinels: a NULL light userdata (cjson.null, which is
 *   also kling.null) and null2 when given (dkjson.null) -> null.
 * - a Lua integer -> its decimal digits, all 64 bits of it.
 * - a float -> the shortest of %.15g, %.16g, %.17g that reads back as the
 *   same double; an integral float keeps a ".0" (or its exponent), so that it
 *   reads back as a float (on the wire; see above for text), and -0.0 stays
 *   "-0.0". NaN and the infinities are refused (null in display mode).
 * - a string -> quoted, with '"', '\\', U+0000-U+001F and U+007F escaped
 *   (\" \\ \b \f \n \r \t, else \u00XX) and every other byte as it is.
 * - a table marked with the array metatable (core.array_mt: kling.array,
 *   and every array the validator or the input decoder builds), or with
 *   dkjson's mark (a metatable whose __jsontype is "array", as
 *   dkjson.decode gives) -> an array; its keys must be exactly 1..n (n >= 0),
 *   so an empty one is []. A table with dkjson's "object" mark is an object
 *   ({} when empty); integer keys in it are refused.
 * - text and display modes also write the C1 controls (U+0080-U+009F) and
 *   the bidi controls (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) as
 *   \uXXXX: the same string once read, never raw on a terminal.
 * - another table: an array when its keys are exactly 1..n with n >= 1; an
 *   object when every key is a string, fields sorted bytewise (the same
 *   value always gives the same text); {} when it has no key at all.
 * - refused, with the path of the value (/image_urls/2: field names, and
 *   list positions counted from 1 as in Lua): a table with both integer and
 *   string keys, integer keys that are not 1..n, keys of any other type,
 *   functions, threads, userdata other than the null sentinels, tables
 *   nested deeper than KL_JSON_MAX_DEPTH (also what a cycle gives).
 *
 * Tables are read raw (lua_next, lua_rawget): no metamethod runs, and the
 * walk creates no Lua object, so no finalizer can run in the middle of it.
 * The output buffer lives in a userdata held by the function and is reused
 * from call to call (a call that comes in while another runs gets its own).
 */
#include "buf.h"
#include "defaults.h"
#include "lbind.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOX_MT "kling.core.json_buffer"
#define PATH_LEN 512
#define SEG_LEN 96
#define KEEP_BYTES (256u * 1024u) /* a larger buffer is freed after its call */
#define KEEP_KEYS 4096u

enum { JW_WIRE, JW_TEXT, JW_DISPLAY };

/* A field name being written: its bytes and the stack slot that anchors it
 * (its value is in the slot above). */
typedef struct {
  const char *s;
  size_t len;
  int idx;
} jkey;

typedef struct {
  kbuf out;
  jkey *keys; /* the field names of the objects on the current path */
  size_t nkeys, capkeys;
  int busy;
} jbox;

typedef struct {
  lua_State *L;
  jbox *b;
  int mode;
  int depth;
  int oom;
  char why[200];       /* the reason of a refusal */
  char path[PATH_LEN]; /* built backwards, on the way out of a refusal */
  size_t pstart;
  int truncated;
} jw;

/* ------------------------------------------------------------------ output */

static char *reserve(jw *w, size_t n) {
  kbuf *o = &w->b->out;
  if (n > o->cap - o->len) {
    size_t ncap = o->cap ? o->cap : 256;
    while (ncap - o->len < n) {
      if (ncap > SIZE_MAX / 2) {
        w->oom = 1;
        return NULL;
      }
      ncap *= 2;
    }
    char *nd = realloc(o->data, ncap);
    if (nd == NULL) {
      w->oom = 1;
      return NULL;
    }
    o->data = nd;
    o->cap = ncap;
  }
  return o->data + o->len;
}

static int put(jw *w, const char *p, size_t n) {
  char *o = reserve(w, n);
  if (o == NULL) return -1;
  memcpy(o, p, n);
  w->b->out.len += n;
  return 0;
}

static int refuse(jw *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->why, sizeof w->why, fmt, ap);
  va_end(ap);
  return -1;
}

/* ------------------------------------------------------------------- paths */

/* Length of the valid UTF-8 character at s (at most n bytes): 1-4, or 0 when
 * the bytes there are not one (overlong forms, surrogates, > U+10FFFF). */
static size_t utf8_char(const unsigned char *s, size_t n) {
  unsigned c = s[0], cp;
  size_t len;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
  else return 0;
  if (n < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3Fu);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return len;
}

static void prepend(jw *w, const char *seg, size_t n) {
  if (w->truncated) return;
  if (n >= w->pstart) {
    w->truncated = 1;
    return;
  }
  w->pstart -= n;
  memcpy(w->path + w->pstart, seg, n);
}

/* Puts "/KEY" in front of the path: JSON pointer escapes (~0 ~1), control
 * characters and bytes that are not UTF-8 as '?', at most SEG_LEN bytes. */
static void prepend_key(jw *w, const char *key, size_t len) {
  char seg[SEG_LEN + 8];
  size_t k = 0, i = 0;
  seg[k++] = '/';
  while (i < len && k < SEG_LEN) {
    unsigned char c = (unsigned char)key[i];
    size_t cl = utf8_char((const unsigned char *)key + i, len - i);
    if (c == '~' || c == '/') {
      seg[k++] = '~';
      seg[k++] = c == '~' ? '0' : '1';
      i++;
    } else if (cl == 0 || c < 0x20 || c == 0x7F) {
      seg[k++] = '?';
      i++;
    } else {
      memcpy(seg + k, key + i, cl);
      k += cl;
      i += cl;
    }
  }
  if (i < len) {
    memcpy(seg + k, "...", 3);
    k += 3;
  }
  prepend(w, seg, k);
}

static void prepend_index(jw *w, lua_Integer i) {
  char seg[32];
  int n = snprintf(seg, sizeof seg, "/%lld", (long long)i);
  prepend(w, seg, (size_t)n);
}

/* ---------------------------------------------------------------- scalars */

static int put_integer(jw *w, lua_Integer v) {
  char tmp[24];
  char *end = tmp + sizeof tmp, *p = end;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  return put(w, p, (size_t)(end - p));
}

/* The common case of put_float, without snprintf and strtod: a float of at
 * most 15 significant digits written in plain notation (what %.15g writes for
 * 1e-4 <= |d| < 1e15): the smallest k <= 15 with d * 10^k an integer m such
 * that m / 10^k gives d back (both operations correctly rounded, so strtod
 * reads the text "m / 10^k" as d). Writes it into out; returns its length, or
 * 0 when it does not apply. */
static size_t short_float(double d, char *out) {
  static const double P10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15 };
  double a = fabs(d);
  if (!(a >= 1e-4 && a < 1e15)) return 0;
  for (int k = 0; k <= 15; k++) {
    double m = a * P10[k];
    if (m >= 1e15) return 0;
    m = floor(m + 0.5);
    if (m / P10[k] != a) continue;
    unsigned long long u = (unsigned long long)m;
    char digits[24];
    int nd = 0;
    do {
      digits[nd++] = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    while (nd <= k) digits[nd++] = '0'; /* 0.005: at least one digit before the point */
    size_t n = 0;
    if (d < 0) out[n++] = '-';
    for (int i = nd - 1; i >= 0; i--) {
      out[n++] = digits[i];
      if (i == k && k > 0) out[n++] = '.';
    }
    if (k == 0) { /* integral: stays a float when read back */
      out[n++] = '.';
      out[n++] = '0';
    }
    return n;
  }
  return 0;
}

static int put_float(jw *w, double d) {
  if (!isfinite(d)) {
    if (w->mode == JW_DISPLAY) return put(w, "null", 4);
    return refuse(w, "%s has no JSON form (numbers must be finite)",
                  isnan(d) ? "NaN" : d < 0 ? "-infinity" : "infinity");
  }
  if (w->mode != JW_WIRE && d == floor(d) && fabs(d) < 9007199254740992.0 && !(d == 0 && signbit(d)))
    return put_integer(w, (lua_Integer)d); /* text, display: lua-cjson read it from an integer */
  char tmp[48], out[56];
  size_t fast = short_float(d, out);
  if (fast) return put(w, out, fast);
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (prec == 17 || strtod(tmp, NULL) == d) break;
  }
  /* whatever the C locale's decimal point is, JSON's is '.' */
  size_t k = 0;
  int fraction = 0;
  for (int i = 0; i < n; i++) {
    char c = tmp[i];
    if ((c >= '0' && c <= '9') || c == '-' || c == '+') {
      out[k++] = c;
    } else if (c == 'e' || c == 'E') {
      out[k++] = 'e';
      fraction = 1;
    } else if (k == 0 || out[k - 1] != '.') {
      out[k++] = '.';
      fraction = 1;
    }
  }
  if (!fraction) { /* integral: stays a float when read back */
    out[k++] = '.';
    out[k++] = '0';
  }
  return put(w, out, k);
}

static const char HEX[] = "0123456789abcdef";

/* The code point of the UTF-8 character at s (cl bytes, valid) when it is one
 * a terminal acts on without showing it: a C1 control (U+0080-U+009F) or a
 * bidi control (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069); else 0. Text
 * and display modes write these as \uXXXX (the same string, read back), so
 * JSON shown on a terminal cannot reorder or drive it. */
static unsigned invisible_control(const unsigned char *s, size_t cl) {
  if (cl == 2 && s[0] == 0xC2 && s[1] <= 0x9F) return s[1];
  if (cl != 3 || s[0] != 0xE2) return 0;
  unsigned cp = (unsigned)(s[0] & 0x0F) << 12 | (unsigned)(s[1] & 0x3F) << 6 | (unsigned)(s[2] & 0x3F);
  if (cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069)) return cp;
  return 0;
}

/* A JSON string. key: it is a field name (only for the reason of a refusal). */
static int put_string(jw *w, const char *str, size_t n, int key) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  if (n < 256) { /* the common case: printable ASCII only, copied in one go */
    char *o = reserve(w, n + 2);
    if (o == NULL) return -1;
    o[0] = '"';
    while (i < n && s[i] >= 0x20 && s[i] < 0x7F && s[i] != '"' && s[i] != '\\') {
      o[i + 1] = (char)s[i];
      i++;
    }
    if (i == n) {
      o[n + 1] = '"';
      w->b->out.len += n + 2;
      return 0;
    }
    i = 0; /* something to escape or check: the general way */
  }
  if (put(w, "\"", 1)) return -1;
  while (i < n) {
    size_t j = i; /* a run of bytes that go out as they are */
    while (j < n) {
      unsigned c = s[j];
      if (c < 0x80) {
        if (c < 0x20 || c == '"' || c == '\\' || c == 0x7F) break;
        j++;
      } else {
        size_t cl = utf8_char(s + j, n - j);
        if (cl == 0 || (w->mode != JW_WIRE && invisible_control(s + j, cl))) break;
        j += cl;
      }
    }
    if (j > i && put(w, str + i, j - i)) return -1;
    i = j;
    if (i == n) break;
    unsigned c = s[i];
    char esc[6] = { '\\', 0, 0, 0, 0, 0 };
    size_t el = 2;
    size_t cl = c >= 0x80 ? utf8_char(s + i, n - i) : 0;
    if (cl > 0) { /* a C1 or bidi control (text and display modes): \uXXXX */
      unsigned cp = invisible_control(s + i, cl);
      char u[6] = { '\\', 'u', HEX[cp >> 12 & 15], HEX[cp >> 8 & 15], HEX[cp >> 4 & 15], HEX[cp & 15] };
      if (put(w, u, 6)) return -1;
      i += cl;
      continue;
    }
    if (c >= 0x80) { /* not UTF-8 */
      if (w->mode == JW_WIRE)
        return refuse(w, key ? "a field name that is not valid UTF-8 text has no JSON form"
                             : "a string that is not valid UTF-8 text has no JSON form (JSON text is UTF-8)");
      if (put(w, "\xEF\xBF\xBD", 3)) return -1;
      i++;
      continue;
    }
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      esc[1] = 'u';
      esc[2] = '0';
      esc[3] = '0';
      esc[4] = HEX[c >> 4];
      esc[5] = HEX[c & 15];
      el = 6;
    }
    if (put(w, esc, el)) return -1;
    i++;
  }
  return put(w, "\"", 1);
}

/* ----------------------------------------------------------------- tables */

static int put_value(jw *w, int idx);

static int key_cmp(const void *a, const void *b) {
  const jkey *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  if (c != 0) return c;
  return (x->len > y->len) - (x->len < y->len);
}

static void sort_keys(jkey *k, size_t n) {
  if (n > 16) {
    qsort(k, n, sizeof *k, key_cmp);
    return;
  }
  for (size_t i = 1; i < n; i++) { /* few fields: insertion sort */
    jkey t = k[i];
    size_t j = i;
    while (j > 0 && key_cmp(&k[j - 1], &t) > 0) {
      k[j] = k[j - 1];
      j--;
    }
    k[j] = t;
  }
}

static int add_key(jw *w, const char *s, size_t len, int idx) {
  jbox *b = w->b;
  if (b->nkeys == b->capkeys) {
    size_t ncap = b->capkeys ? b->capkeys * 2 : 32;
    jkey *nk = ncap < SIZE_MAX / sizeof *nk ? realloc(b->keys, ncap * sizeof *nk) : NULL;
    if (nk == NULL) {
      w->oom = 1;
      return -1;
    }
    b->keys = nk;
    b->capkeys = ncap;
  }
  b->keys[b->nkeys].s = s;
  b->keys[b->nkeys].len = len;
  b->keys[b->nkeys].idx = idx;
  b->nkeys++;
  return 0;
}

/* A key that is neither a string nor an integer, for a reason. */
static void describe_key(lua_State *L, int idx, char *out, size_t outlen) {
  if (lua_type(L, idx) == LUA_TNUMBER) snprintf(out, outlen, "number key (%.17g)", lua_tonumber(L, idx));
  else if (lua_type(L, idx) == LUA_TBOOLEAN) snprintf(out, outlen, "boolean key (%s)", lua_toboolean(L, idx) ? "true" : "false");
  else snprintf(out, outlen, "%s key", luaL_typename(L, idx));
}

static int put_array(jw *w, int t, lua_Integer n) {
  lua_State *L = w->L;
  if (put(w, "[", 1)) return -1;
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1 && put(w, ",", 1)) return -1;
    lua_rawgeti(L, t, i);
    int r = put_value(w, lua_gettop(L));
    lua_pop(L, 1);
    if (r) {
      prepend_index(w, i);
      return -1;
    }
  }
  return put(w, "]", 1);
}

static int put_object(jw *w, size_t kbase, size_t n) {
  sort_keys(w->b->keys + kbase, n);
  if (put(w, "{", 1)) return -1;
  for (size_t j = 0; j < n; j++) {
    jkey k = w->b->keys[kbase + j]; /* a copy: the vector may move meanwhile */
    if (j > 0 && put(w, ",", 1)) return -1;
    if (put_string(w, k.s, k.len, 1) || put(w, ":", 1)) {
      if (!w->oom) prepend_key(w, k.s, k.len);
      return -1;
    }
    int r = put_value(w, k.idx + 1);
    if (r) {
      prepend_key(w, k.s, k.len);
      return -1;
    }
  }
  return put(w, "}", 1);
}

/* dkjson's mark on a table: its metatable (at index mt) has the field
 * __jsontype, "array" (1) or "object" (2); 0 when not. Read with lua_next and
 * byte comparisons: no metamethod runs and no Lua object is made. */
static int jsontype_mark(lua_State *L, int mt) {
  lua_pushnil(L);
  while (lua_next(L, mt) != 0) {
    size_t kn, vn;
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tolstring(L, -2, &kn), *v = lua_tolstring(L, -1, &vn);
      if (kn == 10 && memcmp(k, "__jsontype", 10) == 0) {
        int mark = vn == 5 && memcmp(v, "array", 5) == 0 ? 1 : vn == 6 && memcmp(v, "object", 6) == 0 ? 2 : 0;
        lua_pop(L, 2);
        return mark;
      }
    }
    lua_pop(L, 1);
  }
  return 0;
}

static int put_table(jw *w, int t) {
  lua_State *L = w->L;
  if (w->depth >= KL_JSON_MAX_DEPTH)
    return refuse(w, "tables nested more than %d deep (a table that holds itself?) have no JSON form",
                  KL_JSON_MAX_DEPTH);
  if (!lua_checkstack(L, 8)) return refuse(w, "tables nested too deep for the Lua stack have no JSON form");
  int marked = 0, object = 0;
  if (lua_getmetatable(L, t)) {
    marked = lua_rawequal(L, -1, lua_upvalueindex(1));
    if (!marked) {
      int mark = jsontype_mark(L, lua_gettop(L));
      marked = mark == 1;
      object = mark == 2;
    }
    lua_pop(L, 1);
  }
  int base = lua_gettop(L);
  size_t kbase = w->b->nkeys, nstr = 0;
  lua_Integer nint = 0, maxint = 0;
  int low = 0; /* an integer key below 1 */
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    int kt = lua_type(L, -2);
    if (kt == LUA_TSTRING) {
      /* the key and its value stay on the stack (the key anchors the bytes);
       * the iteration goes on from a copy of the key on top */
      if (!lua_checkstack(L, 4)) return refuse(w, "a table with too many fields for the Lua stack has no JSON form");
      lua_pushvalue(L, -2);
      size_t len;
      const char *s = lua_tolstring(L, -3, &len);
      if (add_key(w, s, len, lua_gettop(L) - 2)) return -1;
      nstr++;
      continue;
    }
    lua_pop(L, 1);
    if (kt == LUA_TNUMBER && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k < 1) low = 1;
      else {
        nint++;
        if (k > maxint) maxint = k;
      }
    } else {
      char what[64];
      describe_key(L, -1, what, sizeof what);
      return refuse(w, "a table with a %s has no JSON form (field names are strings, list keys 1..n)", what);
    }
  }
  int r;
  w->depth++;
  if (nstr > 0 && marked) {
    jkey k = w->b->keys[kbase];
    char name[SEG_LEN + 8];
    size_t shown = k.len < 40 ? k.len : 40, m = 0;
    for (size_t i = 0; i < shown; i++) {
      unsigned char c = (unsigned char)k.s[i];
      name[m++] = (c < 0x20 || c >= 0x7F || c == '"') ? '?' : (char)c;
    }
    name[m] = '\0';
    r = refuse(w, "a table marked as a list (kling.array) has the field name \"%s%s\": a list has only the keys 1..n",
               name, k.len > shown ? "..." : "");
  } else if (object && (nint > 0 || low)) {
    r = refuse(w, "a table marked as an object (__jsontype \"object\") has integer keys: an object has only field names");
  } else if (nstr > 0 && (nint > 0 || low)) {
    r = refuse(w, "a table with both field names and integer keys has no JSON form (it is an object or a list)");
  } else if (nstr > 0) {
    r = put_object(w, kbase, nstr);
  } else if (low || maxint != nint) {
    r = refuse(w, "a table whose integer keys are not 1..n (a list with holes) has no JSON form");
  } else if (nint > 0 || marked) {
    r = put_array(w, t, nint);
  } else {
    r = put(w, "{}", 2);
  }
  w->depth--;
  w->b->nkeys = kbase;
  lua_settop(L, base);
  return r;
}

static int put_value(jw *w, int idx) {
  lua_State *L = w->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put(w, "null", 4);
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? put(w, "true", 4) : put(w, "false", 5);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) return put_integer(w, lua_tointeger(L, idx));
    return put_float(w, lua_tonumber(L, idx));
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return put_string(w, s, n, 0);
  }
  case LUA_TTABLE:
    if (lua_rawequal(L, idx, lua_upvalueindex(3))) return put(w, "null", 4);
    return put_table(w, idx);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return put(w, "null", 4);
    return refuse(w, "a light userdata has no JSON form (kling.null stands for null)");
  default:
    return refuse(w, "a %s has no JSON form%s", luaL_typename(L, idx),
                  lua_type(L, idx) == LUA_TUSERDATA ? " (kling.null stands for null)" : "");
  }
}

/* ------------------------------------------------------------ Lua binding */

static void box_release(jbox *b) {
  kbuf_free(&b->out);
  free(b->keys);
  b->keys = NULL;
  b->nkeys = b->capkeys = 0;
}

static int l_box_gc(lua_State *L) {
  box_release(luaL_checkudata(L, 1, BOX_MT));
  return 0;
}

static jbox *new_box(lua_State *L) {
  jbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  kbuf_init(&b->out, 0);
  luaL_setmetatable(L, BOX_MT);
  return b;
}

/* encode(value) -> text | nil, reason, path (upvalues: the array metatable,
 * the buffer, the second null sentinel or nil, the mode). */
static int l_encode(lua_State *L) {
  lua_settop(L, 1);
  jbox *b = lua_touserdata(L, lua_upvalueindex(2));
  int own = 0;
  if (b->busy) { /* called from a finalizer while a call runs: a buffer of its own */
    b = new_box(L);
    own = 1;
  }
  jw w;
  w.L = L;
  w.b = b;
  w.mode = (int)lua_tointeger(L, lua_upvalueindex(4));
  w.depth = 0;
  w.oom = 0;
  w.why[0] = '\0';
  w.pstart = sizeof w.path - 1;
  w.path[w.pstart] = '\0';
  w.truncated = 0;
  b->busy = 1;
  b->out.len = 0;
  b->nkeys = 0;
  int r = put_value(&w, 1);
  b->busy = 0; /* no Lua code can run before the text is copied below */
  lua_settop(L, own ? 2 : 1);
  if (r == 0) {
    lua_pushlstring(L, b->out.data, b->out.len);
  } else if (w.oom) {
    box_release(b);
    return luaL_error(L, "kling: not enough memory to write JSON");
  } else {
    lua_pushnil(L);
    lua_pushstring(L, w.why);
    if (w.pstart == sizeof w.path - 1) lua_pushliteral(L, "/");
    else lua_pushfstring(L, "%s%s", w.truncated ? "..." : "", w.path + w.pstart);
  }
  if (own || b->out.cap > KEEP_BYTES || b->capkeys > KEEP_KEYS) box_release(b);
  return r == 0 ? 1 : 3;
}

/* core.json.encoder(mode [, null2]) -> encode */
static int l_encoder(lua_State *L) {
  static const char *const modes[] = { "wire", "text", "display", NULL };
  int mode = luaL_checkoption(L, 1, NULL, modes);
  lua_settop(L, 2);
  if (kl_getmetatable(L, KLING_ARRAY_MT) != LUA_TTABLE) return luaL_error(L, "kling: the array metatable is missing");
  new_box(L);
  lua_pushvalue(L, 2);
  lua_pushinteger(L, mode);
  lua_pushcclosure(L, l_encode, 4);
  return 1;
}

void kl_open_json(lua_State *L) {
  static const luaL_Reg meta[] = { { "__gc", l_box_gc }, { NULL, NULL } };
  luaL_newmetatable(L, BOX_MT);
  luaL_setfuncs(L, meta, 0);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_encoder);
  lua_setfield(L, -2, "encoder");
  luaL_getmetatable(L, KLING_ARRAY_MT);
  lua_setfield(L, -2, "array_mt");
  lua_pushinteger(L, KL_JSON_MAX_DEPTH); /* how deep answers are decoded: as deep as the writer writes */
  lua_setfield(L, -2, "max_depth");
}
