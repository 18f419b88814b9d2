/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the private handle and helpers shared by lib/ files.
 * Nothing here is visible outside the library (hidden visibility and
 * lib/libshmq.map export only the public shmq_ calls).
 */
#ifndef SHMQ_INTERNAL_H
#define SHMQ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define SHMQ_PUBLIC __attribute__((visibility("default")))
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Memory orders, spelled out at every use (STYLE.md). */
#define load_relaxed(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define load_acquire(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* CAS that publishes what came before it and sees what the previous
 * writer published; *expected is refreshed on failure. */
#define cas_acq_rel(p, expected, desired)                                      \
    __atomic_compare_exchange_n((p), (expected), (desired), 0,                 \
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/*
 * Sizes of a queue, derived from its configuration by shmq__shm_geometry().
 * An attacher recomputes them from the region's identity and compares, so
 * after attach these private copies are trusted and shared memory is
 * never asked for a size again.
 */
struct shmq_geometry {
    uint32_t maxsize;
    uint32_t desc_count; /* power of two */
    uint32_t unit_shift;
    uint32_t cap_units;
    uint32_t ring_units; /* power of two */
    uint32_t max_units;  /* units of a max_message message */
    uint32_t flags;
    uint64_t max_message;
    uint64_t desc_offset;
    uint64_t ring_offset;
    uint64_t region_size;
};

struct shmq {
    struct shmq_geometry geo;
    int fd;             /* the region; close-on-exec; shmq_fd() */
    int lock_fd;        /* this handle's own open file description: holds the
                           OFD lock that says its participant slot is alive */
    unsigned slot;      /* participant slot, valid when registered */
    uint64_t reg_epoch; /* atomic: process incarnation that registered */
    int64_t spin_ns;    /* atomic: adaptive wait before sleeping */
    /* atomic (relaxed): where this handle's last claim and last take
     * ended, position words; a start for the next one that is never past
     * the true tail/head (ring.c, "Lazy cursors") */
    uint64_t tail_cache;
    uint64_t head_cache;
    /* the packed record this handle last took from: seq << 32 | the
     * entry after the one it took (every entry before it is taken) */
    uint64_t packed_hint;
    void *map; /* region followed by the mirror of its ring */
    size_t map_size;
    struct shmq_header *hdr;
    struct shmq_participant *parts;
    struct shmq_desc *desc;
    unsigned char *ring;
    struct shmq *prev, *next; /* handles of this process (fork handling) */
};

/* Storage units of a payload of len bytes: at least one, so every record
 * has a position of its own. */
static inline uint32_t units_for(const struct shmq *q, uint64_t len)
{
    uint64_t unit = (uint64_t)1 << q->geo.unit_shift;
    uint64_t u = (len + unit - 1) >> q->geo.unit_shift;
    return u ? (uint32_t)u : 1u;
}

/* Address in the ring of a position; the mirror makes [addr, addr +
 * ring bytes) valid whatever the position. */
static inline unsigned char *ring_addr(const struct shmq *q, uint32_t pos)
{
    uint64_t off = (uint64_t)(pos & (q->geo.ring_units - 1))
                   << q->geo.unit_shift;
    return q->ring + off;
}

#endif /* SHMQ_INTERNAL_H */
