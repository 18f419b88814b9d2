/* SPDX-License-Identifier: MIT */
/*
 * attempt.c - running a non-blocking step until it succeeds, fails for
 * good, or its deadline passes: spin, then futex sleep, with liveness
 * checks while a record in flight holds the caller up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>

#include "attempt.h"
#include "liveness.h"
#include "wait.h"

/* While a record in flight blocks a waiter, it asks whether the record's
 * owner lives at least this often: the bound on how long a dead process
 * can hold others up once they wait. */
#define LIVENESS_PERIOD_NS 10000000 /* 10 ms */
/* No sleep lasts longer: the wakeup protocol lives in shared memory, and
 * a process that scribbles on an event word could otherwise make a
 * sleeper miss its wakeup for good. With this, it is late at worst. */
#define RECHECK_NS 100000000 /* 100 ms */
/* NOWAIT calls give a record being written this many polls to land
 * before they report the queue as empty. */
#define NOWAIT_POLLS 256

/* If the record holding us up belongs to a dead process, recover it.
 * true only when this call changed the record, so that callers looping
 * on it make progress (a record per turn) and never spin. */
static bool recover_if_dead(struct shmq *q, const struct ring_stall *s)
{
    if (!s->has_owner || !shmq__liveness_dead(q, desc_owner(s->word)) ||
        !shmq__ring_recover(q, s))
        return false;
    wait_signal_all(&q->hdr->not_full.word);
    wait_signal_all(&q->hdr->not_empty.word);
    wait_signal_all(&q->hdr->all_done.word);
    return true;
}

static int attempt_nowait(struct shmq *q, attempt_fn fn, void *op)
{
    struct ring_stall s;
    for (int i = 0;; i++) {
        s.has_owner = false;
        int rc = fn(q, op, &s);
        if (rc != -EAGAIN && rc != -EINPROGRESS)
            return rc;
        /* A record being written is normally a few ns from landing. */
        if (rc == -EINPROGRESS && i < NOWAIT_POLLS) {
            wait_relax();
            continue;
        }
        if (!recover_if_dead(q, &s))
            return -EAGAIN;
    }
}

/* Poll for up to the handle's spin time: a message (or room) that comes
 * within microseconds is taken without a sleep and a wakeup. */
static int attempt_spinning(struct shmq *q, attempt_fn fn, void *op,
                            struct ring_stall *s, wait_deadline_t deadline)
{
    int64_t spin = load_relaxed(&q->spin_ns);
    int rc = fn(q, op, s);
    if (spin <= 0 || (rc != -EAGAIN && rc != -EINPROGRESS))
        return rc;
    int64_t end = wait_now() + spin;
    if (deadline >= 0 && deadline < end)
        end = deadline;
    for (unsigned i = 1;; i++) {
        wait_relax();
        rc = fn(q, op, s);
        if (rc != -EAGAIN && rc != -EINPROGRESS)
            return rc;
        if (i % 64 == 0 && wait_now() >= end)
            return rc;
        /* On an oversubscribed machine the process we wait for (say, a
         * producer preempted between claim and commit) may be runnable
         * on this very CPU; on an idle one this returns at once. */
        if (i % 64 == 0)
            sched_yield();
    }
}

/* A signal for room wakes one waiter. One woken for room it cannot use
 * (a larger message, an SHMQ_ALL batch) passes the wake on, so that a
 * waiter the room fits is not left to its periodic re-check; once per
 * position of release, so that waiters none of which fits do not wake
 * each other for ever. */
static void pass_room_wake(struct shmq *q, uint64_t *event, uint64_t *passed_at)
{
    if (event != &q->hdr->not_full.word)
        return;
    uint64_t r = load_acquire(&q->hdr->release.word);
    if (r == *passed_at)
        return;
    *passed_at = r;
    wait_signal(event);
}

static int attempt_blocking(struct shmq *q, attempt_fn fn, void *op,
                            uint64_t *event, int64_t timeout_ns)
{
    wait_deadline_t deadline = wait_deadline(timeout_ns);
    struct ring_stall s = {0};
    uint64_t passed_at = UINT64_MAX; /* see pass_room_wake */
    int rc = attempt_spinning(q, fn, op, &s, deadline);
    for (;;) {
        if (rc != -EAGAIN && rc != -EINPROGRESS)
            return rc;
        if (deadline >= 0 && wait_now() >= deadline)
            return -ETIMEDOUT;
        if (recover_if_dead(q, &s)) {
            rc = fn(q, op, &s);
            continue;
        }
        uint32_t seen = wait_prepare(event);
        s.has_owner = false;
        rc = fn(q, op, &s);
        if (rc != -EAGAIN && rc != -EINPROGRESS)
            return rc;
        wait_deadline_t until = deadline;
        wait_deadline_t check =
            wait_now() + (s.has_owner ? LIVENESS_PERIOD_NS : RECHECK_NS);
        if (until < 0 || check < until)
            until = check;
        int slept = wait_sleep(event, seen, until);
        bool expired =
            slept == -ETIMEDOUT && deadline >= 0 && wait_now() >= deadline;
        /* Look again before announcing a sleeper: a woken waiter that
         * finds its message costs the next signaller no syscall. After
         * the deadline, this is the last look before giving up. */
        s.has_owner = false;
        rc = fn(q, op, &s);
        if (expired && (rc == -EAGAIN || rc == -EINPROGRESS))
            return -ETIMEDOUT;
        if (slept == 0 && rc == -EAGAIN)
            pass_room_wake(q, event, &passed_at);
    }
}

int shmq__ensure(struct shmq *q)
{
    if (shmq__liveness_current(q))
        return 0;
    int saved = errno; /* first call after fork: syscalls */
    int rc = shmq__liveness_ensure(q);
    errno = saved;
    return rc;
}

int shmq__wait_for(struct shmq *q, attempt_fn fn, void *op, uint64_t *event,
                   int64_t timeout_ns)
{
    int saved = errno;
    int rc = timeout_ns == SHMQ_NOWAIT
                 ? attempt_nowait(q, fn, op)
                 : attempt_blocking(q, fn, op, event, timeout_ns);
    errno = saved;
    return rc;
}
