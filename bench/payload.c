/* SPDX-License-Identifier: MIT */
/*
 * payload.c - what every message carries, and the check on receipt.
 *
 * A message of n bytes is its producer's pattern (pseudo-random bytes,
 * different for each producer) with an 8-byte stamp (producer, sequence)
 * written at offset 0, at every 4 KiB boundary and in the last 8 bytes.
 * The receiver compares every byte: the stamps must agree with each other
 * and the bytes between them must equal the pattern, so a torn, stale,
 * misplaced or truncated message is caught. The sender rewrites only the
 * stamps (n / 4096 + 2 words), so building a message costs almost nothing
 * and the figures measure the transport, not the test.
 */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define STAMP_STRIDE 4096u

/*
 * A stamp: producer (8 bits), sequence (40 bits), and a 16-bit check of
 * both, so that even an 8-byte message, which is nothing but its stamp,
 * cannot be damaged into another valid one unnoticed.
 */
#define SEQ_MASK ((UINT64_C(1) << 40) - 1)

static uint64_t stamp_check(uint64_t head)
{
    uint64_t x = head; /* splitmix64's finaliser: every bit counts */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (x ^ (x >> 31)) & 0xffff;
}

uint64_t stamp_make(unsigned producer, uint64_t seq)
{
    uint64_t head = ((uint64_t)producer << 56) | ((seq & SEQ_MASK) << 16);
    return head | stamp_check(head);
}

unsigned stamp_producer(uint64_t stamp)
{
    return (unsigned)(stamp >> 56);
}

uint64_t stamp_seq(uint64_t stamp)
{
    return (stamp >> 16) & SEQ_MASK;
}

static bool stamp_valid(uint64_t stamp)
{
    return (stamp & 0xffff) == stamp_check(stamp & ~(uint64_t)0xffff);
}

/* Offsets of the stamps of an n-byte message (n >= 8), in order; returns
 * the count. The tail stamp never overlaps a boundary stamp. */
static size_t stamp_offsets(size_t n, size_t *off, size_t max)
{
    size_t k = 0;
    off[k++] = 0;
    for (size_t o = STAMP_STRIDE; o + 16 <= n && k + 1 < max; o += STAMP_STRIDE)
        off[k++] = o;
    if (n >= 16)
        off[k++] = n - 8;
    return k;
}

#define MAX_STAMPS (BENCH_MAX_MSG / STAMP_STRIDE + 4)

void payload_fill_pattern(unsigned char *pattern, size_t size,
                          unsigned producer)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (producer + 1);
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (unsigned char)x;
    }
}

int payload_init(struct payload *p, size_t size, unsigned producer)
{
    size_t alloc = size < 64 ? 64 : size;
    p->size = size;
    p->buf = aligned_alloc(64, (alloc + 63) & ~(size_t)63);
    p->pattern = aligned_alloc(64, (alloc + 63) & ~(size_t)63);
    if (!p->buf || !p->pattern) {
        payload_free(p);
        return -12;
    }
    payload_fill_pattern(p->pattern, size, producer);
    memcpy(p->buf, p->pattern, size);
    return 0;
}

void payload_free(struct payload *p)
{
    free(p->buf);
    free(p->pattern);
    p->buf = p->pattern = NULL;
}

void payload_stamp(struct payload *p, uint64_t stamp)
{
    size_t off[MAX_STAMPS];
    size_t k = stamp_offsets(p->size, off, MAX_STAMPS);
    for (size_t i = 0; i < k; i++)
        memcpy(p->buf + off[i], &stamp, 8);
}

uint64_t payload_stamp_of(const void *msg, size_t len)
{
    uint64_t s = 0;
    if (len >= 8)
        memcpy(&s, msg, 8);
    return s;
}

const char *payload_check(const void *msg, size_t len, size_t want,
                          const unsigned char *pattern)
{
    const unsigned char *m = msg;
    size_t off[MAX_STAMPS];
    uint64_t s0, s;

    if (len != want)
        return "wrong message length";
    s0 = payload_stamp_of(m, len);
    if (!stamp_valid(s0))
        return "damaged stamp";
    size_t k = stamp_offsets(len, off, MAX_STAMPS);
    for (size_t i = 0; i < k; i++) {
        memcpy(&s, m + off[i], 8);
        if (s != s0)
            return "stamps disagree (torn or mixed message)";
        size_t from = off[i] + 8;
        size_t to = i + 1 < k ? off[i + 1] : len;
        if (to > from && memcmp(m + from, pattern + from, to - from) != 0)
            return "payload bytes differ from the pattern";
    }
    return NULL;
}
