/* SPDX-License-Identifier: MIT */
/*
 * queue.c - the public Queue / JoinableQueue calls: argument rules,
 * closing, task accounting, and blocking (spin, then futex sleep, with
 * liveness checks while a record in flight holds everyone up).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h> /* shm_open, shm_unlink */
#include <unistd.h>

#include "liveness.h"
#include "ring.h"
#include "shm.h"
#include "shmq.h"
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
/* Consumers move release once per this many records (mask). */
#define RELEASE_EVERY 15u

/* ------------------------------------------------------------------ */
/* Handles                                                              */
/* ------------------------------------------------------------------ */

static struct shmq *handle_new(int fd)
{
    struct shmq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->fd = fd;
    q->lock_fd = -1;
    q->spin_ns = SHMQ_DEFAULT_SPIN_NS;
    return q;
}

/* Frees q and closes its fd; q may be half-built. */
static void handle_free(struct shmq *q)
{
    liveness_unregister(q);
    shm_unmap(q);
    if (q->fd >= 0)
        close(q->fd);
    free(q);
}

/* Map fd's region (its geometry already in geo), register, hand out. */
static int handle_open(shmq_t **out, int fd, const struct shmq_geometry *geo,
                       bool init)
{
    struct shmq *q = handle_new(fd);
    if (!q) {
        close(fd);
        return -ENOMEM;
    }
    q->geo = *geo;
    int rc = shm_map(q);
    if (rc == 0 && init)
        shm_init_region(q);
    if (rc == 0)
        rc = liveness_register(q);
    if (rc < 0) {
        handle_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

static int create(shmq_t **q, const struct shmq_config *cfg, const char *name,
                  mode_t mode)
{
    if (!q || (mode & ~(mode_t)07777))
        return -EINVAL;
    struct shmq_geometry geo;
    int rc = shm_geometry(cfg, &geo);
    if (rc < 0)
        return rc;
    char tmp[SHM_TMP_MAX];
    int fd = shm_create_fd(&geo, name ? tmp : NULL, sizeof tmp, mode);
    if (fd < 0)
        return fd;
    shmq_t *h = NULL;
    rc = handle_open(&h, fd, &geo, true);
    if (name && rc == 0) {
        rc = shm_publish(tmp, name);
        if (rc < 0)
            handle_free(h);
    } else if (name) {
        shm_unlink(tmp);
    }
    if (rc == 0)
        *q = h;
    return rc;
}

static int attach(shmq_t **q, int fd)
{
    struct shmq_geometry geo;
    int rc = shm_read_identity(fd, &geo);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return handle_open(q, fd, &geo, false);
}

SHMQ_PUBLIC int shmq_create(shmq_t **q, const struct shmq_config *cfg)
{
    int saved = errno;
    int rc = create(q, cfg, NULL, 0);
    errno = saved;
    return rc;
}

SHMQ_PUBLIC int shmq_create_named(shmq_t **q, const char *name,
                                  const struct shmq_config *cfg, mode_t mode)
{
    int rc = shm_check_name(name);
    if (rc < 0)
        return rc;
    int saved = errno;
    rc = create(q, cfg, name, mode);
    errno = saved;
    return rc;
}

SHMQ_PUBLIC int shmq_open(shmq_t **q, const char *name)
{
    int rc = shm_check_name(name);
    if (rc < 0 || !q)
        return rc < 0 ? rc : -EINVAL;
    int saved = errno;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    rc = fd < 0 ? -errno : attach(q, fd);
    errno = saved;
    return rc;
}

SHMQ_PUBLIC int shmq_unlink(const char *name)
{
    int rc = shm_check_name(name);
    if (rc < 0)
        return rc;
    int saved = errno;
    rc = shm_unlink(name) < 0 ? -errno : 0;
    errno = saved;
    return rc;
}

SHMQ_PUBLIC int shmq_fd(const shmq_t *q)
{
    return q ? q->fd : -EINVAL;
}

SHMQ_PUBLIC int shmq_from_fd(shmq_t **q, int fd)
{
    if (!q)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    int saved = errno;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    int rc = dup < 0 ? -errno : attach(q, dup);
    errno = saved;
    return rc;
}

SHMQ_PUBLIC void shmq_release(shmq_t *q)
{
    if (!q)
        return;
    int saved = errno;
    handle_free(q);
    errno = saved;
}

/* ------------------------------------------------------------------ */
/* Waiting                                                              */
/* ------------------------------------------------------------------ */

/* One non-blocking try of an operation. 0 done; -EAGAIN / -EINPROGRESS
 * keep waiting (stall says behind what); anything else is final. */
typedef int (*attempt_fn)(struct shmq *q, void *op, struct ring_stall *s);

static bool closed(const struct shmq *q)
{
    return load_acquire(&q->hdr->closed.word) != 0;
}

/* If the record holding us up belongs to a dead process, recover it.
 * true only when this call changed the record, so that callers looping
 * on it make progress (a record per turn) and never spin. */
static bool recover_if_dead(struct shmq *q, const struct ring_stall *s)
{
    if (!s->has_owner || !liveness_dead(q, desc_owner(s->word)) ||
        !ring_recover(q, s))
        return false;
    wait_signal(&q->hdr->not_full.word);
    wait_signal(&q->hdr->not_empty.word);
    wait_signal(&q->hdr->all_done.word);
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

static int attempt_blocking(struct shmq *q, attempt_fn fn, void *op,
                            uint64_t *event, int64_t timeout_ns)
{
    wait_deadline_t deadline = wait_deadline(timeout_ns);
    struct ring_stall s = {0};
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
        bool expired = wait_sleep(event, seen, until) == -ETIMEDOUT &&
                       deadline >= 0 && wait_now() >= deadline;
        /* Look again before announcing a sleeper: a woken waiter that
         * finds its message costs the next signaller no syscall. After
         * the deadline, this is the last look before giving up. */
        s.has_owner = false;
        rc = fn(q, op, &s);
        if (expired && (rc == -EAGAIN || rc == -EINPROGRESS))
            return -ETIMEDOUT;
    }
}

/* Common entry of put and get after argument checks. */
static int run(struct shmq *q, attempt_fn fn, void *op, uint64_t *event,
               int64_t timeout_ns)
{
    if (!liveness_current(q)) { /* first call after fork: syscalls */
        int saved = errno;
        int rc = liveness_ensure(q);
        errno = saved;
        if (rc < 0)
            return rc;
    }
    struct ring_stall s = {0};
    int rc = fn(q, op, &s); /* fast path: no clock, no syscall */
    if (rc != -EAGAIN && rc != -EINPROGRESS)
        return rc;
    int saved = errno;
    rc = timeout_ns == SHMQ_NOWAIT
             ? attempt_nowait(q, fn, op)
             : attempt_blocking(q, fn, op, event, timeout_ns);
    errno = saved;
    return rc;
}

static bool bad_timeout(int64_t timeout_ns)
{
    return timeout_ns < 0 && timeout_ns != SHMQ_FOREVER;
}

/* ------------------------------------------------------------------ */
/* Put and get                                                          */
/* ------------------------------------------------------------------ */

/* After a commit: a close that came before it may have let a consumer
 * conclude that the queue is drained, so the message must not stay. The
 * commit CAS and this load are seq_cst, against get_attempt's fence after
 * its look at the flag: either that consumer's last look sees the record,
 * or this load sees the flag. A record a consumer has taken already is
 * delivered: 0. */
static int put_settle(struct shmq *q, const struct ring_ref *ref)
{
    if (!__atomic_load_n(&q->hdr->closed.word, __ATOMIC_SEQ_CST))
        return 0;
    return ring_withdraw(q, ref) == 0 ? -EPIPE : 0;
}

struct put_op {
    const void *msg;
    size_t len;
};

static int put_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    const struct put_op *op = arg;
    if (closed(q))
        return -EPIPE;
    struct ring_ref ref;
    int rc = ring_claim(q, op->len, &ref, s);
    if (rc < 0)
        return rc;
    if (op->len)
        memcpy(ring_addr(q, ref.pos), op->msg, op->len);
    rc = ring_commit(q, &ref, op->len);
    if (rc == 0)
        rc = put_settle(q, &ref);
    wait_signal(&q->hdr->not_empty.word);
    return rc;
}

SHMQ_PUBLIC int shmq_put(shmq_t *q, const void *msg, size_t len,
                         int64_t timeout_ns)
{
    if (!q || (!msg && len) || bad_timeout(timeout_ns))
        return -EINVAL;
    if (len > q->geo.max_message)
        return -EMSGSIZE;
    struct put_op op = {msg, len};
    return run(q, put_attempt, &op, &q->hdr->not_full.word, timeout_ns);
}

struct get_op {
    void *buf;
    size_t cap;
    uint64_t len;
};

static int get_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    struct get_op *op = arg;
    struct ring_ref ref;
    int rc = ring_take(q, op->buf, op->cap, &op->len, &ref, s);
    if ((rc == -EAGAIN || rc == -EINPROGRESS) && closed(q)) {
        /* Drained only if nothing is committed once the flag is seen: a
         * put that commits after this fence sees the flag and withdraws
         * its record (put_settle); puts in flight do not count. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        rc = ring_take(q, op->buf, op->cap, &op->len, &ref, s);
        if (rc == -EAGAIN || rc == -EINPROGRESS)
            return -EPIPE;
    }
    if (rc < 0)
        return rc;
    if (!ref.copied) {
        if (op->len) /* buf may be NULL for a 0-byte message */
            memcpy(op->buf, ring_addr(q, ref.pos), op->len);
        rc = ring_free(q, &ref);
    }
    /* Moving release costs a CAS on a line every producer reads: do it
     * for a batch of records, or at once when a producer sleeps. One
     * that finds the queue full moves it itself (ring_claim). */
    if ((ref.seq & RELEASE_EVERY) == RELEASE_EVERY ||
        wait_has_sleepers(&q->hdr->not_full.word)) {
        ring_advance_release(q);
        wait_signal(&q->hdr->not_full.word);
    }
    return rc;
}

SHMQ_PUBLIC int shmq_get(shmq_t *q, void *buf, size_t cap, size_t *len,
                         int64_t timeout_ns)
{
    if (!q || !len || (!buf && cap) || bad_timeout(timeout_ns))
        return -EINVAL;
    struct get_op op = {buf, cap, 0};
    int rc = run(q, get_attempt, &op, &q->hdr->not_empty.word, timeout_ns);
    if (rc == 0 || rc == -ENOBUFS)
        *len = (size_t)op.len;
    return rc;
}

SHMQ_PUBLIC int shmq_put_nowait(shmq_t *q, const void *msg, size_t len)
{
    return shmq_put(q, msg, len, SHMQ_NOWAIT);
}

SHMQ_PUBLIC int shmq_get_nowait(shmq_t *q, void *buf, size_t cap, size_t *len)
{
    return shmq_get(q, buf, cap, len, SHMQ_NOWAIT);
}

/* ------------------------------------------------------------------ */
/* State                                                                */
/* ------------------------------------------------------------------ */

SHMQ_PUBLIC size_t shmq_qsize(const shmq_t *q)
{
    /* const for the caller: the handle; the shared head may be helped */
    return q ? ring_count((struct shmq *)q) : 0;
}

SHMQ_PUBLIC bool shmq_empty(const shmq_t *q)
{
    return shmq_qsize(q) == 0;
}

SHMQ_PUBLIC bool shmq_full(const shmq_t *q)
{
    if (!q)
        return false;
    /* Consumers move release lazily; a put would move it first. */
    ring_advance_release((struct shmq *)q);
    return ring_full((struct shmq *)q);
}

SHMQ_PUBLIC size_t shmq_max_message(const shmq_t *q)
{
    return q ? (size_t)q->geo.max_message : 0;
}

SHMQ_PUBLIC int shmq_set_spin(shmq_t *q, int64_t spin_ns)
{
    if (!q || spin_ns < 0)
        return -EINVAL;
    store_relaxed(&q->spin_ns, spin_ns);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Close, task_done, join                                               */
/* ------------------------------------------------------------------ */

SHMQ_PUBLIC int shmq_close(shmq_t *q)
{
    if (!q)
        return -EINVAL;
    int saved = errno;
    __atomic_store_n(&q->hdr->closed.word, 1, __ATOMIC_SEQ_CST);
    wait_broadcast(&q->hdr->not_empty.word);
    wait_broadcast(&q->hdr->not_full.word);
    errno = saved;
    return 0;
}

SHMQ_PUBLIC bool shmq_closed(const shmq_t *q)
{
    return q ? closed(q) : false;
}

/* Messages put (claimed, less those aborted) and not yet task_done. */
static uint32_t unfinished(struct shmq *q, uint32_t done)
{
    uint32_t aborted = (uint32_t)load_acquire(&q->hdr->tasks_aborted.word);
    return ring_claimed(q) - aborted - done;
}

SHMQ_PUBLIC int shmq_task_done(shmq_t *q)
{
    if (!q)
        return -EINVAL;
    if (!(q->geo.flags & SHMQ_JOINABLE))
        return -ENOTSUP;
    uint64_t *word = &q->hdr->tasks_done.word;
    uint64_t done = load_acquire(word);
    for (;;) {
        uint32_t left = unfinished(q, (uint32_t)done);
        if ((int32_t)left <= 0) /* nothing unfinished (or scribbles) */
            return -EINVAL;
        /* seq_cst: ordered before the signal's load of the event */
        if (__atomic_compare_exchange_n(word, &done, done + 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
            if (left == 1) {
                int saved = errno;
                wait_signal(&q->hdr->all_done.word);
                errno = saved;
            }
            return 0;
        }
    }
}

static int join_attempt(struct shmq *q, void *op, struct ring_stall *s)
{
    (void)op;
    uint64_t done = load_acquire(&q->hdr->tasks_done.word);
    if (unfinished(q, (uint32_t)done) == 0)
        return 0;
    /* A dead producer's record counts until someone aborts it: name the
     * record that holds release, so that a joiner with no consumer around
     * recovers it. */
    ring_advance_release(q);
    ring_release_stall(q, s, true);
    return -EAGAIN;
}

SHMQ_PUBLIC int shmq_join(shmq_t *q, int64_t timeout_ns)
{
    if (!q || bad_timeout(timeout_ns))
        return -EINVAL;
    if (!(q->geo.flags & SHMQ_JOINABLE))
        return -ENOTSUP;
    return run(q, join_attempt, NULL, &q->hdr->all_done.word, timeout_ns);
}
