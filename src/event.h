/*
 * event.h - the seam between the engine and the kernel's event mechanism:
 * watch descriptors for reading and writing, wait for them with a timeout,
 * and one descriptor that is readable when any watched one is ready (what
 * eng:pollfd() hands to foreign event loops).
 *
 * One backend is compiled in, chosen by the Makefile and the rockspec per
 * platform: event_epoll.c (Linux), event_kqueue.c (macOS and the BSDs),
 * event_poll.c (any POSIX system; `make EVENT=poll`). Pure C.
 */
#ifndef KLING_EVENT_H
#define KLING_EVENT_H

typedef struct kev kev;

enum { KEV_IN = 1, KEV_OUT = 2, KEV_ERR = 4 };

/* The backend's name: "epoll", "kqueue" or "poll" (core.engine.event_backend). */
extern const char *const kev_name;

/* A new event set, or NULL with a reason in err (size errlen). */
kev *kev_new(char *err, size_t errlen);
void kev_free(kev *ev);

/* Watches fd for what (KEV_IN | KEV_OUT; 0 stops watching it). 0 or -1. */
int kev_watch(kev *ev, int fd, int what);

/* Waits at most ms milliseconds (0: only looks) for watched descriptors to be
 * ready, and calls ready(ud, fd, what) for each (what: KEV_IN, KEV_OUT,
 * KEV_ERR). Returns how many were ready, 0 on timeout or a signal, -1 on an
 * error (errno set). */
int kev_wait(kev *ev, int ms, void (*ready)(void *ud, int fd, int what), void *ud);

/* A descriptor that is readable when a watched one is ready (epoll, kqueue),
 * or -1 when the backend has none (poll): then kev_fds lists them. */
int kev_fd(const kev *ev);

/* The descriptors a foreign loop watches instead: fills fds[i] and whats[i]
 * (KEV_IN | KEV_OUT) for at most max of them; returns how many there are
 * (more than max when they do not fit). epoll, kqueue: kev_fd, for KEV_IN. */
int kev_fds(const kev *ev, int *fds, int *whats, int max);

#endif
