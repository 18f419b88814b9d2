/* SPDX-License-Identifier: MIT */
/*
 * transport_zmq.c - ZeroMQ PUSH/PULL over ipc:// (libzmq), built when
 * meson finds libzmq. Each consumer binds a PULL socket on its own ipc
 * endpoint; each producer connects one PUSH socket to each consumer and
 * deals its messages over them in turn (what one PUSH socket connected to
 * all would do, but with a known path per message). The end of a run is
 * an empty message from every producer to every consumer, sent after its
 * last message on the same connection: ZeroMQ keeps order per connection
 * only, so a stop from the parent could overtake data still in flight.
 *
 * libzmq 4.3.4 drops the messages still queued when a PUSH socket is
 * closed and its context terminated, whatever ZMQ_LINGER says (seen here:
 * a producer that exits right after its last send loses the last few
 * thousand 8-byte messages and its stop). So a producer keeps its socket
 * open until every consumer has seen every stop (a counter in a shared
 * page); the consumers' clock has stopped by then, so the wait costs the
 * figures nothing. The context is created
 * after fork() in each process (libzmq is not fork-safe). The high-water
 * marks are ZeroMQ's default (1000 messages) or 8 MiB worth of messages,
 * whichever is fewer, to bound memory for the large sizes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"

#ifdef HAVE_ZMQ
#include <zmq.h>

struct zmq_priv {
    int owner;   /* pid of the parent, part of the endpoint names */
    unsigned id; /* which channel */
    void *ctx;
    void *sock[BENCH_MAX_PROCS];
    unsigned nsock, next;   /* producer: sockets, whose turn */
    unsigned stops;         /* consumer: empty messages seen */
    _Atomic unsigned *done; /* shared: consumers that saw every stop */
    bool sent_stop;         /* ping-pong: this side sent the stop message */
};

static void endpoint(const struct zmq_priv *p, unsigned consumer, char *buf,
                     size_t n)
{
    snprintf(buf, n, "ipc:///tmp/shmq-bench-%d-%u-%u", p->owner, p->id,
             consumer);
}

static int zmq_setup_(struct chan *ch)
{
    static unsigned serial;
    struct zmq_priv *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->owner = (int)getpid();
    p->id = serial++;
    p->done = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p->done == MAP_FAILED) {
        free(p);
        return -ENOMEM;
    }
    ch->priv = p;
    return 0;
}

static int hwm(const struct chan *ch)
{
    size_t n = (8u << 20) / ch->cell->size;
    return n > 1000 ? 1000 : n < 2 ? 2 : (int)n;
}

static int zmq_attach_(struct chan *ch, enum role role, int idx)
{
    struct zmq_priv *p = ch->priv;
    char ep[128];
    int h = hwm(ch), ivl = 1;

    ch->role = role;
    ch->role_index = idx;
    p->ctx = zmq_ctx_new();
    if (!p->ctx)
        return -errno;
    if (role == ROLE_CONSUMER) {
        p->nsock = 1;
        p->sock[0] = zmq_socket(p->ctx, ZMQ_PULL);
        zmq_setsockopt(p->sock[0], ZMQ_RCVHWM, &h, sizeof(h));
        endpoint(p, (unsigned)idx, ep, sizeof(ep));
        unlink(ep + 6);
        return zmq_bind(p->sock[0], ep) == 0 ? 0 : -zmq_errno();
    }
    /* A producer may connect before the consumer has bound: retry after
     * 1 ms, not ZeroMQ's default 100 ms. */
    p->nsock = ch->cell->consumers;
    for (unsigned i = 0; i < p->nsock; i++) {
        p->sock[i] = zmq_socket(p->ctx, ZMQ_PUSH);
        zmq_setsockopt(p->sock[i], ZMQ_SNDHWM, &h, sizeof(h));
        zmq_setsockopt(p->sock[i], ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
        endpoint(p, i, ep, sizeof(ep));
        if (zmq_connect(p->sock[i], ep) != 0)
            return -zmq_errno();
    }
    return 0;
}

static int send_on(void *s, const void *buf, size_t len)
{
    while (zmq_send(s, buf, len, 0) < 0)
        if (zmq_errno() != EINTR)
            return -zmq_errno();
    return 0;
}

static int zmq_send_(struct chan *ch, const void *buf, size_t len)
{
    struct zmq_priv *p = ch->priv;
    unsigned i = p->next++;
    if (payload_stamp_of(buf, len) == STAMP_STOP)
        p->sent_stop = true;
    return send_on(p->sock[i % p->nsock], buf, len);
}

/* Every consumer has seen every producer's stop: nothing is in flight. */
static int zmq_finish_(struct chan *ch)
{
    (void)ch;
    return 0;
}

static int zmq_recv_(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct zmq_priv *p = ch->priv;
    int64_t spin = cell_spin_ns(ch->cell);
    uint64_t end = spin ? now_ns() + (uint64_t)spin : 0;
    for (;;) {
        int flags = spin && now_ns() < end ? ZMQ_DONTWAIT : 0;
        int n = zmq_recv(p->sock[0], buf, cap, flags);
        if (n == 0 && ch->cell->sc == SC_THROUGHPUT) {
            if (++p->stops == ch->cell->producers) {
                atomic_fetch_add(p->done, 1);
                return RECV_END;
            }
            continue;
        }
        if (n >= 0) {
            if (payload_stamp_of(buf, (size_t)n) == STAMP_STOP)
                atomic_fetch_add(p->done, 1);
            *len = (size_t)n;
            return 0;
        }
        if (zmq_errno() != EINTR && zmq_errno() != EAGAIN)
            return -zmq_errno();
    }
}

static void zmq_detach_(struct chan *ch)
{
    struct zmq_priv *p = ch->priv;
    bool tp = ch->cell->sc == SC_THROUGHPUT;
    if (ch->role == ROLE_PRODUCER && tp)
        for (unsigned i = 0; i < p->nsock; i++)
            (void)send_on(p->sock[i], "", 0);
    if (ch->role == ROLE_PRODUCER && (tp || p->sent_stop)) {
        uint64_t give_up = now_ns() + 20000000000ull;
        while (atomic_load(p->done) < (tp ? ch->cell->consumers : 1) &&
               now_ns() < give_up)
            usleep(200);
    }
    for (unsigned i = 0; i < BENCH_MAX_PROCS; i++)
        if (p->sock[i])
            zmq_close(p->sock[i]);
    zmq_ctx_term(p->ctx);
}

static void zmq_teardown_(struct chan *ch)
{
    struct zmq_priv *p = ch->priv;
    char ep[128];
    for (unsigned i = 0; i < BENCH_MAX_PROCS; i++) {
        endpoint(p, i, ep, sizeof(ep));
        unlink(ep + 6);
    }
    munmap(p->done, 4096);
    free(p);
}

const struct transport transport_zmq = {
    .name = "zmq",
    .label = "ZeroMQ ipc",
    .kind = TK_PEER,
    .setup = zmq_setup_,
    .attach = zmq_attach_,
    .send = zmq_send_,
    .recv = zmq_recv_,
    .finish = zmq_finish_,
    .detach = zmq_detach_,
    .teardown = zmq_teardown_,
};
#else
const struct transport transport_zmq = {.name = NULL};
#endif
