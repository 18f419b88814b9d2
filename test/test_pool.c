/* SPDX-License-Identifier: MIT */
/*
 * test_pool.c - the process pool: DESIGN.md's Pool rules, and the
 * failures CPython's Pool and ProcessPoolExecutor get wrong, modelled on
 * CPython's _TestPool, _TestPoolWorkerLifetime and
 * test_concurrent_futures/test_deadlock.py:
 *
 *   - results, statuses, orders (wait, next in completion order, map in
 *     input order), 10k tasks with checked results, sizes (-EMSGSIZE,
 *     -ENOBUFS), ctx and the initializer, close/join/terminate rules;
 *   - worker deaths: self SIGKILL, SIGSEGV, abort, _exit, killed from
 *     outside while busy and while idle, killed after its result was
 *     committed (delivered, not -EOWNERDEAD), deaths inside a map;
 *   - guards: crash loop, failing initializer, time limit, cancel,
 *     owner death (every worker gone within a second, nothing left in
 *     /dev/shm), a threaded host recycling workers after every task, a
 *     host ignoring SIGCHLD or reaping children itself;
 *   - teardown: terminate with thousands of long tasks queued is prompt;
 *     destroy leaves no process, zombie, descriptor or mapping.
 *
 * Tasks run in forked workers: they report through their result, their
 * status, or memory from th_shared_alloc (mapped before the pool forks).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "helpers.h"
#include "shmq.h"

#define POOL_DEADLINE (20 * TH_SEC) /* no single wait in a test is longer */

/* ------------------------------------------------------------------ */
/* Tasks                                                                */
/* ------------------------------------------------------------------ */

struct pair {
    int64_t a, b;
};

/* The sum of two integers. */
static int t_add(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)cap, (void)ctx;
    if (len != sizeof(struct pair))
        return -EINVAL;
    const struct pair *p = arg;
    int64_t s = p->a + p->b;
    memcpy(out, &s, sizeof s);
    *outlen = sizeof s;
    return 0;
}

/* Returns the int argument as its status, no result. */
static int t_status(const void *arg, size_t len, void *out, size_t cap,
                    size_t *outlen, void *ctx)
{
    (void)len, (void)out, (void)cap, (void)outlen, (void)ctx;
    int v;
    memcpy(&v, arg, sizeof v);
    return v;
}

/* Sleeps the int64 argument (ns), then returns its pid as the result. */
static int t_sleep(const void *arg, size_t len, void *out, size_t cap,
                   size_t *outlen, void *ctx)
{
    (void)len, (void)cap, (void)ctx;
    int64_t ns;
    memcpy(&ns, arg, sizeof ns);
    th_sleep_ns(ns);
    pid_t pid = getpid();
    memcpy(out, &pid, sizeof pid);
    *outlen = sizeof pid;
    return 0;
}

/* The worker's pid as the result. */
static int t_pid(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)arg, (void)len, (void)cap, (void)ctx;
    pid_t pid = getpid();
    memcpy(out, &pid, sizeof pid);
    *outlen = sizeof pid;
    return 0;
}

enum how { DIE_KILL, DIE_SEGV, DIE_ABORT, DIE_EXIT, DIE_EXIT0 };

/* Dies the way its argument says. */
static int t_die(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)len, (void)out, (void)cap, (void)outlen, (void)ctx;
    int how;
    memcpy(&how, arg, sizeof how);
    signal(SIGSEGV, SIG_DFL);
    signal(SIGABRT, SIG_DFL);
    switch (how) {
    case DIE_KILL:
        raise(SIGKILL);
        break;
    case DIE_SEGV:
        raise(SIGSEGV); /* as a NULL dereference would, without UB */
        break;
    case DIE_ABORT:
        abort();
    case DIE_EXIT:
        _exit(3);
    case DIE_EXIT0:
        _exit(0);
    }
    return 0;
}

/* A result of the size given by its argument, filled with a pattern. */
static int t_sized(const void *arg, size_t len, void *out, size_t cap,
                   size_t *outlen, void *ctx)
{
    (void)len, (void)ctx;
    uint64_t n;
    memcpy(&n, arg, sizeof n);
    if (n <= cap)
        th_fill(out, n, (uint32_t)n);
    *outlen = n;
    return 7;
}

/* The argument echoed back. */
static int t_echo(const void *arg, size_t len, void *out, size_t cap,
                  size_t *outlen, void *ctx)
{
    (void)cap, (void)ctx;
    memcpy(out, arg, len);
    *outlen = len;
    return (int)len;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static shmq_pool_t *pool_new(unsigned workers, unsigned per_child)
{
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = workers,
                                 .max_tasks_per_child = per_child};
    int rc = shmq_pool_create(&p, &c);
    cr_assert_eq(rc, 0, "create: %s", shmq_strerror(rc));
    return p;
}

static uint64_t submit_ok(shmq_pool_t *p, shmq_task_fn fn, const void *arg,
                          size_t len)
{
    uint64_t t = 0;
    int rc = shmq_pool_submit(p, fn, arg, len, &t, POOL_DEADLINE);
    cr_assert_eq(rc, 0, "submit: %s", shmq_strerror(rc));
    cr_assert_neq(t, 0);
    return t;
}

static uint64_t submit_sleep(shmq_pool_t *p, int64_t ns)
{
    return submit_ok(p, t_sleep, &ns, sizeof ns);
}

/* Wait for ticket; its status (asserting that the wait worked). buf
 * NULL: a result of up to 64 bytes is fine and dropped. */
static int status_of(shmq_pool_t *p, uint64_t t, void *buf, size_t cap,
                     size_t *len)
{
    int st = 12345;
    size_t l = 0;
    unsigned char scratch[64];
    if (!buf) {
        buf = scratch;
        cap = sizeof scratch;
    }
    int rc = shmq_pool_wait(p, t, buf, cap, len ? len : &l, &st, POOL_DEADLINE);
    cr_assert_eq(rc, 0, "wait: %s", shmq_strerror(rc));
    return st;
}

static bool gone(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    char state = 0;
    int n = fscanf(f, "%*d %*s %c", &state);
    fclose(f);
    return n != 1 || state == 'Z' || state == 'X';
}

static bool all_gone_within(const pid_t *pids, size_t n, int64_t ns)
{
    int64_t end = th_now_ns() + ns;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < n; i++)
            all = all && (pids[i] <= 0 || gone(pids[i]));
        if (all)
            return true;
        if (th_now_ns() > end)
            return false;
        th_sleep_ns(TH_MS);
    }
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Lines of /proc/<pid>/maps naming a file under /dev/shm that still has
 * its name (Criterion's own arenas there are unlinked): a pool's
 * processes map memfds only, so a pool can never leave a name behind.
 * (Counting /dev/shm itself would see the other suites' queues, which
 * may run at the same time on this machine.) */
static int shm_mappings(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f)
        return 0; /* gone (a recycled worker): it maps nothing */
    while (fgets(line, sizeof line, f))
        n += strstr(line, "/dev/shm/") && !strstr(line, "(deleted)");
    fclose(f);
    return n;
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = 0, c;
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Every worker's current pid (waiting for respawns to land). */
static void worker_pids(shmq_pool_t *p, pid_t *pids, unsigned n)
{
    int64_t end = th_now_ns() + 5 * TH_SEC;
    for (unsigned w = 0; w < n; w++) {
        int pid;
        while ((pid = shmq_pool_worker_pid(p, w)) < 0 && th_now_ns() < end)
            th_sleep_ns(TH_MS);
        cr_assert_gt(pid, 0, "worker %u has no pid", w);
        pids[w] = pid;
    }
}

/* ------------------------------------------------------------------ */
/* Results and orders                                                   */
/* ------------------------------------------------------------------ */

Test(pool, apply_returns_result_and_status, .timeout = 30)
{
    errno = 4242;
    shmq_pool_t *p = pool_new(2, 0);
    struct pair in = {40, 2};
    uint64_t t = submit_ok(p, t_add, &in, sizeof in);
    int64_t sum = 0;
    size_t len = 0;
    cr_expect_eq(status_of(p, t, &sum, sizeof sum, &len), 0);
    cr_expect_eq(errno, 4242, "errno untouched");
    cr_expect_eq(len, sizeof sum);
    cr_expect_eq(sum, 42);
    int v = -77;
    t = submit_ok(p, t_status, &v, sizeof v);
    cr_expect_eq(status_of(p, t, NULL, 0, &len), -77, "status is fn's return");
    cr_expect_eq(len, 0);
    errno = 4343;
    shmq_pool_close(p);
    shmq_pool_join(p, POOL_DEADLINE);
    shmq_pool_destroy(p);
    cr_expect_eq(errno, 4343, "errno untouched");
}

Test(pool, workers_zero_means_online_cpus, .timeout = 30)
{
    shmq_pool_t *p = pool_new(0, 0);
    cr_expect_eq(shmq_pool_workers(p), (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
    shmq_pool_destroy(p);
}

Test(pool, ten_thousand_tasks_checked, .timeout = 60)
{
    enum { N = 10000 };
    shmq_pool_t *p = pool_new(2, 0);
    static uint64_t tickets[N];
    static bool seen[N];
    int collected = 0;
    for (int i = 0; i < N || collected < N;) {
        int rc = -EAGAIN;
        if (i < N) {
            struct pair in = {i, 1000000};
            rc = shmq_pool_submit(p, t_add, &in, sizeof in, &tickets[i],
                                  SHMQ_NOWAIT);
            cr_assert(rc == 0 || rc == -EAGAIN, "submit: %s",
                      shmq_strerror(rc));
            i += rc == 0;
        }
        if (rc == 0)
            continue;
        /* saturated (SHMQ_POOL_MAX_PENDING uncollected), or all in */
        uint64_t t;
        int64_t sum;
        size_t len;
        int st;
        rc = shmq_pool_next(p, &t, &sum, sizeof sum, &len, &st, POOL_DEADLINE);
        cr_assert_eq(rc, 0, "next: %s", shmq_strerror(rc));
        cr_assert_eq(st, 0);
        int64_t k = sum - 1000000;
        cr_assert(k >= 0 && k < i && !seen[k] && tickets[k] == t,
                  "result %lld for ticket %llu", (long long)sum,
                  (unsigned long long)t);
        seen[k] = true;
        collected++;
    }
    uint64_t t;
    size_t len;
    int st;
    cr_expect_eq(shmq_pool_next(p, &t, NULL, 0, &len, &st, SHMQ_NOWAIT),
                 -ENOENT, "nothing outstanding");
    shmq_pool_destroy(p);
}

Test(pool, next_is_completion_order, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    uint64_t slow = submit_sleep(p, 400 * TH_MS);
    uint64_t fast = submit_sleep(p, 1 * TH_MS);
    uint64_t t;
    pid_t pid;
    size_t len;
    int st;
    cr_assert_eq(
        shmq_pool_next(p, &t, &pid, sizeof pid, &len, &st, POOL_DEADLINE), 0);
    cr_expect_eq(t, fast);
    cr_assert_eq(
        shmq_pool_next(p, &t, &pid, sizeof pid, &len, &st, POOL_DEADLINE), 0);
    cr_expect_eq(t, slow);
    shmq_pool_destroy(p);
}

Test(pool, map_keeps_input_order_and_sizes, .timeout = 60)
{
    enum { N = 20000 };
    shmq_pool_t *p = pool_new(2, 0);
    static struct pair in[N];
    static int64_t out[N];
    static struct iovec args[N], res[N];
    static int st[N];
    for (int i = 0; i < N; i++) {
        in[i] = (struct pair){i, 3 * i};
        args[i] = (struct iovec){&in[i], sizeof in[i]};
        res[i] = (struct iovec){&out[i], sizeof out[i]};
    }
    cr_assert_eq(shmq_pool_map(p, t_add, args, N, res, st, POOL_DEADLINE), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(st[i], 0, "item %d", i);
        cr_assert_eq(res[i].iov_len, sizeof(int64_t));
        cr_assert_eq(out[i], 4 * i, "item %d", i);
    }
    cr_expect_eq(shmq_pool_map(p, t_add, NULL, 0, NULL, NULL, SHMQ_NOWAIT), 0);
    shmq_pool_destroy(p);
}

Test(pool, map_variable_results_and_enobufs, .timeout = 60)
{
    enum { N = 300 };
    shmq_pool_t *p = pool_new(2, 0);
    static uint64_t sizes[N];
    static unsigned char *bufs[N];
    static struct iovec args[N], res[N];
    static int st[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = (uint64_t)(i * 97) % 5000;
        args[i] = (struct iovec){&sizes[i], sizeof sizes[i]};
        bufs[i] = malloc(5000);
        /* every 10th buffer one byte too small */
        size_t cap = i % 10 == 9 && sizes[i] ? sizes[i] - 1 : 5000;
        res[i] = (struct iovec){bufs[i], cap};
    }
    cr_assert_eq(shmq_pool_map(p, t_sized, args, N, res, st, POOL_DEADLINE), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(res[i].iov_len, sizes[i], "item %d length", i);
        if (i % 10 == 9 && sizes[i]) {
            cr_expect_eq(st[i], -ENOBUFS, "item %d", i);
        } else {
            cr_expect_eq(st[i], 7, "item %d", i);
            cr_expect(th_check(bufs[i], sizes[i], (uint32_t)sizes[i]));
        }
        free(bufs[i]);
    }
    shmq_pool_destroy(p);
}

Test(pool, result_above_max_message_is_emsgsize, .timeout = 30)
{
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = 1, .max_message = 1024};
    cr_assert_eq(shmq_pool_create(&p, &c), 0);
    uint64_t n = 1025;
    uint64_t t = submit_ok(p, t_sized, &n, sizeof n);
    unsigned char buf[2048];
    size_t len = 99;
    cr_expect_eq(status_of(p, t, buf, sizeof buf, &len), -EMSGSIZE);
    cr_expect_eq(len, 0, "never truncated");
    n = 1024;
    t = submit_ok(p, t_sized, &n, sizeof n);
    cr_expect_eq(status_of(p, t, buf, sizeof buf, &len), 7);
    cr_expect_eq(len, 1024);
    static char big[1025];
    cr_expect_eq(shmq_pool_submit(p, t_echo, big, sizeof big, &t, SHMQ_NOWAIT),
                 -EMSGSIZE);
    struct iovec a = {big, sizeof big}, r = {buf, sizeof buf};
    int st;
    cr_expect_eq(shmq_pool_map(p, t_echo, &a, 1, &r, &st, SHMQ_NOWAIT),
                 -EMSGSIZE);
    shmq_pool_destroy(p);
}

Test(pool, large_arguments_and_results, .timeout = 60)
{
    enum { BIG = 1 << 20 };
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = 2, .max_message = BIG};
    cr_assert_eq(shmq_pool_create(&p, &c), 0);
    unsigned char *in = malloc(BIG), *out = malloc(4 * (size_t)BIG);
    cr_assert(in && out);
    th_fill(in, BIG, 99);
    uint64_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = submit_ok(p, t_echo, in, BIG - (size_t)i);
    for (int i = 0; i < 4; i++) {
        size_t len;
        cr_expect_eq(status_of(p, t[i], out, BIG, &len), BIG - i);
        cr_expect_eq(len, (size_t)BIG - (size_t)i);
        cr_expect(memcmp(in, out, len) == 0);
    }
    struct iovec a[4], r[4];
    int st[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct iovec){in, BIG - (size_t)i * 8};
        r[i] = (struct iovec){out + (size_t)i * BIG, BIG};
    }
    cr_assert_eq(shmq_pool_map(p, t_echo, a, 4, r, st, POOL_DEADLINE), 0);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(st[i], BIG - i * 8);
        cr_expect_eq(r[i].iov_len, a[i].iov_len);
        cr_expect(memcmp(in, out + (size_t)i * BIG, r[i].iov_len) == 0);
    }
    free(in);
    free(out);
    shmq_pool_destroy(p);
}

Test(pool, wait_rules, .timeout = 30)
{
    shmq_pool_t *p = pool_new(1, 0);
    uint64_t n = 100;
    uint64_t t = submit_ok(p, t_sized, &n, sizeof n);
    unsigned char buf[100];
    size_t len = 0;
    int st;
    int rc;
    /* too small: -ENOBUFS, *len set, result kept */
    while ((rc = shmq_pool_wait(p, t, buf, 10, &len, &st, POOL_DEADLINE)) ==
           -ETIMEDOUT)
        ;
    cr_expect_eq(rc, -ENOBUFS);
    cr_expect_eq(len, 100);
    cr_expect_eq(shmq_pool_wait(p, t, buf, sizeof buf, &len, &st, SHMQ_NOWAIT),
                 0);
    cr_expect_eq(st, 7);
    cr_expect(th_check(buf, 100, 100));
    /* collected, never issued */
    cr_expect_eq(shmq_pool_wait(p, t, buf, sizeof buf, &len, &st, SHMQ_NOWAIT),
                 -ENOENT);
    cr_expect_eq(shmq_pool_wait(p, 0, buf, sizeof buf, &len, &st, SHMQ_NOWAIT),
                 -ENOENT);
    cr_expect_eq(
        shmq_pool_wait(p, t + 1000, buf, sizeof buf, &len, &st, SHMQ_NOWAIT),
        -ENOENT);
    /* not finished: -EAGAIN, -ETIMEDOUT */
    t = submit_sleep(p, 500 * TH_MS);
    cr_expect_eq(shmq_pool_wait(p, t, buf, sizeof buf, &len, &st, SHMQ_NOWAIT),
                 -EAGAIN);
    int64_t t0 = th_now_ns();
    cr_expect_eq(shmq_pool_wait(p, t, buf, sizeof buf, &len, &st, 50 * TH_MS),
                 -ETIMEDOUT);
    cr_expect_geq(th_now_ns() - t0, 50 * TH_MS);
    cr_expect_eq(status_of(p, t, buf, sizeof buf, NULL), 0);
    /* next: -ENOBUFS keeps it first in line */
    t = submit_ok(p, t_sized, &n, sizeof n);
    uint64_t got = 0;
    while ((rc = shmq_pool_next(p, &got, buf, 1, &len, &st, POOL_DEADLINE)) ==
           -ETIMEDOUT)
        ;
    cr_expect_eq(rc, -ENOBUFS);
    cr_expect_eq(got, t);
    cr_expect_eq(len, 100);
    cr_expect_eq(shmq_pool_next(p, &got, buf, sizeof buf, &len, &st, 0), 0);
    cr_expect_eq(got, t);
    shmq_pool_destroy(p);
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* SIGALRM every 5 ms, without SA_RESTART: every blocking syscall of the
 * pool gets EINTR. */
static void signal_storm(bool on)
{
    struct sigaction sa = {.sa_handler = on ? on_alarm : SIG_DFL};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, on ? 5000 : 0}, {0, on ? 5000 : 0}};
    setitimer(ITIMER_REAL, &it, NULL);
}

Test(pool, signals_never_end_a_wait_early, .timeout = 30)
{
    shmq_pool_t *p = pool_new(1, 0);
    uint64_t t = submit_sleep(p, 300 * TH_MS);
    signal_storm(true);
    uint64_t got;
    size_t len;
    int st;
    pid_t pid;
    int64_t t0 = th_now_ns();
    int rc = shmq_pool_wait(p, t, &pid, sizeof pid, &len, &st, 100 * TH_MS);
    int64_t waited = th_now_ns() - t0;
    cr_expect_eq(rc, -ETIMEDOUT);
    cr_expect_geq(waited, 100 * TH_MS, "ended after %lld ms",
                  (long long)(waited / TH_MS));
    cr_expect_eq(
        shmq_pool_wait(p, t, &pid, sizeof pid, &len, &st, SHMQ_FOREVER), 0);
    cr_expect_eq(st, 0);
    t = submit_sleep(p, 200 * TH_MS);
    cr_expect_eq(
        shmq_pool_next(p, &got, &pid, sizeof pid, &len, &st, SHMQ_FOREVER), 0);
    cr_expect_eq(got, t);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, SHMQ_FOREVER), 0);
    signal_storm(false);
    shmq_pool_destroy(p);
}

static int init_ctx(void *ctx)
{
    *(int *)ctx = 1000 + (int)(getpid() % 1000);
    return 0;
}

static int t_ctx(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)arg, (void)len, (void)cap;
    int pair[2] = {*(int *)ctx, (int)(getpid() % 1000)};
    memcpy(out, pair, sizeof pair);
    *outlen = sizeof pair;
    return 0;
}

Test(pool, task_sees_ctx_as_initializer_left_it, .timeout = 30)
{
    static int ctx;
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {
        .workers = 2, .initializer = init_ctx, .ctx = &ctx};
    cr_assert_eq(shmq_pool_create(&p, &c), 0);
    for (int i = 0; i < 20; i++) {
        uint64_t t = submit_ok(p, t_ctx, NULL, 0);
        int pair[2];
        cr_expect_eq(status_of(p, t, pair, sizeof pair, NULL), 0);
        cr_expect_eq(pair[0], 1000 + pair[1]);
    }
    cr_expect_eq(ctx, 0, "the owner's copy is untouched");
    shmq_pool_destroy(p);
}

static int init_fail(void *ctx)
{
    (void)ctx;
    return 1;
}

Test(pool, failing_initializer_breaks_pool, .timeout = 30)
{
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = 2, .initializer = init_fail};
    cr_assert_eq(shmq_pool_create(&p, &c), 0);
    uint64_t t;
    int rc = shmq_pool_submit(p, t_pid, NULL, 0, &t, SHMQ_NOWAIT);
    if (rc == 0) /* before the failure was seen: cancelled */
        cr_expect_eq(status_of(p, t, NULL, 0, NULL), -ECANCELED);
    else
        cr_expect_eq(rc, -ECANCELED);
    int64_t end = th_now_ns() + 5 * TH_SEC;
    while ((rc = shmq_pool_submit(p, t_pid, NULL, 0, &t, SHMQ_NOWAIT)) == 0 &&
           th_now_ns() < end) {
        cr_expect_eq(status_of(p, t, NULL, 0, NULL), -ECANCELED);
        th_sleep_ns(TH_MS);
    }
    cr_expect_eq(rc, -ECANCELED, "later submits");
    struct iovec a = {&t, sizeof t}, r = {&t, sizeof t};
    int st;
    cr_expect_eq(shmq_pool_map(p, t_pid, &a, 1, &r, &st, POOL_DEADLINE),
                 -ECANCELED);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    shmq_pool_destroy(p);
}

Test(pool, close_join_rules_and_results_stay, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    uint64_t t[20];
    for (int i = 0; i < 20; i++) {
        struct pair in = {i, i};
        t[i] = submit_ok(p, t_add, &in, sizeof in);
    }
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), -EINVAL,
                 "join before close");
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_close(p), 0, "a second close");
    uint64_t x;
    struct pair in = {1, 1};
    cr_expect_eq(shmq_pool_submit(p, t_add, &in, sizeof in, &x, SHMQ_NOWAIT),
                 -EPIPE);
    struct iovec a = {&in, sizeof in}, r = {&x, sizeof x};
    int st;
    cr_expect_eq(shmq_pool_map(p, t_add, &a, 1, &r, &st, SHMQ_NOWAIT), -EPIPE);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    for (int i = 19; i >= 0; i--) {
        int64_t sum;
        cr_expect_eq(status_of(p, t[i], &sum, sizeof sum, NULL), 0);
        cr_expect_eq(sum, 2 * i, "results stay after close and join");
    }
    shmq_pool_destroy(p);
}

Test(pool, bad_input, .timeout = 30)
{
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = 1};
    cr_expect_eq(shmq_pool_create(NULL, &c), -EINVAL);
    c.max_message = (size_t)SHMQ_POOL_MAX_MESSAGE + 1;
    cr_expect_eq(shmq_pool_create(&p, &c), -EINVAL, "huge max_message");
    c.max_message = SIZE_MAX;
    cr_expect_eq(shmq_pool_create(&p, &c), -EINVAL);
    c.max_message = 0;
    c.workers = SHMQ_POOL_MAX_WORKERS + 1;
    cr_expect_eq(shmq_pool_create(&p, &c), -EINVAL);
    p = pool_new(1, 0);
    uint64_t t;
    int v = 0;
    size_t len;
    int st;
    cr_expect_eq(shmq_pool_submit(NULL, t_status, &v, 4, &t, 0), -EINVAL);
    cr_expect_eq(shmq_pool_submit(p, NULL, &v, 4, &t, 0), -EINVAL);
    cr_expect_eq(shmq_pool_submit(p, t_status, NULL, 4, &t, 0), -EINVAL);
    cr_expect_eq(shmq_pool_submit(p, t_status, &v, 4, NULL, 0), -EINVAL);
    cr_expect_eq(shmq_pool_submit(p, t_status, &v, 4, &t, -2), -EINVAL);
    cr_expect_eq(shmq_pool_submit_timed(p, t_status, &v, 4, &t, 0, 0), -EINVAL);
    t = submit_ok(p, t_status, &v, sizeof v);
    cr_expect_eq(shmq_pool_wait(NULL, t, NULL, 0, &len, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_wait(p, t, NULL, 4, &len, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_wait(p, t, NULL, 0, NULL, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_wait(p, t, NULL, 0, &len, NULL, 0), -EINVAL);
    cr_expect_eq(shmq_pool_wait(p, t, NULL, 0, &len, &st, INT64_MIN), -EINVAL);
    cr_expect_eq(shmq_pool_next(p, NULL, NULL, 0, &len, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_next(p, &t, NULL, 0, &len, &st, -5), -EINVAL);
    struct iovec a = {NULL, 4}, r = {&v, sizeof v};
    cr_expect_eq(shmq_pool_map(p, NULL, &r, 1, &r, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_map(p, t_status, NULL, 1, &r, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_map(p, t_status, &r, 1, NULL, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_map(p, t_status, &r, 1, &r, NULL, 0), -EINVAL);
    cr_expect_eq(shmq_pool_map(p, t_status, &a, 1, &r, &st, 0), -EINVAL);
    cr_expect_eq(shmq_pool_map(p, t_status, &r, 1, &r, &st, -3), -EINVAL);
    cr_expect_eq(shmq_pool_cancel(NULL, 1), -EINVAL);
    cr_expect_eq(shmq_pool_cancel(p, 999999), -ENOENT);
    cr_expect_eq(shmq_pool_close(NULL), -EINVAL);
    cr_expect_eq(shmq_pool_join(NULL, 0), -EINVAL);
    cr_expect_eq(shmq_pool_worker_pid(NULL, 0), -EINVAL);
    cr_expect_eq(shmq_pool_worker_pid(p, 1), -EINVAL);
    struct shmq_pool_death d;
    cr_expect_eq(shmq_pool_death(p, 0, NULL), -EINVAL);
    cr_expect_eq(shmq_pool_death(p, 0, &d), -ENOENT, "nobody died");
    cr_expect_eq(shmq_pool_workers(NULL), 0);
    shmq_pool_terminate(NULL);
    shmq_pool_destroy(NULL);
    cr_expect_eq(status_of(p, t, NULL, 0, NULL), 0);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, -7), -EINVAL);
    shmq_pool_destroy(p);
}

/* ------------------------------------------------------------------ */
/* Worker deaths                                                        */
/* ------------------------------------------------------------------ */

static void expect_death(enum how how, int sig, int code)
{
    shmq_pool_t *p = pool_new(2, 0);
    uint64_t before[10], after[10];
    for (int i = 0; i < 10; i++) {
        struct pair in = {i, 1};
        before[i] = submit_ok(p, t_add, &in, sizeof in);
    }
    int h = how;
    uint64_t dead = submit_ok(p, t_die, &h, sizeof h);
    for (int i = 0; i < 10; i++) {
        struct pair in = {i, 2};
        after[i] = submit_ok(p, t_add, &in, sizeof in);
    }
    int64_t t0 = th_now_ns();
    cr_expect_eq(status_of(p, dead, NULL, 0, NULL), -EOWNERDEAD);
    cr_expect_lt(th_now_ns() - t0, 2 * TH_SEC, "at once, no grace timer");
    struct shmq_pool_death d;
    cr_assert_eq(shmq_pool_death(p, dead, &d), 0);
    cr_expect_eq(d.ticket, dead);
    cr_expect_gt(d.pid, 0);
    cr_expect_eq(d.reason, 0);
    if (sig) {
        cr_expect(WIFSIGNALED(d.wstatus), "wstatus %#x", d.wstatus);
        cr_expect_eq(WTERMSIG(d.wstatus), sig);
    } else {
        cr_expect(WIFEXITED(d.wstatus), "wstatus %#x", d.wstatus);
        cr_expect_eq(WEXITSTATUS(d.wstatus), code);
    }
    for (int i = 0; i < 10; i++) {
        int64_t sum;
        cr_expect_eq(status_of(p, before[i], &sum, sizeof sum, NULL), 0);
        cr_expect_eq(sum, i + 1);
        cr_expect_eq(status_of(p, after[i], &sum, sizeof sum, NULL), 0);
        cr_expect_eq(sum, i + 2);
    }
    shmq_pool_destroy(p);
}

Test(pool_death, self_sigkill, .timeout = 30)
{
    expect_death(DIE_KILL, SIGKILL, 0);
}
Test(pool_death, sigsegv, .timeout = 30)
{
    expect_death(DIE_SEGV, SIGSEGV, 0);
}
Test(pool_death, abort, .timeout = 30)
{
    expect_death(DIE_ABORT, SIGABRT, 0);
}
Test(pool_death, exit_3, .timeout = 30)
{
    expect_death(DIE_EXIT, 0, 3);
}
Test(pool_death, exit_0_is_a_death_too, .timeout = 30)
{
    expect_death(DIE_EXIT0, 0, 0);
}

Test(pool_death, killed_from_outside_while_busy, .timeout = 30)
{
    shmq_pool_t *p = pool_new(1, 0);
    uint64_t busy = submit_sleep(p, 10 * TH_SEC);
    uint64_t queued[5];
    for (int i = 0; i < 5; i++)
        queued[i] = submit_sleep(p, TH_MS);
    pid_t pid;
    worker_pids(p, &pid, 1);
    th_sleep_ns(100 * TH_MS); /* it is running `busy` now */
    kill(pid, SIGKILL);
    int64_t t0 = th_now_ns();
    cr_expect_eq(status_of(p, busy, NULL, 0, NULL), -EOWNERDEAD);
    cr_expect_lt(th_now_ns() - t0, 2 * TH_SEC);
    for (int i = 0; i < 5; i++) {
        pid_t by;
        cr_expect_eq(status_of(p, queued[i], &by, sizeof by, NULL), 0,
                     "queued tasks are not lost");
        cr_expect_neq(by, pid, "run by the replacement");
    }
    struct shmq_pool_death d;
    cr_assert_eq(shmq_pool_death(p, busy, &d), 0);
    cr_expect_eq(d.pid, pid);
    cr_expect(WIFSIGNALED(d.wstatus) && WTERMSIG(d.wstatus) == SIGKILL);
    shmq_pool_destroy(p);
}

Test(pool_death, killed_from_outside_while_idle, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    pid_t pids[2];
    worker_pids(p, pids, 2);
    th_sleep_ns(50 * TH_MS);
    kill(pids[0], SIGKILL);
    kill(pids[1], SIGKILL);
    cr_expect(all_gone_within(pids, 2, 2 * TH_SEC));
    for (int i = 0; i < 50; i++) {
        struct pair in = {i, i};
        uint64_t t = submit_ok(p, t_add, &in, sizeof in);
        int64_t sum;
        cr_expect_eq(status_of(p, t, &sum, sizeof sum, NULL), 0);
        cr_expect_eq(sum, 2 * i);
    }
    struct shmq_pool_death d;
    cr_expect_eq(shmq_pool_death(p, 0, &d), 0);
    cr_expect_eq(d.ticket, 0, "it ran nothing");
    shmq_pool_destroy(p);
}

Test(pool_death, slot_keeps_working_after_deaths, .timeout = 60)
{
    /* One worker: every death and everything after it goes through the
     * same slot's queue and job records. */
    shmq_pool_t *p = pool_new(1, 0);
    int how = DIE_KILL;
    for (int d = 0; d < 5; d++) {
        uint64_t t = submit_ok(p, t_die, &how, sizeof how);
        cr_expect_eq(status_of(p, t, NULL, 0, NULL), -EOWNERDEAD);
        th_sleep_ns(50 * TH_MS); /* below the crash-loop guard */
    }
    enum { N = 3000 };
    int done = 0;
    for (int i = 0; i < N || done < N;) {
        uint64_t t;
        int rc = -EAGAIN;
        if (i < N) {
            struct pair in = {i, 1};
            rc = shmq_pool_submit(p, t_add, &in, sizeof in, &t, SHMQ_NOWAIT);
            cr_assert(rc == 0 || rc == -EAGAIN, "submit: %s",
                      shmq_strerror(rc));
            i += rc == 0;
        }
        if (rc == 0)
            continue;
        int64_t sum;
        size_t len;
        int st;
        rc = shmq_pool_next(p, &t, &sum, sizeof sum, &len, &st, POOL_DEADLINE);
        cr_assert_eq(rc, 0, "next: %s", shmq_strerror(rc));
        cr_assert_eq(st, 0);
        done++;
    }
    int64_t t0 = th_now_ns();
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    cr_expect_lt(th_now_ns() - t0, 2 * TH_SEC, "join is prompt");
    shmq_pool_destroy(p);
}

/* The sum of a pair, after about 50 us of work: long enough for kills
 * to land while tasks run, short enough for thousands of them. */
static int t_add_slowly(const void *arg, size_t len, void *out, size_t cap,
                        size_t *outlen, void *ctx)
{
    int64_t end = th_now_ns() + 50000;
    while (th_now_ns() < end)
        ;
    return t_add(arg, len, out, cap, outlen, ctx);
}

#define KILL_TICKETS (1u << 18) /* above every task of the test */
#define KILL_TASKS   200000

struct kill_track {
    uint64_t ticket[KILL_TICKETS]; /* open addressing on the ticket */
    int32_t input[KILL_TICKETS];
};

static void track_put(struct kill_track *k, uint64_t t, int32_t i)
{
    uint32_t h = (uint32_t)(t * 0x9e3779b97f4a7c15ull >> 46);
    while (k->ticket[h])
        h = (h + 1) % KILL_TICKETS;
    k->ticket[h] = t;
    k->input[h] = i;
}

/* The input of t, or -1; the slot is marked so it is never found again
 * (a tombstone: the table is sized for the whole test). */
static int32_t track_take(struct kill_track *k, uint64_t t)
{
    uint32_t h = (uint32_t)(t * 0x9e3779b97f4a7c15ull >> 46);
    for (unsigned n = 0; n < KILL_TICKETS && k->ticket[h]; n++) {
        if (k->ticket[h] == t) {
            k->ticket[h] = UINT64_MAX;
            return k->input[h];
        }
        h = (h + 1) % KILL_TICKETS;
    }
    return -1;
}

Test(pool_death, random_kills_lose_nothing, .timeout = 120)
{
    /* Workers SIGKILLed at random moments (running, idle, between a
     * result and the next job, inside a map batch) while tasks stream
     * through submit/next and map: every task completes exactly once,
     * with its right result or -EOWNERDEAD, never more -EOWNERDEAD than
     * kills, and nothing hangs. Kills stay below the crash-loop bound. */
    static struct kill_track k;
    memset(&k, 0, sizeof k);
    shmq_pool_t *p = pool_new(2, 0);
    enum { M = 400 };
    int64_t stop = th_now_ns() + 2500 * TH_MS;
    static struct pair in[M];
    static int64_t out[M];
    static struct iovec args[M], res[M];
    static int st[M];
    uint64_t rnd = (uint64_t)th_now_ns() | 1;
    int64_t next_kill = th_now_ns() + 100 * TH_MS;
    int kills = 0, dead = 0, done = 0;
    int i = 0;
    for (bool more = true; more || done < i;) {
        more = more && i < KILL_TASKS && th_now_ns() < stop;
        if (more && th_now_ns() >= next_kill) {
            int pid = shmq_pool_worker_pid(p, (unsigned)th_rand_below(&rnd, 2));
            if (pid > 0 && kill(pid, SIGKILL) == 0)
                kills++;
            next_kill =
                th_now_ns() + (int64_t)(150 + th_rand_below(&rnd, 100)) * TH_MS;
        }
        if (more && i % 10000 == 5000) { /* a map now and then */
            for (int j = 0; j < M; j++) {
                in[j] = (struct pair){j, i};
                args[j] = (struct iovec){&in[j], sizeof in[j]};
                res[j] = (struct iovec){&out[j], sizeof out[j]};
            }
            cr_assert_eq(
                shmq_pool_map(p, t_add_slowly, args, M, res, st, POOL_DEADLINE),
                0);
            for (int j = 0; j < M; j++) {
                cr_assert(st[j] == 0 || st[j] == -EOWNERDEAD, "item %d: %d", j,
                          st[j]);
                if (st[j] == 0)
                    cr_assert_eq(out[j], j + i);
                dead += st[j] == -EOWNERDEAD;
            }
        }
        uint64_t t;
        int rc = -EAGAIN;
        if (more) {
            struct pair pr = {i, 1000000};
            rc = shmq_pool_submit(p, t_add_slowly, &pr, sizeof pr, &t,
                                  SHMQ_NOWAIT);
            cr_assert(rc == 0 || rc == -EAGAIN, "submit: %s",
                      shmq_strerror(rc));
            if (rc == 0)
                track_put(&k, t, i++);
            if (rc == 0 && i % 64)
                continue;
        }
        int64_t sum = 0;
        size_t len;
        int s2;
        rc = shmq_pool_next(p, &t, &sum, sizeof sum, &len, &s2, POOL_DEADLINE);
        if (rc == -ENOENT)
            continue;
        cr_assert_eq(rc, 0, "next: %s", shmq_strerror(rc));
        int32_t which = track_take(&k, t);
        cr_assert_geq(which, 0, "ticket %llu unknown or delivered twice",
                      (unsigned long long)t);
        cr_assert(s2 == 0 || s2 == -EOWNERDEAD, "status %d", s2);
        if (s2 == 0)
            cr_assert_eq(sum, which + 1000000);
        dead += s2 == -EOWNERDEAD;
        done++;
    }
    cr_expect_leq(dead, kills, "%d tasks dead for %d kills", dead, kills);
    cr_log_info("%d kills, %d tasks with -EOWNERDEAD", kills, dead);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    shmq_pool_destroy(p);
}

/* Returns its pid, then has the kernel SIGKILL it `arg` ns later: after
 * its result was committed, while it goes back for the next task. */
static int t_die_after_return(const void *arg, size_t len, void *out,
                              size_t cap, size_t *outlen, void *ctx)
{
    (void)len, (void)cap, (void)ctx;
    int64_t ns;
    memcpy(&ns, arg, sizeof ns);
    timer_t tm;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGKILL};
    if (timer_create(CLOCK_MONOTONIC, &ev, &tm) != 0)
        return -errno;
    struct itimerspec its = {.it_value = {ns / TH_SEC, ns % TH_SEC}};
    timer_settime(tm, 0, &its, NULL);
    pid_t pid = getpid();
    memcpy(out, &pid, sizeof pid);
    *outlen = sizeof pid;
    return 0;
}

Test(pool_death, killed_after_committing_result, .timeout = 60)
{
    /* 4 workers and a pause per death: below the crash-loop guard */
    shmq_pool_t *p = pool_new(4, 0);
    /* Well after the commit (300 ms: room for a preempted worker on a
     * loaded machine): the result must be delivered. */
    int64_t later = 300 * TH_MS;
    for (int i = 0; i < 4; i++) {
        uint64_t t = submit_ok(p, t_die_after_return, &later, sizeof later);
        pid_t by = 0;
        cr_expect_eq(status_of(p, t, &by, sizeof by, NULL), 0);
        cr_expect_gt(by, 0);
        cr_expect(all_gone_within(&by, 1, 2 * TH_SEC));
    }
    /* Around the commit (a few microseconds): the result or
     * -EOWNERDEAD, never a hang, a lost task or a wrong result; and a
     * task queued behind it always completes. */
    int delivered = 0;
    for (int i = 0; i < 40; i++) {
        th_sleep_ns(30 * TH_MS);
        int64_t soon = (i % 8) * 2000;
        uint64_t t = submit_ok(p, t_die_after_return, &soon, sizeof soon);
        struct pair in = {i, 5};
        uint64_t next = submit_ok(p, t_add, &in, sizeof in);
        pid_t by = 0;
        size_t len = 0;
        int st = status_of(p, t, &by, sizeof by, &len);
        cr_expect(st == 0 || st == -EOWNERDEAD, "status %d", st);
        if (st == 0) {
            cr_expect_eq(len, sizeof by);
            delivered++;
        }
        int64_t sum;
        cr_expect_eq(status_of(p, next, &sum, sizeof sum, NULL), 0);
        cr_expect_eq(sum, i + 5);
    }
    cr_log_info("around the commit: %d of 40 delivered", delivered);
    shmq_pool_destroy(p);
}

/* Dies (SIGKILL) on the item equal to 13, adds otherwise. */
static int t_add_or_die(const void *arg, size_t len, void *out, size_t cap,
                        size_t *outlen, void *ctx)
{
    const struct pair *in = arg;
    if (in->a == 13)
        raise(SIGKILL);
    return t_add(arg, len, out, cap, outlen, ctx);
}

Test(pool_death, death_inside_map, .timeout = 60)
{
    enum { N = 5000 };
    shmq_pool_t *p = pool_new(2, 0);
    static struct pair in[N];
    static int64_t out[N];
    static struct iovec args[N], res[N];
    static int st[N];
    for (int i = 0; i < N; i++) {
        in[i] = (struct pair){i, 1};
        args[i] = (struct iovec){&in[i], sizeof in[i]};
        res[i] = (struct iovec){&out[i], sizeof out[i]};
    }
    cr_assert_eq(
        shmq_pool_map(p, t_add_or_die, args, N, res, st, POOL_DEADLINE), 0);
    for (int i = 0; i < N; i++) {
        if (i == 13) {
            cr_expect_eq(st[i], -EOWNERDEAD);
            continue;
        }
        cr_assert_eq(st[i], 0, "item %d: %d", i, st[i]);
        cr_assert_eq(out[i], i + 1);
    }
    shmq_pool_destroy(p);
}

/* ------------------------------------------------------------------ */
/* Guards                                                               */
/* ------------------------------------------------------------------ */

static int init_exit(void *ctx)
{
    (void)ctx;
    _exit(9); /* not a failure report: a worker that dies at birth */
}

Test(pool_guard, crash_loop_breaks_pool, .timeout = 30)
{
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = 2, .initializer = init_exit};
    cr_assert_eq(shmq_pool_create(&p, &c), 0);
    uint64_t t = submit_ok(p, t_pid, NULL, 0);
    int64_t t0 = th_now_ns();
    cr_expect_eq(status_of(p, t, NULL, 0, NULL), -ECANCELED);
    cr_expect_lt(th_now_ns() - t0, 5 * TH_SEC);
    cr_expect_eq(shmq_pool_submit(p, t_pid, NULL, 0, &t, SHMQ_NOWAIT),
                 -ECANCELED);
    struct shmq_pool_death d;
    cr_expect_eq(shmq_pool_death(p, 0, &d), 0);
    /* the last death: one that died at birth, or one the guard killed */
    cr_expect((WIFEXITED(d.wstatus) && WEXITSTATUS(d.wstatus) == 9) ||
                  (WIFSIGNALED(d.wstatus) && WTERMSIG(d.wstatus) == SIGKILL),
              "wstatus %#x", d.wstatus);
    shmq_pool_destroy(p);
}

Test(pool_guard, crash_loop_from_tasks, .timeout = 30)
{
    shmq_pool_t *p = pool_new(1, 0);
    int how = DIE_KILL;
    uint64_t t[100];
    int64_t t0 = th_now_ns();
    for (int i = 0; i < 100; i++)
        t[i] = submit_ok(p, t_die, &how, sizeof how);
    int dead = 0, cancelled = 0;
    for (int i = 0; i < 100; i++) {
        int st = status_of(p, t[i], NULL, 0, NULL);
        cr_expect(st == -EOWNERDEAD || st == -ECANCELED, "status %d", st);
        dead += st == -EOWNERDEAD;
        cancelled += st == -ECANCELED;
    }
    int64_t took = th_now_ns() - t0;
    if (cancelled == 0) /* only a machine too slow to die 10 times a second */
        cr_expect_gt(took, 10 * TH_SEC, "100 deaths in %lld ms, no guard",
                     (long long)(took / TH_MS));
    else
        cr_expect_leq(dead, 12, "the guard stops forking (%d deaths)", dead);
    shmq_pool_destroy(p);
}

Test(pool_guard, time_limit, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    int64_t ns = 10 * TH_SEC;
    uint64_t t;
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_pool_submit_timed(p, t_sleep, &ns, sizeof ns, &t,
                                        SHMQ_NOWAIT, 100 * TH_MS),
                 0);
    int64_t quick = TH_MS;
    uint64_t ok;
    cr_assert_eq(shmq_pool_submit_timed(p, t_sleep, &quick, sizeof quick, &ok,
                                        SHMQ_NOWAIT, 5 * TH_SEC),
                 0);
    cr_expect_eq(status_of(p, t, NULL, 0, NULL), -ETIMEDOUT);
    int64_t took = th_now_ns() - t0;
    cr_expect(took >= 100 * TH_MS && took < 3 * TH_SEC, "took %lld ms",
              (long long)(took / TH_MS));
    cr_expect_eq(status_of(p, ok, NULL, 0, NULL), 0);
    struct shmq_pool_death d;
    cr_expect_eq(shmq_pool_death(p, t, &d), 0);
    cr_expect_eq(d.reason, -ETIMEDOUT);
    /* the pool goes on */
    struct pair in = {1, 2};
    uint64_t after = submit_ok(p, t_add, &in, sizeof in);
    cr_expect_eq(status_of(p, after, NULL, 0, NULL), 0);
    shmq_pool_destroy(p);
}

static int t_count(const void *arg, size_t len, void *out, size_t cap,
                   size_t *outlen, void *ctx)
{
    (void)len, (void)out, (void)cap, (void)outlen, (void)ctx;
    atomic_fetch_add((_Atomic int *)*(void *const *)arg, 1);
    return 0;
}

Test(pool_guard, cancel_queued_and_running, .timeout = 30)
{
    _Atomic int *runs = th_shared_alloc(4096);
    cr_assert(runs);
    shmq_pool_t *p = pool_new(1, 0);
    uint64_t running = submit_sleep(p, 10 * TH_SEC);
    void *arg = (void *)runs;
    uint64_t queued = submit_ok(p, t_count, &arg, sizeof arg);
    uint64_t kept = submit_ok(p, t_count, &arg, sizeof arg);
    th_sleep_ns(100 * TH_MS);
    cr_expect_eq(shmq_pool_cancel(p, queued), 0);
    cr_expect_eq(shmq_pool_cancel(p, queued), -EALREADY);
    int64_t t0 = th_now_ns();
    cr_expect_eq(shmq_pool_cancel(p, running), 0);
    cr_expect_eq(status_of(p, running, NULL, 0, NULL), -ECANCELED);
    cr_expect_eq(status_of(p, queued, NULL, 0, NULL), -ECANCELED);
    cr_expect_eq(status_of(p, kept, NULL, 0, NULL), 0);
    cr_expect_lt(th_now_ns() - t0, 3 * TH_SEC, "the running one was killed");
    cr_expect_eq(atomic_load(runs), 1, "the cancelled one never ran");
    cr_expect_eq(shmq_pool_cancel(p, kept), -ENOENT, "collected");
    shmq_pool_destroy(p);
    th_shared_free((void *)runs, 4096);
}

struct owner_report {
    _Atomic int ready;
    pid_t pids[4];
};

static int owner_child(void *arg)
{
    struct owner_report *r = arg;
    shmq_pool_t *p = NULL;
    struct shmq_pool_config c = {.workers = 3};
    TH_CHECK_EQ(shmq_pool_create(&p, &c), 0);
    int64_t ns = 30 * TH_SEC;
    uint64_t t;
    /* one busy worker, two idle */
    TH_CHECK_EQ(shmq_pool_submit(p, t_sleep, &ns, sizeof ns, &t, SHMQ_FOREVER),
                0);
    for (unsigned w = 0; w < 3; w++) {
        int pid;
        while ((pid = shmq_pool_worker_pid(p, w)) < 0)
            th_sleep_ns(TH_MS);
        r->pids[w] = pid;
    }
    r->pids[3] = getpid();
    atomic_store(&r->ready, 1);
    pause();
    return 0;
}

Test(pool_guard, owner_death_ends_workers, .timeout = 30)
{
    struct owner_report *r = th_shared_alloc(4096);
    cr_assert(r);
    pid_t owner = th_fork(owner_child, r);
    int64_t end = th_now_ns() + 10 * TH_SEC;
    while (!atomic_load(&r->ready) && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert(atomic_load(&r->ready), "the owner did not start its pool");
    th_sleep_ns(50 * TH_MS);
    cr_expect_eq(shm_mappings(owner), 0, "the pool maps memfds only");
    for (int w = 0; w < 3; w++)
        cr_expect_eq(shm_mappings(r->pids[w]), 0);
    kill(owner, SIGKILL);
    th_wait_pid(owner, 5 * TH_SEC);
    cr_expect(all_gone_within(r->pids, 3, TH_SEC),
              "every worker gone within a second");
    th_shared_free(r, 4096);
}

static pid_t parent_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    int ppid = -1;
    if (f) {
        if (fscanf(f, "%*d %*s %*c %d", &ppid) != 1)
            ppid = -1;
        fclose(f);
    }
    return ppid;
}

Test(pool_guard, fork_server_killed_breaks_pool, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    uint64_t busy = submit_sleep(p, 10 * TH_SEC);
    uint64_t queued[20];
    for (int i = 0; i < 20; i++)
        queued[i] = submit_sleep(p, 10 * TH_SEC);
    pid_t pids[2];
    worker_pids(p, pids, 2);
    pid_t fs = parent_of(pids[0]);
    cr_assert_gt(fs, 1);
    cr_assert_neq(fs, getpid(), "workers are the fork server's children");
    kill(fs, SIGKILL);
    cr_expect(all_gone_within(pids, 2, TH_SEC), "workers die with it");
    int64_t t0 = th_now_ns();
    int st = status_of(p, busy, NULL, 0, NULL);
    cr_expect(st == -ECANCELED || st == -EOWNERDEAD, "status %d", st);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(status_of(p, queued[i], NULL, 0, NULL), -ECANCELED);
    cr_expect_lt(th_now_ns() - t0, 2 * TH_SEC, "nothing hangs");
    uint64_t t;
    cr_expect_eq(shmq_pool_submit(p, t_pid, NULL, 0, &t, SHMQ_NOWAIT),
                 -ECANCELED);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    shmq_pool_destroy(p);
}

Test(pool_guard, recycling_changes_pids, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 1);
    pid_t seen[20];
    for (int i = 0; i < 20; i++) {
        uint64_t t = submit_ok(p, t_pid, NULL, 0);
        cr_assert_eq(status_of(p, t, &seen[i], sizeof seen[i], NULL), 0);
        for (int k = 0; k < i; k++)
            cr_expect_neq(seen[k], seen[i], "a worker ran two tasks");
    }
    struct shmq_pool_death d;
    cr_expect_eq(shmq_pool_death(p, 0, &d), -ENOENT, "retiring is no death");
    shmq_pool_destroy(p);
}

static atomic_bool host_stop;

static void *host_thread(void *arg)
{
    (void)arg;
    FILE *f = fopen("/dev/null", "w");
    while (!atomic_load(&host_stop)) {
        void *m[16];
        for (int i = 0; i < 16; i++)
            m[i] = malloc(16 + (size_t)i * 512);
        for (int i = 0; i < 16; i++)
            free(m[i]);
        if (f)
            fprintf(f, "%d %s\n", 42, "busy host");
    }
    if (f)
        fclose(f);
    return NULL;
}

Test(pool_guard, threaded_host_recycling_every_task, .timeout = 60)
{
    atomic_store(&host_stop, false);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, host_thread, NULL), 0);
    shmq_pool_t *p = pool_new(2, 1);
    for (int i = 0; i < 100; i++) {
        struct pair in = {i, 7};
        uint64_t t = submit_ok(p, t_add, &in, sizeof in);
        int64_t sum;
        cr_assert_eq(status_of(p, t, &sum, sizeof sum, NULL), 0);
        cr_assert_eq(sum, i + 7);
    }
    shmq_pool_destroy(p);
    atomic_store(&host_stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
}

static void sigchld_reaper(int sig)
{
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

static void deaths_under_host_sigchld(void (*handler)(int))
{
    struct sigaction sa = {.sa_handler = handler}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, &old);
    shmq_pool_t *p = pool_new(2, 0);
    int how = DIE_SEGV;
    uint64_t dead = submit_ok(p, t_die, &how, sizeof how);
    uint64_t busy = submit_sleep(p, 10 * TH_SEC);
    th_sleep_ns(100 * TH_MS);
    pid_t pids[2];
    worker_pids(p, pids, 2);
    for (int i = 0; i < 2; i++)
        kill(pids[i], SIGKILL);
    cr_expect_eq(status_of(p, dead, NULL, 0, NULL), -EOWNERDEAD);
    cr_expect_eq(status_of(p, busy, NULL, 0, NULL), -EOWNERDEAD);
    struct pair in = {3, 4};
    uint64_t t = submit_ok(p, t_add, &in, sizeof in);
    cr_expect_eq(status_of(p, t, NULL, 0, NULL), 0);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    shmq_pool_destroy(p);
    sigaction(SIGCHLD, &old, NULL);
}

Test(pool_guard, host_ignores_sigchld, .timeout = 30)
{
    deaths_under_host_sigchld(SIG_IGN);
}

Test(pool_guard, host_reaps_children_itself, .timeout = 30)
{
    deaths_under_host_sigchld(sigchld_reaper);
}

Test(pool_guard, saturated_submit_times_out, .timeout = 60)
{
    shmq_pool_t *p = pool_new(1, 0);
    int64_t ns = 10 * TH_SEC;
    uint64_t t;
    int rc;
    int n = 0;
    while ((rc = shmq_pool_submit(p, t_sleep, &ns, sizeof ns, &t,
                                  SHMQ_NOWAIT)) == 0)
        n++;
    cr_expect_eq(rc, -EAGAIN);
    cr_expect_gt(n, 100);
    cr_expect_lt(n, 100000, "bounded");
    int64_t t0 = th_now_ns();
    cr_expect_eq(shmq_pool_submit(p, t_sleep, &ns, sizeof ns, &t, 50 * TH_MS),
                 -ETIMEDOUT);
    cr_expect_geq(th_now_ns() - t0, 50 * TH_MS);
    shmq_pool_destroy(p);
}

/* ------------------------------------------------------------------ */
/* Teardown                                                             */
/* ------------------------------------------------------------------ */

Test(pool_teardown, terminate_with_thousands_queued, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    enum { N = 2000 };
    static uint64_t t[N];
    for (int i = 0; i < N; i++)
        t[i] = submit_sleep(p, 10 * TH_SEC);
    th_sleep_ns(50 * TH_MS);
    int64_t t0 = th_now_ns();
    shmq_pool_terminate(p);
    cr_expect_lt(th_now_ns() - t0, TH_SEC, "terminate is prompt");
    for (int i = 0; i < N; i++)
        cr_assert_eq(status_of(p, t[i], NULL, 0, NULL), -ECANCELED);
    uint64_t x;
    cr_expect_eq(shmq_pool_submit(p, t_pid, NULL, 0, &x, 0), -EPIPE);
    cr_expect_eq(shmq_pool_join(p, 0), 0);
    shmq_pool_destroy(p);
}

static int destroy_in_child(void *arg)
{
    shmq_pool_destroy(arg);
    return 0;
}

Test(pool_teardown, destroy_in_forked_child_spares_owner, .timeout = 30)
{
    shmq_pool_t *p = pool_new(2, 0);
    struct pair in = {1, 2};
    uint64_t t = submit_ok(p, t_add, &in, sizeof in);
    th_assert_child_ok(th_fork(destroy_in_child, p));
    int64_t sum;
    cr_expect_eq(status_of(p, t, &sum, sizeof sum, NULL), 0);
    cr_expect_eq(sum, 3);
    t = submit_ok(p, t_add, &in, sizeof in);
    cr_expect_eq(status_of(p, t, &sum, sizeof sum, NULL), 0);
    shmq_pool_destroy(p);
}

Test(pool_teardown, destroy_leaves_nothing, .timeout = 60)
{
    /* A first pool warms up what the process keeps anyway (allocator
     * arenas, the sanitizers' own mappings). */
    shmq_pool_destroy(pool_new(2, 0));
    int fds = count_dir("/proc/self/fd");
    int maps = count_lines("/proc/self/maps");
    pid_t pids[2];
    for (int round = 0; round < 3; round++) {
        shmq_pool_t *p = pool_new(2, round == 1 ? 1 : 0);
        for (int i = 0; i < 50; i++) {
            struct pair in = {i, i};
            submit_ok(p, t_add, &in, sizeof in);
        }
        int64_t ns = 10 * TH_SEC;
        submit_ok(p, t_sleep, &ns, sizeof ns);
        worker_pids(p, pids, 2);
        cr_expect_eq(shm_mappings(getpid()), 0, "memfds only: no name");
        cr_expect_eq(shm_mappings(pids[0]), 0);
        if (round == 2) {
            /* closed, a long task still running: destroy terminates */
            shmq_pool_close(p);
        }
        shmq_pool_destroy(p); /* uncollected results are dropped */
        cr_expect(all_gone_within(pids, 2, 2 * TH_SEC));
    }
    /* close + join + destroy */
    shmq_pool_t *p = pool_new(2, 0);
    submit_ok(p, t_pid, NULL, 0);
    cr_expect_eq(shmq_pool_close(p), 0);
    cr_expect_eq(shmq_pool_join(p, POOL_DEADLINE), 0);
    shmq_pool_destroy(p);
    cr_expect_eq(count_dir("/proc/self/fd"), fds, "no descriptor leaked");
    cr_expect_eq(count_lines("/proc/self/maps"), maps, "no mapping leaked");
    siginfo_t si = {0};
    int rc = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
    cr_expect(rc < 0 && errno == ECHILD, "no zombie, no child left (pid %d)",
              (int)si.si_pid);
}
