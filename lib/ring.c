/* SPDX-License-Identifier: MIT */
/*
 * ring.c - the bounded MPMC ring of variable-size records.
 *
 * Every record has a sequence number and a descriptor word, desc[seq],
 * that holds its state, owner and size; every transition is one CAS on
 * that word. Records are claimed, and their room is given back, in
 * sequence order; in between they are independent: consumers take any
 * committed record, so a writer that stops between claim and commit, or
 * a reader that stops in the middle of a copy, holds back nobody's
 * messages, only its own room (and the room after it, since release
 * moves in ring order).
 *
 * Lazy cursors. The first unclaimed record (the true tail) and the first
 * record not yet taken (the true head) are found by walking descriptors
 * from a start known to be at or before them: the furthest of release,
 * a shared hint (tail, head: published every CURSOR_EVERY records) and
 * this handle's own cache (where its last claim or take ended). One
 * producer and one consumer never walk, and pay one CAS per step.
 *
 * Late records. A consumer that finds a record being written and a
 * committed one after it marks the first DESC_SKIPPED and goes on, so the
 * head passes it. Its writer's commit then finds SKIPPED, makes it
 * DESC_LATE and announces it in the late word; consumers look at that
 * word once they have seen a committed record and before taking it, and
 * take late records first (scanning from release). So a message whose
 * put returned before another put began is still taken first.
 *
 * Progress: claim, take, free and release are lock-free: a CAS fails only
 * because another process succeeded. Nothing waits for another process,
 * except for room (release waits for the oldest record to be freed) and
 * a drained queue's consumers for a put in flight.
 */
#include <errno.h>
#include <string.h>

#include "packed.h"
#include "ring.h"

/* Attempts before a step concludes that nobody makes progress and the
 * region must have been scribbled on. Each failed attempt means another
 * process completed a step, so honest contention never gets close. */
#define RING_RETRIES (1u << 18)
/* Most records one CAS moves release past. */
#define RELEASE_BATCH 64u
/* The shared tail and head hints are published once per this many
 * records (mask). */
#define CURSOR_EVERY 15u

/* The late word: gen << 1 | has. gen changes on every announcement and
 * every clearing, so a clearing CAS fails if anyone announced meanwhile. */
#define LATE_HAS 1u

static bool abort_writing(struct shmq *q, uint64_t w);

/* A claimed record's size fields, bounded before any walk steps by them:
 * a record of one message holds at most max_message; a packed one (many
 * small messages) at most the capacity. */
static bool rec_ok(const struct shmq *q, uint64_t w)
{
    uint32_t units = desc_units(w);
    return units >= 1 &&
           units <= (desc_packed(w) ? q->geo.cap_units : q->geo.max_units) &&
           desc_span(w) <= q->geo.maxsize;
}

/* Is s before end (sequence numbers wrap)? */
static bool seq_before(uint32_t s, uint32_t end)
{
    return end - s - 1 < (1u << 31);
}

/* Does w, read at sequence number seq's descriptor, belong to an earlier
 * lap (so seq is unclaimed)? The other sequence numbers a packed record
 * covered keep older laps' words, so any earlier lap counts. */
static bool earlier_lap(const struct shmq *q, uint64_t w, uint32_t seq)
{
    uint32_t back = seq - desc_seq(w);
    return back >= q->geo.desc_count && back < (1u << 31);
}

/* States a walk to the head passes. DESC_LOCKED is a done record (FREE
 * or ABORTED, not yet released) locked by a short commit next door. */
static bool state_done(unsigned st)
{
    return st == DESC_FREE || st == DESC_READING || st == DESC_ABORTED ||
           st == DESC_SKIPPED || st == DESC_LATE || st == DESC_LOCKED;
}

/* ------------------------------------------------------------------ */
/* Cursors                                                              */
/* ------------------------------------------------------------------ */

/* Is position word p a plausible cursor given release r: at or after r,
 * within the queue's bounds? */
static bool in_window(const struct shmq *q, uint64_t r, uint64_t p)
{
    return pos_seq(p) - pos_seq(r) <= q->geo.maxsize &&
           pos_units(p) - pos_units(r) <= q->geo.cap_units;
}

/* The furthest of release r, a shared hint and this handle's cache. A
 * hint comes from shared memory, so it is used only if the record before
 * it is what a hint may pass (claimed, or done for the head). */
static inline __attribute__((always_inline)) uint64_t
cursor_start(const struct shmq *q, uint64_t r, uint64_t hint, uint64_t cache,
             bool head)
{
    uint64_t best = in_window(q, r, cache) ? cache : r;
    /* One handle alone is never behind the hint: skip its check. */
    if (pos_seq(hint) - pos_seq(best) - 1 < q->geo.maxsize &&
        in_window(q, r, hint)) {
        uint32_t prev = pos_seq(hint) - 1;
        uint64_t w = load_acquire(&ring_desc(q, prev)->word);
        if (desc_seq(w) == prev && (!head || state_done(desc_state(w))))
            best = hint;
    }
    return best;
}

/* Publish a cursor hint now and then: a plain store, no locked
 * instruction. A slow publisher may store an older hint over a newer
 * one; that is still at or before the true cursor (which only moves
 * on), costs later walks a few steps, and is never trusted beyond the
 * checks of cursor_start. */
static void cursor_publish(uint64_t *hint, uint64_t seen, uint64_t next)
{
    if ((pos_seq(next) & CURSOR_EVERY) == 0 &&
        pos_seq(next) - pos_seq(seen) <= (1u << 31))
        store_release(hint, next);
}

/* The true tail, walking from the best start: the first unclaimed
 * sequence number and its position. -EBADMSG if the walk cannot end. */
static int tail_walk(struct shmq *q, uint64_t r, uint64_t *tail)
{
    uint64_t t = cursor_start(q, r, load_acquire(&q->hdr->tail.word),
                              load_relaxed(&q->tail_cache), false);
    uint32_t seq = pos_seq(t), pos = pos_units(t);
    for (uint32_t i = 0; i <= q->geo.maxsize; i++) {
        uint64_t w = load_acquire(&ring_desc(q, seq)->word);
        if (desc_seq(w) != seq) {
            /* A later lap's word: the queue went round while we were not
             * looking (a slow or preempted caller), and seq is long gone,
             * not the tail. */
            if (!earlier_lap(q, w, seq))
                return 1;
            *tail = pos_pack(seq, pos);
            return 0;
        }
        if (!rec_ok(q, w))
            return -EBADMSG;
        seq += desc_span(w);
        pos += desc_units(w);
    }
    return 1; /* longer than the queue can be: release moved meanwhile */
}

/* The true tail, and in *r the release it was found from (refreshed
 * when the queue moved under the walk). */
static int tail_find(struct shmq *q, uint64_t *r, uint64_t *tail)
{
    for (uint32_t i = 0; i < RING_RETRIES; i++) {
        int rc = tail_walk(q, *r, tail);
        if (rc <= 0)
            return rc;
        *r = load_acquire(&q->hdr->release.word);
    }
    return -EBADMSG;
}

/* ------------------------------------------------------------------ */
/* Claim, commit, abort                                                 */
/* ------------------------------------------------------------------ */

/* Where a walk is: a sequence number and its position. */
struct walk {
    uint32_t seq;
    uint32_t pos;
};

/* Positions are sums of units, and a record being written may still
 * shrink (a short commit, while nobody claimed the record after it). A
 * walk that went past a record it saw being written therefore checks,
 * once the record it stopped at is claimed (so every record before it
 * is final), that the units from `from` on still add up to `at`. */
static bool walk_still_true(struct shmq *q, struct walk from, struct walk at)
{
    uint32_t pos = from.pos, s = from.seq;
    while (seq_before(s, at.seq)) {
        uint64_t w = load_acquire(&ring_desc(q, s)->word);
        if (desc_seq(w) != s || !rec_ok(q, w))
            return false; /* released and reused meanwhile: look again */
        s += desc_span(w);
        pos += desc_units(w);
    }
    return s == at.seq && pos == at.pos;
}

/* Our claim stands at seq: find its true position, summing the units of
 * the records from the first one seen being written (or from release,
 * if release passed it: release is exact). -EBADMSG if it never holds. */
static int claim_settle(struct shmq *q, struct walk from, uint32_t seq,
                        uint32_t *pos)
{
    for (uint32_t i = 0; i < RING_RETRIES; i++) {
        uint64_t r = load_acquire(&q->hdr->release.word);
        struct walk start = from;
        if (pos_seq(r) - from.seq <= seq - from.seq)
            start = (struct walk){pos_seq(r), pos_units(r)};
        uint32_t p = start.pos, s = start.seq;
        bool ok = true;
        while (ok && seq_before(s, seq)) {
            uint64_t w = load_acquire(&ring_desc(q, s)->word);
            ok = desc_seq(w) == s && rec_ok(q, w);
            s += desc_span(w);
            p += desc_units(w);
        }
        if (ok && s == seq) {
            *pos = p;
            return 0;
        }
    }
    return -EBADMSG;
}

/* One claim attempt. 0 claimed; 1 try again; -EAGAIN full; -EINPROGRESS
 * (the next descriptor is locked: stall names its holder); -EBADMSG. */
static inline __attribute__((always_inline)) int
claim_once(struct shmq *q, uint32_t size, struct ring_ref *ref, bool reserve,
           struct ring_stall *stall)
{
    struct shmq_header *h = q->hdr;
    uint64_t r = load_acquire(&h->release.word);
    uint64_t hint = load_acquire(&h->tail.word);
    uint64_t t = cursor_start(q, r, hint, load_relaxed(&q->tail_cache), false);
    uint32_t seq = pos_seq(t), pos = pos_units(t);
    uint64_t as = desc_pack(0, 0, 0, size); /* our size, as a word */
    uint32_t units = desc_units(as), span = desc_span(as);
    struct walk writer = {0, 0};
    bool passed_writer = false;

    for (uint32_t i = 0; i <= q->geo.maxsize; i++) {
        struct shmq_desc *d = ring_desc(q, seq);
        uint64_t w = load_acquire(&d->word);
        if (desc_seq(w) == seq) { /* claimed: walk past it */
            if (!rec_ok(q, w))
                return -EBADMSG;
            if (desc_state(w) == DESC_WRITING && !passed_writer) {
                passed_writer = true;
                writer = (struct walk){seq, pos};
            }
            seq += desc_span(w);
            pos += desc_units(w);
            continue;
        }
        uint32_t used_seq = seq - pos_seq(r), used_units = pos - pos_units(r);
        if (used_seq > q->geo.maxsize || span > q->geo.maxsize - used_seq ||
            used_units + units > q->geo.cap_units) {
            /* Full by our snapshot of release; a newer one may say not. */
            return load_acquire(&h->release.word) != r ? 1 : -EAGAIN;
        }
        if (earlier_lap(q, w, seq) && desc_state(w) == DESC_LOCKED) {
            stall->has_owner = true;
            stall->word = w;
            return -EINPROGRESS;
        }
        /* Below the bound, the earlier lap's record was released: its
         * descriptor must say so, or our snapshot is stale (or scribbled
         * on: the caller's retry limit tells). */
        if (!earlier_lap(q, w, seq) ||
            (desc_state(w) != DESC_FREE && desc_state(w) != DESC_ABORTED))
            return 1;
        uint64_t mine = desc_pack(seq, DESC_WRITING, q->slot, size);
        if (!cas_acq_rel(&d->word, &w, mine))
            continue; /* someone claimed it: look again */
        if (passed_writer && claim_settle(q, writer, seq, &pos) < 0) {
            abort_writing(q, mine);
            return -EBADMSG;
        }
        *ref = (struct ring_ref){.seq = seq,
                                 .pos = pos,
                                 .units = units,
                                 .size = size,
                                 .reserve = reserve,
                                 .d = d};
        /* A reservation may still shrink: a hint or cache past it would
         * embed its size, so they point at its start (one more step for
         * the next claim, which reads the size as it is then). */
        uint64_t next =
            reserve ? pos_pack(seq, pos) : pos_pack(seq + span, pos + units);
        store_relaxed(&q->tail_cache, next);
        cursor_publish(&h->tail.word, hint, next);
        return 0;
    }
    return 1;
}

static inline __attribute__((always_inline)) int
claim(struct shmq *q, uint32_t size, struct ring_ref *ref, bool reserve,
      struct ring_stall *stall)
{
    for (uint32_t i = 0; i < RING_RETRIES; i++) {
        *stall = (struct ring_stall){0};
        int rc = claim_once(q, size, ref, reserve, stall);
        if (rc == 1)
            continue;
        if (rc == -EINPROGRESS)
            return -EAGAIN; /* a short commit next door: wait for it */
        if (rc != -EAGAIN)
            return rc;
        /* Room may be waiting behind a release nobody advanced. */
        if (shmq__ring_advance_release(q) ||
            shmq__ring_release_stall(q, stall, true))
            continue;
        return -EAGAIN;
    }
    return -EBADMSG;
}

int shmq__ring_claim(struct shmq *q, uint64_t len, struct ring_ref *ref,
                     struct ring_stall *stall)
{
    return claim(q, units_for(q, len), ref, false, stall);
}

int shmq__ring_claim_packed(struct shmq *q, uint32_t span, uint64_t bytes,
                            struct ring_ref *ref, struct ring_stall *stall)
{
    uint32_t units = units_for(q, bytes);
    if (span < 1 || span > DESC_PACKED_SPAN || units > DESC_PACKED_UNITS ||
        units > q->geo.cap_units)
        return -EMSGSIZE;
    return claim(q, desc_packed_size(span, units), ref, false, stall);
}

int shmq__ring_reserve(struct shmq *q, uint64_t len, struct ring_ref *ref,
                       struct ring_stall *stall)
{
    return claim(q, units_for(q, len), ref, true, stall);
}

/* Tell consumers that a late record exists (after it became DESC_LATE).
 * Anyone may do it for a record found DESC_LATE: its writer may have died
 * between the two steps. */
static void late_announce(struct shmq *q)
{
    uint64_t *word = &q->hdr->late.word;
    uint64_t v = load_relaxed(word);
    /* seq_cst: ordered after the record's CAS and before the writer's
     * next put, whose commit a consumer's acquire sees first (take).
     * Bounded: a word that never stops changing is scribbles, and then
     * the record is still found when someone sees it at release. */
    for (uint32_t i = 0; i < RING_RETRIES; i++)
        if (__atomic_compare_exchange_n(word, &v,
                                        ((v >> 1) + 1) << 1 | LATE_HAS, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return;
}

/* Short commits. A record's position is the sum of the units before it,
 * so a reservation may give back what its commit does not use only while
 * no record after it is claimed; and nobody may claim one meanwhile with
 * the old size. So the next descriptor (unclaimed: still the previous
 * lap's, done) is locked first, and unlocked with its owner field
 * changed, so that a claim CAS expecting the word it saw before fails
 * and looks again. A claimer that walked past the record
 * while it was being written sums the units again once its claim stands
 * (claim_settle). Only the record's writer locks, for three CASes. */
static bool shrink_lock(struct shmq *q, uint32_t next, uint64_t *was)
{
    struct shmq_desc *d = ring_desc(q, next);
    uint64_t w = load_acquire(&d->word);
    if (!earlier_lap(q, w, next) ||
        (desc_state(w) != DESC_FREE && desc_state(w) != DESC_ABORTED))
        return false;
    *was = desc_with(w, DESC_LOCKED, q->slot);
    return cas_acq_rel(&d->word, &w, *was);
}

/* Unlock a locked descriptor (ours, or a dead holder's). */
static bool shrink_unlock(struct shmq *q, uint64_t locked)
{
    uint32_t seq = desc_seq(locked);
    uint64_t w = locked;
    /* FREE and ABORTED mean the same to everyone once release passed */
    uint64_t flipped = desc_with(locked, DESC_FREE, desc_owner(locked) ^ 1u);
    /* release: a claimer that sees the unlocked word sees our commit */
    return __atomic_compare_exchange_n(&ring_desc(q, seq)->word, &w, flipped, 0,
                                       __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

static inline __attribute__((always_inline)) int
commit_as(struct shmq *q, struct ring_ref *ref, uint32_t size)
{
    struct shmq_desc *d = ref_desc(q, ref);
    uint64_t w = desc_pack(ref->seq, DESC_WRITING, q->slot, ref->size);
    uint64_t skipped = desc_pack(ref->seq, DESC_SKIPPED, q->slot, ref->size);
    /* seq_cst: publishes the payload, and is ordered before the load of
     * the closed flag (queue.c) and of the event a signaller does next */
    if (__atomic_compare_exchange_n(
            &d->word, &w, desc_pack(ref->seq, DESC_COMMITTED, q->slot, size), 0,
            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        if (size != ref->size) { /* shrunk */
            ref->size = size;
            ref->units = desc_units(desc_pack(0, 0, 0, size));
        }
        return 0;
    }
    /* Skipped: a record after ours is claimed, so its size did not change. */
    if (w != skipped ||
        !__atomic_compare_exchange_n(
            &d->word, &w, desc_pack(ref->seq, DESC_LATE, q->slot, ref->size), 0,
            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return -EBADMSG; /* a recoverer took it: only scribbles do that */
    ref->late = true;
    late_announce(q);
    return 0;
}

static void reserve_settled(struct shmq *q, const struct ring_ref *ref);

int shmq__ring_commit(struct shmq *q, struct ring_ref *ref, uint64_t len)
{
    /* release: a consumer that reads this len also sees our claim of the
     * word (take re-checks the word after reading len) */
    struct shmq_desc *d = ref_desc(q, ref);
    store_release(&d->len, len);
    uint32_t need = units_for(q, len);
    uint64_t locked;
    if (!ref->reserve)
        return commit_as(q, ref, ref->size);
    if (need >= ref->units || !shrink_lock(q, ref->seq + 1, &locked)) {
        int rc = commit_as(q, ref, ref->size);
        if (rc == 0)
            reserve_settled(q, ref);
        return rc;
    }
    int rc = commit_as(q, ref, need);
    if (rc == 0)
        reserve_settled(q, ref);
    if (!shrink_unlock(q, locked))
        rc = -EBADMSG;
    return rc;
}

/* After a reservation's commit its size is final: move this handle's
 * tail cache past it, unless another thread of the handle moved it on. */
static void reserve_settled(struct shmq *q, const struct ring_ref *ref)
{
    uint64_t at = pos_pack(ref->seq, ref->pos);
    __atomic_compare_exchange_n(&q->tail_cache, &at,
                                pos_pack(ref->seq + 1, ref->pos + ref->units),
                                0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static void count_aborted(struct shmq *q)
{
    __atomic_fetch_add(&q->hdr->tasks_aborted.word, 1, __ATOMIC_RELEASE);
}

int shmq__ring_withdraw(struct shmq *q, struct ring_ref *ref)
{
    if (desc_packed(desc_pack(0, 0, 0, ref->size)))
        return shmq__packed_withdraw(q, ref);
    struct shmq_desc *d = ref_desc(q, ref);
    unsigned st = ref->late ? DESC_LATE : DESC_COMMITTED;
    uint64_t w = desc_pack(ref->seq, st, q->slot, ref->size);
    if (!cas_acq_rel(&d->word, &w, desc_with(w, DESC_ABORTED, q->slot)))
        return 1;
    ref->freed = true;
    count_aborted(q);
    return 0;
}

/* Abort a record being written (by its writer, or a dead one's). */
static bool abort_writing(struct shmq *q, uint64_t w)
{
    struct shmq_desc *d = ring_desc(q, desc_seq(w));
    uint64_t aborted = desc_with(w, DESC_ABORTED, desc_owner(w));
    if (!cas_acq_rel(&d->word, &w, aborted))
        return false;
    count_aborted(q);
    return true;
}

int shmq__ring_abort(struct shmq *q, const struct ring_ref *ref)
{
    if (abort_writing(q,
                      desc_pack(ref->seq, DESC_WRITING, q->slot, ref->size)) ||
        abort_writing(q, desc_pack(ref->seq, DESC_SKIPPED, q->slot, ref->size)))
        return 0;
    return -EBADMSG;
}

/* ------------------------------------------------------------------ */
/* Take                                                                 */
/* ------------------------------------------------------------------ */

/* Does a committed record seen as w hold a message to take? 1 yes (or it
 * changed: the take finds out), 0 no (a packed record whose messages are
 * all taken), -EBADMSG. */
static inline int takeable(struct shmq *q, struct walk at, uint64_t w)
{
    if (likely(!desc_packed(w)))
        return 1;
    int rc = shmq__packed_avail(q, at.seq, at.pos, w);
    return rc == -1 ? 1 : rc;
}

/* Take record (seq, pos) whose word was seen as w (COMMITTED or LATE).
 * 0, 1 (it changed: walk again), -ENOBUFS, -EBADMSG. */
static inline __attribute__((always_inline)) int
take_record(struct shmq *q, struct shmq_desc *d, struct walk at, uint64_t w,
            void *buf, size_t cap, uint64_t *len, struct ring_ref *ref)
{
    if (desc_packed(w))
        return shmq__packed_take(q, at.seq, at.pos, w, buf, cap, len, ref);
    uint32_t units = desc_units(w);
    /* len is stable while the word is: another consumer may take, free
     * and let a producer reuse this descriptor between our two loads, so
     * judge len only if the word did not change (acquire: len is read
     * before it). */
    uint64_t n = __atomic_load_n(&d->len, __ATOMIC_ACQUIRE);
    if (load_acquire(&d->word) != w)
        return 1;
    if (n > q->geo.max_message || units_for(q, n) > units)
        return -EBADMSG;
    if (n > cap) {
        *len = n;
        return -ENOBUFS;
    }
    *ref = (struct ring_ref){
        .seq = at.seq, .pos = at.pos, .units = units, .size = units, .d = d};
    if (buf && n <= RING_COPY_FIRST_MAX) {
        /* Copy first, then take and free in one CAS: the record stays
         * put until some consumer's CAS succeeds, so if ours does, what
         * we copied is the message; if it fails, the copy is dropped and
         * the caller's buffer was not touched. seq_cst: as shmq__ring_free. */
        unsigned char bounce[RING_COPY_FIRST_MAX > 0 ? RING_COPY_FIRST_MAX : 1];
        memcpy(bounce, ring_addr(q, at.pos), n);
        uint64_t freed = desc_with(w, DESC_FREE, q->slot);
        if (!__atomic_compare_exchange_n(&d->word, &w, freed, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
            return 1;
        memcpy(buf, bounce, n);
        ref->copied = ref->freed = true;
    } else {
        uint64_t mine = desc_with(w, DESC_READING, q->slot);
        if (!cas_acq_rel(&d->word, &w, mine))
            return 1;
    }
    *len = n;
    return 0;
}

/* Late records: scan from release to the tail for a DESC_LATE record and
 * take it. 0, 1 (walk again), -EAGAIN (none: the late word is cleared),
 * or the errors of take_record. The scan goes to the tail, not just to
 * where the caller's walk ended: a record announced before we read the
 * word lies before the tail we reach, so clearing never loses it. */
static int take_late_scan(struct shmq *q, uint64_t seen, void *buf, size_t cap,
                          uint64_t *len, struct ring_ref *ref)
{
    uint64_t *word = &q->hdr->late.word;
    uint64_t r = load_acquire(&q->hdr->release.word);
    struct walk at = {pos_seq(r), pos_units(r)}, first_writer = at;
    bool writer = false; /* as in take_once */
    for (uint32_t i = 0;; i++) {
        if (i > q->geo.maxsize)
            return 1; /* the queue moved under us: look again */
        struct shmq_desc *d = ring_desc(q, at.seq);
        uint64_t w = load_acquire(&d->word);
        if (desc_seq(w) != at.seq) {
            if (!earlier_lap(q, w, at.seq))
                return 1; /* release moved on and the record was reused */
            break;        /* the tail */
        }
        if (!rec_ok(q, w))
            return -EBADMSG;
        if (desc_state(w) == DESC_LATE) {
            if (writer && !walk_still_true(q, first_writer, at))
                return 1;
            int rc = takeable(q, at, w);
            if (rc != 0)
                return rc < 0 ? rc
                              : take_record(q, d, at, w, buf, cap, len, ref);
        }
        if (desc_state(w) == DESC_WRITING && !writer) {
            writer = true;
            first_writer = at;
        }
        at.seq += desc_span(w);
        at.pos += desc_units(w);
    }
    /* None: clear the word, unless someone announced meanwhile. */
    uint64_t cleared = ((seen >> 1) + 1) << 1;
    return __atomic_compare_exchange_n(word, &seen, cleared, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)
               ? -EAGAIN
               : 1;
}

static inline int take_late(struct shmq *q, void *buf, size_t cap,
                            uint64_t *len, struct ring_ref *ref)
{
    uint64_t seen = load_acquire(&q->hdr->late.word);
    if (likely(!(seen & LATE_HAS)))
        return -EAGAIN;
    return take_late_scan(q, seen, buf, cap, len, ref);
}

/* Mark the records being written in [from, to) as skipped, so that the
 * head may pass them. false if one of them changed (committed meanwhile:
 * it comes first, walk again). */
static bool skip_writers(struct shmq *q, struct walk from, uint32_t to)
{
    struct walk at = from;
    while (seq_before(at.seq, to)) {
        struct shmq_desc *d = ring_desc(q, at.seq);
        uint64_t w = load_acquire(&d->word);
        if (desc_seq(w) != at.seq || !rec_ok(q, w) ||
            (desc_state(w) == DESC_COMMITTED && takeable(q, at, w) != 0))
            return false;
        uint64_t skipped = desc_with(w, DESC_SKIPPED, desc_owner(w));
        if (desc_state(w) == DESC_WRITING &&
            !cas_acq_rel(&d->word, &w, skipped))
            return false;
        at.seq += desc_span(w);
        at.pos += desc_units(w);
    }
    return at.seq == to;
}

/* After a take at `at` (all before it done): remember where the head is. */
static void head_moved(struct shmq *q, uint64_t hint, struct walk at,
                       uint64_t w)
{
    uint64_t next = pos_pack(at.seq + desc_span(w), at.pos + desc_units(w));
    store_relaxed(&q->head_cache, next);
    cursor_publish(&q->hdr->head.word, hint, next);
}

/* One take attempt: walk from the head to the first committed record.
 * 0, 1 (again), or the errors of shmq__ring_take. */
static inline __attribute__((always_inline)) int
take_once(struct shmq *q, void *buf, size_t cap, uint64_t *len,
          struct ring_ref *ref, struct ring_stall *stall)
{
    struct shmq_header *h = q->hdr;
    uint64_t r = load_acquire(&h->release.word);
    uint64_t hint = load_acquire(&h->head.word);
    uint64_t start =
        cursor_start(q, r, hint, load_relaxed(&q->head_cache), true);
    struct walk at = {pos_seq(start), pos_units(start)};
    bool writer = false; /* a record being written lies behind `at` */
    struct walk first_writer = {0, 0};

    for (uint32_t i = 0; i <= q->geo.maxsize; i++) {
        struct shmq_desc *d = ring_desc(q, at.seq);
        uint64_t w = load_acquire(&d->word);
        if (desc_seq(w) != at.seq) {
            if (!earlier_lap(q, w, at.seq))
                return 1; /* our start is a lap old: look again */
            break;        /* unclaimed: the end of the queue */
        }
        if (!rec_ok(q, w))
            return -EBADMSG;
        unsigned st = desc_state(w);
        /* A packed record's entries are read where the walk says it is:
         * first make sure that is still true. */
        if (st == DESC_COMMITTED && desc_packed(w) && writer &&
            !walk_still_true(q, first_writer, at))
            return 1;
        int rc = st == DESC_COMMITTED ? takeable(q, at, w) : 0;
        if (rc < 0)
            return rc;
        if (rc) {
            /* Late records first: a late put may have returned before
             * this one began. Looked at after w was seen committed. */
            rc = take_late(q, buf, cap, len, ref);
            if (rc != -EAGAIN)
                return rc;
            if (writer && (!skip_writers(q, first_writer, at.seq) ||
                           !walk_still_true(q, first_writer, at)))
                return 1;
            rc = take_record(q, d, at, w, buf, cap, len, ref);
            /* A packed record with messages left stays the head. */
            if (rc == 0 && (!ref->entry || ref->entry == desc_span(w)))
                head_moved(q, hint, at, w);
            return rc;
        }
        if (st == DESC_WRITING && !writer) {
            writer = true;
            first_writer = at;
            stall->has_owner = true;
            stall->word = w;
        } else if (st != DESC_WRITING && st != DESC_COMMITTED &&
                   !state_done(st)) {
            return -EBADMSG;
        }
        at.seq += desc_span(w);
        at.pos += desc_units(w);
    }
    int rc = take_late(q, buf, cap, len, ref);
    if (rc != -EAGAIN)
        return rc;
    if (writer)
        return -EINPROGRESS;
    /* Nothing in flight after the head: what holds room, if anything, is
     * at release (a writer consumers went past, perhaps dead). */
    shmq__ring_release_stall(q, stall, false);
    return -EAGAIN;
}

int shmq__ring_take(struct shmq *q, void *buf, size_t cap, uint64_t *len,
                    struct ring_ref *ref, struct ring_stall *stall)
{
    for (uint32_t i = 0; i < RING_RETRIES; i++) {
        *stall = (struct ring_stall){0};
        int rc = take_once(q, buf, cap, len, ref, stall);
        if (rc != 1)
            return rc;
    }
    return -EBADMSG;
}

int shmq__ring_free(struct shmq *q, struct ring_ref *ref)
{
    if (ref->entry)
        return shmq__packed_done(q, ref);
    /* our reads of the bytes happen before anyone reuses them: pairs with
     * the acquire of this word when release moves past it. seq_cst: the
     * waker's load of the not_full event comes after (wait.c). */
    struct shmq_desc *d = ref_desc(q, ref);
    uint64_t w = desc_pack(ref->seq, DESC_READING, q->slot, ref->size);
    uint64_t next = desc_pack(ref->seq, DESC_FREE, q->slot, ref->size);
    if (!__atomic_compare_exchange_n(&d->word, &w, next, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
        return -EBADMSG;
    ref->freed = true;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Release                                                              */
/* ------------------------------------------------------------------ */

/* How far release may move from r in one CAS: the freed (or aborted)
 * records that follow it. Each stays so until release passes it, so the
 * sum is still right when the CAS succeeds. */
static uint32_t releasable(struct shmq *q, uint64_t r, uint32_t *units)
{
    uint32_t n = 0, rs = pos_seq(r);
    *units = 0;
    for (uint32_t i = 0; i < RELEASE_BATCH; i++) {
        uint64_t w = load_acquire(&ring_desc(q, rs + n)->word);
        unsigned st = desc_state(w);
        if (desc_seq(w) != rs + n || !rec_ok(q, w) ||
            desc_span(w) > q->geo.maxsize - n ||
            (st != DESC_FREE && st != DESC_ABORTED))
            break;
        *units += desc_units(w);
        n += desc_span(w);
    }
    return n;
}

/* One step of release; true if it moved (by us or another). */
static bool release_once(struct shmq *q)
{
    struct shmq_header *h = q->hdr;
    uint64_t r = load_acquire(&h->release.word);
    uint32_t units, n = releasable(q, r, &units);
    if (n == 0)
        return load_acquire(&h->release.word) != r;
    uint64_t next = pos_pack(pos_seq(r) + n, pos_units(r) + units);
    /* seq_cst: publishes the room (release) and orders the move before
     * the waker's load of the not_full event (wait.c). */
    __atomic_compare_exchange_n(&h->release.word, &r, next, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_RELAXED);
    return true;
}

bool shmq__ring_advance_release(struct shmq *q)
{
    bool moved = false;
    for (uint32_t i = 0; i <= q->geo.maxsize && release_once(q); i++)
        moved = true;
    return moved;
}

bool shmq__ring_release_stall(struct shmq *q, struct ring_stall *stall,
                              bool readers)
{
    uint64_t r = load_acquire(&q->hdr->release.word);
    uint64_t w = load_acquire(&ring_desc(q, pos_seq(r))->word);
    unsigned st = desc_state(w);
    *stall = (struct ring_stall){0};
    if (desc_seq(w) != pos_seq(r) || !rec_ok(q, w))
        return false;
    if (desc_packed(w) && (st == DESC_COMMITTED || st == DESC_LATE)) {
        /* Held by a reader of one of its messages, or finished by a
         * consumer that died before freeing it (then freed here). */
        unsigned slot = 0;
        unsigned entry =
            shmq__packed_holder(q, pos_seq(r), pos_units(r), w, &slot);
        if (entry && readers) {
            stall->has_owner = true;
            stall->word = desc_with(w, DESC_READING, slot);
            stall->pos = pos_units(r);
            stall->entry = entry;
        }
        if (!entry && st == DESC_LATE)
            late_announce(q);
        return !entry && shmq__ring_advance_release(q);
    }
    if (st == DESC_LATE) {
        /* Its writer may have died before announcing it: do it for him
         * (a spare announcement costs one scan). */
        late_announce(q);
        return false;
    }
    if (st == DESC_WRITING || st == DESC_SKIPPED || st == DESC_LOCKED ||
        (readers && st == DESC_READING)) {
        stall->has_owner = true;
        stall->word = w;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Recovery                                                             */
/* ------------------------------------------------------------------ */

bool shmq__ring_recover(struct shmq *q, const struct ring_stall *stall)
{
    uint64_t w = stall->word;
    uint32_t seq = desc_seq(w);
    bool done = false;
    switch (desc_state(w)) {
    case DESC_WRITING:
    case DESC_SKIPPED:
        done = abort_writing(q, w);
        break;
    case DESC_LOCKED:
        done = shrink_unlock(q, w);
        break;
    case DESC_READING:
        if (stall->entry) { /* a message of a packed record */
            uint64_t now = load_acquire(&ring_desc(q, seq)->word);
            done = desc_seq(now) == seq && desc_size(now) == desc_size(w) &&
                   shmq__packed_end_taken(q, seq, stall->pos, now,
                                          desc_owner(w), stall->entry);
            break;
        }
        /* The message went with its reader: nobody will task_done it. */
        done = cas_acq_rel(&ring_desc(q, seq)->word, &w,
                           desc_with(w, DESC_FREE, desc_owner(w)));
        if (done)
            count_aborted(q);
        break;
    default:
        break;
    }
    shmq__ring_advance_release(q);
    return done;
}

/* End the records in flight of `slot` (between release and the tail):
 * a dead holder's are recovered; our own, at release of the handle, are
 * aborted (writers) or freed without counting a lost task (readers: the
 * message was delivered to this process). */
static void end_records_of(struct shmq *q, unsigned slot, bool dead)
{
    uint64_t r = load_acquire(&q->hdr->release.word), t;
    if (tail_find(q, &r, &t) < 0)
        return;
    struct walk at = {pos_seq(r), pos_units(r)};
    for (uint32_t i = 0; i <= q->geo.maxsize && seq_before(at.seq, pos_seq(t));
         i++) {
        uint64_t w = load_acquire(&ring_desc(q, at.seq)->word);
        unsigned st = desc_state(w);
        if (desc_seq(w) != at.seq || !rec_ok(q, w))
            break; /* released meanwhile: what is left is newer */
        struct walk next = {at.seq + desc_span(w), at.pos + desc_units(w)};
        if (desc_packed(w) && (st == DESC_COMMITTED || st == DESC_LATE))
            shmq__packed_end_taken(q, at.seq, at.pos, w, slot, 0);
        at = next;
        if (desc_owner(w) != slot)
            continue;
        if (st == DESC_LOCKED) /* a done record, locked by a short commit */
            shrink_unlock(q, w);
        else if (st == DESC_WRITING || st == DESC_SKIPPED)
            abort_writing(q, w);
        else if (st == DESC_READING && dead)
            shmq__ring_recover(q, &(struct ring_stall){true, w, 0, 0});
        else if (st == DESC_READING)
            cas_acq_rel(&ring_desc(q, desc_seq(w))->word, &w,
                        desc_with(w, DESC_FREE, slot));
    }
    /* A short commit's lock on the descriptor after the last record */
    uint64_t w = load_acquire(&ring_desc(q, pos_seq(t))->word);
    if (desc_state(w) == DESC_LOCKED && desc_owner(w) == slot &&
        earlier_lap(q, w, pos_seq(t)))
        shrink_unlock(q, w);
    shmq__ring_advance_release(q);
}

void shmq__ring_recover_owner(struct shmq *q, unsigned slot)
{
    end_records_of(q, slot, true);
}

void shmq__ring_end_owned(struct shmq *q)
{
    end_records_of(q, q->slot, false);
}

/* ------------------------------------------------------------------ */
/* Snapshots                                                            */
/* ------------------------------------------------------------------ */

/* Messages in flight (release to the tail) whose record's state is in
 * `states` (a bit mask of 1u << state): a packed record counts the
 * messages still to take when `takeable`, else all it covers. *tail_seq
 * is the tail it walked to. */
static uint32_t count_in_flight(struct shmq *q, unsigned states, bool takeable,
                                uint32_t *tail_seq)
{
    uint64_t r = load_acquire(&q->hdr->release.word), t;
    if (tail_find(q, &r, &t) < 0) {
        *tail_seq = pos_seq(r);
        return 0;
    }
    uint32_t count = 0;
    struct walk at = {pos_seq(r), pos_units(r)};
    for (uint32_t i = 0; i <= q->geo.maxsize && seq_before(at.seq, pos_seq(t));
         i++) {
        uint64_t w = load_acquire(&ring_desc(q, at.seq)->word);
        if (desc_seq(w) != at.seq || !rec_ok(q, w))
            break;
        if (states >> desc_state(w) & 1u)
            count += desc_packed(w) && takeable
                         ? shmq__packed_count(q, at.seq, at.pos, w)
                         : desc_span(w);
        at.seq += desc_span(w);
        at.pos += desc_units(w);
    }
    *tail_seq = pos_seq(t);
    return count;
}

uint32_t shmq__ring_count(struct shmq *q)
{
    uint32_t tail;
    uint32_t n =
        count_in_flight(q, 1u << DESC_COMMITTED | 1u << DESC_LATE, true, &tail);
    return n > q->geo.maxsize ? q->geo.maxsize : n;
}

bool shmq__ring_full(struct shmq *q)
{
    uint64_t r = load_acquire(&q->hdr->release.word), t;
    if (tail_find(q, &r, &t) < 0)
        return false;
    uint32_t used_seq = pos_seq(t) - pos_seq(r);
    uint32_t used_units = pos_units(t) - pos_units(r);
    return used_seq >= q->geo.maxsize || used_units + 1 > q->geo.cap_units;
}

bool shmq__ring_has_room(struct shmq *q, uint32_t records, uint64_t units)
{
    uint64_t r = load_acquire(&q->hdr->release.word), t;
    if (tail_find(q, &r, &t) < 0)
        return false;
    uint32_t used_seq = pos_seq(t) - pos_seq(r);
    uint32_t used_units = pos_units(t) - pos_units(r);
    return used_seq <= q->geo.maxsize && used_units <= q->geo.cap_units &&
           records <= q->geo.maxsize - used_seq &&
           units <= q->geo.cap_units - used_units;
}

uint32_t shmq__ring_committed(struct shmq *q)
{
    /* Records still being written (puts in progress, open reservations)
     * are not messages yet: a JoinableQueue does not count them. */
    uint32_t tail;
    uint32_t writing = count_in_flight(
        q, 1u << DESC_WRITING | 1u << DESC_SKIPPED, false, &tail);
    return tail - writing;
}
