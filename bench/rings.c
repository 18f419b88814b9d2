/* SPDX-License-Identifier: MIT */
/*
 * rings.c - the raw SPSC ring and the Vyukov bounded MPMC ring (see
 * rings.h). No waiting here: the callers poll with ring_backoff().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "rings.h"

static size_t round_cl(size_t n)
{
    return (n + RING_CL - 1) & ~(size_t)(RING_CL - 1);
}

/* The largest power of two n >= 2 with head + n * each <= footprint. */
static size_t pow2_fitting(size_t head, size_t each, size_t footprint)
{
    size_t n = 2;
    while (head + n * 2 * each <= footprint && n < ((size_t)1 << 30))
        n *= 2;
    return n;
}

void ring_backoff(unsigned *polls)
{
    if (++*polls % 64 == 0)
        sched_yield();
    else
        __builtin_ia32_pause();
}

/* ---------------------------------------------------------------- */
/* SPSC                                                               */
/* ---------------------------------------------------------------- */

size_t spsc_size(struct spsc *r, size_t max_msg, size_t footprint)
{
    r->slot = round_cl(8 + max_msg);
    r->batch = 1;
    r->nslots = pow2_fitting(sizeof(struct spsc_shared), r->slot, footprint);
    return sizeof(struct spsc_shared) + r->nslots * r->slot;
}

void spsc_attach_producer(struct spsc *r, struct spsc_shared *sh)
{
    r->sh = sh;
    r->mine = atomic_load_explicit(&sh->head, memory_order_relaxed);
    r->published = r->mine;
    r->cached = atomic_load_explicit(&sh->tail, memory_order_acquire);
}

void spsc_attach_consumer(struct spsc *r, struct spsc_shared *sh)
{
    r->sh = sh;
    r->mine = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    r->published = r->mine;
    r->cached = atomic_load_explicit(&sh->head, memory_order_acquire);
}

/* Store own index for the other side: head (the slots' bytes are
 * written) or tail (the slots' bytes are read), release either way. */
static void publish(struct spsc *r, _Atomic uint64_t *index)
{
    r->published = r->mine;
    atomic_store_explicit(index, r->mine, memory_order_release);
}

void spsc_flush_producer(struct spsc *r)
{
    if (r->published != r->mine)
        publish(r, &r->sh->head);
}

int spsc_try_put(struct spsc *r, const void *msg, size_t len)
{
    if (r->mine - r->cached >= r->nslots) {
        /* about to wait: what we hold back must not wait with us */
        if (r->published != r->mine)
            publish(r, &r->sh->head);
        /* pairs with the consumer's release of tail: the slot is free */
        r->cached = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
        if (r->mine - r->cached >= r->nslots)
            return -EAGAIN;
    }
    unsigned char *s = r->sh->slots + (r->mine & (r->nslots - 1)) * r->slot;
    uint64_t l = len;
    memcpy(s, &l, 8);
    memcpy(s + 8, msg, len);
    /* publishes the slots' bytes to the consumer's acquire of head */
    if (++r->mine - r->published >= r->batch)
        publish(r, &r->sh->head);
    return 0;
}

int spsc_try_get(struct spsc *r, void *buf, size_t cap, size_t *len)
{
    if (r->mine == r->cached) {
        /* about to wait: give back the room we hold */
        if (r->published != r->mine)
            publish(r, &r->sh->tail);
        /* pairs with the producer's release of head */
        r->cached = atomic_load_explicit(&r->sh->head, memory_order_acquire);
        if (r->mine == r->cached)
            return -EAGAIN;
    }
    const unsigned char *s =
        r->sh->slots + (r->mine & (r->nslots - 1)) * r->slot;
    uint64_t l;
    memcpy(&l, s, 8);
    if (l > cap || l > r->slot - 8)
        return -EMSGSIZE;
    memcpy(buf, s + 8, l);
    *len = l;
    /* the slots' bytes are read before the producer may reuse them */
    if (++r->mine - r->published >= r->batch)
        publish(r, &r->sh->tail);
    return 0;
}

/* ---------------------------------------------------------------- */
/* Vyukov bounded MPMC                                                */
/* ---------------------------------------------------------------- */

size_t vyukov_size(struct vyukov *r, size_t max_msg, size_t footprint)
{
    size_t n;
    r->stride = round_cl(sizeof(struct vyukov_cell) + max_msg);
    n = pow2_fitting(sizeof(struct vyukov_shared), r->stride, footprint);
    r->mask = n - 1;
    return sizeof(struct vyukov_shared) + n * r->stride;
}

static struct vyukov_cell *cell_at(const struct vyukov *r, uint64_t pos)
{
    return (struct vyukov_cell *)(r->sh->cells + (pos & r->mask) * r->stride);
}

void vyukov_init(struct vyukov *r, struct vyukov_shared *sh)
{
    r->sh = sh;
    for (uint64_t i = 0; i <= r->mask; i++)
        atomic_store_explicit(&cell_at(r, i)->seq, i, memory_order_relaxed);
    atomic_store_explicit(&sh->enq, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->deq, 0, memory_order_release);
}

static inline int vyukov_claim_put_(struct vyukov *r, uint64_t *pos)
{
    uint64_t p = atomic_load_explicit(&r->sh->enq, memory_order_relaxed);
    for (;;) {
        /* pairs with the release store of the get that freed the cell:
         * its reads of the old payload are done */
        uint64_t seq =
            atomic_load_explicit(&cell_at(r, p)->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - p);
        if (dif == 0) {
            /* the claim orders nothing: the cell's seq publishes */
            if (atomic_compare_exchange_weak_explicit(&r->sh->enq, &p, p + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return -EAGAIN;
        } else {
            p = atomic_load_explicit(&r->sh->enq, memory_order_relaxed);
        }
    }
    *pos = p;
    return 0;
}

static inline unsigned char *vyukov_data_(const struct vyukov *r, uint64_t pos)
{
    return (unsigned char *)(cell_at(r, pos) + 1);
}

static inline size_t vyukov_len_(const struct vyukov *r, uint64_t pos)
{
    uint64_t l = cell_at(r, pos)->len;
    return l > r->stride - sizeof(struct vyukov_cell) ? r->stride : l;
}

static inline void vyukov_publish_(struct vyukov *r, uint64_t pos, size_t len)
{
    struct vyukov_cell *c = cell_at(r, pos);
    c->len = len;
    /* publishes len and payload to the get's acquire of seq */
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
}

static inline int vyukov_claim_get_(struct vyukov *r, uint64_t *pos)
{
    uint64_t p = atomic_load_explicit(&r->sh->deq, memory_order_relaxed);
    for (;;) {
        /* pairs with the put's release store of seq: payload visible */
        uint64_t seq =
            atomic_load_explicit(&cell_at(r, p)->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - (p + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->sh->deq, &p, p + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return -EAGAIN;
        } else {
            p = atomic_load_explicit(&r->sh->deq, memory_order_relaxed);
        }
    }
    *pos = p;
    return 0;
}

static inline void vyukov_free_(struct vyukov *r, uint64_t pos)
{
    /* the payload is read before a put of pos + ncells may write it */
    atomic_store_explicit(&cell_at(r, pos)->seq, pos + r->mask + 1,
                          memory_order_release);
}

int vyukov_try_put(struct vyukov *r, const void *msg, size_t len)
{
    uint64_t pos;
    if (vyukov_claim_put_(r, &pos) != 0)
        return -EAGAIN;
    struct vyukov_cell *c = cell_at(r, pos); /* once: memcpy may alias *r */
    c->len = len;
    memcpy(c + 1, msg, len);
    /* publishes len and payload to the get's acquire of seq */
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    return 0;
}

int vyukov_try_get(struct vyukov *r, void *buf, size_t cap, size_t *len)
{
    uint64_t pos, next;
    int rc = 0;
    if (vyukov_claim_get_(r, &pos) != 0)
        return -EAGAIN;
    struct vyukov_cell *c = cell_at(r, pos);
    next = pos + r->mask + 1;
    uint64_t l = c->len;
    if (l > cap || l > r->stride - sizeof(*c))
        rc = -EMSGSIZE; /* the cell is freed all the same */
    else
        memcpy(buf, c + 1, l), *len = l;
    /* the payload is read before a put of pos + ncells may write it */
    atomic_store_explicit(&c->seq, next, memory_order_release);
    return rc;
}

/* The halves, for the stall scenario's victim (transport_vyukov.c). */
int vyukov_claim_put(struct vyukov *r, uint64_t *pos)
{
    return vyukov_claim_put_(r, pos);
}
void vyukov_publish(struct vyukov *r, uint64_t pos, size_t len)
{
    vyukov_publish_(r, pos, len);
}
int vyukov_claim_get(struct vyukov *r, uint64_t *pos)
{
    return vyukov_claim_get_(r, pos);
}
void vyukov_free(struct vyukov *r, uint64_t pos)
{
    vyukov_free_(r, pos);
}
unsigned char *vyukov_data(const struct vyukov *r, uint64_t pos)
{
    return vyukov_data_(r, pos);
}
size_t vyukov_len(const struct vyukov *r, uint64_t pos)
{
    return vyukov_len_(r, pos);
}
