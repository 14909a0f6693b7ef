/*
 * event.c - the event seam's backend for builds that compile a fixed list of
 * files (the rockspec): the one of this platform, as the Makefile's EVENT
 * picks it. -DKLING_EVENT_POLL forces poll(2) anywhere.
 */
#if defined(KLING_EVENT_POLL)
#include "event_poll.c"
#elif defined(__linux__)
#include "event_epoll.c"
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || \
  defined(__DragonFly__)
#include "event_kqueue.c"
#else
#include "event_poll.c"
#endif
