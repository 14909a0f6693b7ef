/*
 * journal.h - durable, shared appends to a file of lines, and its
 * compaction: the machinery of the job journal (lua/kling/journal.lua) and
 * of every other append-only JSON-lines file kling keeps (the batch state of
 * `kling batch`). Pure C; lua_journal.c binds it as kling.core.journal.
 *
 * Every function refuses anything but a regular file (a directory, a FIFO,
 * a device, a socket) before taking a lock, and never blocks on the open (a
 * FIFO with no writer would wait forever). Failures come back as an errno
 * and a message naming the path and the system's reason ("cannot write
 * '/x/jobs.jsonl': No space left on device").
 */
#ifndef KLING_JOURNAL_H
#define KLING_JOURNAL_H

#include <stddef.h>

/* Appends line (n > 0 bytes, ending with "\n") to path under an exclusive
 * flock and fsyncs it. An append that fails part-way (a full disk, a
 * file-size limit, a failed fsync) truncates the file back to its size
 * before the append, under the lock: the file is left as it was. When the
 * file does not end with "\n" (a writer killed mid-line), the line starts on
 * a fresh one. Returns 0, or an errno with a message in msg. */
int kjournal_append(const char *path, const char *line, size_t n, char *msg, size_t msglen);

/* Opens path (flags: O_RDONLY, or O_RDWR | O_CREAT) and takes the lock
 * (LOCK_SH or LOCK_EX) on the file the path names now (compaction may
 * replace it meanwhile). Returns the descriptor, or -1 with an errno in
 * *errnum and a message in msg ("cannot open 'PATH': ..."). */
int kjournal_open(const char *path, int flags, int how, int *errnum, char *msg, size_t msglen);

/* Readies the file behind fd (at path) to be read whole: a regular file,
 * from its start. Returns 0, or an errno with msg. */
int kjournal_rewind(int fd, const char *path, char *msg, size_t msglen);
/* Reads up to n bytes into buf: the count, 0 at the end, -1 with errno (a
 * message: kjournal_failure). */
long kjournal_read_some(int fd, char *buf, size_t n);
/* "WHAT 'PATH': REASON" into msg; returns the errno to report. */
int kjournal_failure(const char *what, const char *path, int err, char *msg, size_t msglen);

/* Replaces the file at path with text (a temporary, fsync, rename), while
 * the caller holds its lock. Returns 0, or an errno with msg. */
int kjournal_replace(const char *path, const char *text, size_t n, char *msg, size_t msglen);

/* Ignores SIGXFSZ in this process, so that a write past a file-size limit
 * fails with EFBIG (kind io) instead of killing it. 0, or an errno. */
int kjournal_ignore_sigxfsz(void);

#endif
