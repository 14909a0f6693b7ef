/*
 * event_poll.c - the event seam (event.h) on poll(2), for any POSIX system
 * (`make EVENT=poll`). The watched descriptors are kept in an array; there
 * is no single descriptor that stands for them (kev_fd is -1): a foreign
 * loop watches the list kev_fds gives (client:pollfds()).
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>

#include "event.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const kev_name = "poll";

struct kev {
  struct pollfd *fds;
  size_t n, cap;
};

kev *kev_new(char *err, size_t errlen) {
  kev *ev = calloc(1, sizeof *ev);
  if (ev == NULL) snprintf(err, errlen, "out of memory");
  return ev;
}

void kev_free(kev *ev) {
  if (ev == NULL) return;
  free(ev->fds);
  free(ev);
}

static short poll_events(int what) {
  return (short)(((what & KEV_IN) ? POLLIN : 0) | ((what & KEV_OUT) ? POLLOUT : 0));
}

int kev_watch(kev *ev, int fd, int what) {
  size_t i;
  for (i = 0; i < ev->n && ev->fds[i].fd != fd; i++) {}
  if (what == 0) {
    if (i < ev->n) ev->fds[i] = ev->fds[--ev->n];
    return 0;
  }
  if (i == ev->n) {
    if (ev->n == ev->cap) {
      size_t cap = ev->cap ? ev->cap * 2 : 16;
      struct pollfd *fds = realloc(ev->fds, cap * sizeof *fds);
      if (fds == NULL) {
        errno = ENOMEM;
        return -1;
      }
      ev->fds = fds;
      ev->cap = cap;
    }
    ev->n++;
    ev->fds[i].fd = fd;
  }
  ev->fds[i].events = poll_events(what);
  ev->fds[i].revents = 0;
  return 0;
}

int kev_wait(kev *ev, int ms, void (*ready)(void *ud, int fd, int what), void *ud) {
  if (ev->n == 0) {
    if (ms > 0) poll(NULL, 0, ms);
    return 0;
  }
  size_t n = ev->n;
  /* ready() may change the set (libcurl's socket callback): work on a copy */
  struct pollfd *fds = malloc(n * sizeof *fds);
  if (fds == NULL) {
    errno = ENOMEM;
    return -1;
  }
  memcpy(fds, ev->fds, n * sizeof *fds);
  int rc = poll(fds, (nfds_t)n, ms);
  if (rc < 0) {
    free(fds);
    return errno == EINTR ? 0 : -1;
  }
  int count = 0;
  for (size_t i = 0; i < n && rc > 0; i++) {
    short r = fds[i].revents;
    if (r == 0) continue;
    int what = 0;
    if (r & (POLLIN | POLLHUP)) what |= KEV_IN;
    if (r & POLLOUT) what |= KEV_OUT;
    if (r & (POLLERR | POLLNVAL)) what |= KEV_ERR;
    ready(ud, fds[i].fd, what);
    count++;
  }
  free(fds);
  return count;
}

int kev_fd(const kev *ev) {
  (void)ev;
  return -1;
}

int kev_fds(const kev *ev, int *fds, int *whats, int max) {
  for (size_t i = 0; i < ev->n && (int)i < max; i++) {
    fds[i] = ev->fds[i].fd;
    whats[i] = ((ev->fds[i].events & POLLIN) ? KEV_IN : 0) | ((ev->fds[i].events & POLLOUT) ? KEV_OUT : 0);
  }
  return (int)ev->n;
}
