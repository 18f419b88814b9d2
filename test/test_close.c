/* SPDX-License-Identifier: MIT */
/*
 * test_close.c - shmq_close replaces sentinels: it wakes every blocked put
 * and get in every process, put is -EPIPE from then on, get drains then
 * returns -EPIPE (DESIGN.md, semantics table and "Details").
 */
#include "helpers.h"

#include <pthread.h>

#define NCHILD 4

static shmq_t *make(size_t maxsize, size_t capacity, size_t max_message)
{
    struct shmq_config cfg = {
        .maxsize = maxsize, .capacity = capacity, .max_message = max_message};
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "create");
    return q;
}

/* ------------------------------------------------------------------ */
/* Close wakes blocked calls in other processes                         */
/* ------------------------------------------------------------------ */

struct blocker {
    shmq_t *q;
    int64_t timeout;
    volatile int *ready; /* shared counter: children about to block */
};

static int child_get_until_closed(void *p)
{
    struct blocker *b = p;
    char buf[64];
    size_t len = 0;
    __atomic_add_fetch(b->ready, 1, __ATOMIC_SEQ_CST);
    int r = shmq_get(b->q, buf, sizeof buf, &len, b->timeout);
    TH_CHECK_EQ(r, -EPIPE);
    /* And from now on without waiting. */
    TH_CHECK_EQ(shmq_get(b->q, buf, sizeof buf, &len, b->timeout), -EPIPE);
    TH_CHECK(shmq_closed(b->q));
    return 0;
}

static int child_put_until_closed(void *p)
{
    struct blocker *b = p;
    __atomic_add_fetch(b->ready, 1, __ATOMIC_SEQ_CST);
    int r = shmq_put(b->q, "blocked", 7, b->timeout);
    TH_CHECK_EQ(r, -EPIPE);
    TH_CHECK_EQ(shmq_put(b->q, "again", 5, b->timeout), -EPIPE);
    TH_CHECK(shmq_closed(b->q));
    return 0;
}

/* Fork n children running fn, wait until all are asleep in the call. */
static void fork_blocked(pid_t *pids, int n, th_child_fn fn, struct blocker *b)
{
    for (int i = 0; i < n; i++)
        pids[i] = th_fork(fn, b);
    int64_t end = th_now_ns() + 10 * TH_SEC;
    while (__atomic_load_n(b->ready, __ATOMIC_SEQ_CST) < n && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert_eq(__atomic_load_n(b->ready, __ATOMIC_SEQ_CST), n,
                 "children ready");
    for (int i = 0; i < n; i++)
        cr_assert(th_wait_sleeping(pids[i], pids[i], 10 * TH_SEC),
                  "child %d never blocked", (int)pids[i]);
    th_sleep_ns(20 * TH_MS);
}

static void close_wakes(th_child_fn fn, int64_t child_timeout, bool full)
{
    shmq_t *q = make(4, 4096, 64);
    if (full)
        for (int i = 0; i < 4; i++)
            cr_assert_eq(shmq_put_nowait(q, "x", 1), 0, "fill");
    volatile int *ready = th_shared_alloc(sizeof *ready);
    cr_assert_not_null(ready, "shared memory");
    struct blocker b = {q, child_timeout, ready};
    pid_t pids[NCHILD];
    fork_blocked(pids, NCHILD, fn, &b);
    cr_assert_not(shmq_closed(q), "not closed yet");
    cr_assert_eq(shmq_close(q), 0, "close");
    /* Children wait up to 30 s (or forever): returning within 5 s means
     * the close woke them. */
    th_assert_children_ok_within(pids, NCHILD, 5 * TH_SEC);
    th_shared_free((void *)ready, sizeof *ready);
    shmq_release(q);
}

Test(close, wakes_blocked_getters_in_other_processes, .timeout = 30)
{
    close_wakes(child_get_until_closed, 30 * TH_SEC, false);
}

Test(close, wakes_blocked_getters_waiting_forever, .timeout = 30)
{
    close_wakes(child_get_until_closed, SHMQ_FOREVER, false);
}

Test(close, wakes_blocked_putters_in_other_processes, .timeout = 30)
{
    close_wakes(child_put_until_closed, 30 * TH_SEC, true);
}

Test(close, wakes_blocked_putters_waiting_forever, .timeout = 30)
{
    close_wakes(child_put_until_closed, SHMQ_FOREVER, true);
}

/* Two queues, getters blocked on one and putters on the other, closed by
 * a third process through its own handles. */
static shmq_t *cq_empty, *cq_full;

static int child_close_both(void *p)
{
    (void)p;
    TH_CHECK_EQ(shmq_close(cq_empty), 0);
    TH_CHECK_EQ(shmq_close(cq_full), 0);
    return 0;
}

Test(close, close_from_another_process_wakes_all, .timeout = 30)
{
    cq_empty = make(4, 4096, 64);
    cq_full = make(2, 4096, 64);
    cr_assert_eq(shmq_put_nowait(cq_full, "a", 1), 0, "fill");
    cr_assert_eq(shmq_put_nowait(cq_full, "b", 1), 0, "fill");
    volatile int *ready = th_shared_alloc(2 * sizeof *ready);
    cr_assert_not_null(ready, "shared memory");
    struct blocker g = {cq_empty, 30 * TH_SEC, &ready[0]};
    struct blocker f = {cq_full, 30 * TH_SEC, &ready[1]};
    pid_t pids[NCHILD + 1];
    fork_blocked(pids, NCHILD / 2, child_get_until_closed, &g);
    fork_blocked(pids + NCHILD / 2, NCHILD / 2, child_put_until_closed, &f);
    pids[NCHILD] = th_fork(child_close_both, NULL);
    th_assert_children_ok_within(pids, NCHILD + 1, 5 * TH_SEC);
    cr_assert(shmq_closed(cq_empty), "closed seen by the parent");
    cr_assert(shmq_closed(cq_full), "closed seen by the parent");
    th_shared_free((void *)ready, 2 * sizeof *ready);
    shmq_release(cq_empty);
    shmq_release(cq_full);
}

/* A thread of this process blocked on the handle that gets closed. */
struct thread_arg {
    shmq_t *q;
    pid_t tid; /* atomic: set just before the get */
};

static void *thread_get(void *p)
{
    struct thread_arg *a = p;
    char buf[8];
    size_t len;
    __atomic_store_n(&a->tid, th_gettid(), __ATOMIC_SEQ_CST);
    intptr_t r = shmq_get(a->q, buf, sizeof buf, &len, 30 * TH_SEC);
    return (void *)r;
}

Test(close, wakes_blocked_thread_same_handle, .timeout = 30)
{
    struct thread_arg a = {make(4, 4096, 64), 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, thread_get, &a), 0, "thread");
    int64_t end = th_now_ns() + 10 * TH_SEC;
    while (__atomic_load_n(&a.tid, __ATOMIC_SEQ_CST) == 0 && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert(th_wait_sleeping(getpid(), a.tid, 10 * TH_SEC),
              "the thread never blocked");
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_close(a.q), 0, "close");
    void *ret;
    cr_assert_eq(pthread_join(t, &ret), 0, "join");
    cr_assert_eq((intptr_t)ret, -EPIPE, "blocked get returned %d",
                 (int)(intptr_t)ret);
    cr_assert_lt(th_now_ns() - t0, 5 * TH_SEC, "woke promptly");
    shmq_release(a.q);
}

/* ------------------------------------------------------------------ */
/* put after close                                                      */
/* ------------------------------------------------------------------ */

Test(close, put_after_close_is_epipe, .timeout = 20)
{
    shmq_t *q = make(4, 4096, 64);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put before close");
    cr_assert_eq(shmq_close(q), 0, "close");
    cr_assert(shmq_closed(q), "closed");
    cr_assert_eq(shmq_put_nowait(q, "b", 1), -EPIPE, "put_nowait");
    cr_assert_eq(shmq_put(q, "b", 1, SHMQ_NOWAIT), -EPIPE, "put NOWAIT");
    cr_assert_eq(shmq_put(q, NULL, 0, SHMQ_NOWAIT), -EPIPE, "0-byte put");
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put(q, "b", 1, 3 * TH_SEC), -EPIPE, "put with timeout");
    cr_assert_eq(shmq_put(q, "b", 1, SHMQ_FOREVER), -EPIPE, "put FOREVER");
    cr_assert_eq(shmq_put(q, "b", 1, 1), -EPIPE, "put with 1 ns");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "-EPIPE without waiting");
    cr_assert_eq(shmq_qsize(q), 1, "nothing added");
    shmq_release(q);
}

Test(close, put_on_closed_full_queue_is_epipe, .timeout = 20)
{
    shmq_t *q = make(2, 4096, 64);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "fill");
    cr_assert_eq(shmq_put_nowait(q, "b", 1), 0, "fill");
    cr_assert_eq(shmq_close(q), 0, "close");
    cr_assert_eq(shmq_put_nowait(q, "c", 1), -EPIPE, "closed wins over full");
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put(q, "c", 1, 3 * TH_SEC), -EPIPE, "with a timeout");
    cr_assert_eq(shmq_put(q, "c", 1, SHMQ_FOREVER), -EPIPE, "FOREVER");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "-EPIPE without waiting");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* get drains, then -EPIPE                                              */
/* ------------------------------------------------------------------ */

Test(close, get_drains_then_epipe, .timeout = 20)
{
    shmq_t *q = make(8, 4096, 64);
    for (uint32_t i = 0; i < 6; i++)
        cr_assert_eq(shmq_put_nowait(q, &i, sizeof i), 0, "put %u", i);
    cr_assert_eq(shmq_close(q), 0, "close");
    uint32_t v;
    size_t len;
    /* Drain with every kind of timeout. */
    cr_assert_eq(shmq_get_nowait(q, &v, sizeof v, &len), 0, "get_nowait");
    cr_assert_eq(v, 0, "FIFO");
    cr_assert_eq(shmq_get(q, &v, sizeof v, &len, SHMQ_NOWAIT), 0, "NOWAIT");
    cr_assert_eq(v, 1, "FIFO");
    cr_assert_eq(shmq_get(q, &v, sizeof v, &len, 50 * TH_MS), 0, "timeout");
    cr_assert_eq(v, 2, "FIFO");
    cr_assert_eq(shmq_get(q, &v, sizeof v, &len, SHMQ_FOREVER), 0, "FOREVER");
    cr_assert_eq(v, 3, "FIFO");
    cr_assert_eq(shmq_qsize(q), 2, "qsize while draining");
    /* -ENOBUFS still leaves the message on a closed queue. */
    len = 0;
    cr_assert_eq(shmq_get_nowait(q, &v, 1, &len), -ENOBUFS, "cap too small");
    cr_assert_eq(len, sizeof v, "*len");
    cr_assert_eq(shmq_get_nowait(q, &v, sizeof v, &len), 0, "get");
    cr_assert_eq(v, 4, "FIFO");
    cr_assert_eq(shmq_get_nowait(q, &v, sizeof v, &len), 0, "get");
    cr_assert_eq(v, 5, "FIFO");
    cr_assert(shmq_empty(q), "drained");

    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_get_nowait(q, &v, sizeof v, &len), -EPIPE, "nowait");
    cr_assert_eq(shmq_get(q, &v, sizeof v, &len, SHMQ_NOWAIT), -EPIPE,
                 "NOWAIT");
    cr_assert_eq(shmq_get(q, &v, sizeof v, &len, 3 * TH_SEC), -EPIPE,
                 "timeout");
    cr_assert_eq(shmq_get(q, &v, sizeof v, &len, SHMQ_FOREVER), -EPIPE,
                 "FOREVER");
    cr_assert_eq(shmq_get(q, NULL, 0, &len, SHMQ_NOWAIT), -EPIPE,
                 "NULL buf, cap 0");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "-EPIPE without waiting");
    shmq_release(q);
}

Test(close, close_empty_queue_get_is_epipe, .timeout = 20)
{
    shmq_t *q = make(8, 4096, 64);
    cr_assert_eq(shmq_close(q), 0, "close");
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EPIPE,
                 "closed and empty: -EPIPE, not -EAGAIN");
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, 2 * TH_SEC), -EPIPE,
                 "closed and empty: -EPIPE, not -ETIMEDOUT");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "without waiting");
    shmq_release(q);
}

Test(close, second_close_returns_zero, .timeout = 10)
{
    shmq_t *q = make(8, 4096, 64), *q2 = NULL;
    cr_assert_eq(shmq_from_fd(&q2, shmq_fd(q)), 0, "second handle");
    cr_assert_eq(shmq_close(q), 0, "close");
    cr_assert_eq(shmq_close(q), 0, "second close");
    cr_assert_eq(shmq_close(q2), 0, "close through another handle");
    cr_assert(shmq_closed(q) && shmq_closed(q2), "closed");
    shmq_release(q2);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* closed() seen from other handles and processes                       */
/* ------------------------------------------------------------------ */

Test(close, closed_seen_by_other_handles, .timeout = 10)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "closed");
    struct shmq_config cfg = {
        .maxsize = 8, .capacity = 4096, .max_message = 64};
    shmq_t *q = NULL, *q2 = NULL, *q3 = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), 0, "create");
    cr_assert_eq(shmq_open(&q2, name), 0, "open");
    cr_assert_eq(shmq_from_fd(&q3, shmq_fd(q)), 0, "from_fd");
    shmq_unlink(name);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert(!shmq_closed(q) && !shmq_closed(q2) && !shmq_closed(q3), "open");
    cr_assert_eq(shmq_close(q2), 0, "close via the opened handle");
    cr_assert(shmq_closed(q) && shmq_closed(q2) && shmq_closed(q3),
              "closed everywhere");
    cr_assert_eq(shmq_put_nowait(q3, "b", 1), -EPIPE, "put via a third");
    char buf[4];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q3, buf, sizeof buf, &len), 0, "drain");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EPIPE, "drained");
    shmq_release(q3);
    shmq_release(q2);
    shmq_release(q);
}

static int child_wait_closed(void *p)
{
    shmq_t *q = p;
    int64_t end = th_now_ns() + 10 * TH_SEC;
    while (!shmq_closed(q) && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    TH_CHECK(shmq_closed(q));
    TH_CHECK_EQ(shmq_put_nowait(q, "x", 1), -EPIPE);
    return 0;
}

static int child_close(void *p)
{
    TH_CHECK(!shmq_closed(p));
    TH_CHECK_EQ(shmq_close(p), 0);
    TH_CHECK(shmq_closed(p));
    return 0;
}

Test(close, closed_seen_by_other_processes, .timeout = 30)
{
    shmq_t *q = make(8, 4096, 64);
    pid_t pid = th_fork(child_wait_closed, q);
    th_sleep_ns(50 * TH_MS);
    cr_assert_eq(shmq_close(q), 0, "close in the parent");
    th_assert_child_ok(pid);
    shmq_release(q);

    q = make(8, 4096, 64);
    pid = th_fork(child_close, q);
    th_assert_child_ok(pid);
    cr_assert(shmq_closed(q), "the child's close is seen by the parent");
    cr_assert_eq(shmq_put_nowait(q, "x", 1), -EPIPE, "put in the parent");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Close racing with producers: nothing put successfully is lost        */
/* ------------------------------------------------------------------ */

#define RACE_PRODUCERS 2

struct race {
    shmq_t *q;
    uint32_t *accepted; /* shared: puts that returned 0, per producer */
};
static struct race race;
static uint32_t race_id;

static int child_produce_until_closed(void *p)
{
    (void)p;
    uint32_t id = race_id;
    unsigned char m[32];
    for (uint32_t seq = 0;; seq++) {
        th_payload_fill(m, sizeof m, id, seq);
        int r = shmq_put(race.q, m, sizeof m, 10 * TH_SEC);
        if (r == -EPIPE)
            return 0;
        TH_CHECK_EQ(r, 0);
        __atomic_store_n(&race.accepted[id], seq + 1, __ATOMIC_SEQ_CST);
    }
}

Test(close, close_racing_puts_loses_nothing, .timeout = 60)
{
    for (int round = 0; round < 40; round++) {
        race.q = make(16, 4096, 64);
        race.accepted = th_shared_alloc(RACE_PRODUCERS * sizeof(uint32_t));
        cr_assert_not_null(race.accepted, "shared memory");
        pid_t pids[RACE_PRODUCERS];
        for (uint32_t i = 0; i < RACE_PRODUCERS; i++) {
            race_id = i;
            pids[i] = th_fork(child_produce_until_closed, NULL);
        }
        uint32_t next[RACE_PRODUCERS] = {0};
        unsigned char m[64];
        size_t len;
        uint32_t got = 0, close_at = 100 + 97 * (uint32_t)round;
        for (;;) {
            if (got == close_at)
                cr_assert_eq(shmq_close(race.q), 0, "close");
            int r = shmq_get(race.q, m, sizeof m, &len, 10 * TH_SEC);
            if (r == -EPIPE)
                break;
            cr_assert_eq(r, 0, "get: %d", r);
            uint32_t id, seq;
            cr_assert(th_payload_check(m, len, &id, &seq), "intact payload");
            cr_assert_lt(id, RACE_PRODUCERS, "producer id");
            cr_assert_eq(seq, next[id], "producer %u: got %u, expected %u", id,
                         seq, next[id]);
            next[id]++;
            got++;
        }
        cr_assert_geq(got, close_at, "got everything before the close");
        th_assert_children_ok_within(pids, RACE_PRODUCERS, 10 * TH_SEC);
        /* For the report: is a missing message lost, or did get say
         * -EPIPE while it was still being put? */
        size_t late = shmq_qsize(race.q);
        int late_get = shmq_get_nowait(race.q, m, sizeof m, &len);
        for (uint32_t i = 0; i < RACE_PRODUCERS; i++)
            cr_assert_eq(next[i], race.accepted[i],
                         "round %d producer %u: %u accepted, %u delivered "
                         "before -EPIPE (afterwards qsize %zu, get %d)",
                         round, i, race.accepted[i], next[i], late, late_get);
        th_shared_free(race.accepted, RACE_PRODUCERS * sizeof(uint32_t));
        shmq_release(race.q);
    }
}

/* ------------------------------------------------------------------ */
/* Several processes drain a closed queue                               */
/* ------------------------------------------------------------------ */

#define DRAIN_ITEMS    200
#define DRAIN_CHILDREN 3

static shmq_t *drain_q;
static unsigned char *drain_seen; /* shared: per item, times received */

static int child_drain(void *p)
{
    (void)p;
    for (;;) {
        uint32_t v;
        size_t len;
        int r = shmq_get(drain_q, &v, sizeof v, &len, 10 * TH_SEC);
        if (r == -EPIPE)
            break;
        TH_CHECK_EQ(r, 0);
        TH_CHECK_EQ(len, sizeof v);
        TH_CHECK(v < DRAIN_ITEMS);
        __atomic_add_fetch(&drain_seen[v], 1, __ATOMIC_SEQ_CST);
    }
    TH_CHECK_EQ(shmq_get_nowait(drain_q, NULL, 0, &(size_t){0}), -EPIPE);
    return 0;
}

Test(close, processes_drain_closed_queue, .timeout = 30)
{
    drain_q = make(DRAIN_ITEMS, 1 << 16, 64);
    drain_seen = th_shared_alloc(DRAIN_ITEMS);
    cr_assert_not_null(drain_seen, "shared memory");
    for (uint32_t i = 0; i < DRAIN_ITEMS; i++)
        cr_assert_eq(shmq_put_nowait(drain_q, &i, sizeof i), 0, "put");
    cr_assert_eq(shmq_close(drain_q), 0, "close");
    pid_t pids[DRAIN_CHILDREN];
    for (int i = 0; i < DRAIN_CHILDREN; i++)
        pids[i] = th_fork(child_drain, NULL);
    th_assert_children_ok_within(pids, DRAIN_CHILDREN, 10 * TH_SEC);
    for (uint32_t i = 0; i < DRAIN_ITEMS; i++)
        cr_assert_eq(drain_seen[i], 1, "item %u received %u times", i,
                     drain_seen[i]);
    cr_assert(shmq_empty(drain_q), "drained");
    th_shared_free(drain_seen, DRAIN_ITEMS);
    shmq_release(drain_q);
}
