/* SPDX-License-Identifier: MIT */
/*
 * forkserver.c - the pool's fork server: the one process that forks
 * workers, watches them die, and kills them on request.
 *
 * It is forked once, by shmq_pool_create, and stays single-threaded, so
 * every later fork (respawn after a death, recycling after
 * max_tasks_per_child) happens in a process where no other thread can
 * hold a malloc or stdio lock (CPython gh-90622). Workers are its
 * children, so the host's SIGCHLD disposition and reaping never touch
 * them. It holds a pidfd for each worker from birth (pidfd_open right
 * after fork: the child cannot be reaped before we wait for it, so the
 * pid cannot be reused in between) and polls them with the owner's
 * socket and the owner's pidfd: no signal handler anywhere.
 *
 * A death is logged in the control region (after waitid, so the exit
 * status is known) and announced with a WAKE message on rq, which wakes
 * an owner sleeping in a get. Deaths faster than CRASH_LIMIT per worker
 * per second, or an initializer that fails, break the pool: the fork
 * server kills every worker, logs their deaths, then sets ctl.broken.
 * When the owner dies it kills every worker and exits; the workers also
 * have PR_SET_PDEATHSIG on it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "pool.h"
#include "wait.h"

#define CRASH_LIMIT 10      /* deaths per worker per second */
#define TICK_NS     5000000 /* deadline checks, log backpressure */
#define SEC_NS      1000000000

struct fs {
    const struct pool_shared *sh;
    int sock;
    int owner_fd;
    int pidfd[POOL_MAX_WORKERS];
    bool gone[POOL_MAX_WORKERS]; /* exited on purpose; no respawn */
    pid_t self;
    bool stopping;
    int64_t window_start;
    unsigned window_deaths;
};

static struct pool_slot *slot_of(struct fs *fs, unsigned w)
{
    return &fs->sh->ctl->slot[w];
}

static void spawn(struct fs *fs, unsigned w)
{
    struct pool_slot *s = slot_of(fs, w);
    store_relaxed(&s->running, 0);
    store_relaxed(&s->item, 0);
    store_relaxed(&s->deadline_ns, 0);
    store_relaxed(&s->retiring, 0u);
    store_relaxed(&s->kill_reason, 0u);
    pid_t pid = fork();
    if (pid == 0) {
        close(fs->sock);
        close(fs->owner_fd);
        for (unsigned i = 0; i < fs->sh->workers; i++)
            if (fs->pidfd[i] >= 0)
                close(fs->pidfd[i]);
        shmq__worker_run(fs->sh, w, fs->self);
    }
    /* A failed fork or pidfd_open leaves the slot empty (-1): the tick
     * (every 5 ms) forks again; the slot's jobs wait in its queue. */
    fs->pidfd[w] = pid > 0 ? pidfd_open(pid, 0) : -1;
    if (pid > 0 && fs->pidfd[w] < 0) {
        /* Unwatchable: never leave a second worker on the slot's queue. */
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        pid = 0;
    }
    store_relaxed(&s->pid, pid > 0 ? (int32_t)pid : 0);
}

static int wstatus_of(const siginfo_t *si)
{
    if (si->si_code == CLD_EXITED)
        return (si->si_status & 0xff) << 8;
    return (si->si_status & 0x7f) | (si->si_code == CLD_DUMPED ? 0x80 : 0);
}

/* Wait for the dead worker of slot w; its wait status. */
static int reap(struct fs *fs, unsigned w)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    while (waitid(P_PIDFD, (id_t)fs->pidfd[w], &si, WEXITED) != 0 &&
           errno == EINTR)
        ;
    close(fs->pidfd[w]);
    fs->pidfd[w] = -1;
    return wstatus_of(&si);
}

static void log_death(struct fs *fs, unsigned w, int wstatus)
{
    struct pool_ctl *ctl = fs->sh->ctl;
    struct pool_slot *s = slot_of(fs, w);
    uint64_t n = load_relaxed(&ctl->deaths);
    struct pool_death_rec *d = &ctl->death[n % POOL_DEATH_LOG];
    d->slot = w;
    d->pid = load_relaxed(&s->pid);
    d->wstatus = wstatus;
    d->reason = load_relaxed(&s->kill_reason);
    d->running = load_acquire(&s->running);
    d->item = load_relaxed(&s->item);
    d->seq = n + 1;
    /* release: the owner reads the record after it sees the count. */
    store_release(&ctl->deaths, n + 1);
    struct pool_result_hdr wake = {.kind = PM_WAKE, .slot = w};
    shmq_put_nowait(fs->sh->rq, &wake, sizeof wake);
}

static bool log_full(struct fs *fs)
{
    struct pool_ctl *ctl = fs->sh->ctl;
    uint64_t seen = load_acquire(&ctl->deaths_seen);
    return load_relaxed(&ctl->deaths) - seen >= POOL_DEATH_LOG - 1;
}

static void kill_slot(struct fs *fs, unsigned w)
{
    if (fs->pidfd[w] >= 0)
        pidfd_send_signal(fs->pidfd[w], SIGKILL, NULL, 0);
}

/* Kill and reap every worker, logging the deaths of those that were
 * running a job. */
static void kill_all(struct fs *fs, bool log)
{
    for (unsigned w = 0; w < fs->sh->workers; w++)
        kill_slot(fs, w);
    for (unsigned w = 0; w < fs->sh->workers; w++) {
        if (fs->pidfd[w] < 0)
            continue;
        int st = reap(fs, w);
        if (log)
            log_death(fs, w, st);
        fs->gone[w] = true;
    }
}

static void break_pool(struct fs *fs, uint32_t why)
{
    kill_all(fs, true);
    /* release: every death above is logged before the owner sees it. */
    store_release(&fs->sh->ctl->broken, why);
    struct pool_result_hdr wake = {.kind = PM_WAKE};
    shmq_put_nowait(fs->sh->rq, &wake, sizeof wake);
}

static bool crash_loop(struct fs *fs)
{
    int64_t now = wait_now();
    if (now - fs->window_start > SEC_NS) {
        fs->window_start = now;
        fs->window_deaths = 0;
    }
    return ++fs->window_deaths > CRASH_LIMIT * fs->sh->workers;
}

/* Slot w's worker is dead: log it unless it left on purpose, respawn it
 * unless the queue is drained or the pool broke. */
static void on_exit_of(struct fs *fs, unsigned w)
{
    struct pool_slot *s = slot_of(fs, w);
    int st = reap(fs, w);
    uint32_t retiring = load_acquire(&s->retiring);
    bool on_purpose = WIFEXITED(st) && WEXITSTATUS(st) == POOL_RETIRE_EXIT &&
                      retiring != RETIRE_NO;
    if (on_purpose && retiring == RETIRE_DRAINED) {
        fs->gone[w] = true;
        return;
    }
    if (!on_purpose)
        log_death(fs, w, st);
    if (load_acquire(&s->init_failed)) {
        break_pool(fs, BROKEN_INIT);
        return;
    }
    bool ours = load_relaxed(&s->kill_reason) != KILL_NONE;
    if (!on_purpose && !ours && crash_loop(fs)) {
        break_pool(fs, BROKEN_CRASHLOOP);
        return;
    }
    spawn(fs, w);
}

/* Kill slot w's worker if it still runs `running` (index + 1). */
static void kill_if_running(struct fs *fs, unsigned w, uint64_t running,
                            uint32_t reason)
{
    struct pool_slot *s = slot_of(fs, w);
    uint64_t expect = running;
    if (running == 0 || fs->pidfd[w] < 0)
        return;
    /* Pairs with the worker's clear_running CAS: exactly one wins. */
    if (!cas_acq_rel(&s->running, &expect, running | POOL_KILLED))
        return;
    store_relaxed(&s->kill_reason, reason);
    kill_slot(fs, w);
}

static void check_deadlines(struct fs *fs)
{
    int64_t now = wait_now();
    for (unsigned w = 0; w < fs->sh->workers; w++) {
        struct pool_slot *s = slot_of(fs, w);
        uint64_t r = load_acquire(&s->running);
        int64_t dl = load_relaxed(&s->deadline_ns);
        if (r && !(r & POOL_KILLED) && dl > 0 && now >= dl)
            kill_if_running(fs, w, r, KILL_TIMEOUT);
    }
}

static _Noreturn void leave(struct fs *fs)
{
    kill_all(fs, false);
    _exit(0);
}

static void on_command(struct fs *fs)
{
    struct pool_cmd_msg m;
    ssize_t n = recv(fs->sock, &m, sizeof m, MSG_DONTWAIT);
    if (n == 0)
        leave(fs); /* the owner closed its end: destroy */
    if (n != (ssize_t)sizeof m)
        return;
    if (m.cmd == CMD_KILL && m.slot < fs->sh->workers)
        kill_if_running(fs, m.slot, m.running, m.reason);
    else if (m.cmd == CMD_TERMINATE)
        leave(fs);
    else if (m.cmd == CMD_STOP)
        fs->stopping = true;
}

static bool all_gone(const struct fs *fs)
{
    for (unsigned w = 0; w < fs->sh->workers; w++)
        if (!fs->gone[w])
            return false;
    return true;
}

/* A slot whose fork failed and is to be tried again. */
static bool missing(const struct fs *fs)
{
    if (load_relaxed(&fs->sh->ctl->broken))
        return false;
    for (unsigned w = 0; w < fs->sh->workers; w++)
        if (fs->pidfd[w] < 0 && !fs->gone[w])
            return true;
    return false;
}

static void serve_once(struct fs *fs)
{
    struct pollfd pf[POOL_MAX_WORKERS + 2];
    unsigned n = 0, ws = fs->sh->workers;
    bool backlog = log_full(fs);
    pf[n++] = (struct pollfd){.fd = fs->sock, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = fs->owner_fd, .events = POLLIN};
    for (unsigned w = 0; w < ws; w++)
        pf[n++] = (struct pollfd){.fd = backlog ? -1 : fs->pidfd[w],
                                  .events = POLLIN};
    bool tick = backlog || load_relaxed(&fs->sh->ctl->limits) || missing(fs);
    if (poll(pf, n, tick ? TICK_NS / 1000000 : -1) < 0)
        return; /* EINTR */
    if (pf[1].revents)
        leave(fs);
    if (pf[0].revents)
        on_command(fs);
    for (unsigned w = 0; w < ws; w++)
        if (pf[2 + w].revents && fs->pidfd[w] >= 0)
            on_exit_of(fs, w);
    for (unsigned w = 0; w < ws && missing(fs); w++)
        if (fs->pidfd[w] < 0 && !fs->gone[w])
            spawn(fs, w); /* a fork that failed earlier */
    check_deadlines(fs);
}

_Noreturn void shmq__forkserver_run(const struct pool_shared *sh, int sock)
{
    struct fs fs = {.sh = sh, .sock = sock, .self = getpid()};
    /* The host may ignore SIGCHLD (auto-reaping would hide our workers'
     * statuses) or block signals in the forking thread. */
    signal(SIGCHLD, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    pid_t owner = (pid_t)sh->ctl->owner_pid;
    fs.owner_fd = pidfd_open(owner, 0);
    if (fs.owner_fd < 0 || getppid() != owner)
        _exit(0); /* the owner is gone already */
    prctl(PR_SET_NAME, "shmq-forksrv");
    for (unsigned w = 0; w < sh->workers; w++)
        fs.pidfd[w] = -1;
    for (unsigned w = 0; w < sh->workers; w++)
        spawn(&fs, w);
    for (;;) {
        serve_once(&fs);
        if (fs.stopping && all_gone(&fs)) {
            /* Wake an owner sleeping in join: it looks at our pidfd
             * after every message. */
            struct pool_result_hdr wake = {.kind = PM_WAKE};
            shmq_put_nowait(sh->rq, &wake, sizeof wake);
            _exit(0);
        }
    }
}
