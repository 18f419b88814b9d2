/* SPDX-License-Identifier: MIT */
/*
 * test_signals.c - "A signal never ends a wait early: the wait resumes
 * until the deadline (no -EINTR from any call)" (DESIGN.md, "Details").
 *
 * A storm of SIGUSR1, caught by an empty handler installed without
 * SA_RESTART (so every blocking system call really is interrupted), hits
 * the waiting thread about every 100 us while it blocks in get, put and
 * join.
 */
#include "helpers.h"

#include <pthread.h>

#define STORM_SIGNAL    SIGUSR1
#define STORM_PERIOD_NS 100000

static volatile sig_atomic_t hits;

static void on_signal(int sig)
{
    (void)sig;
    hits++;
}

/* Catch STORM_SIGNAL with an empty handler, without SA_RESTART. */
static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(STORM_SIGNAL, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, STORM_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* A thread that signals target every STORM_PERIOD_NS until stopped. */
struct storm {
    pthread_t target;
    pthread_t thread;
    int stop; /* atomic */
    unsigned long sent;
};

static void *storm_main(void *p)
{
    struct storm *s = p;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, STORM_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* only the target catches it */
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        if (pthread_kill(s->target, STORM_SIGNAL) == 0)
            s->sent++;
        th_sleep_ns(STORM_PERIOD_NS);
    }
    return NULL;
}

static void storm_start(struct storm *s)
{
    install_handler();
    hits = 0;
    s->target = pthread_self();
    s->stop = 0;
    s->sent = 0;
    cr_assert_eq(pthread_create(&s->thread, NULL, storm_main, s), 0,
                 "storm thread");
}

static void storm_stop(struct storm *s)
{
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    pthread_join(s->thread, NULL);
}

static shmq_t *make(size_t maxsize, unsigned flags)
{
    struct shmq_config cfg = {.maxsize = maxsize,
                              .capacity = 4096,
                              .max_message = 64,
                              .flags = flags};
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "create");
    return q;
}

/* ------------------------------------------------------------------ */
/* Timeouts still expire, and not early                                 */
/* ------------------------------------------------------------------ */

enum op { OP_GET, OP_PUT, OP_JOIN };

static int do_op(shmq_t *q, enum op op, int64_t timeout)
{
    char buf[64];
    size_t len;
    switch (op) {
    case OP_GET:
        return shmq_get(q, buf, sizeof buf, &len, timeout);
    case OP_PUT:
        return shmq_put(q, "x", 1, timeout);
    case OP_JOIN:
        return shmq_join(q, timeout);
    }
    return -ENOSYS;
}

static const char *const op_names[] = {"get", "put", "join"};

/* q is empty (get), full (put) or has an unfinished task (join).
 * Results are checked once the storm is over, so that Criterion's own
 * reporting never runs under it. */
static void timeout_under_storm(shmq_t *q, enum op op)
{
    static const int64_t ts[] = {200 * TH_MS, 5 * TH_MS, 1 * TH_MS, 50 * TH_MS};
    enum { N = sizeof ts / sizeof ts[0] };
    int r[2][N];
    int64_t dt[2][N];
    int got[2][N];
    int spin_r[2];
    struct storm s;
    storm_start(&s);
    for (int spin = 0; spin < 2; spin++) {
        spin_r[spin] = shmq_set_spin(q, spin ? SHMQ_DEFAULT_SPIN_NS : 0);
        for (size_t i = 0; i < N; i++) {
            sig_atomic_t before = hits;
            int64_t t0 = th_now_ns();
            r[spin][i] = do_op(q, op, ts[i]);
            dt[spin][i] = th_now_ns() - t0;
            got[spin][i] = (int)(hits - before);
        }
    }
    storm_stop(&s);
    for (int spin = 0; spin < 2; spin++) {
        cr_assert_eq(spin_r[spin], 0, "set_spin");
        for (size_t i = 0; i < N; i++) {
            const char *name = op_names[op];
            long long t = (long long)ts[i];
            cr_assert_neq(r[spin][i], -EINTR, "%s returned -EINTR", name);
            cr_assert_eq(r[spin][i], -ETIMEDOUT, "%s with %lld ns: %d", name, t,
                         r[spin][i]);
            cr_assert_geq(dt[spin][i], ts[i],
                          "%s with %lld ns returned after %lld ns", name, t,
                          (long long)dt[spin][i]);
            cr_assert_lt(dt[spin][i], ts[i] + TH_TIMEOUT_SLACK_NS,
                         "%s took %lld ns", name, (long long)dt[spin][i]);
            if (ts[i] >= 50 * TH_MS)
                cr_assert_gt(got[spin][i], 5,
                             "only %d signals during a %lld ms wait",
                             got[spin][i], t / TH_MS);
        }
    }
}

Test(signals, get_timeout_under_storm, .timeout = 30)
{
    shmq_t *q = make(4, 0);
    timeout_under_storm(q, OP_GET);
    shmq_release(q);
}

Test(signals, put_timeout_under_storm, .timeout = 30)
{
    shmq_t *q = make(2, 0);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "fill");
    cr_assert_eq(shmq_put_nowait(q, "b", 1), 0, "fill");
    timeout_under_storm(q, OP_PUT);
    cr_assert_eq(shmq_qsize(q), 2, "nothing added");
    shmq_release(q);
}

Test(signals, join_timeout_under_storm, .timeout = 30)
{
    shmq_t *q = make(4, SHMQ_JOINABLE);
    cr_assert_eq(shmq_put_nowait(q, "t", 1), 0, "put");
    timeout_under_storm(q, OP_JOIN);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Waits without a deadline still end by the event                      */
/* ------------------------------------------------------------------ */

/* If the library hangs, close the queue so the blocked get or put ends
 * (with -EPIPE, failing the test) instead of the test hanging. */
struct watchdog {
    shmq_t *q;
    pthread_t thread;
    int stop; /* atomic */
};

static void *watchdog_main(void *p)
{
    struct watchdog *w = p;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, STORM_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int64_t end = th_now_ns() + 15 * TH_SEC;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        if (th_now_ns() >= end) {
            shmq_close(w->q);
            break;
        }
        th_sleep_ns(5 * TH_MS);
    }
    return NULL;
}

static void watchdog_start(struct watchdog *w, shmq_t *q)
{
    w->q = q;
    w->stop = 0;
    cr_assert_eq(pthread_create(&w->thread, NULL, watchdog_main, w), 0,
                 "watchdog");
}

static void watchdog_stop(struct watchdog *w)
{
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    pthread_join(w->thread, NULL);
}

static int child_put_later(void *p)
{
    th_sleep_ns(300 * TH_MS);
    TH_CHECK_EQ(shmq_put(p, "late", 4, 5 * TH_SEC), 0);
    return 0;
}

static int child_get_later(void *p)
{
    char buf[64];
    size_t len;
    th_sleep_ns(300 * TH_MS);
    TH_CHECK_EQ(shmq_get(p, buf, sizeof buf, &len, 5 * TH_SEC), 0);
    return 0;
}

static int child_task_done_later(void *p)
{
    char buf[64];
    size_t len;
    th_sleep_ns(300 * TH_MS);
    TH_CHECK_EQ(shmq_get(p, buf, sizeof buf, &len, 5 * TH_SEC), 0);
    TH_CHECK_EQ(shmq_task_done(p), 0);
    return 0;
}

Test(signals, get_forever_under_storm_gets_later_put, .timeout = 30)
{
    for (int spin = 0; spin < 2; spin++) {
        shmq_t *q = make(4, 0);
        cr_assert_eq(shmq_set_spin(q, spin ? SHMQ_DEFAULT_SPIN_NS : 0), 0,
                     "set_spin");
        struct watchdog w;
        watchdog_start(&w, q);
        pid_t pid = th_fork(child_put_later, q);
        struct storm s;
        storm_start(&s);
        char buf[64];
        size_t len = 0;
        int r = shmq_get(q, buf, sizeof buf, &len, SHMQ_FOREVER);
        storm_stop(&s);
        watchdog_stop(&w);
        th_assert_child_ok(pid);
        cr_assert_neq(r, -EINTR, "get returned -EINTR");
        cr_assert_eq(r, 0, "get FOREVER: %d", r);
        cr_assert_eq(len, 4, "len");
        cr_assert_eq(memcmp(buf, "late", 4), 0, "content");
        cr_assert_gt(hits, 5, "the storm reached the waiter (%d)", (int)hits);
        shmq_release(q);
    }
}

Test(signals, put_forever_under_storm_woken_by_get, .timeout = 30)
{
    shmq_t *q = make(1, 0);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "fill");
    struct watchdog w;
    watchdog_start(&w, q);
    pid_t pid = th_fork(child_get_later, q);
    struct storm s;
    storm_start(&s);
    int r = shmq_put(q, "b", 1, SHMQ_FOREVER);
    storm_stop(&s);
    watchdog_stop(&w);
    th_assert_child_ok(pid);
    cr_assert_eq(r, 0, "put FOREVER: %d", r);
    cr_assert_eq(shmq_qsize(q), 1, "the new message");
    shmq_release(q);
}

Test(signals, join_under_storm_woken_by_task_done, .timeout = 30)
{
    shmq_t *q = make(4, SHMQ_JOINABLE);
    cr_assert_eq(shmq_put_nowait(q, "t", 1), 0, "put");
    pid_t pid = th_fork(child_task_done_later, q);
    struct storm s;
    storm_start(&s);
    int64_t t0 = th_now_ns();
    int r = shmq_join(q, 15 * TH_SEC);
    int64_t dt = th_now_ns() - t0;
    storm_stop(&s);
    th_assert_child_ok(pid);
    cr_assert_eq(r, 0, "join: %d", r);
    cr_assert_lt(dt, 10 * TH_SEC, "join woke by the task_done");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* A storm from another process                                         */
/* ------------------------------------------------------------------ */

static int child_get_times_out_under_storm(void *p)
{
    install_handler();
    hits = 0;
    char buf[64];
    size_t len;
    for (int i = 0; i < 3; i++) {
        int64_t t = (i + 1) * 100 * TH_MS;
        int64_t t0 = th_now_ns();
        int r = shmq_get(p, buf, sizeof buf, &len, t);
        int64_t dt = th_now_ns() - t0;
        TH_CHECK(r != -EINTR);
        TH_CHECK_EQ(r, -ETIMEDOUT);
        TH_CHECK(dt >= t);
    }
    TH_CHECK(hits > 10);
    return 0;
}

Test(signals, storm_from_another_process, .timeout = 30)
{
    shmq_t *q = make(4, 0);
    install_handler(); /* the child inherits it: no signal kills it */
    pid_t pid = th_fork(child_get_times_out_under_storm, q);
    int64_t end = th_now_ns() + 20 * TH_SEC;
    int status = 0;
    pid_t r = 0;
    while (th_now_ns() < end && (r = waitpid(pid, &status, WNOHANG)) == 0) {
        kill(pid, STORM_SIGNAL);
        th_sleep_ns(STORM_PERIOD_NS);
    }
    if (r == 0)
        th_assert_child_ok_within(pid, 1); /* kills and fails */
    cr_assert_eq(r, pid, "waitpid");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x",
              status);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Traffic under a storm                                                */
/* ------------------------------------------------------------------ */

#define TRAFFIC 5000

static int child_traffic_producer(void *p)
{
    unsigned char m[32];
    for (uint32_t i = 0; i < TRAFFIC; i++) {
        th_payload_fill(m, sizeof m, 1, i);
        TH_CHECK_EQ(shmq_put(p, m, sizeof m, 10 * TH_SEC), 0);
        if (i % 512 == 0)
            th_sleep_ns(TH_MS); /* let the consumer block now and then */
    }
    return 0;
}

Test(signals, traffic_under_storm, .timeout = 60)
{
    shmq_t *q = make(4, 0);
    pid_t pid = th_fork(child_traffic_producer, q);
    struct storm s;
    storm_start(&s);
    int err = 0;
    uint32_t i;
    for (i = 0; i < TRAFFIC && err == 0; i++) {
        unsigned char m[64];
        size_t len;
        uint32_t id, seq;
        int r = shmq_get(q, m, sizeof m, &len, 10 * TH_SEC);
        if (r != 0)
            err = r;
        else if (!th_payload_check(m, len, &id, &seq) || seq != i)
            err = -EBADMSG;
    }
    storm_stop(&s);
    th_assert_child_ok(pid);
    cr_assert_eq(err, 0, "get %u under the storm: %d", i - 1, err);
    shmq_release(q);
}
