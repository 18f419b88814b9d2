/* SPDX-License-Identifier: MIT */
/*
 * test_stall.c - a process stopped in the middle of its own put or get
 * holds back nobody's messages: only its own record's room and, since
 * room comes back in ring order, the room after it (DESIGN.md, "A
 * message is there for gets as soon as its put returns").
 *
 * Deterministic: a child claims a record through the ring's own steps
 * and stops itself (SIGSTOP) exactly between claim and commit, or takes
 * a message with get_begin and stops before get_end.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "helpers.h"
#include "internal.h"
#include "liveness.h"
#include "queue.h"
#include "ring.h"

static shmq_t *make(size_t maxsize, unsigned flags)
{
    shmq_t *q = NULL;
    struct shmq_config c = {
        .maxsize = maxsize, .max_message = 256, .flags = flags};
    cr_assert_eq(shmq_create(&q, &c), 0);
    return q;
}

struct stalled_put {
    shmq_t *q;
    const char *msg;
    int want; /* what committing must give once continued */
};

/* Child: a put of msg stopped between its claim and its commit. */
static int put_then_stop(void *arg)
{
    struct stalled_put *p = arg;
    struct ring_ref ref;
    struct ring_stall st;
    size_t len = strlen(p->msg);
    TH_CHECK_EQ(shmq__liveness_ensure(p->q), 0);
    TH_CHECK_EQ(shmq__ring_claim(p->q, len, &ref, &st), 0);
    memcpy(ring_addr(p->q, ref.pos), p->msg, len);
    raise(SIGSTOP);
    TH_CHECK_EQ(shmq__ring_commit(p->q, &ref, len), 0);
    TH_CHECK_EQ(shmq__put_settle(p->q, &ref), p->want);
    return 0;
}

/* Child: takes a message in place and stops before giving it back. */
static int borrow_then_stop(void *arg)
{
    shmq_t *q = arg;
    struct shmq_msg m;
    TH_CHECK_EQ(shmq_get_begin(q, &m, SHMQ_NOWAIT), 0);
    raise(SIGSTOP);
    TH_CHECK_EQ(shmq_get_end(q, &m), 0);
    return 0;
}

/* Fork fn and wait until it has stopped itself. */
static pid_t start_stopped(th_child_fn fn, void *arg)
{
    pid_t pid = th_fork(fn, arg);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, WUNTRACED), pid);
    cr_assert(WIFSTOPPED(st), "child should have stopped (status %d)", st);
    return pid;
}

static void resume_and_reap(pid_t pid)
{
    cr_assert_eq(kill(pid, SIGCONT), 0);
    th_assert_child_ok_within(pid, 10 * TH_SEC);
}

static void expect_get(shmq_t *q, const char *want, int64_t timeout_ns)
{
    char buf[256];
    size_t len = 0;
    int rc = shmq_get(q, buf, sizeof buf, &len, timeout_ns);
    cr_assert_eq(rc, 0, "get of \"%s\": %s", want, shmq_strerror(rc));
    cr_assert_eq(len, strlen(want), "length of \"%s\"", want);
    cr_assert_arr_eq(buf, want, len);
}

static void expect_empty_now(shmq_t *q)
{
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN);
    cr_assert_eq(shmq_qsize(q), 0);
    cr_assert(shmq_empty(q));
}

Test(stall, stopped_writer_holds_back_no_message, .timeout = 30)
{
    shmq_t *q = make(8, 0);
    struct stalled_put p = {q, "a", 0};
    pid_t pid = start_stopped(put_then_stop, &p);

    /* A record being written is not a message: qsize and get agree. */
    expect_empty_now(q);
    cr_assert_eq(shmq_put(q, "b", 1, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_qsize(q), 1, "the message put after the stalled one");
    int64_t t0 = th_now_ns();
    expect_get(q, "b", SHMQ_NOWAIT);
    cr_assert_lt(th_now_ns() - t0, 100 * TH_MS, "no wait for the writer");
    for (int i = 0; i < 6; i++) { /* and more, up to the room it holds */
        char m[8];
        snprintf(m, sizeof m, "m%d", i);
        cr_assert_eq(shmq_put(q, m, strlen(m), SHMQ_NOWAIT), 0, "put %d", i);
        expect_get(q, m, SHMQ_NOWAIT);
    }
    expect_empty_now(q);
    char buf[8];
    size_t len;
    t0 = th_now_ns();
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, 50 * TH_MS), -ETIMEDOUT);
    cr_assert_lt(th_now_ns() - t0, 2 * TH_SEC);

    resume_and_reap(pid); /* commits "a", late: consumers went past it */
    cr_assert_eq(shmq_qsize(q), 1);
    expect_get(q, "a", SHMQ_NOWAIT);
    expect_empty_now(q);
    cr_assert_eq(shmq_put(q, "d", 1, SHMQ_NOWAIT), 0);
    expect_get(q, "d", SHMQ_NOWAIT);
    shmq_release(q);
}

Test(stall, late_message_comes_before_later_puts, .timeout = 30)
{
    shmq_t *q = make(16, 0);
    struct stalled_put p = {q, "late", 0};
    pid_t pid = start_stopped(put_then_stop, &p);
    cr_assert_eq(shmq_put(q, "b", 1, SHMQ_NOWAIT), 0);
    expect_get(q, "b", SHMQ_NOWAIT); /* consumers pass the stalled record */
    resume_and_reap(pid);            /* its put returns now */
    /* Puts that begin after it returned: taken after it. */
    cr_assert_eq(shmq_put(q, "c", 1, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_put(q, "d", 1, SHMQ_NOWAIT), 0);
    expect_get(q, "late", SHMQ_NOWAIT);
    expect_get(q, "c", SHMQ_NOWAIT);
    expect_get(q, "d", SHMQ_NOWAIT);
    expect_empty_now(q);
    shmq_release(q);
}

Test(stall, stopped_writer_holds_its_room_and_the_room_after, .timeout = 30)
{
    const size_t maxsize = 4;
    shmq_t *q = make(maxsize, 0);
    struct stalled_put p = {q, "a", 0};
    pid_t pid = start_stopped(put_then_stop, &p);
    /* The others put and take maxsize - 1 messages past it... */
    for (size_t i = 0; i < maxsize - 1; i++) {
        cr_assert_eq(shmq_put(q, "x", 1, SHMQ_NOWAIT), 0, "put %zu", i);
        expect_get(q, "x", SHMQ_NOWAIT);
    }
    /* ...then the room after it is held until it lands. */
    cr_assert(shmq_full(q));
    cr_assert_eq(shmq_put(q, "y", 1, SHMQ_NOWAIT), -EAGAIN);
    resume_and_reap(pid);
    expect_get(q, "a", SHMQ_NOWAIT);
    cr_assert_not(shmq_full(q));
    cr_assert_eq(shmq_put(q, "y", 1, SHMQ_NOWAIT), 0);
    expect_get(q, "y", SHMQ_NOWAIT);
    shmq_release(q);
}

Test(stall, stopped_reader_holds_back_no_message, .timeout = 30)
{
    shmq_t *q = make(4, 0);
    cr_assert_eq(shmq_put(q, "x", 1, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_put(q, "y", 1, SHMQ_NOWAIT), 0);
    pid_t pid = start_stopped(borrow_then_stop, q); /* holds "x" */
    cr_assert_eq(shmq_qsize(q), 1);
    expect_get(q, "y", SHMQ_NOWAIT);
    /* Its room and the room after it: 4 - 2 puts fit, then full. */
    cr_assert_eq(shmq_put(q, "z1", 2, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_put(q, "z2", 2, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_put(q, "z3", 2, SHMQ_NOWAIT), -EAGAIN);
    expect_get(q, "z1", SHMQ_NOWAIT);
    expect_get(q, "z2", SHMQ_NOWAIT);
    expect_empty_now(q);
    resume_and_reap(pid);
    cr_assert_eq(shmq_put(q, "z3", 2, 5 * TH_SEC), 0);
    expect_get(q, "z3", SHMQ_NOWAIT);
    shmq_release(q);
}

Test(stall, writer_killed_after_being_passed_gives_room_back, .timeout = 30)
{
    shmq_t *q = make(4, SHMQ_JOINABLE);
    struct stalled_put p = {q, "a", 0};
    pid_t pid = start_stopped(put_then_stop, &p);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(shmq_put(q, "x", 1, SHMQ_NOWAIT), 0);
        expect_get(q, "x", SHMQ_NOWAIT);
        cr_assert_eq(shmq_task_done(q), 0);
    }
    cr_assert_eq(shmq_put(q, "y", 1, SHMQ_NOWAIT), -EAGAIN);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    int st = th_wait_pid(pid, 10 * TH_SEC);
    cr_assert(WIFSIGNALED(st));
    /* A waiter finds the dead writer holding release and aborts its
     * record within its liveness period (10 ms), far below this bound. */
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put(q, "y", 1, TH_SEC), 0);
    cr_assert_lt(th_now_ns() - t0, 80 * TH_MS, "recovery took %lld ms",
                 (long long)((th_now_ns() - t0) / TH_MS));
    expect_get(q, "y", SHMQ_NOWAIT);
    cr_assert_eq(shmq_task_done(q), 0);
    /* The dead writer's message counts as finished: join returns. */
    cr_assert_eq(shmq_join(q, TH_SEC), 0);
    shmq_release(q);
}

Test(stall, close_with_a_stopped_writer_drains_at_once, .timeout = 30)
{
    shmq_t *q = make(8, 0);
    struct stalled_put p = {q, "a", -EPIPE};
    pid_t pid = start_stopped(put_then_stop, &p);
    cr_assert_eq(shmq_put(q, "b", 1, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_close(q), 0);
    expect_get(q, "b", SHMQ_NOWAIT);
    char buf[8];
    size_t len;
    int64_t t0 = th_now_ns();
    /* A put in flight is not a message: drained now, not when it lands. */
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, 5 * TH_SEC), -EPIPE);
    cr_assert_lt(th_now_ns() - t0, 500 * TH_MS);
    resume_and_reap(pid); /* its commit finds the close: withdrawn */
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, SHMQ_NOWAIT), -EPIPE);
    cr_assert_eq(shmq_qsize(q), 0);
    shmq_release(q);
}

/* Many writers stopped at once, each passed by consumers: every late
 * message arrives once, in order of its writer's commit. */
Test(stall, many_stopped_writers, .timeout = 60)
{
    enum { WRITERS = 6 };
    shmq_t *q = make(64, 0);
    char msgs[WRITERS][8];
    pid_t pids[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        snprintf(msgs[i], sizeof msgs[i], "w%d", i);
        struct stalled_put p = {q, msgs[i], 0};
        pids[i] = start_stopped(put_then_stop, &p);
        cr_assert_eq(shmq_put(q, "n", 1, SHMQ_NOWAIT), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        expect_get(q, "n", SHMQ_NOWAIT);
    expect_empty_now(q);
    for (int i = WRITERS - 1; i >= 0; i--) { /* commit in reverse order */
        resume_and_reap(pids[i]);
        cr_assert_eq(shmq_qsize(q), (size_t)(WRITERS - i));
    }
    /* Late records are taken oldest claim first; all are there. */
    for (int i = 0; i < WRITERS; i++)
        expect_get(q, msgs[i], SHMQ_NOWAIT);
    expect_empty_now(q);
    shmq_release(q);
}

/* A short commit locks the descriptor after its record for three CASes
 * (ring.c, "Short commits"), and that descriptor may still hold a done
 * record that release has not passed. A writer stopped inside that
 * window is simulated by writing the lock: gets must pass the locked
 * record as done (they returned -EBADMSG), puts wait for the locker as
 * for any record in flight, and all goes on once it is unlocked. */
Test(stall, gets_pass_a_record_locked_by_a_short_commit, .timeout = 30)
{
    shmq_t *q = make(8, 0);
    char m[2] = "0";
    for (int i = 0; i < 7; i++) {
        m[0] = (char)('0' + i);
        cr_assert_eq(shmq_put(q, m, 1, SHMQ_NOWAIT), 0);
    }
    expect_get(q, "0", SHMQ_NOWAIT); /* freed, release does not move yet */
    cr_assert_eq(pos_seq(load_acquire(&q->hdr->release.word)), 0,
                 "release still at the freed record");
    struct shmq_desc *d = ring_desc(q, 0);
    uint64_t done = load_acquire(&d->word);
    cr_assert_eq(desc_state(done), DESC_FREE);
    /* What shrink_lock does for the writer of seq 7 (its successor, 8,
     * has the descriptor of 0). */
    store_release(&d->word, desc_with(done, DESC_LOCKED, q->slot));
    /* A handle of its own walks from release (q's cache is past it). */
    shmq_t *other;
    cr_assert_eq(shmq_from_fd(&other, shmq_fd(q)), 0);
    expect_get(other, "1", SHMQ_NOWAIT);
    shmq_release(other);
    cr_assert_eq(shmq_qsize(q), 5, "qsize passes it too");
    cr_assert_eq(shmq_put(q, "7", 1, SHMQ_NOWAIT), 0, "room below the lock");
    cr_assert_eq(shmq_put(q, "8", 1, SHMQ_NOWAIT), -EAGAIN,
                 "room behind the lock waits for its holder");
    store_release(&d->word, done); /* the writer unlocks */
    cr_assert_eq(shmq_put(q, "8", 1, SHMQ_NOWAIT), 0, "and then comes back");
    for (int i = 2; i <= 8; i++) {
        m[0] = (char)('0' + i);
        expect_get(q, m, SHMQ_NOWAIT);
    }
    expect_empty_now(q);
    shmq_release(q);
}
