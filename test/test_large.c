/* SPDX-License-Identifier: MIT */
/*
 * test_large.c - messages as large as the queue allows: 64 MiB messages
 * in a 256 MiB queue (max_message 64 MiB), between forked processes,
 * through every path (put and get, putv, put_begin/put_commit,
 * get_begin/get_end), with the first record of each test placed so that
 * it crosses the end of the ring (the mirrored mapping makes it
 * contiguous: internals.md), and a queue filled to its capacity with
 * four of them. Every byte is checked against a pattern of its message.
 *
 * Under a sanitizer (slower, and its shadow memory grows with every
 * buffer) the sizes are a quarter: 16 MiB messages in a 64 MiB queue.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include "internal.h" /* the ring's geometry and the release position:
                         to place a record across the end of the ring */

#if defined(__SANITIZE_ADDRESS__) || defined(TH_TSAN)
#define LARGE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LARGE_SANITIZED 1
#endif
#endif

#ifdef LARGE_SANITIZED
#define LARGE_MSG ((size_t)16 << 20)
#else
#define LARGE_MSG ((size_t)64 << 20)
#endif
#define LARGE_CAP (4 * LARGE_MSG)

/* Generous: a 64 MiB copy takes tens of ms, more on a loaded machine. */
#define LARGE_WAIT_NS (60 * TH_SEC)

/* The messages of each test, in order: full size, odd sizes (a tail that
 * is not a whole word, a whole page less one), small ones in between;
 * more than the ring holds in all, so that the ring wraps again while
 * they flow. */
static const size_t sizes[] = {
    LARGE_MSG, LARGE_MSG - 1, LARGE_MSG / 2 + 13,
    8,         LARGE_MSG,     LARGE_MSG - 4095,
    1,         LARGE_MSG / 3, LARGE_MSG,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* Word i of message seed: cheap (a multiply and two shifts per 8 bytes),
 * and different at every offset and for every message. */
static uint64_t pattern_word(uint32_t seed, size_t i)
{
    uint64_t z = ((uint64_t)seed + 1) * 0x9e3779b97f4a7c15ull ^
                 (uint64_t)i * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 31;
    z *= 0x94d049bb133111ebull;
    return z ^ (z >> 29);
}

static void fill(void *buf, size_t len, uint32_t seed)
{
    unsigned char *b = buf;
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w = pattern_word(seed, i);
        memcpy(b + i * 8, &w, 8);
    }
    uint64_t last = pattern_word(seed, words);
    memcpy(b + words * 8, &last, len % 8);
}

/* The offset of the first wrong byte, or len when all are right. */
static size_t first_bad(const void *buf, size_t len, uint32_t seed)
{
    const unsigned char *b = buf;
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, b + i * 8, 8);
        if (w != pattern_word(seed, i))
            for (size_t k = i * 8;; k++) {
                uint64_t want = pattern_word(seed, i);
                if (b[k] != ((const unsigned char *)&want)[k - i * 8])
                    return k;
            }
    }
    uint64_t last = pattern_word(seed, words);
    for (size_t k = words * 8; k < len; k++)
        if (b[k] != ((const unsigned char *)&last)[k - words * 8])
            return k;
    return len;
}

static shmq_t *make_large(void)
{
    struct shmq_config cfg = {.capacity = LARGE_CAP, .max_message = LARGE_MSG};
    shmq_t *q = NULL;
    int rc = shmq_create(&q, &cfg);
    cr_assert_eq(rc, 0, "shmq_create(%zu MiB): %s", LARGE_CAP >> 20,
                 shmq_strerror(rc));
    cr_assert_geq(shmq_max_message(q), LARGE_MSG);
    return q;
}

/* Where the next record of a quiescent queue starts. Consumers move
 * release lazily; shmq_full() moves it first. */
static uint32_t release_pos(shmq_t *q)
{
    (void)shmq_full(q);
    return pos_units(__atomic_load_n(&q->hdr->release.word, __ATOMIC_ACQUIRE));
}

/*
 * On a quiescent queue, put and take filler messages until the next
 * record starts half a LARGE_MSG before the end of the ring, so that a
 * LARGE_MSG record put next crosses the end. Asserts that it will.
 */
static void place_across_end(shmq_t *q, unsigned char *scratch)
{
    const uint32_t ring = q->geo.ring_units, shift = q->geo.unit_shift;
    const uint32_t u = units_for(q, LARGE_MSG), max_units = u;
    const uint32_t target = ring - u / 2;
    size_t len;
    for (int i = 0; i < 8; i++) {
        uint32_t d = (target - release_pos(q)) & (ring - 1);
        if (d == 0)
            break;
        size_t n = (size_t)(d < max_units ? d : max_units) << shift;
        cr_assert_eq(shmq_put(q, scratch, n, SHMQ_NOWAIT), 0);
        cr_assert_eq(shmq_get(q, scratch, LARGE_MSG, &len, SHMQ_NOWAIT), 0);
        cr_assert_eq(len, n);
    }
    uint32_t at = release_pos(q) & (ring - 1);
    cr_assert(at + u > ring,
              "the next record (%u units at %u) would not cross the end of "
              "a ring of %u units",
              u, at, ring);
}

/* ------------------------------------------------------------------ */
/* producers (children)                                                 */
/* ------------------------------------------------------------------ */

enum put_path { PUT_COPY, PUT_V, PUT_BEGIN };

struct job {
    shmq_t *q;
    enum put_path path;
};

static int put_one(shmq_t *q, enum put_path path, unsigned char *buf,
                   size_t len, uint32_t seed)
{
    if (path == PUT_BEGIN) {
        /* reserve the largest message, write in place, commit len */
        struct shmq_msg m;
        int rc = shmq_put_begin(q, LARGE_MSG, &m, LARGE_WAIT_NS);
        if (rc < 0)
            return rc;
        if (m.len != LARGE_MSG || ((uintptr_t)m.data & 7) != 0)
            return -EPROTO;
        fill(m.data, len, seed);
        return shmq_put_commit(q, &m, len);
    }
    fill(buf, len, seed);
    if (path == PUT_COPY)
        return shmq_put(q, buf, len, LARGE_WAIT_NS);
    /* a 16-byte header, an odd-sized middle and the rest: three iovecs */
    size_t h = len < 16 ? len : 16, mid = (len - h) / 3 + 1;
    if (mid > len - h)
        mid = len - h;
    struct iovec iov[3] = {
        {buf, h}, {buf + h, mid}, {buf + h + mid, len - h - mid}};
    return shmq_putv(q, iov, 3, LARGE_WAIT_NS);
}

static int producer(void *arg)
{
    const struct job *j = arg;
    unsigned char *buf = malloc(LARGE_MSG);
    TH_CHECK(buf != NULL);
    for (size_t i = 0; i < NSIZES; i++)
        TH_CHECK_EQ(put_one(j->q, j->path, buf, sizes[i], (uint32_t)i + 1), 0);
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ */
/* consumer (the test's process)                                        */
/* ------------------------------------------------------------------ */

static void take_checked(shmq_t *q, bool in_place, unsigned char *buf,
                         size_t want, uint32_t seed)
{
    size_t len = 0, bad;
    if (in_place) {
        struct shmq_msg m;
        int rc = shmq_get_begin(q, &m, LARGE_WAIT_NS);
        cr_assert_eq(rc, 0, "get_begin of message %u: %s", seed,
                     shmq_strerror(rc));
        cr_assert_eq(m.len, want, "message %u: %zu bytes, not %zu", seed, m.len,
                     want);
        cr_assert_eq((uintptr_t)m.data & 7, 0);
        bad = first_bad(m.data, m.len, seed);
        cr_assert_eq(shmq_get_end(q, &m), 0);
    } else {
        int rc = shmq_get(q, buf, LARGE_MSG, &len, LARGE_WAIT_NS);
        cr_assert_eq(rc, 0, "get of message %u: %s", seed, shmq_strerror(rc));
        cr_assert_eq(len, want, "message %u: %zu bytes, not %zu", seed, len,
                     want);
        bad = first_bad(buf, len, seed);
    }
    cr_assert_eq(bad, want, "message %u (%zu bytes): wrong byte at %zu", seed,
                 want, bad);
}

static void run_paths(enum put_path path, bool get_in_place)
{
    shmq_t *q = make_large();
    unsigned char *buf = malloc(LARGE_MSG);
    cr_assert_not_null(buf);
    place_across_end(q, buf);
    struct job j = {q, path};
    pid_t pid = th_fork(producer, &j);
    for (size_t i = 0; i < NSIZES; i++)
        take_checked(q, get_in_place, buf, sizes[i], (uint32_t)i + 1);
    th_assert_child_ok_within(pid, LARGE_WAIT_NS);
    cr_assert(shmq_empty(q));
    free(buf);
    shmq_release(q);
}

Test(large, put_get_across_the_end)
{
    run_paths(PUT_COPY, false);
}

Test(large, putv_get_begin_across_the_end)
{
    run_paths(PUT_V, true);
}

Test(large, put_begin_get_across_the_end)
{
    run_paths(PUT_BEGIN, false);
}

Test(large, put_begin_get_begin_across_the_end)
{
    run_paths(PUT_BEGIN, true);
}

/* Four LARGE_MSG messages fill the queue's capacity exactly (n·len <=
 * capacity fits, DESIGN.md): all four go in at once, the first across
 * the end of the ring, and nothing more fits until one is taken. */
static int fill_to_capacity(void *arg)
{
    shmq_t *q = arg;
    unsigned char *buf = malloc(LARGE_MSG);
    TH_CHECK(buf != NULL);
    for (uint32_t i = 0; i < 4; i++) {
        fill(buf, LARGE_MSG, 100 + i);
        TH_CHECK_EQ(shmq_put(q, buf, LARGE_MSG, SHMQ_NOWAIT), 0);
    }
    TH_CHECK(shmq_full(q));
    TH_CHECK_EQ(shmq_put(q, buf, 8, SHMQ_NOWAIT), -EAGAIN);
    TH_CHECK_EQ(shmq_qsize(q), 4);
    free(buf);
    return 0;
}

Test(large, four_fill_the_capacity)
{
    shmq_t *q = make_large();
    unsigned char *buf = malloc(LARGE_MSG);
    cr_assert_not_null(buf);
    place_across_end(q, buf);
    pid_t pid = th_fork(fill_to_capacity, q);
    th_assert_child_ok_within(pid, LARGE_WAIT_NS);
    for (uint32_t i = 0; i < 4; i++)
        take_checked(q, i % 2 == 0, buf, LARGE_MSG, 100 + i);
    cr_assert(shmq_empty(q));
    free(buf);
    shmq_release(q);
}
