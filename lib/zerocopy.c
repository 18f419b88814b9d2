/* SPDX-License-Identifier: MIT */
/*
 * zerocopy.c - put and get in place: a reservation (put_begin, then
 * put_commit or put_abort) is a claimed record the caller writes into;
 * a borrow (get_begin, then get_end) is a taken record the caller reads
 * from. Both are ordinary records in flight for the ring, named by their
 * descriptor word, which holds this handle's participant slot: that word
 * is the only proof a struct shmq_msg is accepted on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>

#include "attempt.h"
#include "queue.h"
#include "wait.h"

/* priv[0]: the record's size field and sequence number.
 * priv[1]: a tag saying what the message is, the entry + 1 of a message
 * of a packed record (0 otherwise), and the record's ring position. */
#define MSG_TAG         0x5a43000000000000ull
#define MSG_TAG_MASK    0xffff000000000000ull
#define MSG_RESERVED    (1ull << 40)
#define MSG_BORROWED    (2ull << 40)
#define MSG_KIND_MASK   (3ull << 40)
#define MSG_ENTRY_SHIFT 32
#define MSG_ENTRY_MASK  0xffull

static void msg_set(struct shmq *q, struct shmq_msg *m,
                    const struct ring_ref *ref, uint64_t kind, size_t len)
{
    m->data = ref_data(q, ref);
    m->len = len;
    m->priv[0] = (uint64_t)ref->size << 32 | ref->seq;
    m->priv[1] =
        MSG_TAG | kind | (uint64_t)ref->entry << MSG_ENTRY_SHIFT | ref->pos;
}

/* The record m names, if m is of this kind (the word is checked by the
 * caller's CAS). false: not one of ours. */
static bool msg_ref(const struct shmq *q, const struct shmq_msg *m,
                    uint64_t kind, struct ring_ref *ref)
{
    if ((m->priv[1] & MSG_TAG_MASK) != MSG_TAG ||
        (m->priv[1] & MSG_KIND_MASK) != kind)
        return false;
    uint32_t size = (uint32_t)(m->priv[0] >> 32);
    *ref = (struct ring_ref){
        .seq = (uint32_t)m->priv[0],
        .units = desc_units(desc_pack(0, 0, 0, size)),
        .size = size,
        .entry = (uint32_t)(m->priv[1] >> MSG_ENTRY_SHIFT & MSG_ENTRY_MASK),
        .pos = (uint32_t)m->priv[1],
        .reserve = kind == MSG_RESERVED};
    if (ref->units < 1 ||
        ref->units > (ref->entry ? q->geo.cap_units : q->geo.max_units) ||
        size >= 1u << DESC_SIZE_BITS || (ref->entry && kind != MSG_BORROWED))
        return false;
    /* Another queue's message may name the same record: data says whose
     * it is (within the record: a message of a packed one is inside). */
    uintptr_t off = (uintptr_t)m->data - (uintptr_t)ring_addr(q, ref->pos);
    return ref->entry ? off < (uintptr_t)ref->units << q->geo.unit_shift
                      : off == 0;
}

static void msg_clear(struct shmq_msg *m)
{
    m->priv[0] = m->priv[1] = 0;
}

/* Is the record still this handle's reservation (being written, perhaps
 * skipped by consumers already)? */
static bool reserved_by_us(const struct shmq *q, const struct ring_ref *ref)
{
    uint64_t w = load_acquire(&ring_desc(q, ref->seq)->word);
    return w == desc_pack(ref->seq, DESC_WRITING, q->slot, ref->size) ||
           w == desc_pack(ref->seq, DESC_SKIPPED, q->slot, ref->size);
}

/* ------------------------------------------------------------------ */
/* Reservations                                                         */
/* ------------------------------------------------------------------ */

struct begin_op {
    size_t max_len;
    struct shmq_msg *m;
};

static int put_begin_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    struct begin_op *op = arg;
    if (shmq__closed(q))
        return -EPIPE;
    struct ring_ref ref;
    int rc = shmq__ring_reserve(q, op->max_len, &ref, s);
    if (rc == 0)
        msg_set(q, op->m, &ref, MSG_RESERVED, op->max_len);
    return rc;
}

SHMQ_PUBLIC int shmq_put_begin(shmq_t *q, size_t max_len, struct shmq_msg *m,
                               int64_t timeout_ns)
{
    if (!q || !m || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    if (max_len > q->geo.max_message)
        return -EMSGSIZE;
    struct begin_op op = {max_len, m};
    return shmq__run(q, put_begin_attempt, &op, &q->hdr->not_full.word,
                     timeout_ns);
}

SHMQ_PUBLIC int shmq_put_commit(shmq_t *q, struct shmq_msg *m, size_t len)
{
    struct ring_ref ref;
    if (!q || !m || len > m->len || !msg_ref(q, m, MSG_RESERVED, &ref) ||
        units_for(q, len) > ref.units)
        return -EINVAL;
    /* A forked child's copy of the handle takes a slot of its own first,
     * so the parent's reservations are not its to end. */
    if (shmq__ensure(q) < 0 || !reserved_by_us(q, &ref))
        return -EINVAL;
    int saved = errno;
    int rc;
    if (shmq__closed(q)) {
        rc = shmq__ring_abort(q, &ref) < 0 ? -EINVAL : -EPIPE;
        wait_signal(&q->hdr->not_empty.word);
    } else {
        uint32_t claimed = ref.units;
        rc = shmq__ring_commit(q, &ref, len) < 0 ? -EINVAL
                                                 : shmq__put_settle(q, &ref);
        if (ref.units < claimed) /* room given back */
            wait_signal(&q->hdr->not_full.word);
    }
    errno = saved;
    msg_clear(m);
    return rc;
}

SHMQ_PUBLIC int shmq_put_abort(shmq_t *q, struct shmq_msg *m)
{
    struct ring_ref ref;
    if (!q || !m || !msg_ref(q, m, MSG_RESERVED, &ref))
        return -EINVAL;
    if (shmq__ensure(q) < 0 || !reserved_by_us(q, &ref) ||
        shmq__ring_abort(q, &ref) < 0)
        return -EINVAL;
    int saved = errno;
    /* A consumer may wait for this record to land, and a producer for
     * its room (which comes back once release passes it). */
    wait_signal(&q->hdr->not_empty.word);
    wait_signal(&q->hdr->not_full.word);
    errno = saved;
    msg_clear(m);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Borrows                                                              */
/* ------------------------------------------------------------------ */

static int get_begin_attempt(struct shmq *q, void *arg, struct ring_stall *s)
{
    struct shmq_msg *m = arg;
    struct ring_ref ref;
    uint64_t len;
    /* No buffer: the record (or its message, in a packed record) is
     * taken, not copied. */
    int rc = shmq__take(q, NULL, SIZE_MAX, &len, &ref, s);
    if (rc == 0)
        msg_set(q, m, &ref, MSG_BORROWED, (size_t)len);
    return rc;
}

SHMQ_PUBLIC int shmq_get_begin(shmq_t *q, struct shmq_msg *m,
                               int64_t timeout_ns)
{
    if (!q || !m || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    return shmq__run(q, get_begin_attempt, m, &q->hdr->not_empty.word,
                     timeout_ns);
}

SHMQ_PUBLIC int shmq_get_end(shmq_t *q, struct shmq_msg *m)
{
    struct ring_ref ref;
    if (!q || !m || !msg_ref(q, m, MSG_BORROWED, &ref))
        return -EINVAL;
    if (shmq__ensure(q) < 0 || shmq__ring_free(q, &ref) < 0)
        return -EINVAL;
    int saved = errno;
    shmq__freed(q, &ref);
    errno = saved;
    msg_clear(m);
    return 0;
}
