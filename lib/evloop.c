/* SPDX-License-Identifier: MIT */
/*
 * evloop.c - which event-loop path this process uses, and the readiness
 * test the paths share.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#include "evloop.h"
#include "shmq.h"
#include "wait.h"

/* Values of `path` below: SHMQ_EVLOOP_*; 0 = not decided yet. */
static int path;
static int uring_ok; /* 0 unknown, 1 yes, -1 no */

/* io_uring_get_probe sets up a ring of its own: EPERM or ENOSYS (sysctl
 * kernel.io_uring_disabled, seccomp, no io_uring) give NULL. A kernel
 * older than 6.7 lists no FUTEX_WAIT. Once per process. */
static bool probe_uring(void)
{
    int known = __atomic_load_n(&uring_ok, __ATOMIC_RELAXED);
    if (known)
        return known > 0;
    int saved = errno;
    struct io_uring_probe *p = io_uring_get_probe();
    bool ok = p && io_uring_opcode_supported(p, SHMQ_IORING_OP_FUTEX_WAIT);
    if (p)
        io_uring_free_probe(p);
    errno = saved;
    __atomic_store_n(&uring_ok, ok ? 1 : -1, __ATOMIC_RELAXED);
    return ok;
}

static int choose_path(void)
{
    const char *env = getenv("SHMQ_EVLOOP");
    if (env && strcmp(env, "thread") == 0)
        return SHMQ_EVLOOP_THREAD;
    return probe_uring() ? SHMQ_EVLOOP_URING : SHMQ_EVLOOP_THREAD;
}

int shmq__evloop_path(void)
{
    int p = __atomic_load_n(&path, __ATOMIC_RELAXED);
    if (likely(p))
        return p;
    p = choose_path();
    /* Two first callers agree unless set_path raced them: keep its. */
    int none = 0;
    if (!__atomic_compare_exchange_n(&path, &none, p, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        p = none;
    return p;
}

SHMQ_PUBLIC int shmq_evloop_path(void)
{
    return shmq__evloop_path();
}

SHMQ_PUBLIC int shmq_evloop_set_path(int want)
{
    switch (want) {
    case SHMQ_EVLOOP_AUTO:
        want = choose_path();
        break;
    case SHMQ_EVLOOP_URING:
        if (!probe_uring())
            return -ENOSYS;
        break;
    case SHMQ_EVLOOP_THREAD:
        break;
    default:
        return -EINVAL;
    }
    __atomic_store_n(&path, want, __ATOMIC_RELAXED);
    return 0;
}

/*
 * wait_prepare, but always changing the word. Since signals wake one
 * sleeper (wait.c), a signaller whose FUTEX_WAKE found nobody clears the
 * flag with a CAS from the exact value it set. A sleeper whose announce
 * changed nothing (the flag was still set) and that queued its wait
 * between that wake and that clear would be left asleep with nobody to
 * wake it: its re-check was right (the message it waits for comes later),
 * and the next put sees no flag. A blocked get survives that by its 100
 * ms re-check; an armed SQE has none. Bumping the counter here makes that
 * clear fail, so the flag stays and the next put wakes us.
 */
uint32_t shmq__ev_announce(uint64_t *event)
{
    uint32_t *ev = (uint32_t *)event; /* the futex: the low half */
    uint32_t v = __atomic_load_n(ev, __ATOMIC_RELAXED), next;
    do
        next = ((v + 1) & ~EVENT_SLEEPERS) | EVENT_SLEEPERS;
    while (!__atomic_compare_exchange_n(ev, &v, next, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
    /* as wait_prepare: the caller's re-check comes after this fence */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return next;
}

int shmq__ev_check(unsigned events)
{
    return events == SHMQ_EV_READABLE || events == SHMQ_EV_WRITABLE ? 0
                                                                    : -EINVAL;
}

uint64_t *shmq__ev_word(struct shmq *q, unsigned events)
{
    return events == SHMQ_EV_READABLE ? &q->hdr->not_empty.word
                                      : &q->hdr->not_full.word;
}

int shmq__ev_ready(struct shmq *q, unsigned events)
{
    /* After wait_prepare's seq_cst fence, as a blocked get's re-check:
     * a put that published before the flag was set is seen here, one
     * that published after it sees the flag and wakes (wait.c). */
    int ready = 0;
    if (events == SHMQ_EV_READABLE ? !shmq_empty(q) : !shmq_full(q))
        ready |= (int)events;
    if (shmq_closed(q))
        ready |= SHMQ_EV_CLOSED;
    return ready;
}
