/* SPDX-License-Identifier: MIT */
/*
 * wait.c - futex event counts, deadlines.
 *
 * The lost-wakeup argument (Dekker through the seq_cst total order): a
 * sleeper sets the flag with a seq_cst RMW, issues a seq_cst fence and
 * re-checks the queue; a signaller publishes with a seq_cst CAS (ring.c)
 * and then loads the event with seq_cst. Either the signaller's load sees
 * the flag (and changes the word and wakes), or it precedes the flag in
 * the total order, and then the sleeper's re-check, after its fence,
 * sees what was published. If the word changed before the sleeper's
 * futex_wait, the kernel returns at once (EAGAIN).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "wait.h"

int64_t wait_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

wait_deadline_t wait_deadline(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    int64_t now = wait_now();
    return timeout_ns > INT64_MAX - now ? -1 : now + timeout_ns;
}

/* The futex is the low half of the 64-bit word (little-endian). */
static uint32_t *event_word(uint64_t *event)
{
    return (uint32_t *)event;
}

uint32_t wait_prepare(uint64_t *event)
{
    uint32_t *ev = event_word(event);
    uint32_t old = __atomic_fetch_or(ev, EVENT_SLEEPERS, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return old | EVENT_SLEEPERS;
}

int wait_sleep(uint64_t *event, uint32_t seen, wait_deadline_t until)
{
    struct timespec ts, *tsp = NULL;
    if (until >= 0) {
        if (wait_now() >= until)
            return -ETIMEDOUT;
        ts.tv_sec = until / 1000000000;
        ts.tv_nsec = until % 1000000000;
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, so an
     * interrupted wait resumes against the same deadline. Not private:
     * the word is shared between processes. */
    int saved = errno; /* the library never changes errno */
    long rc = syscall(SYS_futex, event_word(event), FUTEX_WAIT_BITSET, seen,
                      tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    bool timed_out = rc < 0 && errno == ETIMEDOUT;
    errno = saved;
    return timed_out ? -ETIMEDOUT : 0;
}

/* FUTEX_WAKE up to n sleepers; how many it woke. */
static long futex_wake(uint32_t *ev, int n)
{
    int saved = errno;
    long woken = syscall(SYS_futex, ev, FUTEX_WAKE, n, NULL, NULL, 0);
    errno = saved;
    return woken;
}

/* Bump the counter, keeping the flag or not; false if v was stale. */
static bool event_bump(uint32_t *ev, uint32_t *v, bool keep_flag)
{
    uint32_t next =
        ((*v + 1) & ~EVENT_SLEEPERS) | (keep_flag ? EVENT_SLEEPERS : 0);
    if (!__atomic_compare_exchange_n(ev, v, next, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
        return false;
    *v = next;
    return true;
}

/*
 * One message (or one record's room) wakes one sleeper, not all of them.
 * The flag stays set while the kernel found someone to wake, so the next
 * signal wakes the next sleeper. The first wake that finds nobody clears
 * the flag, and since a sleeper may have gone to sleep on the flagged
 * value between that wake and the clearing, the clearing bumps the
 * counter (a sleeper about to sleep sees the word changed) and wakes
 * whoever got in (usually nobody). So a burst of k signals with s
 * sleepers costs min(k, s + 1) wake calls plus one, and a sleeper killed
 * in its sleep costs the same once.
 */
void wait_signal_slow(uint64_t *event, uint32_t v)
{
    uint32_t *ev = event_word(event);
    while (v & EVENT_SLEEPERS) {
        if (!event_bump(ev, &v, true))
            continue;
        if (futex_wake(ev, 1) == 0 && event_bump(ev, &v, false))
            futex_wake(ev, INT_MAX);
        return;
    }
}

void wait_signal_all(uint64_t *event)
{
    uint32_t *ev = event_word(event);
    uint32_t v = __atomic_load_n(ev, __ATOMIC_SEQ_CST);
    while (v & EVENT_SLEEPERS) {
        if (event_bump(ev, &v, false)) {
            futex_wake(ev, INT_MAX);
            return;
        }
    }
}

void wait_broadcast(uint64_t *event)
{
    uint32_t *ev = event_word(event);
    __atomic_fetch_add(ev, 1, __ATOMIC_SEQ_CST);
    futex_wake(ev, INT_MAX);
}
