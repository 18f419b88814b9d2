/* SPDX-License-Identifier: MIT */
/*
 * transport_pipe.c - an anonymous pipe, what a C programmer reaches for
 * first. The pipe buffer is raised to 1 MiB (F_SETPIPE_SZ) so it is not
 * handicapped by the 64 KiB default. A pipe has no message boundaries:
 * with several writers or readers, messages stay whole only up to
 * PIPE_BUF (4 KiB), so larger multi-process cells are not applicable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench.h"

struct pipe_priv {
    int fd[2];
};

static const char *pipe_usable(const struct cell *c)
{
    if ((c->producers > 1 || c->consumers > 1) && c->size > PIPE_BUF)
        return "n/a: pipe writes above PIPE_BUF interleave";
    return NULL;
}

static int pipe_setup(struct chan *ch)
{
    struct pipe_priv *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    if (pipe2(p->fd, O_CLOEXEC) < 0) {
        int e = errno;
        free(p);
        return -e;
    }
    (void)fcntl(p->fd[1], F_SETPIPE_SZ, 1 << 20);
    ch->priv = p;
    return 0;
}

static int pipe_attach(struct chan *ch, enum role role, int idx)
{
    ch->role = role;
    ch->role_index = idx;
    return 0;
}

static int pipe_send(struct chan *ch, const void *buf, size_t len)
{
    struct pipe_priv *p = ch->priv;
    const char *b = buf;
    while (len > 0) {
        ssize_t n = write(p->fd[1], b, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

static int pipe_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct pipe_priv *p = ch->priv;
    size_t want = ch->cell->size, got = 0;
    int64_t spin = cell_spin_ns(ch->cell);
    (void)cap;
    while (got < want) {
        if (spin)
            fd_wait_readable(p->fd[0], spin);
        ssize_t n = read(p->fd[0], (char *)buf + got, want - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return RECV_END;
        got += (size_t)n;
    }
    *len = got;
    return 0;
}

static void pipe_detach(struct chan *ch)
{
    (void)ch;
}

static void pipe_teardown(struct chan *ch)
{
    struct pipe_priv *p = ch->priv;
    close(p->fd[0]);
    close(p->fd[1]);
    free(p);
}

const struct transport transport_pipe = {
    .name = "pipe",
    .label = "pipe",
    .kind = TK_PEER,
    .usable = pipe_usable,
    .setup = pipe_setup,
    .attach = pipe_attach,
    .send = pipe_send,
    .recv = pipe_recv,
    .detach = pipe_detach,
    .teardown = pipe_teardown,
};
