/* SPDX-License-Identifier: MIT */
/*
 * test_stress.c - many producer and consumer processes, hundreds of
 * thousands of checked messages: every message arrives exactly once,
 * intact, and each consumer sees each producer's messages in order.
 *
 * Producers put (producer, seq, checksum) payloads of varied sizes into a
 * small queue (so it is full and empty often); consumers log what they
 * got in a MAP_SHARED log; the parent closes the queue once the producers
 * are done, consumers drain to -EPIPE, and the parent checks the log.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "helpers.h"
#include "shmq.h"

/* A put or get waiting this long is a hang. */
#define OP_TIMEOUT_NS   (30 * TH_SEC)
#define REAP_TIMEOUT_NS (50 * TH_SEC) /* all children of one run */
#define SMALL_CAP       256           /* first try of small_buffers consumers */

struct stress_cfg {
    unsigned producers;
    unsigned consumers;
    uint64_t per_producer; /* messages each producer puts */
    size_t min_len;        /* checked messages: TH_PAYLOAD_MIN..max_len */
    size_t max_len;
    size_t maxsize, capacity, max_message;
    bool own_handles;    /* children attach with shmq_from_fd */
    bool small_buffers;  /* consumers first try a SMALL_CAP buffer */
    unsigned zero_every; /* a 0-byte message every n messages; 1: all */
    bool stop_storm;     /* SIGSTOP/SIGCONT children while producers run */
};

/* One delivery, as a consumer logged it. */
struct delivery {
    uint16_t consumer;
    uint16_t ok; /* th_payload_check passed */
    uint32_t producer;
    uint32_t seq;
};

struct stress_shared {
    _Atomic uint64_t next;     /* log entries taken */
    _Atomic uint64_t zero_got; /* 0-byte messages received */
    _Atomic uint64_t errors;   /* unexpected return codes */
    _Atomic int first_rc;      /* the first of them */
    _Atomic int first_where;   /* 1 put, 2 get, 3 attach, 4 len, 5 log */
    uint64_t log_size;
    struct delivery log[];
};

enum { WHERE_PUT = 1, WHERE_GET, WHERE_ATTACH, WHERE_LEN, WHERE_LOG };

static void note_error(struct stress_shared *sh, int where, int rc)
{
    if (atomic_fetch_add(&sh->errors, 1) == 0) {
        atomic_store(&sh->first_rc, rc);
        atomic_store(&sh->first_where, where);
    }
}

static size_t pick_len(uint64_t *rng, const struct stress_cfg *c)
{
    uint64_t r = th_rand_below(rng, 100);
    size_t lo = c->min_len, hi = c->max_len;
    if (r < 50 && hi > 128)
        hi = 128; /* mostly small ones ... */
    else if (r < 85 && hi > 1024)
        hi = 1024;
    if (hi < lo) /* large messages only */
        hi = c->max_len;
    return lo + (size_t)th_rand_below(rng, hi - lo + 1); /* ... some large */
}

static bool is_zero(const struct stress_cfg *c, uint64_t seq)
{
    return c->zero_every && seq % c->zero_every == 0;
}

static int producer(shmq_t *q, struct stress_shared *sh,
                    const struct stress_cfg *c, uint32_t id)
{
    unsigned char *buf = malloc(c->max_len);
    uint64_t rng = 0x1234 + id;
    if (!buf)
        return 2;
    for (uint64_t seq = 0; seq < c->per_producer; seq++) {
        int rc;
        if (is_zero(c, seq)) {
            rc = shmq_put(q, NULL, 0, OP_TIMEOUT_NS);
        } else {
            size_t len = pick_len(&rng, c);
            th_payload_fill(buf, len, id, (uint32_t)seq);
            rc = shmq_put(q, buf, len, OP_TIMEOUT_NS);
        }
        if (rc != 0) {
            note_error(sh, WHERE_PUT, rc);
            free(buf);
            return 1;
        }
    }
    free(buf);
    return 0;
}

static int log_delivery(struct stress_shared *sh, uint16_t consumer,
                        const unsigned char *buf, size_t len)
{
    struct delivery d = {.consumer = consumer};
    d.ok = th_payload_check(buf, len, &d.producer, &d.seq);
    uint64_t i = atomic_fetch_add(&sh->next, 1);
    if (i >= sh->log_size) {
        note_error(sh, WHERE_LOG, 0);
        return -1;
    }
    sh->log[i] = d;
    return 0;
}

/* One get; a too small first buffer is retried with a full one. */
static int get_one(shmq_t *q, struct stress_shared *sh,
                   const struct stress_cfg *c, unsigned char *buf, size_t *len)
{
    size_t full = c->max_message;
    size_t cap = c->small_buffers ? SMALL_CAP : full;
    int rc = shmq_get(q, buf, cap, len, OP_TIMEOUT_NS);
    if (rc == -ENOBUFS && cap < full) {
        if (*len <= cap || *len > full) {
            note_error(sh, WHERE_LEN, (int)*len);
            return rc;
        }
        rc = shmq_get(q, buf, full, len, OP_TIMEOUT_NS);
    }
    if (rc == 0 && *len > full) {
        note_error(sh, WHERE_LEN, (int)*len);
        return -EOVERFLOW;
    }
    return rc;
}

static int consumer(shmq_t *q, struct stress_shared *sh,
                    const struct stress_cfg *c, uint16_t id)
{
    unsigned char *buf = malloc(c->max_message);
    if (!buf)
        return 2;
    for (;;) {
        size_t len = 0;
        int rc = get_one(q, sh, c, buf, &len);
        if (rc == -EPIPE)
            break;
        if (rc != 0) {
            if (rc != -EOVERFLOW && rc != -ENOBUFS)
                note_error(sh, WHERE_GET, rc);
            free(buf);
            return 1;
        }
        if (len == 0)
            atomic_fetch_add(&sh->zero_got, 1);
        else if (log_delivery(sh, id, buf, len) < 0)
            break;
    }
    free(buf);
    return 0;
}

struct role {
    shmq_t *q;
    struct stress_shared *sh;
    const struct stress_cfg *c;
    bool is_producer;
    unsigned id;
};

/* A child: producer or consumer id, on q or on a handle of its own. */
static int run_role(void *arg)
{
    struct role *r = arg;
    shmq_t *h = r->q;
    if (r->c->own_handles) {
        int rc = shmq_from_fd(&h, shmq_fd(r->q));
        if (rc < 0) {
            note_error(r->sh, WHERE_ATTACH, rc);
            return 1;
        }
    }
    int st = r->is_producer ? producer(h, r->sh, r->c, r->id)
                            : consumer(h, r->sh, r->c, (uint16_t)r->id);
    if (h != r->q)
        shmq_release(h);
    return st;
}

static pid_t spawn(shmq_t *q, struct stress_shared *sh,
                   const struct stress_cfg *c, bool is_producer, unsigned id)
{
    struct role r = {q, sh, c, is_producer, id};
    return th_fork(run_role, &r);
}

struct stress_result {
    uint64_t stops;
    uint64_t delivered, missing, duplicates, torn, bad_ids, misordered;
    uint64_t zero_expected, zero_got, errors;
    int first_rc, first_where;
    unsigned children_failed, children_hung;
    size_t qsize_after;
    int64_t elapsed_ms;
};

static void check_log(const struct stress_shared *sh,
                      const struct stress_cfg *c, struct stress_result *r)
{
    uint64_t n = c->per_producer, np = c->producers;
    uint8_t *seen = calloc(np * n, 1);
    int64_t *last = malloc(sizeof(int64_t) * np * c->consumers);
    cr_assert(seen && last);
    for (uint64_t i = 0; i < np * c->consumers; i++)
        last[i] = -1;
    uint64_t count = atomic_load(&sh->next);
    if (count > sh->log_size)
        count = sh->log_size;
    for (uint64_t i = 0; i < count; i++) {
        const struct delivery *d = &sh->log[i];
        if (!d->ok) {
            r->torn++;
            continue;
        }
        if (d->producer >= np || d->seq >= n || is_zero(c, d->seq) ||
            d->consumer >= c->consumers) {
            r->bad_ids++;
            continue;
        }
        r->delivered++;
        if (seen[d->producer * n + d->seq]++)
            r->duplicates++;
        int64_t *l = &last[d->consumer * np + d->producer];
        if ((int64_t)d->seq <= *l)
            r->misordered++;
        *l = (int64_t)d->seq;
    }
    for (uint64_t p = 0; p < np; p++)
        for (uint64_t s = 0; s < n; s++)
            if (!is_zero(c, s) && !seen[p * n + s])
                r->missing++;
    free(seen);
    free(last);
}

static void reap_one(pid_t pid, int64_t deadline_ns, struct stress_result *r)
{
    int64_t left = deadline_ns - th_now_ns();
    int st = th_wait_pid(pid, left > 0 ? left : 1);
    if (st == -1)
        r->children_hung++;
    else if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        r->children_failed++;
}

/* Stop and continue random children (producers from index `first`
 * on) for 0.1 to 10 ms each, until every producer has put everything:
 * processes stopped mid-put and mid-get, as a debugger, a cgroup freezer
 * or a long preemption would. Nobody else may wait for them. */
static void stop_storm(const pid_t *pids, unsigned n, unsigned first,
                       struct stress_result *r)
{
    uint64_t seed = (uint64_t)th_now_ns();
    cr_log_info("stop storm seed %" PRIu64, seed);
    uint64_t rng = seed;
    int64_t deadline = th_now_ns() + REAP_TIMEOUT_NS;
    for (;;) {
        bool producing = false;
        for (unsigned i = first; i < n; i++) {
            siginfo_t si = {0};
            if (waitid(P_PID, (id_t)pids[i], &si,
                       WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == 0)
                producing = true;
        }
        if (!producing || th_now_ns() > deadline)
            break;
        pid_t victim = pids[th_rand_below(&rng, n)];
        kill(victim, SIGSTOP);
        th_sleep_ns(100000 + (int64_t)th_rand_below(&rng, 10 * TH_MS));
        kill(victim, SIGCONT);
        r->stops++;
    }
}

static void run_stress(const struct stress_cfg *c, struct stress_result *r)
{
    struct shmq_config qc = {.maxsize = c->maxsize,
                             .capacity = c->capacity,
                             .max_message = c->max_message};
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &qc), 0);
    cr_assert_geq(shmq_max_message(q), c->max_message);

    uint64_t total = c->per_producer * c->producers;
    uint64_t log_size = total + 1024;
    size_t shared_size =
        sizeof(struct stress_shared) + log_size * sizeof(struct delivery);
    struct stress_shared *sh = th_shared_alloc(shared_size);
    cr_assert(sh);
    sh->log_size = log_size;

    memset(r, 0, sizeof *r);
    int64_t t0 = th_now_ns();
    pid_t pids[64];
    unsigned n = 0;
    for (unsigned i = 0; i < c->consumers; i++)
        pids[n++] = spawn(q, sh, c, false, i);
    for (unsigned i = 0; i < c->producers; i++)
        pids[n++] = spawn(q, sh, c, true, i);

    if (c->stop_storm)
        stop_storm(pids, n, c->consumers, r);

    /* Producers first; then close, so that consumers drain and stop. */
    int64_t deadline = th_now_ns() + REAP_TIMEOUT_NS;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = (k + c->consumers) % n;
        if (k == c->producers)
            shmq_close(q);
        reap_one(pids[i], deadline, r);
    }
    r->elapsed_ms = (th_now_ns() - t0) / 1000000;
    r->qsize_after = shmq_qsize(q);
    check_log(sh, c, r);
    r->zero_got = atomic_load(&sh->zero_got);
    for (uint64_t s = 0; s < c->per_producer; s++)
        r->zero_expected += is_zero(c, s) ? c->producers : 0;
    r->errors = atomic_load(&sh->errors);
    r->first_rc = atomic_load(&sh->first_rc);
    r->first_where = atomic_load(&sh->first_where);
    th_shared_free(sh, shared_size);
    shmq_release(q);
}

static void expect_clean(const struct stress_cfg *c,
                         const struct stress_result *r)
{
    uint64_t checked = c->per_producer * c->producers - r->zero_expected;
    cr_log_info("%ux%u: %" PRIu64 " checked + %" PRIu64
                " empty messages in %" PRId64 " ms, %" PRIu64 " stops",
                c->producers, c->consumers, checked, r->zero_expected,
                r->elapsed_ms, r->stops);
    cr_expect_eq(r->children_hung, 0, "%u children hung", r->children_hung);
    cr_expect_eq(r->errors, 0,
                 "%" PRIu64 " unexpected results; first: %d (%s) at %s",
                 r->errors, r->first_rc, shmq_strerror(r->first_rc),
                 r->first_where == WHERE_PUT      ? "put"
                 : r->first_where == WHERE_GET    ? "get"
                 : r->first_where == WHERE_ATTACH ? "attach"
                 : r->first_where == WHERE_LEN    ? "length check"
                                                  : "log overflow");
    cr_expect_eq(r->children_failed, 0, "%u children failed",
                 r->children_failed);
    cr_expect_eq(r->torn, 0, "%" PRIu64 " torn messages", r->torn);
    cr_expect_eq(r->bad_ids, 0, "%" PRIu64 " messages never put", r->bad_ids);
    cr_expect_eq(r->duplicates, 0, "%" PRIu64 " duplicates", r->duplicates);
    cr_expect_eq(r->missing, 0, "%" PRIu64 " messages missing", r->missing);
    cr_expect_eq(r->misordered, 0, "%" PRIu64 " out of producer order",
                 r->misordered);
    cr_expect_eq(r->delivered, checked, "%" PRIu64 " of %" PRIu64 " delivered",
                 r->delivered, checked);
    cr_expect_eq(r->zero_got, r->zero_expected,
                 "%" PRIu64 " empty messages received, %" PRIu64 " put",
                 r->zero_got, r->zero_expected);
    cr_expect_eq(r->qsize_after, 0, "%zu left in the queue", r->qsize_after);
}

static void stress(struct stress_cfg c)
{
    struct stress_result r;
    if (!c.min_len)
        c.min_len = TH_PAYLOAD_MIN;
    run_stress(&c, &r);
    expect_clean(&c, &r);
}

/* Sizes up to 4 KiB through a 16 KiB queue: full by bytes and by count. */
Test(stress, two_by_two, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 2,
                               .consumers = 2,
                               .per_producer = th_scaled(100000, 500),
                               .max_len = 4096,
                               .maxsize = 64,
                               .capacity = 16384,
                               .max_message = 4096});
}

/* Each child attaches a handle of its own; consumers first try a small
 * buffer, so -ENOBUFS happens under contention and must lose nothing. */
Test(stress, four_by_four_own_handles_small_buffers, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 4,
                               .consumers = 4,
                               .per_producer = th_scaled(50000, 250),
                               .max_len = 2048,
                               .maxsize = 32,
                               .capacity = 8192,
                               .max_message = 2048,
                               .own_handles = true,
                               .small_buffers = true});
}

/* Many small messages into a tiny queue: full nearly all the time. */
Test(stress, three_by_one, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 3,
                               .consumers = 1,
                               .per_producer = th_scaled(50000, 200),
                               .max_len = 256,
                               .maxsize = 16,
                               .capacity = 2048,
                               .max_message = 256});
}

/* One producer, three consumers: empty nearly all the time. */
Test(stress, one_by_three, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 1,
                               .consumers = 3,
                               .per_producer = th_scaled(200000, 600),
                               .max_len = 1024,
                               .maxsize = 128,
                               .capacity = 32768,
                               .max_message = 1024});
}

/* Only 0-byte messages: counted exactly once. */
Test(stress, empty_messages_only, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 3,
                               .consumers = 2,
                               .per_producer = th_scaled(100000, 300),
                               .max_len = TH_PAYLOAD_MIN,
                               .maxsize = 32,
                               .capacity = 4096,
                               .max_message = 64,
                               .zero_every = 1});
}

/* Every third message is 0 bytes, the others are checked. */
Test(stress, empty_messages_mixed, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 2,
                               .consumers = 3,
                               .per_producer = th_scaled(100000, 300),
                               .max_len = 512,
                               .maxsize = 48,
                               .capacity = 4096,
                               .max_message = 512,
                               .own_handles = true,
                               .zero_every = 3});
}

/* Messages of 2 to 16 KiB: both ways of getting, copy-first (payloads up
 * to 4 KiB) and claim-first (larger), race for the same records. */
Test(stress, large_messages_both_get_paths, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 2,
                               .consumers = 3,
                               .per_producer = th_scaled(20000, 200),
                               .min_len = 2048,
                               .max_len = 16384,
                               .maxsize = 16,
                               .capacity = 65536,
                               .max_message = 16384});
}

/* 8 producers and 8 consumers, each stopped at random for up to 10 ms
 * while the others go on: exactly once, in producer order, nothing torn,
 * and nobody hangs behind a stopped process. */
Test(stress, eight_by_eight_stop_storm, .timeout = 150)
{
    stress((struct stress_cfg){.producers = 8,
                               .consumers = 8,
                               .per_producer = th_scaled(250000, 5000),
                               .max_len = 512,
                               .maxsize = 256,
                               .capacity = 64 << 10,
                               .max_message = 1024,
                               .own_handles = true,
                               .stop_storm = true});
}

/* Child: get_nowait into a canary-filled buffer, racing another
 * consumer for every message; a call that fails must leave the buffer
 * as it was. Returns how many failed calls had touched it (as exit
 * status, capped). */
static int racing_consumer(void *arg)
{
    shmq_t *q = arg;
    unsigned char buf[256];
    unsigned touched = 0;
    int64_t end = th_now_ns() + 2 * TH_SEC;
    while (th_now_ns() < end) {
        for (int i = 0; i < 1000; i++) {
            memset(buf, 0xa5, sizeof buf);
            size_t len;
            int rc = shmq_get_nowait(q, buf, sizeof buf, &len);
            if (rc == 0)
                continue;
            if (rc != -EAGAIN)
                return 100;
            for (size_t k = 0; k < sizeof buf; k++)
                if (buf[k] != 0xa5) {
                    touched++;
                    break;
                }
        }
    }
    return touched > 99 ? 99 : (int)touched;
}

static int steady_producer(void *arg)
{
    shmq_t *q = arg;
    unsigned char msg[200];
    memset(msg, 0x3c, sizeof msg);
    int64_t end = th_now_ns() + 2 * TH_SEC;
    while (th_now_ns() < end)
        if (shmq_put(q, msg, sizeof msg, 10 * TH_MS) == -EPIPE)
            break;
    return 0;
}

/* Two consumers race for each message: the loser's failed get must not
 * have written the winner's message into its buffer. */
Test(stress, failed_get_leaves_the_buffer_alone, .timeout = 60)
{
    shmq_t *q = NULL;
    struct shmq_config qc = {.maxsize = 4, .max_message = 256};
    cr_assert_eq(shmq_create(&q, &qc), 0);
    pid_t c1 = th_fork(racing_consumer, q), c2 = th_fork(racing_consumer, q);
    pid_t p = th_fork(steady_producer, q);
    th_assert_child_ok_within(p, 30 * TH_SEC);
    int s1 = th_wait_pid(c1, 30 * TH_SEC), s2 = th_wait_pid(c2, 30 * TH_SEC);
    cr_assert(WIFEXITED(s1) && WIFEXITED(s2));
    cr_assert_eq(WEXITSTATUS(s1), 0, "%d failed gets wrote the buffer",
                 WEXITSTATUS(s1));
    cr_assert_eq(WEXITSTATUS(s2), 0, "%d failed gets wrote the buffer",
                 WEXITSTATUS(s2));
    shmq_release(q);
}
