/*
 * core.c - the Lua module kling.core: the binding's entry. It makes one
 * table per subsystem and the tables of defaults and limits:
 *
 *   core.engine    new, now, wait_fds, check_download_target, curl_version, http2
 *                  (the engine and transfer classes: lua_engine.c, lua_poller.c)
 *   core.protocol  the RunComfy protocol statement (lua_protocol.c, protocol.c)
 *   core.json      encoder, array_mt, max_depth (lua_jsonw.c)
 *   core.schema    compile (lua_schema.c)
 *   core.journal   append, read, lock, sha256, random_key, ignore_sigxfsz (lua_journal.c)
 *   core.term      isatty, size: the terminal of the command-line tool (lua_term.c)
 *   core.DEFAULTS  every default (defaults.h): timeout, connect_timeout,
 *                  max_connections, max_body, max_rps, retries = { max, base,
 *                  cap, retry_after_cap }, poll = { initial, min, max, near,
 *                  factor, jitter }, wait_timeout, download_min_rate
 *   core.LIMITS    every limit (defaults.h)
 *   core.sanitized true in the build of `make check` (ASan + UBSan)
 *
 * The names of the flat table kling.core had before it was split (core.new,
 * core.now, core.sha256, core.json_encoder, ...) stay, as aliases of the
 * subsystems' (FLAT below), for code outside the library (the specs, the
 * command-line tool); the library's Lua files use the subsystems' tables.
 */
#include <curl/curl.h>

#include "defaults.h"
#include "lbind.h"
#include "protocol.h"

static void set_number(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_integer(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void push_defaults(lua_State *L) {
  lua_createtable(L, 0, 10);
  set_number(L, "timeout", KD_TIMEOUT);
  set_number(L, "submit_timeout", KD_SUBMIT_TIMEOUT);
  set_number(L, "connect_timeout", KD_CONNECT_TIMEOUT);
  set_integer(L, "max_connections", KD_MAX_CONNECTIONS);
  set_integer(L, "max_body", (lua_Integer)KD_MAX_BODY);
  set_number(L, "max_rps", KD_MAX_RPS);
  lua_createtable(L, 0, 4);
  set_integer(L, "max", KD_RETRIES_MAX);
  set_number(L, "base", KD_RETRY_BASE);
  set_number(L, "cap", KD_RETRY_CAP);
  set_number(L, "retry_after_cap", KD_RETRY_AFTER_CAP);
  lua_setfield(L, -2, "retries");
  lua_createtable(L, 0, 6);
  set_number(L, "initial", KD_POLL_INITIAL);
  set_number(L, "min", KD_POLL_MIN);
  set_number(L, "max", KD_POLL_MAX);
  set_number(L, "near", KD_POLL_NEAR);
  set_number(L, "factor", KD_POLL_FACTOR);
  set_number(L, "jitter", KD_POLL_JITTER);
  lua_setfield(L, -2, "poll");
  set_number(L, "wait_timeout", KD_WAIT_TIMEOUT);
  set_number(L, "cancel_wait", KD_CANCEL_WAIT);
  set_number(L, "catalog_max_age", KD_CATALOG_MAX_AGE);
  set_integer(L, "download_min_rate", (lua_Integer)KD_DOWNLOAD_MIN_RATE);
}

static void push_limits(lua_State *L) {
  lua_createtable(L, 0, 12);
  set_number(L, "seconds_max", KL_SECONDS_MAX);
  set_number(L, "rate_max", KL_RATE_MAX);
  set_number(L, "bytes_max", KL_BYTES_MAX);
  set_integer(L, "max_body_min", (lua_Integer)KL_MAX_BODY_MIN);
  set_integer(L, "max_connections", KL_MAX_CONNECTIONS);
  set_number(L, "max_rps", KL_MAX_RPS);
  set_integer(L, "retries_max", KL_RETRIES_MAX);
  set_number(L, "poll_value_max", KL_POLL_VALUE_MAX);
  set_integer(L, "json_max_depth", KL_JSON_MAX_DEPTH);
  set_integer(L, "tag_max", KL_TAG_MAX);
  set_integer(L, "body_max", KL_BODY_MAX);
  set_integer(L, "media_image_max", KL_MEDIA_IMAGE_MAX);
  set_integer(L, "media_video_max", KL_MEDIA_VIDEO_MAX);
  set_integer(L, "media_audio_max", KL_MEDIA_AUDIO_MAX);
  set_integer(L, "escape_max", KL_ESCAPE_MAX);
  set_integer(L, "max_redirects", KL_MAX_REDIRECTS);
  set_integer(L, "wait_fds", KL_WAIT_FDS_MAX);
  set_integer(L, "id_max", KPROTO_ID_MAX);
  set_integer(L, "model_id_max", KPROTO_MODEL_ID_MAX);
}

/* Makes core[name] = a new table filled by open. */
static void subsystem(lua_State *L, const char *name, void (*open)(lua_State *L)) {
  lua_newtable(L);
  open(L);
  lua_setfield(L, -2, name);
}

/* The flat names of kling.core before the split: alias = subsystem.name. */
static const struct { const char *alias, *sub, *name; } FLAT[] = {
  { "new", "engine", "new" },
  { "now", "engine", "now" },
  { "wait_fds", "engine", "wait_fds" },
  { "check_download_target", "engine", "check_download_target" },
  { "curl_version", "engine", "curl_version" },
  { "http2", "engine", "http2" },
  { "error_code", "protocol", "error_code" },
  { "answer_kind", "protocol", "answer_kind" },
  { "unusable_tries", "protocol", "UNUSABLE_TRIES" },
  { "json_encoder", "json", "encoder" },
  { "json_max_depth", "json", "max_depth" },
  { "array_mt", "json", "array_mt" },
  { "compile_schema", "schema", "compile" },
  { "journal_append", "journal", "append" },
  { "journal_read", "journal", "read" },
  { "journal_lock", "journal", "lock" },
  { "sha256", "journal", "sha256" },
  { "random_key", "journal", "random_key" },
  { "ignore_sigxfsz", "journal", "ignore_sigxfsz" },
};

/* The one symbol core.so exports (the Makefile builds with -fvisibility=hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define KLING_EXPORT __attribute__((visibility("default")))
#else
#define KLING_EXPORT
#endif

KLING_EXPORT int luaopen_kling_core(lua_State *L);

KLING_EXPORT int luaopen_kling_core(lua_State *L) {
  static int curl_ready = 0;
  luaL_checkversion(L);
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "curl_global_init failed");
    curl_ready = 1;
  }
  luaL_newmetatable(L, KLING_ARRAY_MT); /* marks a table as a JSON array (the validator, the writer) */
  lua_pop(L, 1);
  lua_newtable(L);
  subsystem(L, "engine", kl_open_engine);
  kl_open_poller(L);
  subsystem(L, "protocol", kl_open_protocol);
  subsystem(L, "json", kl_open_json);
  subsystem(L, "schema", kl_open_schema);
  subsystem(L, "journal", kl_open_journal);
  subsystem(L, "term", kl_open_term);
  subsystem(L, "media", kl_open_media);
  push_defaults(L);
  lua_setfield(L, -2, "DEFAULTS");
  push_limits(L);
  lua_setfield(L, -2, "LIMITS");
  for (size_t i = 0; i < sizeof FLAT / sizeof FLAT[0]; i++) {
    lua_getfield(L, -1, FLAT[i].sub);
    lua_getfield(L, -1, FLAT[i].name);
    lua_setfield(L, -3, FLAT[i].alias);
    lua_pop(L, 1);
  }
#ifdef __SANITIZE_ADDRESS__
  lua_pushboolean(L, 1); /* built by `make check` */
#else
  lua_pushboolean(L, 0);
#endif
  lua_setfield(L, -2, "sanitized");
  return 1;
}
