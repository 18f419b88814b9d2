/* SPDX-License-Identifier: MIT */
/*
 * rings.h - the two raw shared-memory rings shmq is measured against,
 * as plain non-blocking calls over memory the caller maps. The
 * transports (limits.c, transport_vyukov.c), the ping-pong ring floor
 * and the instruction counter (pairs.c) all run this one copy, so the
 * figures in every table come from the same code.
 *
 *   spsc    one producer, one consumer: fixed slots, head and tail on
 *           their own cache lines, each side caching the other's index.
 *           No atomic read-modify-write at all. With batch > 1 each side
 *           publishes its index only every batch messages, and whenever
 *           it is about to wait (MCRingBuffer's batched control
 *           updates): a side that waits, polling the other's index, then
 *           takes that line from it once per batch instead of once per
 *           message. batch 1 publishes every message (ping-pong).
 *   vyukov  Dmitry Vyukov's bounded MPMC queue: cells of {seq, len,
 *           payload}; a put claims a cell with one CAS on the enqueue
 *           position and publishes it with a release store of the
 *           cell's seq, a get takes it with one CAS on the dequeue
 *           position and frees it with a store of seq + ncells. Two
 *           locked instructions per message. Crash-oblivious: a process
 *           that stops between its CAS and its seq store stops every
 *           consumer at that cell (and, once the ring has wrapped, every
 *           producer), and one that dies there stops them for ever.
 *
 * Both are bench code, not library code: shared memory is trusted (a
 * length is checked against the caller's buffer, nothing else).
 */
#ifndef SHMQ_BENCH_RINGS_H
#define SHMQ_BENCH_RINGS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define RING_CL 64

/* ---------------------------------------------------------------- */
/* SPSC                                                               */
/* ---------------------------------------------------------------- */

struct spsc_shared {
    _Alignas(RING_CL) _Atomic uint64_t head; /* written by the producer */
    _Alignas(RING_CL) _Atomic uint64_t tail; /* written by the consumer */
    _Alignas(RING_CL) unsigned char slots[];
};

/* One side's private view. */
struct spsc {
    struct spsc_shared *sh;
    size_t slot, nslots; /* slot bytes (a cache-line multiple), a power of 2 */
    uint64_t mine, cached; /* own index, the other side's as last read */
    uint64_t published;    /* own index as last stored for the other side */
    unsigned batch;        /* publish every batch messages (>= 1) */
};

/* Bytes to map for messages of up to max_msg bytes in at most footprint
 * bytes; fills slot and nslots of r, and batch with 1. */
size_t spsc_size(struct spsc *r, size_t max_msg, size_t footprint);
/* Each side, once the memory is mapped (and zeroed): start where the
 * shared indexes are. */
void spsc_attach_producer(struct spsc *r, struct spsc_shared *sh);
void spsc_attach_consumer(struct spsc *r, struct spsc_shared *sh);
/* 0, or -EAGAIN when full (after publishing what it holds back). */
int spsc_try_put(struct spsc *r, const void *msg, size_t len);
/* 0 and *len, -EAGAIN when empty (after publishing its progress),
 * -EMSGSIZE when it does not fit cap. */
int spsc_try_get(struct spsc *r, void *buf, size_t cap, size_t *len);
/* A producer that stops putting: publish what it holds back. */
void spsc_flush_producer(struct spsc *r);

/* ---------------------------------------------------------------- */
/* Vyukov bounded MPMC                                                */
/* ---------------------------------------------------------------- */

struct vyukov_shared {
    _Alignas(RING_CL) _Atomic uint64_t enq; /* next position to claim */
    _Alignas(RING_CL) _Atomic uint64_t deq; /* next position to take */
    _Alignas(RING_CL) unsigned char cells[];
};

/* The head of a cell; the payload follows it in the same stride. */
struct vyukov_cell {
    _Atomic uint64_t seq; /* pos: free for the put of pos; pos + 1:
                             holds the message of pos */
    uint64_t len;
};

struct vyukov {
    struct vyukov_shared *sh;
    size_t stride; /* cell bytes: head + payload, a cache-line multiple */
    uint64_t mask; /* ncells - 1, ncells a power of 2 */
};

/* Bytes to map for messages of up to max_msg bytes in at most footprint
 * bytes (at least two cells); fills stride and mask of r. */
size_t vyukov_size(struct vyukov *r, size_t max_msg, size_t footprint);
/* Once, by the creator, on the mapped memory: every cell free. */
void vyukov_init(struct vyukov *r, struct vyukov_shared *sh);
/* 0, or -EAGAIN when the cell at the enqueue position is not free yet
 * (full, or its consumer has not finished). Lock-free, not wait-free. */
int vyukov_try_put(struct vyukov *r, const void *msg, size_t len);
/* 0 and *len, -EAGAIN when the cell at the dequeue position holds no
 * message yet (empty, or its producer has not finished), -EMSGSIZE. */
int vyukov_try_get(struct vyukov *r, void *buf, size_t cap, size_t *len);

/* The two halves of each (try_put and try_get are claim, copy, end): a
 * claim returns the cell of *pos, the end publishes it (put: len bytes
 * written at vyukov_data) or frees it (get). */
int vyukov_claim_put(struct vyukov *r, uint64_t *pos);
void vyukov_publish(struct vyukov *r, uint64_t pos, size_t len);
int vyukov_claim_get(struct vyukov *r, uint64_t *pos);
void vyukov_free(struct vyukov *r, uint64_t pos);
unsigned char *vyukov_data(const struct vyukov *r, uint64_t pos);
size_t vyukov_len(const struct vyukov *r, uint64_t pos); /* <= stride */

/* The wait of both rings' blocking wrappers: pause, and give the CPU
 * away every 64 polls (sched_yield returns at once when nothing else is
 * runnable), so that 8x8 on 2 CPUs lets the process it waits for run. */
void ring_backoff(unsigned *polls);

#endif
