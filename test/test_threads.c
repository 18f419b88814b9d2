/* SPDX-License-Identifier: MIT */
/*
 * test_threads.c - many threads on one queue: every message arrives
 * exactly once, intact, and each consumer sees each producer's messages
 * in order; with all threads sharing ONE handle, and with a handle per
 * thread.
 *
 * No fork here: this suite also runs under ThreadSanitizer ('tsan'),
 * which sees races between threads only. Sizes shrink there (and with
 * SHMQ_TEST_SCALE) through th_scaled(). Criterion's runner itself does
 * not start under TSan (its BoxFort arena wants addresses TSan reserves:
 * Snaipe/Criterion#274), so there this file brings its own main() that
 * runs the same cases and speaks TAP, as meson expects; the checks are
 * therefore written as verdicts, not cr_assert()s.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "helpers.h"
#include "shmq.h"

#define MAX_THREADS   16
#define OP_TIMEOUT_NS (30 * TH_SEC) /* a wait that long is a hang */
#define SMALL_CAP     200

enum waits { WAIT_BLOCKING, WAIT_MIXED };

struct thr_cfg {
    unsigned producers, consumers;
    uint64_t per_producer;
    size_t max_len; /* checked messages of TH_PAYLOAD_MIN..max_len bytes */
    size_t maxsize, capacity, max_message;
    bool own_handles;   /* each thread attaches with shmq_from_fd */
    bool small_buffers; /* consumers first try SMALL_CAP bytes */
    enum waits waits;
};

struct delivery {
    uint32_t producer;
    uint32_t seq;
};

struct thr_run {
    const struct thr_cfg *c;
    shmq_t *q;
    _Atomic uint64_t errors;
    _Atomic int first_rc;
    _Atomic uint64_t torn;
};

struct thr_arg {
    struct thr_run *run;
    unsigned id;
    struct delivery *log; /* consumers: what they got, in order */
    uint64_t count;
    uint64_t log_cap;
};

static void note_error(struct thr_run *run, int rc)
{
    if (atomic_fetch_add(&run->errors, 1) == 0)
        atomic_store(&run->first_rc, rc);
}

static shmq_t *thread_handle(struct thr_run *run)
{
    if (!run->c->own_handles)
        return run->q;
    shmq_t *h = NULL;
    int rc = shmq_from_fd(&h, shmq_fd(run->q));
    if (rc < 0) {
        note_error(run, rc);
        return NULL;
    }
    return h;
}

static void thread_release(struct thr_run *run, shmq_t *h)
{
    if (h != run->q)
        shmq_release(h);
}

/* WAIT_MIXED: NOWAIT (then yield), 1 ms, or a long timeout. */
static int64_t pick_timeout(const struct thr_cfg *c, uint64_t *rng)
{
    if (c->waits == WAIT_BLOCKING)
        return OP_TIMEOUT_NS;
    uint64_t r = th_rand_below(rng, 3);
    return r == 0 ? SHMQ_NOWAIT : r == 1 ? TH_MS : OP_TIMEOUT_NS;
}

static bool retry_rc(int rc, int64_t timeout)
{
    return (rc == -EAGAIN && timeout == SHMQ_NOWAIT) ||
           (rc == -ETIMEDOUT && timeout == TH_MS);
}

static size_t pick_len(const struct thr_cfg *c, uint64_t *rng)
{
    size_t hi = th_rand_below(rng, 4) ? 128 : c->max_len;
    if (hi > c->max_len)
        hi = c->max_len;
    return TH_PAYLOAD_MIN + th_rand_below(rng, hi - TH_PAYLOAD_MIN + 1);
}

static void *producer(void *p)
{
    struct thr_arg *a = p;
    struct thr_run *run = a->run;
    const struct thr_cfg *c = run->c;
    uint64_t rng = 77 + a->id;
    unsigned char *buf = malloc(c->max_len);
    shmq_t *h = thread_handle(run);
    if (!buf || !h) {
        note_error(run, -ENOMEM);
        free(buf);
        return NULL;
    }
    for (uint64_t seq = 0; seq < c->per_producer; seq++) {
        size_t len = pick_len(c, &rng);
        th_payload_fill(buf, len, a->id, (uint32_t)seq);
        for (;;) {
            int64_t timeout = pick_timeout(c, &rng);
            int rc = shmq_put(h, buf, len, timeout);
            if (rc == 0)
                break;
            if (!retry_rc(rc, timeout)) {
                note_error(run, rc);
                goto out;
            }
            sched_yield();
        }
    }
out:
    thread_release(run, h);
    free(buf);
    return NULL;
}

/* One message into buf; a too small first buffer is retried in full. */
static int get_one(shmq_t *h, const struct thr_cfg *c, uint64_t *rng,
                   unsigned char *buf, size_t *len)
{
    for (;;) {
        int64_t timeout = pick_timeout(c, rng);
        size_t cap = c->small_buffers ? SMALL_CAP : c->max_message;
        int rc = shmq_get(h, buf, cap, len, timeout);
        if (rc == -ENOBUFS && cap < c->max_message) {
            if (*len <= cap || *len > c->max_message)
                return -EOVERFLOW;
            rc = shmq_get(h, buf, c->max_message, len, timeout);
        }
        if (rc == 0 && *len > c->max_message)
            return -EOVERFLOW;
        if (!retry_rc(rc, timeout) && rc != -ENOBUFS)
            return rc;
        sched_yield();
    }
}

static void *consumer(void *p)
{
    struct thr_arg *a = p;
    struct thr_run *run = a->run;
    const struct thr_cfg *c = run->c;
    uint64_t rng = 99 + a->id;
    unsigned char *buf = malloc(c->max_message);
    shmq_t *h = thread_handle(run);
    if (!buf || !h) {
        note_error(run, -ENOMEM);
        free(buf);
        return NULL;
    }
    for (;;) {
        size_t len = 0;
        int rc = get_one(h, c, &rng, buf, &len);
        if (rc == -EPIPE)
            break;
        if (rc != 0) {
            note_error(run, rc);
            break;
        }
        struct delivery d;
        if (!th_payload_check(buf, len, &d.producer, &d.seq)) {
            atomic_fetch_add(&run->torn, 1);
            continue;
        }
        if (a->count == a->log_cap) {
            note_error(run, -ENOSPC);
            break;
        }
        a->log[a->count++] = d;
    }
    thread_release(run, h);
    free(buf);
    return NULL;
}

struct thr_result {
    uint64_t delivered, duplicates, missing, misordered, never_put;
};

/* The first failed check of a run, in words; ok when none failed. */
struct verdict {
    bool failed;
    char why[256];
};

#define VERDICT(v, cond, ...)                                                  \
    do {                                                                       \
        if (!(cond) && !(v)->failed) {                                         \
            (v)->failed = true;                                                \
            snprintf((v)->why, sizeof(v)->why, __VA_ARGS__);                   \
        }                                                                      \
    } while (0)

static void check_logs(const struct thr_cfg *c, const struct thr_arg *cons,
                       struct thr_result *r)
{
    uint64_t n = c->per_producer, np = c->producers;
    uint8_t *seen = calloc(np * n, 1);
    if (!seen) {
        r->missing = np * n;
        return;
    }
    for (unsigned k = 0; k < c->consumers; k++) {
        int64_t last[MAX_THREADS];
        for (unsigned p = 0; p < MAX_THREADS; p++)
            last[p] = -1;
        for (uint64_t i = 0; i < cons[k].count; i++) {
            const struct delivery *d = &cons[k].log[i];
            if (d->producer >= np || d->seq >= n) {
                r->never_put++;
                continue;
            }
            r->delivered++;
            if (seen[d->producer * n + d->seq]++)
                r->duplicates++;
            if ((int64_t)d->seq <= last[d->producer])
                r->misordered++;
            last[d->producer] = d->seq;
        }
    }
    for (uint64_t i = 0; i < np * n; i++)
        r->missing += !seen[i];
    free(seen);
}

static void judge(const struct thr_run *run, const struct thr_result *r,
                  uint64_t total, size_t left, struct verdict *v)
{
    int first = atomic_load(&run->first_rc);
    VERDICT(v, atomic_load(&run->errors) == 0,
            "%" PRIu64 " unexpected results, first %d (%s)",
            atomic_load(&run->errors), first, shmq_strerror(first));
    VERDICT(v, atomic_load(&run->torn) == 0, "%" PRIu64 " torn messages",
            atomic_load(&run->torn));
    VERDICT(v, r->never_put == 0, "%" PRIu64 " messages never put",
            r->never_put);
    VERDICT(v, r->duplicates == 0, "%" PRIu64 " duplicates", r->duplicates);
    VERDICT(v, r->missing == 0, "%" PRIu64 " missing", r->missing);
    VERDICT(v, r->misordered == 0, "%" PRIu64 " out of producer order",
            r->misordered);
    VERDICT(v, r->delivered == total, "%" PRIu64 " of %" PRIu64 " delivered",
            r->delivered, total);
    VERDICT(v, left == 0, "%zu left in the queue", left);
}

static void start_threads(struct thr_run *run, struct thr_arg *prod,
                          pthread_t *pt, struct thr_arg *cons, pthread_t *ct,
                          uint64_t total, struct verdict *v)
{
    const struct thr_cfg *c = run->c;
    for (unsigned i = 0; i < c->consumers; i++) {
        cons[i] = (struct thr_arg){run, i, NULL, 0, total};
        cons[i].log = malloc(total * sizeof(struct delivery));
        VERDICT(v, cons[i].log != NULL, "out of memory");
        VERDICT(v, pthread_create(&ct[i], NULL, consumer, &cons[i]) == 0,
                "pthread_create");
    }
    for (unsigned i = 0; i < c->producers; i++) {
        prod[i] = (struct thr_arg){run, i, NULL, 0, 0};
        VERDICT(v, pthread_create(&pt[i], NULL, producer, &prod[i]) == 0,
                "pthread_create");
    }
}

/* One case: producers, then close, then consumers drain; the checks. */
static void run_threads(const struct thr_cfg *c, struct verdict *v, int64_t *ms)
{
    struct shmq_config qc = {.maxsize = c->maxsize,
                             .capacity = c->capacity,
                             .max_message = c->max_message};
    struct thr_run run = {.c = c};
    int rc = shmq_create(&run.q, &qc);
    VERDICT(v, rc == 0, "shmq_create: %s", shmq_strerror(rc));
    if (v->failed)
        return;
    uint64_t total = c->per_producer * c->producers;
    struct thr_arg prod[MAX_THREADS], cons[MAX_THREADS];
    pthread_t pt[MAX_THREADS], ct[MAX_THREADS];
    int64_t t0 = th_now_ns();
    start_threads(&run, prod, pt, cons, ct, total, v);
    if (v->failed)
        abort(); /* threads half started: nothing sane to do */
    for (unsigned i = 0; i < c->producers; i++)
        pthread_join(pt[i], NULL);
    rc = shmq_close(run.q);
    VERDICT(v, rc == 0, "shmq_close: %s", shmq_strerror(rc));
    for (unsigned i = 0; i < c->consumers; i++)
        pthread_join(ct[i], NULL);
    *ms = (th_now_ns() - t0) / TH_MS;
    size_t left = shmq_qsize(run.q);

    struct thr_result r = {0};
    check_logs(c, cons, &r);
    for (unsigned i = 0; i < c->consumers; i++)
        free(cons[i].log);
    shmq_release(run.q);
    judge(&run, &r, total, left, v);
}

/* ------------------------------------------------------------------ */
/* The cases                                                            */
/* ------------------------------------------------------------------ */

struct thr_case {
    const char *name;
    struct thr_cfg cfg;
};

static const struct thr_case cases[] = {
    /* Eight threads through one handle, blocking calls. */
    {"one_handle_4x4",
     {.producers = 4,
      .consumers = 4,
      .per_producer = 200000,
      .max_len = 2048,
      .maxsize = 64,
      .capacity = 16384,
      .max_message = 2048}},
    /* One handle; NOWAIT, short and long timeouts mixed; small first
     * buffers (-ENOBUFS under contention must lose nothing). */
    {"one_handle_mixed_waits",
     {.producers = 3,
      .consumers = 3,
      .per_producer = 60000,
      .max_len = 1024,
      .maxsize = 16,
      .capacity = 4096,
      .max_message = 1024,
      .small_buffers = true,
      .waits = WAIT_MIXED}},
    /* A handle of its own per thread (same queue). */
    {"own_handles_3x3",
     {.producers = 3,
      .consumers = 3,
      .per_producer = 60000,
      .max_len = 512,
      .maxsize = 32,
      .capacity = 4096,
      .max_message = 512,
      .own_handles = true}},
    /* Own handles and mixed waits, many producers into one consumer. */
    {"own_handles_mixed_6x1",
     {.producers = 6,
      .consumers = 1,
      .per_producer = 20000,
      .max_len = 256,
      .maxsize = 8,
      .capacity = 1024,
      .max_message = 256,
      .own_handles = true,
      .waits = WAIT_MIXED}},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static void run_case(unsigned i, struct verdict *v, int64_t *ms)
{
    struct thr_cfg c = cases[i].cfg;
    c.per_producer = th_scaled(c.per_producer, 100);
    run_threads(&c, v, ms);
}

#ifndef TH_TSAN

static void criterion_case(unsigned i)
{
    struct verdict v = {0};
    int64_t ms = 0;
    run_case(i, &v, &ms);
    cr_log_info("%s: %" PRId64 " ms", cases[i].name, ms);
    cr_assert(!v.failed, "%s", v.why);
}

Test(threads, one_handle_4x4, .timeout = 240)
{
    criterion_case(0);
}

Test(threads, one_handle_mixed_waits, .timeout = 240)
{
    criterion_case(1);
}

Test(threads, own_handles_3x3, .timeout = 240)
{
    criterion_case(2);
}

Test(threads, own_handles_mixed_6x1, .timeout = 240)
{
    criterion_case(3);
}

#else /* TH_TSAN: no Criterion runner, TAP by hand */

int main(void)
{
    int failed = 0;
    printf("1..%zu\n", N_CASES);
    for (unsigned i = 0; i < N_CASES; i++) {
        struct verdict v = {0};
        int64_t ms = 0;
        run_case(i, &v, &ms);
        if (v.failed)
            printf("not ok %u - threads::%s # %s\n", i + 1, cases[i].name,
                   v.why);
        else
            printf("ok %u - threads::%s # %" PRId64 " ms\n", i + 1,
                   cases[i].name, ms);
        fflush(stdout);
        failed |= v.failed;
    }
    return failed;
}

#endif
