/* SPDX-License-Identifier: MIT */
/*
 * msgpack.c - MessagePack for the codec layer, through msgpuck.
 *
 * msgpuck does all of the format: mp_typeof, mp_check_* (are a header's
 * bytes there?), mp_decode_array/map (a container's count) and mp_check
 * (one element). This file adds only the rules mp_check lacks for bytes
 * from untrusted shared memory:
 *
 *   - a depth limit, so that a consumer's recursive decoder cannot be
 *     driven off its stack by [[[[...]]]];
 *   - a count check: an array or map cannot hold more elements than
 *     there are bytes after its header (every element takes one byte at
 *     least). mp_check adds a claimed count to an int: 2^32-1 wraps it,
 *     and msgpuck 1.0.3 then accepts "dd ff ff ff ff" as a whole value.
 *     Here such a count is rejected before anything else is read.
 *
 * The walk keeps, per open container, how many elements it still owes:
 * a fixed array on the stack (SHMQ_MSGPACK_MAX_DEPTH + 1 entries), no
 * allocation, no recursion, each byte read about once.
 *
 * Built without msgpuck (meson -Dmsgpack=disabled, or not installed),
 * the calls check their arguments and return -ENOTSUP.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "internal.h"
#include "shmq.h"

#ifdef SHMQ_HAVE_MSGPUCK
#include <stdio.h>

#include "msgpuck_names.h" /* msgpuck's symbols, as libshmq holds them */
/* The renames move msgpuck's own pedantic warnings (a void function
 * returning a void call) out of its system header into ours. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#include <msgpuck.h>
#pragma GCC diagnostic pop

/* What msgpuck's mp_fprint would print to (see msgpuck_pic.py): libshmq
 * never prints, so it is never used. */
FILE *shmq__mp_stdout;

/* Opens the container at *p (its header is not yet checked) one level
 * below depth: its element count goes to owed[depth + 1]. */
static int open_container(const char **p, const char *end, enum mp_type t,
                          uint64_t *owed, size_t *depth, size_t max_depth)
{
    if (*depth >= max_depth)
        return -EBADMSG;
    ptrdiff_t missing =
        t == MP_ARRAY ? mp_check_array(*p, end) : mp_check_map(*p, end);
    if (missing > 0)
        return -EBADMSG;
    uint64_t n =
        t == MP_ARRAY ? mp_decode_array(p) : 2 * (uint64_t)mp_decode_map(p);
    if (n > (uint64_t)(end - *p))
        return -EBADMSG;
    owed[++*depth] = n;
    return 0;
}

static int check_value(const char *p, const char *end, size_t max_depth)
{
    uint64_t owed[SHMQ_MSGPACK_MAX_DEPTH + 1];
    size_t depth = 0;
    owed[0] = 1; /* the one top-level value */
    for (;;) {
        while (owed[depth] == 0) {
            if (depth == 0)
                return p == end ? 0 : -EBADMSG; /* nothing after it */
            depth--;
        }
        if (p >= end)
            return -EBADMSG;
        owed[depth]--;
        if ((uint8_t)*p == 0xc1)
            return -EBADMSG; /* "never used" (spec); msgpuck skips it */
        enum mp_type t = mp_typeof(*p);
        if (t == MP_ARRAY || t == MP_MAP) {
            int rc = open_container(&p, end, t, owed, &depth, max_depth);
            if (rc < 0)
                return rc;
        } else if (mp_check(&p, end) != 0) {
            /* a scalar: mp_check walks exactly one element */
            return -EBADMSG;
        }
    }
}
#endif

static int bad_depth(size_t max_depth)
{
    return max_depth > SHMQ_MSGPACK_MAX_DEPTH;
}

#ifdef SHMQ_HAVE_MSGPUCK
static size_t depth_or_default(size_t max_depth)
{
    return max_depth ? max_depth : SHMQ_MSGPACK_DEPTH;
}
#endif

SHMQ_PUBLIC int shmq_msgpack_check(const void *buf, size_t len,
                                   size_t max_depth)
{
    if ((!buf && len > 0) || bad_depth(max_depth))
        return -EINVAL;
#ifdef SHMQ_HAVE_MSGPUCK
    if (len == 0)
        return -EBADMSG; /* no value at all */
    const char *p = buf;
    return check_value(p, p + len, depth_or_default(max_depth));
#else
    return -ENOTSUP;
#endif
}

#ifdef SHMQ_HAVE_MSGPUCK
static size_t ctx_depth(void *ctx)
{
    return (size_t)(uintptr_t)ctx;
}

static ssize_t mp_codec_size(const void *value, void *ctx)
{
    const struct iovec *iov = value;
    if (!iov || (!iov->iov_base && iov->iov_len > 0))
        return -EINVAL;
    int rc = shmq_msgpack_check(iov->iov_base, iov->iov_len, ctx_depth(ctx));
    if (rc < 0)
        return rc;
    return iov->iov_len > SSIZE_MAX ? -EMSGSIZE : (ssize_t)iov->iov_len;
}

static ssize_t mp_codec_encode(const void *value, void *buf, size_t cap,
                               void *ctx)
{
    (void)ctx;
    const struct iovec *iov = value;
    if (iov->iov_len > cap)
        return -EINVAL;
    if (iov->iov_len > 0)
        memcpy(buf, iov->iov_base, iov->iov_len);
    return (ssize_t)iov->iov_len;
}

/* Copy first, then check the copy: the bytes in shared memory may still
 * change under a hostile writer, the caller's copy cannot. */
static int mp_codec_decode(const void *buf, size_t len, void *out, void *ctx)
{
    struct iovec *iov = out;
    if (!iov || (!iov->iov_base && iov->iov_len > 0))
        return -EINVAL;
    size_t cap = iov->iov_len;
    iov->iov_len = len;
    if (len > cap)
        return -EMSGSIZE;
    if (len > 0)
        memcpy(iov->iov_base, buf, len);
    return shmq_msgpack_check(iov->iov_base, len, ctx_depth(ctx));
}
#endif

SHMQ_PUBLIC int shmq_msgpack_codec(struct shmq_codec *c, size_t max_depth)
{
    if (!c || bad_depth(max_depth))
        return -EINVAL;
#ifdef SHMQ_HAVE_MSGPUCK
    *c = (struct shmq_codec){
        .name = "msgpack",
        .size = mp_codec_size,
        .encode = mp_codec_encode,
        .decode = mp_codec_decode,
        .ctx = (void *)(uintptr_t)depth_or_default(max_depth),
    };
    return 0;
#else
    return -ENOTSUP;
#endif
}
