/* SPDX-License-Identifier: MIT */
/*
 * ring.c - the bounded MPMC ring of variable-size records.
 *
 * Three position words (seq << 32 | units) chase each other:
 *
 *     release <= head <= tail        (as sequence numbers, mod 2^32)
 *
 * [release, head) records are being read (or were, and wait for release
 * to pass them); [head, tail) are being written or wait for a consumer.
 * A record's state lives in its descriptor word desc[seq % N]; every
 * transition is one CAS on that word, which also names the owner and the
 * record's size. Position words are only hints that anyone may advance
 * past a record whose descriptor says it is claimed (tail), taken (head)
 * or freed (release); so no process ever waits for another to move them,
 * and one that dies never leaves them stuck.
 *
 * Progress: claim, take, free and the helping steps are lock-free: a CAS
 * fails only because another process succeeded. A consumer waits only
 * for the writer of the very record it is next to take (FIFO order of
 * claim demands it); if that writer dies, liveness says so and the record
 * is aborted.
 */
#include <errno.h>
#include <string.h>

#include "ring.h"

/* Attempts before a step concludes that nobody makes progress and the
 * region must have been scribbled on. Each failed attempt means another
 * process completed a step, so honest contention never gets close. */
#define RING_RETRIES (1u << 18)
/* Largest payload a consumer copies before it claims the record (see
 * take_once). Larger ones are claimed first, so that consumers racing
 * for one record do not all copy it. Under ThreadSanitizer, which would
 * rightly see the copy of a record that another consumer freed and a
 * producer reused as a race (the CAS then fails and the copy is
 * dropped), every record is claimed first. */
#if defined(__SANITIZE_THREAD__)
#define RING_COPY_FIRST_MAX 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_COPY_FIRST_MAX 0
#endif
#endif
#ifndef RING_COPY_FIRST_MAX
#define RING_COPY_FIRST_MAX 4096
#endif
/* Most records one CAS moves release past. */
#define RELEASE_BATCH 64u

struct shmq_desc *ring_desc(const struct shmq *q, uint32_t seq)
{
    /* Consecutive sequence numbers go to consecutive cache lines (four
     * descriptors a line), so a producer claiming seq + 1 does not steal
     * the line a consumer is taking seq from. */
    uint32_t n = q->geo.desc_count, s = seq & (n - 1);
    if (n < 16)
        return &q->desc[s];
    uint32_t lines = n / 4;
    return &q->desc[(s & (lines - 1)) * 4 + (s / lines)];
}

static bool units_ok(const struct shmq *q, uint32_t units)
{
    return units >= 1 && units <= q->geo.max_units;
}

/* Advance a position word from (seq, pos) past a record of `units`,
 * unless somebody already did. */
static void pos_help(uint64_t *word, uint64_t seen, uint32_t units)
{
    uint64_t next = pos_pack(pos_seq(seen) + 1, pos_units(seen) + units);
    cas_acq_rel(word, &seen, next);
}

/* The tail still points at `seq` when its claimer stopped between the
 * descriptor CAS and the tail CAS; move it on before the record can be
 * taken or aborted, so that head never passes tail. */
static void tail_help(struct shmq *q, uint32_t seq, uint32_t units)
{
    uint64_t t = load_acquire(&q->hdr->tail.word);
    if (pos_seq(t) == seq)
        pos_help(&q->hdr->tail.word, t, units);
}

/* When full, what keeps release from moving: a record being read, or,
 * when release has caught up with head, one being written. */
static void release_stall(struct shmq *q, struct ring_stall *stall)
{
    uint64_t r = load_acquire(&q->hdr->release.word);
    uint64_t w = load_acquire(&ring_desc(q, pos_seq(r))->word);
    unsigned st = desc_state(w);
    stall->has_owner =
        desc_seq(w) == pos_seq(r) && (st == DESC_READING || st == DESC_WRITING);
    stall->word = w;
}

/* One claim attempt on a snapshot t of the tail.
 * 0: claimed; 1: try again; -EAGAIN: full; -EBADMSG: corrupt. */
static int claim_once(struct shmq *q, uint64_t t, uint32_t units,
                      struct ring_ref *ref)
{
    struct shmq_header *h = q->hdr;
    uint32_t seq = pos_seq(t), pos = pos_units(t);
    /* Order: tail, release, descriptor. release read after tail can
     * only be newer (more room); the descriptor read after release
     * already shows what release passed. */
    uint64_t r = load_acquire(&h->release.word);
    struct shmq_desc *d = ring_desc(q, seq);
    uint64_t w = load_acquire(&d->word);

    if (desc_seq(w) == seq) { /* claimed, tail not yet moved: help */
        if (!units_ok(q, desc_units(w)))
            return -EBADMSG;
        pos_help(&h->tail.word, t, desc_units(w));
        return 1;
    }
    uint32_t used_seq = seq - pos_seq(r);
    uint32_t used_units = pos - pos_units(r);
    bool sane = used_seq <= q->geo.maxsize && used_units <= q->geo.cap_units;
    bool prev_done =
        desc_seq(w) == seq - q->geo.desc_count &&
        (desc_state(w) == DESC_FREE || desc_state(w) == DESC_ABORTED);
    if (!sane || (used_seq < q->geo.maxsize && !prev_done)) {
        /* A stale tail explains it; an unchanged one means scribbles. */
        return load_acquire(&h->tail.word) != t ? 1 : -EBADMSG;
    }
    if (used_seq == q->geo.maxsize || used_units + units > q->geo.cap_units)
        return -EAGAIN;

    uint64_t mine = desc_pack(seq, DESC_WRITING, q->slot, units);
    /* seq_cst: ordered before the producer's second look at the closed
     * flag, against a consumer's last look at the queue (queue.c). */
    if (!__atomic_compare_exchange_n(&d->word, &w, mine, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_ACQUIRE))
        return 1;
    pos_help(&h->tail.word, t, units);
    *ref = (struct ring_ref){.seq = seq, .pos = pos, .units = units};
    return 0;
}

int ring_claim(struct shmq *q, uint64_t len, struct ring_ref *ref,
               struct ring_stall *stall)
{
    uint32_t units = units_for(q, len);
    for (uint32_t i = 0; i < RING_RETRIES; i++) {
        uint64_t t = load_acquire(&q->hdr->tail.word);
        int rc = claim_once(q, t, units, ref);
        if (rc <= 0 && rc != -EAGAIN)
            return rc;
        if (rc == -EAGAIN) {
            /* Room may be waiting behind a release nobody advanced. */
            if (ring_advance_release(q))
                continue;
            release_stall(q, stall);
            return -EAGAIN;
        }
    }
    return -EBADMSG;
}

/* Move our own record from state `from` to `to`: one seq_cst CAS. It
 * publishes what we did to the record (release) and is ordered before
 * the load of the event a signaller does next (wait.c). It fails only if
 * a recoverer took the record from us, which liveness rules out for a
 * live owner unless the region was scribbled on. */
static int own_transition(struct shmq *q, const struct ring_ref *ref,
                          unsigned from, unsigned to)
{
    struct shmq_desc *d = ring_desc(q, ref->seq);
    uint64_t w = desc_pack(ref->seq, from, q->slot, ref->units);
    uint64_t next = desc_pack(ref->seq, to, q->slot, ref->units);
    return __atomic_compare_exchange_n(&d->word, &w, next, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_RELAXED)
               ? 0
               : -EBADMSG;
}

int ring_commit(struct shmq *q, const struct ring_ref *ref, uint64_t len)
{
    /* release: a consumer that reads this len also sees our claim of the
     * word (take_once re-checks the word after reading len) */
    store_release(&ring_desc(q, ref->seq)->len, len);
    return own_transition(q, ref, DESC_WRITING, DESC_COMMITTED);
}

/* One take attempt on a snapshot hd of the head. 0, 1 (again), or the
 * errors of ring_take. */
static int take_once(struct shmq *q, uint64_t hd, void *buf, size_t cap,
                     uint64_t *len, struct ring_ref *ref,
                     struct ring_stall *stall)
{
    struct shmq_header *h = q->hdr;
    uint32_t seq = pos_seq(hd), pos = pos_units(hd);
    struct shmq_desc *d = ring_desc(q, seq);
    uint64_t w = load_acquire(&d->word);

    if (desc_seq(w) == seq - q->geo.desc_count)
        /* Not claimed yet, and claims come before the tail moves: the
         * queue was empty when we read w. Consumers polling an empty
         * queue touch no producer cache line but this one. */
        return -EAGAIN;
    if (desc_seq(w) != seq) {
        uint64_t t = load_acquire(&h->tail.word);
        if (pos_seq(t) == seq)
            return load_acquire(&h->head.word) == hd ? -EAGAIN : 1;
        /* The tail moves only after the descriptor is claimed, so a
         * fresh look must show this sequence or a later one. */
        w = load_acquire(&d->word);
        if (desc_seq(w) == seq || load_acquire(&h->head.word) != hd)
            return 1;
        return -EBADMSG;
    }
    uint32_t units = desc_units(w);
    if (!units_ok(q, units))
        return -EBADMSG;
    switch (desc_state(w)) {
    case DESC_WRITING:
        stall->has_owner = true;
        stall->word = w;
        return -EINPROGRESS;
    case DESC_COMMITTED:
        break;
    default: /* taken, freed or aborted: move the head past it */
        pos_help(&h->head.word, hd, units);
        return 1;
    }
    /* len is stable while the word is: another consumer may take, free
     * and let a producer reuse this descriptor between our two loads, so
     * judge len only if the word did not change (acquire: len is read
     * before it). */
    uint64_t n = __atomic_load_n(&d->len, __ATOMIC_ACQUIRE);
    if (load_acquire(&d->word) != w)
        return 1;
    if (n > q->geo.max_message || units_for(q, n) != units)
        return -EBADMSG;
    if (n > cap) {
        *len = n;
        return -ENOBUFS;
    }
    *ref = (struct ring_ref){.seq = seq, .pos = pos, .units = units};
    if (buf && n <= RING_COPY_FIRST_MAX) {
        /* Copy first, then claim and free in one CAS: a record stays
         * COMMITTED (so its bytes stay put) until some consumer's CAS
         * succeeds, so if ours does, what we copied is the message; if it
         * fails, someone else took it and the copy is dropped. One CAS
         * less per message, and a consumer killed mid-copy loses nothing.
         * seq_cst: as ring_free. */
        memcpy(buf, ring_addr(q, pos), n);
        uint64_t freed = desc_pack(seq, DESC_FREE, q->slot, units);
        if (!__atomic_compare_exchange_n(&d->word, &w, freed, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
            return 1;
        ref->copied = true;
    } else {
        uint64_t mine = desc_pack(seq, DESC_READING, q->slot, units);
        if (!cas_acq_rel(&d->word, &w, mine))
            return 1;
    }
    pos_help(&h->head.word, hd, units);
    *len = n;
    return 0;
}

int ring_take(struct shmq *q, void *buf, size_t cap, uint64_t *len,
              struct ring_ref *ref, struct ring_stall *stall)
{
    for (uint32_t i = 0; i < RING_RETRIES; i++) {
        uint64_t hd = load_acquire(&q->hdr->head.word);
        int rc = take_once(q, hd, buf, cap, len, ref, stall);
        if (rc != 1)
            return rc;
    }
    return -EBADMSG;
}

int ring_free(struct shmq *q, const struct ring_ref *ref)
{
    /* our reads of the bytes happen before anyone reuses them: pairs with
     * the acquire of this word when release moves past it */
    return own_transition(q, ref, DESC_READING, DESC_FREE);
}

/* How far release may move from r in one CAS: the freed (or aborted)
 * records that follow it, up to head. Each stays so until release passes
 * it, so the sum is still right when the CAS succeeds. */
static uint32_t releasable(struct shmq *q, uint64_t r, uint32_t head_seq,
                           uint32_t *units)
{
    uint32_t n = 0, rs = pos_seq(r);
    *units = 0;
    while (rs + n != head_seq && n < RELEASE_BATCH) {
        uint64_t w = load_acquire(&ring_desc(q, rs + n)->word);
        unsigned st = desc_state(w);
        if (desc_seq(w) != rs + n || !units_ok(q, desc_units(w)) ||
            (st != DESC_FREE && st != DESC_ABORTED))
            break;
        *units += desc_units(w);
        n++;
    }
    return n;
}

/* Release never passes head, since records there may not be taken yet;
 * but a record taken (or aborted) by a consumer that stopped before
 * moving the head lets anyone move the head for it, e.g. a producer
 * waiting for room. true if it moved. */
static bool head_help_taken(struct shmq *q, uint64_t hd)
{
    uint64_t w = load_acquire(&ring_desc(q, pos_seq(hd))->word);
    unsigned st = desc_state(w);
    if (desc_seq(w) != pos_seq(hd) || !units_ok(q, desc_units(w)) ||
        st == DESC_WRITING || st == DESC_COMMITTED)
        return false;
    pos_help(&q->hdr->head.word, hd, desc_units(w));
    return true;
}

/* One step of release; true if it moved (by us or another). */
static bool release_once(struct shmq *q)
{
    struct shmq_header *h = q->hdr;
    uint64_t r = load_acquire(&h->release.word);
    uint64_t hd = load_acquire(&h->head.word);
    if (pos_seq(hd) - pos_seq(r) > q->geo.maxsize)
        return load_acquire(&h->release.word) != r;
    if (pos_seq(hd) == pos_seq(r))
        return head_help_taken(q, hd);
    uint32_t units, n = releasable(q, r, pos_seq(hd), &units);
    if (n == 0)
        return load_acquire(&h->release.word) != r;
    uint64_t next = pos_pack(pos_seq(r) + n, pos_units(r) + units);
    /* seq_cst: publishes the room (release) and orders the move before
     * the waker's load of the not_full event (wait.c). */
    __atomic_compare_exchange_n(&h->release.word, &r, next, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_RELAXED);
    return true;
}

bool ring_advance_release(struct shmq *q)
{
    bool moved = false;
    for (uint32_t i = 0; i <= q->geo.maxsize && release_once(q); i++)
        moved = true;
    return moved;
}

int ring_abort(struct shmq *q, const struct ring_ref *ref)
{
    uint64_t w = desc_pack(ref->seq, DESC_WRITING, q->slot, ref->units);
    return ring_recover(q, &(struct ring_stall){true, w}) ? 0 : -EBADMSG;
}

bool ring_recover(struct shmq *q, const struct ring_stall *stall)
{
    uint32_t seq = desc_seq(stall->word);
    uint32_t units = desc_units(stall->word);
    struct shmq_desc *d = ring_desc(q, seq);
    uint64_t w = stall->word;
    unsigned owner = desc_owner(w);
    bool done = false;
    switch (desc_state(w)) {
    case DESC_WRITING:
        tail_help(q, seq, units);
        done = cas_acq_rel(&d->word, &w,
                           desc_pack(seq, DESC_ABORTED, owner, units));
        if (done)
            __atomic_fetch_add(&q->hdr->tasks_aborted.word, 1,
                               __ATOMIC_RELEASE);
        break;
    case DESC_READING:
        done =
            cas_acq_rel(&d->word, &w, desc_pack(seq, DESC_FREE, owner, units));
        break;
    default:
        break;
    }
    ring_advance_release(q);
    return done;
}

void ring_recover_owner(struct shmq *q, unsigned slot)
{
    for (uint32_t i = 0; i < q->geo.desc_count; i++) {
        uint64_t w = load_acquire(&q->desc[i].word);
        unsigned st = desc_state(w);
        if (desc_owner(w) == slot &&
            (st == DESC_WRITING || st == DESC_READING) &&
            units_ok(q, desc_units(w)))
            ring_recover(q, &(struct ring_stall){true, w});
    }
}

void ring_head_writer(const struct shmq *q, struct ring_stall *stall)
{
    uint64_t hd = load_acquire(&q->hdr->head.word);
    uint64_t w = load_acquire(&ring_desc(q, pos_seq(hd))->word);
    stall->has_owner = desc_seq(w) == pos_seq(hd) &&
                       desc_state(w) == DESC_WRITING &&
                       units_ok(q, desc_units(w));
    stall->word = w;
}

uint32_t ring_count(struct shmq *q)
{
    /* Records at the head that nobody will deliver (withdrawn at close,
     * aborted, taken by a consumer that has not moved the head yet) are
     * not queued: move the head past them first (bounded by maxsize). */
    for (uint32_t i = 0; i < q->geo.maxsize &&
                         head_help_taken(q, load_acquire(&q->hdr->head.word));
         i++)
        ;
    /* head first: the tail read after it is at least as far */
    uint64_t hd = load_acquire(&q->hdr->head.word);
    uint64_t t = load_acquire(&q->hdr->tail.word);
    uint32_t n = pos_seq(t) - pos_seq(hd);
    return n > q->geo.maxsize ? q->geo.maxsize : n;
}

bool ring_full(const struct shmq *q)
{
    uint64_t r = load_acquire(&q->hdr->release.word);
    uint64_t t = load_acquire(&q->hdr->tail.word);
    uint32_t used_seq = pos_seq(t) - pos_seq(r);
    uint32_t used_units = pos_units(t) - pos_units(r);
    return used_seq >= q->geo.maxsize || used_units + 1 > q->geo.cap_units;
}

uint32_t ring_claimed(const struct shmq *q)
{
    return pos_seq(load_acquire(&q->hdr->tail.word));
}
