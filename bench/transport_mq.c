/* SPDX-License-Identifier: MIT */
/*
 * transport_mq.c - a POSIX message queue (mq_open), the kernel's own
 * multi-process message queue. Its limits are small by default (10
 * messages of 8 KiB); mq_limits_raise() lifts /proc/sys/fs/mqueue and
 * RLIMIT_MSGQUEUE where this process may, restores them at exit, and
 * says what it could not do. Each queue holds up to 8 MiB (as shmq's) or
 * msg_max messages, whichever is fewer, within RLIMIT_MSGQUEUE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

static long msg_max = 10, msgsize_max = 8192;
static unsigned long long mq_rlimit = 819200; /* bytes of all our queues */
static long orig_msg_max = -1, orig_msgsize_max = -1;
static char mq_status[512] = "not checked";

static long read_long(const char *path)
{
    long v = -1;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static int write_long(const char *path, long v)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%ld\n", v) > 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

#define P_MSG  "/proc/sys/fs/mqueue/msg_max"
#define P_SIZE "/proc/sys/fs/mqueue/msgsize_max"

/* Async-signal-safe: also called from the SIGINT/SIGTERM handler. */
static void write_raw(const char *path, long v)
{
    char buf[24];
    int n = 0;
    char tmp[24];
    int t = 0;
    do
        tmp[t++] = (char)('0' + v % 10);
    while ((v /= 10) > 0 && t < 20);
    while (t > 0)
        buf[n++] = tmp[--t];
    buf[n++] = '\n';
    int fd = open(path, O_WRONLY);
    if (fd >= 0) {
        ssize_t w = write(fd, buf, (size_t)n);
        (void)w;
        close(fd);
    }
}

static void mq_limits_restore(void)
{
    if (orig_msg_max > 0)
        write_raw(P_MSG, orig_msg_max);
    if (orig_msgsize_max > 0)
        write_raw(P_SIZE, orig_msgsize_max);
}

static void on_signal(int sig)
{
    mq_limits_restore();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Raise the limits so that 1 MiB messages and deep queues are possible.
 * Returns a line for the report. */
const char *mq_limits_raise(void)
{
    long m = read_long(P_MSG), s = read_long(P_SIZE);
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    int raised = 0, denied = 0;

    if (m > 0)
        msg_max = m;
    if (s > 0)
        msgsize_max = s;
    if (msg_max < 4096) {
        if (write_long(P_MSG, 4096) == 0) {
            orig_msg_max = msg_max;
            msg_max = 4096;
            raised = 1;
        } else {
            denied = 1;
        }
    }
    if (msgsize_max < BENCH_MAX_MSG) {
        if (write_long(P_SIZE, BENCH_MAX_MSG) == 0) {
            orig_msgsize_max = msgsize_max;
            msgsize_max = BENCH_MAX_MSG;
            raised = 1;
        } else {
            denied = 1;
        }
    }
    int rl_denied = setrlimit(RLIMIT_MSGQUEUE, &rl) != 0;
    if (rl_denied) {
        getrlimit(RLIMIT_MSGQUEUE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_MSGQUEUE, &rl);
    }
    getrlimit(RLIMIT_MSGQUEUE, &rl);
    mq_rlimit = rl.rlim_cur;
    if (raised) {
        atexit(mq_limits_restore);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    char rlbuf[200] = "unlimited";
    if (rl.rlim_cur != RLIM_INFINITY)
        snprintf(rlbuf, sizeof(rlbuf), "%llu KiB%s",
                 (unsigned long long)rl.rlim_cur >> 10,
                 rl_denied ? " (not allowed to raise it here: no "
                             "CAP_SYS_RESOURCE; queue depth cut to fit, "
                             "cells that cannot fit are n/a)"
                           : "");
    snprintf(mq_status, sizeof(mq_status),
             "POSIX mq: msg_max %ld, msgsize_max %ld%s%s; RLIMIT_MSGQUEUE %s",
             msg_max, msgsize_max,
             raised ? " (raised for this run, restored at exit)" : "",
             denied ? " (not allowed to raise /proc/sys/fs/mqueue)" : "",
             rlbuf);
    return mq_status;
}

struct mq_priv {
    char name[64];
    mqd_t q;
};

/* Messages per queue: 8 MiB worth (as shmq) or msg_max, and the two
 * queues of a ping-pong must fit RLIMIT_MSGQUEUE (the kernel charges
 * each message its size plus about 100 bytes of bookkeeping). */
static long mq_depth(const struct cell *c)
{
    long depth = (long)((8u << 20) / c->size);
    if (depth > msg_max)
        depth = msg_max;
    if (mq_rlimit != (unsigned long long)RLIM_INFINITY) {
        long fit = (long)(mq_rlimit / 2 / (c->size + 128));
        if (depth > fit)
            depth = fit;
    }
    return depth;
}

static const char *mq_usable(const struct cell *c)
{
    if ((long)c->size > msgsize_max)
        return "n/a: message above fs.mqueue.msgsize_max (not allowed to "
               "raise)";
    if (mq_depth(c) < 1)
        return "n/a: RLIMIT_MSGQUEUE too small for one message";
    return NULL;
}

static int mq_setup(struct chan *ch)
{
    static unsigned serial;
    struct mq_priv *p = malloc(sizeof(*p));
    struct mq_attr a = {0};

    if (!p)
        return -ENOMEM;
    a.mq_maxmsg = mq_depth(ch->cell);
    a.mq_msgsize = (long)ch->cell->size;
    snprintf(p->name, sizeof(p->name), "/shmq-bench-%d-%u", (int)getpid(),
             serial++);
    p->q = mq_open(p->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &a);
    if (p->q == (mqd_t)-1) {
        int e = errno;
        free(p);
        return -e;
    }
    mq_unlink(p->name);
    ch->priv = p;
    return 0;
}

static int mq_attach(struct chan *ch, enum role role, int idx)
{
    ch->role = role;
    ch->role_index = idx;
    return 0;
}

static int mq_tsend(struct chan *ch, const void *buf, size_t len)
{
    struct mq_priv *p = ch->priv;
    while (mq_send(p->q, buf, len, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

static int mq_trecv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct mq_priv *p = ch->priv;
    int64_t spin = cell_spin_ns(ch->cell);
    (void)cap;
    for (;;) {
        if (spin)
            fd_wait_readable((int)p->q, spin);
        ssize_t n = mq_receive(p->q, buf, ch->cell->size, NULL);
        if (n >= 0) {
            *len = (size_t)n;
            return 0;
        }
        if (errno != EINTR)
            return -errno;
    }
}

static void mq_detach(struct chan *ch)
{
    (void)ch;
}

static void mq_teardown(struct chan *ch)
{
    struct mq_priv *p = ch->priv;
    mq_close(p->q);
    free(p);
}

const struct transport transport_mq = {
    .name = "mq",
    .label = "POSIX mq",
    .kind = TK_PEER,
    .usable = mq_usable,
    .setup = mq_setup,
    .attach = mq_attach,
    .send = mq_tsend,
    .recv = mq_trecv,
    .detach = mq_detach,
    .teardown = mq_teardown,
};
