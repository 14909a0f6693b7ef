/*
 * http.c - configuring one transfer, the libcurl callbacks that fill it,
 * and reading its outcome (see http.h).
 *
 * Downloads never carry the token. They stream into "<path>.part", which is
 * renamed to <path> only when the whole file has arrived, and they append to
 * it only bytes they have verified belong to the same file:
 *
 * - The .part is created when the first byte of a verified answer arrives,
 *   never before (a refused connection leaves no file), and one that holds
 *   nothing when a transfer ends is removed.
 * - A validator guards every resume, within one transfer and across runs:
 *   a strong ETag ("..."), or, when the file host gave no ETag at all, a
 *   Last-Modified at least one second older than the answer that carried it
 *   (its Date, else the time it came: RFC 9110 8.8.2.2; one in the future or
 *   in the same second cannot tell two versions apart). A weak ETag is none,
 *   and rules out the date too (RFC 9110 13.1.5). Without a validator, or
 *   without the whole length, every try starts over from 0, and a failed
 *   download removes its .part (no later run could trust it).
 * - Beside the .part, "<path>.part.meta" (the sidecar, written to a
 *   temporary, fsynced and renamed before the first byte goes into a new
 *   .part, and only when a validator guards it) keeps what identifies the
 *   file: the URL without its query string, the SHA-256 of the whole URL,
 *   the whole length, the validators (ETag, Last-Modified) and the answer's
 *   date.
 * - A later download of the same path goes on from the .part only when its
 *   sidecar is readable, names a length the .part does not exceed, and
 *   holds a validator for the URL asked for now: with a strong ETag, the URL
 *   without its query may have changed (file hosts pre-sign their URLs, so
 *   the query of the same file changes between fetches); with only a
 *   Last-Modified, the whole URL must be the same. It sends "Range: bytes=N-"
 *   and "If-Range" (the strong ETag, else the Last-Modified). Otherwise it
 *   starts over from 0 (the old .part is truncated when the new answer's
 *   first byte arrives).
 * - A 206 is appended only when its Content-Range starts at the offset asked
 *   for, runs to the end, its total is the recorded one, and its validators
 *   are the recorded ones (the same strong ETag, which it must carry; no ETag
 *   when the file had none; any Last-Modified the same); any mismatch starts
 *   over from 0 (at most KX_MAX_RESTARTS times, then an error). A 200 to a
 *   range request is the whole file again: it starts over. A 416 whose
 *   "bytes * /N" equals the .part's length and the recorded length (and whose
 *   validators, if any, are the recorded ones) means the .part is complete.
 * - Within one transfer, a try that breaks off is followed by one that goes
 *   on from the .part (same URL, same rules) when a validator guards it.
 * - One download at a time writes a path: "<path>.part.lock" is created and
 *   flocked (LOCK_EX | LOCK_NB) before anything is sent, checked after
 *   locking to be still the file the path names (as journal.c does), and
 *   removed, then unlocked, when the transfer ends; a second download of the
 *   same path fails at once (io) and touches none of the first's files.
 * - The bytes gathered in memory go to the .part whatever ends the
 *   transfer: its end, an abort, the engine's close, or kxfer_free.
 * - Redirects are followed here, not by libcurl: each target is judged as
 *   the URL itself would be (knet_check_url), and https never goes to
 *   plain http; at most KX_MAX_REDIRECTS hops.
 * - A try ends when it stays below low_speed_limit bytes/s for
 *   low_speed_time seconds (libcurl's low-speed rule); a deadline, when
 *   given, bounds the whole download, retries included.
 * - Local file failures (open, write, fsync, rename) set io_error with the
 *   path and errno; the verified bytes of the .part are kept.
 */
#define _GNU_SOURCE /* sync_file_range */
#include "http.h"
#include "curlcompat.h" /* libcurl 7.68 on */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "defaults.h"
#include "net.h"
#include "sha256.h"
#include "util.h"

/* A freed transfer's memory kept for the next ones (kxfer_free) is poisoned
 * under ASan, so that a use after free is still reported (the memory is not
 * freed, so ASan would not see one otherwise); under valgrind (make
 * valgrind) KLING_NO_SPARE keeps none. */
#if defined(__SANITIZE_ADDRESS__)
#define KX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KX_ASAN 1
#endif
#endif
#ifdef KX_ASAN
#include <sanitizer/asan_interface.h>
#define KX_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define KX_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define KX_POISON(p, n) ((void)(p), (void)(n))
#define KX_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define KX_ERROR_BODY_CAP KL_ERROR_BODY_CAP /* error answers of the file host, kept in memory */
#define KX_MAX_REDIRECTS KL_MAX_REDIRECTS
#define KX_MAX_RESTARTS KL_MAX_RESTARTS
#define KX_WBUF KL_WRITE_BUFFER
#define KX_META_MAX KL_META_MAX
#define KX_META_MAGIC "kling-part 2"
#define KX_LIBCURL_MAXAGE 118L /* s: libcurl's default CURLOPT_MAXAGE_CONN, for a request other than a submit */

#define kx_strdup kstrdup
#define kx_concat kconcat

static void copy_header_value(char *dst, size_t dstlen, const char *v, size_t n) {
  if (memchr(v, '\0', n) != NULL) n = 0; /* a value with a NUL byte is no value: never read it cut short */
  while (n > 0 && (*v == ' ' || *v == '\t')) { v++; n--; }
  while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  if (n >= dstlen) n = dstlen - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

/* A validator is compared whole: one too long to keep is marked unusable
 * ("\1"), so it never matches and never identifies a file. */
static void copy_validator(char *dst, size_t dstlen, const char *v, size_t n) {
  while (n > 0 && (*v == ' ' || *v == '\t')) { v++; n--; }
  while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  if (n >= dstlen || memchr(v, '\0', n) != NULL) {
    dst[0] = '\1';
    dst[1] = '\0';
    return;
  }
  memcpy(dst, v, n);
  dst[n] = '\0';
}

static int header_is(const char *line, size_t n, const char *name, const char **value, size_t *vlen) {
  size_t k = strlen(name);
  if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0) return 0;
  *value = line + k + 1;
  *vlen = n - k - 1;
  return 1;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud) {
  kxfer *x = ud;
  size_t n = size * nitems;
  const char *v;
  size_t vn;
  if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    /* A new response (after a 100 Continue): forget the last one's. */
    x->retry_after[0] = x->content_type[0] = x->content_length[0] = '\0';
    x->r_etag[0] = x->r_last_modified[0] = x->r_content_range[0] = x->r_date[0] = '\0';
    x->status_checked = 0;
  } else if (header_is(line, n, "retry-after", &v, &vn)) {
    copy_header_value(x->retry_after, sizeof x->retry_after, v, vn);
  } else if (header_is(line, n, "content-type", &v, &vn)) {
    copy_header_value(x->content_type, sizeof x->content_type, v, vn);
  } else if (header_is(line, n, "content-length", &v, &vn)) {
    copy_header_value(x->content_length, sizeof x->content_length, v, vn);
  } else if (x->path && header_is(line, n, "etag", &v, &vn)) {
    copy_validator(x->r_etag, sizeof x->r_etag, v, vn);
  } else if (x->path && header_is(line, n, "last-modified", &v, &vn)) {
    copy_validator(x->r_last_modified, sizeof x->r_last_modified, v, vn);
  } else if (x->path && header_is(line, n, "content-range", &v, &vn)) {
    copy_validator(x->r_content_range, sizeof x->r_content_range, v, vn);
  } else if (x->path && header_is(line, n, "date", &v, &vn)) {
    copy_validator(x->r_date, sizeof x->r_date, v, vn);
  }
  return n;
}

/* ---- the .part, its sidecar and the directory ---------------------------- */

static void set_io_error(kxfer *x, const char *path, int errnum) {
  if (x->io_error) return; /* the first one is the cause */
  x->io_error = 1;
  x->io_errno = errnum;
  x->io_path = path;
}

/* The part of a URL that names the file: without its query and fragment. */
static size_t url_identity_len(const char *url) {
  return strcspn(url, "?#");
}

static int same_file_url(const char *a, const char *b) {
  size_t na = url_identity_len(a), nb = url_identity_len(b);
  return na == nb && memcmp(a, b, na) == 0;
}

/* A strong entity tag: "..." of etagc characters (RFC 9110 8.8.3); not
 * W/"...", not empty, not unusable ("\1"). */
static int strong_etag(const char *etag) {
  size_t n = strlen(etag);
  if (n < 2 || etag[0] != '"' || etag[n - 1] != '"') return 0;
  for (size_t i = 1; i + 1 < n; i++) {
    unsigned char c = (unsigned char)etag[i];
    if (c == '"' || c < 0x21 || c == 0x7f) return 0;
  }
  return 1;
}

static int usable(const char *validator) {
  return validator[0] != '\0' && validator[0] != '\1';
}

/* The recorded Last-Modified is a validator: a date at least one second
 * older than the answer that carried it (RFC 9110 8.8.2.2), so neither in
 * the future nor in the same second as the answer. */
static int last_modified_validates(const kxfer *x) {
  if (!usable(x->last_modified) || x->date <= 0) return 0;
  time_t t = curl_getdate(x->last_modified, NULL);
  return t >= 0 && (long long)t + 1 <= x->date;
}

/* The If-Range value for the recorded identity: the strong ETag, else (no
 * ETag at all) a Last-Modified that validates; NULL when there is none: the
 * .part cannot be gone on from. */
static const char *if_range_value(const kxfer *x) {
  if (strong_etag(x->etag)) return x->etag;
  if (x->etag[0] != '\0') return NULL; /* a weak ETag: no date in If-Range either (RFC 9110 13.1.5) */
  if (last_modified_validates(x)) return x->last_modified;
  return NULL;
}

/* When the answer now read was made: its Date, else now (Unix seconds). */
static long long answer_date(const kxfer *x) {
  time_t t = usable(x->r_date) ? curl_getdate(x->r_date, NULL) : -1;
  return t >= 0 ? (long long)t : (long long)time(NULL);
}

/* Why this answer's validators are not the recorded ones (NULL: they are).
 * need_etag: the answer must carry the recorded strong ETag (a 206 must,
 * RFC 9110 15.3.7; a 416 need not). */
static const char *other_validators(const kxfer *x, int need_etag) {
  if (need_etag && strong_etag(x->etag) && x->r_etag[0] == '\0') return "no ETag (the file's was recorded)";
  if (x->r_etag[0] != '\0' && strcmp(x->r_etag, x->etag) != 0)
    return x->etag[0] ? "another ETag" : "an ETag the file did not have";
  if (x->r_last_modified[0] != '\0' && usable(x->last_modified) && strcmp(x->r_last_modified, x->last_modified) != 0)
    return "another Last-Modified";
  return NULL;
}

static int fsync_dir(kxfer *x) {
  int fd = open(x->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    set_io_error(x, x->dir, errno);
    return -1;
  }
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  if (rc != 0 && err != EINVAL && err != EROFS) { /* some file systems cannot sync a directory */
    set_io_error(x, x->dir, err);
    return -1;
  }
  return 0;
}

static int write_all(int fd, const char *p, size_t n, size_t *done) {
  *done = 0;
  while (*done < n) {
    ssize_t w = write(fd, p + *done, n - *done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    *done += (size_t)w;
  }
  return 0;
}

/* Writes the sidecar for the recorded identity: temporary, fsync, rename,
 * fsync of the directory. 0 or -1 (io_error set). */
static int write_meta(kxfer *x) {
  char text[KX_META_MAX], digest[65];
  ksha256_hex(x->origin_url, strlen(x->origin_url), digest);
  int n = snprintf(text, sizeof text,
                   KX_META_MAGIC "\nurl %.*s\nurl-sha256 %s\nlength %lld\netag %s\nlast-modified %s\ndate %lld\n",
                   (int)url_identity_len(x->origin_url), x->origin_url, digest, (long long)x->total,
                   usable(x->etag) ? x->etag : "", usable(x->last_modified) ? x->last_modified : "", x->date);
  if (n < 0 || (size_t)n >= sizeof text) return 0; /* too long to keep: the .part will not be trusted */
  int fd = open(x->meta_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    set_io_error(x, x->meta_tmp, errno);
    return -1;
  }
  size_t done;
  if (write_all(fd, text, (size_t)n, &done) != 0 || fsync(fd) != 0) {
    set_io_error(x, x->meta_tmp, errno);
    close(fd);
    unlink(x->meta_tmp);
    return -1;
  }
  if (close(fd) != 0) {
    set_io_error(x, x->meta_tmp, errno);
    unlink(x->meta_tmp);
    return -1;
  }
  if (rename(x->meta_tmp, x->meta) != 0) {
    set_io_error(x, x->meta, errno);
    unlink(x->meta_tmp);
    return -1;
  }
  if (fsync_dir(x) != 0) return -1;
  x->part_trusted = 1;
  return 0;
}

static void remove_meta(kxfer *x) {
  unlink(x->meta);
  unlink(x->meta_tmp); /* left by a process killed while writing it */
}

/* Reads the sidecar: fills x's identity and returns 1 when the .part of
 * size `have` may be gone on from (see the top of this file), else 0. */
static int read_meta(kxfer *x, curl_off_t have) {
  char text[KX_META_MAX + 1];
  int fd = open(x->meta, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, text, KX_META_MAX);
  close(fd);
  if (n <= 0 || n >= KX_META_MAX) return 0;
  text[n] = '\0';
  if (memchr(text, '\0', (size_t)n) != NULL) return 0;
  char *line = text, *next, digest[65];
  int magic = 0, url_ok = 0, whole_url_ok = 0;
  curl_off_t total = -1;
  ksha256_hex(x->origin_url, strlen(x->origin_url), digest);
  x->etag[0] = x->last_modified[0] = '\0';
  x->date = 0;
  for (; *line; line = next) {
    next = strchr(line, '\n');
    if (next == NULL) return 0; /* every line ends: a torn file is not trusted */
    *next++ = '\0';
    if (!magic) {
      if (strcmp(line, KX_META_MAGIC) != 0) return 0;
      magic = 1;
    } else if (strncmp(line, "url ", 4) == 0) {
      url_ok = same_file_url(line + 4, x->origin_url) && url_identity_len(line + 4) == strlen(line + 4);
    } else if (strncmp(line, "url-sha256 ", 11) == 0) {
      whole_url_ok = strcmp(line + 11, digest) == 0;
    } else if (strncmp(line, "date ", 5) == 0) {
      char *end;
      long long v = strtoll(line + 5, &end, 10);
      if (*end != '\0' || end == line + 5) return 0;
      x->date = v;
    } else if (strncmp(line, "length ", 7) == 0) {
      char *end;
      long long v = strtoll(line + 7, &end, 10);
      if (*end != '\0' || end == line + 7) return 0;
      total = (curl_off_t)v;
    } else if (strncmp(line, "etag ", 5) == 0) {
      if (strlen(line + 5) >= sizeof x->etag) return 0;
      strcpy(x->etag, line + 5);
    } else if (strncmp(line, "last-modified ", 14) == 0) {
      if (strlen(line + 14) >= sizeof x->last_modified) return 0;
      strcpy(x->last_modified, line + 14);
    }
  }
  /* a strong ETag names the file whatever the URL's query; a date only at the same whole URL */
  const char *v = if_range_value(x);
  if (!magic || !url_ok || total <= 0 || have > total || v == NULL || (v != x->etag && !whole_url_ok)) {
    x->etag[0] = x->last_modified[0] = '\0';
    x->date = 0;
    return 0;
  }
  x->total = total;
  return 1;
}

/* Checks, before anything is sent, that the download can be written: its
 * directory exists and is writable, the path is not a directory, and each
 * file of the download (.part, .part.meta, .part.meta.tmp, .part.lock) is
 * a regular file when it exists. 0, or -1 with why filled. */
static int check_target(kxfer *x, kx_new_error *why) {
  struct stat st;
  const char *bad = NULL;
  int err = 0;
  const char *files[] = { x->part, x->meta, x->meta_tmp, x->lock };
  if (stat(x->dir, &st) != 0) bad = x->dir, err = errno;
  else if (!S_ISDIR(st.st_mode)) bad = x->dir, err = ENOTDIR;
  else if (access(x->dir, W_OK | X_OK) != 0) bad = x->dir, err = errno;
  else if (stat(x->path, &st) == 0 && S_ISDIR(st.st_mode)) bad = x->path, err = EISDIR;
  for (size_t i = 0; !bad && i < sizeof files / sizeof files[0]; i++)
    if (stat(files[i], &st) == 0 && !S_ISREG(st.st_mode)) bad = files[i], err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
  if (!bad) return 0;
  why->io = 1;
  why->errnum = err;
  snprintf(why->path, sizeof why->path, "%s", bad);
  return -1;
}

static int same_file(int fd, const char *path) {
  struct stat a, b;
  return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* Takes the download's lock: path.part.lock, created when missing and
 * flocked without waiting, then checked to be still the file the path names
 * (a download that ended meanwhile removed it: take the new one), as
 * journal.c does for the journal. 0, or -1 with why filled (errnum
 * EWOULDBLOCK, path the download's: another download holds it). */
static int take_lock(kxfer *x, kx_new_error *why) {
  int err = EAGAIN;
  const char *bad = x->lock;
  for (int tries = 0; tries < 100; tries++) {
    int fd = open(x->lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666); /* a symlink there is refused (ELOOP) */
    if (fd < 0) {
      err = errno;
      break;
    }
    int rc;
    while ((rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {}
    if (rc != 0) {
      err = errno;
      if (err == EWOULDBLOCK) bad = x->path;
      close(fd);
      break;
    }
    if (same_file(fd, x->lock)) {
      x->lock_fd = fd;
      return 0;
    }
    close(fd); /* removed (or replaced) by the download that held it: take the file the path names now */
  }
  why->io = 1;
  why->errnum = err;
  snprintf(why->path, sizeof why->path, "%s", bad);
  return -1;
}

/* Gives the lock back: removes the lock file (while still holding it, when
 * the path still names it), then unlocks. */
static void release_lock(kxfer *x) {
  if (x->lock == NULL || x->lock_fd < 0) return;
  if (same_file(x->lock_fd, x->lock)) unlink(x->lock);
  close(x->lock_fd);
  x->lock_fd = -1;
}

/* The message of a target that cannot be written (why filled). */
static void target_message(const kxfer *x, const kx_new_error *why, char *err, size_t errlen) {
  if (why->errnum == EWOULDBLOCK && strcmp(why->path, x->path) == 0)
    snprintf(err, errlen, "cannot write '%s': another download is writing it (it holds '%s')", x->path, x->lock);
  else if (strcmp(why->path, x->part) == 0)
    snprintf(err, errlen, "cannot write '%s': %s", x->part, strerror(why->errnum));
  else /* the directory (or another file of the download) is the problem: name both */
    snprintf(err, errlen, "cannot write '%s': '%s': %s", x->part, why->path, strerror(why->errnum));
}

/* The names of a download's files (path, .part, sidecar, its temporary,
 * lock, directory). 0, or -1: out of memory. */
static int download_names(kxfer *x, const char *download) {
  x->path = kx_strdup(download);
  x->part = kx_concat(download, ".part");
  x->meta = kx_concat(download, ".part.meta");
  x->meta_tmp = kx_concat(download, ".part.meta.tmp");
  x->lock = kx_concat(download, ".part.lock");
  const char *slash = strrchr(download, '/');
  if (slash == NULL) x->dir = kx_strdup(".");
  else if (slash == download) x->dir = kx_strdup("/");
  else if ((x->dir = malloc((size_t)(slash - download) + 1)) != NULL) {
    memcpy(x->dir, download, (size_t)(slash - download));
    x->dir[slash - download] = '\0';
  }
  return x->path && x->part && x->meta && x->meta_tmp && x->lock && x->dir ? 0 : -1;
}

int kx_check_download_target(const char *path, char *err, size_t errlen, kx_new_error *why) {
  kx_new_error ignored;
  if (why == NULL) why = &ignored;
  why->io = 0;
  why->errnum = 0;
  why->path[0] = '\0';
  kxfer *x = calloc(1, sizeof *x);
  if (x == NULL || (x->fd = x->lock_fd = -1, download_names(x, path) != 0)) {
    snprintf(err, errlen, "out of memory");
    kxfer_free(x);
    return -1;
  }
  int rc = check_target(x, why) == 0 && take_lock(x, why) == 0 ? 0 : -1;
  if (rc != 0) target_message(x, why, err, errlen);
  kxfer_free(x); /* gives the lock back */
  return rc;
}

/* Sets up where a download starts: from a trusted .part, or from 0. */
static void load_part(kxfer *x, int resume) {
  struct stat st;
  x->total = -1;
  x->etag[0] = x->last_modified[0] = '\0';
  x->date = 0;
  x->offset = x->resumed_from = x->part_size = 0;
  if (!resume || stat(x->part, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) return;
  if (!read_meta(x, (curl_off_t)st.st_size)) return;
  x->offset = x->resumed_from = x->part_size = (curl_off_t)st.st_size;
  x->part_trusted = 1;
}

/* Opens the .part for the first verified byte of this try: truncated (and
 * the sidecar written for the answer's identity) when the try starts from 0,
 * else positioned at the offset. 0, or -1 (io_error or restart set). */
static int open_part(kxfer *x) {
  if (x->offset == 0) {
    /* The old sidecar goes first, then the old bytes; the new sidecar is
     * written only once the truncation is on disk: whatever the moment of a
     * crash, a sidecar never describes bytes of another file. */
    remove_meta(x);
    x->fd = open(x->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (x->fd < 0) {
      set_io_error(x, x->part, errno);
      return -1;
    }
    x->opened = 1;
    x->part_size = 0;
    x->written_back = 0;
    x->part_trusted = 0; /* until its sidecar is on disk */
    if (x->total > 0 && if_range_value(x) != NULL) {
      if (fsync(x->fd) != 0) {
        set_io_error(x, x->part, errno);
        return -1;
      }
      if (write_meta(x) != 0) return -1;
    }
  } else {
    struct stat st;
    x->fd = open(x->part, O_WRONLY | O_CLOEXEC);
    if (x->fd < 0) {
      set_io_error(x, x->part, errno);
      return -1;
    }
    if (fstat(x->fd, &st) != 0) {
      set_io_error(x, x->part, errno);
      return -1;
    }
    if ((curl_off_t)st.st_size != x->offset) { /* changed under us (another process?) */
      snprintf(x->problem, sizeof x->problem, "the .part changed during the download (%lld bytes, expected %lld)",
               (long long)st.st_size, (long long)x->offset);
      x->restart = 1;
      return -1;
    }
    if (lseek(x->fd, (off_t)x->offset, SEEK_SET) < 0) {
      set_io_error(x, x->part, errno);
      return -1;
    }
    x->part_size = x->offset;
    x->written_back = x->offset;
  }
  if (x->wbuf == NULL && (x->wbuf = malloc(KX_WBUF)) == NULL) {
    x->oom = 1;
    return -1;
  }
  x->wlen = 0;
  return 0;
}

/* Every KX_WRITEBACK bytes, asks the kernel to start writing the file out
 * (without waiting), so the fsync at the end finds little left to do. */
#define KX_WRITEBACK (8 << 20)
static void start_writeback(kxfer *x) {
  if (x->part_size - x->written_back < KX_WRITEBACK) return;
#ifdef SYNC_FILE_RANGE_WRITE
  sync_file_range(x->fd, (off_t)x->written_back, (off_t)(x->part_size - x->written_back), SYNC_FILE_RANGE_WRITE);
#endif
  x->written_back = x->part_size;
}

/* Writes what is gathered to the .part; part_size counts what the file
 * holds, a partial write included. 0 or -1 (io_error set). */
static int flush_part(kxfer *x) {
  if (x->fd < 0 || x->wlen == 0) return 0;
  size_t done;
  int rc = write_all(x->fd, x->wbuf, x->wlen, &done);
  int err = errno;
  x->part_size += (curl_off_t)done;
  if (done < x->wlen) memmove(x->wbuf, x->wbuf + done, x->wlen - done);
  x->wlen -= done;
  if (rc != 0) {
    set_io_error(x, x->part, err);
    x->wlen = 0; /* what could not be written is dropped: the file holds a verified prefix */
    return -1;
  }
  start_writeback(x);
  return 0;
}

int kxfer_flush(kxfer *x) {
  return x->path ? flush_part(x) : 0;
}

/* Closes the .part after a try. sync: flush it to disk first. */
static void close_part(kxfer *x, int sync) {
  if (x->fd < 0) return;
  flush_part(x);
  if (sync && fsync(x->fd) != 0) set_io_error(x, x->part, errno);
  if (close(x->fd) != 0 && sync) set_io_error(x, x->part, errno);
  x->fd = -1;
}

/* ---- answers ------------------------------------------------------------- */

/* "bytes A-B/N" -> 0; "bytes * /N" -> 1 (first, last = -1); else -1.
 * N may be "*" (total = -1). */
static int parse_content_range(const char *v, curl_off_t *first, curl_off_t *last, curl_off_t *total) {
  if (strncasecmp(v, "bytes", 5) != 0) return -1;
  v += 5;
  if (*v != ' ') return -1;
  while (*v == ' ') v++;
  char *end;
  int unsatisfied = 0;
  *first = *last = -1;
  if (*v == '*') {
    unsatisfied = 1;
    v++;
  } else {
    if (*v < '0' || *v > '9') return -1;
    *first = (curl_off_t)strtoll(v, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9') return -1;
    *last = (curl_off_t)strtoll(end + 1, &end, 10);
    v = end;
    if (*last < *first) return -1;
  }
  if (*v != '/') return -1;
  v++;
  if (*v == '*' && v[1] == '\0' && !unsatisfied) {
    *total = -1;
    return 0;
  }
  if (*v < '0' || *v > '9') return -1;
  *total = (curl_off_t)strtoll(v, &end, 10);
  if (*end != '\0') return -1;
  return unsatisfied;
}

/* The first body byte of a 2xx answer to a download: is it the file asked
 * for, from the offset asked for? Then opens the .part. 0, or -1: the body
 * is not written (restart, io_error or oom set). */
static int begin_body(kxfer *x, long code) {
  curl_off_t length = -1;
  curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (code == 206) {
    curl_off_t first, last, total;
    const char *bad = NULL;
    if (x->r_content_range[0] == '\0') bad = "a 206 without Content-Range";
    else if (parse_content_range(x->r_content_range, &first, &last, &total) != 0) bad = "an unreadable Content-Range";
    else if (first != x->offset) bad = "a range that does not start at the offset asked for";
    else if (total < 0) bad = "a range of unknown total length";
    else if (x->total >= 0 && total != x->total) bad = "a total length that is not the file's";
    else if (last != total - 1) bad = "a range that stops before the end";
    else if (length >= 0 && length != last - first + 1) bad = "a Content-Length that is not the range's";
    else if (x->offset > 0 && (bad = other_validators(x, 1)) != NULL) {}
    if (bad) {
      char cr[sizeof x->r_content_range]; /* the host's text: the token masked */
      snprintf(cr, sizeof cr, "%s", x->r_content_range[0] == '\1' ? "(too long)" : x->r_content_range);
      knet_mask(x->net, cr, sizeof cr);
      snprintf(x->problem, sizeof x->problem, "the file host answered a range request from byte %lld with %s (Content-Range '%s')",
               (long long)x->offset, bad, cr);
      x->restart = 1;
      return -1;
    }
    if (x->offset == 0) length = total;
  } else {
    x->offset = 0; /* the whole file (again): start over */
  }
  if (x->offset == 0) { /* the identity is this answer's */
    x->total = length;
    memcpy(x->etag, x->r_etag, sizeof x->etag);
    memcpy(x->last_modified, x->r_last_modified, sizeof x->last_modified);
    x->date = answer_date(x);
  }
  return open_part(x);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  kxfer *x = ud;
  size_t n = size * nmemb;
  if (x->path && !x->status_checked) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    x->status_checked = 1;
    x->to_file = code >= 200 && code < 300;
    if (x->to_file && begin_body(x, code) != 0) return 0;
  }
  if (x->path && x->to_file) {
    if (x->max_bytes > 0 && x->offset + x->bytes + (curl_off_t)n > x->max_bytes) {
      x->too_large = 1;
      return 0;
    }
    if (x->wlen + n > KX_WBUF && flush_part(x) != 0) return 0;
    if (n >= KX_WBUF) { /* larger than the buffer: straight to the file */
      size_t done;
      int rc = write_all(x->fd, p, n, &done);
      x->part_size += (curl_off_t)done;
      if (rc != 0) {
        set_io_error(x, x->part, errno);
        return 0;
      }
      start_writeback(x);
    } else {
      memcpy(x->wbuf + x->wlen, p, n);
      x->wlen += n;
    }
    x->bytes += (curl_off_t)n;
    return n;
  }
  if (x->path) { /* an error answer from the file host: keep its start */
    size_t room = x->body.len < KX_ERROR_BODY_CAP ? KX_ERROR_BODY_CAP - x->body.len : 0;
    if (kbuf_append(&x->body, p, n < room ? n : room) == -1) {
      x->oom = 1;
      return 0;
    }
    return n;
  }
  switch (kbuf_append(&x->body, p, n)) {
  case -1: x->oom = 1; return 0;
  case -2: x->too_large = 1; return 0;
  default: x->bytes += (curl_off_t)n; return n;
  }
}

static int add_header(kxfer *x, const char *h) {
  struct curl_slist *l = curl_slist_append(x->headers, h);
  if (l == NULL) return -1;
  x->headers = l;
  return 0;
}

#define SETOPT(opt, val) do { if (curl_easy_setopt(x->easy, opt, val) != CURLE_OK) return -1; } while (0)

kxfer *kxfer_new(knet *e, const kx_spec *s, char *err, size_t errlen) {
  return kxfer_new_ex(e, s, err, errlen, NULL);
}

kxfer *kxfer_new_ex(knet *e, const kx_spec *s, char *err, size_t errlen, kx_new_error *why) {
  kx_new_error ignored;
  if (why == NULL) why = &ignored;
  why->io = 0;
  why->errnum = 0;
  why->path[0] = '\0';
  int is_api = 0;
  if (knet_check_url(e, s->url, &is_api, err, errlen) != 0) return NULL;
  if (s->download) is_api = 0; /* downloads never carry the token */
  int method;
  if (strcmp(s->method, "GET") == 0) method = KX_GET;
  else if (strcmp(s->method, "POST") == 0) method = KX_POST;
  else if (strcmp(s->method, "HEAD") == 0) method = KX_HEAD;
  else {
    snprintf(err, errlen, "unsupported method '%s'", s->method);
    return NULL;
  }

  /* the memory of one of the client's freed transfers when there is one: a
   * transfer is a few KiB, which malloc does not keep at hand */
  kxfer *x = e->nspare > 0 ? e->spare[--e->nspare] : NULL;
  if (x) {
    KX_UNPOISON(x, sizeof *x);
    memset(x, 0, sizeof *x);
  } else {
    x = calloc(1, sizeof *x);
  }
  if (x == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
  x->fd = x->lock_fd = -1;
  x->net = e;
  kbuf_init(&x->body, s->download ? 0 : e->max_body);
  x->is_api = is_api;
  x->method = method;
  x->max_bytes = s->max_bytes;
  x->timeout_ms = s->timeout_ms > 0 ? s->timeout_ms : e->timeout_ms;
  x->fresh = s->fresh;
  x->retry = s->retry;
  x->length = -1;
  x->total = -1;
  x->url = kx_strdup(s->url);
  if (x->url == NULL) goto fail_oom;
  if (method == KX_POST) {
    x->req_body_len = s->body ? s->body_len : 0;
    x->req_body = malloc(x->req_body_len + 1);
    if (x->req_body == NULL) goto fail_oom;
    if (s->body) memcpy(x->req_body, s->body, x->req_body_len);
    x->req_body[x->req_body_len] = '\0';
  }
  if (s->download) {
    x->origin_url = kx_strdup(s->url);
    if (download_names(x, s->download) != 0 || !x->origin_url) goto fail_oom;
    /* unset: the defaults (defaults.h): min_rate, and the transfer's timeout */
    x->low_speed_limit = s->low_speed_limit > 0 ? s->low_speed_limit : (long)KD_DOWNLOAD_MIN_RATE;
    x->low_speed_time = s->low_speed_time > 0 ? s->low_speed_time
                        : x->timeout_ms > 0 ? (x->timeout_ms + 999) / 1000 : (long)KD_TIMEOUT;
    if (s->deadline > 0) x->deadline_at = know() + s->deadline;
    /* the lock before the sidecar is read: what is read is not being written */
    if (check_target(x, why) != 0 || take_lock(x, why) != 0) {
      target_message(x, why, err, errlen);
      kxfer_free(x);
      return NULL;
    }
    load_part(x, s->resume);
  }
  return x;

fail_oom:
  snprintf(err, errlen, "out of memory");
  kxfer_free(x);
  return NULL;
}

/* The POST body, given to libcurl by this read callback rather than as
 * CURLOPT_POSTFIELDS: libcurl can then send it again only through
 * on_seek. */
static size_t on_read(char *dst, size_t size, size_t nitems, void *ud) {
  kxfer *x = ud;
  size_t room = size * nitems, left = x->req_body_len - x->req_sent;
  size_t n = left < room ? left : room;
  memcpy(dst, x->req_body + x->req_sent, n);
  x->req_sent += n;
  return n;
}

/* libcurl asks to rewind the body to send it again: on its own, when a
 * reused keep-alive connection died before any byte of the answer came
 * (libcurl 7.88 does so without telling). A submit (KX_RETRY_SUBMIT) is
 * a paid job that may have reached the server: refused, so the transfer
 * ends once with CURLE_SEND_FAIL_REWIND (kind network, sent: reported as
 * submit_unknown), never a second POST. Any other POST may go again. */
static int on_seek(void *ud, curl_off_t offset, int origin) {
  kxfer *x = ud;
  if (x->retry == KX_RETRY_SUBMIT) {
    x->rewinds_refused++;
    return CURL_SEEKFUNC_FAIL;
  }
  if (origin != SEEK_SET || offset < 0 || (size_t)offset > x->req_body_len) return CURL_SEEKFUNC_FAIL;
  x->req_sent = (size_t)offset;
  return CURL_SEEKFUNC_OK;
}

/* An API request (not a download, not a HEAD) leaves its easy handle
 * configured: the next API request on it sets only what is its own
 * (configure_transfer), without curl_easy_reset and the options every API
 * request shares (configure_common). */
static int warmable(const kxfer *x) {
  return x->is_api && !x->path && x->method != KX_HEAD;
}

/* What every transfer of the client sets the same way (for an API request:
 * once per easy handle). */
static int configure_common(kxfer *x, knet *e) {
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_READFUNCTION, on_read);
  SETOPT(CURLOPT_SEEKFUNCTION, on_seek);
  if (KL_SET_HTTP_ONLY(x->easy) != CURLE_OK) return -1;
  SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
  SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
  if (e->ca_file) SETOPT(CURLOPT_CAINFO, e->ca_file);
  if (e->ca_dir_off) SETOPT(CURLOPT_CAPATH, (char *)NULL); /* the store parsed once (net.h) */
  if (e->share) SETOPT(CURLOPT_SHARE, e->share);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, e->connect_timeout_ms);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  /* an API request's User-Agent is a line of its header lists (net.c), any
   * other request's libcurl's */
  if (x->is_api) SETOPT(CURLOPT_PROXYHEADER, e->api_proxy_headers);
  else if (e->user_agent) SETOPT(CURLOPT_USERAGENT, e->user_agent);
  /* Proxies (from the environment, as libcurl reads it): never for loopback nor
   * for plain http carrying the token; always as a CONNECT tunnel, with no
   * header of ours (the token) in the CONNECT request. */
  SETOPT(CURLOPT_NOPROXY, e->no_proxy);
  SETOPT(CURLOPT_HTTPPROXYTUNNEL, 1L);
  SETOPT(CURLOPT_HEADEROPT, (long)CURLHEADER_SEPARATE);
  if (x->is_api ? e->api_direct : knet_direct_only(x->url, 0)) SETOPT(CURLOPT_PROXY, "");
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, knet_open_socket);
  SETOPT(CURLOPT_OPENSOCKETDATA, (void *)e);
  SETOPT(CURLOPT_CLOSESOCKETFUNCTION, knet_close_socket);
  SETOPT(CURLOPT_CLOSESOCKETDATA, (void *)e);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
  if (!x->path) SETOPT(CURLOPT_ACCEPT_ENCODING, "");
  return 0;
}

/* What is this transfer's own. warm: the handle comes configured from an
 * earlier API request (options that one may have set are set again). */
static int configure_transfer(kxfer *x, knet *e, int warm) {
  SETOPT(CURLOPT_URL, x->url);
  SETOPT(CURLOPT_PRIVATE, (void *)x);
  SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
  SETOPT(CURLOPT_HEADERDATA, (void *)x);
  SETOPT(CURLOPT_WRITEDATA, (void *)x);
  if (x->fresh || warm) SETOPT(CURLOPT_FRESH_CONNECT, x->fresh ? 1L : 0L);
  /* a submit goes on a warm connection only when it has been idle a short
   * while: one the server closed meanwhile costs a submit_unknown (on_seek) */
  if (x->retry == KX_RETRY_SUBMIT || warm)
    SETOPT(CURLOPT_MAXAGE_CONN, x->retry == KX_RETRY_SUBMIT ? (long)KD_SUBMIT_MAX_IDLE : KX_LIBCURL_MAXAGE);

  if (x->path) {
    /* A large file may take long: a try ends when it stays too slow, and the
     * whole download when its deadline passes. Redirects: see kxfer_review. */
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, x->low_speed_limit);
    SETOPT(CURLOPT_LOW_SPEED_TIME, x->low_speed_time);
    if (x->deadline_at > 0) {
      double left = x->deadline_at - know();
      long ms = left > 0 ? (long)(left * 1000.0) + 1 : 1;
      SETOPT(CURLOPT_TIMEOUT_MS, ms);
    }
    SETOPT(CURLOPT_BUFFERSIZE, 512L * 1024L); /* fewer, larger writes */
    if (x->offset > 0) {
      /* our own Range header, not CURLOPT_RESUME_FROM: libcurl would fail any answer
       * without a Content-Range (a 503 too) instead of letting on_body decide */
      char h[64 + sizeof x->etag];
      snprintf(h, sizeof h, "Range: bytes=%lld-", (long long)x->offset);
      if (add_header(x, h) != 0) return -1;
      const char *v = if_range_value(x);
      if (v) {
        snprintf(h, sizeof h, "If-Range: %s", v);
        if (add_header(x, h) != 0) return -1;
      }
    }
  } else {
    SETOPT(CURLOPT_TIMEOUT_MS, x->timeout_ms);
    if (!x->is_api && add_header(x, "Accept: application/json") != 0) return -1;
  }
  /* an API request's headers: the client's lists, built once (net.c); any
   * other request's: its own */
  struct curl_slist *headers = NULL;
  if (x->is_api && !x->path)
    headers = x->method == KX_POST && x->req_body_len ? e->api_json_headers : e->api_headers;
  else if (add_header(x, "Expect:") != 0)
    return -1;

  if (x->method == KX_POST) {
    SETOPT(CURLOPT_POST, 1L);
    x->req_sent = 0; /* every try sends the body from its start */
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->req_body_len);
    SETOPT(CURLOPT_READDATA, (void *)x);
    SETOPT(CURLOPT_SEEKDATA, (void *)x);
    if (!headers && x->req_body_len && add_header(x, "Content-Type: application/json") != 0) return -1;
  } else if (x->method == KX_HEAD) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else if (warm) {
    SETOPT(CURLOPT_HTTPGET, 1L); /* the handle may have made a POST */
  }
  SETOPT(CURLOPT_HTTPHEADER, headers ? headers : x->headers);
  return 0;
}

int kxfer_begin(kxfer *x, knet *e, CURL *easy, int warm) {
  x->easy = easy ? easy : curl_easy_init();
  if (x->easy == NULL) return -1;
  if (warm && !warmable(x)) curl_easy_reset(x->easy); /* (the engine does not ask so) */
  warm = warm && easy != NULL && warmable(x);
  x->configured = 0;
  if ((!warm && configure_common(x, e) != 0) || configure_transfer(x, e, warm) != 0) {
    snprintf(x->errbuf, sizeof x->errbuf, "cannot configure the transfer (out of memory?)");
    return -1;
  }
  x->configured = 1; /* only a handle configured in full is kept configured (kxfer_take_easy) */
  return 0;
}

CURL *kxfer_take_easy(kxfer *x, int *warm) {
  CURL *easy = x->easy;
  x->easy = NULL;
  *warm = easy != NULL && warmable(x) && x->configured;
  x->configured = 0;
  if (*warm) {
    /* kept configured for the next API request; nothing of this transfer's stays pointed at */
    if (curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)NULL) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, (char *)NULL) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_HEADERDATA, (void *)NULL) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_WRITEDATA, (void *)NULL) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_READDATA, (void *)NULL) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SEEKDATA, (void *)NULL) != CURLE_OK) {
      curl_easy_reset(easy);
      *warm = 0;
    }
  } else if (easy) {
    curl_easy_reset(easy);
  }
  curl_slist_free_all(x->headers); /* after the reset: libcurl no longer points at it (an API request has none) */
  x->headers = NULL;
  return easy;
}

curl_off_t kxfer_length(const kxfer *x) {
  curl_off_t len = -1;
  if (x->easy == NULL) return x->length;
  if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len) != CURLE_OK) return -1;
  return len;
}

/* The scheme of a URL is https (case aside)? */
static int is_https(const char *url) {
  return strncasecmp(url, "https:", 6) == 0;
}

/* A URL for a message: without its query and fragment (a pre-signed query
 * says nothing to a reader), and cut short. */
static void url_for_message(char *out, size_t outlen, const char *url) {
  size_t n = url_identity_len(url);
  if (n > 200) n = 200;
  snprintf(out, outlen, "%.*s%s", (int)n, url, url[n] ? "..." : "");
}

int kxfer_review(kxfer *x, const knet *e, long status) {
  if (x->path == NULL) return 0;
  if (x->restart) { /* a range answer that did not match, seen by on_body */
    if (x->restarts < KX_MAX_RESTARTS) return KX_START_OVER;
    x->range_error = 1;
    return 0;
  }
  if (status == 416 && x->offset > 0) {
    curl_off_t first, last, total = -1;
    if (x->r_content_range[0] && parse_content_range(x->r_content_range, &first, &last, &total) == 1
        && total == x->offset && total == x->part_size && (x->total < 0 || total == x->total)
        && other_validators(x, 0) == NULL) {
      x->complete = 1; /* the .part already holds the whole file */
      return 0;
    }
    char cr[sizeof x->r_content_range]; /* the host's text: the token masked */
    snprintf(cr, sizeof cr, "%s", x->r_content_range[0] == '\1' ? "(too long)" : x->r_content_range);
    knet_mask(e, cr, sizeof cr);
    snprintf(x->problem, sizeof x->problem, "the file host answered 416 to a range request from byte %lld (Content-Range '%s')",
             (long long)x->offset, cr);
    x->restart = 1;
    if (x->restarts < KX_MAX_RESTARTS) return KX_START_OVER;
    x->range_error = 1;
    return 0;
  }
  if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
    char *loc = NULL;
    if (x->easy == NULL || curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || loc == NULL)
      return 0; /* no Location: an HTTP error like any other */
    char shown[256], why[256];
    url_for_message(shown, sizeof shown, loc);
    knet_mask(e, shown, sizeof shown); /* the host's Location: the token masked */
    int is_api;
    if (x->hops >= KX_MAX_REDIRECTS) {
      snprintf(x->problem, sizeof x->problem, "more than %d redirects (the last to %s)", KX_MAX_REDIRECTS, shown);
      x->redirect_error = 1;
      return 0;
    }
    if (is_https(x->url) && !is_https(loc)) {
      snprintf(x->problem, sizeof x->problem, "refusing the redirect to %s: a download over https never goes on over plain http", shown);
      x->redirect_error = 1;
      return 0;
    }
    if (knet_check_url(e, loc, &is_api, why, sizeof why) != 0) {
      knet_mask(e, why, sizeof why); /* it may quote the Location's host */
      snprintf(x->problem, sizeof x->problem, "refusing the redirect to %s: %s", shown, why);
      x->redirect_error = 1;
      return 0;
    }
    char *next = kx_strdup(loc);
    if (next == NULL) {
      x->oom = 1;
      return 0;
    }
    free(x->url);
    x->url = next;
    x->hops++;
    return KX_NEXT_HOP;
  }
  return 0;
}

static void finish_download(kxfer *x) {
  int ok = x->code == CURLE_OK && x->to_file && x->status >= 200 && x->status < 300;
  if (x->complete && x->code == CURLE_OK) ok = 1, x->to_file = 1;
  curl_off_t expected = x->length;
  if (ok && !x->complete && expected >= 0 && expected != x->bytes) {
    ok = 0;
    x->code = CURLE_PARTIAL_FILE;
  }
  if (x->code == CURLE_OK && x->status >= 200 && x->status < 300 && !x->status_checked && !x->complete) {
    x->empty = 1; /* a 2xx with no body: nothing to write, and a .part from before stays as it was */
    ok = 0;
  }
  if (ok && x->fd >= 0 && x->total >= 0 && x->part_size + (curl_off_t)x->wlen != x->total) {
    ok = 0;
    x->code = CURLE_PARTIAL_FILE;
  }
  close_part(x, 1); /* a kept .part holds verified bytes: on disk too */
  if (x->io_error) ok = 0;
  if (ok && x->part_size == 0) {
    x->empty = 1;
    ok = 0;
  }
  if (ok && rename(x->part, x->path) != 0) {
    ok = 0;
    set_io_error(x, x->path, errno);
  }
  if (ok) {
    remove_meta(x);
    fsync_dir(x);
    if (x->io_error) ok = 0; /* the file is there, but its name may not be on disk */
  }
  if (!ok) {
    /* The .part keeps what was verified, for a later run; it goes when it
     * holds nothing this transfer put there, when the file is too big, or
     * when the file host says the file is gone. */
    int gone = x->too_large || (x->code == CURLE_OK && (x->status == 404 || x->status == 410));
    if ((gone && (x->opened || x->resumed_from > 0)) || (x->opened && (x->part_size == 0 || !x->part_trusted))) {
      remove(x->part); /* nothing in it, or nothing a later run could trust (no validator, no sidecar) */
      remove_meta(x);
    }
    x->to_file = 0;
  }
  if (x->io_error && x->code == CURLE_OK) x->code = CURLE_WRITE_ERROR;
  release_lock(x); /* the download's files are as they stay */
}

void kxfer_finish(kxfer *x, CURLcode code) {
  x->code = code;
  x->state = KX_DONE;
  if (x->easy) {
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &x->total_time);
    curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &x->pretransfer);
    curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &x->http_version);
    x->length = kxfer_length(x);
    long refused = code != CURLE_OK ? knet_proxy_refusal(x->easy) : 0;
    if (refused) { /* say it was the proxy, not the service, that refused */
      char *ip = NULL;
      long port = 0;
      curl_easy_getinfo(x->easy, CURLINFO_PRIMARY_IP, &ip);
      curl_easy_getinfo(x->easy, CURLINFO_PRIMARY_PORT, &port);
      x->proxy_status = refused;
      snprintf(x->errbuf, sizeof x->errbuf, "the proxy %s%s%s:%ld refused to open a tunnel (it answered the CONNECT with HTTP %ld)",
               ip && strchr(ip, ':') ? "[" : "", ip && ip[0] ? ip : "?", ip && strchr(ip, ':') ? "]" : "", port, refused);
    }
  }
  if (x->path) {
    if (code == CURLE_OPERATION_TIMEDOUT && x->deadline_at > 0 && know() >= x->deadline_at - 0.05)
      x->deadline_hit = 1; /* this try was cut by the deadline, not by the low-speed rule */
    finish_download(x);
  }
}

void kxfer_rewind(kxfer *x) {
  kbuf_reset(&x->body);
  x->bytes = 0;
  x->status = 0;
  x->code = CURLE_OK;
  x->too_large = x->io_error = x->oom = 0;
  x->proxy_status = 0;
  x->to_file = x->status_checked = 0;
  x->errbuf[0] = '\0';
  x->retry_after[0] = x->content_type[0] = x->content_length[0] = '\0';
  x->length = -1;
  if (x->path) {
    close_part(x, 0);
    x->r_etag[0] = x->r_last_modified[0] = x->r_content_range[0] = x->r_date[0] = '\0';
    if (x->restart) { /* start over: forget the identity, the .part is truncated at the next first byte */
      x->restart = 0;
      x->restarts++;
      x->total = -1;
      x->etag[0] = x->last_modified[0] = '\0';
      x->date = 0;
      x->offset = 0;
    } else {
      /* go on from what the last tries wrote only when a validator guards it
       * (the sidecar on disk says so): else from 0, the .part truncated */
      x->offset = x->part_trusted && x->total >= 0 && if_range_value(x) != NULL ? x->part_size : 0;
    }
  }
}

void kxfer_free(kxfer *x) {
  if (x == NULL) return;
  if (x->path && x->fd >= 0) {
    flush_part(x); /* the verified bytes still in memory: into the .part before it is closed */
    close(x->fd);
    x->fd = -1;
    if (x->opened && x->part_size == 0) {
      remove(x->part);
      remove_meta(x);
    }
  }
  release_lock(x);
  if (x->easy) curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->headers);
  kbuf_free(&x->body);
  free(x->url);
  free(x->req_body);
  free(x->path);
  free(x->part);
  free(x->meta);
  free(x->meta_tmp);
  free(x->lock);
  free(x->dir);
  free(x->origin_url);
  free(x->wbuf);
  /* kept for the client's next transfer while its client is open (x->net
   * outlives x: a transfer holds its engine) */
  if (x->net && !x->net->closed && !x->net->no_spare && x->net->nspare < KNET_SPARES) {
    x->net->spare[x->net->nspare++] = x;
    KX_POISON(x, sizeof *x);
  } else {
    free(x);
  }
}

const char *kxfer_error_kind(const kxfer *x, int *sent) {
  *sent = 1;
  if (x->aborted) return "aborted";
  if (x->too_large) return "too_large";
  if (x->io_error) return "io";
  if (x->oom) return "memory";
  if (x->path) {
    if (x->deadline_hit) return "deadline";
    if (x->redirect_error) return "redirect";
    if (x->range_error) return "range";
    if (x->empty) return "empty";
    if (x->code == CURLE_OPERATION_TIMEDOUT && x->pretransfer > 0) return "slow";
  }
  if (x->code == CURLE_OK) return NULL;
  if (x->proxy_status || KL_IS_CURLE_PROXY(x->code) || x->code == CURLE_COULDNT_RESOLVE_PROXY) {
    *sent = 0; /* the request never went past the proxy */
    return "proxy";
  }
  switch (x->code) {
  case CURLE_COULDNT_RESOLVE_HOST:
    *sent = 0;
    return "resolve";
  case CURLE_COULDNT_CONNECT:
    *sent = 0;
    return "connect";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
    *sent = 0;
    return "tls";
  case CURLE_OPERATION_TIMEDOUT:
    if (x->pretransfer == 0) *sent = 0; /* timed out before the request could go out */
    return "timeout";
  case CURLE_PARTIAL_FILE:
    return "truncated";
  case CURLE_TOO_MANY_REDIRECTS:
  case CURLE_UNSUPPORTED_PROTOCOL:
    return "redirect";
  default:
    return "network";
  }
}

void kxfer_error_message(const kxfer *x, char *out, size_t outlen) {
  if (x->aborted) snprintf(out, outlen, "transfer aborted");
  else if (x->too_large && x->path) snprintf(out, outlen, "download larger than the %lld-byte cap", (long long)x->max_bytes);
  else if (x->too_large) snprintf(out, outlen, "answer larger than the %zu-byte cap", x->body.limit);
  else if (x->io_error) snprintf(out, outlen, "cannot write '%s': %s", x->io_path ? x->io_path : "?", strerror(x->io_errno));
  else if (x->oom) snprintf(out, outlen, "out of memory");
  else if (x->path && x->deadline_hit)
    snprintf(out, outlen, "the download did not finish before its deadline (%lld bytes kept in the .part)",
             (long long)x->part_size);
  else if (x->path && (x->redirect_error || x->range_error)) snprintf(out, outlen, "%s", x->problem);
  else if (x->path && x->empty) snprintf(out, outlen, "the file host sent an empty body (HTTP %ld)", x->status);
  else if (x->path && x->code == CURLE_OPERATION_TIMEDOUT && x->pretransfer > 0)
    snprintf(out, outlen, "the download was too slow: under %ld bytes/s for %ld s", x->low_speed_limit, x->low_speed_time);
  else if (x->code == CURLE_SEND_FAIL_REWIND && x->rewinds_refused)
    snprintf(out, outlen, "the connection broke before any answer came (a kept-alive connection the server had "
             "closed?); the submit was not sent again");
  else if (x->code == CURLE_PARTIAL_FILE) snprintf(out, outlen, "transfer ended after %lld bytes, before the announced length", (long long)x->bytes);
  else if (x->errbuf[0]) snprintf(out, outlen, "%s", x->errbuf);
  else snprintf(out, outlen, "%s", curl_easy_strerror(x->code));
}

#ifdef KLING_FUZZ
/* Test entry points for fuzz/answer_fuzz.c, compiled only with -DKLING_FUZZ:
 * an API transfer with no easy handle, fed header lines and body bytes
 * through the same callbacks libcurl calls, then finished as libcurl would
 * finish it (status code and timing taken from the caller). */
kxfer *kxfer_fuzz_new(size_t max_body) {
  kxfer *x = calloc(1, sizeof *x);
  if (x == NULL) return NULL;
  kbuf_init(&x->body, max_body);
  x->is_api = 1;
  x->method = KX_GET;
  x->retry = KX_RETRY_NONE;
  x->length = -1;
  x->state = KX_RUNNING;
  return x;
}

size_t kxfer_fuzz_header(kxfer *x, char *line, size_t n) { return on_header(line, 1, n, x); }

size_t kxfer_fuzz_body(kxfer *x, char *p, size_t n) { return on_body(p, 1, n, x); }

void kxfer_fuzz_finish(kxfer *x, CURLcode code, long status, curl_off_t pretransfer, double total_time) {
  x->status = status;
  x->pretransfer = pretransfer;
  x->total_time = total_time;
  x->attempts = 1;
  kxfer_finish(x, code);
}
#endif
