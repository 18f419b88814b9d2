/* SPDX-License-Identifier: MIT */
/*
 * pool_map.c - shmq_pool_map: items sent in batches, results written
 * straight into the caller's buffers, a bounded number of batches in
 * flight (so a map over millions of items holds no more than a few
 * batches at a time), and batches re-dispatched when their worker dies.
 *
 * Chunking follows Pool.map's default (n / (4 * workers)), capped at
 * POOL_BATCH_MAX items and by the task queue's message size.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool_owner.h"

static bool bit_get(const struct pool_batch *b, size_t i)
{
    return b->bits[i / 64] >> (i % 64) & 1u;
}

static void item_done(struct pool_map *m, struct pool_batch *b, size_t k,
                      int status, const void *data, size_t len)
{
    if (k >= b->count || bit_get(b, k))
        return;
    b->bits[k / 64] |= (uint64_t)1 << (k % 64);
    b->left--;
    size_t i = b->first + k;
    struct iovec *r = &m->results[i];
    if (len > r->iov_len) {
        m->statuses[i] = -ENOBUFS;
    } else {
        if (len)
            memcpy(r->iov_base, data, len);
        m->statuses[i] = status;
    }
    r->iov_len = len;
    m->done++;
}

static struct pool_batch *batch_of(struct shmq_pool *p,
                                   const struct pool_jobrec *j)
{
    struct pool_map *m = p->map;
    if (!m || j->gen != m->gen || j->batch >= m->nbatch)
        return NULL;
    struct pool_batch *b = &m->batch[j->batch];
    return b->used ? b : NULL;
}

static void redo_push(struct pool_map *m, size_t first, size_t count)
{
    if (m->nredo == m->redo_cap) {
        size_t cap = m->redo_cap ? 2 * m->redo_cap : 8;
        struct pool_range *r = realloc(m->redo, cap * sizeof *r);
        if (!r) {
            m->error = -ENOMEM;
            return;
        }
        m->redo = r;
        m->redo_cap = cap;
    }
    m->redo[m->nredo++] = (struct pool_range){first, count};
}

/* Items of b without a status go back to be dispatched again; b is
 * free after. */
static void batch_release(struct pool_map *m, struct pool_batch *b)
{
    size_t run = 0;
    for (size_t k = 0; k <= b->count; k++) {
        if (k < b->count && !bit_get(b, k)) {
            run++;
            continue;
        }
        if (run)
            redo_push(m, b->first + k - run, run);
        run = 0;
    }
    b->used = false;
}

/* A BATCH message: items ticket .. ticket + count of the map, each an
 * item header and its result at 8-aligned offsets. */
void shmq__pool_map_batch(struct shmq_pool *p, const struct pool_jobrec *j,
                          const struct pool_result_hdr *h,
                          const unsigned char *msg, size_t len)
{
    struct pool_batch *b = batch_of(p, j);
    if (!b)
        return; /* a map that returned already */
    size_t off = sizeof *h;
    for (uint32_t k = 0; k < h->count; k++) {
        struct pool_item_hdr ih; /* copied: msg is shared memory */
        if (len - off < sizeof ih)
            break;
        memcpy(&ih, msg + off, sizeof ih);
        if (ih.len > len - off - sizeof ih || ih.len > p->sh.max_message)
            break; /* torn or scribbled: the rest is run again */
        if (h->ticket >= b->first)
            item_done(p->map, b, h->ticket - b->first + k, ih.status,
                      msg + off + sizeof ih, ih.len);
        off += sizeof ih + POOL_ALIGN8(ih.len);
        if (off > len)
            break;
    }
    if (h->status)
        batch_release(p->map, b);
}

/* The batch's worker died (item: the one it was running, or -1), or the
 * batch was lost: that item gets status, the others are run again. */
void shmq__pool_map_fail(struct shmq_pool *p, const struct pool_jobrec *j,
                         int64_t item, int status)
{
    struct pool_batch *b = batch_of(p, j);
    if (!b)
        return;
    if (item >= 0)
        item_done(p->map, b, (size_t)item, status, NULL, 0);
    if (status == -ECANCELED)
        for (size_t k = 0; k < b->count; k++)
            item_done(p->map, b, k, -ECANCELED, NULL, 0);
    batch_release(p->map, b);
}

/* The pool broke: every item not finished is -ECANCELED. */
void shmq__pool_map_cancel(struct shmq_pool *p)
{
    struct pool_map *m = p->map;
    if (!m)
        return;
    for (unsigned i = 0; i < m->nbatch; i++)
        if (m->batch[i].used)
            for (size_t k = 0; k < m->batch[i].count; k++)
                item_done(m, &m->batch[i], k, -ECANCELED, NULL, 0);
    for (size_t r = 0; r < m->nredo; r++)
        for (size_t i = 0; i < m->redo[r].count; i++)
            m->statuses[m->redo[r].first + i] = -ECANCELED;
    for (size_t i = m->next; i < m->n; i++)
        m->statuses[i] = -ECANCELED;
    m->done = m->n;
    m->nredo = 0;
    m->next = m->n;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                             */
/* ------------------------------------------------------------------ */

static int free_batch(const struct pool_map *m)
{
    for (unsigned i = 0; i < m->nbatch; i++)
        if (!m->batch[i].used)
            return (int)i;
    return -1;
}

/* How many items from `first` (at most count) fit one message. */
static size_t fit(struct shmq_pool *p, size_t first, size_t count,
                  size_t *bytes)
{
    size_t cap = shmq_max_message(p->sh.tq[0]);
    size_t k = 0, data = 0;
    const struct iovec *a = p->map->args;
    for (; k < count; k++) {
        size_t head = POOL_ALIGN8(sizeof(struct pool_task_hdr) +
                                  (k + 1) * sizeof(uint32_t));
        size_t d = data + POOL_ALIGN8(a[first + k].iov_len);
        if (head + d > cap)
            break;
        data = d;
    }
    *bytes =
        POOL_ALIGN8(sizeof(struct pool_task_hdr) + k * sizeof(uint32_t)) + data;
    return k;
}

/* Write the batch of items [first, first + k) as the job of index
 * `index` at dst (a reservation on the task queue). */
static void build(struct shmq_pool *p, unsigned char *dst, uint64_t index,
                  size_t first, size_t k)
{
    struct pool_map *m = p->map;
    struct pool_task_hdr *h = (struct pool_task_hdr *)dst;
    *h = (struct pool_task_hdr){.index = index,
                                .ticket = first,
                                .gen = m->gen,
                                .fn = (uintptr_t)m->fn,
                                .kind = JOB_BATCH,
                                .count = (uint32_t)k};
    uint32_t *lens = (uint32_t *)(h + 1);
    size_t off = POOL_ALIGN8(sizeof *h + k * sizeof *lens);
    for (size_t i = 0; i < k; i++) {
        const struct iovec *a = &m->args[first + i];
        lens[i] = (uint32_t)a->iov_len;
        if (a->iov_len)
            memcpy(dst + off, a->iov_base, a->iov_len);
        off = POOL_ALIGN8(off + a->iov_len);
    }
}

/* Send one batch: re-dispatched items first, then new ones. 0 when one
 * went out; -EAGAIN when nothing can go now (in-flight bound, queues
 * full, nothing left). */
static int dispatch_one(struct shmq_pool *p)
{
    struct pool_map *m = p->map;
    int bi = free_batch(m);
    if (bi < 0 || (m->nredo == 0 && m->next >= m->n))
        return -EAGAIN;
    int w = shmq__pool_pick_slot(p);
    if (w < 0)
        return -EAGAIN;
    bool redo = m->nredo > 0;
    size_t first = redo ? m->redo[m->nredo - 1].first : m->next;
    size_t count = redo ? m->redo[m->nredo - 1].count : m->n - m->next;
    size_t bytes;
    size_t k = fit(p, first, count < m->chunk ? count : m->chunk, &bytes);
    /* Built in place in the task queue: the arguments are copied once. */
    struct shmq_msg msg;
    if (shmq_put_begin(p->sh.tq[w], bytes, &msg, SHMQ_NOWAIT) != 0)
        return -EAGAIN;
    build(p, msg.data, p->jobs[w].tail, first, k);
    if (shmq_put_commit(p->sh.tq[w], &msg, bytes) != 0)
        return -EAGAIN;
    struct pool_jobrec rec = {
        .gen = m->gen, .kind = JOB_BATCH, .batch = (uint32_t)bi};
    shmq__pool_record_job(p, (unsigned)w, &rec, NULL);
    m->batch[bi] = (struct pool_batch){.first = first,
                                       .count = (uint32_t)k,
                                       .left = (uint32_t)k,
                                       .used = true};
    if (!redo)
        m->next += k;
    else if (k == count)
        m->nredo--;
    else
        m->redo[m->nredo - 1] = (struct pool_range){first + k, count - k};
    return 0;
}

static size_t chunk_for(const struct shmq_pool *p, size_t n)
{
    size_t c = n / (4 * (size_t)p->sh.workers);
    if (c * 4 * p->sh.workers < n)
        c++;
    return c < 1 ? 1 : c > POOL_BATCH_MAX ? POOL_BATCH_MAX : c;
}

/* Run the map whose state is m until every item has a status. */
int shmq__pool_map_run(struct shmq_pool *p, struct pool_map *m,
                       wait_deadline_t until, bool nowait)
{
    m->gen = ++p->map_gen;
    m->chunk = chunk_for(p, m->n);
    m->nbatch = 2 * p->sh.workers + 2;
    m->batch = calloc(m->nbatch, sizeof *m->batch);
    if (!m->batch)
        return -ENOMEM;
    p->map = m;
    int rc = 0;
    while (m->done < m->n && rc == 0) {
        while (dispatch_one(p) == 0)
            ;
        if (m->error || p->broken)
            break;
        rc = shmq__pool_pump(p, until, nowait);
    }
    if (p->broken && rc == 0)
        rc = -ECANCELED;
    if (m->error && rc == 0)
        rc = m->error;
    p->map = NULL;
    free(m->batch);
    free(m->redo);
    return rc;
}
