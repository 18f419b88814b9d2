/* SPDX-License-Identifier: MIT */
/*
 * transport_serialize.c - shmq's serialization layer, through the public
 * API only, on the same queues as transport_shmq.c (its setup, close and
 * teardown), for the serialization scenario (docs/benchmarks.md,
 * "Serialization"):
 *
 *   many32, many256  shmq_put_many of a batch of 32 or 256 messages, each
 *                    in its own buffer (no more than 4 MiB of them, see
 *                    bench_batch()); shmq_get_many of up to as many into
 *                    one buffer, each message checked where get_many put
 *                    it.
 *   zc               shmq_put_begin, the payload written into the
 *                    reservation, shmq_put_commit; shmq_get_begin, the
 *                    payload checked in the queue itself, shmq_get_end.
 *   putv             shmq_putv of a 16-byte header and the rest of the
 *                    message as two iovecs; shmq_get.
 *
 * State of a consumer (the get_many buffer, the open borrow) is per
 * process: every consumer is a forked child with its own copy.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "shmq.h"

static const char *ser_usable(const struct cell *c)
{
    if (c->sc != SC_THROUGHPUT)
        return "n/a: throughput only";
    return NULL;
}

/* A batch of 64 MiB messages is one message: no batch cell there. */
static const char *many_usable(const struct cell *c)
{
    if (c->size > BENCH_MAX_MSG)
        return "n/a: batches of messages up to 1 MiB";
    return ser_usable(c);
}

static int ser_setup(struct chan *ch)
{
    return transport_shmq.setup(ch);
}

static int ser_attach(struct chan *ch, enum role role, int idx)
{
    return transport_shmq.attach(ch, role, idx);
}

static int ser_finish(struct chan *ch)
{
    return transport_shmq.finish(ch);
}

static void ser_detach(struct chan *ch)
{
    transport_shmq.detach(ch);
}

static void ser_teardown(struct chan *ch)
{
    transport_shmq.teardown(ch);
}

static double ser_fill(struct chan *ch)
{
    return transport_shmq.fill(ch);
}

/* ---------------------------------------------------------------- */
/* put_many / get_many                                                */
/* ---------------------------------------------------------------- */

/* A consumer's batch: what the last get_many took, and how far the
 * harness has checked it. */
static struct {
    unsigned char *buf;
    size_t cap;
    struct iovec *msgs;
    size_t max, n, next;
} many;

static int many_send(struct chan *ch, const struct iovec *msgs, size_t n)
{
    size_t done = 0;
    while (done < n) {
        int rc =
            shmq_put_many(ch->priv, msgs + done, n - done, 0, SHMQ_FOREVER);
        if (rc < 0)
            return rc;
        done += (size_t)rc;
    }
    return 0;
}

static int many_send_one(struct chan *ch, const void *buf, size_t len)
{
    struct iovec iov = {(void *)(uintptr_t)buf, len};
    return many_send(ch, &iov, 1);
}

static int many_attach(struct chan *ch, enum role role, int idx)
{
    int rc = ser_attach(ch, role, idx);
    if (rc < 0 || role != ROLE_CONSUMER)
        return rc;
    many.max = bench_batch(ch->t, ch->cell->size);
    many.cap = many.max * ((ch->cell->size + 7) & ~(size_t)7);
    many.buf = aligned_alloc(64, (many.cap + 63) & ~(size_t)63);
    many.msgs = calloc(many.max, sizeof(*many.msgs));
    many.n = many.next = 0;
    return many.buf && many.msgs ? 0 : -ENOMEM;
}

static void many_detach(struct chan *ch)
{
    free(many.buf);
    free(many.msgs);
    many.buf = NULL;
    many.msgs = NULL;
    ser_detach(ch);
}

static int many_recv_ref(struct chan *ch, const void **msg, size_t *len)
{
    if (many.next == many.n) {
        int rc = shmq_get_many(ch->priv, many.buf, many.cap, many.msgs,
                               many.max, SHMQ_FOREVER);
        if (rc == -EPIPE)
            return RECV_END;
        if (rc < 0)
            return rc;
        many.n = (size_t)rc;
        many.next = 0;
    }
    *msg = many.msgs[many.next].iov_base;
    *len = many.msgs[many.next].iov_len;
    many.next++;
    return 0;
}

/* recv() for the parent's sake only (the harness uses recv_ref). */
static int many_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    const void *msg;
    int rc = many_recv_ref(ch, &msg, len);
    if (rc == 0 && *len > cap)
        return -EMSGSIZE;
    if (rc == 0)
        memcpy(buf, msg, *len);
    return rc;
}

#define MANY_TRANSPORT(N)                                                      \
    {                                                                          \
        .name = "many" #N, .label = "put_many/get_many ×" #N, .kind = TK_SHMQ, \
        .usable = many_usable, .setup = ser_setup, .attach = many_attach,      \
        .send = many_send_one, .recv = many_recv, .finish = ser_finish,        \
        .detach = many_detach, .teardown = ser_teardown, .fill = ser_fill,     \
        .batch = (N), .send_many = many_send, .recv_ref = many_recv_ref,       \
    }

const struct transport transport_shmq_many32 = MANY_TRANSPORT(32);
const struct transport transport_shmq_many256 = MANY_TRANSPORT(256);

/* ---------------------------------------------------------------- */
/* zero-copy: put_begin / put_commit, get_begin / get_end              */
/* ---------------------------------------------------------------- */

static struct shmq_msg borrow; /* the consumer's open borrow */

static int zc_send(struct chan *ch, const void *buf, size_t len)
{
    struct shmq_msg m;
    int rc = shmq_put_begin(ch->priv, len, &m, SHMQ_FOREVER);
    if (rc < 0)
        return rc;
    memcpy(m.data, buf, len); /* the producer writes its message in place */
    return shmq_put_commit(ch->priv, &m, len);
}

static int zc_recv_ref(struct chan *ch, const void **msg, size_t *len)
{
    int rc = shmq_get_begin(ch->priv, &borrow, SHMQ_FOREVER);
    if (rc == -EPIPE)
        return RECV_END;
    if (rc < 0)
        return rc;
    *msg = borrow.data;
    *len = borrow.len;
    return 0;
}

static int zc_recv_done(struct chan *ch)
{
    return shmq_get_end(ch->priv, &borrow);
}

static int zc_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    const void *msg;
    int rc = zc_recv_ref(ch, &msg, len);
    if (rc != 0)
        return rc;
    if (*len <= cap)
        memcpy(buf, msg, *len);
    int end = zc_recv_done(ch);
    return *len > cap ? -EMSGSIZE : end;
}

const struct transport transport_shmq_zc = {
    .name = "zerocopy",
    .label = "put_begin/get_begin",
    .kind = TK_SHMQ,
    .usable = ser_usable,
    .setup = ser_setup,
    .attach = ser_attach,
    .send = zc_send,
    .recv = zc_recv,
    .finish = ser_finish,
    .detach = ser_detach,
    .teardown = ser_teardown,
    .fill = ser_fill,
    .recv_ref = zc_recv_ref,
    .recv_done = zc_recv_done,
};

/* ---------------------------------------------------------------- */
/* putv                                                               */
/* ---------------------------------------------------------------- */

#define PUTV_HEADER 16

/* A header and a body from two places, as a caller that frames its
 * messages would send them (an 8-byte message is all header). */
static int putv_send(struct chan *ch, const void *buf, size_t len)
{
    size_t h = len < PUTV_HEADER ? len : PUTV_HEADER;
    struct iovec iov[2] = {{(void *)(uintptr_t)buf, h},
                           {(unsigned char *)(uintptr_t)buf + h, len - h}};
    return shmq_putv(ch->priv, iov, 2, SHMQ_FOREVER);
}

static int putv_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    return transport_shmq.recv(ch, buf, cap, len);
}

const struct transport transport_shmq_putv = {
    .name = "putv",
    .label = "putv/get",
    .kind = TK_SHMQ,
    .usable = ser_usable,
    .setup = ser_setup,
    .attach = ser_attach,
    .send = putv_send,
    .recv = putv_recv,
    .finish = ser_finish,
    .detach = ser_detach,
    .teardown = ser_teardown,
    .fill = ser_fill,
};
