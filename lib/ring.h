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
    uint32_t size;  /* the descriptor's size field (units, or packed) */
    uint32_t entry; /* a message of a packed record: its entry + 1 */
    uint32_t off;   /* its payload's offset in the record, in bytes */
    bool freed;     /* the take or free gave the record's room back */
    bool copied;  /* shmq__ring_take copied the payload and freed the record */
    bool late;    /* committed after consumers went past it (DESC_LATE) */
    bool reserve; /* a reservation: a short commit may give room back */
    struct shmq_desc *d; /* its descriptor, or NULL: look it up */
};

/* What a failed step waits behind, for the waiter's liveness checks:
 * the in-flight record's descriptor word as it was seen before anyone
 * asked whether its owner lives, so that recovery (a CAS on exactly that
 * word) can never hit a later record of a new holder of the same slot. */
struct ring_stall {
    bool has_owner; /* a record in flight blocks progress */
    uint64_t word;  /* its descriptor word */
    uint32_t pos;   /* a packed record's position, and the entry + 1 */
    uint32_t entry; /* its owner holds (the word names that owner) */
};

/* Largest payload a consumer copies before it takes the record, into a
 * bounce buffer on its stack (the caller's buffer is written only once
 * the record is ours). Larger ones are claimed first, so that consumers
 * racing for one record do not all copy it. Under ThreadSanitizer, which
 * would rightly see the copy of a record that another consumer freed and
 * a producer reused as a race (the CAS then fails and the copy is
 * dropped), every record is claimed first. */
#if defined(__SANITIZE_THREAD__)
#define RING_COPY_FIRST_MAX 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_COPY_FIRST_MAX 0
#endif
#endif
#ifndef RING_COPY_FIRST_MAX
#define RING_COPY_FIRST_MAX 512
#endif

/* Where a taken record's payload is. */
static inline unsigned char *ref_data(const struct shmq *q,
                                      const struct ring_ref *ref)
{
    return ring_addr(q, ref->pos) + ref->off;
}

/* The descriptor of a sequence number. Consecutive sequence numbers go
 * to consecutive cache lines (four descriptors a line), so a producer
 * claiming seq + 1 does not steal the line a consumer takes seq from.
 * desc_count is a power of two: shifts, no division. */
static inline struct shmq_desc *ring_desc(const struct shmq *q, uint32_t seq)
{
    uint32_t n = q->geo.desc_count, s = seq & (n - 1);
    if (n < 16)
        return &q->desc[s];
    unsigned shift = (unsigned)__builtin_ctz(n) - 2; /* log2(n / 4) */
    return &q->desc[((s & ((n >> 2) - 1)) << 2) + (s >> shift)];
}

/* A record's descriptor, remembered or looked up. */
static inline struct shmq_desc *ref_desc(const struct shmq *q,
                                         const struct ring_ref *ref)
{
    return ref->d ? ref->d : ring_desc(q, ref->seq);
}

/* Claim room for a payload of len bytes (len <= max_message).
 * 0, -EAGAIN (full: by count or bytes; stall names what holds the room),
 * -EBADMSG (corrupt). */
int shmq__ring_claim(struct shmq *q, uint64_t len, struct ring_ref *ref,
                     struct ring_stall *stall);
/* Claim a packed record (lib/packed.h) of span messages and bytes in
 * all. As shmq__ring_claim; -EMSGSIZE if it cannot be one record. */
int shmq__ring_claim_packed(struct shmq *q, uint32_t span, uint64_t bytes,
                            struct ring_ref *ref, struct ring_stall *stall);
/* The same for a reservation, whose commit may be shorter: the cursor
 * hints it leaves point at its start, not past it (its size may change). */
int shmq__ring_reserve(struct shmq *q, uint64_t len, struct ring_ref *ref,
                       struct ring_stall *stall);

/* Publish a claimed record whose first len bytes are written (len may be
 * less than the claim). A reservation whose record is still the last
 * claimed one gives back the units len does not need (ref->units is
 * updated). 0 or -EBADMSG. */
int shmq__ring_commit(struct shmq *q, struct ring_ref *ref, uint64_t len);

/* Take back a committed record that no consumer took yet (the queue was
 * closed meanwhile). 0 withdrawn, 1 a consumer has it already. */
int shmq__ring_withdraw(struct shmq *q, struct ring_ref *ref);

/* Withdraw a claimed, uncommitted record (it will be skipped). 0 or
 * -EBADMSG. */
int shmq__ring_abort(struct shmq *q, const struct ring_ref *ref);

/* Take the oldest committed record that can be taken now, if its
 * payload fits cap. With buf, a small payload is copied into it and the
 * record freed at once (ref->copied); otherwise the caller reads from
 * ref->pos and calls shmq__ring_free. buf is written only on success.
 * 0 (*len set), -EAGAIN (nothing committed), -EINPROGRESS (nothing
 * committed, but a record is being written: stall names the writer),
 * -ENOBUFS (*len is the size needed, nothing taken), -EBADMSG. */
int shmq__ring_take(struct shmq *q, void *buf, size_t cap, uint64_t *len,
                    struct ring_ref *ref, struct ring_stall *stall);

/* End a taken record (or a taken message of a packed record): its room
 * comes back (ref->freed says whether the whole record's did). 0 or
 * -EBADMSG. */
int shmq__ring_free(struct shmq *q, struct ring_ref *ref);

/* Move release past freed records; true if it moved. */
bool shmq__ring_advance_release(struct shmq *q);

/* Fill stall with the record that keeps release where it is, if it is
 * in flight (being written, or being read when readers is true). true
 * if it found release movable after all (try again). */
bool shmq__ring_release_stall(struct shmq *q, struct ring_stall *stall,
                              bool readers);

/* Recovery, once shmq__liveness_dead() said the stall's owner is gone: abort
 * its record (a writer's) or free it (a reader's). true if this call
 * changed it. */
bool shmq__ring_recover(struct shmq *q, const struct ring_stall *stall);
/* Recover every record a dead holder of `slot` left in flight. */
void shmq__ring_recover_owner(struct shmq *q, unsigned slot);

/* End the records this handle still holds (open reservations: aborted;
 * open borrows: freed), at release of the handle. */
void shmq__ring_end_owned(struct shmq *q);

/* Snapshots for qsize/full and join accounting. */
uint32_t shmq__ring_count(struct shmq *q); /* committed, not taken */
bool shmq__ring_full(struct shmq *q);      /* a 0-byte claim would fail */
/* Would `records` records of `units` storage units in all fit now? */
bool shmq__ring_has_room(struct shmq *q, uint32_t records, uint64_t units);
/* Records ever committed or aborted (the first unclaimed sequence, less
 * the records being written): join accounting. O(records in flight). */
uint32_t shmq__ring_committed(struct shmq *q);

#endif /* SHMQ_RING_H */
