/* SPDX-License-Identifier: MIT */
/*
 * codec.c - structured values through the queue: a codec sizes, encodes
 * and decodes; this file only strings the zero-copy calls around it
 * (size, put_begin, encode in place, put_commit; get_begin, decode,
 * get_end). It uses the public in-place calls only, so the ring's rules
 * (who may end a reservation, what a dead process loses) are theirs.
 */
#include <errno.h>

#include "attempt.h"
#include "internal.h"
#include "shmq.h"

SHMQ_PUBLIC int shmq_put_value(shmq_t *q, const struct shmq_codec *c,
                               const void *value, int64_t timeout_ns)
{
    if (!q || !c || !c->size || !c->encode || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    ssize_t need = c->size(value, c->ctx);
    if (need < 0)
        return (int)need;
    struct shmq_msg m;
    int rc = shmq_put_begin(q, (size_t)need, &m, timeout_ns);
    if (rc < 0)
        return rc;
    ssize_t wrote = c->encode(value, m.data, m.len, c->ctx);
    if (wrote < 0 || (size_t)wrote > m.len) {
        /* Nothing was delivered: the room comes back in ring order. A
         * codec claiming more than it was given broke its contract. */
        (void)shmq_put_abort(q, &m);
        return wrote < 0 ? (int)wrote : -EINVAL;
    }
    return shmq_put_commit(q, &m, (size_t)wrote);
}

SHMQ_PUBLIC int shmq_get_value(shmq_t *q, const struct shmq_codec *c, void *out,
                               int64_t timeout_ns)
{
    if (!q || !c || !c->decode || shmq__bad_timeout(timeout_ns))
        return -EINVAL;
    struct shmq_msg m;
    int rc = shmq_get_begin(q, &m, timeout_ns);
    if (rc < 0)
        return rc;
    /* The message is taken already: whatever decode says, the borrow
     * ends, so a message that does not decode is consumed once and
     * reported, never left to block every consumer. */
    int dec = c->decode(m.data, m.len, out, c->ctx);
    int end = shmq_get_end(q, &m);
    return dec < 0 ? dec : end;
}
