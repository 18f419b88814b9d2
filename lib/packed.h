/* SPDX-License-Identifier: MIT */
/*
 * packed.h - several messages in one record (put_many).
 *
 * A packed record covers one sequence number per message (its descriptor
 * says how many: desc_span), so maxsize and qsize count messages, and it
 * is claimed and committed once. Its bytes:
 *
 *   struct packed_entry entry[span]      16 bytes each
 *   payloads                             each at an 8-byte aligned offset
 *
 * Each message has its own state, in its entry's state word, which only
 * consumers change once the record is committed:
 *
 *   AVAIL --copy, then CAS--> DONE              (get, get_many: <= 512 B)
 *   AVAIL --CAS--> TAKEN(c) --CAS--> DONE       (borrows, larger copies)
 *   AVAIL --CAS--> WITHDRAWN                    (closed before put_many
 *                                                returned: entry 0 first)
 *   TAKEN(c dead) --recoverer--> DONE           (lost with c)
 *
 * Consumers take the first AVAIL entry, so a batch is taken in order; an
 * entry 0 that is WITHDRAWN withdraws the whole record. The descriptor
 * stays COMMITTED (or LATE) until every entry is DONE or WITHDRAWN; then
 * whoever finishes last frees the record (or a recoverer, at release).
 *
 * The state word holds the record's sequence number and a tag, so a
 * consumer whose view is stale (the record freed and its room reused)
 * cannot match it, short of a payload holding exactly that 64-bit value
 * at that place. docs/internals.md has the argument.
 */
#ifndef SHMQ_PACKED_H
#define SHMQ_PACKED_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include "ring.h"

/* Largest message put_many packs, and most messages in one record. */
#define PACKED_MSG_MAX  512u
#define PACKED_SPAN_MAX DESC_PACKED_SPAN

struct packed_entry {
    uint64_t state; /* atomic: seq:32 | tag:8 | state:3 | slot:10 */
    uint32_t off;   /* payload offset from the record's start */
    uint32_t len;   /* payload bytes */
};
_Static_assert(sizeof(struct packed_entry) == 16, "entry is 16 bytes");

/* Write the entries and payloads of a claimed record (before commit). */
void shmq__packed_write(const struct shmq *q, const struct ring_ref *ref,
                        const struct iovec *msgs, size_t k);

/* Does the committed packed record at `at` (word w) still hold a message
 * to take? 1 yes, 0 no, -1 it changed (walk again), -EBADMSG. */
int shmq__packed_avail(struct shmq *q, uint32_t seq, uint32_t pos, uint64_t w);

/* Messages still to take in it (for qsize); 0 if it changed. */
uint32_t shmq__packed_count(struct shmq *q, uint32_t seq, uint32_t pos,
                            uint64_t w);

/* Take the first message of the committed packed record (word w) into
 * ref: copied into buf when it is small (ref->copied), else taken. As
 * take_record: 0, 1 (walk again), -ENOBUFS, -EBADMSG. */
int shmq__packed_take(struct shmq *q, uint32_t seq, uint32_t pos, uint64_t w,
                      void *buf, size_t cap, uint64_t *len,
                      struct ring_ref *ref);

/* After taking message ref->entry - 1 of a packed record (get_many):
 * take the next ones while they are there, up to max, each copied to
 * the next 8-byte offset of buf from *used while it fits in cap (bytes
 * past what is returned may be written). Fills msgs, moves *used and
 * ref->entry, sets ref->freed; returns how many it took. */
size_t shmq__packed_take_run(struct shmq *q, struct ring_ref *ref,
                             unsigned char *buf, size_t cap, size_t *used,
                             struct iovec *msgs, size_t max);

/* End a taken message (ref->entry): DONE, and free the record if it was
 * the last (ref->freed). 0 or -EBADMSG. */
int shmq__packed_done(struct shmq *q, struct ring_ref *ref);

/* Withdraw a committed packed record of ours: 0 withdrawn, 1 a consumer
 * took its first message already (the batch is delivered). */
int shmq__packed_withdraw(struct shmq *q, struct ring_ref *ref);

/* A message of the record taken by `slot`, for the stall of a release
 * that waits on this record: its entry index + 1, or 0 if none (the
 * record is freed here if every entry is done). */
unsigned shmq__packed_holder(struct shmq *q, uint32_t seq, uint32_t pos,
                             uint64_t w, unsigned *slot);

/* End the messages of the record taken by `slot` (all, or only entry
 * only - 1 when only is non-zero): DONE, and free the record if that was
 * the last. Packed records are never on a JoinableQueue, so nothing is
 * counted. true if one ended. */
bool shmq__packed_end_taken(struct shmq *q, uint32_t seq, uint32_t pos,
                            uint64_t w, unsigned slot, unsigned only);

#endif /* SHMQ_PACKED_H */
