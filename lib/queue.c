/* SPDX-License-Identifier: MIT */
/*
 * queue.c - the public Queue / JoinableQueue calls: handles, argument
 * rules, put and get, closing, task accounting. Waiting is attempt.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h> /* shm_open, shm_unlink */
#include <unistd.h>

#include "attempt.h"
#include "liveness.h"
#include "queue.h"
#include "ring.h"
#include "shm.h"
#include "shmq.h"
#include "wait.h"

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
    /* Open reservations and borrows end with the handle; a forked
     * child's unregistered copy holds none (its parent's are not its). */
    if (q->hdr && q->lock_fd >= 0 && shmq__liveness_current(q)) {
        shmq__ring_end_owned(q);
        wait_signal_all(&q->hdr->not_empty.word);
        wait_signal_all(&q->hdr->not_full.word);
    }
    shmq__liveness_unregister(q);
    shmq__shm_unmap(q);
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
    int rc = shmq__shm_map(q);
    if (rc == 0 && init)
        shmq__shm_init_region(q);
    if (rc == 0)
        rc = shmq__liveness_register(q);
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
    int rc = shmq__shm_geometry(cfg, &geo);
    if (rc < 0)
        return rc;
    char tmp[SHM_TMP_MAX];
    int fd = shmq__shm_create_fd(&geo, name ? tmp : NULL, sizeof tmp, mode);
    if (fd < 0)
        return fd;
    shmq_t *h = NULL;
    rc = handle_open(&h, fd, &geo, true);
    if (name && rc == 0) {
        rc = shmq__shm_publish(tmp, name);
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
    int rc = shmq__shm_read_identity(fd, &geo);
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
    int rc = shmq__shm_check_name(name);
    if (rc < 0)
        return rc;
    int saved = errno;
    rc = create(q, cfg, name, mode);
    errno = saved;
    return rc;
}

SHMQ_PUBLIC int shmq_open(shmq_t **q, const char *name)
{
    int rc = shmq__shm_check_name(name);
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
    int rc = shmq__shm_check_name(name);
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
/* Put and get                                                          */
/* ------------------------------------------------------------------ */

/* Consumers move release once per this many records (mask). */
#define RELEASE_EVERY 15u

/* A close that came before the commit may have let a consumer conclude
 * that the queue is drained, so the message must not stay. The commit
 * CAS and this load are seq_cst, against shmq__take's fence after its
 * look at the flag: either that consumer's last look sees the record, or
 * this load sees the flag. A record a consumer has taken already is
 * delivered. */
int shmq__put_settle(struct shmq *q, struct ring_ref *ref)
{
    int rc = 0;
    if (__atomic_load_n(&q->hdr->closed.word, __ATOMIC_SEQ_CST) &&
        shmq__ring_withdraw(q, ref) == 0)
        rc = -EPIPE;
    wait_signal(&q->hdr->not_empty.word);
    return rc;
}

int shmq__putv_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    const struct shmq__putv_op *op = arg;
    if (shmq__closed(q))
        return -EPIPE;
    struct ring_ref ref;
    int rc = shmq__ring_claim(q, op->len, &ref, s);
    if (rc < 0)
        return rc;
    /* The ring is mapped twice in a row: the record is contiguous. */
    unsigned char *dst = ring_addr(q, ref.pos);
    if (op->iovcnt == 1) { /* put */
        if (op->len)
            memcpy(dst, op->iov[0].iov_base, op->len);
    } else {
        for (int i = 0; i < op->iovcnt; i++) {
            if (op->iov[i].iov_len)
                memcpy(dst, op->iov[i].iov_base, op->iov[i].iov_len);
            dst += op->iov[i].iov_len;
        }
    }
    rc = shmq__ring_commit(q, &ref, op->len);
    return rc < 0 ? rc : shmq__put_settle(q, &ref);
}

SHMQ_PUBLIC int shmq_put(shmq_t *q, const void *msg, size_t len,
                         int64_t timeout_ns)
{
    if (!q || (!msg && len) || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    if (len > q->geo.max_message)
        return -EMSGSIZE;
    struct iovec one = {(void *)msg, len};
    struct shmq__putv_op op = {&one, 1, len};
    return shmq__run(q, shmq__putv_attempt, &op, &q->hdr->not_full.word,
                     timeout_ns);
}

struct get_op {
    void *buf;
    size_t cap;
    uint64_t len;
};

int shmq__take(struct shmq *q, void *buf, size_t cap, uint64_t *len,
               struct ring_ref *ref, struct ring_stall *s)
{
    int rc = shmq__ring_take(q, buf, cap, len, ref, s);
    if ((rc == -EAGAIN || rc == -EINPROGRESS) && shmq__closed(q)) {
        /* Drained only if nothing is committed once the flag is seen: a
         * put that commits after this fence sees the flag and withdraws
         * its record (shmq__put_settle); puts in flight do not count. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        rc = shmq__ring_take(q, buf, cap, len, ref, s);
        if (rc == -EAGAIN || rc == -EINPROGRESS)
            return -EPIPE;
    }
    return rc;
}

void shmq__freed(struct shmq *q, const struct ring_ref *ref)
{
    /* Moving release costs a CAS on a line every producer reads: do it
     * for a batch of records (a packed record is one), or at once when a
     * producer sleeps. One that finds the queue full moves it itself
     * (shmq__ring_claim). */
    if (!ref->freed)
        return;
    if ((ref->seq & RELEASE_EVERY) == RELEASE_EVERY || ref->entry ||
        wait_has_sleepers(&q->hdr->not_full.word)) {
        shmq__ring_advance_release(q);
        wait_signal(&q->hdr->not_full.word);
    }
}

static int get_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    struct get_op *op = arg;
    struct ring_ref ref;
    int rc = shmq__take(q, op->buf, op->cap, &op->len, &ref, s);
    if (rc < 0)
        return rc;
    if (!ref.copied) {
        if (op->len) /* buf may be NULL for a 0-byte message */
            memcpy(op->buf, ref_data(q, &ref), op->len);
        rc = shmq__ring_free(q, &ref);
    }
    shmq__freed(q, &ref);
    return rc;
}

SHMQ_PUBLIC int shmq_get(shmq_t *q, void *buf, size_t cap, size_t *len,
                         int64_t timeout_ns)
{
    if (!q || !len || (!buf && cap) || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    struct get_op op = {buf, cap, 0};
    int rc =
        shmq__run(q, get_attempt, &op, &q->hdr->not_empty.word, timeout_ns);
    if (rc == 0 || rc == -ENOBUFS)
        *len = (size_t)op.len;
    if (rc == -ENOBUFS) /* the wake that brought us here is another's */
        wait_signal(&q->hdr->not_empty.word);
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
    return q ? shmq__ring_count((struct shmq *)q) : 0;
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
    shmq__ring_advance_release((struct shmq *)q);
    return shmq__ring_full((struct shmq *)q);
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
    return q ? shmq__closed(q) : false;
}

/* Messages put (committed, less those withdrawn, aborted or lost with a
 * dead reader) and not yet task_done. An open reservation or a put in
 * progress is not a message yet. */
static uint32_t unfinished(struct shmq *q, uint32_t done)
{
    uint32_t aborted = (uint32_t)load_acquire(&q->hdr->tasks_aborted.word);
    return shmq__ring_committed(q) - aborted - done;
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
                wait_signal_all(&q->hdr->all_done.word);
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
    uint32_t left = unfinished(q, (uint32_t)done);
    if (left == 0)
        return 0;
    /* More done (or aborted) than ever put: only scribbles do that, and
     * no task_done can ever bring it back to 0. */
    if ((int32_t)left < 0)
        return -EBADMSG;
    /* A dead producer's record counts until someone aborts it: name the
     * record that holds release, so that a joiner with no consumer around
     * recovers it. */
    shmq__ring_advance_release(q);
    shmq__ring_release_stall(q, s, true);
    return -EAGAIN;
}

SHMQ_PUBLIC int shmq_join(shmq_t *q, int64_t timeout_ns)
{
    if (!q || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    if (!(q->geo.flags & SHMQ_JOINABLE))
        return -ENOTSUP;
    return shmq__run(q, join_attempt, NULL, &q->hdr->all_done.word, timeout_ns);
}
