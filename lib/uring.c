/* SPDX-License-Identifier: MIT */
/*
 * uring.c - waits on a queue's own futex word from the caller's io_uring
 * (IORING_OP_FUTEX_WAIT, Linux 6.7+).
 *
 * An armed SQE is a sleeper like a blocked shmq_get: wait_prepare() sets
 * the sleepers flag (so the next put pays one FUTEX_WAKE), the queue is
 * re-checked, and only then is the SQE filled with the value seen. If the
 * word moves before the kernel gets to the SQE, the wait completes at
 * once with -EAGAIN; if it moves later, the FUTEX_WAKE of wait_signal or
 * shmq_close completes it. Either way shmq_uring_result looks at the
 * queue again, and the caller re-arms: no completion is trusted, none is
 * needed twice.
 *
 * The futex is shared (no FUTEX2_PRIVATE): the word lives in memory other
 * processes map, their FUTEX_WAKE must find it, and private io_uring
 * futex waits armed before a process's second thread have been reported
 * lost for good.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <linux/futex.h>
#include <pthread.h>

#include "evloop.h"
#include "shmq.h"
#include "wait.h"

/* A zeroed or torn-down struct io_uring has no SQ ring mapped. Garbage
 * cannot be told apart from a ring; that is the caller's contract. */
static bool ring_ready(const struct io_uring *ring)
{
    return ring->sq.khead && ring->sq.ktail && ring->sq.sqes &&
           ring->sq.ring_entries;
}

/* liburing 2.3 has no io_uring_prep_futex_wait (2.6 does): the layout of
 * io_uring/futex.c's io_futex_prep. len, futex_flags (rw_flags),
 * buf_index and file_index must be 0, which io_uring_prep_rw leaves. */
static void prep_futex_wait(struct io_uring_sqe *sqe, uint32_t *word,
                            uint32_t seen)
{
    io_uring_prep_rw(SHMQ_IORING_OP_FUTEX_WAIT, sqe, SHMQ_FUTEX2_SIZE_U32, word,
                     0, seen);           /* off is addr2: the expected value */
    sqe->addr3 = FUTEX_BITSET_MATCH_ANY; /* 0 would be -EINVAL */
}

/*
 * The timespec a LINK_TIMEOUT points at is read when the SQE is
 * submitted (by io_uring_submit, or later by an SQPOLL thread), not when
 * it is filled, so it must outlive this call, and the kernel rejects
 * SQEs that carry it in their spare fields. It comes from a table of
 * durations that is filled once and never changes: each timeout is
 * rounded up to 4 significant bits after its leading one (at most 1/16
 * late), which 64 octaves of 16 steps cover.
 */
#define STEP_BITS 4
#define STEPS     (1 << STEP_BITS)
#define MAX_NS    ((int64_t)1 << 61) /* 73 years: "forever" enough */

static struct __kernel_timespec durations[64 * STEPS];
static pthread_once_t durations_once = PTHREAD_ONCE_INIT;

static int64_t duration_ns(unsigned i)
{
    if (i < STEPS)
        return (int64_t)i; /* exact below 16 ns */
    unsigned shift = i / STEPS - 1;
    if (shift > 56) /* 16 << 57 is MAX_NS already */
        return MAX_NS;
    return (int64_t)((uint64_t)(STEPS + i % STEPS) << shift);
}

static void fill_durations(void)
{
    for (unsigned i = 0; i < 64 * STEPS; i++) {
        int64_t ns = duration_ns(i);
        durations[i].tv_sec = ns / 1000000000;
        durations[i].tv_nsec = ns % 1000000000;
    }
}

/* The smallest table entry >= ns. */
static const struct __kernel_timespec *duration_for(int64_t ns)
{
    pthread_once(&durations_once, fill_durations);
    if (ns > MAX_NS)
        ns = MAX_NS;
    if (ns < STEPS)
        return &durations[ns];
    unsigned top = 63u - (unsigned)__builtin_clzll((uint64_t)ns);
    unsigned shift = top - STEP_BITS;
    uint64_t m = ((uint64_t)ns + ((uint64_t)1 << shift) - 1) >> shift;
    if (m == 2 * STEPS) { /* rounding up reached the next octave */
        m = STEPS;
        shift++;
    }
    return &durations[(shift + 1) * STEPS + (m - STEPS)];
}

static void prep_link_timeout(struct io_uring_sqe *sqe, int64_t timeout_ns)
{
    /* const dropped for liburing 2.3's prototype; the kernel only reads */
    io_uring_prep_link_timeout(
        sqe, (struct __kernel_timespec *)duration_for(timeout_ns), 0);
}

SHMQ_PUBLIC int shmq_uring_arm(shmq_t *q, struct io_uring *ring,
                               unsigned events, uint64_t user_data,
                               int64_t timeout_ns)
{
    if (!q || !ring || !ring_ready(ring) || shmq__ev_check(events) ||
        timeout_ns < SHMQ_FOREVER)
        return -EINVAL;
    if (shmq__evloop_path() != SHMQ_EVLOOP_URING)
        return -ENOSYS;
    bool timed = timeout_ns >= 0;
    if (io_uring_sq_space_left(ring) < (timed ? 2u : 1u))
        return -EBUSY;
    /* Look before announcing a sleeper: a loop that finds work again
     * leaves the flag clear, and the producers' puts stay syscall-free. */
    int ready = shmq__ev_ready(q, events);
    if (ready)
        return ready;
    uint64_t *event = shmq__ev_word(q, events);
    uint32_t seen = shmq__ev_announce(event);
    ready = shmq__ev_ready(q, events);
    if (ready)
        return ready; /* the flag stays set: one spurious wake, no loss */
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    prep_futex_wait(sqe, (uint32_t *)event, seen);
    io_uring_sqe_set_data64(sqe, user_data);
    if (!timed)
        return 0;
    sqe->flags |= IOSQE_IO_LINK;
    sqe = io_uring_get_sqe(ring);
    prep_link_timeout(sqe, timeout_ns);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

SHMQ_PUBLIC int shmq_uring_result(shmq_t *q, unsigned events, int res)
{
    if (!q || shmq__ev_check(events))
        return -EINVAL;
    /* A LINK_TIMEOUT that cancelled its futex wait completes with -ETIME,
     * or (Linux 6.7 to at least 6.18) with the count of requests it
     * cancelled; a futex wait itself never completes positive. */
    if (res > 0)
        res = -ETIME;
    switch (res) {
    case -ECANCELED: /* cancelled, or the partner of a timed arm */
    case -ENOENT:    /* the timer found the futex wait gone ... */
    case -EALREADY:  /* ... or completing: the futex CQE is the verdict */
        return -ECANCELED;
    case 0:       /* woken */
    case -EAGAIN: /* the word moved before the kernel slept on it */
    case -EINTR:
    case -ETIME: /* the linked timeout, unless the event came too */
        break;
    default:
        return res;
    }
    int ready = shmq__ev_ready(q, events);
    if (!ready && res == -ETIME)
        return -ETIMEDOUT;
    return ready;
}
