/* SPDX-License-Identifier: MIT */
/*
 * test_corrupt.c - a region scribbled on through a second mapping.
 *
 * The contract: shared memory is untrusted. Attaching to a region with a
 * bad identity is -EPROTO; operations on a scribbled region return 0 or a
 * negative errno (-EBADMSG, -EAGAIN, -ETIMEDOUT, -EPIPE, -ENOBUFS), never
 * crash, never hang, and get never writes past cap bytes of its buffer.
 *
 * Victims run in child processes, every call with a finite timeout: a
 * crash shows as a child killed by a signal, a hang as a child that does
 * not end within its watchdog, an overflow as SIGSEGV on the guard page
 * that follows the get buffer.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>

#include "helpers.h"
#include "layout.h"
#include "shmq.h"

#define MAXSIZE            64
#define CAPACITY           16384
#define MAX_MESSAGE        2048
#define SLOW_CALL_NS       (2 * TH_SEC) /* beyond its timeout: a hang */
#define VICTIM_WATCHDOG_NS (20 * TH_SEC)

/* ------------------------------------------------------------------ */
/* A second mapping of a queue's region                                 */
/* ------------------------------------------------------------------ */

struct region {
    unsigned char *map;
    size_t size;
    struct shmq_header *hdr;
    struct shmq_identity id; /* as created */
};

static void region_map(struct region *r, shmq_t *q)
{
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(q), &st), 0);
    r->size = (size_t)st.st_size;
    r->map =
        mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, shmq_fd(q), 0);
    cr_assert_neq(r->map, MAP_FAILED);
    r->hdr = (struct shmq_header *)r->map;
    r->id = r->hdr->id;
    cr_assert_eq(r->id.magic, SHMQ_MAGIC);
    cr_assert_eq(r->id.region_size, r->size);
}

static void region_unmap(struct region *r)
{
    munmap(r->map, r->size);
}

static struct shmq_desc *region_desc(const struct region *r, uint32_t i)
{
    return (struct shmq_desc *)(r->map + r->id.desc_offset) +
           (i & (r->id.desc_count - 1));
}

static void fill_random(unsigned char *p, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = th_rand_next(rng);
        memcpy(p + i, &w, n - i < 8 ? n - i : 8);
    }
}

/* A queue with traffic behind it: positions wrapped, 20 queued, 5 of
 * them taken, so head, release and tail are all somewhere else. */
static shmq_t *queue_with_traffic(unsigned flags)
{
    struct shmq_config c = {.maxsize = MAXSIZE,
                            .capacity = CAPACITY,
                            .max_message = MAX_MESSAGE,
                            .flags = flags};
    shmq_t *q = NULL;
    unsigned char buf[MAX_MESSAGE];
    size_t len;
    cr_assert_eq(shmq_create(&q, &c), 0);
    for (uint32_t i = 0; i < 150; i++) {
        size_t n = TH_PAYLOAD_MIN + (i * 37) % 300;
        th_payload_fill(buf, n, 1, i);
        cr_assert_eq(shmq_put_nowait(q, buf, n), 0);
        if (i < 130 || i % 4 == 0)
            cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    }
    return q;
}

/* ------------------------------------------------------------------ */
/* The victim: random calls, every result checked                       */
/* ------------------------------------------------------------------ */

/* A get buffer whose last byte is followed by an inaccessible page. */
struct guarded {
    unsigned char *base;
    size_t size;
    unsigned char *end; /* the guard page */
};

static int guarded_init(struct guarded *g, size_t max)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (max + page - 1) / page * page;
    g->size = data + page;
    g->base = mmap(NULL, g->size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->base == MAP_FAILED)
        return -1;
    g->end = g->base + data;
    return mprotect(g->end, page, PROT_NONE);
}

struct victim {
    shmq_t *q;
    bool joinable;
    bool puts, gets;     /* which calls to make */
    int64_t max_timeout; /* ns, of timed calls */
    unsigned ops;        /* calls to make, or */
    int64_t run_ns;      /* for how long (when ops is 0) */
    uint64_t seed;
};

static bool put_rc_ok(int rc)
{
    return rc == 0 || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EPIPE ||
           rc == -EBADMSG;
}

static bool get_rc_ok(int rc)
{
    return put_rc_ok(rc) || rc == -ENOBUFS;
}

static int64_t victim_timeout(const struct victim *v, uint64_t *rng)
{
    if (th_rand_below(rng, 10) < 6 || v->max_timeout <= 0)
        return SHMQ_NOWAIT;
    return 1 + (int64_t)th_rand_below(rng, (uint64_t)v->max_timeout);
}

#define CALL_CHECK(rc_ok, t0, timeout, what)                                   \
    do {                                                                       \
        int64_t el_ = th_now_ns() - (t0);                                      \
        if (!(rc_ok)) {                                                        \
            fprintf(stderr, "corrupt victim: %s returned %d (%s)\n", what, rc, \
                    shmq_strerror(rc));                                        \
            return 1;                                                          \
        }                                                                      \
        if (el_ > (timeout) + SLOW_CALL_NS) {                                  \
            fprintf(stderr,                                                    \
                    "corrupt victim: %s took %lld ms (timeout %lld "           \
                    "ns)\n",                                                   \
                    what, (long long)(el_ / TH_MS), (long long)(timeout));     \
            return 1;                                                          \
        }                                                                      \
    } while (0)

static int victim_put(const struct victim *v, uint64_t *rng, unsigned char *buf)
{
    uint64_t r = th_rand_below(rng, 20);
    size_t len = r == 0   ? MAX_MESSAGE + 1
                 : r == 1 ? 0
                 : r == 2 ? MAX_MESSAGE
                          : TH_PAYLOAD_MIN + th_rand_below(rng, 400);
    if (len >= TH_PAYLOAD_MIN && len <= MAX_MESSAGE)
        th_payload_fill(buf, len, 7, (uint32_t)r);
    int64_t timeout = victim_timeout(v, rng);
    int64_t t0 = th_now_ns();
    int rc = shmq_put(v->q, buf, len, timeout);
    if (len > MAX_MESSAGE) {
        /* Argument errors come before the queue's state is looked at. */
        CALL_CHECK(rc == -EMSGSIZE, t0, timeout, "put(max_message + 1)");
        return 0;
    }
    CALL_CHECK(put_rc_ok(rc), t0, timeout, "put");
    return 0;
}

static int victim_get(const struct victim *v, uint64_t *rng,
                      const struct guarded *g)
{
    static const size_t caps[] = {0,   1,   8,          TH_PAYLOAD_MIN,
                                  100, 512, MAX_MESSAGE};
    size_t cap = caps[th_rand_below(rng, sizeof caps / sizeof caps[0])];
    unsigned char *buf = g->end - cap; /* buf + cap is the guard page */
    size_t len = 0;
    int64_t timeout = victim_timeout(v, rng);
    int64_t t0 = th_now_ns();
    int rc = shmq_get(v->q, cap ? buf : NULL, cap, &len, timeout);
    CALL_CHECK(get_rc_ok(rc), t0, timeout, "get");
    if (rc == 0 && len > cap) {
        fprintf(stderr, "corrupt victim: get returned %zu bytes, cap %zu\n",
                len, cap);
        return 1;
    }
    if (rc == -ENOBUFS && (len <= cap || len > MAX_MESSAGE)) {
        fprintf(stderr,
                "corrupt victim: -ENOBUFS with *len %zu (cap %zu, "
                "max_message %d): a corrupt length must be -EBADMSG\n",
                len, cap, MAX_MESSAGE);
        return 1;
    }
    return 0;
}

static int victim_misc(const struct victim *v, uint64_t *rng)
{
    int rc = 0;
    int64_t t0 = th_now_ns();
    (void)shmq_qsize(v->q);
    (void)shmq_empty(v->q);
    (void)shmq_full(v->q);
    (void)shmq_closed(v->q);
    if (shmq_max_message(v->q) < MAX_MESSAGE) {
        fprintf(stderr, "corrupt victim: max_message changed\n");
        return 1;
    }
    CALL_CHECK(true, t0, 0, "qsize/empty/full/closed");
    if (!v->joinable)
        return 0;
    t0 = th_now_ns();
    rc = shmq_task_done(v->q);
    CALL_CHECK(rc == 0 || rc == -EINVAL || rc == -EBADMSG, t0, 0, "task_done");
    int64_t timeout = victim_timeout(v, rng);
    t0 = th_now_ns();
    rc = shmq_join(v->q, timeout);
    CALL_CHECK(rc == 0 || rc == -EAGAIN || rc == -ETIMEDOUT || rc == -EBADMSG,
               t0, timeout, "join");
    return 0;
}

static int victim_run(const struct victim *v)
{
    struct guarded g;
    unsigned char buf[MAX_MESSAGE + 1];
    uint64_t rng = v->seed;
    if (guarded_init(&g, MAX_MESSAGE) < 0)
        return 2;
    int64_t end = th_now_ns() + v->run_ns;
    for (unsigned i = 0; v->ops ? i < v->ops : th_now_ns() < end; i++) {
        uint64_t r = th_rand_below(&rng, 100);
        int rc = 0;
        if (r < 45 && v->puts)
            rc = victim_put(v, &rng, buf);
        else if (r < 90 && v->gets)
            rc = victim_get(v, &rng, &g);
        else
            rc = victim_misc(v, &rng);
        if (rc)
            return rc;
    }
    munmap(g.base, g.size);
    return 0;
}

static int victim_main(void *arg)
{
    return victim_run(arg);
}

/* ------------------------------------------------------------------ */
/* Scenarios: scribble, then let a victim loose                         */
/* ------------------------------------------------------------------ */

typedef void (*scribble_fn)(struct region *r, uint64_t arg, uint64_t *rng);

struct scenario {
    shmq_t *q;
    struct region *r;
    scribble_fn scribble;
    uint64_t arg;
    uint64_t seed;
    bool joinable;
};

/* In the child: scribble, then make calls on the (inherited) handle and
 * on a freshly attached one, if attaching still works. */
static int scenario_main(void *arg)
{
    struct scenario *s = arg;
    uint64_t rng = s->seed;
    s->scribble(s->r, s->arg, &rng);
    struct victim v = {.q = s->q,
                       .joinable = s->joinable,
                       .puts = true,
                       .gets = true,
                       .max_timeout = TH_MS,
                       .ops = 300,
                       .seed = s->seed};
    int rc = victim_run(&v);
    if (rc)
        return rc;
    shmq_t *h = NULL;
    rc = shmq_from_fd(&h, shmq_fd(s->q));
    if (rc < 0) /* attaching to a scribbled region may well fail */
        return rc > -4096 ? 0 : 3;
    v.q = h;
    rc = victim_run(&v);
    shmq_release(h);
    return rc;
}

static void run_scenario(scribble_fn fn, uint64_t arg, uint64_t seed,
                         bool joinable, const char *what)
{
    shmq_t *q = queue_with_traffic(joinable ? SHMQ_JOINABLE : 0);
    struct region r;
    region_map(&r, q);
    struct scenario s = {q, &r, fn, arg, seed, joinable};
    char why[160];
    pid_t pid = th_fork(scenario_main, &s);
    bool ok = th_reap_ok(pid, VICTIM_WATCHDOG_NS, why, sizeof why);
    region_unmap(&r);
    shmq_release(q);
    cr_expect(ok, "%s (arg %#" PRIx64 ", seed %" PRIu64 "): %s", what, arg,
              seed, why);
}

/* ---- whole region and its parts ---- */

enum part {
    PART_WHOLE,
    PART_HOT_WORDS,
    PART_PARTICIPANTS,
    PART_DESCS,
    PART_RING,
    PART_ALL_BUT_ID,
    PART_COUNT
};

static void part_range(const struct region *r, enum part p, size_t *off,
                       size_t *len)
{
    size_t parts = SHMQ_PARTICIPANTS_OFFSET;
    size_t parts_end =
        parts + SHMQ_PARTICIPANTS * sizeof(struct shmq_participant);
    switch (p) {
    case PART_WHOLE:
        *off = 0, *len = r->size;
        break;
    case PART_HOT_WORDS:
        *off = offsetof(struct shmq_header, tail);
        *len = sizeof(struct shmq_header) - *off;
        break;
    case PART_PARTICIPANTS:
        *off = parts, *len = parts_end - parts;
        break;
    case PART_DESCS:
        *off = r->id.desc_offset;
        *len = r->id.desc_count * sizeof(struct shmq_desc);
        break;
    case PART_RING:
        *off = r->id.ring_offset, *len = r->size - r->id.ring_offset;
        break;
    default:
        *off = offsetof(struct shmq_header, tail), *len = r->size - *off;
        break;
    }
}

/* arg: part << 8 | fill (0 random, 1 zeros, 2 ones) */
static void scribble_part(struct region *r, uint64_t arg, uint64_t *rng)
{
    size_t off, len;
    part_range(r, (enum part)(arg >> 8), &off, &len);
    if ((arg & 0xff) == 0)
        fill_random(r->map + off, len, rng);
    else
        memset(r->map + off, (arg & 0xff) == 1 ? 0 : 0xff, len);
}

Test(corrupt, random_bytes_over_region_parts, .timeout = 240)
{
    static const char *names[] = {"whole region", "header hot words",
                                  "participants", "descriptors",
                                  "ring",         "all but identity"};
    for (unsigned p = 0; p < PART_COUNT; p++)
        for (unsigned fill = 0; fill < 3; fill++)
            for (uint64_t seed = 1; seed <= (fill ? 1u : 3u); seed++)
                run_scenario(scribble_part, p << 8 | fill, seed, p & 1,
                             names[p]);
}

/* ---- header words, one at a time ---- */

static const size_t hot_words[] = {
    offsetof(struct shmq_header, tail),
    offsetof(struct shmq_header, head),
    offsetof(struct shmq_header, release),
    offsetof(struct shmq_header, not_empty),
    offsetof(struct shmq_header, not_full),
    offsetof(struct shmq_header, all_done),
    offsetof(struct shmq_header, closed),
    offsetof(struct shmq_header, tasks_done),
    offsetof(struct shmq_header, tasks_aborted),
};
#define N_HOT         (sizeof hot_words / sizeof hot_words[0])
#define N_WORD_VALUES 12

/* A plausible-looking or absurd replacement for a position word w. */
static uint64_t word_value(uint64_t w, unsigned k, uint64_t *rng)
{
    uint32_t seq = pos_seq(w), pos = pos_units(w);
    switch (k) {
    case 0:
        return 0;
    case 1:
        return ~0ull;
    case 2:
        return th_rand_next(rng);
    case 3:
        return w + 1;
    case 4:
        return w - 1;
    case 5:
        return w ^ 1ull << 31;
    case 6:
        return w ^ 1ull << 63;
    case 7:
        return pos_pack(seq + 3 * MAXSIZE, pos);
    case 8:
        return pos_pack(seq, pos + 4 * CAPACITY);
    case 9:
        return pos_pack(seq - 1, pos - 1);
    case 10:
        return pos_pack(seq + 1, pos + 1);
    default:
        return pos_pack(seq - MAXSIZE, pos);
    }
}

/* arg: word index << 8 | value kind */
static void scribble_word(struct region *r, uint64_t arg, uint64_t *rng)
{
    uint64_t *p = (uint64_t *)(r->map + hot_words[arg >> 8]);
    uint64_t w = __atomic_load_n(p, __ATOMIC_RELAXED);
    __atomic_store_n(p, word_value(w, (unsigned)(arg & 0xff), rng),
                     __ATOMIC_RELAXED);
}

Test(corrupt, header_words, .timeout = 240)
{
    for (unsigned i = 0; i < N_HOT; i++)
        for (unsigned k = 0; k < N_WORD_VALUES; k++)
            run_scenario(scribble_word, i << 8 | k, 100 + k, true,
                         "header word");
}

/* ---- descriptors ---- */

/* Which descriptor: at head, after head, at tail (next to claim), at
 * release, or the one before release (long free). */
static uint32_t desc_target(const struct region *r, unsigned t)
{
    uint64_t hd = __atomic_load_n(&r->hdr->head.word, __ATOMIC_RELAXED);
    uint64_t tl = __atomic_load_n(&r->hdr->tail.word, __ATOMIC_RELAXED);
    uint64_t rl = __atomic_load_n(&r->hdr->release.word, __ATOMIC_RELAXED);
    switch (t) {
    case 0:
        return pos_seq(hd);
    case 1:
        return pos_seq(hd) + 1;
    case 2:
        return pos_seq(tl);
    case 3:
        return pos_seq(rl);
    default:
        return pos_seq(rl) - 1;
    }
}
#define N_TARGETS     5
#define N_DESC_VALUES 22

static void desc_value(struct shmq_desc *d, unsigned k, uint64_t *rng)
{
    uint64_t w = __atomic_load_n(&d->word, __ATOMIC_RELAXED);
    uint32_t seq = desc_seq(w), units = desc_units(w);
    unsigned st = desc_state(w), own = desc_owner(w);
    if (k < 8) { /* every state, 5..7 undefined */
        w = desc_pack(seq, k, own, units);
    } else if (k < 16) {
        static const uint32_t seq_delta[] = {1, (uint32_t)-1, MAXSIZE,
                                             (uint32_t)-MAXSIZE};
        switch (k) {
        case 8:
        case 9:
        case 10:
        case 11:
            w = desc_pack(seq + seq_delta[k - 8], st, own, units);
            break;
        case 12:
            w = desc_pack(seq, st, own, 0);
            break;
        case 13:
            w = desc_pack(seq, st, own, DESC_MAX_UNITS);
            break;
        case 14:
            w = desc_pack(seq, st, own, MAX_MESSAGE / 8 + 1);
            break;
        default:
            w = desc_pack(seq, st, 1023, units);
            break;
        }
    } else {
        static const uint64_t lens[] = {~0ull, 1ull << 32, MAX_MESSAGE + 1,
                                        CAPACITY + 1, 1ull << 63};
        if (k - 16 < 5)
            __atomic_store_n(&d->len, lens[k - 16], __ATOMIC_RELAXED);
        else
            __atomic_store_n(&d->len, th_rand_next(rng), __ATOMIC_RELAXED);
        /* a committed record with that length */
        w = desc_pack(seq, DESC_COMMITTED, own, units);
    }
    __atomic_store_n(&d->word, w, __ATOMIC_RELAXED);
}

/* arg: target << 8 | value kind */
static void scribble_desc(struct region *r, uint64_t arg, uint64_t *rng)
{
    desc_value(region_desc(r, desc_target(r, (unsigned)(arg >> 8))),
               (unsigned)(arg & 0xff), rng);
}

Test(corrupt, descriptors, .timeout = 240)
{
    for (unsigned t = 0; t < N_TARGETS; t++)
        for (unsigned k = 0; k < N_DESC_VALUES; k++)
            run_scenario(scribble_desc, t << 8 | k, 200 + k, t == 0,
                         "descriptor");
}

/* Every descriptor's length huge and committed: get must not copy. */
static void scribble_all_lens(struct region *r, uint64_t arg, uint64_t *rng)
{
    (void)rng;
    for (uint32_t i = 0; i < r->id.desc_count; i++) {
        struct shmq_desc *d = region_desc(r, i);
        __atomic_store_n(&d->len, arg, __ATOMIC_RELAXED);
    }
}

Test(corrupt, all_lengths, .timeout = 120)
{
    static const uint64_t lens[] = {MAX_MESSAGE + 1, MAX_MESSAGE + 8, CAPACITY,
                                    1ull << 31, ~0ull};
    for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++)
        run_scenario(scribble_all_lens, lens[i], i, false, "all lengths");
}

/* ------------------------------------------------------------------ */
/* Scribbling while traffic runs                                         */
/* ------------------------------------------------------------------ */

struct scribbler {
    struct region *r;
    enum part part;
    int64_t run_ns;
    uint64_t seed;
};

/* Random 8-byte words at random aligned places of the part; hot words
 * and descriptors get plausible values half of the time. */
static int scribbler_main(void *arg)
{
    struct scribbler *s = arg;
    uint64_t rng = s->seed;
    size_t off, len;
    part_range(s->r, s->part, &off, &len);
    int64_t end = th_now_ns() + s->run_ns;
    while (th_now_ns() < end) {
        size_t at = off + th_rand_below(&rng, len / 8) * 8;
        uint64_t *p = (uint64_t *)(s->r->map + at);
        uint64_t w = __atomic_load_n(p, __ATOMIC_RELAXED);
        uint64_t v =
            th_rand_below(&rng, 2)
                ? th_rand_next(&rng)
                : word_value(w, (unsigned)th_rand_below(&rng, 12), &rng);
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
        th_sleep_ns((int64_t)th_rand_below(&rng, 200) * 1000);
    }
    return 0;
}

static void run_concurrent(enum part part, uint64_t seed, const char *what)
{
    shmq_t *q = queue_with_traffic(0);
    struct region r;
    region_map(&r, q);
    int64_t run_ns = TH_SEC;
    struct victim prod = {.q = q,
                          .puts = true,
                          .max_timeout = 5 * TH_MS,
                          .run_ns = run_ns,
                          .seed = seed};
    struct victim cons = {.q = q,
                          .gets = true,
                          .max_timeout = 5 * TH_MS,
                          .run_ns = run_ns,
                          .seed = seed + 1};
    struct scribbler scr = {&r, part, run_ns, seed + 2};
    pid_t pids[3];
    pids[0] = th_fork(victim_main, &prod);
    pids[1] = th_fork(victim_main, &cons);
    pids[2] = th_fork(scribbler_main, &scr);
    char why[3][160];
    bool ok[3];
    int64_t end = th_now_ns() + VICTIM_WATCHDOG_NS;
    for (unsigned i = 0; i < 3; i++) {
        int64_t left = end - th_now_ns();
        ok[i] = th_reap_ok(pids[i], left > 0 ? left : 1, why[i], sizeof why[i]);
    }
    region_unmap(&r);
    shmq_release(q);
    cr_expect(ok[0], "%s, producer: %s", what, why[0]);
    cr_expect(ok[1], "%s, consumer: %s", what, why[1]);
    cr_expect(ok[2], "%s, scribbler: %s", what, why[2]);
}

Test(corrupt, scribbling_during_traffic, .timeout = 240)
{
    run_concurrent(PART_HOT_WORDS, 1, "header words");
    run_concurrent(PART_DESCS, 2, "descriptors");
    run_concurrent(PART_PARTICIPANTS, 3, "participants");
    run_concurrent(PART_ALL_BUT_ID, 4, "whole region but identity");
    run_concurrent(PART_WHOLE, 5, "whole region");
}

/* ------------------------------------------------------------------ */
/* Attaching to bad regions: -EPROTO                                     */
/* ------------------------------------------------------------------ */

struct id_field {
    const char *name;
    size_t off, size;
};
#define ID_FIELD(f)                                                            \
    {                                                                          \
#f,                                                                    \
            offsetof(struct shmq_header, id) +                                 \
                offsetof(struct shmq_identity, f),                             \
            sizeof(((struct shmq_identity *)0)->f)                             \
    }

static const struct id_field id_fields[] = {
    ID_FIELD(magic),       ID_FIELD(version),     ID_FIELD(flags),
    ID_FIELD(maxsize),     ID_FIELD(desc_count),  ID_FIELD(unit_shift),
    ID_FIELD(cap_units),   ID_FIELD(ring_units),  ID_FIELD(participants),
    ID_FIELD(max_message), ID_FIELD(desc_offset), ID_FIELD(ring_offset),
    ID_FIELD(region_size),
};

/* Values of each field that no queue of this region's size can have. */
static size_t bad_values(const struct region *r, const char *f, uint64_t *v)
{
    const struct shmq_identity *id = &r->id;
    size_t n = 0;
    v[n++] = ~0ull;
    if (!strcmp(f, "magic")) {
        v[n++] = id->magic ^ 1, v[n++] = 0;
    } else if (!strcmp(f, "version")) {
        v[n++] = id->version + 1, v[n++] = 0;
    } else if (!strcmp(f, "flags")) {
        v[n++] = 2, v[n++] = 0x80000000u;
    } else if (!strcmp(f, "maxsize")) {
        v[n++] = 0, v[n++] = id->desc_count + 1,
        v[n++] = SHMQ_MAXSIZE_LIMIT + 1;
    } else if (!strcmp(f, "desc_count")) {
        v[n++] = 0, v[n++] = id->desc_count * 2, v[n++] = id->desc_count / 2,
        v[n++] = id->desc_count + 1;
    } else if (!strcmp(f, "unit_shift")) {
        v[n++] = 0, v[n++] = id->unit_shift + 1, v[n++] = 31, v[n++] = 63,
        v[n++] = 64, v[n++] = 200;
    } else if (!strcmp(f, "cap_units")) {
        v[n++] = 0, v[n++] = id->ring_units * 2 + 1, v[n++] = 1;
    } else if (!strcmp(f, "ring_units")) {
        v[n++] = 0, v[n++] = id->ring_units * 2, v[n++] = id->ring_units / 2,
        v[n++] = id->ring_units + 1;
    } else if (!strcmp(f, "participants")) {
        v[n++] = 0, v[n++] = SHMQ_PARTICIPANTS - 1,
        v[n++] = SHMQ_PARTICIPANTS + 1;
    } else if (!strcmp(f, "max_message")) {
        v[n++] = 0, v[n++] = (uint64_t)CAPACITY + 1, v[n++] = 1ull << 40;
    } else if (!strcmp(f, "desc_offset")) {
        v[n++] = 0, v[n++] = id->desc_offset + 8, v[n++] = id->desc_offset + 64,
        v[n++] = id->region_size;
    } else if (!strcmp(f, "ring_offset")) {
        v[n++] = 0, v[n++] = id->ring_offset + 4096,
        v[n++] = id->ring_offset - 4096, v[n++] = id->ring_offset + 1;
    } else if (!strcmp(f, "region_size")) {
        v[n++] = 0, v[n++] = id->region_size + 4096,
        v[n++] = id->region_size - 4096;
    }
    return n;
}

static void poke(struct region *r, const struct id_field *f, uint64_t v)
{
    if (f->size == 8)
        memcpy(r->map + f->off, &v, 8);
    else {
        uint32_t v32 = (uint32_t)v;
        memcpy(r->map + f->off, &v32, 4);
    }
}

/* Attach both ways; returns the worse result (the first non-EPROTO). */
static void expect_attach(shmq_t *q, const char *name, int want,
                          const char *field, uint64_t value)
{
    shmq_t *h = NULL;
    int rc = shmq_from_fd(&h, shmq_fd(q));
    cr_expect_eq(rc, want, "%s = %#" PRIx64 ": shmq_from_fd gave %d (%s)",
                 field, value, rc, shmq_strerror(rc));
    if (rc == 0)
        shmq_release(h);
    h = NULL;
    rc = shmq_open(&h, name);
    cr_expect_eq(rc, want, "%s = %#" PRIx64 ": shmq_open gave %d (%s)", field,
                 value, rc, shmq_strerror(rc));
    if (rc == 0)
        shmq_release(h);
}

/* The handle attached before the scribble keeps answering sanely. */
static void expect_old_handle_sane(shmq_t *q)
{
    unsigned char buf[64];
    size_t len;
    int rc = shmq_put_nowait(q, "x", 1);
    cr_expect(put_rc_ok(rc), "old handle: put gave %d", rc);
    rc = shmq_get_nowait(q, buf, sizeof buf, &len);
    cr_expect(get_rc_ok(rc), "old handle: get gave %d", rc);
}

Test(corrupt, identity_fields_reject_attach, .timeout = 120)
{
    char name[TH_NAME_MAX];
    struct shmq_config c = {
        .maxsize = MAXSIZE, .capacity = CAPACITY, .max_message = MAX_MESSAGE};
    shmq_t *q = NULL;
    th_queue_name(name, "corrupt-id");
    cr_assert_eq(shmq_create_named(&q, name, &c, 0), 0);
    struct region r;
    region_map(&r, q);
    expect_attach(q, name, 0, "(none)", 0);
    for (size_t i = 0; i < sizeof id_fields / sizeof id_fields[0]; i++) {
        const struct id_field *f = &id_fields[i];
        unsigned char saved[8];
        uint64_t values[16];
        size_t n = bad_values(&r, f->name, values);
        memcpy(saved, r.map + f->off, f->size);
        for (size_t k = 0; k < n; k++) {
            poke(&r, f, values[k]);
            expect_attach(q, name, -EPROTO, f->name, values[k]);
            expect_old_handle_sane(q);
        }
        memcpy(r.map + f->off, saved, f->size);
        expect_attach(q, name, 0, "(restored)", i);
    }
    region_unmap(&r);
    shmq_release(q);
    cr_expect_eq(shmq_unlink(name), 0);
}

static int memfd_with(const void *data, size_t n, size_t size)
{
    int fd = memfd_create("corrupt-test", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    if (n > size)
        n = size;
    if (n)
        cr_assert_eq(pwrite(fd, data, n, 0), (ssize_t)n);
    return fd;
}

static void expect_from_fd(int fd, int want, const char *what)
{
    shmq_t *h = NULL;
    int rc = shmq_from_fd(&h, fd);
    if (want == 1)
        cr_expect_lt(rc, 0, "%s: shmq_from_fd gave %d, want an error", what,
                     rc);
    else
        cr_expect_eq(rc, want, "%s: shmq_from_fd gave %d (%s), want %d", what,
                     rc, shmq_strerror(rc), want);
    if (rc == 0)
        shmq_release(h);
}

Test(corrupt, bad_descriptors_on_attach, .timeout = 120)
{
    shmq_t *q = queue_with_traffic(0);
    struct region r;
    region_map(&r, q);
    unsigned char *copy = malloc(r.size);
    cr_assert(copy);
    memcpy(copy, r.map, r.size);
    int fd;

    fd = memfd_with(NULL, 0, 0);
    expect_from_fd(fd, -EPROTO, "empty memfd");
    close(fd);
    fd = memfd_with(copy, 100, 100);
    expect_from_fd(fd, -EPROTO, "100-byte memfd, start of a header");
    close(fd);
    fd = memfd_with(copy, sizeof(struct shmq_header),
                    sizeof(struct shmq_header));
    expect_from_fd(fd, -EPROTO, "memfd holding just the header");
    close(fd);
    fd = memfd_with(copy, r.size / 2, r.size / 2);
    expect_from_fd(fd, -EPROTO, "truncated copy of a region");
    close(fd);
    fd = memfd_with(copy, r.size, r.size - 1);
    expect_from_fd(fd, -EPROTO, "copy one byte short");
    close(fd);
    fd = memfd_with(copy, r.size, r.size + 4096);
    expect_from_fd(fd, -EPROTO, "copy of a region, a page larger");
    close(fd);
    fd = memfd_with(copy, r.size, r.size * 2);
    expect_from_fd(fd, -EPROTO, "copy of a region, twice the size");
    close(fd);
    fd = memfd_with(NULL, 0, r.size);
    expect_from_fd(fd, -EPROTO, "zeros of a region's size");
    close(fd);

    int p[2];
    cr_assert_eq(pipe(p), 0);
    expect_from_fd(p[0], 1, "pipe");
    close(p[0]);
    close(p[1]);
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    expect_from_fd(fd, 1, "/dev/null");
    close(fd);
    fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    expect_from_fd(fd, 1, "a directory");
    close(fd);
    expect_from_fd(fd, -EBADF, "a closed descriptor");
    expect_from_fd(-1, -EBADF, "-1");

    free(copy);
    region_unmap(&r);
    shmq_release(q);
}

/* ---- the wakeup protocol ---- */

static int get_forever(void *arg)
{
    char b[8];
    size_t len;
    TH_CHECK(shmq_set_spin(arg, 0) == 0);
    TH_CHECK_EQ(shmq_get(arg, b, sizeof b, &len, SHMQ_FOREVER), 0);
    return 0;
}

/* A consumer asleep in a FOREVER get; another process clears the
 * "sleepers" flag of the event it sleeps on, so no producer will wake it.
 * It must still get the next message (late, by a periodic look), not
 * sleep forever. */
Test(corrupt, scribbled_event_word_delays_but_never_loses_a_wakeup,
     .timeout = 60)
{
    struct shmq_config qc = {.maxsize = 8, .capacity = 4096, .max_message = 8};
    shmq_t *q;
    cr_assert_eq(shmq_create(&q, &qc), 0);
    pid_t pid = th_fork(get_forever, q);
    th_sleep_ns(150 * TH_MS); /* asleep by now */
    struct shmq_header *h = mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE,
                                 MAP_SHARED, shmq_fd(q), 0);
    cr_assert_neq(h, MAP_FAILED);
    __atomic_store_n((uint32_t *)&h->not_empty.word, 0, __ATOMIC_SEQ_CST);
    cr_assert_eq(shmq_put(q, "x", 1, SHMQ_NOWAIT), 0);
    th_assert_child_ok_within(pid, 10 * TH_SEC);
    munmap(h, sizeof *h);
    shmq_release(q);
}
