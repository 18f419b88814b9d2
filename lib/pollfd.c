/* SPDX-License-Identifier: MIT */
/*
 * pollfd.c - a level-triggered fd for poll/epoll: a helper thread turns
 * the queue's futex into an eventfd write.
 *
 * Why a helper thread rather than a per-waiter named socket that
 * producers poke (iceoryx2's design): the socket needs a registry of
 * waiters in the shared header that every producer walks when the
 * sleepers flag is set, and it changes what a put costs for everyone.
 * The thread is a sleeper like any blocked get: producers keep the one
 * protocol they have (flag set: one FUTEX_WAKE), it works for any holder
 * of a handle, including unrelated processes, with no ptrace rights and
 * no kernel newer than eventfd. Its price is a thread per pollfd and one
 * more context switch per wakeup.
 *
 * States of the helper (p->state, a private futex of this process):
 *   WATCH   the helper owns the fd's readiness: it arms on the queue's
 *           word, and when the event holds it sets FIRED, then writes
 *           the eventfd.
 *   FIRED   the eventfd is (or is about to be) readable; the helper
 *           sleeps until shmq_pollfd_ack sets WATCH or close sets STOP.
 *   STOP    the helper exits.
 * Invariant: while the event holds, the eventfd is readable or the helper
 * is in WATCH and will find the event on its next look (it re-checks
 * after wait_prepare, like a blocked get), so no edge is missed.
 * On entering WATCH the helper first polls for the handle's spin time,
 * as a blocking get does (shmq_set_spin; 0 sleeps at once).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "evloop.h"
#include "shmq.h"
#include "wait.h"

enum { WATCH, FIRED, STOP };

/* A bound on each sleep on the queue's word, as queue.c's waits have: a
 * word scribbled on by a buggy process delays the fd, never loses it. */
#define RECHECK_SLEEP_NS 100000000

struct shmq_pollfd {
    struct shmq *q;
    unsigned events;
    int efd;        /* EFD_NONBLOCK | EFD_CLOEXEC */
    uint32_t state; /* atomic: WATCH / FIRED / STOP */
    pthread_t thread;
    pid_t owner; /* the process whose helper thread this is */
};

static void state_wait(uint32_t *state, uint32_t seen)
{
    int saved = errno;
    syscall(SYS_futex, state, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
    errno = saved;
}

static void state_wake(uint32_t *state)
{
    int saved = errno;
    syscall(SYS_futex, state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    errno = saved;
}

static void fire(struct shmq_pollfd *p)
{
    int saved = errno;
    uint64_t one = 1;
    /* Cannot block (EFD_NONBLOCK) and cannot overflow in practice:
     * each write is followed by a FIRED state that waits for a read. */
    if (write(p->efd, &one, sizeof one) < 0) {
        /* counter at its limit: it is readable, which is all we want */
    }
    errno = saved;
}

/* WATCH -> FIRED and the eventfd write, unless ack or close changed the
 * state meanwhile. */
static void fire_if_watching(struct shmq_pollfd *p)
{
    uint32_t expect = WATCH;
    /* acq_rel: ack's WATCH store (release) happened before; the eventfd
     * write below is ordered after this by the syscall. */
    if (__atomic_compare_exchange_n(&p->state, &expect, FIRED, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        fire(p);
}

/* The adaptive wait of a blocking get, for the helper: on entering
 * WATCH, poll the queue for the handle's spin time (shmq_set_spin)
 * before announcing a sleeper. An event that comes within it reaches
 * the fd without a futex wake on the producer's side and without a
 * wakeup of the helper: one wakeup in series (the loop's) instead of
 * two. true when the event holds. */
static bool spin_watch(struct shmq_pollfd *p)
{
    int64_t spin = load_relaxed(&p->q->spin_ns);
    if (spin <= 0)
        return false;
    int64_t end = wait_now() + spin;
    for (unsigned i = 1;; i++) {
        if (shmq__ev_ready(p->q, p->events))
            return true;
        if (__atomic_load_n(&p->state, __ATOMIC_RELAXED) != WATCH)
            return false;
        wait_relax();
        if (i % 64 == 0) {
            if (wait_now() >= end)
                return false;
            sched_yield(); /* the producer may need this CPU */
        }
    }
}

/* One look in WATCH: fire if the event holds, else sleep on the word. */
static void watch_once(struct shmq_pollfd *p)
{
    uint64_t *event = shmq__ev_word(p->q, p->events);
    uint32_t seen = shmq__ev_announce(event);
    if (shmq__ev_ready(p->q, p->events)) {
        fire_if_watching(p);
        return;
    }
    if (__atomic_load_n(&p->state, __ATOMIC_ACQUIRE) != WATCH)
        return;
    wait_sleep(event, seen, wait_now() + RECHECK_SLEEP_NS);
}

static void *helper(void *arg)
{
    struct shmq_pollfd *p = arg;
    bool fresh = true; /* just entered WATCH: spin first */
    for (;;) {
        uint32_t st = __atomic_load_n(&p->state, __ATOMIC_ACQUIRE);
        if (st == STOP)
            return NULL;
        if (st == FIRED) {
            state_wait(&p->state, FIRED);
            fresh = true;
        } else if (fresh) {
            fresh = false;
            if (spin_watch(p))
                fire_if_watching(p);
        } else {
            watch_once(p);
        }
    }
}

static int start_helper(struct shmq_pollfd *p)
{
    sigset_t all, old;
    sigfillset(&all);
    /* The helper never takes the application's signals. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->thread, NULL, helper, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

SHMQ_PUBLIC int shmq_pollfd_open(shmq_pollfd_t **out, shmq_t *q,
                                 unsigned events)
{
    if (!out || !q || shmq__ev_check(events))
        return -EINVAL;
    int saved = errno;
    int rc = -ENOMEM;
    struct shmq_pollfd *p = calloc(1, sizeof *p);
    if (!p)
        goto out;
    p->q = q;
    p->events = events;
    p->state = WATCH;
    p->owner = getpid();
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = p->efd < 0 ? -errno : start_helper(p);
    if (rc < 0) {
        if (p->efd >= 0)
            close(p->efd);
        free(p);
        goto out;
    }
    *out = p;
out:
    errno = saved;
    return rc;
}

SHMQ_PUBLIC int shmq_pollfd_fd(const shmq_pollfd_t *p)
{
    return p ? p->efd : -EINVAL;
}

SHMQ_PUBLIC int shmq_pollfd_ack(shmq_pollfd_t *p)
{
    if (!p)
        return -EINVAL;
    int saved = errno;
    uint64_t n;
    /* Clear first, then look: an event that holds after the read makes
     * the fd readable again below; one that comes later finds the
     * helper in WATCH. */
    if (read(p->efd, &n, sizeof n) < 0) {
        /* EAGAIN: already clear (ack twice, or before any event) */
    }
    int ready = shmq__ev_ready(p->q, p->events);
    if (ready) {
        __atomic_store_n(&p->state, FIRED, __ATOMIC_RELEASE);
        fire(p);
    } else {
        __atomic_store_n(&p->state, WATCH, __ATOMIC_RELEASE);
        state_wake(&p->state);
    }
    errno = saved;
    return ready;
}

SHMQ_PUBLIC void shmq_pollfd_close(shmq_pollfd_t *p)
{
    if (!p)
        return;
    int saved = errno;
    /* A forked child has the memory but not the thread: free only. */
    if (p->owner == getpid()) {
        __atomic_store_n(&p->state, STOP, __ATOMIC_RELEASE);
        state_wake(&p->state);
        /* The helper may be asleep on the queue's word: move it. Others
         * asleep there wake spuriously and look again. */
        wait_broadcast(shmq__ev_word(p->q, p->events));
        pthread_join(p->thread, NULL);
    }
    close(p->efd);
    free(p);
    errno = saved;
}
