/*
 * journal.c - durable, shared appends and compaction of a file of lines
 * (see journal.h).
 *
 * An appender that took the lock on a file that compaction has since
 * replaced notices (the inode behind the path changed) and appends to the
 * new file instead.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* errno of a journal that is not a regular file (a FIFO, a device, a socket) */
#define ENOTREGULAR (-1)

/* "WHAT 'PATH': REASON" into msg; returns the errno to report. */
static int fail(const char *what, const char *path, int err, char *msg, size_t msglen) {
  if (err == ENOTREGULAR) {
    snprintf(msg, msglen, "%s '%s': not a regular file (a FIFO, a device or a socket is refused)", what, path);
    return EINVAL;
  }
  snprintf(msg, msglen, "%s '%s': %s", what, path, strerror(err));
  return err;
}

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

int kjournal_open(const char *path, int flags, int how, int *errnum, char *msg, size_t msglen) {
  int fd = open_locked(path, flags, how);
  if (fd < 0) *errnum = fail("cannot open", path, errno, msg, msglen);
  return fd;
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

int kjournal_append(const char *path, const char *line, size_t n, char *msg, size_t msglen) {
  int fd = open_locked(path, O_RDWR | O_APPEND | O_CREAT, LOCK_EX);
  if (fd < 0) return fail("cannot open", path, errno, msg, msglen);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int saved = errno;
    close(fd);
    return fail("cannot open", path, saved, msg, msglen);
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
      return fail("cannot read", path, saved, msg, msglen);
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
      snprintf(msg, msglen, "cannot write '%s': %s (and the partial line could not be taken back: %s)", path,
               strerror(saved), strerror(why));
      return saved;
    }
    return fail("cannot write", path, saved, msg, msglen);
  }
  close(fd); /* releases the lock */
  return 0;
}

int kjournal_rewind(int fd, const char *path, char *msg, size_t msglen) {
  struct stat st;
  if (fstat(fd, &st) != 0) return fail("cannot read", path, errno, msg, msglen);
  if (S_ISDIR(st.st_mode)) return fail("cannot read", path, EISDIR, msg, msglen);
  if (!S_ISREG(st.st_mode)) {
    snprintf(msg, msglen, "cannot read '%s': not a regular file", path);
    return EINVAL;
  }
  if (lseek(fd, 0, SEEK_SET) < 0) return fail("cannot read", path, errno, msg, msglen);
  return 0;
}

long kjournal_read_some(int fd, char *buf, size_t n) {
  for (;;) {
    ssize_t r = read(fd, buf, n);
    if (r >= 0 || errno != EINTR) return (long)r;
  }
}

int kjournal_failure(const char *what, const char *path, int err, char *msg, size_t msglen) {
  return fail(what, path, err, msg, msglen);
}

int kjournal_replace(const char *path, const char *text, size_t n, char *msg, size_t msglen) {
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 16);
  if (tmp == NULL) return fail("cannot rewrite", path, ENOMEM, msg, msglen);
  snprintf(tmp, pl + 16, "%s.compact", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int ok = fd >= 0 && write_all(fd, text, n) == 0 && fsync(fd) == 0;
  int saved = errno;
  if (fd >= 0) close(fd);
  if (ok && rename(tmp, path) != 0) {
    ok = 0;
    saved = errno;
  }
  if (!ok) unlink(tmp);
  free(tmp);
  return ok ? 0 : fail("cannot rewrite", path, saved, msg, msglen);
}

int kjournal_ignore_sigxfsz(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGXFSZ, &sa, NULL) == 0 ? 0 : errno;
}
