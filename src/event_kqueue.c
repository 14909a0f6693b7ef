/*
 * event_kqueue.c - the event seam (event.h) on kqueue(2), for macOS and the
 * BSDs (written from their kqueue(2) manual pages). One kqueue holds a read
 * and a write filter per watched descriptor; the kqueue's own descriptor is
 * readable when one of them is ready (kev_fd, client:pollfd()).
 *
 * Not run on Linux: `make check-kqueue` compiles it against
 * spec/kqueue_stub/sys/event.h, the declarations of the manual page.
 */
#include <stddef.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>

#include "event.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_EVENTS 256

const char *const kev_name = "kqueue";

struct kev {
  int kq;
};

kev *kev_new(char *err, size_t errlen) {
  kev *ev = malloc(sizeof *ev);
  if (ev == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ev->kq = kqueue();
  if (ev->kq < 0) {
    snprintf(err, errlen, "kqueue: %s", strerror(errno));
    free(ev);
    return NULL;
  }
  (void)fcntl(ev->kq, F_SETFD, FD_CLOEXEC);
  return ev;
}

void kev_free(kev *ev) {
  if (ev == NULL) return;
  close(ev->kq);
  free(ev);
}

/* Adds or deletes one filter; a filter that was not there is no error. */
static int change(kev *ev, int fd, short filter, int on) {
  struct kevent ch;
  EV_SET(&ch, (uintptr_t)fd, filter, on ? EV_ADD : EV_DELETE, 0, 0, NULL);
  if (kevent(ev->kq, &ch, 1, NULL, 0, NULL) == 0) return 0;
  return (!on && (errno == ENOENT || errno == EBADF)) ? 0 : -1;
}

int kev_watch(kev *ev, int fd, int what) {
  int a = change(ev, fd, EVFILT_READ, (what & KEV_IN) != 0);
  int b = change(ev, fd, EVFILT_WRITE, (what & KEV_OUT) != 0);
  return a == 0 && b == 0 ? 0 : -1;
}

int kev_wait(kev *ev, int ms, void (*ready)(void *ud, int fd, int what), void *ud) {
  struct kevent evs[MAX_EVENTS];
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  int n = kevent(ev->kq, NULL, 0, evs, MAX_EVENTS, &ts);
  if (n < 0) return errno == EINTR ? 0 : -1;
  for (int i = 0; i < n; i++) {
    int what = 0;
    if (evs[i].flags & EV_ERROR) what |= KEV_ERR;
    else if (evs[i].filter == EVFILT_READ) what |= KEV_IN;
    else if (evs[i].filter == EVFILT_WRITE) what |= KEV_OUT;
    if (evs[i].flags & EV_EOF) what |= KEV_IN;
    ready(ud, (int)evs[i].ident, what);
  }
  return n;
}

int kev_fd(const kev *ev) {
  return ev->kq;
}

int kev_fds(const kev *ev, int *fds, int *whats, int max) {
  if (max > 0) {
    fds[0] = ev->kq;
    whats[0] = KEV_IN;
  }
  return 1;
}
