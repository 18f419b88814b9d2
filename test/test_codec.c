/* SPDX-License-Identifier: MIT */
/*
 * test_codec.c - the codec layer: shmq_put_value / shmq_get_value with
 * codecs of the test's own (failing ones included) and the MessagePack
 * codec, shmq_msgpack_check on hostile bytes (huge counts, deep nesting,
 * truncation, random bytes: -EBADMSG, fast, without allocating).
 *
 * Each test fails when its rule is broken: a put_value that forgets to
 * abort leaves the room of a 1-message queue taken; a get_value that
 * does not end the borrow leaves the queue blocked; a checker that
 * trusts counts or recursion allocates, walks 2^32 elements or accepts.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <float.h>
#include <limits.h>

#ifdef SHMQ_HAVE_MSGPUCK
#include <msgpuck.h>
#endif

/* Sanitizer runtimes own malloc: allocation counts only without them. */
#if defined(__SANITIZE_ADDRESS__) || defined(TH_TSAN)
#define TH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_SANITIZED 1
#endif
#endif

#ifndef TH_SANITIZED
#include "count_malloc.h"
#endif

#ifdef SHMQ_HAVE_MSGPUCK
static long allocs(void)
{
#ifndef TH_SANITIZED
    return __atomic_load_n(&allocations, __ATOMIC_RELAXED);
#else
    return 0;
#endif
}
#endif

static shmq_t *make(size_t maxsize, size_t capacity, size_t max_message)
{
    struct shmq_config cfg = {
        .maxsize = maxsize, .capacity = capacity, .max_message = max_message};
    shmq_t *q = NULL;
    int r = shmq_create(&q, &cfg);
    cr_assert_eq(r, 0, "create: %d", r);
    return q;
}

/* ------------------------------------------------------------------ */
/* A codec of the test's own: a uint32, as 4 bytes, with failure knobs  */
/* ------------------------------------------------------------------ */

struct knobs {
    int size_calls, encode_calls, decode_calls;
    ssize_t size_ret;   /* < 0: size fails with it */
    ssize_t encode_ret; /* < 0: fails; > 0: claims this many bytes */
    int decode_ret;     /* < 0: decode fails with it */
};

static ssize_t u32_size(const void *value, void *ctx)
{
    (void)value;
    struct knobs *k = ctx;
    k->size_calls++;
    return k->size_ret ? k->size_ret : 4;
}

static ssize_t u32_encode(const void *value, void *buf, size_t cap, void *ctx)
{
    struct knobs *k = ctx;
    k->encode_calls++;
    if (k->encode_ret)
        return k->encode_ret;
    if (cap < 4)
        return -ENOBUFS;
    memcpy(buf, value, 4);
    return 4;
}

static int u32_decode(const void *buf, size_t len, void *out, void *ctx)
{
    struct knobs *k = ctx;
    k->decode_calls++;
    if (k->decode_ret)
        return k->decode_ret;
    if (len != 4)
        return -EBADMSG;
    memcpy(out, buf, 4);
    return 0;
}

static struct shmq_codec u32_codec(struct knobs *k)
{
    return (struct shmq_codec){.name = "u32",
                               .size = u32_size,
                               .encode = u32_encode,
                               .decode = u32_decode,
                               .ctx = k};
}

Test(codec, own_codec_round_trip)
{
    shmq_t *q = make(8, 4096, 64);
    struct knobs k = {0};
    struct shmq_codec c = u32_codec(&k);
    for (uint32_t v = 0; v < 5; v++)
        cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_qsize(q), 5);
    for (uint32_t v = 0; v < 5; v++) {
        uint32_t got = 99;
        cr_assert_eq(shmq_get_value(q, &c, &got, SHMQ_NOWAIT), 0);
        cr_assert_eq(got, v);
    }
    cr_assert_eq(k.size_calls, 5);
    cr_assert_eq(k.encode_calls, 5);
    cr_assert_eq(k.decode_calls, 5);
    uint32_t got;
    cr_assert_eq(shmq_get_value(q, &c, &got, SHMQ_NOWAIT), -EAGAIN);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq_get_value(q, &c, &got, SHMQ_NOWAIT), -EPIPE);
    uint32_t v = 1;
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EPIPE);
    shmq_release(q);
}

Test(codec, argument_errors_first)
{
    shmq_t *q = make(8, 4096, 64);
    struct knobs k = {0};
    struct shmq_codec c = u32_codec(&k);
    uint32_t v = 7;
    cr_assert_eq(shmq_close(q), 0); /* closed: arguments still win */
    cr_assert_eq(shmq_put_value(NULL, &c, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_put_value(q, NULL, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_put_value(q, &c, &v, -2), -EINVAL);
    struct shmq_codec bad = c;
    bad.size = NULL;
    cr_assert_eq(shmq_put_value(q, &bad, &v, SHMQ_NOWAIT), -EINVAL);
    bad = c;
    bad.encode = NULL;
    cr_assert_eq(shmq_put_value(q, &bad, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_get_value(NULL, &c, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_get_value(q, NULL, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_get_value(q, &c, &v, -5), -EINVAL);
    bad = c;
    bad.decode = NULL;
    cr_assert_eq(shmq_get_value(q, &bad, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(k.size_calls + k.encode_calls + k.decode_calls, 0,
                 "a callback ran before the arguments were checked");
    /* a codec may have no decode to put, and no size/encode to get */
    bad = c;
    bad.decode = NULL;
    cr_assert_eq(shmq_put_value(q, &bad, &v, SHMQ_NOWAIT), -EPIPE);
    shmq_release(q);

    cr_assert_eq(shmq_msgpack_check(NULL, 1, 0), -EINVAL);
    cr_assert_eq(shmq_msgpack_check("\xc0", 1, SHMQ_MSGPACK_MAX_DEPTH + 1),
                 -EINVAL);
    cr_assert_eq(shmq_msgpack_codec(NULL, 0), -EINVAL);
    struct shmq_codec m;
    cr_assert_eq(shmq_msgpack_codec(&m, SHMQ_MSGPACK_MAX_DEPTH + 1), -EINVAL);
}

Test(codec, size_error_reserves_nothing)
{
    shmq_t *q = make(1, 4096, 64);
    struct knobs k = {.size_ret = -ERANGE};
    struct shmq_codec c = u32_codec(&k);
    uint32_t v = 1;
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -ERANGE);
    cr_assert_eq(k.encode_calls, 0);
    k.size_ret = 65; /* above max_message */
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EMSGSIZE);
    cr_assert_eq(k.encode_calls, 0);
    cr_assert_eq(shmq_qsize(q), 0);
    cr_assert_eq(shmq_put_nowait(q, "x", 1), 0, "the room is free");
    shmq_release(q);
}

/* maxsize 1: a reservation left open would make the next put -EAGAIN. */
Test(codec, encode_error_aborts_the_reservation)
{
    shmq_t *q = make(1, 4096, 64);
    struct knobs k = {.encode_ret = -EIO};
    struct shmq_codec c = u32_codec(&k);
    uint32_t v = 1;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EIO);
    k.encode_ret = 5; /* claims more than the 4 bytes it was given */
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(k.encode_calls, 4);
    cr_assert_eq(shmq_qsize(q), 0, "nothing delivered");
    char buf[64];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN);
    cr_assert_eq(shmq_put_nowait(q, "abc", 3), 0, "the room came back");
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 3);
    k.encode_ret = 0;
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    shmq_release(q);
}

Test(codec, decode_error_consumes_the_message)
{
    shmq_t *q = make(1, 4096, 64);
    struct knobs k = {.decode_ret = -EBADMSG};
    struct shmq_codec c = u32_codec(&k);
    uint32_t v = 42, got = 0;
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_get_value(q, &c, &got, SHMQ_NOWAIT), -EBADMSG);
    cr_assert_eq(shmq_qsize(q), 0, "consumed");
    /* the borrow ended: the one slot is free again */
    k.decode_ret = 0;
    v = 43;
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_get_value(q, &c, &got, SHMQ_NOWAIT), 0);
    cr_assert_eq(got, 43);
    /* plain bytes of the wrong length: the codec's own -EBADMSG */
    cr_assert_eq(shmq_put_nowait(q, "12345", 5), 0);
    cr_assert_eq(shmq_get_value(q, &c, &got, SHMQ_NOWAIT), -EBADMSG);
    cr_assert_eq(shmq_qsize(q), 0);
    shmq_release(q);
}

#ifdef SHMQ_HAVE_MSGPUCK
/* ------------------------------------------------------------------ */
/* MessagePack                                                          */
/* ------------------------------------------------------------------ */

#define MAXMSG 4096

/* msgpuck's mp_*_int take negative numbers only. */
static char *enc_i64(char *w, int64_t v)
{
    return v < 0 ? mp_encode_int(w, v) : mp_encode_uint(w, (uint64_t)v);
}

static uint32_t size_i64(int64_t v)
{
    return v < 0 ? mp_sizeof_int(v) : mp_sizeof_uint((uint64_t)v);
}

static int64_t dec_i64(const char **r)
{
    return mp_typeof(**r) == MP_INT ? mp_decode_int(r)
                                    : (int64_t)mp_decode_uint(r);
}

/* Every kind of value, nested, depending on n. Returns the end. */
static char *encode_sample(char *w, uint32_t n)
{
    static const unsigned char blob[] = {0, 1, 2, 0xff, 0xc1, 0xdd};
    w = mp_encode_map(w, 8);
    w = mp_encode_str(w, "id", 2);
    w = mp_encode_uint(w, n);
    w = mp_encode_str(w, "neg", 3);
    w = mp_encode_int(w, -(int64_t)n - 1000000000000ll);
    w = mp_encode_str(w, "name", 4);
    w = mp_encode_str(w, "sensor-\xc3\xa9t\xc3\xa9", 11);
    w = mp_encode_str(w, "blob", 4);
    w = mp_encode_bin(w, (const char *)blob, sizeof blob);
    w = mp_encode_str(w, "f", 1);
    w = mp_encode_array(w, 3);
    w = mp_encode_float(w, 1.5f);
    w = mp_encode_double(w, DBL_MAX);
    w = mp_encode_double(w, -0.25 * n);
    w = mp_encode_str(w, "flags", 5);
    w = mp_encode_array(w, 3);
    w = mp_encode_nil(w);
    w = mp_encode_bool(w, true);
    w = mp_encode_bool(w, n % 2);
    w = mp_encode_str(w, "nested", 6);
    w = mp_encode_map(w, 1);
    w = mp_encode_uint(w, UINT64_MAX);
    w = mp_encode_array(w, 2);
    w = mp_encode_map(w, 0);
    w = mp_encode_array(w, 20); /* array16 */
    for (int i = 0; i < 20; i++)
        w = enc_i64(w, i - 10);
    w = mp_encode_str(w, "long", 4);
    char text[300];
    memset(text, 'a' + (char)(n % 26), sizeof text); /* str16 */
    w = mp_encode_str(w, text, sizeof text);
    return w;
}

/* Decodes what encode_sample(n) wrote, checking every field. */
static bool decode_sample(const char *r, const char *end, uint32_t n)
{
    uint32_t len;
    const char *s;
    if (mp_typeof(*r) != MP_MAP || mp_decode_map(&r) != 8)
        return false;
    s = mp_decode_str(&r, &len);
    if (len != 2 || memcmp(s, "id", 2) || mp_decode_uint(&r) != n)
        return false;
    s = mp_decode_str(&r, &len);
    if (mp_typeof(*r) != MP_INT ||
        mp_decode_int(&r) != -(int64_t)n - 1000000000000ll)
        return false;
    s = mp_decode_str(&r, &len);
    s = mp_decode_str(&r, &len);
    if (len != 11 || memcmp(s, "sensor-\xc3\xa9t\xc3\xa9", 11))
        return false;
    s = mp_decode_str(&r, &len);
    if (mp_typeof(*r) != MP_BIN)
        return false;
    s = mp_decode_bin(&r, &len);
    if (len != 6 || memcmp(s, "\0\1\2\xff\xc1\xdd", 6))
        return false;
    s = mp_decode_str(&r, &len);
    if (mp_decode_array(&r) != 3 || mp_typeof(*r) != MP_FLOAT ||
        mp_decode_float(&r) != 1.5f || mp_decode_double(&r) != DBL_MAX ||
        mp_decode_double(&r) != -0.25 * n)
        return false;
    s = mp_decode_str(&r, &len);
    if (mp_decode_array(&r) != 3 || mp_typeof(*r) != MP_NIL)
        return false;
    mp_decode_nil(&r);
    if (mp_decode_bool(&r) != true || mp_decode_bool(&r) != (bool)(n % 2))
        return false;
    s = mp_decode_str(&r, &len);
    if (mp_decode_map(&r) != 1 || mp_decode_uint(&r) != UINT64_MAX ||
        mp_decode_array(&r) != 2 || mp_decode_map(&r) != 0 ||
        mp_decode_array(&r) != 20)
        return false;
    for (int i = 0; i < 20; i++)
        if (dec_i64(&r) != i - 10)
            return false;
    s = mp_decode_str(&r, &len);
    s = mp_decode_str(&r, &len);
    if (len != 300 || s[0] != 'a' + (char)(n % 26) || s[299] != s[0])
        return false;
    return r == end;
}

#define SAMPLES 200

static int produce_samples(void *arg)
{
    shmq_t *q = arg;
    struct shmq_codec c;
    TH_CHECK_EQ(shmq_msgpack_codec(&c, 0), 0);
    char buf[MAXMSG];
    for (uint32_t n = 0; n < SAMPLES; n++) {
        char *end = encode_sample(buf, n);
        struct iovec v = {buf, (size_t)(end - buf)};
        TH_CHECK_EQ(shmq_put_value(q, &c, &v, SHMQ_SEC(10)), 0);
    }
    return 0;
}

Test(codec, msgpack_round_trip_across_fork, .timeout = 60)
{
    shmq_t *q = make(16, 64 << 10, MAXMSG);
    pid_t pid = th_fork(produce_samples, q);
    struct shmq_codec c;
    cr_assert_eq(shmq_msgpack_codec(&c, 0), 0);
    cr_assert_str_eq(c.name, "msgpack");
    char buf[MAXMSG], want[MAXMSG];
    for (uint32_t n = 0; n < SAMPLES; n++) {
        struct iovec out = {buf, sizeof buf};
        int r = shmq_get_value(q, &c, &out, SHMQ_SEC(10));
        cr_assert_eq(r, 0, "get_value %u: %d", n, r);
        char *wend = encode_sample(want, n);
        cr_assert_eq(out.iov_len, (size_t)(wend - want));
        cr_assert_eq(memcmp(buf, want, out.iov_len), 0, "bytes of %u", n);
        cr_assert(decode_sample(buf, buf + out.iov_len, n), "fields of %u", n);
    }
    th_assert_child_ok(pid);
    shmq_release(q);
}

/* A typed codec of the user's: size with mp_sizeof_*, encode in place
 * with mp_encode_*, decode after shmq_msgpack_check. */
struct point {
    int64_t x, y;
    char label[16];
};

static ssize_t point_size(const void *value, void *ctx)
{
    (void)ctx;
    const struct point *p = value;
    return mp_sizeof_array(3) + size_i64(p->x) + size_i64(p->y) +
           mp_sizeof_str((uint32_t)strlen(p->label));
}

static ssize_t point_encode(const void *value, void *buf, size_t cap, void *ctx)
{
    (void)ctx;
    (void)cap;
    const struct point *p = value;
    char *w = mp_encode_array(buf, 3);
    w = enc_i64(w, p->x);
    w = enc_i64(w, p->y);
    w = mp_encode_str(w, p->label, (uint32_t)strlen(p->label));
    return w - (char *)buf;
}

static int point_decode(const void *buf, size_t len, void *out, void *ctx)
{
    (void)ctx;
    char copy[64]; /* private copy: shared bytes may change under us */
    if (len > sizeof copy)
        return -EBADMSG;
    memcpy(copy, buf, len);
    if (shmq_msgpack_check(copy, len, 1) < 0)
        return -EBADMSG;
    const char *r = copy;
    struct point *p = out;
    if (mp_typeof(*r) != MP_ARRAY || mp_decode_array(&r) != 3)
        return -EBADMSG;
    int64_t v[2];
    for (int i = 0; i < 2; i++) {
        if (mp_typeof(*r) == MP_UINT)
            v[i] = (int64_t)mp_decode_uint(&r);
        else if (mp_typeof(*r) == MP_INT)
            v[i] = mp_decode_int(&r);
        else
            return -EBADMSG;
    }
    uint32_t n;
    if (mp_typeof(*r) != MP_STR)
        return -EBADMSG;
    const char *s = mp_decode_str(&r, &n);
    if (n >= sizeof p->label)
        return -EBADMSG;
    p->x = v[0];
    p->y = v[1];
    memcpy(p->label, s, n);
    p->label[n] = '\0';
    return 0;
}

static const struct shmq_codec point_codec = {"point", point_size, point_encode,
                                              point_decode, NULL};

static int produce_points(void *arg)
{
    shmq_t *q = arg;
    for (int i = 0; i < 100; i++) {
        struct point p = {.x = -i * 1000003ll, .y = i * 65537ll};
        snprintf(p.label, sizeof p.label, "pt%d", i);
        TH_CHECK_EQ(shmq_put_value(q, &point_codec, &p, SHMQ_SEC(10)), 0);
    }
    return 0;
}

Test(codec, typed_codec_in_place_across_fork, .timeout = 60)
{
    shmq_t *q = make(4, 4096, 64);
    pid_t pid = th_fork(produce_points, q);
    for (int i = 0; i < 100; i++) {
        struct point p;
        cr_assert_eq(shmq_get_value(q, &point_codec, &p, SHMQ_SEC(10)), 0);
        char label[16];
        snprintf(label, sizeof label, "pt%d", i);
        cr_assert_eq(p.x, -i * 1000003ll);
        cr_assert_eq(p.y, i * 65537ll);
        cr_assert_str_eq(p.label, label);
    }
    th_assert_child_ok(pid);
    shmq_release(q);
}

Test(codec, msgpack_codec_rules)
{
    shmq_t *q = make(4, 4096, 256);
    struct shmq_codec c;
    cr_assert_eq(shmq_msgpack_codec(&c, 2), 0);
    /* put: bad bytes never reach the queue */
    struct iovec v = {"\xdd\xff\xff\xff\xff\x01\x02\x03\x04\x05", 10};
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EBADMSG);
    v = (struct iovec){"\x91\x91\x91\xc0", 4}; /* depth 3 > 2 */
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EBADMSG);
    v = (struct iovec){NULL, 3};
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_put_value(q, &c, NULL, SHMQ_NOWAIT), -EINVAL);
    cr_assert_eq(shmq_qsize(q), 0);
    /* get: too long for out is consumed, iov_len says the size */
    char big[200], payload[150];
    memset(payload, 7, sizeof payload);
    char *w = mp_encode_bin(big, payload, sizeof payload);
    v = (struct iovec){big, (size_t)(w - big)};
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    char out[64];
    struct iovec o = {out, sizeof out};
    cr_assert_eq(shmq_get_value(q, &c, &o, SHMQ_NOWAIT), -EMSGSIZE);
    cr_assert_eq(o.iov_len, (size_t)(w - big));
    cr_assert_eq(shmq_qsize(q), 1, "the long one was consumed");
    char out2[256];
    o = (struct iovec){out2, sizeof out2};
    cr_assert_eq(shmq_get_value(q, &c, &o, SHMQ_NOWAIT), 0);
    cr_assert_eq(memcmp(out2, big, o.iov_len), 0);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Hostile bytes                                                        */
/* ------------------------------------------------------------------ */

/* Puts raw bytes with plain shmq_put, takes them with get_value through
 * the msgpack codec: the result, and the time and allocations it took. */
static int hostile(shmq_t *q, const void *bytes, size_t len, int64_t *ns,
                   long *mallocs)
{
    struct shmq_codec c;
    cr_assert_eq(shmq_msgpack_codec(&c, 0), 0);
    cr_assert_eq(shmq_put(q, bytes, len, SHMQ_NOWAIT), 0);
    static char out[MAXMSG];
    struct iovec o = {out, sizeof out};
    long a0 = allocs();
    int64_t t0 = th_now_ns();
    int r = shmq_get_value(q, &c, &o, SHMQ_NOWAIT);
    *ns = th_now_ns() - t0;
    *mallocs = allocs() - a0;
    cr_assert_eq(shmq_qsize(q), 0, "consumed");
    return r;
}

#define FAST_NS (10 * TH_MS)

static void expect_bad(shmq_t *q, const void *bytes, size_t len,
                       const char *what)
{
    int64_t ns;
    long m;
    int r = hostile(q, bytes, len, &ns, &m);
    cr_assert_eq(r, -EBADMSG, "%s: %d", what, r);
    cr_assert_lt(ns, FAST_NS, "%s: %lld ns", what, (long long)ns);
    cr_assert_eq(m, 0, "%s: %ld allocations", what, m);
    cr_assert_eq(shmq_msgpack_check(bytes, len, 0), -EBADMSG, "%s", what);
}

Test(codec, hostile_counts_depth_truncation, .timeout = 60)
{
    shmq_t *q = make(4, 64 << 10, MAXMSG);
    /* a count of 2^32-1 with 5 bytes after it: array32 and map32 (whose
     * 2*count does not fit 32 bits either) */
    expect_bad(q, "\xdd\xff\xff\xff\xff\x01\x02\x03\x04\x05", 10, "array32");
    expect_bad(q, "\xdf\xff\xff\xff\xff\x01\x02\x03\x04\x05", 10, "map32");
    expect_bad(q, "\xdd\xff\xff\xff\xff", 5, "bare array32");
    expect_bad(q, "\xdf\x80\x00\x00\x00\x01\x02", 7, "map32 2^31");
    expect_bad(q, "\xdc\xff\xff\x01\x02", 5, "array16");
    expect_bad(q, "\x92\x01", 2, "fixarray short");
    /* nested 33 deep (the default limit is 32), then 32 deep is fine */
    char deep[64];
    memset(deep, 0x91, 33);
    deep[33] = (char)0xc0;
    expect_bad(q, deep, 34, "33 deep");
    char mdeep[80];
    char *w = mdeep;
    for (int i = 0; i < 33; i++) {
        w = mp_encode_map(w, 1);
        w = mp_encode_nil(w);
    }
    w = mp_encode_nil(w);
    expect_bad(q, mdeep, (size_t)(w - mdeep), "33 deep maps");
    memset(deep, 0x91, 32);
    deep[32] = (char)0xc0;
    cr_assert_eq(shmq_msgpack_check(deep, 33, 0), 0, "32 deep is allowed");
    cr_assert_eq(shmq_msgpack_check(deep, 33, 31), -EBADMSG);
    cr_assert_eq(shmq_msgpack_check("\x90", 1, 1), 0);
    /* [[[...]]] 10000 deep in a big message: no recursion, rejected */
    static char huge[MAXMSG];
    memset(huge, 0x91, sizeof huge);
    expect_bad(q, huge, sizeof huge, "4096 deep");
    /* truncated str32, bin32, str8, ext32, uint64, float */
    expect_bad(q,
               "\xdb\x00\x01\x00\x00"
               "abc",
               8, "str32 truncated");
    expect_bad(q, "\xdb\xff\xff\xff\xff", 5, "str32 4 GiB");
    expect_bad(q, "\xc6\x00\x00\x10\x00xy", 7, "bin32 truncated");
    expect_bad(q,
               "\xd9\x05"
               "ab",
               4, "str8 truncated");
    expect_bad(q, "\xc9\xff\xff\xff\xff\x01", 6, "ext32 truncated");
    expect_bad(q, "\xcf\x01\x02", 3, "uint64 truncated");
    expect_bad(q, "\xcb\x01", 2, "double truncated");
    expect_bad(q, "\xc1", 1, "never-used byte");
    expect_bad(q, "\x01\x02", 2, "bytes after the value");
    expect_bad(q, "", 0, "empty message");
    /* the queue still works */
    struct shmq_codec c;
    cr_assert_eq(shmq_msgpack_codec(&c, 0), 0);
    struct iovec v = {"\x93\x01\xa1x\xc3", 5};
    cr_assert_eq(shmq_put_value(q, &c, &v, SHMQ_NOWAIT), 0);
    char out[16];
    struct iovec o = {out, sizeof out};
    cr_assert_eq(shmq_get_value(q, &c, &o, SHMQ_NOWAIT), 0);
    cr_assert_eq(o.iov_len, 5);
    shmq_release(q);
}

/* Random bytes and valid messages with random bytes changed: each one
 * is either valid (and then safe: mp_next walks it within bounds) or
 * -EBADMSG, fast and without allocating. */
Test(codec, hostile_random_bytes, .timeout = 120)
{
    shmq_t *q = make(4, 64 << 10, MAXMSG);
    uint64_t seeds = th_scaled(3000, 300), bad = 0;
    int64_t worst = 0;
    char msg[MAXMSG], sample[MAXMSG];
    size_t sample_len = (size_t)(encode_sample(sample, 5) - sample);
    for (uint64_t seed = 1; seed <= seeds; seed++) {
        uint64_t st = seed;
        size_t len;
        if (seed % 2) {
            len = 1 + th_rand_below(&st, 64);
            for (size_t i = 0; i < len; i++)
                msg[i] = (char)th_rand_next(&st);
        } else {
            len = sample_len;
            memcpy(msg, sample, len);
            for (int k = 0; k < 1 + (int)th_rand_below(&st, 4); k++)
                msg[th_rand_below(&st, len)] = (char)th_rand_next(&st);
            if (th_rand_below(&st, 3) == 0)
                len = th_rand_below(&st, len + 1);
        }
        int64_t ns;
        long m;
        int r = hostile(q, msg, len, &ns, &m);
        cr_assert(r == 0 || r == -EBADMSG, "seed %llu: %d",
                  (unsigned long long)seed, r);
        cr_assert_lt(ns, FAST_NS, "seed %llu: %lld ns",
                     (unsigned long long)seed, (long long)ns);
        cr_assert_eq(m, 0, "seed %llu: %ld allocations",
                     (unsigned long long)seed, m);
        worst = ns > worst ? ns : worst;
        if (r == 0) {
            const char *p = msg;
            cr_assert_eq(mp_check(&p, msg + len), 0, "seed %llu",
                         (unsigned long long)seed);
            p = msg;
            mp_next(&p);
            cr_assert_eq(p, msg + len, "seed %llu", (unsigned long long)seed);
        } else {
            bad++;
        }
    }
    cr_assert_gt(bad, seeds / 4, "%llu of %llu rejected",
                 (unsigned long long)bad, (unsigned long long)seeds);
    fprintf(stderr,
            "hostile_random_bytes: %llu of %llu rejected, slowest "
            "get_value %lld ns\n",
            (unsigned long long)bad, (unsigned long long)seeds,
            (long long)worst);
    shmq_release(q);
}

#else /* built without msgpuck */

Test(codec, msgpack_not_supported)
{
    struct shmq_codec c;
    cr_assert_eq(shmq_msgpack_check("\xc0", 1, 0), -ENOTSUP);
    cr_assert_eq(shmq_msgpack_codec(&c, 0), -ENOTSUP);
    cr_assert_eq(shmq_msgpack_codec(NULL, 0), -EINVAL);
}

#endif
