/* SPDX-License-Identifier: MIT */
/*
 * attempt.h - running a non-blocking step of a queue operation until it
 * succeeds, fails for good, or its deadline passes (lib/attempt.c).
 */
#ifndef SHMQ_ATTEMPT_H
#define SHMQ_ATTEMPT_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "liveness.h"
#include "ring.h"
#include "shmq.h"

/* One non-blocking try of an operation. 0 done; -EAGAIN / -EINPROGRESS
 * keep waiting (stall says behind what); anything else is final. */
typedef int (*attempt_fn)(struct shmq *q, void *op, struct ring_stall *s);

/* Has any handle closed the queue? */
static inline bool shmq__closed(const struct shmq *q)
{
    return load_acquire(&q->hdr->closed.word) != 0;
}

/* Did a try leave nothing to wait for? */
static inline bool shmq__final(int rc)
{
    return rc != -EAGAIN && rc != -EINPROGRESS;
}

/* Make sure q is registered in this process (after fork). 0 or the
 * errors of registration. Keeps errno. */
int shmq__ensure(struct shmq *q);

/* After a first try of fn that was not final: try again until it is
 * done or final, waiting on event (the futex event its progress depends
 * on) for up to timeout_ns (SHMQ_NOWAIT: a few polls, SHMQ_FOREVER: no
 * limit). Keeps errno. fn's result, or -ETIMEDOUT / -EAGAIN. */
int shmq__wait_for(struct shmq *q, attempt_fn fn, void *op, uint64_t *event,
                   int64_t timeout_ns);

/* Run fn once (the fast path: no clock, no syscall), then wait as
 * shmq__wait_for does if it was not final. Registers a forked child's
 * handle first. */
static inline int shmq__run(struct shmq *q, attempt_fn fn, void *op,
                            uint64_t *event, int64_t timeout_ns)
{
    if (unlikely(!shmq__liveness_current(q))) {
        int rc = shmq__ensure(q);
        if (rc < 0)
            return rc;
    }
    struct ring_stall s = {0};
    int rc = fn(q, op, &s);
    return shmq__final(rc) ? rc : shmq__wait_for(q, fn, op, event, timeout_ns);
}

static inline bool shmq__bad_timeout(int64_t timeout_ns)
{
    return timeout_ns < 0 && timeout_ns != SHMQ_FOREVER;
}

#endif /* SHMQ_ATTEMPT_H */
