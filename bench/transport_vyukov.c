/* SPDX-License-Identifier: MIT */
/*
 * transport_vyukov.c - Vyukov's bounded MPMC ring (rings.c) in shared
 * memory: the ceiling of a crash-oblivious MPMC queue, for every
 * throughput shape, next to the raw SPSC ring (1x1 only).
 *
 * Its footprint is a default shmq queue's: the size of the region that
 * shmq_create(NULL) makes (header, participants, 65536 descriptors,
 * 4 MiB of storage), read from the queue's own file, so it follows
 * lib/shm.c's geometry without restating it. That many bytes hold
 * 32768 cells of 64 B messages (128-byte cells: seq, len, payload, one
 * line for 8 B messages, two for 64 B), 4 of 1 MiB. Waiting is polling
 * with pause and a sched_yield every 64 polls, as shmq's spin does;
 * there is no sleeping. The parent ends a run with one stop message per
 * consumer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "bench.h"
#include "rings.h"
#include "shmq.h"

struct vy_priv {
    struct vyukov r;
    size_t map_size;
};

size_t bench_default_footprint(void)
{
    static size_t bytes;
    struct stat st;
    shmq_t *q;
    if (bytes)
        return bytes;
    bytes = 5u << 20; /* only if a default queue cannot be made here */
    if (shmq_create(&q, NULL) == 0) {
        if (fstat(shmq_fd(q), &st) == 0 && st.st_size > 0)
            bytes = (size_t)st.st_size;
        shmq_release(q);
    }
    return bytes;
}

static const char *vy_usable(const struct cell *c)
{
    return c->sc == SC_THROUGHPUT ? NULL : "n/a: throughput only";
}

static int vy_setup(struct chan *ch)
{
    struct vy_priv *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->map_size = vyukov_size(&p->r, ch->cell->size, bench_default_footprint());
    void *m = mmap(NULL, p->map_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        free(p);
        return -ENOMEM;
    }
    memset(m, 0, p->map_size); /* every page touched, as shmq's prefault() */
    vyukov_init(&p->r, m);
    ch->priv = p;
    return 0;
}

static int vy_attach(struct chan *ch, enum role role, int idx)
{
    ch->role = role;
    ch->role_index = idx;
    return 0;
}

static int vy_send(struct chan *ch, const void *buf, size_t len)
{
    struct vy_priv *p = ch->priv;
    unsigned polls = 0;
    int rc;
    while ((rc = vyukov_try_put(&p->r, buf, len)) == -EAGAIN)
        ring_backoff(&polls);
    return rc;
}

static int vy_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct vy_priv *p = ch->priv;
    unsigned polls = 0;
    int rc;
    while ((rc = vyukov_try_get(&p->r, buf, cap, len)) == -EAGAIN)
        ring_backoff(&polls);
    return rc;
}

/* The stall scenario's victim: the claim and the publication (or the
 * free) apart, the copy between them. */
static int vy_send_held(struct chan *ch, const void *buf, size_t len,
                        _Atomic uint32_t *held)
{
    struct vy_priv *p = ch->priv;
    unsigned polls = 0;
    uint64_t pos;
    while (vyukov_claim_put(&p->r, &pos) == -EAGAIN)
        ring_backoff(&polls);
    atomic_store_explicit(held, 1, memory_order_relaxed);
    memcpy(vyukov_data(&p->r, pos), buf, len);
    vyukov_publish(&p->r, pos, len);
    atomic_store_explicit(held, 0, memory_order_relaxed);
    return 0;
}

static int vy_recv_held(struct chan *ch, void *buf, size_t cap, size_t *len,
                        _Atomic uint32_t *held)
{
    struct vy_priv *p = ch->priv;
    unsigned polls = 0;
    uint64_t pos;
    int rc = 0;
    while (vyukov_claim_get(&p->r, &pos) == -EAGAIN)
        ring_backoff(&polls);
    atomic_store_explicit(held, 1, memory_order_relaxed);
    size_t l = vyukov_len(&p->r, pos);
    if (l > cap)
        rc = -EMSGSIZE;
    else
        memcpy(buf, vyukov_data(&p->r, pos), l), *len = l;
    vyukov_free(&p->r, pos);
    atomic_store_explicit(held, 0, memory_order_relaxed);
    return rc;
}

static double vy_fill(struct chan *ch)
{
    struct vy_priv *p = ch->priv;
    uint64_t deq = atomic_load_explicit(&p->r.sh->deq, memory_order_relaxed);
    uint64_t enq = atomic_load_explicit(&p->r.sh->enq, memory_order_relaxed);
    return (double)(enq - deq) / (double)(p->r.mask + 1);
}

static void vy_detach(struct chan *ch)
{
    (void)ch;
}

static void vy_teardown(struct chan *ch)
{
    struct vy_priv *p = ch->priv;
    munmap(p->r.sh, p->map_size);
    free(p);
}

const struct transport transport_vyukov = {
    .name = "vyukov",
    .label = "Vyukov MPMC ring",
    .kind = TK_LIMIT,
    .usable = vy_usable,
    .setup = vy_setup,
    .attach = vy_attach,
    .send = vy_send,
    .recv = vy_recv,
    .detach = vy_detach,
    .teardown = vy_teardown,
    .send_held = vy_send_held,
    .recv_held = vy_recv_held,
    .fill = vy_fill,
};
