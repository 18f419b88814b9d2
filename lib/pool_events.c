/* SPDX-License-Identifier: MIT */
/*
 * pool_events.c - what the owner learns, and how it waits for it: the
 * messages on rq (results, map batches, gaps, fence acknowledgements,
 * wakeups), the fork server's death log, the fork server's own death.
 *
 * Every message is read in place (shmq_get_begin) with its header copied
 * once; every value from rq or the control region is bounds-checked
 * before it indexes anything (slots, job indices, lengths).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool_owner.h"

/* 100 ms: the longest sleep between checks of the fork server's pidfd. */
#define SLICE_NS      100000000
#define FS_POLL_EVERY 256

/* ------------------------------------------------------------------ */
/* Messages on rq                                                       */
/* ------------------------------------------------------------------ */

static void on_result(struct shmq_pool *p, const struct pool_result_hdr *h,
                      const unsigned char *msg, size_t len)
{
    struct pool_jobrec *j = shmq__pool_job_at(p, h->slot, h->index);
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
    shmq__pool_job_resolve(p, h->slot, j);
}

static void on_batch(struct shmq_pool *p, const struct pool_result_hdr *h,
                     const unsigned char *msg, size_t len)
{
    struct pool_jobrec *j = shmq__pool_job_at(p, h->slot, h->index);
    if (!j || j->kind != JOB_BATCH)
        return;
    shmq__pool_map_batch(p, j, h, msg, len);
    if (h->status) /* the batch's last message */
        shmq__pool_job_resolve(p, h->slot, j);
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
        struct pool_jobrec *j = shmq__pool_job_at(p, h->slot, i);
        if (j)
            shmq__pool_job_fail(p, h->slot, j, -1, -EOWNERDEAD);
    }
}

static void on_fence(struct shmq_pool *p, const struct pool_result_hdr *h)
{
    struct pool_jobrec *j = shmq__pool_job_at(p, h->slot, h->index);
    if (j && j->kind == JOB_FENCE)
        shmq__pool_job_resolve(p, h->slot, j);
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
    struct pool_jobrec *j =
        running ? shmq__pool_job_at(p, d.slot, running - 1) : NULL;
    remember(p, &d, j, running);
    if (j) {
        int64_t item = d.item < POOL_BATCH_MAX ? (int64_t)d.item : -1;
        shmq__pool_job_fail(p, d.slot, j, item, reason_status(d.reason));
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
            struct pool_jobrec *j = shmq__pool_job_at(p, w, i);
            if (j)
                shmq__pool_job_fail(p, w, j, -1, -ECANCELED);
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
    shmq__pool_put_fences(p);
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
