/* SPDX-License-Identifier: MIT */
/*
 * pool_worker.c - a pool worker: take jobs from its slot's task queue,
 * run them, put their results.
 *
 * The order of the stores is what makes a death attributable (pool.h):
 * the running word is set before a job's function is called and cleared
 * only after its result was put, so a worker that dies with it set died
 * running that job, unless the result was in rq first. A gap in the job
 * indices means a previous worker of the slot took a job and died before
 * it could record it; that is reported (LOST) before anything else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "internal.h"
#include "pool.h"
#include "wait.h"

struct worker {
    const struct pool_shared *sh;
    struct pool_slot *slot;
    unsigned w;
    struct shmq_msg in; /* the task message, borrowed from tq[w] */
    unsigned char *out; /* a result message being built */
    size_t out_cap;
    unsigned char *scratch; /* one batch item's result */
};

/* Exit codes other than 0 (drained) and the initializer's. */
#define EXIT_BROKEN_IO 112

static _Noreturn void die_quietly(int code)
{
    _exit(code);
}

/* The fork server killed us for the job we run (time limit, cancel)
 * while we finished it: the kill is on its way, and we must not take
 * another job before it lands. */
static _Noreturn void await_kill(void)
{
    for (;;)
        pause();
}

static void put_or_die(const struct worker *wk, const void *msg, size_t len)
{
    if (shmq_put(wk->sh->rq, msg, len, SHMQ_FOREVER) != 0)
        die_quietly(EXIT_BROKEN_IO); /* rq closed: the pool is going away */
}

/* Say that jobs [from, to) of our slot were taken by a dead predecessor
 * that never recorded them. */
static void report_gap(const struct worker *wk, uint64_t from, uint64_t to)
{
    struct pool_result_hdr h = {
        .ticket = from, .index = to, .kind = PM_LOST, .slot = wk->w};
    put_or_die(wk, &h, sizeof h);
}

static bool cancelled(const struct pool_ctl *ctl, uint64_t ticket)
{
    if (likely(load_relaxed(&ctl->cancel_seq) == 0))
        return false;
    for (unsigned i = 0; i < POOL_CANCEL_SET; i++)
        if (load_relaxed(&ctl->cancel[i]) == ticket)
            return true;
    return false;
}

static void set_running(const struct worker *wk, const struct pool_task_hdr *t)
{
    int64_t dl = t->limit_ns > 0 ? wait_now() + t->limit_ns : 0;
    store_relaxed(&wk->slot->deadline_ns, dl);
    store_relaxed(&wk->slot->item, 0);
    /* release: the fork server reads deadline and item after it sees
     * running (acquire). */
    store_release(&wk->slot->running, t->index + 1);
}

static void clear_running(const struct worker *wk, uint64_t index)
{
    uint64_t expect = index + 1;
    /* Fails only when the fork server marked the job killed (pairs with
     * its CAS): then we stop here rather than race the kill. */
    if (!cas_acq_rel(&wk->slot->running, &expect, 0))
        await_kill();
    store_relaxed(&wk->slot->deadline_ns, 0);
}

static void run_task(struct worker *wk, const struct pool_task_hdr *t,
                     size_t len)
{
    const struct pool_shared *sh = wk->sh;
    struct pool_result_hdr *r = (struct pool_result_hdr *)wk->out;
    *r = (struct pool_result_hdr){.ticket = t->ticket,
                                  .index = t->index,
                                  .kind = PM_RESULT,
                                  .slot = wk->w};
    size_t outlen = 0;
    set_running(wk, t);
    if (cancelled(sh->ctl, t->ticket)) {
        r->status = -ECANCELED;
    } else {
        shmq_task_fn fn = (shmq_task_fn)t->fn;
        r->status = fn(t + 1, len - sizeof *t, r + 1, sh->max_message, &outlen,
                       sh->ctx);
        if (outlen > sh->max_message) {
            r->status = -EMSGSIZE; /* never truncated */
            outlen = 0;
        }
    }
    put_or_die(wk, r, sizeof *r + outlen);
    clear_running(wk, t->index);
}

/* A batch's layout: header, count lengths (uint32), then the arguments,
 * each at an 8-aligned offset. false when the message does not hold
 * what it claims. */
static bool batch_valid(const struct pool_task_hdr *t, size_t len,
                        size_t max_message)
{
    const uint32_t *lens = (const uint32_t *)(t + 1);
    size_t off = POOL_ALIGN8(sizeof *t + (size_t)t->count * sizeof *lens);
    if (t->count == 0 || off > len)
        return false;
    for (uint32_t i = 0; i < t->count; i++) {
        if (lens[i] > max_message || lens[i] > len - off)
            return false;
        off = POOL_ALIGN8(off + lens[i]);
    }
    return true;
}

struct batch_out {
    struct pool_result_hdr *h;
    size_t used;
};

static void batch_flush(struct worker *wk, struct batch_out *b, bool final)
{
    b->h->status = final;
    put_or_die(wk, b->h, b->used);
    b->h->ticket += b->h->count;
    b->h->count = 0;
    b->used = sizeof *b->h;
}

static void batch_append(struct worker *wk, struct batch_out *b, int status,
                         size_t len)
{
    size_t need = sizeof(struct pool_item_hdr) + POOL_ALIGN8(len);
    if (b->used + need > wk->out_cap)
        batch_flush(wk, b, false);
    struct pool_item_hdr *ih = (struct pool_item_hdr *)(wk->out + b->used);
    ih->status = status;
    ih->len = (uint32_t)len;
    memcpy(ih + 1, wk->scratch, len);
    b->used += need;
    b->h->count++;
}

static void run_batch(struct worker *wk, const struct pool_task_hdr *t,
                      size_t len)
{
    const struct pool_shared *sh = wk->sh;
    if (!batch_valid(t, len, sh->max_message))
        die_quietly(EXIT_BROKEN_IO);
    struct batch_out b = {.h = (struct pool_result_hdr *)wk->out,
                          .used = sizeof(struct pool_result_hdr)};
    *b.h = (struct pool_result_hdr){.ticket = t->ticket,
                                    .index = t->index,
                                    .gen = t->gen,
                                    .kind = PM_BATCH,
                                    .slot = wk->w};
    const uint32_t *lens = (const uint32_t *)(t + 1);
    const unsigned char *base = (const unsigned char *)t;
    size_t off = POOL_ALIGN8(sizeof *t + (size_t)t->count * sizeof *lens);
    shmq_task_fn fn = (shmq_task_fn)t->fn;
    set_running(wk, t);
    for (uint32_t i = 0; i < t->count; i++) {
        store_relaxed(&wk->slot->item, i);
        size_t outlen = 0;
        int st = fn(base + off, lens[i], wk->scratch, sh->max_message, &outlen,
                    sh->ctx);
        if (outlen > sh->max_message) {
            st = -EMSGSIZE;
            outlen = 0;
        }
        batch_append(wk, &b, st, outlen);
        off = POOL_ALIGN8(off + lens[i]);
    }
    batch_flush(wk, &b, true);
    clear_running(wk, t->index);
}

/* Take the next job, in place (no copy: tq[w] is ours alone, and its
 * oldest message is the one we run); report a gap first; false once tq
 * is drained. */
static bool take(struct worker *wk, struct pool_task_hdr **t, size_t *len)
{
    int rc = shmq_get_begin(wk->sh->tq[wk->w], &wk->in, SHMQ_FOREVER);
    if (rc == -EPIPE) {
        /* Closed and drained: every job was taken, so any index nobody
         * recorded was lost with a predecessor. */
        report_gap(wk, load_relaxed(&wk->slot->taken), UINT64_MAX);
        return false;
    }
    *len = wk->in.len;
    if (rc != 0 || *len < sizeof **t)
        die_quietly(EXIT_BROKEN_IO);
    *t = (struct pool_task_hdr *)wk->in.data;
    uint64_t expect = load_relaxed(&wk->slot->taken);
    if ((*t)->index > expect)
        report_gap(wk, expect, (*t)->index);
    store_relaxed(&wk->slot->taken, (*t)->index + 1);
    return true;
}

static void setup(struct worker *wk, const struct pool_shared *sh, unsigned w,
                  pid_t parent)
{
    /* Die with the fork server; re-check in case it died before the
     * prctl took effect. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        die_quietly(EXIT_BROKEN_IO);
    prctl(PR_SET_NAME, "shmq-worker");
    wk->sh = sh;
    wk->w = w;
    wk->slot = &sh->ctl->slot[w];
    wk->out_cap = shmq_max_message(sh->rq);
    wk->out = malloc(wk->out_cap);
    wk->scratch = malloc(sh->max_message ? sh->max_message : 1);
    if (!wk->out || !wk->scratch)
        die_quietly(EXIT_BROKEN_IO);
}

_Noreturn void shmq__worker_run(const struct pool_shared *sh, unsigned w,
                                pid_t parent)
{
    struct worker wk;
    setup(&wk, sh, w, parent);
    if (sh->initializer && sh->initializer(sh->ctx) != 0) {
        store_release(&wk.slot->init_failed, 1u);
        die_quietly(POOL_INIT_FAILED_EXIT);
    }
    unsigned done = 0;
    struct pool_task_hdr *t;
    size_t len;
    while (take(&wk, &t, &len)) {
        uint32_t kind = t->kind;
        if (kind == JOB_TASK)
            run_task(&wk, t, len);
        else if (kind == JOB_BATCH)
            run_batch(&wk, t, len);
        uint64_t index = t->index;
        shmq_get_end(sh->tq[w], &wk.in);
        if (kind != JOB_TASK && kind != JOB_BATCH) {
            /* A fence: its index did its work in take(); say it was
             * taken, so that the owner's record of it is resolved. */
            struct pool_result_hdr h = {
                .index = index, .kind = PM_FENCE, .slot = w};
            put_or_die(&wk, &h, sizeof h);
            continue;
        }
        if (sh->max_tasks_per_child && ++done >= sh->max_tasks_per_child) {
            store_release(&wk.slot->retiring, (uint32_t)RETIRE_RECYCLE);
            die_quietly(POOL_RETIRE_EXIT);
        }
    }
    store_release(&wk.slot->retiring, (uint32_t)RETIRE_DRAINED);
    die_quietly(POOL_RETIRE_EXIT);
}
