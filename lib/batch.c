/* SPDX-License-Identifier: MIT */
/*
 * batch.c - one message from several buffers (putv), and several
 * messages in one call (put_many, get_many).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "attempt.h"
#include "packed.h"
#include "queue.h"
#include "wait.h"

/* ------------------------------------------------------------------ */
/* putv                                                                 */
/* ------------------------------------------------------------------ */

/* Total length of iov, or -EINVAL / -EMSGSIZE (above max, overflow
 * included) by the contract's rules. */
static int64_t iov_total(const struct iovec *iov, int iovcnt, uint64_t max)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt > 0))
        return -EINVAL;
    uint64_t total = 0;
    bool too_big = false;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_base && iov[i].iov_len)
            return -EINVAL;
        if (iov[i].iov_len > max - total)
            too_big = true; /* keep looking for -EINVAL first */
        else
            total += iov[i].iov_len;
    }
    return too_big ? -EMSGSIZE : (int64_t)total;
}

SHMQ_PUBLIC int shmq_putv(shmq_t *q, const struct iovec *iov, int iovcnt,
                          int64_t timeout_ns)
{
    if (!q || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    int64_t total = iov_total(iov, iovcnt, q->geo.max_message);
    if (total < 0)
        return (int)total;
    struct shmq__putv_op op = {iov, iovcnt, (uint64_t)total};
    return shmq__run(q, shmq__putv_attempt, &op, &q->hdr->not_full.word,
                     timeout_ns);
}

/* ------------------------------------------------------------------ */
/* put_many                                                             */
/* ------------------------------------------------------------------ */

/* What is left of an absolute deadline, as a relative timeout. */
static int64_t remaining(wait_deadline_t deadline)
{
    if (deadline < 0)
        return SHMQ_FOREVER;
    int64_t left = deadline - wait_now();
    return left > 0 ? left : SHMQ_NOWAIT;
}

/* ------------------------------------------------------------------ */
/* Packed records: a batch paying the synchronisation once              */
/* ------------------------------------------------------------------ */

/* How many of msgs[0..n) go into one packed record (lib/packed.h): small
 * messages, up to the record's limits. 1 when packing does not pay or is
 * not allowed: a JoinableQueue counts records for join, one per task. */
/* A run of messages that goes into one packed record. */
struct pack {
    size_t k;       /* messages (1: do not pack) */
    uint64_t bytes; /* of the packed record */
    uint64_t units; /* the same messages as separate records would take */
};

static struct pack pack_run(const struct shmq *q, const struct iovec *msgs,
                            size_t n)
{
    struct pack p = {1, 0, 0};
    if (q->geo.flags & SHMQ_JOINABLE)
        return p;
    uint32_t max_units = q->geo.cap_units < DESC_PACKED_UNITS
                             ? q->geo.cap_units
                             : DESC_PACKED_UNITS;
    uint64_t max_bytes = (uint64_t)max_units << q->geo.unit_shift;
    uint64_t bytes = 0, units = 0;
    size_t k = 0;
    while (k < n && k < PACKED_SPAN_MAX && k < q->geo.maxsize &&
           msgs[k].iov_len <= PACKED_MSG_MAX) {
        uint64_t more = sizeof(struct packed_entry) +
                        ((msgs[k].iov_len + 7) & ~(uint64_t)7);
        if (bytes + more > max_bytes)
            break;
        bytes += more;
        units += units_for(q, msgs[k].iov_len);
        k++;
    }
    if (k >= 2)
        p = (struct pack){k, bytes, units};
    return p;
}

struct packed_op {
    const struct iovec *msgs;
    struct pack p;
};

/* Claim, write and commit one packed record: its messages are delivered
 * all together or, if the queue was closed before the commit, none. */
static int packed_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    const struct packed_op *op = arg;
    if (shmq__closed(q))
        return -EPIPE;
    struct ring_ref ref;
    int rc =
        shmq__ring_claim_packed(q, (uint32_t)op->p.k, op->p.bytes, &ref, s);
    if (rc < 0)
        return rc;
    shmq__packed_write(q, &ref, op->msgs, op->p.k);
    if (shmq__ring_commit(q, &ref, op->p.bytes) < 0)
        return -EBADMSG;
    rc = shmq__put_settle(q, &ref);
    /* shmq__put_settle woke one consumer: one per message, as puts do */
    for (size_t i = 1; rc == 0 && i < op->p.k; i++)
        wait_signal(&q->hdr->not_empty.word);
    return rc;
}

/* Storage units of a batch, counted as the queue counts room. */
static uint64_t batch_units(const struct shmq *q, const struct iovec *msgs,
                            size_t n)
{
    uint64_t units = 0;
    for (size_t i = 0; i < n; i++)
        units += units_for(q, msgs[i].iov_len);
    return units;
}

/* Is there room now for a packed record and, after it, for the `rest`
 * units of the batch as separate records? A packed record takes 16
 * bytes more per message, so a batch that fills the queue must not be
 * packed: it would fit fewer messages than put's count. */
static bool pack_fits(struct shmq *q, const struct pack *p, uint64_t rest)
{
    return shmq__ring_has_room(q, (uint32_t)p->k,
                               units_for(q, p->bytes) + rest);
}

/* One packed record, without waiting. */
static int put_packed_now(struct shmq *q, const struct iovec *msgs,
                          const struct pack *p)
{
    struct packed_op op = {msgs, *p};
    return shmq__run(q, packed_attempt, &op, &q->hdr->not_full.word,
                     SHMQ_NOWAIT);
}

/* Without flags: like write(2) on a pipe, as many as fit by the deadline.
 * Runs of small messages go as packed records while the whole rest of
 * the batch still fits; a wait for room is for one message, as put's. */
static int put_some(struct shmq *q, const struct iovec *msgs, size_t n,
                    int64_t timeout_ns)
{
    wait_deadline_t deadline = wait_deadline(timeout_ns);
    uint64_t left = batch_units(q, msgs, n); /* of msgs[done..n) */
    size_t done = 0;
    while (done < n) {
        struct pack p = pack_run(q, msgs + done, n - done);
        if (p.k >= 2 && pack_fits(q, &p, left - p.units)) {
            int rc = put_packed_now(q, msgs + done, &p);
            if (rc == 0) {
                done += p.k;
                left -= p.units;
                continue;
            }
            if (rc != -EAGAIN) {
                if (done > 0)
                    break;
                return rc;
            }
        }
        int64_t t = done == 0 ? timeout_ns : remaining(deadline);
        int rc = shmq_put(q, msgs[done].iov_base, msgs[done].iov_len, t);
        if (rc < 0) {
            if (done > 0)
                break;
            return rc;
        }
        left -= units_for(q, msgs[done].iov_len);
        done++;
    }
    return done > INT_MAX ? INT_MAX : (int)done;
}

struct all_op {
    const struct iovec *msgs;
    size_t n;
    uint64_t units;        /* storage units of the whole batch */
    struct ring_ref *refs; /* n of them, on the caller's stack or heap */
    struct pack pack;      /* k == n: the batch can be one record */
};

/* Give back the first k claims of an SHMQ_ALL batch. */
static void abort_claims(struct shmq *q, const struct ring_ref *refs, size_t k)
{
    for (size_t i = 0; i < k; i++)
        shmq__ring_abort(q, &refs[i]);
    if (k)
        wait_signal(&q->hdr->not_empty.word);
}

/* Claim all n records or none; then write and commit them in order.
 * Nothing is visible before every claim succeeded. */
static int all_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    struct all_op *op = arg;
    if (shmq__closed(q))
        return -EPIPE;
    /* Look before claiming: claims given back are aborted records, whose
     * room returns only when release passes them, in ring order. Only a
     * race with another producer can still make a claim fail. */
    shmq__ring_advance_release(q);
    /* One packed record is published (and withdrawn) at once: the whole
     * batch or nothing also against a close. */
    if (op->pack.k >= 2 && op->pack.k == op->n && pack_fits(q, &op->pack, 0)) {
        struct packed_op one = {op->msgs, op->pack};
        int rc = packed_attempt(q, &one, s);
        if (rc != -EAGAIN)
            return rc;
    }
    if (!shmq__ring_has_room(q, (uint32_t)op->n, op->units)) {
        shmq__ring_release_stall(q, s, true);
        return -EAGAIN;
    }
    for (size_t i = 0; i < op->n; i++) {
        int rc = shmq__ring_claim(q, op->msgs[i].iov_len, &op->refs[i], s);
        if (rc < 0) {
            abort_claims(q, op->refs, i);
            return rc;
        }
    }
    int bad = 0;
    for (size_t i = 0; i < op->n; i++) {
        if (op->msgs[i].iov_len)
            memcpy(ring_addr(q, op->refs[i].pos), op->msgs[i].iov_base,
                   op->msgs[i].iov_len);
        if (shmq__ring_commit(q, &op->refs[i], op->msgs[i].iov_len) < 0)
            bad = -EBADMSG;
    }
    if (bad)
        return bad;
    /* A close before the commits: withdraw the batch, unless a consumer
     * took its first message already (then it drains the rest). */
    if (__atomic_load_n(&q->hdr->closed.word, __ATOMIC_SEQ_CST) &&
        shmq__ring_withdraw(q, &op->refs[0]) == 0) {
        for (size_t i = 1; i < op->n; i++)
            shmq__ring_withdraw(q, &op->refs[i]);
        wait_signal(&q->hdr->not_empty.word);
        return -EPIPE;
    }
    /* A wake is for one sleeper (wait.h): one per message, or consumers
     * sleeping beside the one woken would miss the rest of the batch. */
    for (size_t i = 0; i < op->n; i++)
        wait_signal(&q->hdr->not_empty.word);
    return 0;
}

/* Claims of a batch: on the stack when small, else one allocation per
 * call (not per message). */
#define ALL_STACK_REFS 64

static int put_all(struct shmq *q, const struct iovec *msgs, size_t n,
                   int64_t timeout_ns)
{
    uint64_t units = batch_units(q, msgs, n);
    if (n > q->geo.maxsize || units > q->geo.cap_units)
        return -EMSGSIZE; /* could never fit */
    struct ring_ref stack_refs[ALL_STACK_REFS];
    struct ring_ref *refs = stack_refs;
    if (n > ALL_STACK_REFS) {
        refs = calloc(n, sizeof *refs);
        if (!refs)
            return -ENOMEM;
    }
    /* Each attempt puts one packed record when there is room for it, else
     * separate records when there is room for those (a packed record
     * takes more: put's count of what fits must hold). */
    struct all_op op = {msgs, n, units, refs, pack_run(q, msgs, n)};
    int rc = shmq__run(q, all_attempt, &op, &q->hdr->not_full.word, timeout_ns);
    if (refs != stack_refs)
        free(refs);
    return rc < 0 ? rc : (int)n;
}

SHMQ_PUBLIC int shmq_put_many(shmq_t *q, const struct iovec *msgs, size_t n,
                              unsigned flags, int64_t timeout_ns)
{
    if (!q || (!msgs && n) || (flags & ~SHMQ_ALL) ||
        shmq__bad_timeout(timeout_ns) || n > INT_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].iov_base && msgs[i].iov_len)
            return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].iov_len > q->geo.max_message)
            return -EMSGSIZE;
    }
    if (n == 0)
        return 0;
    return flags & SHMQ_ALL ? put_all(q, msgs, n, timeout_ns)
                            : put_some(q, msgs, n, timeout_ns);
}

/* ------------------------------------------------------------------ */
/* get_many                                                             */
/* ------------------------------------------------------------------ */

struct many_op {
    unsigned char *buf;
    size_t cap;
    struct iovec *msgs;
    size_t max_msgs;
    size_t count;
    size_t used; /* bytes of buf used, rounded up to 8 */
};

/* Record a message taken into buf at offset off. */
static void took(struct many_op *op, unsigned char *dst, size_t off,
                 uint64_t len)
{
    op->msgs[op->count].iov_base = dst;
    op->msgs[op->count].iov_len = (size_t)len;
    op->count++;
    op->used = off + len;
}

/* After a message of a packed record: the next ones of that record, one
 * CAS each and no walk, while they are there and fit. */
static void take_rest_of_record(struct shmq *q, struct many_op *op,
                                struct ring_ref *ref)
{
    size_t k =
        shmq__packed_take_run(q, ref, op->buf, op->cap, &op->used,
                              op->msgs + op->count, op->max_msgs - op->count);
    op->count += k;
    if (k)
        shmq__freed(q, ref);
}

/* Take one message into buf at the next 8-byte offset. 0, or the errors
 * of shmq__take (-ENOBUFS: it does not fit, nothing taken). */
static int take_one(struct shmq *q, struct many_op *op, struct ring_stall *s)
{
    size_t off = (op->used + 7) & ~(size_t)7;
    /* Past the end of buf there is no 8-byte offset left, not even for
     * a 0-byte message (the first one is always at offset 0). */
    if (off > op->cap)
        return -ENOBUFS;
    unsigned char *dst = op->buf ? op->buf + off : NULL;
    uint64_t len = 0;
    struct ring_ref ref;
    int rc = shmq__take(q, dst, op->cap - off, &len, &ref, s);
    if (rc == -ENOBUFS && op->count == 0)
        op->msgs[0].iov_len = (size_t)len;
    if (rc < 0)
        return rc;
    if (!ref.copied) {
        if (len && dst) /* dst is NULL only for cap 0: len 0 */
            memcpy(dst, ref_data(q, &ref), len);
        rc = shmq__ring_free(q, &ref);
    }
    shmq__freed(q, &ref);
    took(op, dst, off, len);
    if (rc == 0 && ref.entry && ref.copied)
        take_rest_of_record(q, op, &ref);
    return rc;
}

static int many_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    struct many_op *op = arg;
    int rc = take_one(q, op, s);
    if (rc < 0)
        return rc;
    /* More of what is there now, without waiting. */
    struct ring_stall ignored;
    while (op->count < op->max_msgs && take_one(q, op, &ignored) == 0)
        ;
    return 0;
}

SHMQ_PUBLIC int shmq_get_many(shmq_t *q, void *buf, size_t cap,
                              struct iovec *msgs, size_t max_msgs,
                              int64_t timeout_ns)
{
    if (!q || !msgs || max_msgs == 0 || (!buf && cap) ||
        shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    struct many_op op = {
        buf, cap, msgs, max_msgs > INT_MAX ? INT_MAX : max_msgs, 0, 0};
    int rc =
        shmq__run(q, many_attempt, &op, &q->hdr->not_empty.word, timeout_ns);
    if (rc == -ENOBUFS) /* the wake that brought us here is another's */
        wait_signal(&q->hdr->not_empty.word);
    return rc < 0 ? rc : (int)op.count;
}
