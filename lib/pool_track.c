/* SPDX-License-Identifier: MIT */
/*
 * pool_track.c - the owner's bookkeeping: tickets and their results,
 * the jobs on each worker's queue, and what arrives on rq (results, gaps,
 * wakeups) or in the control region's death log.
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
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool_owner.h"

#define SLICE_NS                                                               \
    100000000 /* 100 ms: the longest sleep between checks of                   \
                 the fork server's pidfd */
#define FS_POLL_EVERY 256

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

static struct pool_jobrec *job_at(struct shmq_pool *p, unsigned w,
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

static void job_resolve(struct shmq_pool *p, unsigned w, struct pool_jobrec *j)
{
    struct pool_slotjobs *sj = &p->jobs[w];
    j->kind = 0;
    while (sj->head < sj->tail &&
           !sj->ring[sj->head & (POOL_JOBS_PER_SLOT - 1)].kind)
        sj->head++;
}

/* The job ended without a result: status for a task, for the item being
 * run of a batch (item < 0: none was), re-dispatch for its other items. */
static void job_fail(struct shmq_pool *p, unsigned w, struct pool_jobrec *j,
                     int64_t item, int status)
{
    if (j->kind == JOB_TASK)
        shmq__pool_complete(p, shmq__pool_entry(p, j->ticket), status, NULL, 0);
    else if (j->kind == JOB_BATCH)
        shmq__pool_map_fail(p, j, item, status);
    job_resolve(p, w, j);
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

static void put_fences(struct shmq_pool *p)
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

/* ------------------------------------------------------------------ */
/* Messages on rq                                                       */
/* ------------------------------------------------------------------ */

static void on_result(struct shmq_pool *p, const struct pool_result_hdr *h,
                      const unsigned char *msg, size_t len)
{
    struct pool_jobrec *j = job_at(p, h->slot, h->index);
    if (!j || j->kind != JOB_TASK || j->ticket != h->ticket)
        return; /* resolved already (death, cancel), or scribbled */
    size_t dlen = len - sizeof *h;
    int status = h->status;
    if (dlen > p->sh.max_message) {
        status = -EBADMSG;
        dlen = 0;
    }
    shmq__pool_complete(p, shmq__pool_entry(p, h->ticket), status,
                        msg + sizeof *h, dlen);
    job_resolve(p, h->slot, j);
}

static void on_batch(struct shmq_pool *p, const struct pool_result_hdr *h,
                     const unsigned char *msg, size_t len)
{
    struct pool_jobrec *j = job_at(p, h->slot, h->index);
    if (!j || j->kind != JOB_BATCH)
        return;
    shmq__pool_map_batch(p, j, h, msg, len);
    if (h->status) /* the batch's last message */
        job_resolve(p, h->slot, j);
}

/* Jobs [ticket, index) of the slot were taken by a worker that died
 * before it recorded them: they died with it. */
static void on_lost(struct shmq_pool *p, const struct pool_result_hdr *h)
{
    if (h->slot >= p->sh.workers)
        return;
    struct pool_slotjobs *sj = &p->jobs[h->slot];
    uint64_t from = h->ticket > sj->head ? h->ticket : sj->head;
    uint64_t to = h->index < sj->tail ? h->index : sj->tail;
    for (uint64_t i = from; i < to; i++) {
        struct pool_jobrec *j = job_at(p, h->slot, i);
        if (j)
            job_fail(p, h->slot, j, -1, -EOWNERDEAD);
    }
}

static void on_fence(struct shmq_pool *p, const struct pool_result_hdr *h)
{
    struct pool_jobrec *j = job_at(p, h->slot, h->index);
    if (j && j->kind == JOB_FENCE)
        job_resolve(p, h->slot, j);
}

/* A message borrowed from rq (in shared memory: the header is copied
 * once, then only the copy is trusted); its kind. */
static uint32_t handle(struct shmq_pool *p, const struct shmq_msg *m)
{
    struct pool_result_hdr h;
    if (m->len < sizeof h)
        return 0;
    memcpy(&h, m->data, sizeof h);
    if (h.kind == PM_RESULT)
        on_result(p, &h, m->data, m->len);
    else if (h.kind == PM_BATCH)
        on_batch(p, &h, m->data, m->len);
    else if (h.kind == PM_LOST)
        on_lost(p, &h);
    else if (h.kind == PM_FENCE)
        on_fence(p, &h);
    /* PM_WAKE: only its arrival mattered */
    return h.kind;
}

/* Take one message from rq in place, handle it, give its room back. */
static int take_one(struct shmq_pool *p, int64_t timeout_ns, uint32_t *kind)
{
    struct shmq_msg m;
    int rc = shmq_get_begin(p->sh.rq, &m, timeout_ns);
    if (rc != 0)
        return rc;
    *kind = handle(p, &m);
    shmq_get_end(p->sh.rq, &m);
    return 0;
}

static void drain(struct shmq_pool *p)
{
    uint32_t kind;
    while (take_one(p, SHMQ_NOWAIT, &kind) == 0)
        ;
}

/* ------------------------------------------------------------------ */
/* Deaths                                                               */
/* ------------------------------------------------------------------ */

static int reason_status(uint32_t reason)
{
    if (reason == KILL_TIMEOUT)
        return -ETIMEDOUT;
    if (reason == KILL_CANCEL)
        return -ECANCELED;
    return -EOWNERDEAD;
}

static void remember(struct shmq_pool *p, const struct pool_death_rec *d,
                     const struct pool_jobrec *j, uint64_t running)
{
    struct shmq_pool_death *m = &p->dlog[p->dcount++ % POOL_DEATHS_KEPT];
    m->pid = d->pid;
    m->worker = d->slot;
    m->wstatus = d->wstatus;
    m->reason = d->reason == KILL_NONE ? 0 : reason_status(d->reason);
    m->ticket = running && j && j->kind == JOB_TASK ? j->ticket : 0;
}

static void on_death(struct shmq_pool *p, const struct pool_death_rec *rec)
{
    struct pool_death_rec d = *rec; /* copied once: shared memory */
    if (d.slot >= p->sh.workers)
        return;
    uint64_t running = d.running & ~POOL_KILLED;
    struct pool_jobrec *j = running ? job_at(p, d.slot, running - 1) : NULL;
    remember(p, &d, j, running);
    if (j) {
        int64_t item = d.item < POOL_BATCH_MAX ? (int64_t)d.item : -1;
        job_fail(p, d.slot, j, item, reason_status(d.reason));
    }
    p->jobs[d.slot].fence_owed = true;
}

static void broken_now(struct shmq_pool *p, uint32_t why)
{
    if (p->broken)
        return;
    p->broken = why ? why : BROKEN_FS;
    shmq__pool_cancel_all(p);
}

/* Read the deaths the fork server logged since last time. Results the
 * dead put before dying are in rq already: take them in first, so that
 * a task whose result was committed is not declared dead. */
void shmq__pool_check_deaths(struct shmq_pool *p)
{
    struct pool_ctl *ctl = p->sh.ctl;
    uint32_t broken = load_acquire(&ctl->broken);
    uint64_t n = load_acquire(&ctl->deaths);
    if (n == p->deaths_seen && !broken)
        return;
    if (p->in_deaths)
        return;
    p->in_deaths = true;
    drain(p);
    if (n - p->deaths_seen > POOL_DEATH_LOG) /* scribbled: skip ahead */
        p->deaths_seen = n - POOL_DEATH_LOG;
    for (; p->deaths_seen < n; p->deaths_seen++) {
        const struct pool_death_rec *d =
            &ctl->death[p->deaths_seen % POOL_DEATH_LOG];
        if (load_acquire(&d->seq) == p->deaths_seen + 1)
            on_death(p, d);
    }
    /* release: the records are read before the fork server reuses them */
    store_release(&ctl->deaths_seen, n);
    p->in_deaths = false;
    if (broken)
        broken_now(p, broken);
}

/* Has the fork server exited? A poll(2) of its pidfd on wakeups and
 * idle slices (now), otherwise once per FS_POLL_EVERY calls: a caller
 * polling with SHMQ_NOWAIT still learns of its death, without a system
 * call per attempt. */
static bool fs_dead(struct shmq_pool *p, bool now)
{
    if (p->fs_gone)
        return true;
    if (!now && ++p->fs_polled % FS_POLL_EVERY != 0)
        return false;
    struct pollfd pf = {.fd = p->fs_pidfd, .events = POLLIN};
    int saved = errno;
    int rc = poll(&pf, 1, 0);
    errno = saved;
    if (rc == 1) {
        p->fs_gone = true;
        drain(p);
        shmq__pool_check_deaths(p);
        broken_now(p, BROKEN_FS);
    }
    return p->fs_gone;
}

/* Every task not finished completes with -ECANCELED (broken, terminate). */
void shmq__pool_cancel_all(struct shmq_pool *p)
{
    for (unsigned w = 0; w < p->sh.workers; w++) {
        struct pool_slotjobs *sj = &p->jobs[w];
        for (uint64_t i = sj->head; i < sj->tail; i++) {
            struct pool_jobrec *j = job_at(p, w, i);
            if (j)
                job_fail(p, w, j, -1, -ECANCELED);
        }
        sj->head = sj->tail;
        sj->fence_owed = false;
    }
    shmq__pool_map_cancel(p);
}

/* One step: take one message from rq (waiting up to `until`, in slices),
 * then look at the death log. 0 when something may have changed;
 * -EAGAIN (nowait, nothing there), -ETIMEDOUT, or rq's error. */
int shmq__pool_pump(struct shmq_pool *p, wait_deadline_t until, bool nowait)
{
    put_fences(p);
    uint32_t kind = 0;
    /* A message already there costs no clock read. */
    int rc = take_one(p, SHMQ_NOWAIT, &kind);
    if (rc == -EAGAIN && !nowait) {
        int64_t slice = SLICE_NS;
        if (until >= 0) {
            int64_t left = until - wait_now();
            slice = left < slice ? left : slice;
        }
        rc = slice > 0 ? take_one(p, slice, &kind) : -ETIMEDOUT;
        if (rc == -ETIMEDOUT && until >= 0 && wait_now() >= until) {
            shmq__pool_check_deaths(p);
            return -ETIMEDOUT;
        }
    }
    shmq__pool_check_deaths(p);
    if (rc == 0) {
        if (kind == PM_WAKE)
            fs_dead(p, true);
        return 0;
    }
    if (rc == -ETIMEDOUT || rc == -EAGAIN) {
        fs_dead(p, rc == -ETIMEDOUT);
        return nowait ? -EAGAIN : 0;
    }
    return rc;
}
