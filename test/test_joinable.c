/* SPDX-License-Identifier: MIT */
/*
 * test_joinable.c - JoinableQueue: task_done() and join(), on one process
 * and across producer, worker and joiner processes (DESIGN.md, semantics
 * table and "Details").
 */
#include "helpers.h"

static shmq_t *make(unsigned flags, size_t maxsize)
{
    struct shmq_config cfg = {.maxsize = maxsize,
                              .capacity = 1 << 16,
                              .max_message = 64,
                              .flags = flags};
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "create");
    return q;
}

static void get_one(shmq_t *q)
{
    char buf[64];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
}

/* ------------------------------------------------------------------ */
/* Non-joinable queues                                                  */
/* ------------------------------------------------------------------ */

Test(joinable, not_joinable_is_enotsup_without_blocking, .timeout = 20)
{
    shmq_t *q = make(0, 16);
    cr_assert_eq(shmq_task_done(q), -ENOTSUP, "task_done on an empty queue");
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert_eq(shmq_put_nowait(q, "b", 1), 0, "put");
    get_one(q);
    cr_assert_eq(shmq_task_done(q), -ENOTSUP, "task_done after a get");
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_join(q, SHMQ_FOREVER), -ENOTSUP, "join FOREVER");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -ENOTSUP, "join NOWAIT");
    cr_assert_eq(shmq_join(q, 2 * TH_SEC), -ENOTSUP, "join with a timeout");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "join did not block");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* task_done accounting                                                 */
/* ------------------------------------------------------------------ */

Test(joinable, task_done_more_than_items_is_einval, .timeout = 10)
{
    shmq_t *q = make(SHMQ_JOINABLE, 16);
    cr_assert_eq(shmq_task_done(q), -EINVAL, "task_done with no items");
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert_eq(shmq_put_nowait(q, "b", 1), 0, "put");
    get_one(q);
    get_one(q);
    cr_assert_eq(shmq_task_done(q), 0, "task_done 1");
    cr_assert_eq(shmq_task_done(q), 0, "task_done 2");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "task_done 3 of 2 items");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "and again");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0,
                 "the extra calls counted nothing");
    cr_assert_eq(shmq_put_nowait(q, "c", 1), 0, "put");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "one unfinished task");
    get_one(q);
    cr_assert_eq(shmq_task_done(q), 0, "task_done for the new item");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "all done");
    shmq_release(q);
}

Test(joinable, task_done_counts_puts, .timeout = 10)
{
    /* The header: -EINVAL for "more task_done calls than messages put". */
    shmq_t *q = make(SHMQ_JOINABLE, 16);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), 0, "put a 0-byte item");
    cr_assert_eq(shmq_task_done(q), 0, "task_done before any get");
    cr_assert_eq(shmq_task_done(q), 0, "0-byte messages are tasks too");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "more than put");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "joined");
    shmq_release(q);
}

Test(joinable, bad_timeout_is_einval, .timeout = 10)
{
    shmq_t *q = make(SHMQ_JOINABLE, 16);
    cr_assert_eq(shmq_join(q, -2), -EINVAL, "join -2, nothing pending");
    cr_assert_eq(shmq_join(q, INT64_MIN), -EINVAL, "join INT64_MIN");
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert_eq(shmq_join(q, -2), -EINVAL, "join -2, one pending");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* join in one process                                                  */
/* ------------------------------------------------------------------ */

Test(joinable, join_with_no_items_returns_at_once, .timeout = 10)
{
    shmq_t *q = make(SHMQ_JOINABLE, 16);
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "NOWAIT");
    cr_assert_eq(shmq_join(q, 5 * TH_SEC), 0, "timeout");
    cr_assert_eq(shmq_join(q, SHMQ_FOREVER), 0, "FOREVER");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "did not wait");
    shmq_release(q);
}

Test(joinable, join_nowait_with_unfinished_is_eagain, .timeout = 10)
{
    shmq_t *q = make(SHMQ_JOINABLE, 16);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shmq_put_nowait(q, "t", 1), 0, "put");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "3 unfinished, queued");
    for (int i = 0; i < 3; i++)
        get_one(q);
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "3 unfinished, taken");
    cr_assert_eq(shmq_task_done(q), 0, "done 1");
    cr_assert_eq(shmq_task_done(q), 0, "done 2");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "1 unfinished");
    cr_assert_eq(shmq_task_done(q), 0, "done 3");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "all done");
    cr_assert_eq(shmq_join(q, 10 * TH_MS), 0, "all done, with a timeout");
    shmq_release(q);
}

Test(joinable, join_times_out, .timeout = 20)
{
    shmq_t *q = make(SHMQ_JOINABLE, 16);
    cr_assert_eq(shmq_put_nowait(q, "t", 1), 0, "put");
    static const int64_t ts[] = {50 * TH_MS, 1, 120 * TH_MS};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t t0 = th_now_ns();
        int r = shmq_join(q, ts[i]);
        int64_t dt = th_now_ns() - t0;
        cr_assert_eq(r, -ETIMEDOUT, "join %lld ns: %d", (long long)ts[i], r);
        cr_assert_geq(dt, ts[i], "returned after %lld ns", (long long)dt);
        cr_assert_lt(dt, ts[i] + TH_TIMEOUT_SLACK_NS, "took %lld ns",
                     (long long)dt);
    }
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Across processes                                                     */
/* ------------------------------------------------------------------ */

#define ITEMS   2000
#define WORKERS 2

struct shared {
    uint32_t done;         /* task_done calls that returned 0 */
    uint32_t got;          /* items taken by workers */
    uint32_t joined;       /* set by a joiner once join returned 0 */
    uint32_t done_at_join; /* done as seen right after join returned */
    uint32_t ready;
};

static shmq_t *jq;
static struct shared *sh;

static int child_worker(void *p)
{
    (void)p;
    unsigned char m[64];
    size_t len;
    for (;;) {
        int r = shmq_get(jq, m, sizeof m, &len, 20 * TH_SEC);
        if (r == -EPIPE)
            return 0;
        TH_CHECK_EQ(r, 0);
        TH_CHECK(th_payload_check(m, len, NULL, NULL));
        __atomic_add_fetch(&sh->got, 1, __ATOMIC_SEQ_CST);
        /* The count goes up before task_done: a join that returns 0 must
         * see every item's increment. */
        __atomic_add_fetch(&sh->done, 1, __ATOMIC_SEQ_CST);
        TH_CHECK_EQ(shmq_task_done(jq), 0);
    }
}

static int child_producer(void *p)
{
    (void)p;
    unsigned char m[32];
    for (uint32_t i = 0; i < ITEMS; i++) {
        th_payload_fill(m, sizeof m, 7, i);
        TH_CHECK_EQ(shmq_put(jq, m, sizeof m, 20 * TH_SEC), 0);
    }
    return 0;
}

static void setup_shared(size_t maxsize)
{
    jq = make(SHMQ_JOINABLE, maxsize);
    sh = th_shared_alloc(sizeof *sh);
    cr_assert_not_null(sh, "shared memory");
}

static void teardown_shared(void)
{
    th_shared_free(sh, sizeof *sh);
    shmq_release(jq);
}

Test(joinable, join_waits_for_workers_in_other_processes, .timeout = 60)
{
    setup_shared(64);
    pid_t pids[WORKERS + 1];
    for (int i = 0; i < WORKERS; i++)
        pids[i] = th_fork(child_worker, NULL);
    pids[WORKERS] = th_fork(child_producer, NULL);
    /* Join only once every item is put (as Python's join after put). */
    th_assert_child_ok(pids[WORKERS]);
    int r = shmq_join(jq, 30 * TH_SEC);
    uint32_t done = __atomic_load_n(&sh->done, __ATOMIC_SEQ_CST);
    cr_assert_eq(r, 0, "join: %d", r);
    cr_assert_eq(done, ITEMS, "join returned with %u of %u tasks done", done,
                 ITEMS);
    cr_assert_eq(shmq_qsize(jq), 0, "everything taken");
    cr_assert_eq(shmq_join(jq, SHMQ_NOWAIT), 0, "joined stays joined");
    cr_assert_eq(shmq_close(jq), 0, "close stops the workers");
    th_assert_children_ok_within(pids, WORKERS, 10 * TH_SEC);
    cr_assert_eq(sh->got, ITEMS, "items taken");
    teardown_shared();
}

/* A joiner process blocked in join while this process does the work. */
static int child_joiner(void *p)
{
    (void)p;
    __atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
    int r = shmq_join(jq, 20 * TH_SEC);
    uint32_t done = __atomic_load_n(&sh->done, __ATOMIC_SEQ_CST);
    TH_CHECK_EQ(r, 0);
    TH_CHECK_EQ(done, 10);
    __atomic_add_fetch(&sh->joined, 1, __ATOMIC_SEQ_CST);
    return 0;
}

Test(joinable, join_in_other_processes_wakes_on_last_task_done, .timeout = 60)
{
    setup_shared(64);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(shmq_put_nowait(jq, "job", 3), 0, "put");
    pid_t pids[2];
    pids[0] = th_fork(child_joiner, NULL);
    pids[1] = th_fork(child_joiner, NULL);
    int64_t end = th_now_ns() + 10 * TH_SEC;
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < 2 &&
           th_now_ns() < end)
        th_sleep_ns(TH_MS);
    for (int i = 0; i < 2; i++)
        cr_assert(th_wait_sleeping(pids[i], pids[i], 10 * TH_SEC),
                  "joiner never blocked");
    for (int i = 0; i < 10; i++) {
        get_one(jq);
        th_sleep_ns(5 * TH_MS);
        cr_assert_eq(__atomic_load_n(&sh->joined, __ATOMIC_SEQ_CST), 0,
                     "a joiner returned with %d tasks done", i);
        __atomic_add_fetch(&sh->done, 1, __ATOMIC_SEQ_CST);
        cr_assert_eq(shmq_task_done(jq), 0, "task_done %d", i);
    }
    th_assert_children_ok_within(pids, 2, 5 * TH_SEC);
    cr_assert_eq(sh->joined, 2, "both joiners returned");
    teardown_shared();
}

/* Producer, workers and joiner all in separate processes; the parent
 * only watches. The joiner starts after the producer finished. */
static int child_join_after_producer(void *p)
{
    (void)p;
    int64_t end = th_now_ns() + 20 * TH_SEC;
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) == 0 &&
           th_now_ns() < end)
        th_sleep_ns(TH_MS);
    TH_CHECK(__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) != 0);
    TH_CHECK_EQ(shmq_join(jq, 20 * TH_SEC), 0);
    TH_CHECK_EQ(__atomic_load_n(&sh->done, __ATOMIC_SEQ_CST), ITEMS);
    return 0;
}

Test(joinable, producer_workers_joiner_processes, .timeout = 60)
{
    setup_shared(16);
    pid_t workers[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        workers[i] = th_fork(child_worker, NULL);
    pid_t producer = th_fork(child_producer, NULL);
    pid_t joiner = th_fork(child_join_after_producer, NULL);
    th_assert_child_ok(producer);
    __atomic_store_n(&sh->ready, 1, __ATOMIC_SEQ_CST); /* all put */
    th_assert_child_ok(joiner);
    cr_assert_eq(shmq_close(jq), 0, "close");
    th_assert_children_ok_within(workers, WORKERS, 10 * TH_SEC);
    cr_assert_eq(sh->done, ITEMS, "every task done");
    teardown_shared();
}
