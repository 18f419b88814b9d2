/* SPDX-License-Identifier: MIT */
/*
 * test_evloop.c - event-loop integration: io_uring futex waits and the
 * pollable fd, on every path, without a lost wakeup.
 *
 * The stress tests play ping-pong across processes: a producer puts one
 * stamped message and waits for its answer, so every message needs a
 * wakeup to be noticed, and a lost one leaves the consumer armed with
 * nothing to wake it. Any message that sits unnoticed longer than
 * BOUND_MS_DEFAULT (or SHMQ_EVLOOP_BOUND_MS) fails the test; the wake
 * latency distribution is printed.
 * SHMQ_SOAK=1 runs a million cycles per path instead of a few thousand.
 * Tests of io_uring skip (visibly) where its futex wait is unavailable;
 * the helper-thread path runs everywhere.
 */
#include "helpers.h"

#include "internal.h" /* the event word, to prove puts make no syscall */

#include <dirent.h>
#include <liburing.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* Twice the worst stall this shared 2-CPU VM showed under sanitizer
 * builds and other suites (260 ms); SHMQ_EVLOOP_BOUND_MS tightens it on a
 * quiet machine. A lost wakeup on the io_uring path is never noticed at
 * all, so any bound catches it. */
#define BOUND_MS_DEFAULT 500

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static shmq_t *make(size_t maxsize)
{
    struct shmq_config cfg = {.maxsize = maxsize, .max_message = 64};
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "create");
    return q;
}

static void need_uring(void)
{
    int rc = shmq_evloop_set_path(SHMQ_EVLOOP_URING);
    if (rc == -ENOSYS)
        cr_skip_test("io_uring FUTEX_WAIT unavailable (kernel < 6.7, "
                     "io_uring disabled or filtered): only the helper-"
                     "thread path is tested");
    cr_assert_eq(rc, 0);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int threads_of_self(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Next CQE within timeout_ns, or NULL. */
static struct io_uring_cqe *next_cqe(struct io_uring *ring, int64_t timeout_ns)
{
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / TH_SEC,
                                   .tv_nsec = timeout_ns % TH_SEC};
    struct io_uring_cqe *cqe = NULL;
    int rc;
    do
        rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    while (rc == -EINTR);
    return rc == 0 ? cqe : NULL;
}

static bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static int64_t bound_ns(void)
{
    const char *e = getenv("SHMQ_EVLOOP_BOUND_MS");
    int64_t ms = e ? atoll(e) : BOUND_MS_DEFAULT;
    return (ms > 0 ? ms : BOUND_MS_DEFAULT) * TH_MS;
}

static long cycles(long quick)
{
    const char *e = getenv("SHMQ_SOAK");
    return e && *e == '1' ? 1000000 : quick;
}

/* ------------------------------------------------------------------ */
/* Paths                                                                */
/* ------------------------------------------------------------------ */

Test(evloop, path_query_and_force, .timeout = 20)
{
    int auto_path = shmq_evloop_path();
    cr_assert(auto_path == SHMQ_EVLOOP_URING ||
              auto_path == SHMQ_EVLOOP_THREAD);
    cr_assert_eq(shmq_evloop_set_path(SHMQ_EVLOOP_THREAD), 0);
    cr_assert_eq(shmq_evloop_path(), SHMQ_EVLOOP_THREAD);
    shmq_t *q = make(8);
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) == 0) {
        cr_assert_eq(
            shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 1, SHMQ_FOREVER),
            -ENOSYS);
        cr_assert_eq(io_uring_sq_ready(&ring), 0, "no SQE used");
        io_uring_queue_exit(&ring);
    }
    cr_assert_eq(shmq_evloop_set_path(7), -EINVAL);
    cr_assert_eq(shmq_evloop_set_path(SHMQ_EVLOOP_AUTO), 0);
    cr_assert_eq(shmq_evloop_path(), auto_path);
    shmq_release(q);
}

/* io_uring filtered out by seccomp (as container runtimes do): the
 * probe finds the fallback, and the pollfd still works. */
static int seccomp_deny_io_uring(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0 ? -errno : 0;
}

static int fallback_under_seccomp(void *arg)
{
    shmq_t *q = arg;
    TH_CHECK_EQ(seccomp_deny_io_uring(), 0);
    struct io_uring ring;
    TH_CHECK_EQ(io_uring_queue_init(2, &ring, 0), -EPERM);
    TH_CHECK_EQ(shmq_evloop_path(), SHMQ_EVLOOP_THREAD);
    TH_CHECK_EQ(shmq_evloop_set_path(SHMQ_EVLOOP_URING), -ENOSYS);
    shmq_pollfd_t *p;
    TH_CHECK_EQ(shmq_pollfd_open(&p, q, SHMQ_EV_READABLE), 0);
    TH_CHECK(!fd_readable(shmq_pollfd_fd(p), 20));
    TH_CHECK_EQ(shmq_put_nowait(q, "s", 1), 0);
    TH_CHECK(fd_readable(shmq_pollfd_fd(p), 5000));
    shmq_pollfd_close(p);
    return 0;
}

Test(evloop, fallback_when_io_uring_is_filtered, .timeout = 20)
{
    /* The child probes first: nothing in this process has yet. */
    shmq_t *q = make(4);
    th_assert_child_ok_within(th_fork(fallback_under_seccomp, q), 10 * TH_SEC);
    cr_assert_eq(shmq_qsize(q), 1);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* io_uring: arming, completions, close, timeouts                       */
/* ------------------------------------------------------------------ */

Test(uring, arm_finds_event_already_true, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(2);
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_WRITABLE, 1, SHMQ_FOREVER),
                 SHMQ_EV_WRITABLE);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0);
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 1, SHMQ_FOREVER),
                 SHMQ_EV_READABLE);
    cr_assert_eq(io_uring_sq_ready(&ring), 0, "no SQE used");
    io_uring_queue_exit(&ring);
    shmq_release(q);
}

static int put_after(void *arg)
{
    th_sleep_ns(20 * TH_MS);
    return shmq_put((shmq_t *)arg, "x", 1, TH_SEC) == 0 ? 0 : 1;
}

Test(uring, put_in_other_process_completes_wait, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(4);
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 42, SHMQ_FOREVER),
                 0);
    cr_assert_eq(io_uring_submit(&ring), 1);
    pid_t pid = th_fork(put_after, q);
    struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
    cr_assert_not_null(cqe, "no completion after the put");
    cr_assert_eq(cqe->user_data, 42);
    cr_assert_eq(shmq_uring_result(q, SHMQ_EV_READABLE, cqe->res),
                 SHMQ_EV_READABLE, "res %d", cqe->res);
    io_uring_cqe_seen(&ring, cqe);
    th_assert_child_ok(pid);
    io_uring_queue_exit(&ring);
    shmq_release(q);
}

static int close_after(void *arg)
{
    th_sleep_ns(20 * TH_MS);
    return shmq_close((shmq_t *)arg);
}

/* Every armed wait, on both words, completes when another process
 * closes, and each completion says closed. */
Test(uring, close_completes_every_armed_wait, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(1);
    cr_assert_eq(shmq_put_nowait(q, "f", 1), 0); /* full: not writable */
    shmq_t *r = make(1);                         /* empty: not readable */
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(16, &ring, 0), 0);
    enum { N = 6 };
    /* Each arm announces itself by moving the word (evloop.c), so one
     * made before the previous was submitted would complete at once:
     * submit each in turn. */
    for (uint64_t i = 0; i < N; i++) {
        cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_WRITABLE, i,
                                    i % 2 ? SHMQ_FOREVER : 10 * TH_SEC),
                     0);
        io_uring_submit(&ring);
    }
    cr_assert_eq(shmq_uring_arm(r, &ring, SHMQ_EV_READABLE, 100, SHMQ_FOREVER),
                 0);
    io_uring_submit(&ring);
    pid_t pid = th_fork(close_after, q);
    pid_t pid2 = th_fork(close_after, r);
    int verdicts = 0, partners = 0;
    while (verdicts < N + 1) {
        struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
        cr_assert_not_null(cqe, "only %d of %d waits completed", verdicts,
                           N + 1);
        shmq_t *which = cqe->user_data == 100 ? r : q;
        unsigned ev = which == r ? SHMQ_EV_READABLE : SHMQ_EV_WRITABLE;
        int v = shmq_uring_result(which, ev, cqe->res);
        io_uring_cqe_seen(&ring, cqe);
        if (v == -ECANCELED) {
            partners++;
            continue;
        }
        cr_assert_eq(v, SHMQ_EV_CLOSED, "verdict %d res", v);
        verdicts++;
    }
    th_assert_child_ok(pid);
    th_assert_child_ok(pid2);
    /* The three timed arms' timeouts complete as cancelled. */
    while (partners < N / 2) {
        struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
        cr_assert_not_null(cqe, "timeout CQEs missing");
        cr_assert_eq(shmq_uring_result(q, SHMQ_EV_WRITABLE, cqe->res),
                     -ECANCELED);
        io_uring_cqe_seen(&ring, cqe);
        partners++;
    }
    /* Once closed, an arm says so without an SQE. */
    cr_assert_eq(shmq_uring_arm(r, &ring, SHMQ_EV_READABLE, 1, SHMQ_FOREVER),
                 SHMQ_EV_CLOSED);
    cr_assert_eq(io_uring_sq_ready(&ring), 0);
    io_uring_queue_exit(&ring);
    shmq_release(q);
    shmq_release(r);
}

Test(uring, linked_timeout_expires, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(4);
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 7, 30 * TH_MS), 0);
    cr_assert_eq(io_uring_submit(&ring), 2);
    int timeouts = 0, cancels = 0;
    for (int i = 0; i < 2; i++) {
        struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
        cr_assert_not_null(cqe);
        cr_assert_eq(cqe->user_data, 7);
        int v = shmq_uring_result(q, SHMQ_EV_READABLE, cqe->res);
        io_uring_cqe_seen(&ring, cqe);
        timeouts += v == -ETIMEDOUT;
        cancels += v == -ECANCELED;
    }
    cr_assert_eq(timeouts, 1);
    cr_assert_eq(cancels, 1);
    cr_assert_geq(th_now_ns() - t0, 25 * TH_MS, "timed out too early");
    io_uring_queue_exit(&ring);
    shmq_release(q);
}

Test(uring, timed_arm_woken_before_deadline, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(4);
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 7, 10 * TH_SEC), 0);
    io_uring_submit(&ring);
    pid_t pid = th_fork(put_after, q);
    int ready = 0, cancels = 0;
    for (int i = 0; i < 2; i++) {
        struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
        cr_assert_not_null(cqe);
        int v = shmq_uring_result(q, SHMQ_EV_READABLE, cqe->res);
        io_uring_cqe_seen(&ring, cqe);
        ready += v == SHMQ_EV_READABLE;
        cancels += v == -ECANCELED;
    }
    cr_assert_eq(ready, 1);
    cr_assert_eq(cancels, 1);
    th_assert_child_ok(pid);
    io_uring_queue_exit(&ring);
    shmq_release(q);
}

/* Cancellation by user_data and teardown of a ring with armed waits:
 * no fd, no SQE, no thread left behind, and the queue still works. */
Test(uring, cancel_and_teardown_leak_nothing, .timeout = 30)
{
    need_uring();
    shmq_t *q = make(4);
    int fds = count_fds();
    int threads = threads_of_self();
    for (int round = 0; round < 200; round++) {
        struct io_uring ring;
        cr_assert_eq(io_uring_queue_init(8, &ring, 0), 0);
        for (uint64_t u = 1; u <= 3; u++) {
            cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, u,
                                        u == 3 ? TH_SEC : SHMQ_FOREVER),
                         0);
            io_uring_submit(&ring); /* before the next arm moves the word */
        }
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_cancel64(sqe, 2, 0);
        io_uring_sqe_set_data64(sqe, 99);
        io_uring_submit(&ring);
        bool cancelled = false, answered = false;
        while (!cancelled || !answered) {
            struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
            cr_assert_not_null(cqe, "cancel did not complete");
            if (cqe->user_data == 99) {
                cr_assert_geq(cqe->res, 0, "cancel: %d", cqe->res);
                answered = true;
            } else {
                cr_assert_eq(cqe->user_data, 2, "only wait 2 ends");
                cr_assert_eq(shmq_uring_result(q, SHMQ_EV_READABLE, cqe->res),
                             -ECANCELED);
                cancelled = true;
            }
            io_uring_cqe_seen(&ring, cqe);
        }
        io_uring_queue_exit(&ring); /* waits 1 and 3 still armed */
    }
    cr_assert_eq(count_fds(), fds, "descriptors leaked");
    cr_assert_eq(threads_of_self(), threads, "threads left behind");
    cr_assert_eq(shmq_put_nowait(q, "x", 1), 0);
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    shmq_release(q);
}

struct first_thread {
    shmq_t *q;
    int go[2]; /* child -> parent: armed, thread created */
};

static void *idle_thread(void *arg)
{
    (void)arg;
    pause();
    return NULL;
}

/* The wait is armed while the process has one thread, then the process
 * creates its first thread, then another process puts: the completion
 * must come (private futex waits have been lost this way). */
static int arm_then_thread(void *arg)
{
    struct first_thread *ft = arg;
    TH_CHECK_EQ(threads_of_self(), 1);
    struct io_uring ring;
    TH_CHECK_EQ(io_uring_queue_init(2, &ring, 0), 0);
    TH_CHECK_EQ(shmq_uring_arm(ft->q, &ring, SHMQ_EV_READABLE, 5, SHMQ_FOREVER),
                0);
    TH_CHECK_EQ(io_uring_submit(&ring), 1);
    pthread_t t;
    TH_CHECK_EQ(pthread_create(&t, NULL, idle_thread, NULL), 0);
    TH_CHECK_EQ(threads_of_self(), 2);
    TH_CHECK_EQ(write(ft->go[1], "g", 1), 1);
    struct __kernel_timespec ts = {.tv_sec = 5};
    struct io_uring_cqe *cqe = NULL;
    int rc;
    do
        rc = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
    while (rc == -EINTR);
    TH_CHECK_EQ(rc, 0);
    TH_CHECK_EQ(shmq_uring_result(ft->q, SHMQ_EV_READABLE, cqe->res),
                SHMQ_EV_READABLE);
    return 0;
}

Test(uring, armed_before_first_thread, .timeout = 20)
{
    need_uring();
    struct first_thread ft = {.q = make(4)};
    cr_assert_eq(pipe(ft.go), 0);
    pid_t pid = th_fork(arm_then_thread, &ft);
    char c;
    cr_assert_eq(read(ft.go[0], &c, 1), 1, "child did not arm");
    cr_assert_eq(shmq_put_nowait(ft.q, "x", 1), 0);
    th_assert_child_ok_within(pid, 10 * TH_SEC);
    shmq_release(ft.q);
}

/* A ring of one entry: untimed arms cycle through it for ever (each
 * completion frees the only slot), timed ones cannot fit. */
struct puts_paced {
    shmq_t *q;
    int n;
};

static int put_paced(void *arg)
{
    struct puts_paced *pp = arg;
    for (int i = 0; i < pp->n; i++) {
        TH_CHECK_EQ(shmq_put(pp->q, &i, sizeof i, 5 * TH_SEC), 0);
        if (i % 3 == 0)
            sched_yield();
    }
    return 0;
}

Test(uring, ring_of_size_1, .timeout = 30)
{
    need_uring();
    struct puts_paced pp = {make(4), 3000};
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(1, &ring, 0), 0);
    cr_assert_eq(shmq_uring_arm(pp.q, &ring, SHMQ_EV_READABLE, 1, TH_SEC),
                 -EBUSY);
    pid_t pid = th_fork(put_paced, &pp);
    int got = 0, arms = 0;
    while (got < pp.n) {
        int v = shmq_uring_arm(pp.q, &ring, SHMQ_EV_READABLE, 1, SHMQ_FOREVER);
        cr_assert_geq(v, 0, "arm: %s", shmq_strerror(v));
        if (v == 0) {
            arms++;
            cr_assert_eq(io_uring_submit(&ring), 1);
            struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
            cr_assert_not_null(cqe, "wait %d never completed", arms);
            v = shmq_uring_result(pp.q, SHMQ_EV_READABLE, cqe->res);
            io_uring_cqe_seen(&ring, cqe);
            cr_assert_geq(v, 0);
        }
        int m;
        size_t len;
        while (shmq_get_nowait(pp.q, &m, sizeof m, &len) == 0)
            cr_assert_eq(m, got++);
    }
    th_assert_child_ok(pid);
    cr_assert_gt(arms, 0, "never armed: the test proved nothing");
    io_uring_queue_exit(&ring);
    shmq_release(pp.q);
}

Test(uring, bad_input, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(4);
    struct io_uring ring, zero;
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(io_uring_queue_init(2, &ring, 0), 0);
    unsigned R = SHMQ_EV_READABLE;
    cr_assert_eq(shmq_uring_arm(NULL, &ring, R, 1, SHMQ_FOREVER), -EINVAL);
    cr_assert_eq(shmq_uring_arm(q, NULL, R, 1, SHMQ_FOREVER), -EINVAL);
    cr_assert_eq(shmq_uring_arm(q, &zero, R, 1, SHMQ_FOREVER), -EINVAL);
    unsigned bad[] = {0, SHMQ_EV_READABLE | SHMQ_EV_WRITABLE, SHMQ_EV_CLOSED,
                      0x8, 0x80000001u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(shmq_uring_arm(q, &ring, bad[i], 1, SHMQ_FOREVER),
                     -EINVAL);
        cr_assert_eq(shmq_uring_result(q, bad[i], 0), -EINVAL);
    }
    cr_assert_eq(shmq_uring_arm(q, &ring, R, 1, -2), -EINVAL);
    cr_assert_eq(shmq_uring_result(NULL, R, 0), -EINVAL);
    cr_assert_eq(io_uring_sq_ready(&ring), 0, "no SQE used by bad calls");
    /* One free SQE: a timed arm needs two. None: no arm at all. */
    cr_assert_not_null(io_uring_get_sqe(&ring));
    cr_assert_eq(shmq_uring_arm(q, &ring, R, 1, TH_SEC), -EBUSY);
    cr_assert_not_null(io_uring_get_sqe(&ring));
    cr_assert_eq(shmq_uring_arm(q, &ring, R, 1, SHMQ_FOREVER), -EBUSY);
    cr_assert_eq(io_uring_sq_ready(&ring), 2, "-EBUSY used no SQE");
    io_uring_queue_exit(&ring);
    /* A kernel error in a CQE comes back as is. */
    cr_assert_eq(shmq_uring_result(q, R, -EFAULT), -EFAULT);
    shmq_close(q);
    cr_assert_eq(io_uring_queue_init(2, &ring, 0), 0);
    cr_assert_eq(shmq_uring_arm(q, &ring, R, 1, SHMQ_FOREVER), SHMQ_EV_CLOSED);
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_WRITABLE, 1, SHMQ_FOREVER),
                 SHMQ_EV_WRITABLE | SHMQ_EV_CLOSED);
    io_uring_queue_exit(&ring);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* The pollable fd                                                      */
/* ------------------------------------------------------------------ */

Test(pollfd, level_triggered, .timeout = 20)
{
    shmq_t *q = make(8);
    shmq_pollfd_t *p;
    cr_assert_eq(shmq_pollfd_open(&p, q, SHMQ_EV_READABLE), 0);
    int fd = shmq_pollfd_fd(p);
    cr_assert_geq(fd, 0);
    cr_assert(th_fd_cloexec(fd));
    cr_assert(!fd_readable(fd, 50), "readable on an empty queue");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shmq_put_nowait(q, "m", 1), 0);
    cr_assert(fd_readable(fd, 5000), "not readable after puts");
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    /* Part of the queue taken: it stays readable, before and after ack. */
    cr_assert(fd_readable(fd, 0));
    cr_assert_eq(shmq_pollfd_ack(p), SHMQ_EV_READABLE);
    cr_assert(fd_readable(fd, 0), "ack cleared a queue with messages");
    while (shmq_get_nowait(q, buf, sizeof buf, &len) == 0)
        ;
    cr_assert(fd_readable(fd, 0), "cleared without an ack");
    cr_assert_eq(shmq_pollfd_ack(p), 0);
    cr_assert(!fd_readable(fd, 0), "readable after drain and ack");
    cr_assert_eq(shmq_pollfd_ack(p), 0, "a second ack is harmless");
    cr_assert_eq(shmq_put_nowait(q, "n", 1), 0);
    cr_assert(fd_readable(fd, 5000));
    cr_assert_eq(shmq_pollfd_ack(p), SHMQ_EV_READABLE);
    shmq_close(q);
    cr_assert_eq(shmq_pollfd_ack(p), SHMQ_EV_READABLE | SHMQ_EV_CLOSED);
    shmq_pollfd_close(p);
    shmq_release(q);
}

Test(pollfd, writable_and_close, .timeout = 20)
{
    shmq_t *q = make(1);
    cr_assert_eq(shmq_put_nowait(q, "f", 1), 0);
    shmq_pollfd_t *p;
    cr_assert_eq(shmq_pollfd_open(&p, q, SHMQ_EV_WRITABLE), 0);
    int fd = shmq_pollfd_fd(p);
    cr_assert(!fd_readable(fd, 50), "full queue reported writable");
    pid_t pid = th_fork(close_after, q);
    cr_assert(fd_readable(fd, 5000), "close did not make the fd readable");
    cr_assert_eq(shmq_pollfd_ack(p), SHMQ_EV_CLOSED);
    th_assert_child_ok(pid);
    shmq_pollfd_close(p);
    shmq_release(q);
}

static int close_in_child(void *arg)
{
    shmq_pollfd_close(arg); /* no helper here: must not wait for one */
    return 0;
}

Test(pollfd, close_in_forked_child, .timeout = 20)
{
    shmq_t *q = make(4);
    shmq_pollfd_t *p;
    cr_assert_eq(shmq_pollfd_open(&p, q, SHMQ_EV_READABLE), 0);
    th_assert_child_ok_within(th_fork(close_in_child, p), 5 * TH_SEC);
    cr_assert_eq(shmq_put_nowait(q, "m", 1), 0); /* the parent's still works */
    cr_assert(fd_readable(shmq_pollfd_fd(p), 5000));
    shmq_pollfd_close(p);
    shmq_release(q);
}

Test(pollfd, bad_input_and_no_leak, .timeout = 30)
{
    shmq_t *q = make(4);
    shmq_pollfd_t *p = NULL;
    cr_assert_eq(shmq_pollfd_open(NULL, q, SHMQ_EV_READABLE), -EINVAL);
    cr_assert_eq(shmq_pollfd_open(&p, NULL, SHMQ_EV_READABLE), -EINVAL);
    cr_assert_eq(shmq_pollfd_open(&p, q, 0), -EINVAL);
    cr_assert_eq(shmq_pollfd_open(&p, q, 3), -EINVAL);
    cr_assert_eq(shmq_pollfd_open(&p, q, 0x10), -EINVAL);
    cr_assert_null(p);
    cr_assert_eq(shmq_pollfd_fd(NULL), -EINVAL);
    cr_assert_eq(shmq_pollfd_ack(NULL), -EINVAL);
    shmq_pollfd_close(NULL);
    int fds = count_fds();
    int threads = threads_of_self();
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(shmq_pollfd_open(&p, q, SHMQ_EV_READABLE), 0);
        if (i % 2)
            cr_assert_eq(shmq_pollfd_ack(p), 0);
        shmq_pollfd_close(p); /* helper asleep on the queue's word */
    }
    cr_assert_eq(count_fds(), fds, "descriptors leaked");
    cr_assert_eq(threads_of_self(), threads, "helper threads left");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Ping-pong stress across processes, on every path                     */
/* ------------------------------------------------------------------ */

enum path { P_URING, P_URING_DEFER, P_POLLFD_EPOLL, P_POLLFD_URING };

/* The process in the event loop waits for `ev` on q; the other process
 * makes it true once per cycle and waits for the answer, so each cycle
 * needs exactly one wakeup. */
struct pingpong {
    shmq_t *q;      /* the loop's event queue */
    shmq_t *answer; /* READABLE: the loop answers here */
    unsigned ev;
    long n;
    bool tight;        /* no jitter: the producer answers at once */
    int64_t *freed_at; /* WRITABLE: shared, per cycle: when room was made */
};

struct stamp {
    int64_t i;
    int64_t t;
};

static void jitter(uint64_t *rs)
{
    switch (th_rand_below(rs, 4)) {
    case 0:
        break;
    case 1:
        sched_yield();
        break;
    default: {
        int64_t end = th_now_ns() + (int64_t)th_rand_below(rs, 30000);
        while (th_now_ns() < end)
            ;
    }
    }
}

/* READABLE: put a stamped message, wait for the answer. */
static int pp_producer(void *arg)
{
    struct pingpong *pp = arg;
    uint64_t rs = (uint64_t)getpid() * 2654435761u;
    for (int64_t i = 0; i < pp->n; i++) {
        if (!pp->tight)
            jitter(&rs);
        struct stamp s = {i, th_now_ns()};
        TH_CHECK_EQ(shmq_put(pp->q, &s, sizeof s, 5 * TH_SEC), 0);
        char c;
        size_t len;
        int rc = shmq_get(pp->answer, &c, 1, &len, 10 * TH_SEC);
        if (rc) {
            fprintf(stderr, "cycle %lld: no answer: %s\n", (long long)i,
                    shmq_strerror(rc));
            return 2;
        }
    }
    return 0;
}

/* WRITABLE: take the message that keeps the queue full, noting when. */
static int pp_taker(void *arg)
{
    struct pingpong *pp = arg;
    uint64_t rs = (uint64_t)getpid() * 2654435761u;
    struct stamp s;
    size_t len;
    for (int64_t i = 0; i < pp->n; i++) {
        jitter(&rs);
        int64_t deadline = th_now_ns() + 10 * TH_SEC;
        for (;;) {
            /* Stamped before the try: the loop may see the room before
             * this process returns from the get. */
            int64_t t = th_now_ns();
            __atomic_store_n(&pp->freed_at[i], t, __ATOMIC_SEQ_CST);
            int rc = shmq_get_nowait(pp->q, &s, sizeof s, &len);
            if (rc == 0)
                break;
            TH_CHECK_EQ(rc, -EAGAIN);
            if (t > deadline) {
                fprintf(stderr, "cycle %lld: no refill\n", (long long)i);
                return 2;
            }
            sched_yield();
        }
        TH_CHECK_EQ(s.i, i);
    }
    return 0;
}

struct loop {
    enum path path;
    shmq_t *q;
    unsigned ev;
    struct io_uring ring;
    shmq_pollfd_t *p;
    int ep;
};

static void loop_open(struct loop *l, enum path path, shmq_t *q, unsigned ev)
{
    memset(l, 0, sizeof *l);
    l->path = path;
    l->q = q;
    l->ev = ev;
    l->ep = -1;
    if (path == P_URING_DEFER) {
        /* completions run only when this thread waits (Linux 6.1+) */
        if (io_uring_queue_init(4, &l->ring,
                                IORING_SETUP_SINGLE_ISSUER |
                                    IORING_SETUP_DEFER_TASKRUN) < 0)
            cr_skip_test("IORING_SETUP_DEFER_TASKRUN unavailable");
        l->path = P_URING;
        return;
    }
    if (path != P_POLLFD_EPOLL)
        cr_assert_eq(io_uring_queue_init(path == P_URING ? 1 : 4, &l->ring, 0),
                     0, "ring");
    if (path == P_URING)
        return;
    cr_assert_eq(shmq_pollfd_open(&l->p, q, ev), 0);
    if (path == P_POLLFD_EPOLL) {
        l->ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e = {.events = EPOLLIN};
        cr_assert_eq(epoll_ctl(l->ep, EPOLL_CTL_ADD, shmq_pollfd_fd(l->p), &e),
                     0);
    }
}

static void loop_close(struct loop *l)
{
    if (l->path != P_POLLFD_EPOLL)
        io_uring_queue_exit(&l->ring);
    if (l->ep >= 0)
        close(l->ep);
    shmq_pollfd_close(l->p);
}

/* Wait until the event may hold: true, or false after timeout_ns with
 * no sign of it. */
static bool loop_wait(struct loop *l, int64_t timeout_ns)
{
    if (l->path == P_POLLFD_EPOLL) {
        struct epoll_event e;
        int n;
        do
            n = epoll_wait(l->ep, &e, 1, (int)(timeout_ns / TH_MS));
        while (n < 0 && errno == EINTR);
        return n == 1;
    }
    if (l->path == P_POLLFD_URING) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
        io_uring_prep_poll_add(sqe, shmq_pollfd_fd(l->p), POLLIN);
        io_uring_submit(&l->ring);
        struct io_uring_cqe *cqe = next_cqe(&l->ring, timeout_ns);
        if (!cqe)
            return false;
        cr_assert_gt(cqe->res, 0, "poll_add: %d", cqe->res);
        io_uring_cqe_seen(&l->ring, cqe);
        return true;
    }
    int64_t end = th_now_ns() + timeout_ns;
    for (;;) {
        int v = shmq_uring_arm(l->q, &l->ring, l->ev, 1, SHMQ_FOREVER);
        if (v > 0)
            return true;
        cr_assert_eq(v, 0, "arm: %s", shmq_strerror(v));
        cr_assert_eq(io_uring_submit(&l->ring), 1);
        for (;;) {
            int64_t left = end - th_now_ns();
            struct io_uring_cqe *cqe = next_cqe(&l->ring, left > 0 ? left : 1);
            if (!cqe)
                return false;
            v = shmq_uring_result(l->q, l->ev, cqe->res);
            io_uring_cqe_seen(&l->ring, cqe);
            cr_assert(v >= 0, "completion: %s", shmq_strerror(v));
            if (v > 0)
                return true;
            break; /* woken for nothing now: arm again */
        }
    }
}

static void loop_done(struct loop *l)
{
    if (l->p)
        shmq_pollfd_ack(l->p);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, int64_t *lat, long n)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp64);
    long over1ms = 0;
    for (long i = 0; i < n; i++)
        over1ms += lat[i] > TH_MS;
    fprintf(stderr,
            "# %-20s %ld cycles: wake latency p50 %.1f us, p99 %.1f us, "
            "p99.9 %.1f us, max %.1f us, %ld over 1 ms\n",
            name, n, lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3,
            lat[n * 999 / 1000] / 1e3, lat[n - 1] / 1e3, over1ms);
}

/* The loop's side for READABLE: drain, answer each message. */
static long drain_readable(struct pingpong *pp, int64_t *lat, long got)
{
    struct stamp s;
    size_t len;
    while (shmq_get_nowait(pp->q, &s, sizeof s, &len) == 0) {
        int64_t now = th_now_ns();
        cr_assert_eq(s.i, got, "message %ld out of order", got);
        lat[got++] = now - s.t;
        cr_assert_eq(shmq_put(pp->answer, "a", 1, TH_SEC), 0);
    }
    return got;
}

static void pingpong_run(const char *name, enum path path, unsigned ev, long n,
                         bool tight)
{
    struct pingpong pp = {.ev = ev, .n = n, .tight = tight};
    pp.q = make(ev == SHMQ_EV_READABLE ? 4 : 1);
    pp.answer = make(4);
    pp.freed_at = th_shared_alloc((size_t)n * sizeof *pp.freed_at);
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    cr_assert_not_null(lat);
    int64_t bound = bound_ns();
    struct loop l;
    loop_open(&l, path, pp.q, ev);
    struct stamp s = {0, 0};
    if (ev == SHMQ_EV_WRITABLE)
        cr_assert_eq(shmq_put_nowait(pp.q, &s, sizeof s), 0);
    pid_t pid = th_fork(ev == SHMQ_EV_READABLE ? pp_producer : pp_taker, &pp);
    long got = 0;
    while (got < n) {
        bool woke = loop_wait(&l, 5 * bound);
        if (!woke)
            break;
        if (ev == SHMQ_EV_READABLE) {
            got = drain_readable(&pp, lat, got);
        } else if (!shmq_full(pp.q)) {
            lat[got] = th_now_ns() -
                       __atomic_load_n(&pp.freed_at[got], __ATOMIC_ACQUIRE);
            s.i = ++got;
            if (got < n)
                cr_assert_eq(shmq_put_nowait(pp.q, &s, sizeof s), 0);
        }
        loop_done(&l);
    }
    long late = 0;
    for (long i = 0; i < got; i++)
        late += lat[i] > bound;
    cr_assert_eq(got, n, "%s: cycle %ld: no wakeup within %lld ms", name, got,
                 (long long)(5 * bound / TH_MS));
    th_assert_child_ok_within(pid, 10 * TH_SEC);
    report(name, lat, n);
    cr_assert_eq(late, 0, "%s: %ld messages unnoticed longer than %lld ms",
                 name, late, (long long)(bound / TH_MS));
    loop_close(&l);
    free(lat);
    th_shared_free(pp.freed_at, (size_t)n * sizeof *pp.freed_at);
    shmq_release(pp.q);
    shmq_release(pp.answer);
}

static void pingpong(const char *name, enum path path, unsigned ev, long n)
{
    pingpong_run(name, path, ev, n, false);
}

/* Back to back: the producer's next put races the loop's re-arm, and a
 * signaller's wake-then-clear races the announce (evloop.c). */
Test(stress, uring_readable_tight, .timeout = 120)
{
    need_uring();
    pingpong_run("uring tight", P_URING, SHMQ_EV_READABLE, cycles(200000),
                 true);
}

Test(stress, pollfd_epoll_readable_tight, .timeout = 120)
{
    pingpong_run("pollfd/epoll tight", P_POLLFD_EPOLL, SHMQ_EV_READABLE,
                 cycles(50000), true);
}

Test(stress, uring_readable, .timeout = 120)
{
    need_uring();
    pingpong("uring readable", P_URING, SHMQ_EV_READABLE, cycles(20000));
}

Test(stress, uring_defer_taskrun_readable, .timeout = 120)
{
    need_uring();
    pingpong("uring (defer_taskrun)", P_URING_DEFER, SHMQ_EV_READABLE,
             cycles(20000));
}

Test(stress, uring_writable, .timeout = 120)
{
    need_uring();
    pingpong("uring writable", P_URING, SHMQ_EV_WRITABLE, cycles(5000));
}

Test(stress, pollfd_epoll_readable, .timeout = 120)
{
    pingpong("pollfd/epoll readable", P_POLLFD_EPOLL, SHMQ_EV_READABLE,
             cycles(20000));
}

Test(stress, pollfd_epoll_writable, .timeout = 120)
{
    pingpong("pollfd/epoll writable", P_POLLFD_EPOLL, SHMQ_EV_WRITABLE,
             cycles(5000));
}

Test(stress, pollfd_uring_readable, .timeout = 120)
{
    int saved = shmq_evloop_set_path(SHMQ_EVLOOP_THREAD);
    cr_assert_eq(saved, 0);
    struct io_uring probe;
    if (io_uring_queue_init(1, &probe, 0) < 0)
        cr_skip_test("io_uring unavailable: poll_add on the pollfd untested");
    io_uring_queue_exit(&probe);
    pingpong("pollfd/io_uring poll", P_POLLFD_URING, SHMQ_EV_READABLE,
             cycles(20000));
}

/* An unrelated process's handle: its own mapping of the named region,
 * at another address. The futex is shared, so its wake finds the wait. */
static int open_and_put(void *arg)
{
    shmq_t *q;
    th_sleep_ns(20 * TH_MS);
    TH_CHECK_EQ(shmq_open(&q, (const char *)arg), 0);
    TH_CHECK_EQ(shmq_put(q, "n", 1, TH_SEC), 0);
    shmq_release(q);
    return 0;
}

static void named_other_mapping(bool uring)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "evloop");
    shmq_t *q;
    cr_assert_eq(shmq_create_named(&q, name, NULL, 0600), 0);
    struct loop l;
    loop_open(&l, uring ? P_URING : P_POLLFD_EPOLL, q, SHMQ_EV_READABLE);
    pid_t pid = th_fork(open_and_put, name);
    cr_assert(loop_wait(&l, 5 * TH_SEC), "no wakeup from the other handle");
    cr_assert_eq(shmq_qsize(q), 1);
    th_assert_child_ok(pid);
    loop_close(&l);
    shmq_release(q);
    shmq_unlink(name);
}

Test(uring, named_queue_opened_elsewhere, .timeout = 20)
{
    need_uring();
    named_other_mapping(true);
}

Test(pollfd, named_queue_opened_elsewhere, .timeout = 20)
{
    named_other_mapping(false);
}

/* ------------------------------------------------------------------ */
/* Producers pay nothing while nothing is armed                         */
/* ------------------------------------------------------------------ */

/* The event counter moves only when a put pays for a FUTEX_WAKE (the
 * sleepers flag was set): after the armed wait has completed, or the
 * pollfd is closed, at most one put pays, and then none. */
static uint32_t wakes_paid(shmq_t *q)
{
    uint32_t w =
        __atomic_load_n((uint32_t *)&q->hdr->not_empty.word, __ATOMIC_SEQ_CST);
    return w & 0x7fffffffu;
}

static void puts_are_free(shmq_t *q)
{
    char buf[8];
    size_t len;
    /* A signal wakes one waiter and keeps the flag while the kernel found
     * one (lib/wait.c): a stale armed wait may cost these two puts one
     * wake each, the second finding nobody and clearing the flag. */
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(shmq_put_nowait(q, "a", 1), 0);
        cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    }
    uint32_t before = wakes_paid(q);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(shmq_put_nowait(q, "b", 1), 0);
        cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    }
    cr_assert_eq(wakes_paid(q), before, "puts paid for wakeups");
}

Test(uring, puts_free_after_completion_and_teardown, .timeout = 20)
{
    need_uring();
    shmq_t *q = make(4);
    struct io_uring ring;
    cr_assert_eq(io_uring_queue_init(2, &ring, 0), 0);
    cr_assert_eq(shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 1, SHMQ_FOREVER),
                 0);
    io_uring_submit(&ring);
    uint32_t before = wakes_paid(q);
    cr_assert_eq(shmq_put_nowait(q, "x", 1), 0);
    cr_assert_eq(wakes_paid(q), before + 1, "the armed wait was not woken");
    struct io_uring_cqe *cqe = next_cqe(&ring, 5 * TH_SEC);
    cr_assert_not_null(cqe);
    cr_assert_eq(shmq_uring_result(q, SHMQ_EV_READABLE, cqe->res),
                 SHMQ_EV_READABLE);
    io_uring_cqe_seen(&ring, cqe);
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    puts_are_free(q);
    /* A wait left armed when the ring goes away costs one put, once. */
    int rc = shmq_uring_arm(q, &ring, SHMQ_EV_READABLE, 2, SHMQ_FOREVER);
    cr_assert_eq(rc, 0, "arm: %d", rc);
    io_uring_submit(&ring);
    io_uring_queue_exit(&ring);
    puts_are_free(q);
    shmq_release(q);
}

Test(pollfd, puts_free_after_close, .timeout = 20)
{
    shmq_t *q = make(4);
    shmq_pollfd_t *p;
    cr_assert_eq(shmq_pollfd_open(&p, q, SHMQ_EV_READABLE), 0);
    cr_assert_eq(shmq_put_nowait(q, "x", 1), 0);
    cr_assert(fd_readable(shmq_pollfd_fd(p), 5000));
    shmq_pollfd_close(p);
    puts_are_free(q);
    shmq_release(q);
}
