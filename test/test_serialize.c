/* SPDX-License-Identifier: MIT */
/*
 * test_serialize.c - the serialization layer: putv, put_many, get_many,
 * put_begin/put_commit/put_abort and get_begin/get_end (DESIGN.md,
 * "Serialization layer" and its "Details of the contract" bullets).
 *
 * One test per rule, each written so that it fails when the rule is
 * broken: argument errors before the queue's state, closed wins,
 * timeouts, put_many as write(2) or all-or-none, get_many's packing,
 * reservations and borrows (visibility, lifetime, ownership across
 * fork, release, SIGKILL), JoinableQueue counts, signals, and a
 * multi-process stress mixing every call. Then the edges (0-byte
 * commits, forged shmq_msg, put_many counts against each bound), how
 * the messages of a put_many batch are taken (get, get_many, get_begin:
 * each a message of its own), and SIGKILL of processes holding borrows
 * of batch messages, reservations and waiting batches, and a kill storm
 * mixing put/get with every new call.
 *
 * Tests of rules the library breaks today would be built with
 * -DSHMQ_KNOWN_BUGS only (so that the shared tree stays green), each with
 * a comment saying what goes wrong; there are none at the moment.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "layout.h" /* to scribble on a region, as a hostile process would */

/* Upper bound on how late a timed-out call may return: generous, the
 * machine is shared; the lower bound (never early) is exact. */
#define LATE_NS (2 * TH_SEC)

static shmq_t *make(size_t maxsize, size_t capacity, size_t max_message,
                    unsigned flags)
{
    struct shmq_config cfg = {.maxsize = maxsize,
                              .capacity = capacity,
                              .max_message = max_message,
                              .flags = flags};
    shmq_t *q = NULL;
    int r = shmq_create(&q, &cfg);
    cr_assert_eq(r, 0, "create(%zu, %zu, %zu): %d", maxsize, capacity,
                 max_message, r);
    return q;
}

/* A small queue: 8 messages of up to 64 bytes. */
static shmq_t *small(void)
{
    return make(8, 4096, 64, 0);
}

static void put_u32(shmq_t *q, uint32_t v)
{
    int r = shmq_put(q, &v, sizeof v, SHMQ_NOWAIT);
    cr_assert_eq(r, 0, "put %u: %d", v, r);
}

static uint32_t get_u32(shmq_t *q)
{
    uint32_t v = 0;
    size_t len = 0;
    int r = shmq_get(q, &v, sizeof v, &len, SHMQ_NOWAIT);
    cr_assert_eq(r, 0, "get: %d", r);
    cr_assert_eq(len, sizeof v, "len %zu", len);
    return v;
}

/* Put 0-byte messages until the queue is full; how many went in. */
static size_t fill_empty(shmq_t *q)
{
    size_t n = 0;
    while (shmq_put_nowait(q, NULL, 0) == 0)
        n++;
    return n;
}

/* Take every message there is; how many. */
static size_t drain(shmq_t *q)
{
    static unsigned char buf[1 << 16];
    size_t n = 0, len;
    while (shmq_get_nowait(q, buf, sizeof buf, &len) == 0)
        n++;
    return n;
}

static void expect_timed_out(const char *what, int r, int64_t t0,
                             int64_t timeout)
{
    int64_t dt = th_now_ns() - t0;
    cr_assert_eq(r, -ETIMEDOUT, "%s: %d, expected -ETIMEDOUT", what, r);
    cr_assert_geq(dt, timeout, "%s timed out early: %lld ns of %lld", what,
                  (long long)dt, (long long)timeout);
    cr_assert_lt(dt, timeout + LATE_NS, "%s timed out late: %lld ns", what,
                 (long long)dt);
}

static bool aligned8(const void *p)
{
    return ((uintptr_t)p & 7u) == 0;
}

/* ------------------------------------------------------------------ */
/* A call blocked in another thread                                     */
/* ------------------------------------------------------------------ */

struct bg;
typedef int (*bg_fn)(struct bg *b);

struct bg {
    pthread_t thread;
    bg_fn fn;
    shmq_t *q;
    const void *arg;
    size_t n;
    unsigned flags;
    pid_t tid; /* atomic */
    int done;  /* atomic */
    int rc;
    struct iovec out[16];
    unsigned char buf[1024];
};

static void *bg_main(void *p)
{
    struct bg *b = p;
    __atomic_store_n(&b->tid, th_gettid(), __ATOMIC_RELEASE);
    b->rc = b->fn(b);
    __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void bg_start(struct bg *b, bg_fn fn, shmq_t *q)
{
    b->fn = fn;
    b->q = q;
    b->tid = 0;
    b->done = 0;
    cr_assert_eq(pthread_create(&b->thread, NULL, bg_main, b), 0, "thread");
}

/* Wait until the thread sleeps inside its call (past any spinning). */
static void bg_blocked(struct bg *b)
{
    int64_t end = th_now_ns() + 5 * TH_SEC;
    while (__atomic_load_n(&b->tid, __ATOMIC_ACQUIRE) == 0 && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert(th_wait_sleeping(getpid(), b->tid, 5 * TH_SEC),
              "the call never blocked");
    cr_assert_eq(__atomic_load_n(&b->done, __ATOMIC_ACQUIRE), 0,
                 "the call returned (%d) instead of blocking", b->rc);
}

static bool bg_done(struct bg *b)
{
    return __atomic_load_n(&b->done, __ATOMIC_ACQUIRE) != 0;
}

static int bg_join(struct bg *b)
{
    pthread_join(b->thread, NULL);
    return b->rc;
}

/* ------------------------------------------------------------------ */
/* Argument errors come first                                           */
/* ------------------------------------------------------------------ */

Test(serialize, putv_argument_errors, .timeout = 10)
{
    shmq_t *q = small();
    char x = 'x';
    struct iovec ok[2] = {{&x, 1}, {&x, 1}};
    struct iovec nullbase[2] = {{&x, 1}, {NULL, 1}};
    struct iovec nullzero[2] = {{&x, 1}, {NULL, 0}};
    /* One entry too many, every one of them valid: only the count is
     * wrong. */
    static struct iovec many[IOV_MAX + 1];
    for (int i = 0; i <= IOV_MAX; i++)
        many[i] = (struct iovec){&x, 0};
    for (int closed = 0; closed < 2; closed++) {
        /* After close too: argument errors before the queue's state. */
        cr_assert_eq(shmq_putv(NULL, ok, 2, SHMQ_NOWAIT), -EINVAL, "q NULL");
        cr_assert_eq(shmq_putv(q, ok, -1, SHMQ_NOWAIT), -EINVAL, "iovcnt -1");
        cr_assert_eq(shmq_putv(q, ok, INT_MIN, SHMQ_NOWAIT), -EINVAL,
                     "iovcnt INT_MIN");
        cr_assert_eq(shmq_putv(q, many, IOV_MAX + 1, SHMQ_NOWAIT), -EINVAL,
                     "iovcnt above IOV_MAX");
        cr_assert_eq(shmq_putv(q, NULL, 1, SHMQ_NOWAIT), -EINVAL,
                     "iov NULL with iovcnt 1");
        cr_assert_eq(shmq_putv(q, nullbase, 2, SHMQ_NOWAIT), -EINVAL,
                     "NULL base with a length");
        cr_assert_eq(shmq_putv(q, ok, 2, -2), -EINVAL, "timeout -2");
        cr_assert_eq(shmq_putv(q, ok, 2, INT64_MIN), -EINVAL,
                     "timeout INT64_MIN");
        if (!closed) {
            cr_assert_eq(shmq_qsize(q), 0, "an argument error put something");
            shmq_close(q);
        }
    }
    /* A NULL base of length 0 and iov NULL with iovcnt 0 are fine. */
    shmq_release(q);
    q = small();
    cr_assert_eq(shmq_putv(q, nullzero, 2, SHMQ_NOWAIT), 0, "NULL base, len 0");
    cr_assert_eq(shmq_putv(q, NULL, 0, SHMQ_NOWAIT), 0, "iov NULL, iovcnt 0");
    cr_assert_eq(shmq_qsize(q), 2, "qsize");
    shmq_release(q);
}

Test(serialize, putv_emsgsize_total_and_overflow, .timeout = 10)
{
    shmq_t *q = small();
    size_t mm = shmq_max_message(q);
    static char big[1 << 12];
    struct iovec over[2] = {{big, mm}, {big, 1}};
    cr_assert_eq(shmq_putv(q, over, 2, SHMQ_NOWAIT), -EMSGSIZE,
                 "total max_message + 1");
    /* The sum wraps around to 1 byte: still too big. */
    struct iovec wrap[2] = {{big, SIZE_MAX}, {big, 2}};
    cr_assert_eq(shmq_putv(q, wrap, 2, SHMQ_NOWAIT), -EMSGSIZE,
                 "a total that overflows size_t");
    struct iovec wrap3[3] = {
        {big, SIZE_MAX / 2 + 1}, {big, SIZE_MAX / 2 + 1}, {big, 3}};
    cr_assert_eq(shmq_putv(q, wrap3, 3, SHMQ_NOWAIT), -EMSGSIZE,
                 "three pieces that wrap to 3 bytes");
    /* -EINVAL comes before -EMSGSIZE, wherever the bad entry is. */
    struct iovec both[2] = {{big, SIZE_MAX}, {NULL, 1}};
    cr_assert_eq(shmq_putv(q, both, 2, SHMQ_NOWAIT), -EINVAL,
                 "NULL base after a too-big entry");
    cr_assert_eq(shmq_qsize(q), 0, "something was put");
    /* -EMSGSIZE before the queue's state: full, then closed. */
    fill_empty(q);
    cr_assert_eq(shmq_putv(q, over, 2, SHMQ_FOREVER), -EMSGSIZE, "when full");
    shmq_close(q);
    cr_assert_eq(shmq_putv(q, over, 2, SHMQ_FOREVER), -EMSGSIZE, "when closed");
    shmq_release(q);
}

Test(serialize, put_many_argument_errors, .timeout = 10)
{
    shmq_t *q = small();
    char x = 'x';
    static char big[1 << 12];
    struct iovec ok[2] = {{&x, 1}, {&x, 1}};
    struct iovec nullbase[2] = {{&x, 1}, {NULL, 1}};
    size_t mm = shmq_max_message(q);
    struct iovec toobig[3] = {{&x, 1}, {&x, 1}, {big, mm + 1}};
    for (int closed = 0; closed < 2; closed++) {
        for (unsigned fl = 0; fl <= SHMQ_ALL; fl++) {
            cr_assert_eq(shmq_put_many(NULL, ok, 2, fl, SHMQ_NOWAIT), -EINVAL,
                         "q NULL");
            cr_assert_eq(shmq_put_many(q, NULL, 1, fl, SHMQ_NOWAIT), -EINVAL,
                         "msgs NULL, n 1");
            cr_assert_eq(shmq_put_many(q, nullbase, 2, fl, SHMQ_NOWAIT),
                         -EINVAL, "NULL base with a length");
            cr_assert_eq(shmq_put_many(q, ok, 2, fl, -5), -EINVAL,
                         "timeout -5");
            cr_assert_eq(shmq_put_many(q, ok, 2, fl | 0x2u, SHMQ_NOWAIT),
                         -EINVAL, "unknown flag 0x2");
            cr_assert_eq(shmq_put_many(q, ok, 2, fl | 0x80000000u, SHMQ_NOWAIT),
                         -EINVAL, "unknown flag 0x80000000");
            /* Any message above max_message: -EMSGSIZE before anything
             * is put, also the ones before it. */
            cr_assert_eq(shmq_put_many(q, toobig, 3, fl, SHMQ_FOREVER),
                         -EMSGSIZE, "third message too big (flags %u)", fl);
            cr_assert_eq(shmq_qsize(q), 0, "put something before -EMSGSIZE");
            /* n 0 returns 0, msgs NULL or not, closed or not: there is
             * nothing to put. */
            cr_assert_eq(shmq_put_many(q, NULL, 0, fl, SHMQ_NOWAIT), 0,
                         "n 0, msgs NULL");
            cr_assert_eq(shmq_put_many(q, ok, 0, fl, SHMQ_FOREVER), 0, "n 0");
        }
        shmq_close(q);
    }
    shmq_release(q);
}

Test(serialize, get_many_argument_errors, .timeout = 10)
{
    shmq_t *q = small();
    put_u32(q, 7);
    char buf[64];
    struct iovec msgs[4];
    for (int closed = 0; closed < 2; closed++) {
        cr_assert_eq(shmq_get_many(NULL, buf, sizeof buf, msgs, 4, SHMQ_NOWAIT),
                     -EINVAL, "q NULL");
        cr_assert_eq(shmq_get_many(q, buf, sizeof buf, NULL, 4, SHMQ_NOWAIT),
                     -EINVAL, "msgs NULL");
        cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 0, SHMQ_NOWAIT),
                     -EINVAL, "max_msgs 0");
        cr_assert_eq(shmq_get_many(q, NULL, 8, msgs, 4, SHMQ_NOWAIT), -EINVAL,
                     "buf NULL with cap 8");
        cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, -2), -EINVAL,
                     "timeout -2");
        cr_assert_eq(shmq_qsize(q), 1, "an argument error took the message");
        shmq_close(q);
    }
    /* Closed, one message left: taken, then drained. */
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, SHMQ_NOWAIT), 1,
                 "the message left");
    cr_assert_eq(shmq_get_many(q, NULL, 0, msgs, 4, -2), -EINVAL,
                 "timeout -2 on a drained queue");
    shmq_release(q);
}

Test(serialize, put_begin_argument_errors, .timeout = 10)
{
    shmq_t *q = small();
    size_t mm = shmq_max_message(q);
    struct shmq_msg m;
    for (int closed = 0; closed < 2; closed++) {
        cr_assert_eq(shmq_put_begin(NULL, 1, &m, SHMQ_NOWAIT), -EINVAL,
                     "q NULL");
        cr_assert_eq(shmq_put_begin(q, 1, NULL, SHMQ_NOWAIT), -EINVAL,
                     "m NULL");
        cr_assert_eq(shmq_put_begin(q, 1, &m, -3), -EINVAL, "timeout -3");
        cr_assert_eq(shmq_put_begin(q, mm + 1, &m, SHMQ_FOREVER), -EMSGSIZE,
                     "max_len above max_message");
        cr_assert_eq(shmq_put_begin(q, SIZE_MAX, &m, SHMQ_FOREVER), -EMSGSIZE,
                     "max_len SIZE_MAX");
        if (!closed) {
            /* Before the state: a full queue does not make it wait. */
            fill_empty(q);
            cr_assert_eq(shmq_put_begin(q, mm + 1, &m, SHMQ_FOREVER), -EMSGSIZE,
                         "max_len above max_message when full");
            drain(q);
            shmq_close(q);
        }
    }
    shmq_release(q);
}

Test(serialize, commit_abort_argument_errors, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg m, zero, borrow;
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(shmq_put_begin(q, 16, &m, SHMQ_NOWAIT), 0, "put_begin");
    cr_assert_eq(shmq_put_commit(NULL, &m, 1), -EINVAL, "commit: q NULL");
    cr_assert_eq(shmq_put_commit(q, NULL, 1), -EINVAL, "commit: m NULL");
    cr_assert_eq(shmq_put_commit(q, &zero, 0), -EINVAL, "commit: zeroed m");
    cr_assert_eq(shmq_put_abort(NULL, &m), -EINVAL, "abort: q NULL");
    cr_assert_eq(shmq_put_abort(q, NULL), -EINVAL, "abort: m NULL");
    cr_assert_eq(shmq_put_abort(q, &zero), -EINVAL, "abort: zeroed m");

    /* A borrow is not a reservation, and the other way round. */
    put_u32(q, 5);
    cr_assert_eq(shmq_get_begin(q, &borrow, SHMQ_NOWAIT), 0, "get_begin");
    struct shmq_msg copy = borrow;
    cr_assert_eq(shmq_put_commit(q, &copy, 0), -EINVAL, "commit a borrow");
    cr_assert_eq(shmq_put_abort(q, &copy), -EINVAL, "abort a borrow");
    copy = m;
    cr_assert_eq(shmq_get_end(q, &copy), -EINVAL, "get_end a reservation");

    /* Another handle of the same queue does not own them. */
    shmq_t *h2 = NULL;
    cr_assert_eq(shmq_from_fd(&h2, shmq_fd(q)), 0, "from_fd");
    copy = m;
    cr_assert_eq(shmq_put_commit(h2, &copy, 1), -EINVAL,
                 "commit through another handle");
    cr_assert_eq(shmq_put_abort(h2, &copy), -EINVAL,
                 "abort through another handle");
    copy = borrow;
    cr_assert_eq(shmq_get_end(h2, &copy), -EINVAL,
                 "get_end through another handle");
    cr_assert_eq(shmq_get_end(NULL, &borrow), -EINVAL, "get_end: q NULL");
    cr_assert_eq(shmq_get_end(q, NULL), -EINVAL, "get_end: m NULL");
    cr_assert_eq(shmq_get_end(q, &zero), -EINVAL, "get_end: zeroed m");
    cr_assert_eq(shmq_get_begin(NULL, &borrow, SHMQ_NOWAIT), -EINVAL,
                 "get_begin: q NULL");
    cr_assert_eq(shmq_get_begin(q, NULL, SHMQ_NOWAIT), -EINVAL,
                 "get_begin: m NULL");
    cr_assert_eq(shmq_get_begin(q, &copy, -7), -EINVAL, "get_begin: timeout");

    /* None of that changed anything: both still open and ours. */
    cr_assert_eq(shmq_qsize(q), 0, "qsize");
    memcpy(m.data, "abcd", 4);
    cr_assert_eq(shmq_put_commit(q, &m, 4), 0, "commit after the errors");
    cr_assert_eq(shmq_get_end(q, &borrow), 0, "get_end after the errors");
    char buf[16];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert(len == 4 && memcmp(buf, "abcd", 4) == 0, "committed message");
    shmq_release(h2);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Closed wins                                                          */
/* ------------------------------------------------------------------ */

Test(serialize, closed_wins_for_puts, .timeout = 10)
{
    shmq_t *q = small();
    fill_empty(q); /* full: a put that looked at room first would wait */
    shmq_close(q);
    char x = 'x';
    struct iovec iov[2] = {{&x, 1}, {&x, 1}};
    struct shmq_msg m;
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_putv(q, iov, 2, SHMQ_FOREVER), -EPIPE, "putv");
    cr_assert_eq(shmq_putv(q, iov, 2, SHMQ_NOWAIT), -EPIPE, "putv nowait");
    cr_assert_eq(shmq_put_many(q, iov, 2, 0, SHMQ_FOREVER), -EPIPE, "put_many");
    cr_assert_eq(shmq_put_many(q, iov, 2, SHMQ_ALL, SHMQ_FOREVER), -EPIPE,
                 "put_many SHMQ_ALL");
    cr_assert_eq(shmq_put_many(q, iov, 2, 0, 100 * TH_MS), -EPIPE,
                 "put_many timed");
    cr_assert_eq(shmq_put_begin(q, 8, &m, SHMQ_FOREVER), -EPIPE, "put_begin");
    cr_assert_eq(shmq_put_begin(q, 8, &m, SHMQ_NOWAIT), -EPIPE,
                 "put_begin nowait");
    cr_assert_lt(th_now_ns() - t0, LATE_NS, "closed puts waited");
    shmq_release(q);

    /* Not full: closed still wins. */
    q = small();
    shmq_close(q);
    cr_assert_eq(shmq_putv(q, iov, 2, SHMQ_NOWAIT), -EPIPE, "putv, room");
    cr_assert_eq(shmq_put_many(q, iov, 2, SHMQ_ALL, SHMQ_NOWAIT), -EPIPE,
                 "put_many ALL, room");
    cr_assert_eq(shmq_put_begin(q, 0, &m, SHMQ_NOWAIT), -EPIPE,
                 "put_begin, room");
    cr_assert_eq(shmq_qsize(q), 0, "something went in");
    shmq_release(q);
}

Test(serialize, closed_and_drained_gets_are_epipe, .timeout = 10)
{
    shmq_t *q = small();
    put_u32(q, 1);
    put_u32(q, 2);
    shmq_close(q);
    uint64_t buf[8];
    struct iovec msgs[4];
    struct shmq_msg m;
    /* Not drained yet: the messages left come out. */
    cr_assert_eq(shmq_get_begin(q, &m, SHMQ_NOWAIT), 0, "get_begin");
    cr_assert_eq(m.len, 4, "len");
    cr_assert_eq(*(const uint32_t *)m.data, 1, "first");
    cr_assert_eq(shmq_get_end(q, &m), 0, "get_end");
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, SHMQ_NOWAIT), 1,
                 "get_many of the last");
    cr_assert_eq(*(const uint32_t *)msgs[0].iov_base, 2, "second");
    for (int i = 0; i < 2; i++) {
        int64_t t = i ? SHMQ_FOREVER : SHMQ_NOWAIT;
        cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, t), -EPIPE,
                     "get_many drained");
        cr_assert_eq(shmq_get_begin(q, &m, t), -EPIPE, "get_begin drained");
    }
    shmq_release(q);
}

/* A closed queue is drained when no committed message is left, whatever
 * reservations are open; their commits are -EPIPE, and dropped. */
Test(serialize, close_with_open_reservation, .timeout = 10)
{
    shmq_t *q = make(8, 4096, 64, SHMQ_JOINABLE);
    struct shmq_msg a, b;
    cr_assert_eq(shmq_put_begin(q, 8, &a, SHMQ_NOWAIT), 0, "put_begin a");
    put_u32(q, 42);
    cr_assert_eq(shmq_put_begin(q, 8, &b, SHMQ_NOWAIT), 0, "put_begin b");
    shmq_close(q);
    cr_assert_eq(get_u32(q), 42, "the committed message");
    uint64_t buf[8];
    struct iovec msgs[2];
    struct shmq_msg g;
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 2, SHMQ_FOREVER),
                 -EPIPE, "get_many past open reservations");
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_FOREVER), -EPIPE,
                 "get_begin past open reservations");
    cr_assert_lt(th_now_ns() - t0, LATE_NS, "drained gets waited");
    memset(a.data, 1, 8);
    cr_assert_eq(shmq_put_commit(q, &a, 8), -EPIPE, "commit a after close");
    cr_assert_eq(shmq_put_commit(q, &a, 8), -EINVAL, "a is gone");
    cr_assert_eq(shmq_put_abort(q, &b), 0, "abort b after close");
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), -EPIPE, "still drained");
    cr_assert_eq(shmq_qsize(q), 0, "qsize");
    /* Only the delivered message counts as a task. */
    cr_assert_eq(shmq_task_done(q), 0, "task_done of 42");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "join");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "dropped ones are no tasks");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Timeouts                                                             */
/* ------------------------------------------------------------------ */

Test(serialize, nowait_is_eagain, .timeout = 10)
{
    shmq_t *q = small();
    uint64_t buf[8];
    struct iovec msgs[4];
    struct shmq_msg m;
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, SHMQ_NOWAIT),
                 -EAGAIN, "get_many empty");
    cr_assert_eq(shmq_get_begin(q, &m, SHMQ_NOWAIT), -EAGAIN,
                 "get_begin empty");
    fill_empty(q);
    char x = 'x';
    struct iovec iov[2] = {{&x, 1}, {&x, 1}};
    cr_assert_eq(shmq_putv(q, iov, 2, SHMQ_NOWAIT), -EAGAIN, "putv full");
    cr_assert_eq(shmq_put_many(q, iov, 2, 0, SHMQ_NOWAIT), -EAGAIN,
                 "put_many full");
    cr_assert_eq(shmq_put_many(q, iov, 2, SHMQ_ALL, SHMQ_NOWAIT), -EAGAIN,
                 "put_many ALL full");
    cr_assert_eq(shmq_put_begin(q, 1, &m, SHMQ_NOWAIT), -EAGAIN,
                 "put_begin full");
    cr_assert_eq(shmq_qsize(q), 8, "qsize");
    shmq_release(q);
}

Test(serialize, positive_timeouts_expire, .timeout = 30)
{
    const int64_t T = 100 * TH_MS;
    shmq_t *q = small();
    uint64_t buf[8];
    struct iovec msgs[4];
    struct shmq_msg m;
    int64_t t0 = th_now_ns();
    expect_timed_out("get_many", shmq_get_many(q, buf, sizeof buf, msgs, 4, T),
                     t0, T);
    t0 = th_now_ns();
    expect_timed_out("get_begin", shmq_get_begin(q, &m, T), t0, T);
    fill_empty(q);
    char x = 'x';
    struct iovec iov[2] = {{&x, 1}, {&x, 1}};
    t0 = th_now_ns();
    expect_timed_out("putv", shmq_putv(q, iov, 2, T), t0, T);
    t0 = th_now_ns();
    expect_timed_out("put_many", shmq_put_many(q, iov, 2, 0, T), t0, T);
    t0 = th_now_ns();
    expect_timed_out("put_many ALL", shmq_put_many(q, iov, 2, SHMQ_ALL, T), t0,
                     T);
    t0 = th_now_ns();
    expect_timed_out("put_begin", shmq_put_begin(q, 1, &m, T), t0, T);
    cr_assert_eq(shmq_qsize(q), 8, "qsize");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* putv                                                                 */
/* ------------------------------------------------------------------ */

Test(serialize, putv_concatenates, .timeout = 10)
{
    shmq_t *q = make(64, 1 << 16, 4096, 0);
    size_t mm = shmq_max_message(q);
    static unsigned char whole[1 << 13], out[1 << 13];
    static const size_t cuts[][4] = {
        {0, 0, 0, 0}, {1, 0, 0, 0}, {3, 5, 0, 7}, {0, 0, 9, 0}, {100, 1, 2, 3}};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        size_t total = 0;
        struct iovec iov[4];
        for (int i = 0; i < 4; i++) {
            iov[i].iov_base = cuts[c][i] ? whole + total : NULL;
            iov[i].iov_len = cuts[c][i];
            total += cuts[c][i];
        }
        th_fill(whole, total, (uint32_t)c);
        cr_assert_eq(shmq_putv(q, iov, 4, SHMQ_NOWAIT), 0, "putv %zu", c);
        size_t len = SIZE_MAX;
        cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
        cr_assert_eq(len, total, "length of case %zu", c);
        cr_assert(th_check(out, len, (uint32_t)c), "content of case %zu", c);
    }
    /* Exactly max_message, in IOV_MAX pieces. */
    static struct iovec many[IOV_MAX];
    th_fill(whole, mm, 99);
    size_t off = 0;
    for (int i = 0; i < IOV_MAX; i++) {
        size_t piece = i == IOV_MAX - 1 ? mm - off : mm / IOV_MAX;
        many[i].iov_base = whole + off;
        many[i].iov_len = piece;
        off += piece;
    }
    cr_assert_eq(shmq_putv(q, many, IOV_MAX, SHMQ_NOWAIT), 0, "IOV_MAX pieces");
    size_t len = 0;
    cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
    cr_assert_eq(len, mm, "len");
    cr_assert(th_check(out, mm, 99), "content");
    /* iovcnt 0: a 0-byte message, counted by qsize. */
    cr_assert_eq(shmq_putv(q, NULL, 0, SHMQ_NOWAIT), 0, "iovcnt 0");
    cr_assert_eq(shmq_qsize(q), 1, "qsize");
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), 0, "get 0 bytes");
    cr_assert_eq(len, 0, "len");
    shmq_release(q);
}

/* FIFO with put, as put would. */
Test(serialize, putv_orders_with_put, .timeout = 10)
{
    shmq_t *q = small();
    for (uint32_t i = 0; i < 6; i++) {
        if (i % 2) {
            struct iovec iov[2] = {{&i, 2}, {(char *)&i + 2, 2}};
            cr_assert_eq(shmq_putv(q, iov, 2, SHMQ_NOWAIT), 0, "putv");
        } else {
            put_u32(q, i);
        }
    }
    for (uint32_t i = 0; i < 6; i++)
        cr_assert_eq(get_u32(q), i, "order");
    shmq_release(q);
}

static int putv_blocked(struct bg *b)
{
    struct iovec iov[2] = {{(void *)"ab", 2}, {(void *)"cd", 2}};
    return shmq_putv(b->q, iov, 2, SHMQ_FOREVER);
}

Test(serialize, putv_waits_for_room, .timeout = 20)
{
    shmq_t *q = small();
    size_t n = fill_empty(q);
    struct bg b;
    bg_start(&b, putv_blocked, q);
    bg_blocked(&b);
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), 0, "make room");
    cr_assert_eq(bg_join(&b), 0, "putv after room");
    char buf[8];
    for (size_t i = 1; i < n; i++)
        cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get putv's");
    cr_assert(len == 4 && memcmp(buf, "abcd", 4) == 0, "putv's message");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* put_many without flags: write(2) on a pipe                           */
/* ------------------------------------------------------------------ */

static uint32_t vals[64];
static struct iovec val_iov[64];

/* msgs[i] = the 4-byte value first + i. */
static struct iovec *values(uint32_t first, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        vals[i] = first + (uint32_t)i;
        val_iov[i].iov_base = &vals[i];
        val_iov[i].iov_len = sizeof vals[i];
    }
    return val_iov;
}

Test(serialize, put_many_partial_then_eagain, .timeout = 10)
{
    shmq_t *q = small();
    put_u32(q, 100);
    put_u32(q, 101);
    cr_assert_eq(shmq_put_many(q, values(0, 10), 10, 0, SHMQ_NOWAIT), 6,
                 "the 6 that fit");
    cr_assert_eq(shmq_put_many(q, values(6, 4), 4, 0, SHMQ_NOWAIT), -EAGAIN,
                 "none fit");
    cr_assert_eq(get_u32(q), 100, "first");
    cr_assert_eq(get_u32(q), 101, "second");
    for (uint32_t i = 0; i < 6; i++)
        cr_assert_eq(get_u32(q), i, "in order");
    cr_assert(shmq_empty(q), "the rest was not put");
    shmq_release(q);
}

Test(serialize, put_many_partial_after_timeout, .timeout = 20)
{
    const int64_t T = 100 * TH_MS;
    shmq_t *q = small();
    int64_t t0 = th_now_ns();
    int r = shmq_put_many(q, values(0, 12), 12, 0, T);
    int64_t dt = th_now_ns() - t0;
    cr_assert_eq(r, 8, "put_many of 12 into 8: %d", r);
    cr_assert_geq(dt, T, "returned before its deadline: %lld ns",
                  (long long)dt);
    cr_assert_lt(dt, T + LATE_NS, "returned late: %lld ns", (long long)dt);
    t0 = th_now_ns();
    expect_timed_out("put_many with none put",
                     shmq_put_many(q, values(8, 4), 4, 0, T), t0, T);
    for (uint32_t i = 0; i < 8; i++)
        cr_assert_eq(get_u32(q), i, "in order");
    shmq_release(q);
}

static int put_many_forever(struct bg *b)
{
    return shmq_put_many(b->q, b->arg, b->n, b->flags, SHMQ_FOREVER);
}

/* Waits for room up to its deadline, putting as room comes. */
Test(serialize, put_many_waits_for_room, .timeout = 30)
{
    shmq_t *q = small();
    static uint32_t v[40];
    static struct iovec iov[40];
    for (uint32_t i = 0; i < 40; i++) {
        v[i] = i;
        iov[i] = (struct iovec){&v[i], sizeof v[i]};
    }
    struct bg b = {.arg = iov, .n = 40, .flags = 0};
    bg_start(&b, put_many_forever, q);
    for (uint32_t i = 0; i < 40; i++) {
        uint32_t x = 0;
        size_t len;
        int r = shmq_get(q, &x, sizeof x, &len, 5 * TH_SEC);
        cr_assert_eq(r, 0, "get %u: %d", i, r);
        cr_assert_eq(x, i, "order");
    }
    cr_assert_eq(bg_join(&b), 40, "all 40 put");
    shmq_release(q);
}

/* A close stops it: k >= 1 put returns k; none, -EPIPE. */
Test(serialize, put_many_stopped_by_close, .timeout = 30)
{
    shmq_t *q = small();
    put_u32(q, 1000);
    put_u32(q, 1001);
    struct bg b = {.arg = values(0, 10), .n = 10, .flags = 0};
    bg_start(&b, put_many_forever, q);
    bg_blocked(&b);
    cr_assert_eq(shmq_qsize(q), 8, "6 of 10 in before it blocked");
    shmq_close(q);
    cr_assert_eq(bg_join(&b), 6, "close mid-way returns the count");
    shmq_release(q);

    q = small();
    fill_empty(q);
    struct bg c = {.arg = values(0, 3), .n = 3, .flags = 0};
    bg_start(&c, put_many_forever, q);
    bg_blocked(&c);
    shmq_close(q);
    cr_assert_eq(bg_join(&c), -EPIPE, "close with none put");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* put_many with SHMQ_ALL                                               */
/* ------------------------------------------------------------------ */

Test(serialize, put_many_all_or_nothing, .timeout = 20)
{
    shmq_t *q = small();
    for (uint32_t i = 0; i < 5; i++)
        put_u32(q, 100 + i);
    cr_assert_eq(shmq_put_many(q, values(0, 4), 4, SHMQ_ALL, SHMQ_NOWAIT),
                 -EAGAIN, "4 into 3 free");
    cr_assert_eq(shmq_qsize(q), 5, "nothing put");
    int64_t t0 = th_now_ns();
    expect_timed_out("4 into 3, timed",
                     shmq_put_many(q, values(0, 4), 4, SHMQ_ALL, 50 * TH_MS),
                     t0, 50 * TH_MS);
    cr_assert_eq(shmq_qsize(q), 5, "nothing put");
    cr_assert_eq(shmq_put_many(q, values(0, 3), 3, SHMQ_ALL, SHMQ_NOWAIT), 3,
                 "3 into 3");
    cr_assert(shmq_full(q), "full");
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(get_u32(q), 100 + i, "older first");
    for (uint32_t i = 0; i < 3; i++)
        cr_assert_eq(get_u32(q), i, "batch in order");
    shmq_release(q);
}

/* By bytes: the batch fits by count but not by room. */
Test(serialize, put_many_all_or_nothing_by_bytes, .timeout = 20)
{
    shmq_t *q = make(64, 512, 64, 0);
    static unsigned char msg[64];
    size_t fit = 0;
    while (shmq_put_nowait(q, msg, 64) == 0)
        fit++;
    cr_assert_geq(fit, 2, "a 512-byte queue holds %zu 64-byte messages", fit);
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, msg, 64, &len), 0, "get one");
    struct iovec two[2] = {{msg, 64}, {msg, 64}};
    cr_assert_eq(shmq_put_many(q, two, 2, SHMQ_ALL, SHMQ_NOWAIT), -EAGAIN,
                 "two into the room of one");
    cr_assert_eq(shmq_qsize(q), fit - 1, "nothing put");
    cr_assert_eq(shmq_put_many(q, two, 1, SHMQ_ALL, SHMQ_NOWAIT), 1,
                 "one into the room of one");
    shmq_release(q);
}

/* A batch that could never fit is -EMSGSIZE at once, not a wait: n above
 * maxsize, or more storage units than capacity (counted per message, as
 * the queue counts room: here learnt from the queue itself). */
Test(serialize, put_many_all_that_never_fits_is_emsgsize, .timeout = 20)
{
    shmq_t *q = small();
    fill_empty(q); /* a wait would be forever */
    cr_assert_eq(shmq_put_many(q, values(0, 9), 9, SHMQ_ALL, SHMQ_FOREVER),
                 -EMSGSIZE, "9 messages, maxsize 8");
    drain(q);
    cr_assert_eq(shmq_put_many(q, values(0, 8), 8, SHMQ_ALL, SHMQ_NOWAIT), 8,
                 "8 messages, maxsize 8");
    shmq_release(q);

    /* Count-bound out of the way: capacity decides. */
    q = make(1024, 512, 64, 0);
    size_t units = fill_empty(q); /* one record each: capacity in records */
    cr_assert_lt(units, 1024, "capacity, not maxsize, bounds this queue");
    static struct iovec zeros[1024];
    for (size_t i = 0; i < 1024; i++)
        zeros[i] = (struct iovec){NULL, 0};
    cr_assert_eq(shmq_put_many(q, zeros, units + 1, SHMQ_ALL, SHMQ_FOREVER),
                 -EMSGSIZE, "%zu 0-byte messages, room for %zu", units + 1,
                 units);
    drain(q);
    cr_assert_eq(shmq_put_many(q, zeros, units, SHMQ_ALL, SHMQ_NOWAIT),
                 (int)units, "exactly the capacity in 0-byte messages");
    drain(q);
    static unsigned char msg[64];
    size_t fit = 0;
    while (shmq_put_nowait(q, msg, 64) == 0)
        fit++;
    drain(q);
    static struct iovec full[1024];
    for (size_t i = 0; i <= fit; i++)
        full[i] = (struct iovec){msg, 64};
    fill_empty(q);
    cr_assert_eq(shmq_put_many(q, full, fit + 1, SHMQ_ALL, SHMQ_FOREVER),
                 -EMSGSIZE, "%zu 64-byte messages, room for %zu", fit + 1, fit);
    drain(q);
    cr_assert_eq(shmq_put_many(q, full, fit, SHMQ_ALL, SHMQ_NOWAIT), (int)fit,
                 "exactly the capacity in 64-byte messages");
    shmq_release(q);
}

/* It waits until all n fit, putting none before. */
Test(serialize, put_many_all_waits_then_puts_all, .timeout = 30)
{
    shmq_t *q = small();
    for (uint32_t i = 0; i < 8; i++)
        put_u32(q, 100 + i);
    struct bg b = {.arg = values(0, 3), .n = 3, .flags = SHMQ_ALL};
    bg_start(&b, put_many_forever, q);
    bg_blocked(&b);
    cr_assert_eq(get_u32(q), 100, "take one");
    cr_assert_eq(get_u32(q), 101, "take two");
    th_sleep_ns(50 * TH_MS);
    cr_assert(!bg_done(&b), "returned with room for 2 of 3 (%d)", b.rc);
    cr_assert_eq(shmq_qsize(q), 6, "put part of an SHMQ_ALL batch");
    cr_assert_eq(get_u32(q), 102, "take three");
    cr_assert_eq(bg_join(&b), 3, "all 3 once they fit");
    for (uint32_t i = 3; i < 8; i++)
        cr_assert_eq(get_u32(q), 100 + i, "older first");
    for (uint32_t i = 0; i < 3; i++)
        cr_assert_eq(get_u32(q), i, "batch in order");
    shmq_release(q);
}

Test(serialize, put_many_all_stopped_by_close_puts_none, .timeout = 30)
{
    shmq_t *q = small();
    for (uint32_t i = 0; i < 7; i++)
        put_u32(q, 100 + i);
    struct bg b = {.arg = values(0, 3), .n = 3, .flags = SHMQ_ALL};
    bg_start(&b, put_many_forever, q);
    bg_blocked(&b);
    shmq_close(q);
    cr_assert_eq(bg_join(&b), -EPIPE, "closed while waiting");
    cr_assert_eq(drain(q), 7, "none of the batch went in");
    shmq_release(q);
}

/* More messages than a batch keeps on the stack. */
Test(serialize, put_many_all_large_batch, .timeout = 20)
{
    shmq_t *q = make(512, 1 << 16, 64, 0);
    static uint32_t v[300];
    static struct iovec iov[300];
    for (uint32_t i = 0; i < 300; i++) {
        v[i] = i;
        iov[i] = (struct iovec){&v[i], sizeof v[i]};
    }
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(shmq_put_many(q, iov, 300, SHMQ_ALL, SHMQ_NOWAIT), 300,
                     "300 at once");
        cr_assert_eq(shmq_put_many(q, iov, 300, SHMQ_ALL, SHMQ_NOWAIT), -EAGAIN,
                     "300 more into 212");
        for (uint32_t i = 0; i < 300; i++)
            cr_assert_eq(get_u32(q), i, "order");
    }
    shmq_release(q);
}

/* A close racing SHMQ_ALL batches: each batch is delivered whole (its
 * put returned n) or not at all (-EPIPE), and a consumer told that the
 * queue is drained gets nothing after. A batch of 4 small messages is
 * one packed record, published by one commit and withdrawn by one CAS.
 * (Before packed records a batch's records were committed one by one,
 * and this failed about 1 run in 7.) */
struct race {
    shmq_t *q;
    uint32_t id;
    int rc[256]; /* producers: each batch's result */
    uint32_t nbatch;
    uint32_t got[2048]; /* consumers: values taken */
    uint32_t ngot;
    int after; /* consumers: a get after -EPIPE */
};

static void *race_producer(void *p)
{
    struct race *r = p;
    for (r->nbatch = 0; r->nbatch < 256; r->nbatch++) {
        uint32_t v[4];
        struct iovec iov[4];
        for (uint32_t i = 0; i < 4; i++) {
            v[i] = r->id << 24 | r->nbatch << 2 | i;
            iov[i] = (struct iovec){&v[i], sizeof v[i]};
        }
        r->rc[r->nbatch] = shmq_put_many(r->q, iov, 4, SHMQ_ALL, 5 * TH_SEC);
        if (r->rc[r->nbatch] != 4) {
            r->nbatch++;
            break;
        }
    }
    return NULL;
}

static void *race_consumer(void *p)
{
    struct race *r = p;
    uint64_t buf[16];
    struct iovec msgs[8];
    for (;;) {
        int n = r->id
                    ? shmq_get_many(r->q, buf, sizeof buf, msgs, 8, 5 * TH_SEC)
                    : shmq_get_many(r->q, buf, sizeof buf, msgs, 1, 5 * TH_SEC);
        if (n < 0) {
            r->after =
                shmq_get_many(r->q, buf, sizeof buf, msgs, 8, SHMQ_NOWAIT);
            r->rc[0] = n;
            return NULL;
        }
        for (int i = 0; i < n && r->ngot < 2048; i++)
            memcpy(&r->got[r->ngot++], msgs[i].iov_base, 4);
    }
}

Test(serialize, put_many_all_racing_close, .timeout = 60)
{
    uint64_t rng = 42;
    for (int round = 0; round < 60; round++) {
        shmq_t *q = make(16, 4096, 64, 0);
        static struct race prod[2], cons[2];
        pthread_t pt[2], ct[2];
        for (uint32_t i = 0; i < 2; i++) {
            memset(&prod[i], 0, sizeof prod[i]);
            memset(&cons[i], 0, sizeof cons[i]);
            prod[i].q = cons[i].q = q;
            prod[i].id = i + 1;
            cons[i].id = i;
            pthread_create(&pt[i], NULL, race_producer, &prod[i]);
            pthread_create(&ct[i], NULL, race_consumer, &cons[i]);
        }
        th_sleep_ns((int64_t)th_rand_below(&rng, 3000) * 1000);
        shmq_close(q);
        for (int i = 0; i < 2; i++) {
            pthread_join(pt[i], NULL);
            pthread_join(ct[i], NULL);
        }
        static uint8_t seen[3][256][4];
        memset(seen, 0, sizeof seen);
        for (int c = 0; c < 2; c++) {
            cr_assert_eq(cons[c].rc[0], -EPIPE, "consumer ended with %d",
                         cons[c].rc[0]);
            cr_assert_eq(cons[c].after, -EPIPE,
                         "round %d: a get after -EPIPE returned %d", round,
                         cons[c].after);
            for (uint32_t k = 0; k < cons[c].ngot; k++) {
                uint32_t v = cons[c].got[k];
                uint32_t id = v >> 24, b = (v >> 2) & 0x3fffff, i = v & 3;
                cr_assert(id >= 1 && id <= 2 && b < 256, "value %x", v);
                cr_assert_eq(seen[id][b][i]++, 0, "taken twice");
            }
        }
        for (int p = 0; p < 2; p++) {
            for (uint32_t b = 0; b < prod[p].nbatch; b++) {
                int rc = prod[p].rc[b];
                unsigned n = 0;
                for (int i = 0; i < 4; i++)
                    n += seen[p + 1][b][i];
                cr_assert(rc == 4 || rc == -EPIPE, "batch result %d", rc);
                cr_assert_eq(n, rc == 4 ? 4u : 0u,
                             "round %d: batch %u returned %d, %u of its 4 "
                             "messages delivered",
                             round, b, rc, n);
            }
        }
        shmq_release(q);
    }
}

/* Batches from several producers: each batch reaches consumers in its
 * order, other batches may come between. */
struct batch_prod {
    shmq_t *q;
    uint32_t id;
    unsigned flags;
};

static int batch_producer(void *p)
{
    const struct batch_prod *a = p;
    uint32_t v[5];
    struct iovec iov[5];
    for (uint32_t b = 0; b < 200; b++) {
        for (uint32_t i = 0; i < 5; i++) {
            v[i] = a->id << 24 | (b * 5 + i);
            iov[i] = (struct iovec){&v[i], sizeof v[i]};
        }
        size_t done = 0;
        while (done < 5) {
            int r = shmq_put_many(a->q, iov + done, 5 - done, a->flags,
                                  10 * TH_SEC);
            TH_CHECK(r > 0);
            TH_CHECK(!(a->flags & SHMQ_ALL) || r == 5);
            done += (size_t)r;
        }
    }
    return 0;
}

Test(serialize, put_many_batches_reach_consumers_in_order, .timeout = 60)
{
    shmq_t *q = small();
    struct batch_prod a[3] = {{q, 1, SHMQ_ALL}, {q, 2, 0}, {q, 3, SHMQ_ALL}};
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = th_fork(batch_producer, &a[i]);
    uint32_t next[4] = {0};
    uint64_t buf[64];
    struct iovec msgs[16];
    for (unsigned got = 0; got < 3000;) {
        int r = shmq_get_many(q, buf, sizeof buf, msgs, 16, 10 * TH_SEC);
        cr_assert_gt(r, 0, "get_many: %d", r);
        for (int i = 0; i < r; i++) {
            uint32_t v;
            cr_assert_eq(msgs[i].iov_len, 4, "len");
            memcpy(&v, msgs[i].iov_base, 4);
            uint32_t id = v >> 24, n = v & 0xffffff;
            cr_assert(id >= 1 && id <= 3, "producer %u", id);
            cr_assert_eq(n, next[id], "producer %u: %u after %u", id, n,
                         next[id]);
            next[id]++;
        }
        got += (unsigned)r;
    }
    th_assert_children_ok_within(pids, 3, 30 * TH_SEC);
    cr_assert(shmq_empty(q), "extra messages");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* get_many                                                             */
/* ------------------------------------------------------------------ */

static const size_t pack_lens[] = {1, 3, 8, 13, 0, 5, 16, 0, 0, 7};
#define PACK_N (sizeof pack_lens / sizeof pack_lens[0])

static void put_pack(shmq_t *q)
{
    unsigned char msg[64];
    for (size_t i = 0; i < PACK_N; i++) {
        th_fill(msg, pack_lens[i], (uint32_t)i);
        cr_assert_eq(shmq_put(q, msg, pack_lens[i], SHMQ_NOWAIT), 0, "put");
    }
}

/* Check msgs[0..n) against pack_lens[first..]: offsets the next multiple
 * of 8 of buf, inside cap, contents intact. */
static void check_pack(const unsigned char *buf, size_t cap,
                       const struct iovec *msgs, int n, size_t first)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t k = first + (size_t)i, len = msgs[i].iov_len;
        size_t at = (size_t)((const unsigned char *)msgs[i].iov_base - buf);
        cr_assert_eq(len, pack_lens[k], "message %zu: len %zu", k, len);
        cr_assert_eq(at % 8, 0, "message %zu at offset %zu", k, at);
        cr_assert_eq(at, (off + 7) & ~(size_t)7,
                     "message %zu at %zu, not the next multiple of 8 of %zu", k,
                     at, off);
        cr_assert_leq(at + len, cap, "message %zu past cap", k);
        cr_assert(th_check(buf + at, len, (uint32_t)k), "content of %zu", k);
        off = at + len;
    }
}

Test(serialize, get_many_packs_at_8_byte_offsets, .timeout = 10)
{
    shmq_t *q = make(16, 4096, 64, 0);
    put_pack(q);
    static _Alignas(8) unsigned char buf[512];
    struct iovec msgs[16];
    int r = shmq_get_many(q, buf, sizeof buf, msgs, 16, SHMQ_NOWAIT);
    cr_assert_eq(r, (int)PACK_N, "took %d of %zu", r, PACK_N);
    check_pack(buf, sizeof buf, msgs, r, 0);
    cr_assert(shmq_empty(q), "left some");
    shmq_release(q);
}

Test(serialize, get_many_up_to_max_msgs, .timeout = 10)
{
    shmq_t *q = make(16, 4096, 64, 0);
    put_pack(q);
    static _Alignas(8) unsigned char buf[512];
    struct iovec msgs[16];
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 1, SHMQ_NOWAIT), 1,
                 "max_msgs 1");
    check_pack(buf, sizeof buf, msgs, 1, 0);
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, SHMQ_NOWAIT), 4,
                 "max_msgs 4");
    check_pack(buf, sizeof buf, msgs, 4, 1);
    cr_assert_eq(shmq_qsize(q), PACK_N - 5, "the rest stays");
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 16, SHMQ_NOWAIT),
                 (int)PACK_N - 5, "the rest");
    check_pack(buf, sizeof buf, msgs, (int)PACK_N - 5, 5);
    shmq_release(q);
}

/* As many as fit in buf: every cap from 0 up takes a prefix that fits,
 * and the next one would not have. */
Test(serialize, get_many_as_many_as_fit, .timeout = 20)
{
    static _Alignas(8) unsigned char buf[512];
    struct iovec msgs[16];
    for (size_t cap = 1; cap <= 96; cap++) {
        shmq_t *q = make(16, 4096, 64, 0);
        put_pack(q);
        int r = shmq_get_many(q, buf, cap, msgs, 16, SHMQ_NOWAIT);
        cr_assert_geq(r, 1, "cap %zu: %d", cap, r);
        check_pack(buf, cap, msgs, r, 0);
        /* The next message did not fit (at its 8-byte offset). */
        if ((size_t)r < PACK_N) {
            size_t end = (size_t)((unsigned char *)msgs[r - 1].iov_base - buf) +
                         msgs[r - 1].iov_len;
            size_t at = (end + 7) & ~(size_t)7;
            cr_assert_gt(at + pack_lens[r], cap,
                         "cap %zu: stopped at %d though the next fits", cap, r);
        }
        cr_assert_eq(shmq_qsize(q), PACK_N - (size_t)r, "cap %zu: qsize", cap);
        shmq_release(q);
    }
}

Test(serialize, get_many_first_too_long_is_enobufs, .timeout = 10)
{
    shmq_t *q = make(16, 4096, 256, 0);
    unsigned char msg[100];
    th_fill(msg, 100, 3);
    cr_assert_eq(shmq_put_nowait(q, msg, 100), 0, "put");
    put_u32(q, 9);
    static _Alignas(8) unsigned char buf[256];
    memset(buf, 0xee, sizeof buf);
    struct iovec msgs[4];
    msgs[0].iov_len = 0;
    cr_assert_eq(shmq_get_many(q, buf, 99, msgs, 4, SHMQ_NOWAIT), -ENOBUFS,
                 "cap 99");
    cr_assert_eq(msgs[0].iov_len, 100, "size needed");
    cr_assert_eq(shmq_qsize(q), 2, "something taken");
    cr_assert_eq(buf[0], 0xee, "buf written");
    msgs[0].iov_len = 0;
    cr_assert_eq(shmq_get_many(q, NULL, 0, msgs, 4, SHMQ_FOREVER), -ENOBUFS,
                 "cap 0 (waits as get: the message is there)");
    cr_assert_eq(msgs[0].iov_len, 100, "size needed");
    cr_assert_eq(shmq_get_many(q, buf, 100, msgs, 4, SHMQ_NOWAIT), 1,
                 "cap 100: the first only (the second does not fit)");
    cr_assert(msgs[0].iov_len == 100 && th_check(buf, 100, 3), "content");
    shmq_release(q);
}

/* Only 0-byte messages need no buffer. */
Test(serialize, get_many_zero_byte_messages_without_buf, .timeout = 10)
{
    shmq_t *q = small();
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), 0, "put");
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), 0, "put");
    put_u32(q, 1);
    struct iovec msgs[4];
    cr_assert_eq(shmq_get_many(q, NULL, 0, msgs, 4, SHMQ_NOWAIT), 2,
                 "the two 0-byte messages");
    cr_assert(msgs[0].iov_len == 0 && msgs[1].iov_len == 0, "lens");
    cr_assert_eq(shmq_qsize(q), 1, "qsize");
    shmq_release(q);
}

static int get_many_forever(struct bg *b)
{
    return shmq_get_many(b->q, b->buf, sizeof b->buf, b->out, 16, SHMQ_FOREVER);
}

static int put_later(void *p)
{
    shmq_t *q = p;
    th_sleep_ns(50 * TH_MS);
    uint32_t v = 77;
    TH_CHECK_EQ(shmq_put(q, &v, sizeof v, 5 * TH_SEC), 0);
    return 0;
}

/* Waits as get does; the put of another process wakes it. */
Test(serialize, get_many_waits_for_a_message, .timeout = 20)
{
    shmq_t *q = small();
    struct bg b;
    bg_start(&b, get_many_forever, q);
    bg_blocked(&b);
    pid_t pid = th_fork(put_later, q);
    cr_assert_eq(bg_join(&b), 1, "woken with one message");
    th_assert_child_ok(pid);
    cr_assert_eq(b.out[0].iov_len, 4, "len");
    cr_assert_eq(*(uint32_t *)b.out[0].iov_base, 77, "content");
    /* Closed while waiting: -EPIPE. */
    bg_start(&b, get_many_forever, q);
    bg_blocked(&b);
    shmq_close(q);
    cr_assert_eq(bg_join(&b), -EPIPE, "closed while waiting");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Reservations: put_begin, put_commit, put_abort                        */
/* ------------------------------------------------------------------ */

Test(serialize, put_begin_gives_aligned_room_of_max_len, .timeout = 20)
{
    shmq_t *q = make(16, 1 << 16, 4096, 0);
    size_t mm = shmq_max_message(q);
    static unsigned char out[1 << 13];
    /* Enough rounds to wrap the ring a few times (a record crossing its
     * end must be contiguous too). */
    for (uint32_t round = 0; round < 300; round++) {
        size_t max_len = round % 7 == 0 ? mm : (size_t)(round * 37u) % (mm + 1);
        struct shmq_msg m;
        cr_assert_eq(shmq_put_begin(q, max_len, &m, SHMQ_NOWAIT), 0,
                     "put_begin %zu", max_len);
        cr_assert_eq(m.len, max_len, "len %zu, asked %zu", m.len, max_len);
        cr_assert(aligned8(m.data), "data %p not 8-byte aligned", m.data);
        cr_assert(max_len == 0 || m.data != NULL, "data NULL");
        th_fill(m.data, max_len, round);
        cr_assert_eq(shmq_put_commit(q, &m, max_len), 0, "commit");
        size_t len = SIZE_MAX;
        cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
        cr_assert_eq(len, max_len, "len");
        cr_assert(th_check(out, len, round), "content of %zu bytes", len);
    }
    shmq_release(q);
}

Test(serialize, nothing_visible_before_commit, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg m, g;
    cr_assert_eq(shmq_put_begin(q, 32, &m, SHMQ_NOWAIT), 0, "put_begin");
    th_fill(m.data, 32, 5);
    uint64_t buf[8];
    struct iovec msgs[4];
    size_t len;
    cr_assert_eq(shmq_qsize(q), 0, "qsize counts a reservation");
    cr_assert(shmq_empty(q), "empty");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN, "get");
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 4, SHMQ_NOWAIT),
                 -EAGAIN, "get_many");
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), -EAGAIN, "get_begin");
    int64_t t0 = th_now_ns();
    expect_timed_out("get with a reservation open",
                     shmq_get(q, buf, sizeof buf, &len, 30 * TH_MS), t0,
                     30 * TH_MS);
    /* Commit a shorter length: only that is delivered. */
    cr_assert_eq(shmq_put_commit(q, &m, 20), 0, "commit 20 of 32");
    cr_assert_eq(shmq_qsize(q), 1, "qsize");
    unsigned char out[64];
    cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
    cr_assert_eq(len, 20, "len");
    unsigned char want[32];
    th_fill(want, 32, 5);
    cr_assert(memcmp(out, want, 20) == 0, "first 20 bytes");
    shmq_release(q);
}

Test(serialize, commit_above_reservation_changes_nothing, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg m;
    cr_assert_eq(shmq_put_begin(q, 10, &m, SHMQ_NOWAIT), 0, "put_begin");
    struct shmq_msg before = m;
    memcpy(m.data, "0123456789", 10);
    cr_assert_eq(shmq_put_commit(q, &m, 11), -EINVAL, "len 11 of 10");
    cr_assert_eq(shmq_put_commit(q, &m, SIZE_MAX), -EINVAL, "len SIZE_MAX");
    cr_assert_eq(memcmp(&m, &before, sizeof m), 0, "m changed");
    cr_assert_eq(shmq_qsize(q), 0, "delivered");
    cr_assert_eq(shmq_put_commit(q, &m, 10), 0, "still open: commit 10");
    char out[16];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
    cr_assert(len == 10 && memcmp(out, "0123456789", 10) == 0, "message");
    shmq_release(q);
}

Test(serialize, abort_drops_and_gives_room_back, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg m[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(shmq_put_begin(q, 8, &m[i], SHMQ_NOWAIT), 0, "put_begin");
    /* Reservations count against maxsize. */
    cr_assert(shmq_full(q), "8 reservations: full");
    struct shmq_msg extra;
    cr_assert_eq(shmq_put_begin(q, 0, &extra, SHMQ_NOWAIT), -EAGAIN,
                 "a ninth reservation");
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), -EAGAIN, "a put");
    for (int i = 0; i < 8; i++)
        cr_assert_eq(shmq_put_abort(q, &m[i]), 0, "abort %d", i);
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), -EAGAIN, "delivered");
    cr_assert_eq(fill_empty(q), 8, "room came back");
    shmq_release(q);
}

Test(serialize, double_commit_and_abort_are_einval, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg m, copy;
    cr_assert_eq(shmq_put_begin(q, 4, &m, SHMQ_NOWAIT), 0, "put_begin");
    copy = m;
    cr_assert_eq(shmq_put_commit(q, &m, 4), 0, "commit");
    cr_assert_eq(shmq_put_commit(q, &m, 4), -EINVAL, "commit again");
    cr_assert_eq(shmq_put_abort(q, &m), -EINVAL, "abort after commit");
    cr_assert_eq(shmq_put_commit(q, &copy, 4), -EINVAL, "commit a copy");
    cr_assert_eq(shmq_put_abort(q, &copy), -EINVAL, "abort a copy");
    cr_assert_eq(shmq_qsize(q), 1, "one message");

    cr_assert_eq(shmq_put_begin(q, 4, &m, SHMQ_NOWAIT), 0, "put_begin");
    copy = m;
    cr_assert_eq(shmq_put_abort(q, &m), 0, "abort");
    cr_assert_eq(shmq_put_abort(q, &m), -EINVAL, "abort again");
    cr_assert_eq(shmq_put_commit(q, &m, 0), -EINVAL, "commit after abort");
    cr_assert_eq(shmq_put_abort(q, &copy), -EINVAL, "abort a copy");
    cr_assert_eq(shmq_put_commit(q, &copy, 0), -EINVAL, "commit a copy");
    cr_assert_eq(shmq_qsize(q), 1, "still one message");
    shmq_release(q);
}

/* A reservation's put begins at put_begin and returns at put_commit:
 * one committed before another put began comes first, even when
 * consumers went past it while it was open. */
Test(serialize, reservation_order_follows_commit, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg a, b;
    cr_assert_eq(shmq_put_begin(q, 4, &a, SHMQ_NOWAIT), 0, "begin a");
    cr_assert_eq(shmq_put_begin(q, 4, &b, SHMQ_NOWAIT), 0, "begin b");
    *(uint32_t *)a.data = 1;
    *(uint32_t *)b.data = 2;
    cr_assert_eq(shmq_put_commit(q, &b, 4), 0, "commit b");
    cr_assert_eq(get_u32(q), 2, "b, past the open a");
    cr_assert_eq(shmq_put_commit(q, &a, 4), 0, "commit a");
    put_u32(q, 3);
    cr_assert_eq(get_u32(q), 1, "a committed before 3 was put");
    cr_assert_eq(get_u32(q), 3, "then 3");
    shmq_release(q);
}

/* An open reservation holds back no message: others' messages are taken
 * past it (up to the room it holds back). */
static int put_some_values(void *p)
{
    shmq_t *q = p;
    for (uint32_t i = 0; i < 7; i++)
        TH_CHECK_EQ(shmq_put(q, &i, sizeof i, 5 * TH_SEC), 0);
    return 0;
}

Test(serialize, open_reservation_holds_back_no_message, .timeout = 20)
{
    shmq_t *q = small();
    struct shmq_msg m;
    cr_assert_eq(shmq_put_begin(q, 8, &m, SHMQ_NOWAIT), 0, "put_begin");
    pid_t pid = th_fork(put_some_values, q);
    for (uint32_t i = 0; i < 7; i++) {
        uint32_t v = 99;
        size_t len;
        int r = shmq_get(q, &v, sizeof v, &len, 5 * TH_SEC);
        cr_assert_eq(r, 0, "get %u past the reservation: %d", i, r);
        cr_assert_eq(v, i, "order");
    }
    th_assert_child_ok(pid);
    /* The room it holds back, and the room after it, until it ends. */
    cr_assert(shmq_full(q), "room behind an open reservation came back");
    memset(m.data, 0, 8);
    cr_assert_eq(shmq_put_commit(q, &m, 8), 0, "commit at last");
    size_t len;
    uint64_t v;
    cr_assert_eq(shmq_get_nowait(q, &v, sizeof v, &len), 0, "the reserved");
    /* A borrow holds back nothing either. */
    put_u32(q, 50);
    put_u32(q, 51);
    struct shmq_msg g;
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "borrow 50");
    cr_assert_eq(*(uint32_t *)g.data, 50, "50");
    cr_assert_eq(get_u32(q), 51, "51 past the borrow");
    cr_assert_eq(shmq_get_end(q, &g), 0, "get_end");
    cr_assert_eq(fill_empty(q), 8, "all room back");
    shmq_release(q);
}

/* The room a committed message does not use is given back: a large
 * reservation committed short does not keep its whole room while its
 * message waits in the queue (when nothing was claimed after it). */
Test(serialize, short_commit_gives_unused_room_back, .timeout = 10)
{
    shmq_t *q = make(64, 512, 512, 0);
    static unsigned char msg[512];
    size_t fit = 0;
    while (shmq_put_nowait(q, msg, 8) == 0)
        fit++;
    drain(q);
    struct shmq_msg m;
    cr_assert_eq(shmq_put_begin(q, shmq_max_message(q), &m, SHMQ_NOWAIT), 0,
                 "reserve all");
    cr_assert_eq(shmq_put_commit(q, &m, 8), 0, "commit 8 bytes");
    size_t n = 0;
    while (shmq_put_nowait(q, msg, 8) == 0)
        n++;
    cr_assert_eq(n, fit - 1,
                 "%zu 8-byte messages fit next to an 8-byte message committed "
                 "from a full-size reservation; %zu fit in an empty queue",
                 n, fit);
    shmq_release(q);
}

/* Several open reservations and borrows, from several threads. */
struct holder {
    shmq_t *q;
    uint32_t id;
    pthread_barrier_t *bar;
    int rc;
    uint32_t got[2];
};

static void *hold_many(void *p)
{
    struct holder *h = p;
    struct shmq_msg r[2], g[2];
    h->rc = -1;
    for (int i = 0; i < 2; i++) {
        if (shmq_put_begin(h->q, 8, &r[i], 5 * TH_SEC) != 0)
            return NULL;
        *(uint32_t *)r[i].data = h->id * 10 + (uint32_t)i;
    }
    for (int i = 0; i < 2; i++) {
        if (shmq_get_begin(h->q, &g[i], 5 * TH_SEC) != 0 || g[i].len != 4 ||
            !aligned8(g[i].data))
            return NULL;
        memcpy(&h->got[i], g[i].data, 4);
    }
    /* All hold two of each at once while the main thread looks. */
    pthread_barrier_wait(h->bar);
    pthread_barrier_wait(h->bar);
    /* End them in the other order than they began. */
    if (shmq_put_commit(h->q, &r[1], 4) != 0 ||
        shmq_put_commit(h->q, &r[0], 4) != 0 ||
        shmq_get_end(h->q, &g[1]) != 0 || shmq_get_end(h->q, &g[0]) != 0)
        return NULL;
    h->rc = 0;
    return NULL;
}

Test(serialize, several_reservations_and_borrows_from_threads, .timeout = 30)
{
    enum { T = 4 };
    shmq_t *q = make(32, 4096, 64, 0);
    for (uint32_t i = 0; i < 2 * T; i++)
        put_u32(q, 1000 + i);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, T + 1);
    struct holder h[T];
    pthread_t th[T];
    for (uint32_t i = 0; i < T; i++) {
        h[i] = (struct holder){.q = q, .id = i + 1, .bar = &bar};
        cr_assert_eq(pthread_create(&th[i], NULL, hold_many, &h[i]), 0, "thr");
    }
    pthread_barrier_wait(&bar);
    /* Everything is in flight: 8 reservations, 8 borrows. */
    size_t qsize = shmq_qsize(q);
    bool full = shmq_full(q);
    pthread_barrier_wait(&bar);
    cr_assert_eq(qsize, 0, "qsize while all are open: %zu", qsize);
    cr_assert(!full, "full with 16 of 32 in flight");
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    bool seen[2 * T] = {false};
    for (int i = 0; i < T; i++) {
        cr_assert_eq(h[i].rc, 0, "thread %d failed", i);
        for (int k = 0; k < 2; k++) {
            uint32_t v = h[i].got[k] - 1000;
            cr_assert(v < 2 * T && !seen[v], "borrowed %u twice or wrong",
                      h[i].got[k]);
            seen[v] = true;
        }
    }
    bool mine[T + 1][2] = {{false}};
    for (int i = 0; i < 2 * T; i++) {
        uint32_t v = get_u32(q);
        uint32_t id = v / 10, k = v % 10;
        cr_assert(id >= 1 && id <= T && k < 2 && !mine[id][k], "got %u", v);
        mine[id][k] = true;
    }
    cr_assert(shmq_empty(q), "extra");
    /* The room of all of them came back. */
    cr_assert_eq(fill_empty(q), 32, "room after all ended");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Borrows: get_begin, get_end                                          */
/* ------------------------------------------------------------------ */

static int get_nowait_is_eagain(void *p)
{
    shmq_t *q = p;
    uint64_t buf[8];
    size_t len;
    struct iovec msgs[2];
    struct shmq_msg g;
    TH_CHECK_EQ(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN);
    TH_CHECK_EQ(shmq_get_many(q, buf, sizeof buf, msgs, 2, SHMQ_NOWAIT),
                -EAGAIN);
    TH_CHECK_EQ(shmq_get_begin(q, &g, 20 * TH_MS), -ETIMEDOUT);
    return 0;
}

Test(serialize, get_begin_takes_the_message, .timeout = 20)
{
    shmq_t *q = small();
    unsigned char msg[40];
    th_fill(msg, sizeof msg, 8);
    cr_assert_eq(shmq_put_nowait(q, msg, sizeof msg), 0, "put");
    struct shmq_msg g;
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "get_begin");
    cr_assert_eq(g.len, sizeof msg, "len");
    cr_assert(aligned8(g.data), "data not 8-byte aligned");
    cr_assert(th_check(g.data, g.len, 8), "content");
    cr_assert_eq(shmq_qsize(q), 0, "qsize counts a borrowed message");
    /* No other consumer sees it: another process, another handle. */
    th_assert_child_ok(th_fork(get_nowait_is_eagain, q));
    shmq_t *h2 = NULL;
    cr_assert_eq(shmq_from_fd(&h2, shmq_fd(q)), 0, "from_fd");
    size_t len;
    cr_assert_eq(shmq_get_nowait(h2, msg, sizeof msg, &len), -EAGAIN,
                 "another handle got it");
    cr_assert(th_check(g.data, g.len, 8), "content until get_end");
    cr_assert_eq(shmq_get_end(q, &g), 0, "get_end");
    cr_assert_eq(shmq_get_end(q, &g), -EINVAL, "get_end again");
    cr_assert_eq(shmq_get_nowait(h2, msg, sizeof msg, &len), -EAGAIN,
                 "delivered again after get_end");
    shmq_release(h2);
    shmq_release(q);
}

Test(serialize, borrow_keeps_its_room_until_get_end, .timeout = 10)
{
    shmq_t *q = small();
    for (uint32_t i = 0; i < 8; i++)
        put_u32(q, i);
    struct shmq_msg g;
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "get_begin");
    cr_assert_eq(*(uint32_t *)g.data, 0, "first");
    cr_assert_eq(shmq_qsize(q), 7, "qsize");
    cr_assert(shmq_full(q), "a borrow gave its room back before get_end");
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), -EAGAIN, "put into its room");
    cr_assert_eq(shmq_get_end(q, &g), 0, "get_end");
    cr_assert(!shmq_full(q), "full after get_end");
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), 0, "put after get_end");
    shmq_release(q);
}

Test(serialize, get_begin_zero_byte_and_large, .timeout = 10)
{
    shmq_t *q = make(8, 1 << 16, 8192, 0);
    size_t mm = shmq_max_message(q);
    static unsigned char msg[1 << 14];
    cr_assert_eq(shmq_put_nowait(q, NULL, 0), 0, "put 0");
    th_fill(msg, mm, 4);
    cr_assert_eq(shmq_put_nowait(q, msg, mm), 0, "put max");
    struct shmq_msg a, b;
    cr_assert_eq(shmq_get_begin(q, &a, SHMQ_NOWAIT), 0, "get_begin 0");
    cr_assert_eq(a.len, 0, "len 0");
    cr_assert_eq(shmq_get_begin(q, &b, SHMQ_NOWAIT), 0, "get_begin max");
    cr_assert_eq(b.len, mm, "len max");
    cr_assert(aligned8(b.data) && th_check(b.data, mm, 4), "content");
    cr_assert_eq(shmq_get_end(q, &a), 0, "get_end 0");
    cr_assert_eq(shmq_get_end(q, &b), 0, "get_end max");
    shmq_release(q);
}

static int get_begin_forever(struct bg *b)
{
    struct shmq_msg g;
    int r = shmq_get_begin(b->q, &g, SHMQ_FOREVER);
    if (r == 0) {
        b->n = g.len;
        memcpy(b->buf, g.data, g.len < sizeof b->buf ? g.len : sizeof b->buf);
        r = shmq_get_end(b->q, &g);
    }
    return r;
}

Test(serialize, get_begin_waits_for_a_message, .timeout = 20)
{
    shmq_t *q = small();
    struct bg b;
    bg_start(&b, get_begin_forever, q);
    bg_blocked(&b);
    pid_t pid = th_fork(put_later, q);
    cr_assert_eq(bg_join(&b), 0, "woken");
    th_assert_child_ok(pid);
    cr_assert(b.n == 4 && *(uint32_t *)b.buf == 77, "message");
    /* Closed while waiting: -EPIPE. */
    bg_start(&b, get_begin_forever, q);
    bg_blocked(&b);
    shmq_close(q);
    cr_assert_eq(bg_join(&b), -EPIPE, "closed while waiting");
    shmq_release(q);
}

static int put_begin_forever(struct bg *b)
{
    struct shmq_msg m;
    int r = shmq_put_begin(b->q, 4, &m, SHMQ_FOREVER);
    if (r == 0) {
        memcpy(m.data, "wxyz", 4);
        r = shmq_put_commit(b->q, &m, 4);
    }
    return r;
}

Test(serialize, put_begin_waits_for_room, .timeout = 20)
{
    shmq_t *q = small();
    fill_empty(q);
    struct bg b;
    bg_start(&b, put_begin_forever, q);
    bg_blocked(&b);
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), 0, "make room");
    cr_assert_eq(bg_join(&b), 0, "woken by room");
    cr_assert_eq(shmq_qsize(q), 8, "qsize");
    bg_start(&b, put_begin_forever, q);
    bg_blocked(&b);
    shmq_close(q);
    cr_assert_eq(bg_join(&b), -EPIPE, "closed while waiting");
    shmq_release(q);
}

/* A reservation or borrow belongs to the process: any of its threads may
 * end it. */
static int end_in_thread(struct bg *b)
{
    struct shmq_msg *m = (struct shmq_msg *)b->arg;
    int r = shmq_put_commit(b->q, &m[0], 3);
    return r ? r : shmq_get_end(b->q, &m[1]);
}

Test(serialize, another_thread_may_end_them, .timeout = 20)
{
    shmq_t *q = small();
    put_u32(q, 1);
    struct shmq_msg m[2];
    cr_assert_eq(shmq_put_begin(q, 8, &m[0], SHMQ_NOWAIT), 0, "put_begin");
    cr_assert_eq(shmq_get_begin(q, &m[1], SHMQ_NOWAIT), 0, "get_begin");
    memcpy(m[0].data, "abc", 3);
    struct bg b = {.arg = m};
    bg_start(&b, end_in_thread, q);
    cr_assert_eq(bg_join(&b), 0, "ended in another thread");
    char out[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
    cr_assert(len == 3 && memcmp(out, "abc", 3) == 0, "message");
    cr_assert_eq(fill_empty(q), 8, "room back");
    shmq_release(q);
}

Test(serialize, get_end_of_a_stale_copy_is_einval, .timeout = 10)
{
    shmq_t *q = small();
    put_u32(q, 1);
    put_u32(q, 2);
    struct shmq_msg g, copy;
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "get_begin");
    copy = g;
    cr_assert_eq(shmq_get_end(q, &g), 0, "get_end");
    cr_assert_eq(shmq_get_end(q, &copy), -EINVAL, "get_end of a copy");
    struct shmq_msg g2;
    cr_assert_eq(shmq_get_begin(q, &g2, SHMQ_NOWAIT), 0, "get_begin 2");
    cr_assert_eq(shmq_get_end(q, &copy), -EINVAL, "a copy of the first");
    cr_assert_eq(shmq_get_end(q, &g2), 0, "get_end 2");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Ownership: a forked child, release, SIGKILL                          */
/* ------------------------------------------------------------------ */

struct owned {
    shmq_t *q;
    struct shmq_msg r; /* the parent's reservation */
    struct shmq_msg g; /* the parent's borrow */
};

static int child_cannot_end(void *p)
{
    struct owned *o = p;
    struct shmq_msg r = o->r, g = o->g;
    TH_CHECK_EQ(shmq_put_commit(o->q, &r, 4), -EINVAL);
    TH_CHECK_EQ(shmq_put_abort(o->q, &r), -EINVAL);
    TH_CHECK_EQ(shmq_get_end(o->q, &g), -EINVAL);
    TH_CHECK_EQ(shmq_qsize(o->q), 0);
    /* The child's own work on the inherited handle is fine. */
    struct shmq_msg mine;
    TH_CHECK_EQ(shmq_put_begin(o->q, 4, &mine, SHMQ_NOWAIT), 0);
    TH_CHECK_EQ(shmq_put_abort(o->q, &mine), 0);
    /* Its release ends its own reservation, not the parent's. */
    TH_CHECK_EQ(shmq_put_begin(o->q, 4, &mine, SHMQ_NOWAIT), 0);
    shmq_release(o->q);
    return 0;
}

Test(serialize, forked_child_cannot_end_parents, .timeout = 20)
{
    shmq_t *q = small();
    put_u32(q, 5);
    struct owned o = {.q = q};
    cr_assert_eq(shmq_put_begin(q, 4, &o.r, SHMQ_NOWAIT), 0, "put_begin");
    cr_assert_eq(shmq_get_begin(q, &o.g, SHMQ_NOWAIT), 0, "get_begin");
    *(uint32_t *)o.r.data = 6;
    th_assert_child_ok(th_fork(child_cannot_end, &o));
    /* The child exited without release: the parent's are still open. */
    cr_assert_eq(*(uint32_t *)o.g.data, 5, "borrowed data");
    cr_assert_eq(shmq_put_commit(q, &o.r, 4), 0, "parent commits");
    cr_assert_eq(shmq_get_end(q, &o.g), 0, "parent ends the borrow");
    cr_assert_eq(get_u32(q), 6, "the reserved message");
    cr_assert(shmq_empty(q), "extra");
    shmq_release(q);
}

/* A child that never used the inherited handle releases it: the
 * parent's reservations and borrows are not its to end. */
static int child_release_only(void *p)
{
    struct owned *o = p;
    shmq_release(o->q);
    return 0;
}

Test(serialize, forked_child_release_leaves_parents, .timeout = 20)
{
    shmq_t *q = small();
    put_u32(q, 5);
    struct owned o = {.q = q};
    cr_assert_eq(shmq_put_begin(q, 4, &o.r, SHMQ_NOWAIT), 0, "put_begin");
    cr_assert_eq(shmq_get_begin(q, &o.g, SHMQ_NOWAIT), 0, "get_begin");
    th_assert_child_ok(th_fork(child_release_only, &o));
    *(uint32_t *)o.r.data = 6;
    cr_assert_eq(shmq_put_commit(q, &o.r, 4), 0, "parent commits");
    cr_assert_eq(shmq_get_end(q, &o.g), 0, "parent ends the borrow");
    cr_assert_eq(get_u32(q), 6, "the reserved message");
    shmq_release(q);
}

/* Reservations count against capacity like queued messages, by their
 * reserved size. */
Test(serialize, reservations_count_against_capacity, .timeout = 10)
{
    shmq_t *q = make(64, 1024, 256, 0);
    static unsigned char msg[256];
    size_t fit = 0;
    while (shmq_put_nowait(q, msg, 256) == 0)
        fit++;
    drain(q);
    cr_assert_geq(fit, 2, "fit %zu", fit);
    struct shmq_msg m[64];
    for (size_t i = 0; i < fit; i++)
        cr_assert_eq(shmq_put_begin(q, 256, &m[i], SHMQ_NOWAIT), 0,
                     "reserve %zu of %zu", i, fit);
    struct shmq_msg extra;
    cr_assert_eq(shmq_put_begin(q, 256, &extra, SHMQ_NOWAIT), -EAGAIN,
                 "one more full-size reservation");
    cr_assert_eq(shmq_put_nowait(q, msg, 256), -EAGAIN, "a full-size put");
    for (size_t i = 0; i < fit; i++)
        cr_assert_eq(shmq_put_abort(q, &m[i]), 0, "abort");
    for (size_t i = 0; i < fit; i++)
        cr_assert_eq(shmq_put_nowait(q, msg, 256), 0, "room back");
    shmq_release(q);
}

/* release aborts the handle's open reservations and ends its borrows. */
Test(serialize, release_ends_reservations_and_borrows, .timeout = 20)
{
    shmq_t *q = small();
    for (uint32_t i = 0; i < 3; i++)
        put_u32(q, i);
    shmq_t *h2 = NULL;
    cr_assert_eq(shmq_from_fd(&h2, shmq_fd(q)), 0, "from_fd");
    struct shmq_msg r[2], g;
    cr_assert_eq(shmq_get_begin(h2, &g, SHMQ_NOWAIT), 0, "borrow 0");
    cr_assert_eq(shmq_put_begin(h2, 8, &r[0], SHMQ_NOWAIT), 0, "reserve");
    cr_assert_eq(shmq_put_begin(h2, 8, &r[1], SHMQ_NOWAIT), 0, "reserve");
    memset(r[0].data, 0xab, 8);
    for (uint32_t i = 3; i < 6; i++)
        put_u32(q, i);
    cr_assert(shmq_full(q), "full: 1 borrow, 2 reservations, 5 messages");
    shmq_release(h2);
    /* A new handle may take the released one's participant slot: what
     * that slot held must be over by then, not left to look like the
     * newcomer's (which nobody would recover). */
    shmq_t *h3 = NULL;
    cr_assert_eq(shmq_from_fd(&h3, shmq_fd(q)), 0, "from_fd");
    for (uint32_t i = 1; i < 6; i++)
        cr_assert_eq(get_u32(q), i, "order");
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), -EAGAIN,
                 "a released reservation was delivered");
    cr_assert_eq(fill_empty(q), 8, "the room came back");
    shmq_release(h3);
    shmq_release(q);
}

struct killed {
    shmq_t *q;
    int ready; /* pipe write end */
};

static int hold_and_wait(void *p)
{
    struct killed *k = p;
    struct shmq_msg g, r[2];
    TH_CHECK_EQ(shmq_get_begin(k->q, &g, SHMQ_NOWAIT), 0);
    TH_CHECK_EQ(shmq_put_begin(k->q, 16, &r[0], SHMQ_NOWAIT), 0);
    TH_CHECK_EQ(shmq_put_begin(k->q, 16, &r[1], SHMQ_NOWAIT), 0);
    memset(r[0].data, 0xcd, 16);
    TH_CHECK(write(k->ready, "r", 1) == 1);
    for (;;)
        pause();
}

/* A process killed holding reservations and borrows loses only those:
 * others' messages stay, the room comes back. */
Test(serialize, killed_holder_loses_only_its_own, .timeout = 30)
{
    shmq_t *q = make(8, 4096, 64, SHMQ_JOINABLE);
    for (uint32_t i = 0; i < 4; i++)
        put_u32(q, i);
    int fds[2];
    cr_assert_eq(pipe(fds), 0, "pipe");
    struct killed k = {q, fds[1]};
    pid_t pid = th_fork(hold_and_wait, &k);
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1, "child ready");
    close(fds[0]);
    close(fds[1]);
    put_u32(q, 4);
    put_u32(q, 5);
    cr_assert(shmq_full(q), "full: 5 messages, 1 borrow, 2 reservations");
    kill(pid, SIGKILL);
    int st = th_wait_pid(pid, 10 * TH_SEC);
    cr_assert(st >= 0 && WIFSIGNALED(st), "child killed");
    for (uint32_t i = 1; i < 6; i++) {
        uint32_t v = 99;
        size_t len;
        int r = shmq_get(q, &v, sizeof v, &len, 5 * TH_SEC);
        cr_assert_eq(r, 0, "get %u: %d", i, r);
        cr_assert_eq(v, i, "order");
        cr_assert_eq(shmq_task_done(q), 0, "task_done %u", i);
    }
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), -EAGAIN,
                 "a dead process's reservation was delivered");
    /* Every record's room comes back: the queue holds 8 again, in one
     * all-or-none batch (which waits behind the dead records until they
     * are recovered). */
    int r = shmq_put_many(q, values(0, 8), 8, SHMQ_ALL, 5 * TH_SEC);
    cr_assert_eq(r, 8, "put_many ALL of 8 after the death: %d", r);
    cr_assert(shmq_full(q), "full again");
    for (uint32_t i = 0; i < 8; i++)
        cr_assert_eq(get_u32(q), i, "order");
    shmq_release(q);
}

/* get_many takes the messages after an open reservation too. */
Test(serialize, get_many_takes_past_open_reservations, .timeout = 10)
{
    shmq_t *q = small();
    struct shmq_msg a, b;
    put_u32(q, 1);
    cr_assert_eq(shmq_put_begin(q, 4, &a, SHMQ_NOWAIT), 0, "begin a");
    put_u32(q, 2);
    cr_assert_eq(shmq_put_begin(q, 4, &b, SHMQ_NOWAIT), 0, "begin b");
    put_u32(q, 3);
    uint64_t buf[8];
    struct iovec msgs[8];
    int r = shmq_get_many(q, buf, sizeof buf, msgs, 8, SHMQ_NOWAIT);
    cr_assert_eq(r, 3, "took %d of the 3 committed", r);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(*(uint32_t *)msgs[i].iov_base, (uint32_t)i + 1, "order");
    *(uint32_t *)b.data = 5;
    cr_assert_eq(shmq_put_commit(q, &b, 4), 0, "commit b");
    cr_assert_eq(shmq_put_abort(q, &a), 0, "abort a");
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 8, SHMQ_NOWAIT), 1,
                 "b");
    cr_assert_eq(*(uint32_t *)msgs[0].iov_base, 5, "b's value");
    shmq_release(q);
}

/* The library never changes errno, whatever the call's outcome. */
static int errno_in_child(void *p)
{
    struct owned *o = p;
    struct shmq_msg r = o->r;
    errno = 4321;
    TH_CHECK_EQ(shmq_put_commit(o->q, &r, 1), -EINVAL); /* first call */
    TH_CHECK_EQ(errno, 4321);
    return 0;
}

Test(serialize, errno_is_never_changed, .timeout = 20)
{
    shmq_t *q = small();
    uint64_t buf[8];
    struct iovec msgs[4];
    struct shmq_msg m, g;
    int r[8];
    errno = 1234;
    r[0] = shmq_get_many(q, buf, sizeof buf, msgs, 4, 20 * TH_MS);
    r[1] = shmq_get_begin(q, &g, 20 * TH_MS);
    fill_empty(q);
    r[2] = shmq_put_begin(q, 4, &m, 20 * TH_MS);
    r[3] = shmq_put_many(q, values(0, 2), 2, 0, 20 * TH_MS);
    r[4] = shmq_put_many(q, values(0, 2), 2, SHMQ_ALL, 20 * TH_MS);
    struct iovec iov = {buf, 4};
    r[5] = shmq_putv(q, &iov, 1, 20 * TH_MS);
    int e = errno;
    cr_assert_eq(e, 1234, "errno changed to %d", e);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(r[i], -ETIMEDOUT, "call %d: %d", i, r[i]);
    drain(q);
    struct owned o = {.q = q};
    cr_assert_eq(shmq_put_begin(q, 4, &o.r, SHMQ_NOWAIT), 0, "put_begin");
    th_assert_child_ok(th_fork(errno_in_child, &o));
    errno = 999;
    shmq_close(q);
    r[6] = shmq_put_commit(q, &o.r, 4);
    r[7] = shmq_get_begin(q, &g, SHMQ_FOREVER);
    e = errno;
    cr_assert_eq(e, 999, "errno changed to %d", e);
    cr_assert_eq(r[6], -EPIPE, "commit after close");
    cr_assert_eq(r[7], -EPIPE, "drained");
    shmq_release(q);
}

/* A process stopped (SIGSTOP) while holding a reservation and a borrow
 * is not dead: nothing of its is recovered or delivered twice, and the
 * others' messages flow past its records meanwhile. */
static int hold_and_stop(void *p)
{
    struct killed *k = p;
    struct shmq_msg g, r;
    TH_CHECK_EQ(shmq_get_begin(k->q, &g, SHMQ_NOWAIT), 0);
    TH_CHECK_EQ(shmq_put_begin(k->q, 8, &r, SHMQ_NOWAIT), 0);
    uint32_t v = 4242;
    memcpy(r.data, &v, sizeof v);
    TH_CHECK(write(k->ready, "r", 1) == 1);
    raise(SIGSTOP);
    TH_CHECK_EQ(*(const uint32_t *)g.data, 7);
    TH_CHECK_EQ(shmq_get_end(k->q, &g), 0);
    TH_CHECK_EQ(shmq_put_commit(k->q, &r, 4), 0);
    return 0;
}

Test(serialize, stopped_holder_is_not_robbed, .timeout = 30)
{
    shmq_t *q = make(16, 4096, 64, 0);
    put_u32(q, 7);
    int fds[2];
    cr_assert_eq(pipe(fds), 0, "pipe");
    struct killed k = {q, fds[1]};
    pid_t pid = th_fork(hold_and_stop, &k);
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1, "child ready");
    close(fds[0]);
    close(fds[1]);
    int st;
    int64_t end = th_now_ns() + 5 * TH_SEC;
    while (waitpid(pid, &st, WUNTRACED | WNOHANG) != pid && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert(WIFSTOPPED(st), "child stopped");
    /* 14 more pass its 2 records (maxsize 16) ... */
    for (uint32_t round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < 7; i++)
            put_u32(q, 100 + i);
        for (uint32_t i = 0; i < 7; i++)
            cr_assert_eq(get_u32(q), 100 + i, "past a stopped holder");
    }
    /* ... and then the room after its records is held until they end;
     * waiting does not take them from a live process. */
    cr_assert(shmq_full(q), "room after open records came back");
    uint32_t v;
    size_t len;
    int64_t t0 = th_now_ns();
    expect_timed_out("get while the holder is stopped",
                     shmq_get(q, &v, sizeof v, &len, 100 * TH_MS), t0,
                     100 * TH_MS);
    kill(pid, SIGCONT);
    th_assert_child_ok(pid);
    cr_assert_eq(get_u32(q), 4242, "the stopped holder's commit");
    cr_assert(shmq_empty(q), "the borrowed message came back");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* JoinableQueue counts                                                 */
/* ------------------------------------------------------------------ */

Test(serialize, joinable_counts_batches, .timeout = 10)
{
    shmq_t *q = make(16, 4096, 64, SHMQ_JOINABLE);
    cr_assert_eq(shmq_put_many(q, values(0, 5), 5, 0, SHMQ_NOWAIT), 5,
                 "put_many 5");
    cr_assert_eq(shmq_put_many(q, values(5, 3), 3, SHMQ_ALL, SHMQ_NOWAIT), 3,
                 "put_many ALL 3");
    char x = 'x';
    struct iovec iov[2] = {{&x, 1}, {&x, 1}};
    cr_assert_eq(shmq_putv(q, iov, 2, SHMQ_NOWAIT), 0, "putv");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "join with 9 out");
    uint64_t buf[32];
    struct iovec msgs[16];
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, 16, SHMQ_NOWAIT), 9,
                 "get_many 9");
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(shmq_task_done(q), 0, "task_done %d", i);
        cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "join after %d", i);
    }
    cr_assert_eq(shmq_task_done(q), 0, "task_done 9");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "join after 9");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "a 10th task_done");
    shmq_release(q);
}

Test(serialize, joinable_counts_reservations_and_borrows, .timeout = 10)
{
    shmq_t *q = make(16, 4096, 64, SHMQ_JOINABLE);
    struct shmq_msg a, b, g;
    cr_assert_eq(shmq_put_begin(q, 4, &a, SHMQ_NOWAIT), 0, "begin a");
    cr_assert_eq(shmq_put_abort(q, &a), 0, "abort a");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "an aborted one is no task");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "task_done of an aborted one");
    cr_assert_eq(shmq_put_begin(q, 4, &b, SHMQ_NOWAIT), 0, "begin b");
    cr_assert_eq(shmq_put_commit(q, &b, 4), 0, "commit b");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "b is a task");
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "borrow b");
    cr_assert_eq(shmq_get_end(q, &g), 0, "get_end");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EAGAIN, "until task_done");
    cr_assert_eq(shmq_task_done(q), 0, "task_done b");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "join");
    cr_assert_eq(shmq_task_done(q), -EINVAL, "one too many");
    shmq_release(q);
}

/* A reservation is not a message put until its commit: task_done cannot
 * count it as one.
 * (Tasks are counted from committed records; open reservations and puts
 * in progress are not messages yet.) */
Test(serialize, joinable_open_reservation_is_no_task, .timeout = 10)
{
    shmq_t *q = make(16, 4096, 64, SHMQ_JOINABLE);
    struct shmq_msg a;
    cr_assert_eq(shmq_put_begin(q, 4, &a, SHMQ_NOWAIT), 0, "begin a");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0,
                 "join with only an open reservation");
    cr_assert_eq(shmq_task_done(q), -EINVAL,
                 "task_done with only an open reservation");
    cr_assert_eq(shmq_put_commit(q, &a, 4), 0, "commit a");
    get_u32(q);
    cr_assert_eq(shmq_task_done(q), 0, "task_done of a");
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "join");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Signals never end a wait early                                       */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* SIGALRM every 2 ms, caught by a handler installed without SA_RESTART. */
static void alarm_storm(bool on)
{
    struct itimerval it = {{0, 0}, {0, 0}};
    if (on) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGALRM, &sa, NULL);
        alarms = 0;
        it.it_interval.tv_usec = 2000;
        it.it_value.tv_usec = 2000;
    }
    setitimer(ITIMER_REAL, &it, NULL);
    if (!on)
        signal(SIGALRM, SIG_IGN);
}

static int take_later(void *p)
{
    shmq_t *q = p;
    th_sleep_ns(150 * TH_MS);
    size_t len;
    uint64_t buf[8];
    TH_CHECK_EQ(shmq_get(q, buf, sizeof buf, &len, 5 * TH_SEC), 0);
    return 0;
}

static int put_later_slow(void *p)
{
    shmq_t *q = p;
    th_sleep_ns(150 * TH_MS);
    uint32_t v = 88;
    TH_CHECK_EQ(shmq_put(q, &v, sizeof v, 5 * TH_SEC), 0);
    return 0;
}

Test(serialize, signals_do_not_end_waits, .timeout = 30)
{
    const int64_t T = 150 * TH_MS;
    shmq_t *q = small();
    uint64_t buf[8];
    struct iovec msgs[4];
    struct shmq_msg m;
    int r[6];
    int64_t dt[6];
    sig_atomic_t hits[6];
    int64_t t0;
    alarm_storm(true);
    /* Timed: the deadline holds. */
    t0 = th_now_ns();
    r[0] = shmq_get_many(q, buf, sizeof buf, msgs, 4, T);
    dt[0] = th_now_ns() - t0;
    hits[0] = alarms;
    t0 = th_now_ns();
    r[1] = shmq_get_begin(q, &m, T);
    dt[1] = th_now_ns() - t0;
    hits[1] = alarms;
    size_t full = fill_empty(q);
    t0 = th_now_ns();
    r[2] = shmq_put_begin(q, 4, &m, T);
    dt[2] = th_now_ns() - t0;
    t0 = th_now_ns();
    r[3] = shmq_put_many(q, values(0, 2), 2, SHMQ_ALL, T);
    dt[3] = th_now_ns() - t0;
    /* Forever: only the other process's action ends the wait. */
    pid_t pid = th_fork(take_later, q);
    t0 = th_now_ns();
    r[4] = shmq_put_begin(q, 4, &m, SHMQ_FOREVER);
    dt[4] = th_now_ns() - t0;
    if (r[4] == 0)
        shmq_put_abort(q, &m);
    drain(q);
    pid_t pid2 = th_fork(put_later_slow, q);
    t0 = th_now_ns();
    r[5] = shmq_get_many(q, buf, sizeof buf, msgs, 4, SHMQ_FOREVER);
    dt[5] = th_now_ns() - t0;
    hits[5] = alarms;
    alarm_storm(false);
    th_assert_child_ok(pid);
    th_assert_child_ok(pid2);
    cr_assert_eq(full, 8, "fill");
    cr_assert_gt(hits[5], 20, "only %d alarms", (int)hits[5]);
    const char *names[] = {"get_many", "get_begin", "put_begin",
                           "put_many ALL"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(r[i], -ETIMEDOUT, "%s: %d", names[i], r[i]);
        cr_assert_geq(dt[i], T, "%s returned early: %lld ns", names[i],
                      (long long)dt[i]);
        cr_assert_lt(dt[i], T + LATE_NS, "%s late", names[i]);
    }
    cr_assert_eq(r[4], 0, "put_begin forever: %d", r[4]);
    cr_assert_geq(dt[4], 100 * TH_MS, "put_begin returned before room came");
    cr_assert_eq(r[5], 1, "get_many forever: %d", r[5]);
    cr_assert_geq(dt[5], 100 * TH_MS, "get_many returned before the put");
    cr_assert_eq(*(uint32_t *)msgs[0].iov_base, 88, "message");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Wakeups: one per message, and none lost                              */
/* ------------------------------------------------------------------ */

/*
 * A wake is for one sleeper; a call that makes several messages (or a
 * record's room) available, or that was woken for a message it cannot
 * take, must not leave other sleepers to find out at their next
 * periodic look. Measured as ratios against the plain put/get path in
 * the same run (interleaved trials, medians): a lost wake costs the
 * sleeper a recheck period, orders of magnitude above a wake.
 */
#define WAKE_TRIALS 5
#define WAKE_RATIO  50

struct sleeper {
    pthread_t thread;
    shmq_t *q;
    int kind; /* 0 get, 1 get_many into cap, 2 put */
    size_t cap;
    pid_t tid; /* atomic */
    int rc;
    int64_t done_at;
};

static void *sleeper_main(void *p)
{
    struct sleeper *w = p;
    static _Thread_local _Alignas(8) unsigned char buf[256];
    struct iovec msgs[1];
    size_t len;
    __atomic_store_n(&w->tid, th_gettid(), __ATOMIC_RELEASE);
    if (w->kind == 0)
        w->rc = shmq_get(w->q, buf, sizeof buf, &len, 10 * TH_SEC);
    else if (w->kind == 1)
        w->rc = shmq_get_many(w->q, buf, w->cap, msgs, 1, 10 * TH_SEC);
    else
        w->rc = shmq_put(w->q, "w", 1, 10 * TH_SEC);
    w->done_at = th_now_ns();
    return NULL;
}

static void sleeper_start(struct sleeper *w, shmq_t *q, int kind, size_t cap)
{
    *w = (struct sleeper){.q = q, .kind = kind, .cap = cap};
    cr_assert_eq(pthread_create(&w->thread, NULL, sleeper_main, w), 0, "thr");
    int64_t end = th_now_ns() + 5 * TH_SEC;
    while (__atomic_load_n(&w->tid, __ATOMIC_ACQUIRE) == 0 && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert(th_wait_sleeping(getpid(), w->tid, 5 * TH_SEC), "not asleep");
}

static int64_t sleeper_join(struct sleeper *w, int64_t t0)
{
    pthread_join(w->thread, NULL);
    return w->done_at - t0;
}

static int64_t median(int64_t *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && v[k - 1] > v[k]; k--) {
            int64_t t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    return v[n / 2];
}

static void expect_like(const char *what, int64_t *tested, int64_t *ref)
{
    int64_t t = median(tested, WAKE_TRIALS), r = median(ref, WAKE_TRIALS);
    cr_log_info("%s: median %lld us, reference %lld us", what,
                (long long)(t / 1000), (long long)(r / 1000));
    cr_assert_leq(t, WAKE_RATIO * r,
                  "%s: the last sleeper woke after %lld us, %lld us through "
                  "the plain path (a wake was lost)",
                  what, (long long)(t / 1000), (long long)(r / 1000));
}

/* Three consumers asleep; three messages in one batch, or three puts:
 * the last consumer wakes as soon either way. */
static int64_t three_sleepers(bool batch)
{
    shmq_t *q = small();
    struct sleeper w[3];
    for (int i = 0; i < 3; i++)
        sleeper_start(&w[i], q, 0, 0);
    int64_t t0 = th_now_ns();
    if (batch) {
        cr_assert_eq(shmq_put_many(q, values(0, 3), 3, SHMQ_ALL, SHMQ_NOWAIT),
                     3, "batch");
    } else {
        for (uint32_t i = 0; i < 3; i++)
            put_u32(q, i);
    }
    int64_t last = 0;
    for (int i = 0; i < 3; i++) {
        int64_t dt = sleeper_join(&w[i], t0);
        cr_assert_eq(w[i].rc, 0, "consumer %d: %d", i, w[i].rc);
        last = dt > last ? dt : last;
    }
    shmq_release(q);
    return last;
}

Test(serialize, put_many_wakes_a_sleeper_per_message, .timeout = 60)
{
    int64_t batch[WAKE_TRIALS], single[WAKE_TRIALS];
    for (int i = 0; i < WAKE_TRIALS; i++) {
        single[i] = three_sleepers(false);
        batch[i] = three_sleepers(true);
    }
    expect_like("SHMQ_ALL batch of 3 to 3 sleepers", batch, single);
}

/* A producer asleep on a full queue whose oldest record is a
 * reservation: the abort gives the room back as a get would. */
enum room_how { ROOM_GET, ROOM_ABORT, ROOM_GET_END };

static int64_t room_by(enum room_how how)
{
    shmq_t *q = make(4, 4096, 64, 0);
    struct shmq_msg m;
    if (how == ROOM_ABORT)
        cr_assert_eq(shmq_put_begin(q, 8, &m, SHMQ_NOWAIT), 0, "put_begin");
    else
        put_u32(q, 9);
    if (how == ROOM_GET_END)
        cr_assert_eq(shmq_get_begin(q, &m, SHMQ_NOWAIT), 0, "get_begin");
    for (uint32_t i = 0; i < 3; i++)
        put_u32(q, i);
    struct sleeper w;
    sleeper_start(&w, q, 2, 0);
    int64_t t0 = th_now_ns();
    if (how == ROOM_ABORT)
        cr_assert_eq(shmq_put_abort(q, &m), 0, "abort");
    else if (how == ROOM_GET_END)
        cr_assert_eq(shmq_get_end(q, &m), 0, "get_end");
    else
        cr_assert_eq(get_u32(q), 9, "get");
    int64_t dt = sleeper_join(&w, t0);
    cr_assert_eq(w.rc, 0, "producer: %d", w.rc);
    shmq_release(q);
    return dt;
}

Test(serialize, put_abort_wakes_a_producer_waiting_for_room, .timeout = 60)
{
    int64_t abort_lat[WAKE_TRIALS], get_lat[WAKE_TRIALS];
    for (int i = 0; i < WAKE_TRIALS; i++) {
        get_lat[i] = room_by(ROOM_GET);
        abort_lat[i] = room_by(ROOM_ABORT);
    }
    expect_like("room of an aborted reservation", abort_lat, get_lat);
}

Test(serialize, get_end_wakes_a_producer_waiting_for_room, .timeout = 60)
{
    int64_t end_lat[WAKE_TRIALS], get_lat[WAKE_TRIALS];
    for (int i = 0; i < WAKE_TRIALS; i++) {
        get_lat[i] = room_by(ROOM_GET);
        end_lat[i] = room_by(ROOM_GET_END);
    }
    expect_like("room of an ended borrow", end_lat, get_lat);
}

/* A batch waiting for room for two, then a put waiting for room for one;
 * one record's room comes back: the put goes in as soon as it would
 * without the batch ahead of it. (With wake-one, the one wake may go to
 * the batch, which cannot use it: it passes the wake on, lib/attempt.c;
 * without that the put slept until its periodic re-check, ~70 ms.) */
static int batch_of_two(struct bg *b)
{
    return shmq_put_many(b->q, values(50, 2), 2, SHMQ_ALL, 10 * TH_SEC);
}

static int64_t room_past_a_batch(bool batch_ahead)
{
    shmq_t *q = make(4, 4096, 64, 0);
    for (uint32_t i = 0; i < 4; i++)
        put_u32(q, i);
    struct bg b;
    if (batch_ahead) {
        bg_start(&b, batch_of_two, q);
        bg_blocked(&b);
    }
    struct sleeper w;
    sleeper_start(&w, q, 2, 0);
    int64_t t0 = th_now_ns();
    cr_assert_eq(get_u32(q), 0, "get");
    int64_t dt = sleeper_join(&w, t0);
    cr_assert_eq(w.rc, 0, "put: %d", w.rc);
    shmq_close(q);
    if (batch_ahead)
        cr_assert_eq(bg_join(&b), -EPIPE, "the batch never fitted");
    shmq_release(q);
    return dt;
}

Test(serialize, a_waiting_batch_does_not_swallow_a_room_wake, .timeout = 60)
{
    int64_t behind[WAKE_TRIALS], alone[WAKE_TRIALS];
    for (int i = 0; i < WAKE_TRIALS; i++) {
        alone[i] = room_past_a_batch(false);
        behind[i] = room_past_a_batch(true);
    }
    expect_like("a put behind a waiting SHMQ_ALL batch", behind, alone);
}

/* Two consumers asleep, the first with a buffer too small: woken for a
 * message it cannot take (-ENOBUFS), it passes the wake on. */
static int64_t big_message_to(bool small_first)
{
    shmq_t *q = make(16, 4096, 256, 0);
    struct sleeper a, b;
    if (small_first)
        sleeper_start(&a, q, 1, 8);
    sleeper_start(&b, q, 1, 256);
    static unsigned char msg[100];
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put_nowait(q, msg, sizeof msg), 0, "put");
    int64_t dt = sleeper_join(&b, t0);
    cr_assert_eq(b.rc, 1, "the consumer with room: %d", b.rc);
    if (small_first) {
        sleeper_join(&a, t0);
        cr_assert_eq(a.rc, -ENOBUFS, "the small consumer: %d", a.rc);
    }
    shmq_release(q);
    return dt;
}

Test(serialize, get_many_enobufs_passes_the_wake_on, .timeout = 60)
{
    int64_t pass[WAKE_TRIALS], alone[WAKE_TRIALS];
    for (int i = 0; i < WAKE_TRIALS; i++) {
        alone[i] = big_message_to(false);
        pass[i] = big_message_to(true);
    }
    expect_like("a message past a get_many with a small buffer", pass, alone);
}

/* ------------------------------------------------------------------ */
/* Shared memory is untrusted                                           */
/* ------------------------------------------------------------------ */

/*
 * Descriptors and header words scribbled on through a second mapping:
 * every serialization call returns 0 or an error, never crashes (the
 * calls run in a child: a crash is a signal), never hangs (each call has
 * a short timeout and must return within a bound), never lends a borrow
 * outside the mapping (its bytes are all read) and never writes past
 * cap of a get_many buffer (a guard page follows it).
 */
#define SCRIB_CAP 512

static bool scrib_rc_ok(int rc, bool einval_ok)
{
    return rc >= 0 || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EBADMSG ||
           rc == -EPIPE || rc == -ENOBUFS || (einval_ok && rc == -EINVAL);
}

static int scrib_get_many(shmq_t *q, unsigned char *buf)
{
    struct iovec msgs[8];
    int rc = shmq_get_many(q, buf, SCRIB_CAP, msgs, 8, TH_MS);
    TH_CHECK(scrib_rc_ok(rc, false));
    for (int k = 0; k < rc; k++) {
        size_t at = (size_t)((unsigned char *)msgs[k].iov_base - buf);
        TH_CHECK(at <= SCRIB_CAP && msgs[k].iov_len <= SCRIB_CAP - at);
    }
    return 0;
}

static int scrib_get_begin(shmq_t *q)
{
    struct shmq_msg g;
    int rc = shmq_get_begin(q, &g, TH_MS);
    TH_CHECK(scrib_rc_ok(rc, false));
    if (rc == 0) {
        TH_CHECK(g.len <= shmq_max_message(q));
        volatile unsigned char sum = 0;
        for (size_t i = 0; i < g.len; i++)
            sum += ((const volatile unsigned char *)g.data)[i];
        (void)sum;
        TH_CHECK(scrib_rc_ok(shmq_get_end(q, &g), true));
    }
    return 0;
}

static int scrib_put_begin(shmq_t *q, int i)
{
    struct shmq_msg m;
    int rc = shmq_put_begin(q, 64, &m, TH_MS);
    TH_CHECK(scrib_rc_ok(rc, false));
    if (rc == 0) {
        TH_CHECK(m.len == 64);
        memset(m.data, 0x5a, 64);
        rc = i % 2 ? shmq_put_commit(q, &m, 32) : shmq_put_abort(q, &m);
        TH_CHECK(scrib_rc_ok(rc, true));
    }
    return 0;
}

static int scrib_calls(void *p)
{
    shmq_t *q = p;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *area = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TH_CHECK(area != MAP_FAILED && mprotect(area + pg, pg, PROT_NONE) == 0);
    unsigned char *buf = area + pg - SCRIB_CAP;
    static unsigned char msg[64];
    struct iovec iov[2] = {{msg, 10}, {msg + 10, 20}};
    for (int i = 0; i < 42; i++) {
        int64_t t0 = th_now_ns();
        int rc = 0;
        switch (i % 7) {
        case 0:
            rc = scrib_get_many(q, buf);
            break;
        case 1:
            rc = scrib_get_begin(q);
            break;
        case 2:
            rc = scrib_put_begin(q, i);
            break;
        case 3:
            TH_CHECK(scrib_rc_ok(shmq_putv(q, iov, 2, TH_MS), false));
            break;
        case 4:
            TH_CHECK(scrib_rc_ok(shmq_put_many(q, iov, 2, 0, TH_MS), false));
            break;
        case 5:
            TH_CHECK(
                scrib_rc_ok(shmq_put_many(q, iov, 2, SHMQ_ALL, TH_MS), false));
            break;
        default:
            (void)shmq_qsize(q);
            (void)shmq_full(q);
        }
        if (rc)
            return rc;
        TH_CHECK(th_now_ns() - t0 < 2 * TH_SEC);
    }
    return 0;
}

/* Scribble n random words over [off, off + len) of the region. */
static void scribble(unsigned char *map, uint64_t off, uint64_t len, int n,
                     uint64_t *rng)
{
    for (int i = 0; i < n; i++) {
        uint64_t at = off + (th_rand_below(rng, len / 8) * 8);
        uint64_t v = th_rand_next(rng);
        /* Often a plausible value: a small number, or a valid word with
         * one field changed. */
        if (th_rand_below(rng, 2))
            v = th_rand_below(rng, 3) == 0 ? v & 0xff : v ^ (1ull << (v & 63));
        uint64_t old;
        memcpy(&old, map + at, 8);
        if (th_rand_below(rng, 2))
            v = old ^ (1ull << th_rand_below(rng, 64));
        __atomic_store_n((uint64_t *)(void *)(map + at), v, __ATOMIC_RELAXED);
    }
}

Test(serialize, scribbled_region_never_crashes_or_hangs, .timeout = 120)
{
    /* SHMQ_SCRIBBLE_SEED replays another sequence. */
    const char *env = getenv("SHMQ_SCRIBBLE_SEED");
    uint64_t rng = env ? strtoull(env, NULL, 0) : 2026;
    cr_log_info("scribble seed %llu", (unsigned long long)rng);
    for (int round = 0; round < 40; round++) {
        shmq_t *q = make(16, 4096, 256, 0);
        for (uint32_t i = 0; i < 6; i++)
            put_u32(q, i);
        struct shmq_msg r, g;
        cr_assert_eq(shmq_put_begin(q, 32, &r, SHMQ_NOWAIT), 0, "reserve");
        cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "borrow");
        struct stat st;
        cr_assert_eq(fstat(shmq_fd(q), &st), 0, "fstat");
        size_t size = (size_t)st.st_size;
        unsigned char *map =
            mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, shmq_fd(q), 0);
        cr_assert_neq(map, MAP_FAILED, "mmap");
        const struct shmq_identity *id = (const struct shmq_identity *)map;
        uint64_t desc = id->desc_offset,
                 desc_len = (uint64_t)id->desc_count * sizeof(struct shmq_desc);
        uint64_t words = offsetof(struct shmq_header, tail),
                 words_len = sizeof(struct shmq_header) - words;
        switch (round % 3) {
        case 0:
            scribble(map, desc, desc_len, 1 + round % 5, &rng);
            break;
        case 1:
            scribble(map, words, words_len, 1 + round % 4, &rng);
            break;
        default:
            scribble(map, desc, desc_len, 2, &rng);
            scribble(map, words, words_len, 2, &rng);
        }
        pid_t pid = th_fork(scrib_calls, q);
        th_assert_child_ok_within(pid, 30 * TH_SEC);
        /* The scribbler's own open ones end, or are refused, cleanly. */
        int rc = shmq_put_commit(q, &r, 8);
        cr_assert(scrib_rc_ok(rc, true), "round %d: commit %d", round, rc);
        rc = shmq_get_end(q, &g);
        cr_assert(scrib_rc_ok(rc, true), "round %d: get_end %d", round, rc);
        munmap(map, size);
        shmq_release(q);
    }
}

/* ------------------------------------------------------------------ */
/* Stress: every call, several processes                                */
/* ------------------------------------------------------------------ */

enum { S_PROD = 4, S_CONS = 4, S_MAXLEN = 200 };

struct stress {
    shmq_t *q;
    uint32_t per_producer;
    uint32_t id;
    uint8_t *seen;   /* shared: [S_PROD][per_producer] counters */
    uint64_t *taken; /* shared: messages each consumer took */
};

static size_t stress_len(uint64_t *rng)
{
    return TH_PAYLOAD_MIN +
           (size_t)th_rand_below(rng, S_MAXLEN - TH_PAYLOAD_MIN);
}

static int stress_putv(struct stress *s, uint64_t *rng, uint32_t seq)
{
    unsigned char msg[S_MAXLEN];
    size_t len = stress_len(rng);
    th_payload_fill(msg, len, s->id, seq);
    size_t a = (size_t)th_rand_below(rng, len + 1);
    size_t b = a + (size_t)th_rand_below(rng, len - a + 1);
    struct iovec iov[3] = {{msg, a}, {msg + a, b - a}, {msg + b, len - b}};
    TH_CHECK_EQ(shmq_putv(s->q, iov, 3, 10 * TH_SEC), 0);
    return 0;
}

/* Puts seq.. as a batch; returns how many went in (< 0: failed). */
static int stress_batch(struct stress *s, uint64_t *rng, uint32_t seq,
                        uint32_t left)
{
    static unsigned char msgs[8][S_MAXLEN];
    struct iovec iov[8];
    size_t n = 1 + (size_t)th_rand_below(rng, 8);
    if (n > left)
        n = left;
    for (size_t i = 0; i < n; i++) {
        size_t len = stress_len(rng);
        th_payload_fill(msgs[i], len, s->id, seq + (uint32_t)i);
        iov[i] = (struct iovec){msgs[i], len};
    }
    unsigned flags = th_rand_below(rng, 2) ? SHMQ_ALL : 0;
    size_t done = 0;
    while (done < n) {
        int r = shmq_put_many(s->q, iov + done, n - done, flags, 10 * TH_SEC);
        if (r <= 0 || (flags && (size_t)r != n)) {
            fprintf(stderr, "put_many: %d of %zu (flags %u)\n", r, n, flags);
            return -1;
        }
        done += (size_t)r;
    }
    return (int)n;
}

static int stress_reserve(struct stress *s, uint64_t *rng, uint32_t seq)
{
    struct shmq_msg m;
    if (th_rand_below(rng, 8) == 0) { /* a dropped one, now and then */
        TH_CHECK_EQ(shmq_put_begin(s->q, 32, &m, 10 * TH_SEC), 0);
        TH_CHECK_EQ(shmq_put_abort(s->q, &m), 0);
    }
    size_t len = stress_len(rng);
    size_t room = len + (size_t)th_rand_below(rng, S_MAXLEN - len + 1);
    TH_CHECK_EQ(shmq_put_begin(s->q, room, &m, 10 * TH_SEC), 0);
    TH_CHECK(m.len == room && aligned8(m.data));
    th_payload_fill(m.data, len, s->id, seq);
    TH_CHECK_EQ(shmq_put_commit(s->q, &m, len), 0);
    return 0;
}

static int stress_producer(void *p)
{
    struct stress *s = p;
    uint64_t rng = 0x1234u + s->id;
    for (uint32_t seq = 0; seq < s->per_producer;) {
        switch (th_rand_below(&rng, 3)) {
        case 0:
            if (stress_putv(s, &rng, seq))
                return 1;
            seq++;
            break;
        case 1: {
            int n = stress_batch(s, &rng, seq, s->per_producer - seq);
            if (n < 0)
                return 1;
            seq += (uint32_t)n;
            break;
        }
        default:
            if (stress_reserve(s, &rng, seq))
                return 1;
            seq++;
        }
    }
    return 0;
}

/* Record one message; 0 or 1 (bad payload, duplicate, order broken). */
static int stress_seen(struct stress *s, const void *data, size_t len,
                       uint32_t *last)
{
    uint32_t prod, seq;
    TH_CHECK(th_payload_check(data, len, &prod, &seq));
    TH_CHECK(prod < S_PROD && seq < s->per_producer);
    /* FIFO per producer, as this consumer sees it. */
    TH_CHECK(last[prod] == UINT32_MAX || seq > last[prod]);
    last[prod] = seq;
    uint8_t c = __atomic_fetch_add(&s->seen[prod * s->per_producer + seq], 1,
                                   __ATOMIC_RELAXED);
    TH_CHECK_EQ(c, 0);
    s->taken[s->id]++;
    return 0;
}

static int stress_consumer(void *p)
{
    struct stress *s = p;
    uint64_t rng = 0x9876u + s->id;
    uint32_t last[S_PROD];
    for (int i = 0; i < S_PROD; i++)
        last[i] = UINT32_MAX;
    static _Alignas(8) unsigned char buf[2048];
    struct iovec msgs[16];
    for (;;) {
        if (th_rand_below(&rng, 2)) {
            size_t cap =
                S_MAXLEN + (size_t)th_rand_below(&rng, sizeof buf - S_MAXLEN);
            size_t max = 1 + (size_t)th_rand_below(&rng, 16);
            int r = shmq_get_many(s->q, buf, cap, msgs, max, 10 * TH_SEC);
            if (r == -EPIPE)
                return 0;
            if (r < 1 || (size_t)r > max)
                fprintf(stderr, "get_many: %d (max %zu)\n", r, max);
            TH_CHECK(r >= 1 && (size_t)r <= max);
            for (int i = 0; i < r; i++) {
                TH_CHECK(
                    (size_t)((unsigned char *)msgs[i].iov_base - buf) % 8 == 0);
                if (stress_seen(s, msgs[i].iov_base, msgs[i].iov_len, last))
                    return 1;
            }
        } else {
            struct shmq_msg g;
            int r = shmq_get_begin(s->q, &g, 10 * TH_SEC);
            if (r == -EPIPE)
                return 0;
            TH_CHECK_EQ(r, 0);
            TH_CHECK(aligned8(g.data));
            if (stress_seen(s, g.data, g.len, last))
                return 1;
            TH_CHECK_EQ(shmq_get_end(s->q, &g), 0);
        }
    }
}

Test(serialize, stress_every_call_across_processes, .timeout = 120)
{
    uint32_t per = (uint32_t)th_scaled(25000, 500);
    shmq_t *q = make(64, 8192, 256, 0);
    size_t seen_size = (size_t)S_PROD * per;
    uint8_t *seen = th_shared_alloc(seen_size);
    uint64_t *taken = th_shared_alloc(sizeof(uint64_t) * S_CONS);
    cr_assert(seen && taken, "shared memory");
    struct stress prod[S_PROD], cons[S_CONS];
    pid_t pp[S_PROD], cp[S_CONS];
    int64_t t0 = th_now_ns();
    for (uint32_t i = 0; i < S_CONS; i++) {
        cons[i] = (struct stress){q, per, i, seen, taken};
        cp[i] = th_fork(stress_consumer, &cons[i]);
    }
    for (uint32_t i = 0; i < S_PROD; i++) {
        prod[i] = (struct stress){q, per, i, seen, taken};
        pp[i] = th_fork(stress_producer, &prod[i]);
    }
    th_assert_children_ok_within(pp, S_PROD, 60 * TH_SEC);
    shmq_close(q);
    th_assert_children_ok_within(cp, S_CONS, 30 * TH_SEC);
    int64_t dt = th_now_ns() - t0;
    uint64_t total = 0;
    for (int i = 0; i < S_CONS; i++)
        total += taken[i];
    for (size_t i = 0; i < seen_size; i++)
        cr_assert_eq(seen[i], 1, "producer %zu message %zu seen %u times",
                     i / per, i % per, seen[i]);
    cr_assert_eq(total, seen_size, "taken");
    cr_log_info("stress: %llu messages in %lld ms", (unsigned long long)total,
                (long long)(dt / TH_MS));
    th_shared_free(seen, seen_size);
    th_shared_free(taken, sizeof(uint64_t) * S_CONS);
    shmq_release(q);
}

/* Producers and consumers using every call, SIGKILLed at random
 * instants and replaced: what consumers get is intact and never
 * duplicated, and the queue keeps all its room afterwards. */
enum { K_ROUNDS = 24, K_SEQS = 1 << 15 };

struct kshared {
    uint8_t seen[K_ROUNDS][K_SEQS];
    int bad; /* atomic: a consumer saw a torn or repeated message */
};

struct kworker {
    shmq_t *q;
    struct kshared *sh;
    uint32_t id;
};

static int kill_producer(void *p)
{
    struct kworker *w = p;
    uint64_t rng = 77u + w->id;
    unsigned char msg[2][S_MAXLEN];
    for (uint32_t seq = 0; seq + 2 <= K_SEQS;) {
        size_t len = stress_len(&rng), len2 = stress_len(&rng);
        struct shmq_msg m;
        int r;
        switch (th_rand_below(&rng, 3)) {
        case 0:
            r = shmq_put_begin(w->q, S_MAXLEN, &m, SHMQ_FOREVER);
            if (r != 0)
                return 1;
            th_payload_fill(m.data, len, w->id, seq);
            r = shmq_put_commit(w->q, &m, len);
            seq++;
            break;
        case 1: {
            th_payload_fill(msg[0], len, w->id, seq);
            struct iovec iov[2] = {{msg[0], 5}, {msg[0] + 5, len - 5}};
            r = shmq_putv(w->q, iov, 2, SHMQ_FOREVER);
            seq++;
            break;
        }
        default: {
            th_payload_fill(msg[0], len, w->id, seq);
            th_payload_fill(msg[1], len2, w->id, seq + 1);
            struct iovec iov[2] = {{msg[0], len}, {msg[1], len2}};
            r = shmq_put_many(w->q, iov, 2, SHMQ_ALL, SHMQ_FOREVER) == 2 ? 0
                                                                         : -1;
            seq += 2;
        }
        }
        if (r != 0)
            return 1;
    }
    return 0;
}

static void kill_record(struct kworker *w, const void *data, size_t len)
{
    uint32_t prod, seq;
    if (!th_payload_check(data, len, &prod, &seq) || prod >= K_ROUNDS ||
        seq >= K_SEQS ||
        __atomic_fetch_add(&w->sh->seen[prod][seq], 1, __ATOMIC_RELAXED) != 0)
        __atomic_store_n(&w->sh->bad, 1, __ATOMIC_RELEASE);
}

static int kill_consumer(void *p)
{
    struct kworker *w = p;
    uint64_t rng = 99u + w->id;
    static _Alignas(8) unsigned char buf[1024];
    struct iovec msgs[8];
    for (;;) {
        if (th_rand_below(&rng, 2)) {
            struct shmq_msg g;
            if (shmq_get_begin(w->q, &g, SHMQ_FOREVER) != 0)
                return 1;
            kill_record(w, g.data, g.len);
            if (shmq_get_end(w->q, &g) != 0)
                return 1;
        } else {
            int n = shmq_get_many(w->q, buf, sizeof buf, msgs, 8, SHMQ_FOREVER);
            if (n < 1)
                return 1;
            for (int i = 0; i < n; i++)
                kill_record(w, msgs[i].iov_base, msgs[i].iov_len);
        }
    }
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    int st = th_wait_pid(pid, 10 * TH_SEC);
    cr_assert(st >= 0 &&
                  (WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0)),
              "a worker failed before it was killed (status %x)", st);
}

Test(serialize, random_sigkill_of_every_call, .timeout = 60)
{
    shmq_t *q = make(32, 4096, 256, 0);
    struct kshared *sh = th_shared_alloc(sizeof *sh);
    cr_assert(sh, "shared memory");
    uint64_t rng = 5;
    struct kworker w[2 * K_ROUNDS];
    pid_t prod = 0, cons = 0;
    for (uint32_t round = 0; round < K_ROUNDS; round++) {
        /* One of the two is replaced each round. */
        w[2 * round] = (struct kworker){q, sh, round};
        w[2 * round + 1] = (struct kworker){q, sh, round};
        bool new_prod = prod == 0 || th_rand_below(&rng, 2);
        if (new_prod) {
            if (prod)
                kill_and_reap(prod);
            prod = th_fork(kill_producer, &w[2 * round]);
        }
        if (!new_prod || cons == 0) {
            if (cons)
                kill_and_reap(cons);
            cons = th_fork(kill_consumer, &w[2 * round + 1]);
        }
        th_sleep_ns((int64_t)(5 + th_rand_below(&rng, 30)) * TH_MS);
    }
    kill_and_reap(prod);
    kill_and_reap(cons);
    cr_assert_eq(__atomic_load_n(&sh->bad, __ATOMIC_ACQUIRE), 0,
                 "a consumer got a torn or repeated message");
    /* What is left is intact and new; then the whole room is there. */
    static unsigned char buf[256];
    size_t len;
    struct kworker me = {q, sh, 0};
    while (shmq_get(q, buf, sizeof buf, &len, 200 * TH_MS) == 0)
        kill_record(&me, buf, len);
    cr_assert_eq(sh->bad, 0, "a torn or repeated message left in the queue");
    size_t total = 0;
    for (size_t i = 0; i < sizeof sh->seen; i++)
        total += (&sh->seen[0][0])[i];
    cr_assert_gt(total, K_ROUNDS, "only %zu messages went through", total);
    cr_log_info("random_sigkill: %zu messages", total);
    for (uint32_t i = 0; i < 32; i++) {
        int r = shmq_put(q, &i, sizeof i, 5 * TH_SEC);
        cr_assert_eq(r, 0, "put %u after the kills: %d", i, r);
    }
    for (uint32_t i = 0; i < 32; i++)
        cr_assert_eq(get_u32(q), i, "order");
    th_shared_free(sh, sizeof *sh);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Edges: 0-byte commits, foreign and forged shmq_msg, put_many counts  */
/* ------------------------------------------------------------------ */

/* A commit of 0 bytes delivers a 0-byte message (from any reservation
 * size), counted by qsize, and the room comes back. */
Test(serialize, commit_of_zero_bytes_is_a_message, .timeout = 10)
{
    shmq_t *q = make(8, 4096, 64, SHMQ_JOINABLE);
    static const size_t sizes[] = {0, 1, 8, 64};
    for (size_t i = 0; i < 4; i++) {
        struct shmq_msg m;
        cr_assert_eq(shmq_put_begin(q, sizes[i], &m, SHMQ_NOWAIT), 0,
                     "put_begin %zu", sizes[i]);
        cr_assert_eq(shmq_put_commit(q, &m, 0), 0, "commit 0 of %zu", sizes[i]);
    }
    cr_assert_eq(shmq_qsize(q), 4, "qsize after four 0-byte commits");
    for (size_t i = 0; i < 4; i++) {
        size_t len = 99;
        cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), 0, "get %zu", i);
        cr_assert_eq(len, 0, "len");
        cr_assert_eq(shmq_task_done(q), 0, "a 0-byte commit is a task");
    }
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0, "join");
    cr_assert_eq(fill_empty(q), 8, "room back");
    shmq_release(q);
}

/* A struct shmq_msg of random bytes is not a reservation or a borrow:
 * -EINVAL, and the open ones of the handle stay as they were. */
Test(serialize, random_bytes_msg_is_einval, .timeout = 20)
{
    shmq_t *q = small();
    put_u32(q, 11);
    struct shmq_msg r, g;
    cr_assert_eq(shmq_put_begin(q, 8, &r, SHMQ_NOWAIT), 0, "put_begin");
    cr_assert_eq(shmq_get_begin(q, &g, SHMQ_NOWAIT), 0, "get_begin");
    put_u32(q, 12);
    uint64_t rng = 7;
    for (int i = 0; i < 20000; i++) {
        struct shmq_msg m;
        uint64_t w[4];
        for (int k = 0; k < 4; k++)
            w[k] = th_rand_next(&rng);
        /* Now and then a forgery close to a real one: one word of an
         * open reservation or borrow replaced. */
        if (i % 4 == 0) {
            m = i % 8 ? r : g;
            m.priv[i % 16 < 8 ? 0 : 1] = w[0];
        } else {
            memcpy(&m, w, sizeof w < sizeof m ? sizeof w : sizeof m);
            m.data = (void *)(uintptr_t)w[0];
            m.len = (size_t)(w[1] % 128);
        }
        struct shmq_msg c = m;
        int rc = shmq_put_commit(q, &c, c.len ? w[2] % (c.len + 1) : 0);
        cr_assert_eq(rc, -EINVAL, "commit of forgery %d: %d", i, rc);
        c = m;
        cr_assert_eq(shmq_put_abort(q, &c), -EINVAL, "abort of forgery %d", i);
        c = m;
        cr_assert_eq(shmq_get_end(q, &c), -EINVAL, "get_end of forgery %d", i);
    }
    cr_assert_eq(shmq_qsize(q), 1, "qsize changed");
    memcpy(r.data, "rsvd", 4);
    cr_assert_eq(shmq_put_commit(q, &r, 4), 0, "the real reservation");
    cr_assert_eq(*(const uint32_t *)g.data, 11, "the borrow's bytes");
    cr_assert_eq(shmq_get_end(q, &g), 0, "the real borrow");
    /* 12 and the reservation overlapped: either order. */
    bool got12 = false, gotr = false;
    for (int i = 0; i < 2; i++) {
        char out[8];
        size_t len;
        cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
        cr_assert_eq(len, 4, "len");
        if (memcmp(out, "rsvd", 4) == 0)
            gotr = true;
        else if (*(const uint32_t *)(const void *)out == 12)
            got12 = true;
    }
    cr_assert(got12 && gotr, "12 and the committed reservation");
    cr_assert_eq(fill_empty(q), 8, "room back");
    shmq_release(q);
}

/* put_many's argument errors that were not covered above: a length of
 * SIZE_MAX (-EMSGSIZE, not a wrap), n above INT_MAX (-EINVAL, before
 * any entry is read). */
Test(serialize, put_many_huge_lengths_and_counts, .timeout = 10)
{
    shmq_t *q = small();
    char x = 'x';
    struct iovec huge[2] = {{&x, 1}, {&x, SIZE_MAX}};
    for (unsigned fl = 0; fl <= SHMQ_ALL; fl++) {
        cr_assert_eq(shmq_put_many(q, huge, 2, fl, SHMQ_NOWAIT), -EMSGSIZE,
                     "iov_len SIZE_MAX (flags %u)", fl);
        cr_assert_eq(
            shmq_put_many(q, huge, (size_t)INT_MAX + 1, fl, SHMQ_NOWAIT),
            -EINVAL, "n INT_MAX + 1 (flags %u)", fl);
        cr_assert_eq(shmq_put_many(q, huge, SIZE_MAX, fl, SHMQ_NOWAIT), -EINVAL,
                     "n SIZE_MAX (flags %u)", fl);
    }
    cr_assert_eq(shmq_qsize(q), 0, "something was put");
    /* get_many: max_msgs above INT_MAX is fine, the count fits an int. */
    put_u32(q, 3);
    uint64_t buf[4];
    struct iovec msgs[4];
    cr_assert_eq(shmq_get_many(q, buf, sizeof buf, msgs, SIZE_MAX, SHMQ_NOWAIT),
                 1, "max_msgs SIZE_MAX");
    shmq_release(q);
}

/* Without SHMQ_ALL, against a bound: exactly the count that fits. */
Test(serialize, put_many_without_all_puts_exactly_what_fits, .timeout = 20)
{
    /* By count: maxsize 10, 32 messages. */
    shmq_t *q = make(10, 4096, 64, 0);
    cr_assert_eq(shmq_put_many(q, values(0, 32), 32, 0, SHMQ_NOWAIT), 10,
                 "32 into maxsize 10");
    cr_assert_eq(shmq_qsize(q), 10, "qsize");
    cr_assert(shmq_full(q), "full");
    for (uint32_t i = 0; i < 10; i++)
        cr_assert_eq(get_u32(q), i, "the first 10, in order");
    /* Part of the room: the count is what was free. */
    put_u32(q, 100);
    put_u32(q, 101);
    put_u32(q, 102);
    int64_t t0 = th_now_ns();
    int r = shmq_put_many(q, values(0, 32), 32, 0, 50 * TH_MS);
    cr_assert_eq(r, 7, "32 into 7 free, timed: %d", r);
    cr_assert_geq(th_now_ns() - t0, 50 * TH_MS, "returned before deadline");
    cr_assert_eq(shmq_qsize(q), 10, "qsize");
    shmq_release(q);

    /* By bytes: the count is what capacity holds. */
    q = make(64, 512, 64, 0);
    static unsigned char msg[64];
    size_t fit = 0;
    while (shmq_put_nowait(q, msg, 64) == 0)
        fit++;
    drain(q);
    cr_assert(fit >= 2 && fit < 32, "fit %zu", fit);
    static struct iovec big[32];
    for (int i = 0; i < 32; i++)
        big[i] = (struct iovec){msg, 64};
    cr_assert_eq(shmq_put_many(q, big, 32, 0, SHMQ_NOWAIT), (int)fit,
                 "32 64-byte messages into room for %zu", fit);
    cr_assert_eq(shmq_qsize(q), fit, "qsize");
    cr_assert_eq(shmq_put_many(q, big, 1, 0, SHMQ_NOWAIT), -EAGAIN, "full");
    /* Small messages still fit in what big ones leave: none here. */
    cr_assert_eq(drain(q), fit, "drain");
    shmq_release(q);
}

/* A reservation, borrow or message of one queue is nothing to another
 * queue, even one made the same way (whose records have the same
 * numbers): -EINVAL there, and nothing changes on either queue. Two
 * fresh queues share positions, sequence numbers and slots; only
 * m->data, in the other queue's mapping, tells them apart. */
Test(serialize, msg_of_another_queue_is_einval, .timeout = 10)
{
    shmq_t *a = small(), *b = small();
    put_u32(a, 1);
    put_u32(b, 2);
    struct shmq_msg ga, gb, ra, rb;
    cr_assert_eq(shmq_get_begin(a, &ga, SHMQ_NOWAIT), 0, "borrow on a");
    cr_assert_eq(shmq_get_begin(b, &gb, SHMQ_NOWAIT), 0, "borrow on b");
    cr_assert_eq(shmq_put_begin(a, 8, &ra, SHMQ_NOWAIT), 0, "reserve on a");
    cr_assert_eq(shmq_put_begin(b, 8, &rb, SHMQ_NOWAIT), 0, "reserve on b");
    memcpy(ra.data, "AAAA", 4);
    memcpy(rb.data, "BBBB", 4);
    struct shmq_msg c = ra;
    cr_assert_eq(shmq_put_commit(b, &c, 4), -EINVAL, "commit a's on b");
    c = ra;
    cr_assert_eq(shmq_put_abort(b, &c), -EINVAL, "abort a's on b");
    c = ga;
    cr_assert_eq(shmq_get_end(b, &c), -EINVAL, "get_end a's on b");
    /* Both queues' own are still open, and theirs to end. */
    cr_assert_eq(shmq_qsize(b), 0, "b delivered something");
    cr_assert_eq(shmq_put_commit(b, &rb, 4), 0, "b's reservation");
    cr_assert_eq(shmq_get_end(b, &gb), 0, "b's borrow");
    cr_assert_eq(shmq_put_commit(a, &ra, 4), 0, "a's reservation");
    cr_assert_eq(shmq_get_end(a, &ga), 0, "a's borrow");
    char out[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(b, out, sizeof out, &len), 0, "get b");
    cr_assert(len == 4 && memcmp(out, "BBBB", 4) == 0, "b's message");
    cr_assert_eq(shmq_get_nowait(a, out, sizeof out, &len), 0, "get a");
    cr_assert(len == 4 && memcmp(out, "AAAA", 4) == 0, "a's message");
    shmq_release(a);
    shmq_release(b);
}

/* ------------------------------------------------------------------ */
/* put_many batches and the calls that take them                        */
/* ------------------------------------------------------------------ */
/*
 * Whatever a put_many batch is in the ring, each of its messages is a
 * message of its own: counted one by one, taken one by one by get,
 * several by get_many, borrowed one by one by get_begin.
 */

enum { IB_N = 20 };
static unsigned char ib_bytes[IB_N][64];
static struct iovec ib_iov[IB_N];

/* IB_N messages of 0 to 40 bytes, message i filled with seed i. */
static struct iovec *interplay_batch(void)
{
    for (uint32_t i = 0; i < IB_N; i++) {
        size_t len = (i * 13u) % 41u;
        th_fill(ib_bytes[i], len, i);
        ib_iov[i] = (struct iovec){len ? ib_bytes[i] : NULL, len};
    }
    return ib_iov;
}

Test(serialize, get_takes_a_batch_one_by_one_in_order, .timeout = 10)
{
    for (unsigned fl = 0; fl <= SHMQ_ALL; fl++) {
        shmq_t *q = make(64, 8192, 64, 0);
        put_u32(q, 1000);
        cr_assert_eq(shmq_put_many(q, interplay_batch(), IB_N, fl, SHMQ_NOWAIT),
                     IB_N, "put_many (flags %u)", fl);
        put_u32(q, 1001);
        cr_assert_eq(get_u32(q), 1000, "before the batch");
        for (uint32_t i = 0; i < IB_N; i++) {
            unsigned char out[64];
            size_t len = SIZE_MAX;
            cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0,
                         "get %u (flags %u)", i, fl);
            cr_assert_eq(len, ib_iov[i].iov_len, "len of %u", i);
            cr_assert(th_check(out, len, i), "content of %u", i);
            cr_assert_eq(shmq_qsize(q), IB_N - i, "qsize after %u gets", i + 1);
        }
        cr_assert_eq(get_u32(q), 1001, "after the batch");
        cr_assert(shmq_empty(q), "extra");
        cr_assert_eq(fill_empty(q), 64, "room back");
        shmq_release(q);
    }
}

Test(serialize, qsize_counts_the_messages_of_a_batch, .timeout = 10)
{
    static const size_t ns[] = {1, 2, 7, 20, 64};
    static struct iovec zeros[64];
    for (unsigned fl = 0; fl <= SHMQ_ALL; fl++) {
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            size_t n = ns[k];
            shmq_t *q = make(64, 8192, 64, 0);
            const struct iovec *msgs = n <= IB_N ? interplay_batch() : zeros;
            cr_assert_eq(shmq_put_many(q, msgs, n, fl, SHMQ_NOWAIT), (int)n,
                         "put_many %zu (flags %u)", n, fl);
            cr_assert_eq(shmq_qsize(q), n, "qsize after put_many of %zu", n);
            cr_assert(!shmq_empty(q), "empty");
            cr_assert_eq(shmq_full(q), n == 64, "full with %zu of 64", n);
            /* Taking part of it counts down by the messages taken. */
            uint64_t buf[128];
            struct iovec out[4];
            int r = shmq_get_many(q, buf, sizeof buf, out, 4, SHMQ_NOWAIT);
            cr_assert_eq(r, n < 4 ? (int)n : 4, "get_many of %zu", n);
            cr_assert_eq(shmq_qsize(q), n - (size_t)r, "qsize after get_many");
            shmq_release(q);
        }
    }
}

/* Every message of a batch borrowed while the others of it stay
 * borrowed (and one taken by get in between), then ended in reverse. */
Test(serialize, borrows_of_every_message_of_a_batch, .timeout = 10)
{
    for (unsigned fl = 0; fl <= SHMQ_ALL; fl++) {
        shmq_t *q = make(32, 8192, 64, 0);
        cr_assert_eq(shmq_put_many(q, interplay_batch(), IB_N, fl, SHMQ_NOWAIT),
                     IB_N, "put_many (flags %u)", fl);
        struct shmq_msg g[IB_N];
        for (uint32_t i = 0; i < IB_N; i++) {
            if (i == 5) { /* a plain get between borrows of the batch */
                unsigned char out[64];
                size_t len;
                cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0,
                             "get 5");
                cr_assert(len == ib_iov[5].iov_len && th_check(out, len, 5),
                          "message 5");
                continue;
            }
            cr_assert_eq(shmq_get_begin(q, &g[i], SHMQ_NOWAIT), 0,
                         "borrow %u (flags %u)", i, fl);
            cr_assert_eq(g[i].len, ib_iov[i].iov_len, "len of %u", i);
            cr_assert(aligned8(g[i].data), "borrow %u not aligned", i);
            cr_assert(th_check(g[i].data, g[i].len, i), "content of %u", i);
            cr_assert_eq(shmq_qsize(q), IB_N - 1 - i, "qsize");
        }
        /* All open at once: each still reads as it did. */
        for (uint32_t i = 0; i < IB_N; i++)
            cr_assert(i == 5 || th_check(g[i].data, g[i].len, i),
                      "content of %u while all are borrowed", i);
        cr_assert(shmq_empty(q), "empty");
        /* 19 borrowed hold their room, and message 5's comes back in
         * ring order, after borrows 0 to 4: 12 more fit. */
        cr_assert_eq(shmq_put_many(q, values(0, 14), 14, 0, SHMQ_NOWAIT), 12,
                     "room next to 19 open borrows");
        for (uint32_t i = IB_N; i-- > 0;) {
            if (i == 5)
                continue;
            struct shmq_msg copy = g[i];
            cr_assert_eq(shmq_get_end(q, &g[i]), 0, "get_end %u", i);
            cr_assert_eq(shmq_get_end(q, &copy), -EINVAL, "again %u", i);
        }
        for (uint32_t i = 0; i < 12; i++)
            cr_assert_eq(get_u32(q), i, "the 12");
        cr_assert_eq(fill_empty(q), 32, "room back after the borrows");
        shmq_release(q);
    }
}

/* Batches of random sizes (1..300) and lengths (0..600 bytes) from two
 * producer processes, taken by get_many in two consumer processes:
 * every message exactly once, intact, in its producer's order. */
enum { GB_PROD = 2, GB_CONS = 2, GB_MAXLEN = 600, GB_MAXN = 300 };

/* The length of message seq of producer p. */
static size_t gb_len(uint32_t p, uint32_t seq)
{
    uint64_t s = (uint64_t)p << 32 | seq;
    return (size_t)(th_rand_next(&s) % (GB_MAXLEN + 1));
}

/* Messages of 8 bytes or more start with (producer, seq); shorter ones
 * are counted per length. */
static void gb_fill(unsigned char *b, uint32_t p, uint32_t seq)
{
    size_t len = gb_len(p, seq);
    if (len < 8) {
        th_fill(b, len, 0xabc);
        return;
    }
    memcpy(b, &p, 4);
    memcpy(b + 4, &seq, 4);
    for (size_t i = 8; i < len; i++)
        b[i] = th_pattern_byte(p, seq, i);
}

struct gb {
    shmq_t *q;
    uint32_t id, per;
    uint8_t *seen;    /* shared: [GB_PROD][per] */
    uint64_t *shorts; /* shared: [8] messages of each short length */
};

static int gb_producer(void *arg)
{
    struct gb *a = arg;
    static unsigned char bytes[GB_MAXN][GB_MAXLEN];
    static struct iovec iov[GB_MAXN];
    uint64_t rng = 31 + a->id;
    for (uint32_t seq = 0; seq < a->per;) {
        size_t n = 1 + (size_t)th_rand_below(&rng, GB_MAXN);
        if (n > a->per - seq)
            n = a->per - seq;
        for (size_t i = 0; i < n; i++) {
            gb_fill(bytes[i], a->id, seq + (uint32_t)i);
            size_t len = gb_len(a->id, seq + (uint32_t)i);
            iov[i] = (struct iovec){len ? bytes[i] : NULL, len};
        }
        unsigned fl = th_rand_below(&rng, 2) ? SHMQ_ALL : 0;
        for (size_t done = 0; done < n;) {
            int r = shmq_put_many(a->q, iov + done, n - done, fl, 10 * TH_SEC);
            TH_CHECK(r > 0 && (!fl || (size_t)r == n));
            done += (size_t)r;
        }
        seq += (uint32_t)n;
    }
    return 0;
}

static int gb_consumer(void *arg)
{
    struct gb *a = arg;
    static _Alignas(8) unsigned char buf[1 << 16];
    static struct iovec msgs[GB_MAXN];
    uint64_t rng = 77 + a->id;
    uint32_t last[GB_PROD] = {0};
    bool any[GB_PROD] = {false};
    for (;;) {
        size_t cap =
            GB_MAXLEN + (size_t)th_rand_below(&rng, sizeof buf - GB_MAXLEN);
        size_t max = 1 + (size_t)th_rand_below(&rng, GB_MAXN);
        int r = shmq_get_many(a->q, buf, cap, msgs, max, 10 * TH_SEC);
        if (r == -EPIPE)
            return 0;
        TH_CHECK(r >= 1 && (size_t)r <= max);
        for (int i = 0; i < r; i++) {
            const unsigned char *b = msgs[i].iov_base;
            size_t len = msgs[i].iov_len;
            TH_CHECK((size_t)(b - buf) % 8 == 0 && (size_t)(b - buf) <= cap &&
                     len <= cap - (size_t)(b - buf));
            if (len < 8) {
                TH_CHECK(th_check(b, len, 0xabc));
                __atomic_fetch_add(&a->shorts[len], 1, __ATOMIC_RELAXED);
                continue;
            }
            uint32_t p, seq;
            memcpy(&p, b, 4);
            memcpy(&seq, b + 4, 4);
            TH_CHECK(p < GB_PROD && seq < a->per);
            TH_CHECK_EQ(len, gb_len(p, seq));
            for (size_t k = 8; k < len; k++)
                TH_CHECK(b[k] == th_pattern_byte(p, seq, k));
            TH_CHECK(!any[p] || seq > last[p]); /* producer order */
            any[p] = true;
            last[p] = seq;
            TH_CHECK_EQ(__atomic_fetch_add(&a->seen[p * a->per + seq], 1,
                                           __ATOMIC_RELAXED),
                        0);
        }
    }
}

Test(serialize, get_many_splits_batches_across_consumer_processes,
     .timeout = 120)
{
    uint32_t per = (uint32_t)th_scaled(20000, 2000);
    shmq_t *q = make(1024, 1 << 18, GB_MAXLEN, 0);
    size_t seen_size = (size_t)GB_PROD * per;
    uint8_t *seen = th_shared_alloc(seen_size);
    uint64_t *shorts = th_shared_alloc(8 * sizeof(uint64_t));
    cr_assert(seen && shorts, "shared memory");
    struct gb a[GB_PROD + GB_CONS];
    pid_t pp[GB_PROD], cp[GB_CONS];
    for (uint32_t i = 0; i < GB_CONS; i++) {
        a[GB_PROD + i] = (struct gb){q, i, per, seen, shorts};
        cp[i] = th_fork(gb_consumer, &a[GB_PROD + i]);
    }
    for (uint32_t i = 0; i < GB_PROD; i++) {
        a[i] = (struct gb){q, i, per, seen, shorts};
        pp[i] = th_fork(gb_producer, &a[i]);
    }
    th_assert_children_ok_within(pp, GB_PROD, 90 * TH_SEC);
    shmq_close(q);
    th_assert_children_ok_within(cp, GB_CONS, 30 * TH_SEC);
    uint64_t want_short[8] = {0};
    for (uint32_t p = 0; p < GB_PROD; p++) {
        for (uint32_t s = 0; s < per; s++) {
            size_t len = gb_len(p, s);
            if (len < 8)
                want_short[len]++;
            else
                cr_assert_eq(seen[p * per + s], 1,
                             "producer %u message %u taken %u times", p, s,
                             seen[p * per + s]);
        }
    }
    for (int l = 0; l < 8; l++)
        cr_assert_eq(shorts[l], want_short[l],
                     "%llu messages of %d bytes taken, %llu put",
                     (unsigned long long)shorts[l], l,
                     (unsigned long long)want_short[l]);
    th_shared_free(seen, seen_size);
    th_shared_free(shorts, 8 * sizeof(uint64_t));
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* SIGKILL of holders while others go on; a kill storm with put/get     */
/* ------------------------------------------------------------------ */

enum { KH_BATCH = 8, KH_MAXSIZE = 64 };

struct kh_shared {
    uint8_t seen[1 << 14];
    uint8_t batch_seen[KH_BATCH];
    int bad; /* atomic */
};

struct kh {
    shmq_t *q;
    struct kh_shared *sh;
    uint32_t n; /* stream messages */
    int ready;  /* pipe write end */
};

/* Holds borrows of 3 messages of a put_many batch and 2 reservations. */
static int kh_holder(void *p)
{
    struct kh *k = p;
    struct shmq_msg g[3], r[2];
    for (int i = 0; i < 3; i++)
        TH_CHECK_EQ(shmq_get_begin(k->q, &g[i], SHMQ_NOWAIT), 0);
    for (int i = 0; i < 2; i++) {
        TH_CHECK_EQ(shmq_put_begin(k->q, 16, &r[i], SHMQ_NOWAIT), 0);
        memset(r[i].data, 0xcd, 16);
    }
    TH_CHECK(write(k->ready, "h", 1) == 1);
    for (;;)
        pause();
}

/* Waits in an SHMQ_ALL batch of maxsize messages: it cannot fit while
 * the holder's records are there. */
static int kh_waiter(void *p)
{
    struct kh *k = p;
    static uint32_t v[KH_MAXSIZE];
    static struct iovec iov[KH_MAXSIZE];
    for (uint32_t i = 0; i < KH_MAXSIZE; i++) {
        v[i] = 0xc000 + i;
        iov[i] = (struct iovec){&v[i], sizeof v[i]};
    }
    shmq_put_many(k->q, iov, KH_MAXSIZE, SHMQ_ALL, SHMQ_FOREVER);
    return 1; /* it should have been killed while waiting */
}

static int kh_producer(void *p)
{
    struct kh *k = p;
    uint64_t rng = 4;
    static unsigned char msg[8][S_MAXLEN];
    struct iovec iov[8];
    for (uint32_t seq = 0; seq < k->n;) {
        size_t n = 1;
        int r;
        switch (th_rand_below(&rng, 4)) {
        case 0: {
            size_t len = stress_len(&rng);
            th_payload_fill(msg[0], len, 0, seq);
            r = shmq_put(k->q, msg[0], len, 10 * TH_SEC);
            break;
        }
        case 1: {
            size_t len = stress_len(&rng);
            th_payload_fill(msg[0], len, 0, seq);
            iov[0] = (struct iovec){msg[0], 7};
            iov[1] = (struct iovec){msg[0] + 7, len - 7};
            r = shmq_putv(k->q, iov, 2, 10 * TH_SEC);
            break;
        }
        default: {
            n = 1 + (size_t)th_rand_below(&rng, 8);
            if (n > k->n - seq)
                n = k->n - seq;
            for (size_t i = 0; i < n; i++) {
                size_t len = stress_len(&rng);
                th_payload_fill(msg[i], len, 0, seq + (uint32_t)i);
                iov[i] = (struct iovec){msg[i], len};
            }
            unsigned fl = th_rand_below(&rng, 2) ? SHMQ_ALL : 0;
            for (size_t done = 0; done < n;) {
                int put =
                    shmq_put_many(k->q, iov + done, n - done, fl, 10 * TH_SEC);
                TH_CHECK(put > 0 && (!fl || (size_t)put == n));
                done += (size_t)put;
            }
            r = 0;
        }
        }
        TH_CHECK_EQ(r, 0);
        seq += (uint32_t)n;
    }
    return 0;
}

static void kh_record(struct kh_shared *sh, const void *data, size_t len)
{
    uint32_t v, prod, seq;
    bool ok;
    if (len == 4) {
        memcpy(&v, data, 4);
        ok = v >= 0xb000 && v < 0xb000 + KH_BATCH &&
             __atomic_fetch_add(&sh->batch_seen[v - 0xb000], 1,
                                __ATOMIC_RELAXED) == 0;
    } else {
        ok = th_payload_check(data, len, &prod, &seq) && prod == 0 &&
             seq < sizeof sh->seen &&
             __atomic_fetch_add(&sh->seen[seq], 1, __ATOMIC_RELAXED) == 0;
    }
    if (!ok)
        __atomic_store_n(&sh->bad, 1, __ATOMIC_RELEASE);
}

/* Takes the stream and the batch's other messages, every way; a wait
 * of 10 s (a wedge) fails it. */
static int kh_consumer(void *p)
{
    struct kh *k = p;
    uint64_t rng = 5;
    static _Alignas(8) unsigned char buf[2048];
    struct iovec msgs[8];
    for (uint32_t got = 0; got < k->n + KH_BATCH - 3;) {
        switch (th_rand_below(&rng, 3)) {
        case 0: {
            size_t len;
            TH_CHECK_EQ(shmq_get(k->q, buf, sizeof buf, &len, 10 * TH_SEC), 0);
            kh_record(k->sh, buf, len);
            got++;
            break;
        }
        case 1: {
            int r = shmq_get_many(k->q, buf, sizeof buf, msgs, 8, 10 * TH_SEC);
            TH_CHECK(r >= 1);
            for (int i = 0; i < r; i++)
                kh_record(k->sh, msgs[i].iov_base, msgs[i].iov_len);
            got += (uint32_t)r;
            break;
        }
        default: {
            struct shmq_msg g;
            TH_CHECK_EQ(shmq_get_begin(k->q, &g, 10 * TH_SEC), 0);
            kh_record(k->sh, g.data, g.len);
            TH_CHECK_EQ(shmq_get_end(k->q, &g), 0);
            got++;
        }
        }
    }
    return 0;
}

Test(serialize, killed_holders_of_batch_messages_while_others_go_on,
     .timeout = 60)
{
    shmq_t *q = make(KH_MAXSIZE, 1 << 16, 256, 0);
    struct kh_shared *sh = th_shared_alloc(sizeof *sh);
    cr_assert(sh, "shared memory");
    static uint32_t v[KH_BATCH];
    struct iovec iov[KH_BATCH];
    for (uint32_t i = 0; i < KH_BATCH; i++) {
        v[i] = 0xb000 + i;
        iov[i] = (struct iovec){&v[i], sizeof v[i]};
    }
    cr_assert_eq(shmq_put_many(q, iov, KH_BATCH, SHMQ_ALL, SHMQ_NOWAIT),
                 KH_BATCH, "the batch");
    int fds[2];
    cr_assert_eq(pipe(fds), 0, "pipe");
    struct kh k = {q, sh, (uint32_t)th_scaled(8000, 1000), fds[1]};
    pid_t holder = th_fork(kh_holder, &k);
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1, "holder ready");
    close(fds[0]);
    close(fds[1]);
    pid_t waiter = th_fork(kh_waiter, &k);
    cr_assert(th_wait_sleeping(waiter, waiter, 5 * TH_SEC), "waiter asleep");
    pid_t prod = th_fork(kh_producer, &k), cons = th_fork(kh_consumer, &k);
    /* The stream goes past the holder's records until the ring comes
     * round to them; then it waits for them, until the kill. */
    th_sleep_ns(100 * TH_MS);
    kill(waiter, SIGKILL);
    int st = th_wait_pid(waiter, 10 * TH_SEC);
    cr_assert(st >= 0 && WIFSIGNALED(st), "waiter killed while waiting");
    kill(holder, SIGKILL);
    st = th_wait_pid(holder, 10 * TH_SEC);
    cr_assert(st >= 0 && WIFSIGNALED(st), "holder killed");
    th_assert_child_ok_within(prod, 30 * TH_SEC);
    th_assert_child_ok_within(cons, 30 * TH_SEC);
    cr_assert_eq(__atomic_load_n(&sh->bad, __ATOMIC_ACQUIRE), 0,
                 "a torn, repeated or foreign message was taken");
    for (uint32_t i = 0; i < k.n; i++)
        cr_assert_eq(sh->seen[i], 1, "stream message %u taken %u times", i,
                     sh->seen[i]);
    for (uint32_t i = 0; i < KH_BATCH; i++)
        cr_assert_eq(sh->batch_seen[i], i < 3 ? 0 : 1,
                     "batch message %u taken %u times", i, sh->batch_seen[i]);
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, NULL, 0, &len), -EAGAIN, "extra");
    /* The room of every dead record comes back. */
    int r = shmq_put_many(q, values(0, KH_MAXSIZE), KH_MAXSIZE, SHMQ_ALL,
                          5 * TH_SEC);
    cr_assert_eq(r, KH_MAXSIZE, "maxsize messages after the kills: %d", r);
    for (uint32_t i = 0; i < KH_MAXSIZE; i++)
        cr_assert_eq(get_u32(q), i, "order");
    th_shared_free(sh, sizeof *sh);
    shmq_release(q);
}

/* Producers and consumers mixing put/get with every new call, SIGKILLed
 * at random and replaced: no message torn, repeated or made up; none
 * lost beyond what the killed consumers held (at most one get_many of
 * 8 each) and what killed producers were putting; then the whole room
 * is there. */
enum {
    KS_SLOTS = 4,
    KS_ROUNDS = 40,
    KS_IDS = KS_ROUNDS + KS_SLOTS,
    KS_SEQS = 1 << 13,
    KS_MAXSIZE = 32,
    KS_HOLD = 8
};

struct ks_shared {
    uint8_t seen[KS_IDS][KS_SEQS];
    uint32_t confirmed[KS_IDS]; /* atomic: seqs whose put returned */
    int bad;                    /* atomic */
};

struct ks_worker {
    shmq_t *q;
    struct ks_shared *sh;
    uint32_t id;
};

/* One put of seq.. by one of the six ways; how many messages it put
 * (0: an aborted reservation), or -1. */
static int ks_put(struct ks_worker *w, uint64_t *rng, uint32_t seq)
{
    static unsigned char msg[8][S_MAXLEN];
    struct iovec iov[8];
    size_t len = stress_len(rng);
    struct shmq_msg m;
    switch (th_rand_below(rng, 6)) {
    case 0:
        th_payload_fill(msg[0], len, w->id, seq);
        return shmq_put(w->q, msg[0], len, SHMQ_FOREVER) == 0 ? 1 : -1;
    case 1:
        th_payload_fill(msg[0], len, w->id, seq);
        iov[0] = (struct iovec){msg[0], 3};
        iov[1] = (struct iovec){msg[0] + 3, len - 3};
        return shmq_putv(w->q, iov, 2, SHMQ_FOREVER) == 0 ? 1 : -1;
    case 2:
        if (shmq_put_begin(w->q, S_MAXLEN, &m, SHMQ_FOREVER) != 0)
            return -1;
        th_payload_fill(m.data, len, w->id, seq);
        return shmq_put_commit(w->q, &m, len) == 0 ? 1 : -1;
    case 3:
        if (shmq_put_begin(w->q, len, &m, SHMQ_FOREVER) != 0)
            return -1;
        memset(m.data, 0xee, len);
        return shmq_put_abort(w->q, &m) == 0 ? 0 : -1;
    default: {
        size_t n = 1 + (size_t)th_rand_below(rng, 8);
        for (size_t i = 0; i < n; i++) {
            size_t l = stress_len(rng);
            th_payload_fill(msg[i], l, w->id, seq + (uint32_t)i);
            iov[i] = (struct iovec){msg[i], l};
        }
        unsigned fl = th_rand_below(rng, 2) ? SHMQ_ALL : 0;
        /* Without flags the count may be short only at a deadline. */
        int r = shmq_put_many(w->q, iov, n, fl, SHMQ_FOREVER);
        return r == (int)n ? r : -1;
    }
    }
}

static int ks_producer(void *p)
{
    struct ks_worker *w = p;
    uint64_t rng = 1000u + w->id;
    for (uint32_t seq = 0; seq + 8 <= KS_SEQS;) {
        int n = ks_put(w, &rng, seq);
        TH_CHECK(n >= 0);
        seq += (uint32_t)n;
        __atomic_store_n(&w->sh->confirmed[w->id], seq, __ATOMIC_RELEASE);
    }
    for (;;)
        pause();
}

static void ks_record(struct ks_shared *sh, const void *data, size_t len)
{
    uint32_t prod, seq;
    if (!th_payload_check(data, len, &prod, &seq) || prod >= KS_IDS ||
        seq >= KS_SEQS ||
        __atomic_fetch_add(&sh->seen[prod][seq], 1, __ATOMIC_RELAXED) != 0)
        __atomic_store_n(&sh->bad, 1, __ATOMIC_RELEASE);
}

static int ks_consumer(void *p)
{
    struct ks_worker *w = p;
    uint64_t rng = 2000u + w->id;
    static _Alignas(8) unsigned char buf[2048];
    struct iovec msgs[KS_HOLD];
    for (;;) {
        switch (th_rand_below(&rng, 3)) {
        case 0: {
            size_t len;
            TH_CHECK_EQ(shmq_get(w->q, buf, sizeof buf, &len, SHMQ_FOREVER), 0);
            ks_record(w->sh, buf, len);
            break;
        }
        case 1: {
            size_t max = 1 + (size_t)th_rand_below(&rng, KS_HOLD);
            int n =
                shmq_get_many(w->q, buf, sizeof buf, msgs, max, SHMQ_FOREVER);
            TH_CHECK(n >= 1);
            for (int i = 0; i < n; i++)
                ks_record(w->sh, msgs[i].iov_base, msgs[i].iov_len);
            break;
        }
        default: {
            struct shmq_msg g;
            TH_CHECK_EQ(shmq_get_begin(w->q, &g, SHMQ_FOREVER), 0);
            ks_record(w->sh, g.data, g.len);
            TH_CHECK_EQ(shmq_get_end(w->q, &g), 0);
        }
        }
    }
}

Test(serialize, kill_storm_mixes_every_call_with_put_and_get, .timeout = 90)
{
    shmq_t *q = make(KS_MAXSIZE, 4096, 256, 0);
    struct ks_shared *sh = th_shared_alloc(sizeof *sh);
    cr_assert(sh, "shared memory");
    uint64_t rng = 11;
    static struct ks_worker w[KS_IDS];
    pid_t pid[KS_SLOTS];
    uint32_t next_id = 0, consumer_kills = 0;
    /* Slots 0 and 1 produce, 2 and 3 consume. */
    for (int s = 0; s < KS_SLOTS; s++) {
        w[next_id] = (struct ks_worker){q, sh, next_id};
        pid[s] = th_fork(s < 2 ? ks_producer : ks_consumer, &w[next_id++]);
    }
    for (int round = 0; round < KS_ROUNDS; round++) {
        th_sleep_ns((int64_t)(2 + th_rand_below(&rng, 20)) * TH_MS);
        int s = (int)th_rand_below(&rng, KS_SLOTS);
        kill_and_reap(pid[s]);
        consumer_kills += s >= 2;
        w[next_id] = (struct ks_worker){q, sh, next_id};
        pid[s] = th_fork(s < 2 ? ks_producer : ks_consumer, &w[next_id++]);
    }
    th_sleep_ns(20 * TH_MS);
    for (int s = 0; s < KS_SLOTS; s++)
        kill_and_reap(pid[s]);
    consumer_kills += 2;
    cr_assert_eq(__atomic_load_n(&sh->bad, __ATOMIC_ACQUIRE), 0,
                 "a consumer took a torn, repeated or made-up message");
    /* What is left is intact and new. */
    static unsigned char buf[256];
    size_t len;
    while (shmq_get(q, buf, sizeof buf, &len, 200 * TH_MS) == 0)
        ks_record(sh, buf, len);
    cr_assert_eq(sh->bad, 0, "a torn or repeated message left in the queue");
    /* Lost: put (the put returned) and never taken. */
    size_t lost = 0, total = 0;
    for (uint32_t id = 0; id < next_id; id++) {
        uint32_t conf = __atomic_load_n(&sh->confirmed[id], __ATOMIC_ACQUIRE);
        for (uint32_t s = 0; s < KS_SEQS; s++) {
            total += sh->seen[id][s];
            if (s < conf && sh->seen[id][s] == 0)
                lost++;
            /* Beyond what was put or being put: made up. */
            cr_assert(s < conf + 8 || sh->seen[id][s] == 0,
                      "producer %u: message %u taken, only %u put", id, s,
                      conf);
        }
    }
    cr_log_info("kill storm: %zu messages, %zu lost, %u consumer kills", total,
                lost, consumer_kills);
    cr_assert_gt(total, 1000, "only %zu messages went through", total);
    cr_assert_leq(lost, (size_t)consumer_kills * KS_HOLD,
                  "%zu messages lost, %u consumer kills (at most %d each)",
                  lost, consumer_kills, KS_HOLD);
    /* No wedge: the whole room, in one all-or-none batch. */
    int r = shmq_put_many(q, values(0, KS_MAXSIZE), KS_MAXSIZE, SHMQ_ALL,
                          5 * TH_SEC);
    cr_assert_eq(r, KS_MAXSIZE, "maxsize messages after the storm: %d", r);
    for (uint32_t i = 0; i < KS_MAXSIZE; i++)
        cr_assert_eq(get_u32(q), i, "order");
    th_shared_free(sh, sizeof *sh);
    shmq_release(q);
}

/* Short commits racing puts: reservations of the whole max_message
 * committed short shrink their records while other producers claim the
 * records after them (ring.c, "Short commits"). A claim that summed a
 * size before it shrank must find its true position again, or its
 * message lands on top of another: every payload is checked, with its
 * producer's order. */
struct shrink_race {
    shmq_t *q;
    uint32_t id, n;
};

static int shrink_producer(void *p)
{
    const struct shrink_race *s = p;
    uint64_t rng = 0x5eed + s->id;
    unsigned char msg[64];
    for (uint32_t seq = 0; seq < s->n; seq++) {
        size_t len = TH_PAYLOAD_MIN + (size_t)th_rand_below(&rng, 40);
        if (s->id % 2) { /* reserve the largest, commit short */
            struct shmq_msg m;
            TH_CHECK_EQ(
                shmq_put_begin(s->q, shmq_max_message(s->q), &m, 10 * TH_SEC),
                0);
            th_payload_fill(m.data, len, s->id, seq);
            TH_CHECK_EQ(shmq_put_commit(s->q, &m, len), 0);
        } else {
            th_payload_fill(msg, len, s->id, seq);
            TH_CHECK_EQ(shmq_put(s->q, msg, len, 10 * TH_SEC), 0);
        }
    }
    return 0;
}

static int shrink_consumer(void *p)
{
    const struct shrink_race *s = p;
    uint32_t last[8];
    memset(last, 0xff, sizeof last);
    unsigned char buf[256];
    for (;;) {
        size_t len;
        int r = shmq_get(s->q, buf, sizeof buf, &len, 10 * TH_SEC);
        if (r == -EPIPE)
            return 0;
        TH_CHECK_EQ(r, 0);
        uint32_t prod, seq;
        TH_CHECK(th_payload_check(buf, len, &prod, &seq) && prod < 8);
        TH_CHECK(last[prod] == UINT32_MAX || seq > last[prod]);
        last[prod] = seq;
    }
}

Test(serialize, short_commits_racing_puts, .timeout = 120)
{
    enum { PRODUCERS = 6, CONSUMERS = 1 };
    uint32_t per = (uint32_t)th_scaled(300000, 5000);
    shmq_t *q = make(64, 4096, 256, 0);
    struct shrink_race prod[PRODUCERS], cons[CONSUMERS];
    pid_t pp[PRODUCERS], cp[CONSUMERS];
    for (uint32_t i = 0; i < CONSUMERS; i++) {
        cons[i] = (struct shrink_race){q, i, 0};
        cp[i] = th_fork(shrink_consumer, &cons[i]);
    }
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        prod[i] = (struct shrink_race){q, i, per};
        pp[i] = th_fork(shrink_producer, &prod[i]);
    }
    th_assert_children_ok_within(pp, PRODUCERS, 90 * TH_SEC);
    shmq_close(q);
    th_assert_children_ok_within(cp, CONSUMERS, 30 * TH_SEC);
    shmq_release(q);
}
