/*
 * lua_schema.c - input schemas compiled into C structures, and the validator
 * that checks a Lua table against one and builds the input to send
 * (kling.core.schema.compile). Binding code by nature: a schema arrives as
 * a Lua table decoded by lua-cjson (nobody here parses JSON), and validation
 * walks the input's Lua tables and the compiled tree together, reports every
 * problem (path and message) in schema order, and builds a normalised copy
 * (integral floats as integers, a total filled in from its parts, empty
 * arrays marked as arrays).
 *
 *
 * Keywords read: type (string, integer, number and the publisher's "float",
 * boolean, array, object), properties, required, items (a schema, or the
 * publisher's dialect that lists an item's fields directly: then every
 * listed field is required), enum, minimum, maximum, exclusiveMinimum,
 * exclusiveMaximum, minLength, maxLength, minItems, maxItems,
 * additionalProperties (boolean; unknown fields are refused unless true).
 * Ignored: title, description, default, format, examples, $comment.
 * Extensions set by the Lua layer: "x-order" (the properties' order, for
 * reporting in schema order; "x-items-order" on an array for items in the
 * publisher's dialect) and "x-sum-of" = "ARRAY.FIELD" on a number
 * property (it must equal the sum of FIELD over the items of ARRAY; left
 * out, it is filled in with that sum when the sum is allowed).
 *
 * Rules the dialect leaves implicit: a required string must not be blank;
 * strings must be valid UTF-8 without NUL bytes; an integer accepts a Lua
 * float only when it is integral (sent as an integer); NaN and infinities
 * are refused; an array must be a Lua sequence.
 */
#include "lbind.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* snprintf for messages, where cutting a long text short is intended. */
static int bfmt(char *out, size_t outlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(out, outlen, fmt, ap);
  va_end(ap);
  return w;
}

#define SCHEMA_MT "kling.core.schema"
#define PATH_MAX_LEN 512
#define MSG_MAX_LEN 512

typedef enum { KT_ANY, KT_STRING, KT_INTEGER, KT_NUMBER, KT_BOOLEAN, KT_ARRAY, KT_OBJECT } ktype;

typedef struct knode {
  ktype type;
  char *name;               /* property name in its parent object */
  int required;
  int has_min, has_max, min_excl, max_excl;
  double min, max;
  long min_len, max_len;    /* code points; -1 = none */
  long min_items, max_items;/* -1 = none */
  size_t nenum;
  char **enum_s;            /* string enum (NULL entries for non-strings) */
  size_t *enum_len;
  double *enum_n;           /* numeric enum values */
  int *enum_is_num;
  struct knode *props;      /* objects: properties in schema order */
  size_t nprops;
  int allow_unknown;
  struct knode *items;      /* arrays */
  char *sum_array, *sum_field; /* x-sum-of */
} knode;

typedef struct { knode *root; } lschema;

/* ---------------------------------------------------------------- compile */

static void node_free(knode *n) {
  if (n == NULL) return;
  free(n->name);
  for (size_t i = 0; i < n->nenum; i++) free(n->enum_s ? n->enum_s[i] : NULL);
  free(n->enum_s);
  free(n->enum_len);
  free(n->enum_n);
  free(n->enum_is_num);
  for (size_t i = 0; i < n->nprops; i++) node_free(&n->props[i]);
  free(n->props);
  if (n->items) {
    node_free(n->items);
    free(n->items);
  }
  free(n->sum_array);
  free(n->sum_field);
}

typedef struct {
  lua_State *L;
  char path[PATH_MAX_LEN];
  char err[MSG_MAX_LEN];
} cctx;

static int cfail(cctx *c, const char *fmt, const char *arg) {
  char what[256];
  bfmt(what, sizeof what, fmt, arg ? arg : "");
  bfmt(c->err, sizeof c->err, "schema at '%s': %s", c->path[0] ? c->path : "/", what);
  return -1;
}

static char *sdup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int parse_type(const char *t, ktype *out) {
  static const struct { const char *name; ktype type; } names[] = {
    { "string", KT_STRING }, { "str", KT_STRING },     { "integer", KT_INTEGER }, { "int", KT_INTEGER },
    { "number", KT_NUMBER }, { "float", KT_NUMBER },   { "boolean", KT_BOOLEAN }, { "bool", KT_BOOLEAN },
    { "array", KT_ARRAY },   { "list", KT_ARRAY },     { "object", KT_OBJECT },   { "dict", KT_OBJECT },
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(t, names[i].name) == 0) {
      *out = names[i].type;
      return 0;
    }
  return -1;
}

static int compile_node(cctx *c, int idx, knode *n);

/* Reads an optional number field of the schema table at idx. */
static int get_num(cctx *c, int idx, const char *key, int *has, double *v) {
  lua_State *L = c->L;
  lua_getfield(L, idx, key);
  int t = lua_type(L, -1);
  if (t == LUA_TNUMBER) {
    *v = lua_tonumber(L, -1);
    *has = 1;
  } else if (t != LUA_TNIL) {
    lua_pop(L, 1);
    return cfail(c, "'%s' must be a number", key);
  }
  lua_pop(L, 1);
  return 0;
}

static int get_count(cctx *c, int idx, const char *key, long *v) {
  int has = 0;
  double d = 0;
  *v = -1;
  if (get_num(c, idx, key, &has, &d) != 0) return -1;
  if (has) {
    if (!(d >= 0) || d > 1e9 || d != floor(d)) return cfail(c, "'%s' must be a non-negative integer", key);
    *v = (long)d;
  }
  return 0;
}

static int path_push(char *path, size_t *saved, const char *seg) {
  size_t n = strlen(path);
  *saved = n;
  int w = snprintf(path + n, PATH_MAX_LEN - n, "/%s", seg);
  return (w < 0 || (size_t)w >= PATH_MAX_LEN - n) ? -1 : 0;
}

static int compile_enum(cctx *c, int idx, knode *n) {
  lua_State *L = c->L;
  lua_getfield(L, idx, "enum");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return cfail(c, "'enum' must be an array", NULL);
  }
  size_t len = (size_t)lua_rawlen(L, -1);
  if (len == 0) {
    lua_pop(L, 1);
    return cfail(c, "'enum' must not be empty", NULL);
  }
  n->enum_s = calloc(len, sizeof *n->enum_s);
  n->enum_len = calloc(len, sizeof *n->enum_len);
  n->enum_n = calloc(len, sizeof *n->enum_n);
  n->enum_is_num = calloc(len, sizeof *n->enum_is_num);
  if (!n->enum_s || !n->enum_len || !n->enum_n || !n->enum_is_num) {
    lua_pop(L, 1);
    return cfail(c, "out of memory", NULL);
  }
  n->nenum = len;
  for (size_t i = 0; i < len; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i + 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      size_t sl;
      const char *s = lua_tolstring(L, -1, &sl);
      if ((n->enum_s[i] = sdup(s, sl)) == NULL) {
        lua_pop(L, 2);
        return cfail(c, "out of memory", NULL);
      }
      n->enum_len[i] = sl;
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
      n->enum_n[i] = lua_tonumber(L, -1);
      n->enum_is_num[i] = 1;
    } else {
      lua_pop(L, 2);
      return cfail(c, "'enum' may hold only strings and numbers", NULL);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(((const knode *)a)->name, ((const knode *)b)->name);
}

/* Compiles the properties table at idx (name -> schema) into n->props, in
 * the order of order_idx (an array of names; 0 = none), then the rest sorted. */
static int compile_props(cctx *c, int idx, int order_idx, knode *n, int all_required) {
  lua_State *L = c->L;
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      return cfail(c, "property names must be strings", NULL);
    }
    count++;
  }
  n->props = calloc(count ? count : 1, sizeof *n->props);
  if (n->props == NULL) return cfail(c, "out of memory", NULL);
  /* n->nprops follows k, so a failure half-way frees what was made */
  /* ordered names first; the names placed so far in a set (a Lua table), so
   * a schema of many properties costs no names x names comparisons */
  size_t k = 0;
  lua_createtable(L, 0, 0);
  int placed = lua_gettop(L);
  if (order_idx) {
    size_t olen = (size_t)lua_rawlen(L, order_idx);
    for (size_t i = 1; i <= olen && k < count; i++) {
      lua_rawgeti(L, order_idx, (lua_Integer)i);
      if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        lua_rawget(L, idx);
        int present = lua_istable(L, -1);
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawget(L, placed);
        int dup = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (present && !dup) {
          size_t nl;
          const char *nm = lua_tolstring(L, -1, &nl);
          if ((n->props[k].name = sdup(nm, nl)) == NULL) {
            lua_pop(L, 2);
            return cfail(c, "out of memory", NULL);
          }
          n->nprops = ++k;
          lua_pushvalue(L, -1);
          lua_pushboolean(L, 1);
          lua_rawset(L, placed);
        }
      }
      lua_pop(L, 1);
    }
  }
  size_t ordered = k;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    const char *nm = lua_tostring(L, -1);
    lua_pushvalue(L, -1);
    lua_rawget(L, placed);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!seen) {
      if ((n->props[k].name = sdup(nm, strlen(nm))) == NULL) {
        lua_pop(L, 2);
        return cfail(c, "out of memory", NULL);
      }
      n->nprops = ++k;
    }
  }
  lua_pop(L, 1); /* the set */
  qsort(n->props + ordered, k - ordered, sizeof *n->props, cmp_names);
  for (size_t i = 0; i < k; i++) {
    knode *p = &n->props[i];
    const char *name = p->name;
    size_t saved;
    if (path_push(c->path, &saved, name) != 0) return cfail(c, "nesting too deep", NULL);
    lua_getfield(L, idx, name);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      return cfail(c, "a property's schema must be an object", NULL);
    }
    int rc = compile_node(c, lua_gettop(L), p); /* keeps p->name */
    lua_pop(L, 1);
    p->required = all_required;
    if (rc != 0) return -1;
    c->path[saved] = '\0';
  }
  return 0;
}

/* Is the table at idx the publisher's "fields listed directly" items form? */
static int is_fields_form(lua_State *L, int idx) {
  lua_getfield(L, idx, "type");
  int has_type = !lua_isnil(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "properties");
  int has_props = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (has_type || has_props) return 0;
  int fields = 0, others = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
      lua_getfield(L, -1, "type");
      if (lua_type(L, -1) == LUA_TSTRING) fields++;
      else others++;
      lua_pop(L, 1);
    } else {
      others++;
    }
    lua_pop(L, 1);
  }
  return fields > 0 && others == 0;
}

static int compile_node(cctx *c, int idx, knode *n) {
  lua_State *L = c->L;
  char *keep_name = n->name;
  memset(n, 0, sizeof *n);
  n->name = keep_name;
  n->min_len = n->max_len = n->min_items = n->max_items = -1;
  if (!lua_checkstack(L, 8)) return cfail(c, "nesting too deep", NULL);

  lua_getfield(L, idx, "type");
  if (lua_type(L, -1) == LUA_TSTRING) {
    if (parse_type(lua_tostring(L, -1), &n->type) != 0) {
      lua_pop(L, 1);
      lua_getfield(L, idx, "type");
      const char *t = lua_tostring(L, -1);
      int rc = cfail(c, "unknown type '%s'", t);
      lua_pop(L, 1);
      return rc;
    }
  } else if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return cfail(c, "'type' must be a string", NULL);
  } else {
    n->type = KT_ANY;
  }
  lua_pop(L, 1);

  if (get_num(c, idx, "minimum", &n->has_min, &n->min) != 0) return -1;
  if (get_num(c, idx, "maximum", &n->has_max, &n->max) != 0) return -1;
  double ex;
  int has_ex = 0;
  if (get_num(c, idx, "exclusiveMinimum", &has_ex, &ex) != 0) return -1;
  if (has_ex) { n->has_min = n->min_excl = 1; n->min = ex; }
  has_ex = 0;
  if (get_num(c, idx, "exclusiveMaximum", &has_ex, &ex) != 0) return -1;
  if (has_ex) { n->has_max = n->max_excl = 1; n->max = ex; }
  if (get_count(c, idx, "minLength", &n->min_len) != 0) return -1;
  if (get_count(c, idx, "maxLength", &n->max_len) != 0) return -1;
  if (get_count(c, idx, "minItems", &n->min_items) != 0) return -1;
  if (get_count(c, idx, "maxItems", &n->max_items) != 0) return -1;
  if (compile_enum(c, idx, n) != 0) return -1;

  lua_getfield(L, idx, "x-sum-of");
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    const char *dot = strchr(s, '.');
    if (dot == NULL || dot == s || dot[1] == '\0') {
      lua_pop(L, 1);
      return cfail(c, "'x-sum-of' must read ARRAY.FIELD", NULL);
    }
    n->sum_array = sdup(s, (size_t)(dot - s));
    n->sum_field = sdup(dot + 1, strlen(dot + 1));
    if (!n->sum_array || !n->sum_field) {
      lua_pop(L, 1);
      return cfail(c, "out of memory", NULL);
    }
  }
  lua_pop(L, 1);

  lua_getfield(L, idx, "properties");
  int props = lua_gettop(L);
  if (lua_istable(L, props)) {
    if (n->type == KT_ANY) n->type = KT_OBJECT;
    if (n->type != KT_OBJECT) {
      lua_pop(L, 1);
      return cfail(c, "'properties' on a schema that is not an object", NULL);
    }
    lua_getfield(L, idx, "x-order");
    int order = lua_istable(L, -1) ? lua_gettop(L) : 0;
    int rc = compile_props(c, props, order, n, 0);
    lua_pop(L, 1);
    if (rc != 0) {
      lua_pop(L, 1);
      return -1;
    }
  }
  lua_pop(L, 1);

  if (n->type == KT_OBJECT) {
    lua_getfield(L, idx, "required");
    if (lua_istable(L, -1)) {
      size_t len = (size_t)lua_rawlen(L, -1);
      for (size_t i = 1; i <= len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        const char *r = lua_tostring(L, -1);
        int found = 0;
        for (size_t j = 0; r && j < n->nprops; j++)
          if (strcmp(n->props[j].name, r) == 0) n->props[j].required = found = 1;
        if (!found) {
          int rc = cfail(c, "required field '%s' has no schema", r ? r : "?");
          lua_pop(L, 2);
          return rc;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "additionalProperties");
    n->allow_unknown = lua_toboolean(L, -1) || (n->nprops == 0 && lua_isnil(L, -1));
    lua_pop(L, 1);
    for (size_t i = 0; i < n->nprops; i++) {
      const knode *p = &n->props[i];
      if (!p->sum_array) continue;
      const knode *arr = NULL;
      for (size_t j = 0; j < n->nprops; j++)
        if (strcmp(n->props[j].name, p->sum_array) == 0) arr = &n->props[j];
      int field_ok = 0;
      for (size_t j = 0; arr && arr->items && j < arr->items->nprops; j++)
        field_ok |= strcmp(arr->items->props[j].name, p->sum_field) == 0;
      if (!arr || arr->type != KT_ARRAY || !field_ok)
        return cfail(c, "'x-sum-of' of '%s' names no array field of this object", p->name);
    }
  }

  lua_getfield(L, idx, "items");
  if (lua_istable(L, -1)) {
    if (n->type == KT_ANY) n->type = KT_ARRAY;
    if (n->type != KT_ARRAY) {
      lua_pop(L, 1);
      return cfail(c, "'items' on a schema that is not an array", NULL);
    }
    n->items = calloc(1, sizeof *n->items);
    if (n->items == NULL) {
      lua_pop(L, 1);
      return cfail(c, "out of memory", NULL);
    }
    size_t saved;
    if (path_push(c->path, &saved, "items") != 0) {
      lua_pop(L, 1);
      return cfail(c, "nesting too deep", NULL);
    }
    int it = lua_gettop(L);
    int rc;
    if (is_fields_form(L, it)) {
      n->items->min_len = n->items->max_len = n->items->min_items = n->items->max_items = -1;
      n->items->type = KT_OBJECT;
      lua_getfield(L, idx, "x-items-order");
      int order = lua_istable(L, -1) ? lua_gettop(L) : 0;
      rc = compile_props(c, it, order, n->items, 1);
      lua_pop(L, 1);
    } else {
      rc = compile_node(c, it, n->items);
    }
    lua_pop(L, 1);
    if (rc != 0) return -1;
    c->path[saved] = '\0';
  } else {
    lua_pop(L, 1);
  }
  return 0;
}

/* core.schema.compile(tbl) -> schema userdata; raises on a schema it cannot read */
static int l_compile(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lschema *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->root = NULL;
  luaL_setmetatable(L, SCHEMA_MT);
  knode *root = calloc(1, sizeof *root);
  if (root == NULL) return luaL_error(L, "out of memory");
  cctx c;
  c.L = L;
  c.path[0] = '\0';
  c.err[0] = '\0';
  if (compile_node(&c, 1, root) != 0) {
    node_free(root);
    free(root);
    return luaL_error(L, "%s", c.err);
  }
  if (root->type != KT_OBJECT) {
    node_free(root);
    free(root);
    return luaL_error(L, "schema: the top level must be an object with properties");
  }
  s->root = root;
  return 1;
}

static int l_schema_gc(lua_State *L) {
  lschema *s = luaL_checkudata(L, 1, SCHEMA_MT);
  if (s->root) {
    node_free(s->root);
    free(s->root);
    s->root = NULL;
  }
  return 0;
}

/* --------------------------------------------------------------- validate */

/*
 * Validation runs in two modes over the same code. The check pass allocates
 * nothing (unless it finds a problem) and says whether the input can be sent
 * as it is (1), needs changes (2: an integral float for an integer, a total
 * to fill in, an empty array to mark), or is wrong (0). Only inputs that
 * need changes get the build pass, which pushes the normalised copy.
 */
#define MAX_DEPTH 64

typedef struct {
  const char *field; /* NULL for an array index */
  lua_Integer index;
} frame;

typedef struct {
  lua_State *L;
  int errs;            /* stack slot of the error list (nil until the first error) */
  lua_Integer nerr;
  int build;           /* push normalised values */
  int depth;
  frame frames[MAX_DEPTH];
} vctx;

enum { V_BAD = 0, V_SAME = 1, V_CHANGED = 2 };

/* The current location as a path (/multi_prompt/2/duration, Lua indices)
 * and as a name for people (multi_prompt[2].duration). */
static void location(const vctx *c, char *path, size_t plen, char *name, size_t nlen) {
  size_t p = 0, k = 0;
  path[0] = name[0] = '\0';
  for (int i = 0; i < c->depth; i++) {
    const frame *f = &c->frames[i];
    if (f->field) {
      if (p < plen - 1) path[p++] = '/';
      for (const char *s = f->field; *s && p < plen - 3; s++) { /* JSON pointer escapes */
        if (*s == '~') { path[p++] = '~'; path[p++] = '0'; }
        else if (*s == '/') { path[p++] = '~'; path[p++] = '1'; }
        else path[p++] = *s;
      }
      path[p] = '\0';
      int w = bfmt(name + k, nlen - k, "%s%s", k ? "." : "", f->field);
      if (w > 0) k = k + (size_t)w < nlen ? k + (size_t)w : nlen - 1;
    } else {
      int w = bfmt(path + p, plen - p, "/%lld", (long long)f->index);
      if (w > 0) p = p + (size_t)w < plen ? p + (size_t)w : plen - 1;
      w = bfmt(name + k, nlen - k, "[%lld]", (long long)f->index);
      if (w > 0) k = k + (size_t)w < nlen ? k + (size_t)w : nlen - 1;
    }
  }
  if (p == 0) bfmt(path, plen, "/");
  if (k == 0) bfmt(name, nlen, "input");
}

static void describe_value(lua_State *L, int idx, char *out, size_t outlen) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: bfmt(out, outlen, "nil"); break;
  case LUA_TBOOLEAN: bfmt(out, outlen, "%s", lua_toboolean(L, idx) ? "true" : "false"); break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) bfmt(out, outlen, "%lld", (long long)lua_tointeger(L, idx));
    else {
      double d = lua_tonumber(L, idx);
      if (isnan(d)) bfmt(out, outlen, "NaN");
      else if (isinf(d)) bfmt(out, outlen, "%sinfinity", d < 0 ? "-" : "");
      else bfmt(out, outlen, "%.14g", d);
    }
    break;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    size_t shown = n > 40 ? 40 : n;
    char buf[48];
    size_t k = 0;
    for (size_t i = 0; i < shown && k < sizeof buf - 1; i++) {
      unsigned char ch = (unsigned char)s[i];
      buf[k++] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
    }
    buf[k] = '\0';
    bfmt(out, outlen, "the string \"%s%s\"", buf, n > shown ? "..." : "");
    break;
  }
  default: bfmt(out, outlen, "a %s", luaL_typename(L, idx)); break;
  }
}

/* A table key as people write it: "name" quoted, other keys as values. */
static void describe_key(lua_State *L, int idx, char *out, size_t outlen) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    char val[96];
    describe_value(L, idx, val, sizeof val);
    bfmt(out, outlen, "%s", val + strlen("the string "));
  } else {
    describe_value(L, idx, out, outlen);
  }
}

/* Records an error at position pos of the list (1 = first), shifting the rest. */
static void add_error_at(vctx *c, lua_Integer pos, const char *msg) {
  lua_State *L = c->L;
  char path[PATH_MAX_LEN], name[PATH_MAX_LEN];
  location(c, path, sizeof path, name, sizeof name);
  if (lua_isnil(L, c->errs)) {
    lua_newtable(L);
    lua_replace(L, c->errs);
  }
  for (lua_Integer i = c->nerr; i >= pos; i--) {
    lua_rawgeti(L, c->errs, i);
    lua_rawseti(L, c->errs, i + 1);
  }
  lua_createtable(L, 0, 2);
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_rawseti(L, c->errs, pos);
  c->nerr++;
}

/* "<name> <rule...>" at the end of the list. */
static void fail_msg(vctx *c, const char *fmt, ...) {
  char path[PATH_MAX_LEN], name[PATH_MAX_LEN], rule[MSG_MAX_LEN], msg[MSG_MAX_LEN + PATH_MAX_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rule, sizeof rule, fmt, ap);
  va_end(ap);
  location(c, path, sizeof path, name, sizeof name);
  bfmt(msg, sizeof msg, "%s %s", name, rule);
  add_error_at(c, c->nerr + 1, msg);
}

/* "<name> <rule>, got <value>" for the value at vi. */
static void fail_value(vctx *c, int vi, const char *rule) {
  char val[96];
  describe_value(c->L, vi, val, sizeof val);
  fail_msg(c, "%s, got %s", rule, val);
}

static int enter(vctx *c, const char *field, lua_Integer index) {
  if (c->depth >= MAX_DEPTH) return 0;
  c->frames[c->depth].field = field;
  c->frames[c->depth].index = index;
  c->depth++;
  return 1;
}

static void leave(vctx *c) { c->depth--; }

/* UTF-8 check (no overlongs, no surrogates, <= U+10FFFF, no NUL); counts code points. */
static int utf8_ok(const unsigned char *s, size_t n, size_t *cps, int *has_nul) {
  size_t i = 0, count = 0;
  *has_nul = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len;
    unsigned cp;
    if (c < 0x80) {
      if (c == 0) { *has_nul = 1; return 0; }
      i++;
      count++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (i + len > n) return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return 0;
    i += len;
    count++;
  }
  *cps = count;
  return 1;
}

static const char *type_rule(ktype t) {
  switch (t) {
  case KT_STRING: return "must be a string";
  case KT_INTEGER: return "must be an integer";
  case KT_NUMBER: return "must be a number";
  case KT_BOOLEAN: return "must be a boolean (true or false)";
  case KT_ARRAY: return "must be a list (a Lua sequence)";
  case KT_OBJECT: return "must be a table of named fields";
  default: return "has a wrong type";
  }
}

static void range_text(const knode *n, char *out, size_t outlen, int integer) {
  const char *fmt = integer ? "%.0f" : "%g";
  char lo[40], hi[40];
  bfmt(lo, sizeof lo, fmt, n->min);
  bfmt(hi, sizeof hi, fmt, n->max);
  if (n->has_min && n->has_max && !n->min_excl && !n->max_excl) bfmt(out, outlen, "from %s to %s", lo, hi);
  else if (n->has_min && n->has_max)
    bfmt(out, outlen, "%s %s and %s %s", n->min_excl ? "above" : "at least", lo, n->max_excl ? "below" : "at most", hi);
  else if (n->has_min) bfmt(out, outlen, "%s %s", n->min_excl ? "above" : "at least", lo);
  else bfmt(out, outlen, "%s %s", n->max_excl ? "below" : "at most", hi);
}

static int in_range(const knode *n, double d) {
  if (n->has_min && (n->min_excl ? !(d > n->min) : !(d >= n->min))) return 0;
  if (n->has_max && (n->max_excl ? !(d < n->max) : !(d <= n->max))) return 0;
  return 1;
}

static void enum_text(const knode *n, char *out, size_t outlen) {
  size_t k = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n->nenum && k < outlen; i++) {
    int w = n->enum_is_num[i] ? bfmt(out + k, outlen - k, "%s%g", i ? ", " : "", n->enum_n[i])
                              : bfmt(out + k, outlen - k, "%s\"%s\"", i ? ", " : "", n->enum_s[i]);
    if (w < 0) break;
    k += (size_t)w;
  }
}

static int enum_match(const knode *n, lua_State *L, int vi) {
  if (n->nenum == 0) return 1;
  for (size_t i = 0; i < n->nenum; i++) {
    if (n->enum_is_num[i]) {
      if (lua_type(L, vi) == LUA_TNUMBER && lua_tonumber(L, vi) == n->enum_n[i]) return 1;
    } else if (lua_type(L, vi) == LUA_TSTRING) {
      size_t sl;
      const char *s = lua_tolstring(L, vi, &sl);
      if (sl == n->enum_len[i] && memcmp(s, n->enum_s[i], sl) == 0) return 1;
    }
  }
  return 0;
}

static void fail_enum(vctx *c, const knode *n, int vi) {
  char list[256], rule[300];
  enum_text(n, list, sizeof list);
  bfmt(rule, sizeof rule, n->nenum == 1 ? "must be %s" : "must be one of %s", list);
  fail_value(c, vi, rule);
}

static int validate(vctx *c, const knode *n, int vi);

/* Case-insensitive edit distance, bounded (small strings only). */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return 64;
  size_t prev[64], cur[64];
  for (size_t j = 0; j <= lb; j++) prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
      size_t best = prev[j - 1] + cost;
      if (prev[j] + 1 < best) best = prev[j] + 1;
      if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
      cur[j] = best;
    }
    memcpy(prev, cur, (lb + 1) * sizeof *prev);
  }
  return prev[lb];
}

static int starts_with_ci(const char *s, const char *prefix) {
  for (; *prefix; s++, prefix++)
    if (tolower((unsigned char)*s) != tolower((unsigned char)*prefix)) return 0;
  return 1;
}

/* The property an unknown key was most likely meant to be, or NULL: a
 * case-insensitive prefix either way (3 letters or more), or a few typos. */
static const char *suggest(const knode *obj, const char *key) {
  const char *best = NULL;
  size_t best_d = (size_t)-1;
  size_t kl = strlen(key);
  for (size_t i = 0; i < obj->nprops; i++) {
    const char *nm = obj->props[i].name;
    size_t nl = strlen(nm);
    size_t d = edit_distance(key, nm);
    size_t limit = (nl < kl ? nl : kl) / 3;
    if (limit < 1) limit = 1;
    if (limit > 3) limit = 3;
    if (kl >= 3 && (starts_with_ci(nm, key) || starts_with_ci(key, nm))) d = d < 1 ? d : 1;
    if (d <= limit && d < best_d) {
      best = nm;
      best_d = d;
    }
  }
  return best;
}

static int cmp_cstr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const knode *find_prop(const knode *n, const char *name, size_t *index) {
  for (size_t j = 0; j < n->nprops; j++)
    if (strcmp(n->props[j].name, name) == 0) {
      if (index) *index = j;
      return &n->props[j];
    }
  return NULL;
}

/* The sum rule of property p of object n (input at vi). `at` is where its
 * error goes in the list; arr_ok says the array was valid. Returns V_SAME,
 * V_CHANGED (the total was filled in: pushed when building) or V_BAD. */
static int check_sum(vctx *c, const knode *p, int vi, lua_Integer at, int self_ok, int arr_ok) {
  lua_State *L = c->L;
  if (!arr_ok) return V_SAME;
  lua_pushstring(L, p->sum_array);
  lua_rawget(L, vi);
  lua_Integer len = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
  if (len == 0) {
    lua_pop(L, 1);
    return V_SAME;
  }
  double sum = 0;
  char terms[160];
  size_t k = 0;
  terms[0] = '\0';
  for (lua_Integer i = 1; i <= len; i++) {
    lua_rawgeti(L, -1, i);
    lua_pushstring(L, p->sum_field);
    lua_rawget(L, -2);
    double d = lua_tonumber(L, -1);
    sum += d;
    if (k < sizeof terms - 16) {
      int w = bfmt(terms + k, sizeof terms - k, "%s%g", i > 1 ? " + " : "", d);
      if (w > 0) k += (size_t)w;
    } else if (k < sizeof terms - 4) {
      memcpy(terms + k, "...", 4);
      k = sizeof terms;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  int rc = V_SAME;
  enter(c, p->name, 0);
  char msg[MSG_MAX_LEN + 256];
  lua_pushstring(L, p->name);
  lua_rawget(L, vi);
  if (!lua_isnil(L, -1)) {
    if (self_ok && lua_tonumber(L, -1) != sum) {
      char val[64];
      describe_value(L, lua_gettop(L), val, sizeof val);
      bfmt(msg, sizeof msg, "%s must equal the sum of the %s %s values (%s = %g), got %s", p->name,
           p->sum_array, p->sum_field, terms, sum, val);
      add_error_at(c, at, msg);
      rc = V_BAD;
    }
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    if (p->type == KT_INTEGER && !(sum > -9.2e18 && sum < 9.2e18)) {
      bfmt(msg, sizeof msg, "%s was left out, and the %s %s values add up to %g, too large for an integer",
           p->name, p->sum_array, p->sum_field, sum);
      add_error_at(c, at, msg);
      rc = V_BAD;
    } else if (!in_range(p, sum)) {
      char range[96];
      range_text(p, range, sizeof range, p->type == KT_INTEGER);
      bfmt(msg, sizeof msg, "%s was left out, and the %s %s values add up to %g (%s), but %s must be %s", p->name,
           p->sum_array, p->sum_field, sum, terms, p->name, range);
      add_error_at(c, at, msg);
      rc = V_BAD;
    } else {
      rc = V_CHANGED;
      if (c->build) {
        if (p->type == KT_INTEGER) lua_pushinteger(L, (lua_Integer)sum);
        else lua_pushnumber(L, sum);
      }
    }
  }
  leave(c);
  return rc;
}

/* Unknown keys of the table at vi (known: how many of n's properties it has). */
static int check_unknown(vctx *c, const knode *n, int vi, size_t known) {
  lua_State *L = c->L;
  size_t total = 0;
  lua_pushnil(L);
  while (lua_next(L, vi) != 0) {
    lua_pop(L, 1);
    total++;
  }
  if (total == known) return 1; /* every key is a property: no names to compare */
  int ok = 1;
  const char *unknown[32];
  size_t nunk = 0, more = 0;
  lua_pushnil(L);
  while (lua_next(L, vi) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      char key[96];
      describe_key(L, lua_gettop(L), key, sizeof key);
      fail_msg(c, "has a key that is not a field name: %s (fields are named by strings)", key);
      ok = 0;
    } else if (strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1)) { /* "sound\0x" is not "sound" */
      char key[96];
      describe_key(L, lua_gettop(L), key, sizeof key);
      fail_msg(c, "has a field name with a NUL byte: %s", key);
      ok = 0;
    } else if (!find_prop(n, lua_tostring(L, -1), NULL)) {
      if (nunk < 32) unknown[nunk++] = lua_tostring(L, -1); /* anchored by the input table */
      else more++;
    }
  }
  qsort(unknown, nunk, sizeof unknown[0], cmp_cstr); /* the same answer on every run */
  for (size_t i = 0; i < nunk; i++) {
    enter(c, unknown[i], 0);
    const char *s = suggest(n, unknown[i]);
    char msg[MSG_MAX_LEN];
    if (s) bfmt(msg, sizeof msg, "unknown field '%s' (did you mean '%s'?)", unknown[i], s);
    else bfmt(msg, sizeof msg, "unknown field '%s'", unknown[i]);
    add_error_at(c, c->nerr + 1, msg);
    leave(c);
    ok = 0;
  }
  if (more) {
    fail_msg(c, "has %zu more unknown fields", more);
    ok = 0;
  }
  return ok;
}

#define MAX_PROPS 256

static int validate_object(vctx *c, const knode *n, int vi) {
  lua_State *L = c->L;
  if (lua_type(L, vi) != LUA_TTABLE) {
    fail_value(c, vi, type_rule(KT_OBJECT));
    return V_BAD;
  }
  if (lua_getmetatable(L, vi)) { /* [] from JSON, or kling.array {}: a list, not an object */
    luaL_getmetatable(L, KLING_ARRAY_MT);
    int list = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (list) {
      fail_msg(c, "%s, got a list (a table marked as an array)", type_rule(KT_OBJECT));
      return V_BAD;
    }
  }
  if (n->nprops > MAX_PROPS) {
    fail_msg(c, "has a schema with too many fields");
    return V_BAD;
  }
  int ok = 1, changed = 0, out = 0;
  size_t present = 0;
  lua_Integer after[MAX_PROPS]; /* error count after each property: where a sum error goes */
  unsigned char prop_ok[MAX_PROPS];
  if (c->build) {
    lua_createtable(L, 0, (int)n->nprops);
    out = lua_gettop(L);
  }
  for (size_t i = 0; i < n->nprops; i++) {
    const knode *p = &n->props[i];
    lua_pushstring(L, p->name);
    lua_rawget(L, vi);
    int v = lua_gettop(L);
    prop_ok[i] = 1;
    enter(c, p->name, 0);
    if (lua_isnil(L, v)) {
      if (p->required) {
        fail_msg(c, "is required");
        ok = prop_ok[i] = 0;
      }
    } else {
      present++;
      int r = validate(c, p, v);
      if (r == V_BAD) {
        ok = prop_ok[i] = 0;
      } else {
        changed |= r == V_CHANGED;
        if (c->build) lua_setfield(L, out, p->name);
      }
    }
    leave(c);
    lua_settop(L, v - 1);
    after[i] = c->nerr;
  }
  if (!n->allow_unknown && !check_unknown(c, n, vi, present)) ok = 0;
  for (size_t i = 0; i < n->nprops; i++) { /* totals that must equal the sum of their parts */
    const knode *p = &n->props[i];
    size_t ai;
    if (!p->sum_array || !find_prop(n, p->sum_array, &ai)) continue;
    lua_Integer before = c->nerr;
    int r = check_sum(c, p, vi, after[i] + 1, prop_ok[i], prop_ok[ai]);
    if (r == V_BAD) {
      ok = 0;
      for (size_t j = i; j < n->nprops; j++) after[j] += c->nerr - before;
    } else if (r == V_CHANGED) {
      changed = 1;
      if (c->build) lua_setfield(L, out, p->name);
    }
  }
  if (ok && c->build && n->allow_unknown) { /* the copy keeps the fields the schema lets through */
    lua_pushnil(L);
    while (lua_next(L, vi) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING && strlen(lua_tostring(L, -2)) == lua_rawlen(L, -2) &&
          find_prop(n, lua_tostring(L, -2), NULL)) {
        lua_pop(L, 1);
        continue;
      }
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, out);
    }
  }
  if (!ok) {
    if (c->build) lua_settop(L, out - 1);
    return V_BAD;
  }
  return changed ? V_CHANGED : V_SAME;
}

static int validate_array(vctx *c, const knode *n, int vi) {
  lua_State *L = c->L;
  if (lua_type(L, vi) != LUA_TTABLE) {
    fail_value(c, vi, type_rule(KT_ARRAY));
    return V_BAD;
  }
  lua_Integer len = (lua_Integer)lua_rawlen(L, vi);
  lua_Integer count = 0;
  lua_pushnil(L);
  while (lua_next(L, vi) != 0) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > len) {
      char key[96];
      describe_key(L, lua_gettop(L), key, sizeof key);
      lua_pop(L, 1);
      fail_msg(c, "must be a list (a Lua sequence), but it has the key %s", key);
      return V_BAD;
    }
    count++;
  }
  if (count != len) {
    fail_msg(c, "must be a list without holes (a Lua sequence)");
    return V_BAD;
  }
  int ok = 1, changed = len == 0, out = 0; /* an empty list is marked to go out as [] */
  if (n->min_items >= 0 && len < n->min_items) {
    fail_msg(c, "must have at least %ld items, got %lld", n->min_items, (long long)len);
    ok = 0;
  }
  if (n->max_items >= 0 && len > n->max_items) {
    fail_msg(c, "must have at most %ld items, got %lld", n->max_items, (long long)len);
    ok = 0;
  }
  if (c->build) {
    lua_createtable(L, (int)(len < 1024 ? len : 1024), 0);
    out = lua_gettop(L);
    luaL_setmetatable(L, KLING_ARRAY_MT);
  }
  for (lua_Integer i = 1; i <= len; i++) {
    lua_rawgeti(L, vi, i);
    int v = lua_gettop(L);
    enter(c, NULL, i);
    int r = n->items ? validate(c, n->items, v) : V_SAME;
    if (r == V_BAD) {
      ok = 0;
    } else {
      changed |= r == V_CHANGED;
      if (c->build) {
        if (!n->items) lua_pushvalue(L, v);
        lua_rawseti(L, out, i);
      }
    }
    leave(c);
    lua_settop(L, v - 1);
  }
  if (!ok) {
    if (c->build) lua_settop(L, out - 1);
    return V_BAD;
  }
  return changed ? V_CHANGED : V_SAME;
}

/* Validates the value at vi against n: V_BAD (errors recorded), V_SAME or
 * V_CHANGED. When building, a success pushes the value to send. */
static int validate(vctx *c, const knode *n, int vi) {
  lua_State *L = c->L;
  if (c->depth >= MAX_DEPTH || !lua_checkstack(L, 10)) {
    fail_msg(c, "is nested too deeply");
    return V_BAD;
  }
  int t = lua_type(L, vi);
  switch (n->type) {
  case KT_STRING: {
    if (t != LUA_TSTRING) {
      fail_value(c, vi, type_rule(KT_STRING));
      return V_BAD;
    }
    size_t len, cps = 0;
    int nul;
    const char *s = lua_tolstring(L, vi, &len);
    if (!utf8_ok((const unsigned char *)s, len, &cps, &nul)) {
      fail_msg(c, nul ? "must not contain NUL bytes" : "must be valid UTF-8 text");
      return V_BAD;
    }
    if (n->required) {
      size_t i = 0;
      while (i < len && isspace((unsigned char)s[i])) i++;
      if (i == len) {
        fail_msg(c, "must not be empty or blank");
        return V_BAD;
      }
    }
    if (n->min_len >= 0 && cps < (size_t)n->min_len) {
      fail_msg(c, "must be at least %ld characters long, got %zu", n->min_len, cps);
      return V_BAD;
    }
    if (n->max_len >= 0 && cps > (size_t)n->max_len) {
      fail_msg(c, "must be at most %ld characters long, got %zu", n->max_len, cps);
      return V_BAD;
    }
    if (!enum_match(n, L, vi)) {
      fail_enum(c, n, vi);
      return V_BAD;
    }
    if (c->build) lua_pushvalue(L, vi);
    return V_SAME;
  }
  case KT_INTEGER:
  case KT_NUMBER: {
    int integer = n->type == KT_INTEGER;
    if (t != LUA_TNUMBER) {
      fail_value(c, vi, type_rule(n->type));
      return V_BAD;
    }
    int is_int = lua_isinteger(L, vi);
    double d = lua_tonumber(L, vi);
    if (!isfinite(d)) {
      fail_value(c, vi, integer ? "must be a finite integer" : "must be a finite number");
      return V_BAD;
    }
    if (integer && !is_int && (d != floor(d) || d < -9.2e18 || d > 9.2e18)) {
      fail_value(c, vi, "must be an integer");
      return V_BAD;
    }
    if ((n->has_min || n->has_max) && !in_range(n, d)) {
      char range[96], rule[128];
      range_text(n, range, sizeof range, integer);
      bfmt(rule, sizeof rule, "must be %s%s", integer ? "an integer " : "", range);
      fail_value(c, vi, rule);
      return V_BAD;
    }
    if (!enum_match(n, L, vi)) {
      fail_enum(c, n, vi);
      return V_BAD;
    }
    if (integer && !is_int) { /* 5.0 goes out as 5 */
      if (c->build) lua_pushinteger(L, (lua_Integer)d);
      return V_CHANGED;
    }
    if (c->build) lua_pushvalue(L, vi);
    return V_SAME;
  }
  case KT_BOOLEAN:
    if (t != LUA_TBOOLEAN) {
      fail_value(c, vi, type_rule(KT_BOOLEAN));
      return V_BAD;
    }
    if (c->build) lua_pushvalue(L, vi);
    return V_SAME;
  case KT_ARRAY:
    return validate_array(c, n, vi);
  case KT_OBJECT:
    return validate_object(c, n, vi);
  default:
    if (!enum_match(n, L, vi)) {
      fail_enum(c, n, vi);
      return V_BAD;
    }
    if (c->build) lua_pushvalue(L, vi);
    return V_SAME;
  }
}

/* schema:validate(input) -> true, input_to_send | false, errors
 * input_to_send is the input itself when it can go out as it is. */
static int l_validate(lua_State *L) {
  lschema *s = luaL_checkudata(L, 1, SCHEMA_MT);
  luaL_checkany(L, 2);
  if (s->root == NULL) return luaL_argerror(L, 1, "schema is released");
  lua_settop(L, 2);
  lua_pushnil(L); /* slot 3: the error list, made on the first error */
  vctx c;
  c.L = L;
  c.errs = 3;
  c.nerr = 0;
  c.build = 0;
  c.depth = 0;
  int r = validate(&c, s->root, 2);
  if (r == V_BAD || c.nerr > 0) {
    lua_pushboolean(L, 0);
    lua_pushvalue(L, 3);
    return 2;
  }
  lua_pushboolean(L, 1);
  if (r == V_SAME) {
    lua_pushvalue(L, 2);
    return 2;
  }
  c.build = 1;
  r = validate(&c, s->root, 2); /* pushes the normalised copy */
  if (r == V_BAD) return luaL_error(L, "kling: validation changed its mind (input modified meanwhile?)");
  return 2;
}

static void describe_node(lua_State *L, const knode *n);

static void describe_props(lua_State *L, const knode *n) {
  lua_createtable(L, (int)n->nprops, 0);
  for (size_t i = 0; i < n->nprops; i++) {
    describe_node(L, &n->props[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* A plain description of the compiled tree (for tools: `kling schema`). */
static void describe_node(lua_State *L, const knode *n) {
  static const char *const tn[] = { "any", "string", "integer", "number", "boolean", "array", "object" };
  lua_createtable(L, 0, 8);
  lua_pushstring(L, tn[n->type]);
  lua_setfield(L, -2, "type");
  if (n->name) {
    lua_pushstring(L, n->name);
    lua_setfield(L, -2, "name");
  }
  lua_pushboolean(L, n->required);
  lua_setfield(L, -2, "required");
  if (n->has_min) { lua_pushnumber(L, n->min); lua_setfield(L, -2, "minimum"); }
  if (n->has_max) { lua_pushnumber(L, n->max); lua_setfield(L, -2, "maximum"); }
  if (n->min_items >= 0) { lua_pushinteger(L, n->min_items); lua_setfield(L, -2, "min_items"); }
  if (n->max_items >= 0) { lua_pushinteger(L, n->max_items); lua_setfield(L, -2, "max_items"); }
  if (n->nenum) {
    lua_createtable(L, (int)n->nenum, 0);
    for (size_t i = 0; i < n->nenum; i++) {
      if (n->enum_is_num[i]) lua_pushnumber(L, n->enum_n[i]);
      else lua_pushlstring(L, n->enum_s[i], n->enum_len[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "enum");
  }
  if (n->sum_array) { lua_pushfstring(L, "%s.%s", n->sum_array, n->sum_field); lua_setfield(L, -2, "sum_of"); }
  if (n->type == KT_OBJECT) { describe_props(L, n); lua_setfield(L, -2, "fields"); }
  if (n->type == KT_OBJECT && n->allow_unknown) { lua_pushboolean(L, 1); lua_setfield(L, -2, "allow_unknown"); }
  if (n->items) { describe_node(L, n->items); lua_setfield(L, -2, "items"); }
}

static int l_describe(lua_State *L) {
  lschema *s = luaL_checkudata(L, 1, SCHEMA_MT);
  if (s->root == NULL) return luaL_argerror(L, 1, "schema is released");
  describe_node(L, s->root);
  return 1;
}

void kl_open_schema(lua_State *L) {
  static const luaL_Reg methods[] = { { "validate", l_validate }, { "describe", l_describe }, { NULL, NULL } };
  static const luaL_Reg meta[] = { { "__gc", l_schema_gc }, { NULL, NULL } };
  kl_class(L, SCHEMA_MT, meta, methods);
  lua_pushcfunction(L, l_compile);
  lua_setfield(L, -2, "compile");
}
