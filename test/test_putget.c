/* SPDX-License-Identifier: MIT */
/*
 * test_putget.c - put and get: sizes, argument errors, full and empty,
 * the count and byte bounds, qsize/empty/full, timeouts, and wakeups
 * across processes (DESIGN.md, semantics table and "Details").
 */
#include "helpers.h"

static shmq_t *make(size_t maxsize, size_t capacity, size_t max_message)
{
    struct shmq_config cfg = {
        .maxsize = maxsize, .capacity = capacity, .max_message = max_message};
    shmq_t *q = NULL;
    int r = shmq_create(&q, &cfg);
    cr_assert_eq(r, 0, "create(%zu, %zu, %zu): %d", maxsize, capacity,
                 max_message, r);
    return q;
}

/* Put a 0-byte message without waiting: 0 or the error. */
static int put_empty(shmq_t *q)
{
    return shmq_put_nowait(q, NULL, 0);
}

static void get_expect(shmq_t *q, size_t want_len, uint32_t seed)
{
    static unsigned char buf[1 << 16];
    size_t len = (size_t)-1;
    int r = shmq_get_nowait(q, buf, sizeof buf, &len);
    cr_assert_eq(r, 0, "get: %d", r);
    cr_assert_eq(len, want_len, "len %zu, expected %zu", len, want_len);
    cr_assert(th_check(buf, len, seed), "content of a %zu-byte message", len);
}

/* ------------------------------------------------------------------ */
/* Sizes                                                                */
/* ------------------------------------------------------------------ */

Test(putget, roundtrip_sizes, .timeout = 10)
{
    shmq_t *q = make(64, 1 << 16, 4096);
    size_t mm = shmq_max_message(q);
    cr_assert_geq(mm, 4096, "max_message");
    static const size_t sizes[] = {0,   1,    2,    3,    7,    8,   9,
                                   15,  16,   17,   63,   64,   65,  255,
                                   256, 1000, 1023, 1024, 4095, 4096};
    static unsigned char msg[1 << 16], out[1 << 16];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        th_fill(msg, n, (uint32_t)i);
        cr_assert_eq(shmq_put(q, msg, n, SHMQ_NOWAIT), 0, "put %zu", n);
        cr_assert_eq(shmq_qsize(q), 1, "qsize after put %zu", n);
        size_t len = (size_t)-1;
        cr_assert_eq(shmq_get(q, out, mm, &len, SHMQ_NOWAIT), 0, "get %zu", n);
        cr_assert_eq(len, n, "len");
        cr_assert(th_check(out, n, (uint32_t)i), "content of %zu bytes", n);

        /* Into a buffer of exactly n bytes: nothing written past cap. */
        cr_assert_eq(shmq_put(q, msg, n, SHMQ_NOWAIT), 0, "put %zu", n);
        memset(out, 0xee, n + 16);
        len = (size_t)-1;
        cr_assert_eq(shmq_get(q, out, n, &len, SHMQ_NOWAIT), 0,
                     "get %zu with cap %zu", n, n);
        cr_assert_eq(len, n, "len");
        cr_assert(th_check(out, n, (uint32_t)i), "content of %zu bytes", n);
        for (size_t k = n; k < n + 16; k++)
            cr_assert_eq(out[k], 0xee, "get wrote past cap at %zu", k);
    }
    /* Exactly max_message, through the same calls. */
    th_fill(msg, mm, 77);
    cr_assert_eq(shmq_put(q, msg, mm, SHMQ_NOWAIT), 0, "put max_message");
    get_expect(q, mm, 77);
    shmq_release(q);
}

Test(putget, zero_byte_messages, .timeout = 10)
{
    shmq_t *q = make(8, 4096, 64);
    size_t len = 99;
    cr_assert_eq(shmq_put(q, NULL, 0, SHMQ_NOWAIT), 0, "put(NULL, 0)");
    cr_assert_eq(shmq_put_nowait(q, "ignored", 0), 0, "put(msg, 0)");
    cr_assert_eq(shmq_qsize(q), 2, "0-byte messages are counted");
    cr_assert_not(shmq_empty(q), "not empty");
    cr_assert_eq(shmq_get(q, NULL, 0, &len, SHMQ_NOWAIT), 0, "get(NULL, 0)");
    cr_assert_eq(len, 0, "len");
    char buf[4];
    len = 99;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(len, 0, "len");
    cr_assert(shmq_empty(q), "empty");
    cr_assert_eq(shmq_get(q, NULL, 0, &len, SHMQ_NOWAIT), -EAGAIN, "empty");
    shmq_release(q);
}

Test(putget, ring_wraps_with_mixed_sizes, .timeout = 20)
{
    /* Capacity deliberately not a power of two; messages of every size
     * cross the end of the ring many times. */
    shmq_t *q = make(32, 3000, 700);
    static unsigned char msg[1024];
    uint32_t put_seq = 0, get_seq = 0;
    size_t lens[4096];
    uint32_t x = 12345;
    for (int round = 0; round < 20000; round++) {
        x = x * 1103515245u + 12345u;
        bool do_put = get_seq == put_seq || (x >> 20) % 2 == 0;
        int r = -EAGAIN;
        if (do_put) {
            size_t n = (x >> 8) % 701;
            th_fill(msg, n, put_seq);
            r = shmq_put_nowait(q, msg, n);
            cr_assert(r == 0 || r == -EAGAIN, "put: %d", r);
            if (r == 0)
                lens[put_seq++ % 4096] = n;
        }
        if (r != 0) {
            cr_assert_neq(get_seq, put_seq, "an empty queue refused a put");
            get_expect(q, lens[get_seq % 4096], get_seq);
            get_seq++;
        }
        cr_assert_eq(shmq_qsize(q), put_seq - get_seq, "qsize");
    }
    while (get_seq != put_seq) {
        get_expect(q, lens[get_seq % 4096], get_seq);
        get_seq++;
    }
    cr_assert(shmq_empty(q), "empty at the end");
    cr_assert_gt(put_seq, 5000, "enough traffic");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Argument errors                                                      */
/* ------------------------------------------------------------------ */

Test(putget, oversized_is_emsgsize, .timeout = 10)
{
    shmq_t *q = make(4, 8192, 1000);
    size_t mm = shmq_max_message(q);
    static unsigned char msg[16384];
    cr_assert_eq(shmq_put(q, msg, mm + 1, SHMQ_NOWAIT), -EMSGSIZE, "mm+1");
    cr_assert_eq(shmq_put_nowait(q, msg, mm + 1), -EMSGSIZE, "nowait mm+1");
    cr_assert_eq(shmq_put(q, msg, mm + 1, SHMQ_FOREVER), -EMSGSIZE,
                 "FOREVER mm+1");
    cr_assert_eq(shmq_put(q, msg, SIZE_MAX, 50 * TH_MS), -EMSGSIZE, "SIZE_MAX");
    cr_assert_eq(shmq_qsize(q), 0, "nothing queued");

    /* Argument errors come before the state: full ... */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(shmq_put_nowait(q, msg, 1), 0, "fill");
    cr_assert_eq(shmq_put_nowait(q, msg, mm + 1), -EMSGSIZE,
                 "full queue, oversized");
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put(q, msg, mm + 1, 2 * TH_SEC), -EMSGSIZE,
                 "full queue, oversized, with a timeout");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "-EMSGSIZE did not wait");

    /* ... and closed. */
    cr_assert_eq(shmq_close(q), 0, "close");
    cr_assert_eq(shmq_put_nowait(q, msg, mm + 1), -EMSGSIZE,
                 "closed queue, oversized");
    cr_assert_eq(shmq_put(q, msg, mm + 1, SHMQ_FOREVER), -EMSGSIZE,
                 "closed queue, oversized, FOREVER");
    shmq_release(q);
}

Test(putget, bad_timeouts_are_einval, .timeout = 10)
{
    shmq_t *q = make(4, 4096, 64);
    char buf[64];
    size_t len;
    static const int64_t bad[] = {-2, -3, -1000000000, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t = bad[i];
        cr_assert_eq(shmq_put(q, "x", 1, t), -EINVAL, "put timeout %lld",
                     (long long)t);
        cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, t), -EINVAL,
                     "get timeout %lld (empty)", (long long)t);
    }
    cr_assert_eq(shmq_qsize(q), 0, "bad puts queued nothing");
    cr_assert_eq(shmq_put_nowait(q, "x", 1), 0, "put");
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, -2), -EINVAL,
                 "get timeout -2 (non-empty)");
    cr_assert_eq(shmq_qsize(q), 1, "the bad get took nothing");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shmq_put_nowait(q, "x", 1), 0, "fill");
    cr_assert_eq(shmq_put(q, "x", 1, INT64_MIN), -EINVAL, "put on full");

    /* Closed: argument errors still come first. */
    cr_assert_eq(shmq_close(q), 0, "close");
    cr_assert_eq(shmq_put(q, "x", 1, -2), -EINVAL, "put on closed");
    while (shmq_get_nowait(q, buf, sizeof buf, &len) == 0)
        ;
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, -5), -EINVAL,
                 "get on closed drained");
    shmq_release(q);
}

Test(putget, bad_pointers_are_einval, .timeout = 10)
{
    shmq_t *q = make(4, 4096, 64);
    char buf[64];
    size_t len = 1234;
    cr_assert_eq(shmq_put(q, NULL, 1, SHMQ_NOWAIT), -EINVAL, "put NULL, 1");
    cr_assert_eq(shmq_put_nowait(q, NULL, 5), -EINVAL, "put_nowait NULL, 5");
    cr_assert_eq(shmq_qsize(q), 0, "nothing queued");
    cr_assert_eq(shmq_get(q, NULL, 1, &len, SHMQ_NOWAIT), -EINVAL,
                 "get NULL buf, cap 1 (empty)");
    cr_assert_eq(shmq_get(q, buf, sizeof buf, NULL, SHMQ_NOWAIT), -EINVAL,
                 "get NULL len (empty)");
    cr_assert_eq(shmq_put_nowait(q, "abc", 3), 0, "put");
    cr_assert_eq(shmq_get(q, NULL, 8, &len, SHMQ_NOWAIT), -EINVAL,
                 "get NULL buf, cap 8");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, NULL), -EINVAL,
                 "get_nowait NULL len");
    cr_assert_eq(shmq_get(q, buf, sizeof buf, NULL, 10 * TH_MS), -EINVAL,
                 "get NULL len with a timeout");
    cr_assert_eq(shmq_qsize(q), 1, "the bad gets took nothing");
    len = 0;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(len, 3, "len");
    cr_assert_eq(memcmp(buf, "abc", 3), 0, "content");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Full, empty, qsize                                                   */
/* ------------------------------------------------------------------ */

Test(putget, full_by_count, .timeout = 10)
{
    shmq_t *q = make(4, 4096, 64);
    for (uint32_t i = 0; i < 4; i++) {
        cr_assert_not(shmq_full(q), "full with %u", i);
        char m[8];
        th_fill(m, sizeof m, i);
        cr_assert_eq(shmq_put_nowait(q, m, sizeof m), 0, "put %u", i);
        cr_assert_eq(shmq_qsize(q), i + 1, "qsize");
    }
    cr_assert(shmq_full(q), "full at maxsize");
    cr_assert_eq(shmq_put_nowait(q, "y", 1), -EAGAIN, "put_nowait when full");
    cr_assert_eq(put_empty(q), -EAGAIN, "0-byte put when full");
    cr_assert_eq(shmq_put(q, "y", 1, SHMQ_NOWAIT), -EAGAIN, "put NOWAIT");
    cr_assert_eq(shmq_qsize(q), 4, "qsize");
    get_expect(q, 8, 0);
    cr_assert_not(shmq_full(q), "not full after a get");
    cr_assert_eq(shmq_put_nowait(q, "z", 1), 0, "put again");
    shmq_release(q);
}

Test(putget, full_by_bytes, .timeout = 10)
{
    shmq_t *q = make(1000, 1024, 256);
    static unsigned char m[256];
    for (uint32_t i = 0; i < 4; i++) {
        th_fill(m, 256, i);
        cr_assert_eq(shmq_put_nowait(q, m, 256), 0, "put %u of 256 bytes", i);
    }
    cr_assert_eq(shmq_qsize(q), 4, "qsize");
    cr_assert_eq(shmq_put_nowait(q, m, 256), -EAGAIN, "1024 bytes used");
    cr_assert_eq(shmq_put_nowait(q, m, 1), -EAGAIN, "not even 1 byte");
    cr_assert(shmq_full(q), "full by bytes with count 4 < maxsize");
    cr_assert_eq(put_empty(q), -EAGAIN, "0-byte put when full by bytes");
    get_expect(q, 256, 0);
    cr_assert_not(shmq_full(q), "not full after a get");
    cr_assert_eq(shmq_put_nowait(q, m, 256), 0, "room for 256 again");
    shmq_release(q);
}

/* full() must be exactly "a 0-byte put_nowait would fail". Probing it
 * changes the queue when it succeeds, which the callers account for. */
static int probe_full(shmq_t *q)
{
    bool f = shmq_full(q);
    int r = put_empty(q);
    cr_assert(r == 0 || r == -EAGAIN, "0-byte put: %d", r);
    cr_assert_eq(f, r == -EAGAIN, "full() is %d but a 0-byte put gave %d", f,
                 r);
    return r;
}

Test(putget, full_matches_zero_byte_put, .timeout = 10)
{
    /* By count. */
    shmq_t *q = make(3, 4096, 64);
    cr_assert_eq(probe_full(q), 0, "empty: not full");  /* 1 queued */
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put"); /* 2 */
    cr_assert_eq(probe_full(q), 0, "2 of 3: not full"); /* 3 */
    cr_assert_eq(probe_full(q), -EAGAIN, "3 of 3: full");
    size_t len;
    cr_assert_eq(shmq_get(q, NULL, 0, &len, SHMQ_NOWAIT), 0, "get 0-byte");
    cr_assert_eq(probe_full(q), 0, "after a get: not full");
    cr_assert_eq(shmq_qsize(q), 3, "qsize");
    shmq_release(q);

    /* By bytes: 248 of 256 bytes used leaves one 8-byte unit. */
    q = make(64, 256, 256);
    static unsigned char m[256];
    th_fill(m, 248, 1);
    cr_assert_eq(shmq_put_nowait(q, m, 248), 0, "put 248");
    cr_assert_eq(probe_full(q), 0, "one unit left: not full");
    cr_assert_eq(probe_full(q), -EAGAIN, "no unit left: full");
    cr_assert_eq(shmq_qsize(q), 2, "qsize");
    get_expect(q, 248, 1);
    cr_assert_eq(probe_full(q), 0, "after a get: not full");
    shmq_release(q);

    /* By bytes, a message that is not a whole number of units. */
    q = make(64, 256, 256);
    th_fill(m, 250, 2);
    cr_assert_eq(shmq_put_nowait(q, m, 250), 0, "put 250");
    probe_full(q);
    shmq_release(q);
}

/*
 * A random walk of puts and gets of random sizes, against a model: the
 * header documents the accounting exactly (a message occupies its length
 * rounded up to 8 bytes, at least 8, when max_message <= 4 MiB), so with a
 * capacity that is a multiple of 8 a put_nowait succeeds exactly when the
 * model says it fits. Checks qsize/empty/full at every step.
 */
Test(putget, model_walk, .timeout = 20)
{
    enum { MAXSIZE = 20, CAP = 1024, MM = 300 };
    shmq_t *q = make(MAXSIZE, CAP, MM);
    size_t lens[MAXSIZE];
    uint32_t seeds[MAXSIZE];
    size_t head = 0, count = 0, used = 0;
    static unsigned char m[512];
    uint32_t x = 99, seq = 0;
    for (int step = 0; step < 20000; step++) {
        x = x * 1664525u + 1013904223u;
        bool do_put = (x >> 16) % 100 < 55;
        if (do_put) {
            size_t n = (x >> 4) % 6 == 0 ? 0 : (x >> 7) % (MM + 1);
            size_t units = n == 0 ? 8 : (n + 7) / 8 * 8;
            bool fits = count < MAXSIZE && used + units <= CAP;
            th_fill(m, n, seq);
            int r = shmq_put_nowait(q, m, n);
            cr_assert_eq(r, fits ? 0 : -EAGAIN,
                         "step %d: put %zu with %zu queued, %zu bytes used: "
                         "%d",
                         step, n, count, used, r);
            if (r == 0) {
                size_t at = (head + count) % MAXSIZE;
                lens[at] = n;
                seeds[at] = seq++;
                count++;
                used += units;
            }
        } else if (count == 0) {
            size_t len;
            cr_assert_eq(shmq_get_nowait(q, m, sizeof m, &len), -EAGAIN,
                         "get on empty");
        } else {
            get_expect(q, lens[head], seeds[head]);
            size_t n = lens[head];
            used -= n == 0 ? 8 : (n + 7) / 8 * 8;
            head = (head + 1) % MAXSIZE;
            count--;
        }
        cr_assert_eq(shmq_qsize(q), count, "step %d: qsize", step);
        cr_assert_eq(shmq_empty(q), count == 0, "step %d: empty", step);
        bool full = count == MAXSIZE || used + 8 > CAP;
        cr_assert_eq(shmq_full(q), full, "step %d: full (%zu, %zu bytes)", step,
                     count, used);
    }
    shmq_release(q);
}

Test(putget, get_nowait_on_empty_is_eagain, .timeout = 10)
{
    shmq_t *q = make(4, 4096, 64);
    char buf[64];
    size_t len = 77;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN, "empty");
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, SHMQ_NOWAIT), -EAGAIN,
                 "get NOWAIT");
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN,
                 "empty again");
    shmq_release(q);
}

Test(putget, enobufs_leaves_message, .timeout = 10)
{
    shmq_t *q = make(8, 4096, 512);
    static unsigned char m[512], out[512];
    th_fill(m, 100, 5);
    cr_assert_eq(shmq_put_nowait(q, m, 100), 0, "put 100");
    th_fill(m, 10, 6);
    cr_assert_eq(shmq_put_nowait(q, m, 10), 0, "put 10 behind it");
    size_t len = 0;
    cr_assert_eq(shmq_get_nowait(q, out, 99, &len), -ENOBUFS, "cap 99");
    cr_assert_eq(len, 100, "*len is the size needed");
    cr_assert_eq(shmq_qsize(q), 2, "nothing consumed");
    len = 0;
    cr_assert_eq(shmq_get(q, NULL, 0, &len, SHMQ_NOWAIT), -ENOBUFS,
                 "NULL buf, cap 0");
    cr_assert_eq(len, 100, "*len");
    len = 0;
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_get(q, out, 1, &len, 2 * TH_SEC), -ENOBUFS,
                 "cap 1 with a timeout");
    cr_assert_lt(th_now_ns() - t0, TH_SEC, "-ENOBUFS did not wait");
    cr_assert_eq(len, 100, "*len");
    cr_assert_eq(shmq_qsize(q), 2, "still nothing consumed");
    get_expect(q, 100, 5);
    get_expect(q, 10, 6);
    shmq_release(q);
}

Test(putget, fifo_order, .timeout = 10)
{
    shmq_t *q = make(64, 1 << 14, 64);
    uint32_t next_put = 0, next_get = 0;
    while (next_get < 10000) {
        while (next_put < 10000 &&
               shmq_put_nowait(q, &next_put, sizeof next_put) == 0)
            next_put++;
        uint32_t v;
        size_t len;
        int r;
        while ((r = shmq_get_nowait(q, &v, sizeof v, &len)) == 0) {
            cr_assert_eq(len, sizeof v, "len");
            cr_assert_eq(v, next_get, "FIFO: got %u, expected %u", v, next_get);
            next_get++;
        }
        cr_assert_eq(r, -EAGAIN, "drained");
    }
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* The capacity bound                                                   */
/* ------------------------------------------------------------------ */

/* How many len-byte messages put_nowait accepts into an empty queue. */
static size_t fill_count(shmq_t *q, size_t len)
{
    static unsigned char m[4096];
    size_t n = 0;
    int r;
    while ((r = shmq_put_nowait(q, m, len)) == 0)
        n++;
    cr_assert_eq(r, -EAGAIN, "fill stopped with %d", r);
    return n;
}

Test(putget, capacity_bounds_bytes, .timeout = 20)
{
    static const size_t lens[] = {1, 5, 8, 13, 64, 100, 1000, 4096};
    static const size_t caps[] = {4096, 5000, 1 << 16};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            size_t cap = caps[c], len = lens[i];
            if (len > cap)
                continue;
            shmq_t *q = make(65536, cap, 4096 < cap ? 4096 : cap);
            size_t n = fill_count(q, len);
            cr_assert_leq(n * len, cap,
                          "%zu messages of %zu bytes in capacity %zu", n, len,
                          cap);
            cr_assert_geq(n, 1, "at least one message of %zu fits", len);
            cr_assert_eq(shmq_qsize(q), n, "qsize");
            probe_full(q); /* room may be left for a smaller message */
            if (len >= 64)
                cr_assert_geq(n * 4, 3 * (cap / len),
                              "small messages use most of the capacity: "
                              "%zu of %zu-byte messages in %zu",
                              n, len, cap);
            shmq_release(q);
        }
    }
}

Test(putget, small_messages_use_capacity, .timeout = 20)
{
    shmq_t *q = make(65536, 1 << 20, 65536);
    size_t n = fill_count(q, 64);
    cr_assert_leq(n * 64, (size_t)1 << 20, "bound");
    cr_assert_geq(n, 3 * ((1u << 20) / 64) / 4,
                  "only %zu 64-byte messages in 1 MiB", n);
    shmq_release(q);

    /* Exact for multiples of 8, as the header documents. */
    q = make(65536, 4096, 4096);
    cr_assert_eq(fill_count(q, 64), 64, "64 x 64 bytes in 4096");
    shmq_release(q);
    q = make(65536, 4096, 4096);
    cr_assert_eq(fill_count(q, 8), 512, "512 x 8 bytes in 4096");
    shmq_release(q);
    q = make(100, 4096, 4096);
    cr_assert_eq(fill_count(q, 8), 100, "maxsize bounds 8-byte messages");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Timeouts                                                             */
/* ------------------------------------------------------------------ */

static void expect_timeout_get(shmq_t *q, int64_t t)
{
    char buf[64];
    size_t len;
    int64_t t0 = th_now_ns();
    int r = shmq_get(q, buf, sizeof buf, &len, t);
    int64_t dt = th_now_ns() - t0;
    cr_assert_eq(r, -ETIMEDOUT, "get with %lld ns: %d", (long long)t, r);
    cr_assert_geq(dt, t, "returned after %lld ns, before %lld", (long long)dt,
                  (long long)t);
    cr_assert_lt(dt, t + TH_TIMEOUT_SLACK_NS, "took %lld ns", (long long)dt);
}

static void expect_timeout_put(shmq_t *q, int64_t t)
{
    int64_t t0 = th_now_ns();
    int r = shmq_put(q, "x", 1, t);
    int64_t dt = th_now_ns() - t0;
    cr_assert_eq(r, -ETIMEDOUT, "put with %lld ns: %d", (long long)t, r);
    cr_assert_geq(dt, t, "returned after %lld ns, before %lld", (long long)dt,
                  (long long)t);
    cr_assert_lt(dt, t + TH_TIMEOUT_SLACK_NS, "took %lld ns", (long long)dt);
}

Test(putget, get_times_out, .timeout = 20)
{
    shmq_t *q = make(4, 4096, 64);
    expect_timeout_get(q, 50 * TH_MS);
    expect_timeout_get(q, 1);
    expect_timeout_get(q, 30000); /* within the default spin */
    expect_timeout_get(q, 120 * TH_MS);
    cr_assert_eq(shmq_set_spin(q, 0), 0, "no spin");
    expect_timeout_get(q, 50 * TH_MS);
    shmq_release(q);
}

Test(putget, put_times_out, .timeout = 20)
{
    shmq_t *q = make(2, 4096, 64);
    cr_assert_eq(shmq_put_nowait(q, "a", 1), 0, "put");
    cr_assert_eq(shmq_put_nowait(q, "b", 1), 0, "put");
    expect_timeout_put(q, 50 * TH_MS);
    expect_timeout_put(q, 1);
    expect_timeout_put(q, 120 * TH_MS);
    cr_assert_eq(shmq_qsize(q), 2, "timed-out puts queued nothing");
    shmq_release(q);

    /* Full by bytes. */
    q = make(100, 64, 64);
    static unsigned char m[64];
    cr_assert_eq(shmq_put_nowait(q, m, 64), 0, "put 64");
    expect_timeout_put(q, 50 * TH_MS);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Wakeups across processes                                             */
/* ------------------------------------------------------------------ */

struct wake_arg {
    shmq_t *q;
    volatile int *ready; /* shared: the child is about to block */
};

static int child_blocked_get(void *p)
{
    struct wake_arg *a = p;
    char buf[64];
    size_t len = 0;
    __atomic_store_n(a->ready, 1, __ATOMIC_SEQ_CST);
    int r = shmq_get(a->q, buf, sizeof buf, &len, 20 * TH_SEC);
    TH_CHECK_EQ(r, 0);
    TH_CHECK_EQ(len, 5);
    TH_CHECK(memcmp(buf, "wake!", 5) == 0);
    return 0;
}

static void wait_ready_and_blocked(volatile int *ready, pid_t pid)
{
    int64_t end = th_now_ns() + 10 * TH_SEC;
    while (!__atomic_load_n(ready, __ATOMIC_SEQ_CST) && th_now_ns() < end)
        th_sleep_ns(TH_MS);
    cr_assert(__atomic_load_n(ready, __ATOMIC_SEQ_CST), "child not ready");
    cr_assert(th_wait_sleeping(pid, pid, 10 * TH_SEC), "child never slept");
    th_sleep_ns(20 * TH_MS);
}

Test(putget, blocked_get_woken_by_other_process, .timeout = 30)
{
    shmq_t *q = make(4, 4096, 64);
    volatile int *ready = th_shared_alloc(sizeof *ready);
    cr_assert_not_null(ready, "shared memory");
    struct wake_arg a = {q, ready};
    pid_t pid = th_fork(child_blocked_get, &a);
    wait_ready_and_blocked(ready, pid);
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put_nowait(q, "wake!", 5), 0, "put");
    th_assert_child_ok_within(pid, 5 * TH_SEC);
    cr_assert_lt(th_now_ns() - t0, 5 * TH_SEC, "woke promptly");
    cr_assert(shmq_empty(q), "the child took the message");
    th_shared_free((void *)ready, sizeof *ready);
    shmq_release(q);
}

static int child_blocked_put(void *p)
{
    struct wake_arg *a = p;
    __atomic_store_n(a->ready, 1, __ATOMIC_SEQ_CST);
    int r = shmq_put(a->q, "third", 5, 20 * TH_SEC);
    TH_CHECK_EQ(r, 0);
    return 0;
}

Test(putget, blocked_put_woken_by_other_process, .timeout = 30)
{
    shmq_t *q = make(2, 4096, 64);
    cr_assert_eq(shmq_put_nowait(q, "first", 5), 0, "put");
    cr_assert_eq(shmq_put_nowait(q, "secnd", 5), 0, "put");
    volatile int *ready = th_shared_alloc(sizeof *ready);
    cr_assert_not_null(ready, "shared memory");
    struct wake_arg a = {q, ready};
    pid_t pid = th_fork(child_blocked_put, &a);
    wait_ready_and_blocked(ready, pid);
    cr_assert_eq(shmq_qsize(q), 2, "the child is blocked, not queued");
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    th_assert_child_ok_within(pid, 5 * TH_SEC);
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(memcmp(buf, "secnd", 5), 0, "second");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(memcmp(buf, "third", 5), 0, "the child's message");
    th_shared_free((void *)ready, sizeof *ready);
    shmq_release(q);
}

static int child_put_later(void *p)
{
    shmq_t *q = p;
    th_sleep_ns(100 * TH_MS);
    TH_CHECK_EQ(shmq_put(q, "later", 5, 5 * TH_SEC), 0);
    return 0;
}

Test(putget, get_woken_in_parent_by_child_put, .timeout = 30)
{
    shmq_t *q = make(4, 4096, 64);
    cr_assert_eq(shmq_set_spin(q, 0), 0, "sleep at once");
    pid_t pid = th_fork(child_put_later, q);
    char buf[8];
    size_t len = 0;
    int64_t t0 = th_now_ns();
    int r = shmq_get(q, buf, sizeof buf, &len, 20 * TH_SEC);
    int64_t dt = th_now_ns() - t0;
    th_assert_child_ok(pid);
    cr_assert_eq(r, 0, "get: %d", r);
    cr_assert_eq(len, 5, "len");
    cr_assert_eq(memcmp(buf, "later", 5), 0, "content");
    cr_assert_lt(dt, 10 * TH_SEC, "woke promptly");
    shmq_release(q);
}

/* Timeouts far in the future must neither overflow into "already
 * expired" nor into an invalid value. */
Test(putget, huge_timeouts, .timeout = 30)
{
    static const int64_t huge[] = {INT64_MAX, INT64_MAX - 1,
                                   INT64_MAX / 2 + 12345};
    shmq_t *q = make(2, 4096, 64);
    char buf[8];
    size_t len;
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        cr_assert_eq(shmq_put(q, "h", 1, huge[i]), 0, "put %lld",
                     (long long)huge[i]);
        cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, huge[i]), 0, "get %lld",
                     (long long)huge[i]);
    }
    /* Blocked with a huge timeout: woken by a put, not timed out. */
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        pid_t pid = th_fork(child_put_later, q);
        int64_t t0 = th_now_ns();
        int r = shmq_get(q, buf, sizeof buf, &len, huge[i]);
        int64_t dt = th_now_ns() - t0;
        th_assert_child_ok(pid);
        cr_assert_eq(r, 0, "blocked get with %lld: %d", (long long)huge[i], r);
        cr_assert_geq(dt, 50 * TH_MS, "the get waited for the put");
    }
    shmq_release(q);
}
