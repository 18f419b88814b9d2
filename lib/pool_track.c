/* SPDX-License-Identifier: MIT */
/*
 * pool_track.c - the owner's bookkeeping: tickets and their results,
 * and the jobs on each worker's queue (pool_events.c feeds both from
 * what arrives on rq and in the death log).
 *
 * Attribution (see pool.h): the owner is the only producer of tq[w], so
 * job indices of a slot are consecutive, and each job record says what
 * the index holds. A job is resolved by its result, by the death of the
 * worker recorded as running it, or by a LOST message naming its index.
 * Whichever comes first wins; later ones find the job resolved (or the
 * ticket no longer pending) and change nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool_owner.h"

/* ------------------------------------------------------------------ */
/* Tickets                                                              */
/* ------------------------------------------------------------------ */

struct pool_entry *shmq__pool_entry(struct shmq_pool *p, uint64_t ticket)
{
    struct pool_entry *e = &p->tab[ticket & (POOL_TICKETS - 1)];
    return ticket && e->ticket == ticket ? e : NULL;
}

/* The next free entry (oldest freed first) with a fresh ticket: its
 * generation above the entry's number, so a ticket is never reused
 * while an earlier one of the same entry could still be asked about.
 * NULL when POOL_TICKETS are uncollected. The entry stays on the free
 * list until shmq__pool_ticket_commit. */
struct pool_entry *shmq__pool_ticket_new(struct shmq_pool *p)
{
    if (p->free_head == p->free_tail)
        return NULL;
    uint32_t i = p->freeq[p->free_head % POOL_TICKETS];
    struct pool_entry *e = &p->tab[i];
    memset(e, 0, offsetof(struct pool_entry, inl));
    e->ticket = (++p->next_ticket << POOL_TICKET_BITS) | i;
    return e;
}

void shmq__pool_ticket_commit(struct shmq_pool *p)
{
    p->free_head++;
}

static void ticket_free(struct shmq_pool *p, struct pool_entry *e)
{
    p->freeq[p->free_tail++ % POOL_TICKETS] =
        (uint32_t)(e->ticket & (POOL_TICKETS - 1));
    e->ticket = 0;
    e->state = E_FREE;
}

static void done_push(struct shmq_pool *p, uint64_t ticket)
{
    if (p->done_tail - p->done_head == p->done_cap) {
        /* Full of tickets that wait() collected: keep the live ones. */
        size_t keep = p->done_head;
        for (size_t i = p->done_head; i != p->done_tail; i++) {
            uint64_t t = p->done[i % p->done_cap];
            struct pool_entry *e = shmq__pool_entry(p, t);
            if (e && e->state == E_DONE)
                p->done[keep++ % p->done_cap] = t;
        }
        p->done_tail = keep;
    }
    p->done[p->done_tail++ % p->done_cap] = ticket;
}

void shmq__pool_complete(struct shmq_pool *p, struct pool_entry *e, int status,
                         const void *data, size_t len)
{
    if (!e || e->state != E_PENDING)
        return;
    e->data = NULL;
    if (len > POOL_INLINE) {
        e->data = malloc(len);
        if (!e->data) {
            status = -ENOMEM;
            len = 0;
        }
    }
    if (len)
        memcpy(e->data ? e->data : e->inl, data, len);
    e->len = (uint32_t)len;
    e->status = status;
    e->state = E_DONE;
    p->pending--;
    done_push(p, e->ticket);
}

int shmq__pool_deliver(struct shmq_pool *p, struct pool_entry *e, void *buf,
                       size_t cap, size_t *len, int *status)
{
    *len = e->len;
    if (e->len > cap)
        return -ENOBUFS;
    if (e->len)
        memcpy(buf, e->data ? e->data : e->inl, e->len);
    *status = e->status;
    free(e->data);
    e->data = NULL;
    ticket_free(p, e);
    p->uncollected--;
    return 0;
}

/* The oldest finished ticket not collected yet, or NULL. */
struct pool_entry *shmq__pool_done_peek(struct shmq_pool *p)
{
    while (p->done_head != p->done_tail) {
        uint64_t t = p->done[p->done_head % p->done_cap];
        struct pool_entry *e = shmq__pool_entry(p, t);
        if (e && e->state == E_DONE)
            return e;
        p->done_head++; /* collected by wait() meanwhile */
    }
    return NULL;
}

void shmq__pool_done_pop(struct shmq_pool *p)
{
    p->done_head++;
}

/* ------------------------------------------------------------------ */
/* Jobs                                                                 */
/* ------------------------------------------------------------------ */

struct pool_jobrec *shmq__pool_job_at(struct shmq_pool *p, unsigned w,
                                      uint64_t index)
{
    if (w >= p->sh.workers)
        return NULL;
    struct pool_slotjobs *sj = &p->jobs[w];
    if (index < sj->head || index >= sj->tail)
        return NULL;
    struct pool_jobrec *j = &sj->ring[index & (POOL_JOBS_PER_SLOT - 1)];
    return j->kind ? j : NULL;
}

void shmq__pool_job_resolve(struct shmq_pool *p, unsigned w,
                            struct pool_jobrec *j)
{
    struct pool_slotjobs *sj = &p->jobs[w];
    j->kind = 0;
    while (sj->head < sj->tail &&
           !sj->ring[sj->head & (POOL_JOBS_PER_SLOT - 1)].kind)
        sj->head++;
}

/* The job ended without a result: status for a task, for the item being
 * run of a batch (item < 0: none was), re-dispatch for its other items. */
void shmq__pool_job_fail(struct shmq_pool *p, unsigned w, struct pool_jobrec *j,
                         int64_t item, int status)
{
    if (j->kind == JOB_TASK)
        shmq__pool_complete(p, shmq__pool_entry(p, j->ticket), status, NULL, 0);
    else if (j->kind == JOB_BATCH)
        shmq__pool_map_fail(p, j, item, status);
    shmq__pool_job_resolve(p, w, j);
}

bool shmq__pool_jobs_idle(const struct shmq_pool *p)
{
    for (unsigned w = 0; w < p->sh.workers; w++)
        if (p->jobs[w].head != p->jobs[w].tail)
            return false;
    return true;
}

/* The slot whose worker has the fewest jobs not yet taken (its own
 * `taken` counter, so the choice follows the workers' progress even
 * while the owner collects nothing), starting the search after the last
 * choice. -1 when every job ring is full. */
int shmq__pool_pick_slot(struct shmq_pool *p)
{
    int best = -1;
    uint64_t best_load = UINT64_MAX;
    unsigned ws = p->sh.workers;
    for (unsigned k = 0; k < ws; k++) {
        unsigned w = (p->rr + k) % ws;
        struct pool_slotjobs *sj = &p->jobs[w];
        if (sj->tail - sj->head >= POOL_JOBS_PER_SLOT - 1)
            continue;
        uint64_t taken = load_relaxed(&p->sh.ctl->slot[w].taken);
        /* Shared and untrusted: clamp into [head, tail]. */
        if (taken < sj->head || taken > sj->tail)
            taken = sj->head;
        uint64_t load = sj->tail - taken;
        if (load < best_load) {
            best_load = load;
            best = (int)w;
        }
        if (load == 0)
            break;
    }
    if (best >= 0)
        p->rr = (unsigned)best + 1;
    return best;
}

/* Record the job just put on tq[w] at the slot's next index. */
void shmq__pool_record_job(struct shmq_pool *p, unsigned w,
                           const struct pool_jobrec *rec, uint64_t *index)
{
    struct pool_slotjobs *sj = &p->jobs[w];
    sj->ring[sj->tail & (POOL_JOBS_PER_SLOT - 1)] = *rec;
    if (index)
        *index = sj->tail;
    sj->tail++;
}

/* Put the message iov[0..n) on tq[w] (iov[0] is its header, whose index
 * is filled here) and record it. 0, or the put's error (-EAGAIN when
 * full). */
int shmq__pool_put_job(struct shmq_pool *p, unsigned w, struct iovec *iov,
                       int n, const struct pool_jobrec *rec, uint64_t *index)
{
    struct pool_task_hdr *h = iov[0].iov_base;
    h->index = p->jobs[w].tail;
    int rc = shmq_putv(p->sh.tq[w], iov, n, SHMQ_NOWAIT);
    if (rc != 0)
        return rc;
    shmq__pool_record_job(p, w, rec, index);
    return 0;
}

void shmq__pool_put_fences(struct shmq_pool *p)
{
    for (unsigned w = 0; w < p->sh.workers; w++) {
        struct pool_slotjobs *sj = &p->jobs[w];
        if (!sj->fence_owed)
            continue;
        if (p->closed || sj->head == sj->tail) {
            sj->fence_owed = false; /* nothing a gap could hide */
            continue;
        }
        if (sj->tail - sj->head >= POOL_JOBS_PER_SLOT - 1)
            continue;
        struct pool_task_hdr h = {.kind = JOB_FENCE};
        struct iovec iov = {&h, sizeof h};
        struct pool_jobrec rec = {.kind = JOB_FENCE};
        if (shmq__pool_put_job(p, w, &iov, 1, &rec, NULL) == 0)
            sj->fence_owed = false;
    }
}
