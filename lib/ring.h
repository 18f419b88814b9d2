/* SPDX-License-Identifier: MIT */
/*
 * ring.h - the bounded MPMC ring of variable-size records.
 *
 * Non-blocking steps only; waiting is queue.c's business. A record goes
 * through claim (producer) -> commit -> take (consumer) -> free, each one
 * CAS on its descriptor word. docs/internals.md has the algorithm and the
 * argument for its correctness.
 */
#ifndef SHMQ_RING_H
#define SHMQ_RING_H

#include <stdbool.h>
#include <stddef.h>

#include "internal.h"

/* A record this process claimed or took. */
struct ring_ref {
    uint32_t seq;
    uint32_t pos;
    uint32_t units;
    bool copied; /* ring_take copied the payload and freed the record */
};

/* What a failed step waits behind, for the waiter's liveness checks:
 * the in-flight record's descriptor word as it was seen before anyone
 * asked whether its owner lives, so that recovery (a CAS on exactly that
 * word) can never hit a later record of a new holder of the same slot. */
struct ring_stall {
    bool has_owner; /* a record in flight blocks progress */
    uint64_t word;  /* its descriptor word */
};

/* The descriptor of a sequence number. */
struct shmq_desc *ring_desc(const struct shmq *q, uint32_t seq);

/* Claim room for a payload of len bytes (len <= max_message).
 * 0, -EAGAIN (full: by count or bytes), -EBADMSG (corrupt). */
int ring_claim(struct shmq *q, uint64_t len, struct ring_ref *ref,
               struct ring_stall *stall);

/* Publish a claimed record whose bytes are written. 0 or -EBADMSG. */
int ring_commit(struct shmq *q, const struct ring_ref *ref, uint64_t len);

/* Withdraw a claimed record (it will be skipped). 0 or -EBADMSG. */
int ring_abort(struct shmq *q, const struct ring_ref *ref);

/* Take the oldest committed record if its payload fits cap. With buf,
 * a small payload is copied into it and the record freed at once
 * (ref->copied); otherwise the caller copies from ref->pos and calls
 * ring_free. 0 (*len set), -EAGAIN (empty), -EINPROGRESS (the oldest
 * record is still being written: stall names the writer), -ENOBUFS (*len
 * is the size needed, nothing taken), -EBADMSG. */
int ring_take(struct shmq *q, void *buf, size_t cap, uint64_t *len,
              struct ring_ref *ref, struct ring_stall *stall);

/* Give a taken record's room back. 0 or -EBADMSG. */
int ring_free(struct shmq *q, const struct ring_ref *ref);

/* Move release past freed records; true if it moved. */
bool ring_advance_release(struct shmq *q);

/* Recovery, once liveness_dead() said the stall's owner is gone: abort
 * its record (a writer's) or free it (a reader's). true if this call
 * changed it. */
bool ring_recover(struct shmq *q, const struct ring_stall *stall);
/* Recover every record a dead holder of `slot` left in flight. */
void ring_recover_owner(struct shmq *q, unsigned slot);

/* Fill stall if the record at the head is being written. */
void ring_head_writer(const struct shmq *q, struct ring_stall *stall);

/* Snapshots for qsize/full and join accounting. */
uint32_t ring_count(struct shmq *q);
bool ring_full(const struct shmq *q);
uint32_t ring_claimed(const struct shmq *q); /* tail sequence number */

#endif /* SHMQ_RING_H */
