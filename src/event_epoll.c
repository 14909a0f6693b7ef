/*
 * event_epoll.c - the event seam (event.h) on Linux's epoll.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>

#include "event.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 256

const char *const kev_name = "epoll";

struct kev {
  int epfd;
};

kev *kev_new(char *err, size_t errlen) {
  kev *ev = malloc(sizeof *ev);
  if (ev == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ev->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (ev->epfd < 0) {
    snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
    free(ev);
    return NULL;
  }
  return ev;
}

void kev_free(kev *ev) {
  if (ev == NULL) return;
  close(ev->epfd);
  free(ev);
}

int kev_watch(kev *ev, int fd, int what) {
  if (what == 0) return epoll_ctl(ev->epfd, EPOLL_CTL_DEL, fd, NULL) == 0 || errno == ENOENT ? 0 : -1;
  struct epoll_event e;
  memset(&e, 0, sizeof e);
  e.data.fd = fd;
  e.events = ((what & KEV_IN) ? EPOLLIN : 0u) | ((what & KEV_OUT) ? EPOLLOUT : 0u);
  if (epoll_ctl(ev->epfd, EPOLL_CTL_MOD, fd, &e) == 0) return 0;
  if (errno != ENOENT) return -1;
  return epoll_ctl(ev->epfd, EPOLL_CTL_ADD, fd, &e) == 0 ? 0 : -1;
}

int kev_wait(kev *ev, int ms, void (*ready)(void *ud, int fd, int what), void *ud) {
  struct epoll_event evs[MAX_EVENTS];
  int n = epoll_wait(ev->epfd, evs, MAX_EVENTS, ms);
  if (n < 0) return errno == EINTR ? 0 : -1;
  for (int i = 0; i < n; i++) {
    int what = 0;
    if (evs[i].events & (EPOLLIN | EPOLLHUP)) what |= KEV_IN;
    if (evs[i].events & EPOLLOUT) what |= KEV_OUT;
    if (evs[i].events & EPOLLERR) what |= KEV_ERR;
    ready(ud, evs[i].data.fd, what);
  }
  return n;
}

int kev_fd(const kev *ev) {
  return ev->epfd;
}

int kev_fds(const kev *ev, int *fds, int *whats, int max) {
  if (max > 0) {
    fds[0] = ev->epfd;
    whats[0] = KEV_IN;
  }
  return 1;
}
