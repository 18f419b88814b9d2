/* SPDX-License-Identifier: MIT */
/*
 * harness.c - run one cell over one transport, in forked processes.
 *
 * Throughput: C consumers and P producers are forked, attach, and wait
 * on a futex until the parent starts the clock. Producers send stamped
 * messages until the parent raises the stop flag (after cell->secs), then
 * exit; the parent calls the transport's finish() (or sends one stop
 * message per consumer), and each consumer records what it received and
 * when it got to the end. Rate = messages received / (last consumer's
 * end - start): every message sent is received and counted, and the
 * total must equal what the producers sent.
 *
 * Latency: a pinger and an echoer, over two channels (two queues). The
 * pinger timestamps each round trip; both sides check every payload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct ctl {
    _Atomic uint32_t go; /* futex word: 1 once the clock started */
    _Atomic uint32_t ready;
    _Atomic uint32_t stop;
    _Atomic uint32_t failed;
    uint64_t t_start;
    uint64_t sent[BENCH_MAX_PROCS];
    struct {
        uint64_t msgs, bytes, t_end;
    } cons[BENCH_MAX_PROCS];
    char err[160];
    uint64_t nsamples;
    uint64_t samples[]; /* latency only */
};

static void fail(struct ctl *ctl, const char *what, int err)
{
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&ctl->failed, &expected, 1))
        snprintf(ctl->err, sizeof(ctl->err), "%s%s%s", what, err ? ": " : "",
                 err ? strerror(-err) : "");
}

static void wait_go(struct ctl *ctl)
{
    atomic_fetch_add(&ctl->ready, 1);
    while (atomic_load(&ctl->go) == 0)
        syscall(SYS_futex, &ctl->go, FUTEX_WAIT, 0, NULL, NULL, 0);
}

static void start_clock(struct ctl *ctl, unsigned nprocs)
{
    uint64_t deadline = now_ns() + 20000000000ull;
    while (atomic_load(&ctl->ready) < nprocs && !atomic_load(&ctl->failed) &&
           now_ns() < deadline)
        usleep(200);
    ctl->t_start = now_ns();
    atomic_store(&ctl->go, 1);
    syscall(SYS_futex, &ctl->go, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static void sleep_sec(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---------------------------------------------------------------- */
/* throughput                                                         */
/* ---------------------------------------------------------------- */

size_t bench_batch(const struct transport *t, size_t size)
{
    size_t most = (4u << 20) / (size ? size : 1);
    size_t n = t->batch < most ? t->batch : most;
    return n ? n : 1;
}

/* A producer that hands over batches (send_many): nb messages, each in
 * its own buffer (the pattern, stamps rewritten per message), sent in
 * one call; the stop flag is looked at between batches. */
static int producer_many(struct chan *ch, struct ctl *ctl, unsigned idx,
                         struct payload *pl, uint64_t quota)
{
    size_t nb = bench_batch(ch->t, pl->size),
           alloc = (pl->size + 63) & ~(size_t)63;
    struct iovec iov[BENCH_MAX_BATCH];
    struct payload views[BENCH_MAX_BATCH];
    uint64_t seq = 0;
    int rc = 0;

    if (nb > BENCH_MAX_BATCH)
        nb = BENCH_MAX_BATCH;
    for (size_t i = 0; i < nb; i++) {
        views[i] = (struct payload){aligned_alloc(64, alloc ? alloc : 64),
                                    pl->pattern, pl->size};
        if (!views[i].buf) {
            fail(ctl, "producer: out of memory", 0);
            nb = i, rc = -ENOMEM;
            break;
        }
        memcpy(views[i].buf, pl->pattern, pl->size);
        iov[i] = (struct iovec){views[i].buf, pl->size};
    }
    wait_go(ctl);
    while (rc == 0 && seq < quota &&
           !atomic_load_explicit(&ctl->stop, memory_order_relaxed)) {
        size_t n = quota - seq < nb ? (size_t)(quota - seq) : nb;
        for (size_t i = 0; i < n; i++)
            payload_stamp(&views[i], stamp_make(idx, seq + i));
        rc = ch->t->send_many(ch, iov, n);
        if (rc < 0)
            fail(ctl, "producer: send_many", rc);
        else
            seq += n;
    }
    ctl->sent[idx] = seq;
    for (size_t i = 0; i < nb; i++)
        free(views[i].buf);
    return rc;
}

static int producer(struct chan *ch, struct ctl *ctl, unsigned idx)
{
    struct payload pl;
    uint64_t seq = 0;
    int rc;

    if (payload_init(&pl, ch->cell->size, idx) != 0)
        return fail(ctl, "producer: out of memory", 0), 1;
    rc = ch->t->attach(ch, ROLE_PRODUCER, (int)idx);
    if (rc < 0) {
        fail(ctl, "producer: attach", rc);
        atomic_fetch_add(&ctl->ready, 1);
        return 1;
    }
    uint64_t quota =
        ch->cell->count ? ch->cell->count / ch->cell->producers : UINT64_MAX;
    if (ch->t->send_many) {
        rc = producer_many(ch, ctl, idx, &pl, quota);
        ch->t->detach(ch);
        payload_free(&pl);
        return rc < 0;
    }
    wait_go(ctl);
    while (seq < quota &&
           !atomic_load_explicit(&ctl->stop, memory_order_relaxed)) {
        payload_stamp(&pl, stamp_make(idx, seq));
        rc = ch->t->send(ch, pl.buf, pl.size);
        if (rc < 0) {
            fail(ctl, "producer: send", rc);
            break;
        }
        seq++;
    }
    ctl->sent[idx] = seq;
    ch->t->detach(ch);
    payload_free(&pl);
    return rc < 0;
}

static int consumer(struct chan *ch, struct ctl *ctl, unsigned idx)
{
    const struct cell *c = ch->cell;
    unsigned char *patterns[BENCH_MAX_PROCS] = {0};
    uint64_t next[BENCH_MAX_PROCS] = {0};
    size_t cap = c->size < 64 ? 64 : c->size;
    unsigned char *buf = aligned_alloc(64, (cap + 63) & ~(size_t)63);
    uint64_t msgs = 0, bytes = 0;
    int rc, bad = 0;

    for (unsigned p = 0; p < c->producers; p++) {
        patterns[p] = malloc(cap);
        if (!patterns[p])
            return fail(ctl, "consumer: out of memory", 0), 1;
        payload_fill_pattern(patterns[p], c->size, p);
    }
    if (!buf)
        return fail(ctl, "consumer: out of memory", 0), 1;
    rc = ch->t->attach(ch, ROLE_CONSUMER, (int)idx);
    if (rc < 0) {
        fail(ctl, "consumer: attach", rc);
        atomic_fetch_add(&ctl->ready, 1);
        return 1;
    }
    wait_go(ctl);
    for (;;) {
        size_t len = 0;
        const void *msg = buf;
        rc = ch->t->recv_ref ? ch->t->recv_ref(ch, &msg, &len)
                             : ch->t->recv(ch, buf, cap, &len);
        if (rc == RECV_END)
            break;
        if (rc < 0) {
            fail(ctl, "consumer: recv", rc);
            bad = 1;
            break;
        }
        uint64_t s = payload_stamp_of(msg, len);
        if (s == STAMP_STOP && len == c->size)
            break;
        unsigned p = stamp_producer(s);
        const char *why = p < c->producers ? NULL : "bad producer in stamp";
        if (!why && stamp_seq(s) < next[p])
            why = "sequence went backwards (FIFO per producer broken)";
        if (!why)
            why = payload_check(msg, len, c->size, patterns[p]);
        if (ch->t->recv_done && (rc = ch->t->recv_done(ch)) < 0 && !why)
            why = "recv_done failed";
        if (why) {
            fail(ctl, why, 0);
            bad = 1;
            break;
        }
        next[p] = stamp_seq(s) + 1;
        msgs++;
        bytes += len;
    }
    ctl->cons[idx].t_end = now_ns();
    ctl->cons[idx].msgs = msgs;
    ctl->cons[idx].bytes = bytes;
    ch->t->detach(ch);
    for (unsigned p = 0; p < c->producers; p++)
        free(patterns[p]);
    free(buf);
    return bad;
}

/* Stop messages from the parent, for transports without finish(). */
int harness_send_stops(struct chan *ch, unsigned n)
{
    struct payload pl;
    int rc = payload_init(&pl, ch->cell->size, 0);
    if (rc < 0)
        return rc;
    rc = ch->t->attach(ch, ROLE_PARENT, 0);
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        payload_stamp(&pl, STAMP_STOP);
        ch->role_index = (int)i; /* lets zmq pick consumer i */
        rc = ch->t->send(ch, pl.buf, pl.size);
    }
    if (rc == 0)
        ch->t->detach(ch);
    payload_free(&pl);
    return rc;
}

static int reap(pid_t *pids, unsigned n, double timeout)
{
    int bad = 0;
    double deadline = now_sec() + timeout;
    for (unsigned i = 0; i < n; i++) {
        int st;
        for (;;) {
            pid_t w = waitpid(pids[i], &st, WNOHANG);
            if (w == pids[i])
                break;
            if (now_sec() > deadline) {
                kill(pids[i], SIGKILL);
                waitpid(pids[i], &st, 0);
                bad = 1;
                break;
            }
            usleep(1000);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (getenv("SHMQ_BENCH_DEBUG"))
                fprintf(stderr, "child %d: status 0x%x\n", (int)pids[i], st);
            bad = 1;
        }
    }
    return bad;
}

static pid_t spawn(int (*fn)(struct chan *, struct ctl *, unsigned),
                   struct chan *ch, struct ctl *ctl, unsigned idx, int cpu)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive an interrupted run */
        if (cpu >= 0)
            pin_to_cpu(cpu);
        _exit(fn(ch, ctl, idx));
    }
    return pid;
}

/* Sleep for secs, looking at how full the queue is ten times (at most
 * every 5 ms); the mean tells which side waits for which. A ring's fill
 * is two shared words; shmq's qsize walks the descriptors in flight, up
 * to 65536 of them (~0.1 ms) when full: every 5 ms keeps that near 2%
 * of a CPU. */
static double sample_fill(struct chan *ch, double secs)
{
    double sum = 0, end = now_sec() + secs;
    unsigned n = 0;
    while (now_sec() < end) {
        sleep_sec(secs < 0.05 ? secs / 10 : 0.005);
        sum += ch->t->fill(ch);
        n++;
    }
    return n ? sum / n : -1;
}

static void throughput(const struct transport *t, const struct cell *c,
                       struct result *r, struct ctl *ctl)
{
    struct chan ch = {.t = t, .cell = c};
    pid_t cons[BENCH_MAX_PROCS], prod[BENCH_MAX_PROCS];
    unsigned nc = 0, np = 0;
    int rc = t->setup(&ch), bad = 0;

    if (rc < 0) {
        snprintf(r->note, sizeof(r->note), "setup: %s", strerror(-rc));
        r->failed = true;
        return;
    }
    for (; nc < c->consumers; nc++)
        cons[nc] = spawn(consumer, &ch, ctl, nc, c->pin ? 1 : -1);
    for (; np < c->producers; np++)
        prod[np] = spawn(producer, &ch, ctl, np, c->pin ? 0 : -1);
    start_clock(ctl, nc + np);
    if (!c->count) {
        r->fill =
            t->fill ? sample_fill(&ch, c->secs) : (sleep_sec(c->secs), -1);
        atomic_store(&ctl->stop, 1);
    }
    bad |= reap(prod, np, c->count ? 600 : 30);
    rc = t->finish ? t->finish(&ch) : harness_send_stops(&ch, nc);
    if (rc < 0)
        fail(ctl, "finish", rc);
    bad |= reap(cons, nc, 30);
    t->teardown(&ch);

    uint64_t sent = 0, t_end = 0;
    for (unsigned i = 0; i < np; i++)
        sent += ctl->sent[i];
    for (unsigned i = 0; i < nc; i++) {
        r->msgs += ctl->cons[i].msgs;
        r->bytes += ctl->cons[i].bytes;
        if (ctl->cons[i].t_end > t_end)
            t_end = ctl->cons[i].t_end;
    }
    if (!ctl->failed && r->msgs != sent) {
        snprintf(ctl->err, sizeof(ctl->err),
                 "received %llu of %llu messages sent",
                 (unsigned long long)r->msgs, (unsigned long long)sent);
        ctl->failed = 1;
    }
    r->secs = (double)(t_end - ctl->t_start) / 1e9;
    if (ctl->failed || bad || r->secs <= 0) {
        r->failed = true;
        snprintf(r->note, sizeof(r->note), "%s",
                 ctl->failed ? ctl->err : "a process failed or hung");
        return;
    }
    r->msg_rate = (double)r->msgs / r->secs;
    r->byte_rate = (double)r->bytes / r->secs;
}

/* ---------------------------------------------------------------- */
/* latency                                                            */
/* ---------------------------------------------------------------- */

static int recv_checked(struct chan *ch, unsigned char *buf, size_t cap,
                        const unsigned char *pattern, uint64_t *stamp,
                        struct ctl *ctl)
{
    size_t len = 0;
    int rc = ch->t->recv(ch, buf, cap, &len);
    if (rc != 0) {
        fail(ctl, "recv", rc < 0 ? rc : -EPIPE);
        return -1;
    }
    *stamp = payload_stamp_of(buf, len);
    if (*stamp == STAMP_STOP && len == ch->cell->size)
        return 1;
    const char *why = payload_check(buf, len, ch->cell->size, pattern);
    if (why) {
        fail(ctl, why, 0);
        return -1;
    }
    return 0;
}

static int echoer(struct chan *ch, struct ctl *ctl, unsigned idx)
{
    struct chan *in = &ch[0], *out = &ch[1];
    struct payload pl;
    uint64_t stamp;
    int rc, bad = 0;
    (void)idx;

    if (payload_init(&pl, in->cell->size, 0) != 0)
        return 1;
    if ((rc = in->t->attach(in, ROLE_CONSUMER, 0)) < 0 ||
        (rc = out->t->attach(out, ROLE_PRODUCER, 0)) < 0) {
        fail(ctl, "echo: attach", rc);
        atomic_fetch_add(&ctl->ready, 1);
        return 1;
    }
    wait_go(ctl);
    for (;;) {
        rc = recv_checked(in, pl.buf, pl.size < 64 ? 64 : pl.size, pl.pattern,
                          &stamp, ctl);
        if (rc != 0) {
            bad = rc < 0;
            break;
        }
        rc = out->t->send(out, pl.buf, pl.size);
        if (rc < 0) {
            fail(ctl, "echo: send", rc);
            bad = 1;
            break;
        }
    }
    in->t->detach(in);
    out->t->detach(out);
    payload_free(&pl);
    return bad;
}

static int pinger(struct chan *ch, struct ctl *ctl, unsigned idx)
{
    struct chan *out = &ch[0], *in = &ch[1];
    struct payload pl;
    size_t cap = in->cell->size < 64 ? 64 : in->cell->size;
    unsigned char *buf = aligned_alloc(64, (cap + 63) & ~(size_t)63);
    uint64_t stamp, n = 0, end;
    int rc, bad = 0;
    (void)idx;

    if (!buf || payload_init(&pl, in->cell->size, 0) != 0) {
        free(buf);
        return 1;
    }
    if ((rc = out->t->attach(out, ROLE_PRODUCER, 0)) < 0 ||
        (rc = in->t->attach(in, ROLE_CONSUMER, 0)) < 0) {
        fail(ctl, "ping: attach", rc);
        atomic_fetch_add(&ctl->ready, 1);
        payload_free(&pl);
        free(buf);
        return 1;
    }
    wait_go(ctl);
    /* Untimed round trips first: connections set up, caches warm. */
    for (unsigned w = 0; w < 20; w++) {
        payload_stamp(&pl, stamp_make(0, w));
        if ((rc = out->t->send(out, pl.buf, pl.size)) < 0 ||
            (rc = recv_checked(in, buf, cap, pl.pattern, &stamp, ctl)) != 0) {
            fail(ctl, "ping: warm-up", rc < 0 ? rc : 0);
            payload_free(&pl);
            free(buf);
            return 1;
        }
    }
    end = now_ns() + (uint64_t)(in->cell->secs * 1e9);
    uint64_t quota = in->cell->count ? in->cell->count : BENCH_MAX_SAMPLES;
    if (quota > BENCH_MAX_SAMPLES)
        quota = BENCH_MAX_SAMPLES;
    for (uint64_t t0 = now_ns(); (in->cell->count || t0 < end) && n < quota;) {
        payload_stamp(&pl, stamp_make(0, n + 20));
        rc = out->t->send(out, pl.buf, pl.size);
        if (rc < 0) {
            fail(ctl, "ping: send", rc);
            bad = 1;
            break;
        }
        rc = recv_checked(in, buf, cap, pl.pattern, &stamp, ctl);
        uint64_t t1 = now_ns();
        if (rc == 0 && stamp != stamp_make(0, n + 20)) {
            fail(ctl, "echo returned another message", 0);
            rc = -1;
        }
        if (rc != 0) {
            bad = 1;
            break;
        }
        ctl->samples[n++] = t1 - t0;
        t0 = t1;
    }
    ctl->nsamples = n;
    payload_stamp(&pl, STAMP_STOP);
    if (!bad && (rc = out->t->send(out, pl.buf, pl.size)) < 0) {
        fail(ctl, "ping: send stop", rc);
        bad = 1;
    }
    out->t->detach(out);
    in->t->detach(in);
    payload_free(&pl);
    free(buf);
    return bad;
}

static void latency(const struct transport *t, const struct cell *c,
                    struct result *r, struct ctl *ctl)
{
    struct chan ch[2] = {{.t = t, .cell = c, .index = 0},
                         {.t = t, .cell = c, .index = 1}};
    pid_t pids[2];
    int rc;

    if ((rc = t->setup(&ch[0])) < 0 ||
        ((rc = t->setup(&ch[1])) < 0 && (t->teardown(&ch[0]), 1))) {
        snprintf(r->note, sizeof(r->note), "setup: %s", strerror(-rc));
        r->failed = true;
        return;
    }
    pids[0] = spawn(echoer, ch, ctl, 0, c->pin ? 1 : -1);
    pids[1] = spawn(pinger, ch, ctl, 0, c->pin ? 0 : -1);
    start_clock(ctl, 2);
    int bad = reap(pids, 2, c->count ? 600 : c->secs + 30);
    t->teardown(&ch[0]);
    t->teardown(&ch[1]);
    r->secs = c->secs;
    if (ctl->failed || bad) {
        r->failed = true;
        snprintf(r->note, sizeof(r->note), "%s",
                 ctl->failed ? ctl->err : "a process failed or hung");
        return;
    }
    latency_summary(ctl->samples, ctl->nsamples, r);
}

void harness_run(const struct transport *t, const struct cell *c,
                 struct result *r)
{
    size_t sz =
        sizeof(struct ctl) +
        (c->sc == SC_LATENCY ? BENCH_MAX_SAMPLES * sizeof(uint64_t) : 0);
    const char *why = t->usable ? t->usable(c) : NULL;

    memset(r, 0, sizeof(*r));
    if (why) {
        snprintf(r->note, sizeof(r->note), "%s", why);
        return;
    }
    struct ctl *ctl = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED) {
        r->failed = true;
        snprintf(r->note, sizeof(r->note), "mmap failed");
        return;
    }
    r->ran = true;
    if (c->sc == SC_THROUGHPUT)
        throughput(t, c, r, ctl);
    else
        latency(t, c, r, ctl);
    munmap(ctl, sz);
}
