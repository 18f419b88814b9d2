/* SPDX-License-Identifier: MIT */
/*
 * pool.c - the process pool's public calls: argument rules, creating
 * and tearing down its parts, submit / wait / next / map / cancel.
 * How tasks are attributed to workers is in pool.h; the owner's
 * bookkeeping in pool_track.c; map in pool_map.c; the fork server in
 * forkserver.c; the workers in pool_worker.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "pool_owner.h"

#define TQ_MAXSIZE        POOL_JOBS_PER_SLOT
#define RQ_MAXSIZE        4096u
#define TQ_MIN_CAPACITY   (256u << 10)
#define RQ_MIN_CAPACITY   (1u << 20)
#define RQ_MIN_MESSAGE    (16u << 10) /* room to batch small map results */
#define TERMINATE_WAIT_MS 2000
#define JOIN_SLICE_MS     100

static bool bad_timeout(int64_t t)
{
    return t < 0 && t != SHMQ_FOREVER;
}

/* ------------------------------------------------------------------ */
/* Creating and tearing down                                            */
/* ------------------------------------------------------------------ */

/* A queue with room for one max_message message and a little more (at
 * least min_capacity): every page of a region is allocated at creation,
 * so a pool with a large max_message must not ask for two per queue.
 * Above 4 MiB the queue's storage unit grows; if the small margin does
 * not cover it, fall back to the queue's own default of two. */
static int make_queue(shmq_t **q, size_t max_message, size_t maxsize,
                      size_t min_capacity)
{
    size_t cap = max_message + (max_message >> 6) + 4096;
    struct shmq_config c = {.maxsize = maxsize,
                            .capacity = cap > min_capacity ? cap : min_capacity,
                            .max_message = max_message};
    int rc = shmq_create(q, &c);
    if (rc == -EINVAL) {
        c.capacity = 0;
        rc = shmq_create(q, &c);
    }
    return rc;
}

static int make_ctl(struct shmq_pool *p)
{
    size_t size =
        sizeof(struct pool_ctl) + p->sh.workers * sizeof(struct pool_slot);
    int saved = errno;
    int fd = memfd_create("shmq-pool", MFD_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0 && ftruncate(fd, (off_t)size) != 0)
        rc = -errno;
    void *m = MAP_FAILED;
    if (rc == 0) {
        m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            rc = -errno;
    }
    errno = saved;
    if (rc != 0) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    p->ctl_fd = fd;
    p->sh.ctl = m;
    p->sh.ctl_size = size;
    p->sh.ctl->magic = POOL_MAGIC;
    p->sh.ctl->workers = p->sh.workers;
    p->owner = getpid();
    p->sh.ctl->owner_pid = (int32_t)p->owner;
    return 0;
}

static int make_queues(struct shmq_pool *p)
{
    size_t tq_max = POOL_ALIGN8(sizeof(struct pool_task_hdr) + 8) +
                    POOL_ALIGN8(p->sh.max_message) + 64;
    size_t rq_max = sizeof(struct pool_result_hdr) +
                    sizeof(struct pool_item_hdr) +
                    POOL_ALIGN8(p->sh.max_message);
    rq_max = rq_max > RQ_MIN_MESSAGE ? rq_max : RQ_MIN_MESSAGE;
    int rc = make_queue(&p->sh.rq, rq_max, RQ_MAXSIZE, RQ_MIN_CAPACITY);
    for (unsigned w = 0; rc == 0 && w < p->sh.workers; w++)
        rc = make_queue(&p->sh.tq[w], tq_max, TQ_MAXSIZE, TQ_MIN_CAPACITY);
    if (rc != 0)
        return rc;
    return 0;
}

static int make_tables(struct shmq_pool *p)
{
    p->tab = calloc(POOL_TICKETS, sizeof *p->tab);
    p->done_cap = POOL_TICKETS;
    p->done = calloc(p->done_cap, sizeof *p->done);
    p->jobs = calloc(p->sh.workers, sizeof *p->jobs);
    p->freeq = calloc(POOL_TICKETS, sizeof *p->freeq);
    if (!p->freeq)
        return -ENOMEM;
    for (uint32_t i = 0; i < POOL_TICKETS; i++)
        p->freeq[i] = i;
    p->free_tail = POOL_TICKETS;
    p->sh.tq = calloc(p->sh.workers, sizeof(shmq_t *));
    if (!p->tab || !p->done || !p->jobs || !p->sh.tq)
        return -ENOMEM;
    for (unsigned w = 0; w < p->sh.workers; w++) {
        p->jobs[w].ring =
            calloc(POOL_JOBS_PER_SLOT, sizeof(struct pool_jobrec));
        if (!p->jobs[w].ring)
            return -ENOMEM;
    }
    return 0;
}

static int start_forkserver(struct shmq_pool *p)
{
    int sv[2];
    int saved = errno;
    int rc = 0;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = -errno;
        errno = saved;
        return rc;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        shmq__forkserver_run(&p->sh, sv[1]);
    }
    if (pid < 0)
        rc = -errno;
    close(sv[1]);
    p->sock = sv[0];
    if (rc == 0) {
        p->fs_pid = pid;
        /* Our child, not waited for yet: the pid cannot be reused before
         * this (unless the host reaps children it did not fork, or
         * ignores SIGCHLD and the fork server already died: ESRCH). */
        p->fs_pidfd = pidfd_open(pid, 0);
        if (p->fs_pidfd < 0) {
            rc = -errno;
            kill(pid, SIGKILL);
        }
    }
    errno = saved;
    return rc;
}

static void free_all(struct shmq_pool *p)
{
    if (p->sock >= 0)
        close(p->sock);
    if (p->fs_pidfd >= 0)
        close(p->fs_pidfd);
    for (unsigned w = 0; p->sh.tq && w < p->sh.workers; w++)
        shmq_release(p->sh.tq[w]);
    shmq_release(p->sh.rq);
    if (p->sh.ctl)
        munmap(p->sh.ctl, p->sh.ctl_size);
    if (p->ctl_fd >= 0)
        close(p->ctl_fd);
    for (size_t i = 0; p->tab && i < POOL_TICKETS; i++)
        free(p->tab[i].data);
    for (unsigned w = 0; p->jobs && w < p->sh.workers; w++)
        free(p->jobs[w].ring);
    free(p->jobs);
    free(p->tab);
    free(p->done);
    free(p->freeq);
    free(p->sh.tq);
    free(p);
}

static unsigned online_cpus(void)
{
    int saved = errno;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    errno = saved;
    if (n < 1)
        return 1;
    return n > (long)POOL_MAX_WORKERS ? POOL_MAX_WORKERS : (unsigned)n;
}

static int create(shmq_pool_t **out, const struct shmq_pool_config *cfg)
{
    struct shmq_pool_config c = {0};
    if (!out)
        return -EINVAL;
    if (cfg)
        c = *cfg;
    if (c.workers > POOL_MAX_WORKERS || c.max_message > SHMQ_POOL_MAX_MESSAGE)
        return -EINVAL;
    struct shmq_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->ctl_fd = p->sock = p->fs_pidfd = -1;
    p->sh.workers = c.workers ? c.workers : online_cpus();
    p->sh.max_message =
        c.max_message ? c.max_message : SHMQ_POOL_DEFAULT_MAX_MESSAGE;
    p->sh.max_tasks_per_child = c.max_tasks_per_child;
    p->sh.initializer = c.initializer;
    p->sh.ctx = c.ctx;
    int rc = make_tables(p);
    if (rc == 0)
        rc = make_ctl(p);
    if (rc == 0)
        rc = make_queues(p);
    if (rc == 0)
        rc = start_forkserver(p);
    if (rc != 0) {
        p->fs_gone = true;
        if (p->fs_pid > 0)
            waitpid(p->fs_pid, NULL, 0);
        free_all(p);
        return rc;
    }
    *out = p;
    return 0;
}

SHMQ_PUBLIC int shmq_pool_create(shmq_pool_t **out,
                                 const struct shmq_pool_config *cfg)
{
    int saved = errno; /* the library never changes errno */
    int rc = create(out, cfg);
    errno = saved;
    return rc;
}

static void send_cmd(struct shmq_pool *p, uint32_t cmd, uint32_t slot,
                     uint64_t running, uint32_t reason)
{
    struct pool_cmd_msg m = {
        .cmd = cmd, .slot = slot, .running = running, .reason = reason};
    int saved = errno;
    while (send(p->sock, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
    errno = saved;
}

/* Wait for the fork server to exit, up to ms (-1: forever); reap it.
 * true once it is gone. */
static bool fs_wait(struct shmq_pool *p, int ms)
{
    if (p->fs_pidfd < 0)
        return true;
    struct pollfd pf = {.fd = p->fs_pidfd, .events = POLLIN};
    int saved = errno;
    int64_t until = ms < 0 ? -1 : wait_now() + (int64_t)ms * 1000000;
    int rc;
    for (;;) {
        int left = ms < 0 ? -1 : (int)((until - wait_now()) / 1000000);
        rc = poll(&pf, 1, left < 0 && ms >= 0 ? 0 : left);
        if (rc >= 0 || errno != EINTR)
            break;
    }
    if (rc == 1) {
        siginfo_t si;
        /* ECHILD when the host ignores SIGCHLD or reaped it: fine. */
        while (waitid(P_PIDFD, (id_t)p->fs_pidfd, &si, WEXITED) != 0 &&
               errno == EINTR)
            ;
        close(p->fs_pidfd);
        p->fs_pidfd = -1;
    }
    errno = saved;
    return rc == 1;
}

SHMQ_PUBLIC void shmq_pool_terminate(shmq_pool_t *p)
{
    if (!p || p->terminated)
        return;
    int saved = errno;
    if (getpid() != p->owner) {
        /* A forked child's copy (an atexit handler, say): the workers
         * are the owner's, not ours to stop. */
        p->terminated = p->closed = p->fs_gone = true;
        errno = saved;
        return;
    }
    p->terminated = p->closed = true;
    send_cmd(p, CMD_TERMINATE, 0, 0, 0);
    if (!fs_wait(p, TERMINATE_WAIT_MS)) {
        /* Stuck: its workers die with it (PR_SET_PDEATHSIG). */
        pidfd_send_signal(p->fs_pidfd, SIGKILL, NULL, 0);
        fs_wait(p, -1);
    }
    p->fs_gone = true;
    /* Results that made it stay collectable; the rest is cancelled. */
    while (shmq__pool_pump(p, -1, true) == 0)
        ;
    shmq__pool_cancel_all(p);
    errno = saved;
}

SHMQ_PUBLIC void shmq_pool_destroy(shmq_pool_t *p)
{
    if (!p)
        return;
    if (p->fs_pidfd >= 0)
        shmq_pool_terminate(p);
    int saved = errno;
    free_all(p); /* in a forked child: only the child's copies */
    errno = saved;
}

/* ------------------------------------------------------------------ */
/* Submitting                                                           */
/* ------------------------------------------------------------------ */

/* Refusals that do not depend on room: closed wins, then broken. */
static int refuse(struct shmq_pool *p)
{
    if (p->closed)
        return -EPIPE;
    if (!p->broken)
        shmq__pool_check_deaths(p);
    return p->broken ? -ECANCELED : 0;
}

static int try_put_task(struct shmq_pool *p, shmq_task_fn fn, const void *arg,
                        size_t len, int64_t limit_ns, uint64_t *ticket)
{
    int w = shmq__pool_pick_slot(p);
    if (w < 0)
        return -EAGAIN;
    struct pool_entry *e = shmq__pool_ticket_new(p);
    if (!e)
        return -EAGAIN;
    struct pool_task_hdr h = {.ticket = e->ticket,
                              .fn = (uintptr_t)fn,
                              .limit_ns = limit_ns,
                              .kind = JOB_TASK};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)arg, len}};
    struct pool_jobrec rec = {.ticket = e->ticket, .kind = JOB_TASK};
    int rc =
        shmq__pool_put_job(p, (unsigned)w, iov, len ? 2 : 1, &rec, &e->index);
    if (rc != 0) {
        e->ticket = 0; /* never given out; the entry stays free */
        return rc;
    }
    shmq__pool_ticket_commit(p);
    e->slot = (uint32_t)w;
    e->state = E_PENDING;
    p->uncollected++;
    p->pending++;
    *ticket = e->ticket;
    return 0;
}

static int submit(struct shmq_pool *p, shmq_task_fn fn, const void *arg,
                  size_t len, uint64_t *ticket, int64_t timeout_ns,
                  int64_t limit_ns)
{
    if (!p || !fn || !ticket || (!arg && len) || bad_timeout(timeout_ns))
        return -EINVAL;
    if (len > p->sh.max_message)
        return -EMSGSIZE;
    int rc = refuse(p);
    if (rc != 0)
        return rc;
    if (limit_ns > 0 && !load_relaxed(&p->sh.ctl->limits)) {
        store_relaxed(&p->sh.ctl->limits, 1u);
        send_cmd(p, CMD_LIMITS, 0, 0, 0); /* it may sleep without a tick */
    }
    rc = try_put_task(p, fn, arg, len, limit_ns, ticket);
    if (rc != -EAGAIN)
        return rc;
    /* The clock is read only when there is a wait. */
    wait_deadline_t until = wait_deadline(timeout_ns);
    bool nowait = timeout_ns == SHMQ_NOWAIT;
    for (;;) {
        /* Saturated: take results in (so workers move on) and retry. */
        rc = shmq__pool_pump(p, until, nowait);
        if (p->broken)
            return -ECANCELED;
        if (rc != 0)
            return rc;
        rc = try_put_task(p, fn, arg, len, limit_ns, ticket);
        if (rc != -EAGAIN)
            return rc;
    }
}

SHMQ_PUBLIC int shmq_pool_submit(shmq_pool_t *p, shmq_task_fn fn,
                                 const void *arg, size_t len, uint64_t *ticket,
                                 int64_t timeout_ns)
{
    return submit(p, fn, arg, len, ticket, timeout_ns, 0);
}

SHMQ_PUBLIC int shmq_pool_submit_timed(shmq_pool_t *p, shmq_task_fn fn,
                                       const void *arg, size_t len,
                                       uint64_t *ticket, int64_t timeout_ns,
                                       int64_t limit_ns)
{
    if (limit_ns <= 0)
        return -EINVAL;
    return submit(p, fn, arg, len, ticket, timeout_ns, limit_ns);
}

/* ------------------------------------------------------------------ */
/* Collecting                                                           */
/* ------------------------------------------------------------------ */

static bool bad_collect(const struct shmq_pool *p, const void *buf, size_t cap,
                        const size_t *len, const int *status, int64_t t)
{
    return !p || !len || !status || (!buf && cap) || bad_timeout(t);
}

SHMQ_PUBLIC int shmq_pool_wait(shmq_pool_t *p, uint64_t ticket, void *buf,
                               size_t cap, size_t *len, int *status,
                               int64_t timeout_ns)
{
    if (bad_collect(p, buf, cap, len, status, timeout_ns))
        return -EINVAL;
    struct pool_entry *e = shmq__pool_entry(p, ticket);
    if (!e || e->state == E_FREE)
        return -ENOENT;
    wait_deadline_t until =
        e->state == E_PENDING ? wait_deadline(timeout_ns) : -1;
    bool nowait = timeout_ns == SHMQ_NOWAIT;
    while (e->state == E_PENDING) {
        int rc = shmq__pool_pump(p, until, nowait);
        if (rc != 0 && e->state == E_PENDING)
            return rc;
    }
    return shmq__pool_deliver(p, e, buf, cap, len, status);
}

SHMQ_PUBLIC int shmq_pool_next(shmq_pool_t *p, uint64_t *ticket, void *buf,
                               size_t cap, size_t *len, int *status,
                               int64_t timeout_ns)
{
    if (bad_collect(p, buf, cap, len, status, timeout_ns) || !ticket)
        return -EINVAL;
    wait_deadline_t until = -1;
    bool timed = false, nowait = timeout_ns == SHMQ_NOWAIT;
    for (;;) {
        struct pool_entry *e = shmq__pool_done_peek(p);
        if (e) {
            *ticket = e->ticket;
            int rc = shmq__pool_deliver(p, e, buf, cap, len, status);
            if (rc == 0)
                shmq__pool_done_pop(p);
            return rc;
        }
        if (p->pending == 0)
            return -ENOENT;
        if (!timed) { /* the clock is read only when there is a wait */
            until = wait_deadline(timeout_ns);
            timed = true;
        }
        int rc = shmq__pool_pump(p, until, nowait);
        if (rc != 0 && !shmq__pool_done_peek(p))
            return rc;
    }
}

/* ------------------------------------------------------------------ */
/* Map                                                                  */
/* ------------------------------------------------------------------ */

static int check_iovs(const struct iovec *v, size_t n, size_t max, bool sized)
{
    for (size_t i = 0; i < n; i++) {
        if (!v[i].iov_base && v[i].iov_len)
            return -EINVAL;
        if (sized && v[i].iov_len > max)
            return -EMSGSIZE;
    }
    return 0;
}

SHMQ_PUBLIC int shmq_pool_map(shmq_pool_t *p, shmq_task_fn fn,
                              const struct iovec *args, size_t n,
                              struct iovec *results, int *statuses,
                              int64_t timeout_ns)
{
    if (!p || !fn || bad_timeout(timeout_ns) ||
        (n && (!args || !results || !statuses)))
        return -EINVAL;
    int rc = check_iovs(results, n, 0, false);
    if (rc == 0)
        rc = check_iovs(args, n, p->sh.max_message, true);
    if (rc == 0)
        rc = refuse(p);
    if (rc != 0 || n == 0)
        return rc;
    struct pool_map m = {.fn = fn,
                         .args = args,
                         .n = n,
                         .results = results,
                         .statuses = statuses};
    return shmq__pool_map_run(p, &m, wait_deadline(timeout_ns),
                              timeout_ns == SHMQ_NOWAIT);
}

/* ------------------------------------------------------------------ */
/* Cancel, close, join                                                  */
/* ------------------------------------------------------------------ */

SHMQ_PUBLIC int shmq_pool_cancel(shmq_pool_t *p, uint64_t ticket)
{
    if (!p)
        return -EINVAL;
    struct pool_entry *e = shmq__pool_entry(p, ticket);
    if (!e || e->state == E_FREE)
        return -ENOENT;
    if (e->state == E_DONE)
        return -EALREADY;
    struct pool_ctl *ctl = p->sh.ctl;
    uint64_t n = load_relaxed(&ctl->cancel_seq);
    store_relaxed(&ctl->cancel[n % POOL_CANCEL_SET], ticket);
    store_release(&ctl->cancel_seq, n + 1);
    /* Running now (or soon): the fork server kills it if the slot still
     * runs this job when the command arrives. */
    send_cmd(p, CMD_KILL, e->slot, e->index + 1, KILL_CANCEL);
    shmq__pool_complete(p, e, -ECANCELED, NULL, 0);
    return 0;
}

SHMQ_PUBLIC int shmq_pool_close(shmq_pool_t *p)
{
    if (!p)
        return -EINVAL;
    if (p->closed)
        return 0;
    p->closed = true;
    for (unsigned w = 0; w < p->sh.workers; w++)
        shmq_close(p->sh.tq[w]);
    send_cmd(p, CMD_STOP, 0, 0, 0);
    return 0;
}

SHMQ_PUBLIC int shmq_pool_join(shmq_pool_t *p, int64_t timeout_ns)
{
    if (!p || bad_timeout(timeout_ns) || !p->closed)
        return -EINVAL;
    if (p->broken || p->terminated)
        return 0;
    wait_deadline_t until = wait_deadline(timeout_ns);
    bool nowait = timeout_ns == SHMQ_NOWAIT;
    while (!p->fs_gone && !p->broken) {
        if (shmq__pool_jobs_idle(p)) {
            /* Every result is in: the workers drain and exit, then the
             * fork server; watch it directly rather than in slices. */
            int64_t left =
                until < 0 ? JOIN_SLICE_MS : (until - wait_now()) / 1000000;
            if (fs_wait(p, left < JOIN_SLICE_MS ? (int)left : JOIN_SLICE_MS)) {
                p->fs_gone = true;
                while (shmq__pool_pump(p, -1, true) == 0)
                    ;
                break;
            }
            if (until >= 0 && wait_now() >= until)
                return nowait ? -EAGAIN : -ETIMEDOUT;
            continue;
        }
        int rc = shmq__pool_pump(p, until, nowait);
        if (rc != 0)
            return rc;
    }
    fs_wait(p, -1); /* it exited: reap it */
    return 0;
}

/* ------------------------------------------------------------------ */
/* Introspection                                                        */
/* ------------------------------------------------------------------ */

SHMQ_PUBLIC int shmq_pool_death(shmq_pool_t *p, uint64_t ticket,
                                struct shmq_pool_death *d)
{
    if (!p || !d)
        return -EINVAL;
    if (!p->broken)
        shmq__pool_check_deaths(p);
    uint64_t kept = p->dcount < POOL_DEATHS_KEPT ? p->dcount : POOL_DEATHS_KEPT;
    for (uint64_t i = 0; i < kept; i++) {
        const struct shmq_pool_death *m =
            &p->dlog[(p->dcount - 1 - i) % POOL_DEATHS_KEPT];
        if (ticket == 0 || m->ticket == ticket) {
            *d = *m;
            return 0;
        }
    }
    return -ENOENT;
}

SHMQ_PUBLIC int shmq_pool_worker_pid(const shmq_pool_t *p, unsigned worker)
{
    if (!p || worker >= p->sh.workers)
        return -EINVAL;
    int32_t pid = load_relaxed(&p->sh.ctl->slot[worker].pid);
    return pid > 0 && !p->fs_gone ? (int)pid : -ESRCH;
}

SHMQ_PUBLIC unsigned shmq_pool_workers(const shmq_pool_t *p)
{
    return p ? p->sh.workers : 0;
}
