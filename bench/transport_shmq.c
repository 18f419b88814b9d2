/* SPDX-License-Identifier: MIT */
/*
 * transport_shmq.c - shmq, through its public API only (include/shmq.h).
 *
 * One anonymous queue per channel, created by the parent and inherited
 * over fork(): for throughput max_message 1 MiB, capacity 8 MiB, default
 * maxsize (for the 64 MiB cell of the serialization scenario, max_message
 * 64 MiB and capacity 256 MiB); for ping-pong a queue sized for one message in
 * flight. The end of a throughput run is shmq_close(): consumers drain what is
 * left and get -EPIPE, no stop messages. Latency cells use shmq_set_spin(q, 0)
 * for "blocking" and the default spin (SHMQ_DEFAULT_SPIN_NS) for
 * "adaptive"; throughput cells use the default, what a user gets, unless
 * --spin NS says otherwise.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "shmq.h"

/*
 * Touch every page of a new queue once, as a long-lived queue has: fill
 * it with max_message messages (the ring) and with empty ones (the
 * descriptors), draining after each. Without this, a slow cell (a
 * blocking ping-pong at 4 KiB does ~3000 round trips in 0.1 s) walks
 * over fresh pages of the 8 MiB ring and pays a page fault that
 * allocates and zeroes a page on most messages, which a pipe, reusing
 * its buffer, never does. The children still take one minor fault per
 * page when they first touch it.
 */
static int prefault(shmq_t *q)
{
    size_t len, max = shmq_max_message(q);
    unsigned char *big = calloc(1, max);
    if (!big)
        return -ENOMEM;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = pass ? 0 : max;
        while (shmq_put_nowait(q, big, n) == 0)
            ;
        while (shmq_get_nowait(q, big, max, &len) == 0)
            ;
    }
    free(big);
    return 0;
}

/* Latency cells: a request/response queue never holds more than one
 * message, so it is sized as a user would size one (64 messages, 64 KiB):
 * its ring is laid over every 16 messages of 4 KiB, and the children's
 * first-touch page faults are over within the warm-up instead of landing
 * on most timed round trips of an 8 MiB ring. */
static struct shmq_config shmq_config_for(const struct cell *c)
{
    if (c->sc == SC_LATENCY)
        return (struct shmq_config){
            .maxsize = 64,
            .capacity = c->size * 16 > (64u << 10) ? c->size * 16 : 64u << 10,
            .max_message = c->size ? c->size : 1,
        };
    if (c->size > BENCH_MAX_MSG) /* the serialization scenario's 64 MiB */
        return (struct shmq_config){
            .capacity = 4 * c->size,
            .max_message = c->size,
        };
    return (struct shmq_config){
        .capacity = 8u << 20,
        .max_message = BENCH_MAX_MSG,
    };
}

static int shmq_setup_(struct chan *ch)
{
    struct shmq_config cfg = shmq_config_for(ch->cell);
    shmq_t *q;
    int rc = shmq_create(&q, &cfg);
    if (rc == 0 && (rc = prefault(q)) < 0)
        shmq_release(q);
    else if (rc == 0)
        ch->priv = q;
    return rc;
}

int64_t shmq_throughput_spin = -1;

static int shmq_attach_(struct chan *ch, enum role role, int idx)
{
    ch->role = role;
    ch->role_index = idx;
    if (ch->cell->sc == SC_THROUGHPUT && shmq_throughput_spin >= 0)
        return shmq_set_spin(ch->priv, shmq_throughput_spin);
    if (ch->cell->sc == SC_LATENCY && ch->cell->mode == WAIT_BLOCK)
        return shmq_set_spin(ch->priv, 0);
    return 0;
}

static int shmq_send_(struct chan *ch, const void *buf, size_t len)
{
    return shmq_put(ch->priv, buf, len, SHMQ_FOREVER);
}

static int shmq_recv_(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    int rc = shmq_get(ch->priv, buf, cap, len, SHMQ_FOREVER);
    return rc == -EPIPE ? RECV_END : rc;
}

/* The stall scenario's victim: put_begin / put_commit and get_begin /
 * get_end, the payload written and read in place, inside the window. */
static int shmq_send_held_(struct chan *ch, const void *buf, size_t len,
                           _Atomic uint32_t *held)
{
    struct shmq_msg m;
    int rc = shmq_put_begin(ch->priv, len, &m, SHMQ_FOREVER);
    if (rc < 0)
        return rc;
    atomic_store_explicit(held, 1, memory_order_relaxed);
    memcpy(m.data, buf, len);
    rc = shmq_put_commit(ch->priv, &m, len);
    atomic_store_explicit(held, 0, memory_order_relaxed);
    return rc;
}

static int shmq_recv_held_(struct chan *ch, void *buf, size_t cap, size_t *len,
                           _Atomic uint32_t *held)
{
    struct shmq_msg m;
    int rc = shmq_get_begin(ch->priv, &m, SHMQ_FOREVER);
    if (rc < 0)
        return rc == -EPIPE ? RECV_END : rc;
    atomic_store_explicit(held, 1, memory_order_relaxed);
    if (m.len > cap)
        rc = -EMSGSIZE;
    else
        memcpy(buf, m.data, m.len), *len = m.len;
    int end = shmq_get_end(ch->priv, &m);
    atomic_store_explicit(held, 0, memory_order_relaxed);
    return rc < 0 ? rc : end;
}

/* Throughput queues hold at most the default maxsize messages (their
 * 8 MiB hold 131072 of 64 B): the fraction of maxsize queued. */
static double shmq_fill_(struct chan *ch)
{
    return (double)shmq_qsize(ch->priv) / SHMQ_DEFAULT_MAXSIZE;
}

static int shmq_finish_(struct chan *ch)
{
    return shmq_close(ch->priv);
}

static void shmq_detach_(struct chan *ch)
{
    (void)ch;
}

static void shmq_teardown_(struct chan *ch)
{
    shmq_release(ch->priv);
}

const struct transport transport_shmq = {
    .name = "shmq",
    .label = "shmq",
    .kind = TK_SHMQ,
    .setup = shmq_setup_,
    .attach = shmq_attach_,
    .send = shmq_send_,
    .recv = shmq_recv_,
    .finish = shmq_finish_,
    .detach = shmq_detach_,
    .teardown = shmq_teardown_,
    .send_held = shmq_send_held_,
    .recv_held = shmq_recv_held_,
    .fill = shmq_fill_,
};
