/* SPDX-License-Identifier: MIT */
/*
 * limits.c - the physical limits every row is compared with, measured in
 * the same run as the transports:
 *
 *   ring    a raw single-producer single-consumer shared-memory ring with
 *           busy polling (rings.c), as big as a default shmq queue: no
 *           waiting, no multi-producer claim, no crash safety: the
 *           throughput ceiling of any shared-memory queue. It runs
 *           through the same harness (same processes, payloads and
 *           checks) as the transports. The Vyukov MPMC ring, the
 *           ceiling of a crash-oblivious MPMC queue, is
 *           transport_vyukov.c.
 *   ringpp  ping-pong over two such rings: the floor of a polling round
 *           trip that moves and checks the same payload as shmq's.
 *   spin    two processes bouncing one cache line: the bare floor.
 *   futex   two processes waking each other with FUTEX_WAKE/FUTEX_WAIT
 *           on every message: the floor of a blocking wakeup.
 *   memcpy  one core copying messages into an 8 MiB area (the size of a
 *           queue's storage): the ceiling for large messages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "rings.h"

#define CL         64
#define RING_BYTES (8u << 20)

/* ---------------------------------------------------------------- */
/* raw SPSC ring (rings.c): throughput 1x1, and the ring floor of      */
/* adaptive ping-pong                                                  */
/* ---------------------------------------------------------------- */

struct ring_priv {
    struct spsc r;
    struct spsc_shared *sh;
    size_t map_size;
};

static const char *ring_usable(const struct cell *c)
{
    if (c->sc != SC_THROUGHPUT || c->producers != 1 || c->consumers != 1)
        return "n/a: single producer, single consumer only";
    if (c->size > BENCH_MAX_MSG)
        return "n/a: messages of up to 1 MiB";
    return NULL;
}

static const char *ringpp_usable(const struct cell *c)
{
    if (c->sc != SC_LATENCY || c->mode != WAIT_ADAPTIVE)
        return "n/a: polling ping-pong only";
    return NULL;
}

/* Throughput: a default shmq queue's footprint (as the Vyukov ring).
 * Ping-pong: a request/response ring as small as shmq's latency queue
 * (64 KiB, or 16 messages), whose pages the warm-up touches. */
static size_t ring_footprint(const struct cell *c)
{
    if (c->sc == SC_LATENCY)
        return c->size * 16 > (64u << 10) ? c->size * 16 : 64u << 10;
    return bench_default_footprint();
}

static int ring_setup(struct chan *ch)
{
    struct ring_priv *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->map_size = spsc_size(&p->r, ch->cell->size, ring_footprint(ch->cell));
    /* Throughput: indexes published every 16 messages, as shmq's lazy
     * cursors move, so that the side that waits does not take the other
     * side's index line after every message (rings.h). Ping-pong: every
     * message, or the other side would not see it. */
    if (ch->cell->sc == SC_THROUGHPUT)
        p->r.batch = 16;
    p->sh = mmap(NULL, p->map_size, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p->sh == MAP_FAILED) {
        free(p);
        return -ENOMEM;
    }
    memset(p->sh, 0, p->map_size); /* as shmq's prefault() */
    ch->priv = p;
    return 0;
}

static int ring_attach(struct chan *ch, enum role role, int idx)
{
    struct ring_priv *p = ch->priv;
    ch->role = role;
    ch->role_index = idx;
    /* the parent sends the stop message after the producer exited */
    if (role == ROLE_CONSUMER)
        spsc_attach_consumer(&p->r, p->sh);
    else
        spsc_attach_producer(&p->r, p->sh);
    return 0;
}

static int ring_send(struct chan *ch, const void *buf, size_t len)
{
    struct ring_priv *p = ch->priv;
    int rc;
    while ((rc = spsc_try_put(&p->r, buf, len)) == -EAGAIN)
        __builtin_ia32_pause();
    return rc;
}

static int ring_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct ring_priv *p = ch->priv;
    int rc;
    while ((rc = spsc_try_get(&p->r, buf, cap, len)) == -EAGAIN)
        __builtin_ia32_pause();
    return rc;
}

static double ring_fill(struct chan *ch)
{
    struct ring_priv *p = ch->priv;
    uint64_t tail = atomic_load_explicit(&p->sh->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&p->sh->head, memory_order_relaxed);
    return (double)(head - tail) / (double)p->r.nslots;
}

static void ring_detach(struct chan *ch)
{
    struct ring_priv *p = ch->priv;
    if (ch->role != ROLE_CONSUMER)
        spsc_flush_producer(&p->r);
}

static void ring_teardown(struct chan *ch)
{
    struct ring_priv *p = ch->priv;
    munmap(p->sh, p->map_size);
    free(p);
}

const struct transport transport_ring = {
    .name = "ring",
    .label = "raw SPSC ring",
    .kind = TK_LIMIT,
    .usable = ring_usable,
    .setup = ring_setup,
    .attach = ring_attach,
    .send = ring_send,
    .recv = ring_recv,
    .detach = ring_detach,
    .teardown = ring_teardown,
    .fill = ring_fill,
};

/* Two raw rings, one each way, polled: the floor of a ping-pong that
 * moves (and checks) the same payload as shmq, where the spin floor
 * bounces a bare flag. */
const struct transport transport_ringpp = {
    .name = "ringpp",
    .label = "ring floor",
    .kind = TK_LIMIT,
    .usable = ringpp_usable,
    .setup = ring_setup,
    .attach = ring_attach,
    .send = ring_send,
    .recv = ring_recv,
    .detach = ring_detach,
    .teardown = ring_teardown,
};

/* ---------------------------------------------------------------- */
/* ping-pong floors                                                   */
/* ---------------------------------------------------------------- */

struct pp_shared {
    _Alignas(CL) _Atomic uint32_t ping; /* pinger writes */
    _Alignas(CL) _Atomic uint32_t pong; /* echoer writes */
    _Alignas(CL) _Atomic uint32_t ready;
    _Atomic uint32_t go;
    uint64_t t_end;
    uint64_t n;
    uint64_t samples[];
};

static void futex_wait(_Atomic uint32_t *w, uint32_t old)
{
    syscall(SYS_futex, w, FUTEX_WAIT, old, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Wait until *w != old: spinning, or sleeping on the futex each time. */
static uint32_t await_change(_Atomic uint32_t *w, uint32_t old, bool spin)
{
    uint32_t v;
    while ((v = atomic_load_explicit(w, memory_order_acquire)) == old) {
        if (spin)
            __builtin_ia32_pause();
        else
            futex_wait(w, old);
    }
    return v;
}

static void post(_Atomic uint32_t *w, uint32_t v, bool spin)
{
    atomic_store_explicit(w, v, memory_order_release);
    if (!spin)
        futex_wake(w);
}

static void pingpong(const struct cell *c, struct result *r, bool spin)
{
    size_t sz = sizeof(struct pp_shared) + BENCH_MAX_SAMPLES * 8;
    struct pp_shared *sh = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid[2];
    int bad = 0;

    memset(r, 0, sizeof(*r));
    if (sh == MAP_FAILED) {
        r->failed = true;
        return;
    }
    r->ran = true;
    for (int role = 0; role < 2; role++) {
        pid[role] = fork();
        if (pid[role] != 0)
            continue;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (c->pin)
            pin_to_cpu(role == 0 ? 1 : 0);
        atomic_fetch_add(&sh->ready, 1);
        while (!atomic_load(&sh->go))
            ;
        if (role == 0) { /* echo: answer ping n with pong n */
            for (uint32_t last = 0;;) {
                last = await_change(&sh->ping, last, spin);
                post(&sh->pong, last, spin);
                if (last == UINT32_MAX)
                    _exit(0);
            }
        }
        uint64_t end = now_ns() + (uint64_t)(c->secs * 1e9), n = 0;
        uint32_t v = 0;
        for (uint64_t t0 = now_ns(); t0 < end && n < BENCH_MAX_SAMPLES;) {
            post(&sh->ping, ++v, spin);
            if (await_change(&sh->pong, v - 1, spin) != v)
                _exit(1);
            uint64_t t1 = now_ns();
            sh->samples[n++] = t1 - t0;
            t0 = t1;
        }
        sh->n = n;
        post(&sh->ping, UINT32_MAX, spin);
        _exit(0);
    }
    while (atomic_load(&sh->ready) < 2)
        usleep(100);
    atomic_store(&sh->go, 1);
    for (int i = 0; i < 2; i++) {
        int st;
        waitpid(pid[i], &st, 0);
        bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    r->secs = c->secs;
    if (bad)
        r->failed = true;
    else
        latency_summary(sh->samples, sh->n, r);
    munmap(sh, sz);
}

void limit_spin_pingpong(const struct cell *c, struct result *r)
{
    pingpong(c, r, true);
}

void limit_futex_pingpong(const struct cell *c, struct result *r)
{
    pingpong(c, r, false);
}

/* ---------------------------------------------------------------- */
/* memcpy                                                             */
/* ---------------------------------------------------------------- */

void limit_memcpy(const struct cell *c, struct result *r)
{
    /* A message larger than the area (64 MiB) gets an area of its own
     * size, and the clock is read after every copy. */
    size_t n = c->size, area = n > RING_BYTES ? n : RING_BYTES;
    size_t slots = area / n;
    int burst = n > BENCH_MAX_MSG ? 1 : 64;
    unsigned char *src = aligned_alloc(64, (n + 63) & ~(size_t)63);
    unsigned char *dst = aligned_alloc(64, area);
    uint64_t copies = 0, i = 0;

    memset(r, 0, sizeof(*r));
    if (!src || !dst) {
        free(src);
        free(dst);
        r->failed = true;
        return;
    }
    r->ran = true;
    memset(src, 0x5a, n);
    memset(dst, 0, area);
    double t0 = now_sec(), t1;
    do {
        for (int k = 0; k < burst; k++) {
            memcpy(dst + (i % slots) * n, src, n);
            __asm__ volatile("" ::"r"(dst) : "memory");
            i++;
        }
        copies += (uint64_t)burst;
        t1 = now_sec();
    } while (t1 - t0 < c->secs);
    r->secs = t1 - t0;
    r->msgs = copies;
    r->bytes = copies * n;
    r->msg_rate = (double)copies / r->secs;
    r->byte_rate = (double)r->bytes / r->secs;
    free(src);
    free(dst);
}
