/* SPDX-License-Identifier: MIT */
/*
 * packed.c - several messages in one record: the entries of a packed
 * record and the state of each message (packed.h has the format).
 *
 * Everything here reads a record's bytes, which any process may have
 * scribbled on: the descriptor word says how many entries there are and
 * how big the record is; every entry is checked against both before its
 * offset or length is used.
 */
#include <errno.h>
#include <string.h>

#include "packed.h"

#define ENTRY_TAG 0xb7u

enum entry_state {
    ENTRY_AVAIL = 1,
    ENTRY_TAKEN = 2,
    ENTRY_DONE = 3,
    ENTRY_WITHDRAWN = 4,
};

static uint64_t entry_word(uint32_t seq, unsigned st, unsigned slot)
{
    return (uint64_t)seq | (uint64_t)ENTRY_TAG << 32 | (uint64_t)st << 40 |
           (uint64_t)(slot & (SHMQ_PARTICIPANTS - 1)) << 43;
}
static unsigned entry_state(uint64_t e)
{
    return (unsigned)(e >> 40) & 7u;
}
static unsigned entry_slot(uint64_t e)
{
    return (unsigned)(e >> 43) & (SHMQ_PARTICIPANTS - 1);
}

static uint64_t round8(uint64_t v)
{
    return (v + 7) & ~(uint64_t)7;
}

/* A committed packed record, opened: its entries, checked sizes. */
struct rec {
    uint32_t seq;
    uint64_t word;
    uint32_t span;
    uint64_t bytes;
    unsigned char *base;
    struct packed_entry *e;
};

/* 0, -1 (the record changed: walk again), -EBADMSG. */
static int rec_open(struct shmq *q, uint32_t seq, uint32_t pos, uint64_t w,
                    struct rec *r)
{
    struct shmq_desc *d = ring_desc(q, seq);
    uint64_t bytes = __atomic_load_n(&d->len, __ATOMIC_ACQUIRE);
    if (load_acquire(&d->word) != w)
        return -1;
    r->seq = seq;
    r->word = w;
    r->span = desc_span(w);
    r->bytes = bytes;
    r->base = ring_addr(q, pos);
    r->e = (struct packed_entry *)(void *)r->base;
    uint64_t room = (uint64_t)desc_units(w) << q->geo.unit_shift;
    if (bytes < (uint64_t)r->span * sizeof(struct packed_entry) || bytes > room)
        return -EBADMSG;
    return 0;
}

/* Entry i's state word, checked to belong to this record. */
static int entry_load(const struct rec *r, uint32_t i, uint64_t *e)
{
    *e = __atomic_load_n(&r->e[i].state, __ATOMIC_SEQ_CST);
    if ((uint32_t)*e == r->seq && (unsigned)(*e >> 32 & 0xff) == ENTRY_TAG &&
        entry_state(*e) >= ENTRY_AVAIL && entry_state(*e) <= ENTRY_WITHDRAWN)
        return 0;
    /* A stale view: the record was freed meanwhile, or the walk that
     * found it summed a size that has shrunk since (ring.c, "Short
     * commits") and looks at the wrong place. Either way the caller
     * looks again; scribbles end as -EBADMSG by its retry limit. */
    return -1;
}

static bool entry_cas(const struct rec *r, uint32_t i, uint64_t from,
                      uint64_t to)
{
    /* seq_cst: a finisher's scan (below) and ours see each other's DONE */
    return __atomic_compare_exchange_n(&r->e[i].state, &from, to, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

/* Where to start looking for the first entry to take: every entry
 * before the one after this handle's last take from the record is taken
 * (an entry never becomes AVAIL again), entry 0 included, so it is not
 * WITHDRAWN either. */
static uint32_t first_start(const struct shmq *q, const struct rec *r)
{
    uint64_t hint = load_relaxed(&q->packed_hint);
    uint32_t from = (uint32_t)hint;
    return (uint32_t)(hint >> 32) == r->seq && from < r->span ? from : 0;
}

/* The first entry to take: its index, or span if none. */
static int first_avail(const struct shmq *q, const struct rec *r, uint32_t *at)
{
    for (uint32_t i = first_start(q, r); i < r->span; i++) {
        uint64_t e;
        int rc = entry_load(r, i, &e);
        if (rc < 0)
            return rc;
        if (i == 0 && entry_state(e) == ENTRY_WITHDRAWN)
            break;
        if (entry_state(e) == ENTRY_AVAIL) {
            *at = i;
            return 0;
        }
    }
    *at = r->span;
    return 0;
}

/* Free the record if every entry is done: true if this call did. An
 * entry that is not this record's (scribbles, or a caller looking at
 * the wrong place) never counts as done. */
static bool finish(struct shmq *q, const struct rec *r)
{
    for (uint32_t i = r->span; i-- > 0;) {
        uint64_t e;
        if (entry_load(r, i, &e) < 0 ||
            (entry_state(e) != ENTRY_DONE && entry_state(e) != ENTRY_WITHDRAWN))
            return false;
    }
    uint64_t w = r->word;
    /* seq_cst: as shmq__ring_free (our reads of the bytes come first,
     * and the waker's load of the not_full event after) */
    return __atomic_compare_exchange_n(&ring_desc(q, r->seq)->word, &w,
                                       desc_with(w, DESC_FREE, q->slot), 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

void shmq__packed_write(const struct shmq *q, const struct ring_ref *ref,
                        const struct iovec *msgs, size_t k)
{
    unsigned char *base = ring_addr(q, ref->pos);
    struct packed_entry *e = (struct packed_entry *)(void *)base;
    uint64_t off = (uint64_t)k * sizeof *e;
    for (size_t i = 0; i < k; i++) {
        if (msgs[i].iov_len)
            memcpy(base + off, msgs[i].iov_base, msgs[i].iov_len);
        e[i].off = (uint32_t)off;
        e[i].len = (uint32_t)msgs[i].iov_len;
        /* published by the commit's CAS */
        store_relaxed(&e[i].state, entry_word(ref->seq, ENTRY_AVAIL, 0));
        off += round8(msgs[i].iov_len);
    }
}

int shmq__packed_avail(struct shmq *q, uint32_t seq, uint32_t pos, uint64_t w)
{
    struct rec r;
    uint32_t i = 0;
    int rc = rec_open(q, seq, pos, w, &r);
    if (rc == 0)
        rc = first_avail(q, &r, &i);
    return rc < 0 ? rc : i < r.span;
}

uint32_t shmq__packed_count(struct shmq *q, uint32_t seq, uint32_t pos,
                            uint64_t w)
{
    struct rec r;
    uint32_t n = 0, i = 0;
    if (rec_open(q, seq, pos, w, &r) < 0 || first_avail(q, &r, &i) < 0)
        return 0;
    for (; i < r.span; i++) {
        uint64_t e;
        if (entry_load(&r, i, &e) < 0)
            return 0;
        n += entry_state(e) == ENTRY_AVAIL;
    }
    return n;
}

int shmq__packed_take(struct shmq *q, uint32_t seq, uint32_t pos, uint64_t w,
                      void *buf, size_t cap, uint64_t *len,
                      struct ring_ref *ref)
{
    struct rec r;
    uint32_t i = 0;
    int rc = rec_open(q, seq, pos, w, &r);
    if (rc == 0)
        rc = first_avail(q, &r, &i);
    if (rc < 0)
        return rc == -1 ? 1 : rc;
    if (i == r.span)
        return 1; /* taken meanwhile: the walk passes it now */
    uint64_t off = r.e[i].off, n = r.e[i].len;
    if (off < (uint64_t)r.span * sizeof(struct packed_entry) || off % 8 ||
        off > r.bytes || n > r.bytes - off || n > q->geo.max_message)
        return load_acquire(&ring_desc(q, seq)->word) != w ? 1 : -EBADMSG;
    if (n > cap) {
        *len = n;
        return -ENOBUFS;
    }
    *ref = (struct ring_ref){.seq = seq,
                             .pos = pos,
                             .units = desc_units(w),
                             .size = desc_size(w),
                             .entry = i + 1,
                             .off = (uint32_t)off,
                             .d = ring_desc(q, seq)};
    uint64_t avail = entry_word(seq, ENTRY_AVAIL, 0);
    if (buf && n <= RING_COPY_FIRST_MAX) {
        /* As take_record: the record stays until every entry is done,
         * so if our CAS succeeds, what we copied is the message. */
        unsigned char bounce[RING_COPY_FIRST_MAX > 0 ? RING_COPY_FIRST_MAX : 1];
        memcpy(bounce, r.base + off, n);
        if (!entry_cas(&r, i, avail, entry_word(seq, ENTRY_DONE, q->slot)))
            return 1;
        memcpy(buf, bounce, n);
        ref->copied = true;
        ref->freed = finish(q, &r);
    } else if (!entry_cas(&r, i, avail,
                          entry_word(seq, ENTRY_TAKEN, q->slot))) {
        return 1;
    }
    store_relaxed(&q->packed_hint, (uint64_t)seq << 32 | (i + 1));
    *len = n;
    return 0;
}

size_t shmq__packed_take_run(struct shmq *q, struct ring_ref *ref,
                             unsigned char *buf, size_t cap, size_t *used,
                             struct iovec *msgs, size_t max)
{
    uint64_t w = load_acquire(&ring_desc(q, ref->seq)->word);
    unsigned st = desc_state(w);
    struct rec r;
    if (desc_seq(w) != ref->seq || desc_size(w) != ref->size ||
        (st != DESC_COMMITTED && st != DESC_LATE) ||
        rec_open(q, ref->seq, ref->pos, w, &r) < 0)
        return 0;
    uint64_t avail = entry_word(ref->seq, ENTRY_AVAIL, 0);
    uint64_t done = entry_word(ref->seq, ENTRY_DONE, q->slot);
    uint64_t min_off = (uint64_t)r.span * sizeof(struct packed_entry);
    size_t k = 0;
    /* the entry after the one taken: every entry before it is taken */
    for (uint32_t i = ref->entry; i < r.span && k < max; i++) {
        size_t at = (*used + 7) & ~(size_t)7;
        uint64_t off = r.e[i].off, n = r.e[i].len;
        if (at > cap ||
            __atomic_load_n(&r.e[i].state, __ATOMIC_ACQUIRE) != avail ||
            off < min_off || off % 8 || off > r.bytes || n > r.bytes - off ||
            n > cap - at)
            break; /* taken by another, scribbled (the next walk tells),
                      or it does not fit */
        unsigned char *dst = buf ? buf + at : NULL;
        if (RING_COPY_FIRST_MAX > 0) {
            /* Copy, then CAS: if the CAS fails, bytes past what get_many
             * returns are just not part of its answer. */
            if (n && dst)
                memcpy(dst, r.base + off, n);
            if (!entry_cas(&r, i, avail, done))
                break;
        } else { /* ThreadSanitizer builds: take, copy, end */
            uint64_t taken = entry_word(ref->seq, ENTRY_TAKEN, q->slot);
            if (!entry_cas(&r, i, avail, taken))
                break;
            if (n && dst)
                memcpy(dst, r.base + off, n);
            entry_cas(&r, i, taken, done);
        }
        msgs[k++] = (struct iovec){dst, (size_t)n};
        *used = at + n;
        ref->entry = i + 1;
    }
    if (k) {
        ref->freed = finish(q, &r);
        store_relaxed(&q->packed_hint, (uint64_t)ref->seq << 32 | ref->entry);
    }
    return k;
}

/* The record a ref of ours names, opened (its word must still be a
 * committed packed record of that size). */
static bool ref_open(struct shmq *q, const struct ring_ref *ref, struct rec *r)
{
    uint64_t w = load_acquire(&ring_desc(q, ref->seq)->word);
    unsigned st = desc_state(w);
    return desc_seq(w) == ref->seq && desc_size(w) == ref->size &&
           desc_packed(w) && (st == DESC_COMMITTED || st == DESC_LATE) &&
           ref->entry >= 1 && ref->entry <= desc_span(w) &&
           rec_open(q, ref->seq, ref->pos, w, r) == 0;
}

int shmq__packed_done(struct shmq *q, struct ring_ref *ref)
{
    struct rec r;
    if (!ref_open(q, ref, &r) ||
        !entry_cas(&r, ref->entry - 1,
                   entry_word(ref->seq, ENTRY_TAKEN, q->slot),
                   entry_word(ref->seq, ENTRY_DONE, q->slot)))
        return -EBADMSG;
    ref->freed = finish(q, &r);
    return 0;
}

int shmq__packed_withdraw(struct shmq *q, struct ring_ref *ref)
{
    struct rec r;
    struct ring_ref first = *ref;
    first.entry = 1;
    uint64_t avail = entry_word(ref->seq, ENTRY_AVAIL, 0);
    uint64_t gone = entry_word(ref->seq, ENTRY_WITHDRAWN, q->slot);
    if (!ref_open(q, &first, &r) || !entry_cas(&r, 0, avail, gone))
        return 1;
    /* Consumers take nothing past a withdrawn entry 0. */
    for (uint32_t i = 1; i < r.span; i++)
        entry_cas(&r, i, avail, gone);
    ref->freed = finish(q, &r);
    return 0;
}

unsigned shmq__packed_holder(struct shmq *q, uint32_t seq, uint32_t pos,
                             uint64_t w, unsigned *slot)
{
    struct rec r;
    if (rec_open(q, seq, pos, w, &r) < 0)
        return 0;
    bool all_done = true;
    for (uint32_t i = 0; i < r.span; i++) {
        uint64_t e;
        if (entry_load(&r, i, &e) < 0)
            return 0;
        if (entry_state(e) == ENTRY_TAKEN) {
            *slot = entry_slot(e);
            return i + 1;
        }
        all_done &= entry_state(e) != ENTRY_AVAIL;
    }
    if (all_done) /* its finisher died between its entry and the word */
        finish(q, &r);
    return 0;
}

bool shmq__packed_end_taken(struct shmq *q, uint32_t seq, uint32_t pos,
                            uint64_t w, unsigned slot, unsigned only)
{
    struct rec r;
    if (rec_open(q, seq, pos, w, &r) < 0 || only > r.span)
        return false;
    bool ended = false;
    uint64_t taken = entry_word(seq, ENTRY_TAKEN, slot);
    uint64_t done = entry_word(seq, ENTRY_DONE, slot);
    for (uint32_t i = only ? only - 1 : 0; i < (only ? only : r.span); i++)
        ended |= entry_cas(&r, i, taken, done);
    finish(q, &r);
    return ended;
}
