/*
 * poller.h - the polling engine: every watched job has its own next-poll
 * time in a heap; due jobs get a status request on the client's engine, an
 * ended job gets its result fetched once, transient failures are retried
 * with backoff, and what changed is queued for the Lua layer to read.
 *
 * The schedule adapts: a first poll soon after submit, intervals that grow
 * (with jitter) while nothing moves, capped at `near` once a job may end at
 * any moment; no polls before the shortest run time seen so far; and tighter
 * ones when the queue moves.
 */
#ifndef KLING_POLLER_H
#define KLING_POLLER_H

#include <lua.h>
#include <lauxlib.h>

#include "engine.h"

typedef struct kpoll_opts {
  double initial; /* first poll after a job is watched */
  double min;     /* shortest interval */
  double max;     /* longest interval */
  double near;    /* interval once the job may end at any moment */
  double factor;  /* growth per poll without news */
  double jitter;  /* +- fraction */
} kpoll_opts;

struct kwatch;

typedef struct kpoller {
  struct kwatch **slots; /* handle - 1 -> watch (NULL when free) */
  int nslots, capslots;
  int *free_handles;
  int nfree, capfree;
  struct kwatch **heap;  /* by next poll time */
  int nheap, capheap;
  int *events;           /* handles with news for the Lua layer */
  int nevents, capevents;
  int inflight, max_inflight;
  kpoll_opts o;
  double run_min;        /* shortest run (in_progress -> ended) seen; < 0 unknown */
  int run_n;
  double queue_rate;     /* queue positions per second, smoothed; < 0 unknown */
  unsigned long long rng;
  int decode_ref;        /* registry ref of a lua-cjson decode function */
  long long polls, fetches, retries;
} kpoller;

void kpoller_init(lua_State *L, kpoller *p, int max_inflight);
void kpoller_close(lua_State *L, kpoller *p, kengine *e);

/* After an engine step: takes in finished polls, starts due ones, sets the
 * engine's wake_at. Returns the number of new events; *owned counts the
 * finished transfers that were the poller's. */
int kpoller_run(lua_State *L, kpoller *p, kengine *e, int *owned);

/* The engine methods the poller adds (watch, unwatch, updates, ...). */
extern const luaL_Reg kpoller_methods[];

#endif
