/*
 * defaults.h - every default and limit of kling, in one place.
 *
 * The C core reads them from here; the Lua layer reads the same values from
 * kling.core.DEFAULTS and kling.core.LIMITS (built from this file in
 * core.c). Nothing else writes a default down: a value is passed explicitly
 * from the caller (kling.new's options, or these defaults filled in by the
 * binding) to the engine and the poller. README.md documents the ones a user
 * sets (timeouts, retries, poll, max_connections, downloads).
 *
 * Units: seconds (s), bytes (B), counts.
 */
#ifndef KLING_DEFAULTS_H
#define KLING_DEFAULTS_H

/* ---- defaults (kling.core.DEFAULTS) ------------------------------------ */

/* A client: kling.new{ timeout =, connect_timeout =, max_connections =,
 * max_body = } */
#define KD_TIMEOUT 30.0            /* s: one API request, start to end */
/* A submit's answer: kling.new{ submit_timeout = }. RunComfy's own clients
 * wait 60-120 s for it (90 s in its ComfyUI nodes); a shorter limit turns a
 * slow but successful (billed) submit into one of unknown outcome. */
#define KD_SUBMIT_TIMEOUT 90.0     /* s */
#define KD_CONNECT_TIMEOUT 10.0    /* s: one connection */
#define KD_MAX_CONNECTIONS 8       /* connections at once, per client */
#define KD_MAX_BODY (8.0 * 1024 * 1024) /* B: an answer kept in memory */
#define KD_MAX_RPS 0.0             /* API requests per second; 0: no cap */

/* API requests in flight at once (running, not counting those queued), and
 * status or result polls in flight at once: this many per connection. On
 * HTTP/1.1 the engine lets at most one per connection into libcurl (the
 * rest wait in its queue), this many once the API answered over HTTP/2. */
#define KD_ACTIVE_PER_CONNECTION 4

/* A submit goes on a kept-alive connection idle at most this long, else on a
 * new one (CURLOPT_MAXAGE_CONN): servers and load balancers close idle
 * connections after 60 s or more, and a submit sent on one they closed ends
 * as submit_unknown (it is never sent twice: src/http.c, on_seek). */
#define KD_SUBMIT_MAX_IDLE 20      /* s */

/* Retries of a request that failed on the way or got a retryable answer:
 * kling.new{ retries = { max =, base =, cap =, retry_after_cap = } }. The
 * delay before try n+1 is uniform in [0, min(cap, base * 2^(n-1))] (full
 * jitter), and at least what Retry-After asks; an answer that asks for more
 * than retry_after_cap ends the call. */
#define KD_RETRIES_MAX 4           /* tries after the first */
#define KD_RETRY_BASE 0.5          /* s */
#define KD_RETRY_CAP 30.0          /* s */
#define KD_RETRY_AFTER_CAP 120.0   /* s */

/* The polling schedule of waits: kling.new{ poll = { ... } } (README, "Many
 * jobs"). The first poll `initial` after a job is watched; intervals grow by
 * `factor` (+- `jitter`) while nothing changes, up to `near` once a job may
 * end at any moment; never below `min` nor above `max`. near = 7 is the
 * documented value (README): one poll at most every 7 s near the end of a
 * 90-200 s clip costs little latency and few requests (bench/polling.lua). */
#define KD_POLL_INITIAL 1.0        /* s */
#define KD_POLL_MIN 0.5            /* s */
#define KD_POLL_MAX 30.0           /* s */
#define KD_POLL_NEAR 7.0           /* s */
#define KD_POLL_FACTOR 1.5
#define KD_POLL_JITTER 0.1         /* +- fraction */
/* A poll may go out this early to share a wake-up with one that is due: a
 * fifth of its interval, at most this many seconds. */
#define KD_POLL_COALESCE 1.0       /* s */

/* job:wait, kling.wait_all, kling.wait_any: { timeout = } */
#define KD_WAIT_TIMEOUT 1800.0     /* s */
/* job:cancel{ timeout = }: how long a cancel the service accepted but has not
 * made final ("cancellation_requested") is followed until the status says
 * cancelled. */
#define KD_CANCEL_WAIT 60.0        /* s */
/* The model catalog: a schema cached on disk is used this long without
 * asking the catalog again (kling models --refresh asks at once). */
#define KD_CATALOG_MAX_AGE 86400.0 /* s: 24 h */

/* Downloads: a try ends when it stays under min_rate B/s for stall_timeout
 * seconds (default: the client's timeout). 1 KiB/s is far below any working
 * file host and far above one that trickles bytes to keep a connection up. */
#define KD_DOWNLOAD_MIN_RATE 1024.0 /* B/s */

/* ---- limits (kling.core.LIMITS) ---------------------------------------- */

/* Local media files sent as data: URIs (kling.file; observed: RunComfy's own
 * ComfyUI nodes send them, within these sizes of the file itself), and the
 * whole request body (observed). */
#define KL_MEDIA_IMAGE_MAX (6L * 1024 * 1024)   /* B */
#define KL_MEDIA_VIDEO_MAX (32L * 1024 * 1024)  /* B */
#define KL_MEDIA_AUDIO_MAX (16L * 1024 * 1024)  /* B */
#define KL_BODY_MAX (64L * 1024 * 1024)         /* B: a request body */
#define KL_SECONDS_MAX 1e7         /* s: any timeout, stall_timeout, deadline (about 115 days) */
#define KL_RATE_MAX 1e12           /* B/s: a download's min_rate */
#define KL_BYTES_MAX 9e18          /* B: a download's max_bytes */
#define KL_MAX_BODY_MIN 1024.0     /* B: the smallest max_body */
#define KL_MAX_BODY_MAX 1e12       /* B */
#define KL_MAX_CONNECTIONS 65536
#define KL_MAX_RPS 1e6
#define KL_RETRIES_MAX 100
#define KL_POLL_VALUE_MAX 1e6      /* s (or a factor): any poll setting */

#define KL_JSON_MAX_DEPTH 4096     /* nesting the writer writes and answers are decoded to */
#define KL_TAG_MAX 256             /* B: client:submit's opts.tag */
#define KL_ESCAPE_MAX 1024         /* B: of a server's string kept in an error (then "...") */

#define KL_MAX_REDIRECTS 5         /* a download's hops */
#define KL_MAX_RESTARTS 2          /* a download starting over after range answers that do not match */
#define KL_ERROR_BODY_CAP 65536    /* B: a file host's error answer, kept in memory */
#define KL_WRITE_BUFFER (256u << 10) /* B: gathered before one write(2) to a .part (bench/download.lua) */
#define KL_META_MAX 4096           /* B: a .part's sidecar */
#define KL_EASY_POOL 64            /* reset libcurl handles kept for reuse, per client */
#define KL_WAIT_FDS 64             /* descriptors core.wait_fds keeps on the C stack */
#define KL_WAIT_FDS_MAX 65536      /* descriptors core.wait_fds waits on at once */

#endif
