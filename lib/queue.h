/* SPDX-License-Identifier: MIT */
/*
 * queue.h - the steps of put and get that the serialization layer
 * (lib/batch.c, lib/zerocopy.c) shares with lib/queue.c.
 */
#ifndef SHMQ_QUEUE_H
#define SHMQ_QUEUE_H

#include <sys/uio.h>

#include "ring.h"

/* One message from several pieces: put and putv. */
struct shmq__putv_op {
    const struct iovec *iov;
    int iovcnt;
    uint64_t len; /* their total */
};

/* The attempt of put and putv (attempt_fn). */
int shmq__putv_attempt(struct shmq *q, void *arg, struct ring_stall *s);

/* After a commit: withdraw the record if the queue was closed before it
 * (a consumer may have concluded it was drained). 0 (the message stays
 * or was taken already), -EPIPE (withdrawn). Signals consumers. */
int shmq__put_settle(struct shmq *q, struct ring_ref *ref);

/* shmq__ring_take with the close rule: -EPIPE once the queue is closed and
 * nothing committed is left. */
int shmq__take(struct shmq *q, void *buf, size_t cap, uint64_t *len,
               struct ring_ref *ref, struct ring_stall *s);

/* After a take or free: if it gave a record's room back (ref->freed),
 * move release now and then, and wake a producer waiting for room. */
void shmq__freed(struct shmq *q, const struct ring_ref *ref);

#endif /* SHMQ_QUEUE_H */
