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

/* Run fn until it is done or final, waiting on event (the futex event
 * its progress depends on) for up to timeout_ns (SHMQ_NOWAIT: a few
 * polls, SHMQ_FOREVER: no limit). Registers a forked child's handle
 * first. Keeps errno. Returns fn's result, or -ETIMEDOUT / -EAGAIN. */
int shmq__run(struct shmq *q, attempt_fn fn, void *op, uint64_t *event,
              int64_t timeout_ns);

/* Did a first try leave nothing to wait for? */
static inline bool shmq__final(int rc)
{
    return rc != -EAGAIN && rc != -EINPROGRESS;
}

/* Make sure q is registered in this process (after fork). 0 or the
 * errors of registration. Keeps errno. */
int shmq__ensure(struct shmq *q);

static inline bool shmq__bad_timeout(int64_t timeout_ns)
{
    return timeout_ns < 0 && timeout_ns != SHMQ_FOREVER;
}

#endif /* SHMQ_ATTEMPT_H */
