/* SPDX-License-Identifier: MIT */
/*
 * transport_seqpacket.c - an AF_UNIX SOCK_SEQPACKET socketpair: message
 * boundaries kept by the kernel, any number of senders and receivers on
 * the two ends. The send buffer is set to 8 MiB (SO_SNDBUFFORCE when
 * allowed, as root; SO_SNDBUF up to wmem_max otherwise), the same bytes
 * in flight as the shmq queue; a message must fit in it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

struct sp_priv {
    int fd[2];
};

static int sp_setup(struct chan *ch)
{
    struct sp_priv *p = malloc(sizeof(*p));
    int sz = 8 << 20, got = 0;
    socklen_t sl = sizeof(got);
    if (!p)
        return -ENOMEM;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p->fd) < 0) {
        int e = errno;
        free(p);
        return -e;
    }
    for (int i = 0; i < 2; i++)
        if (setsockopt(p->fd[i], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) <
            0)
            (void)setsockopt(p->fd[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    getsockopt(p->fd[0], SOL_SOCKET, SO_SNDBUF, &got, &sl);
    ch->priv = p;
    /* The kernel doubles the value and keeps some for its overhead. */
    if ((size_t)got < ch->cell->size + 4096) {
        close(p->fd[0]);
        close(p->fd[1]);
        free(p);
        ch->priv = NULL;
        return -EMSGSIZE;
    }
    return 0;
}

static int sp_attach(struct chan *ch, enum role role, int idx)
{
    ch->role = role;
    ch->role_index = idx;
    return 0;
}

static int sp_send(struct chan *ch, const void *buf, size_t len)
{
    struct sp_priv *p = ch->priv;
    for (;;) {
        ssize_t n = send(p->fd[0], buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (size_t)n == len ? 0 : -EIO;
        if (errno != EINTR)
            return -errno;
    }
}

static int sp_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct sp_priv *p = ch->priv;
    int64_t spin = cell_spin_ns(ch->cell);
    for (;;) {
        if (spin)
            fd_wait_readable(p->fd[1], spin);
        ssize_t n = recv(p->fd[1], buf, cap, 0);
        if (n > 0) {
            *len = (size_t)n;
            return 0;
        }
        if (n == 0)
            return RECV_END;
        if (errno != EINTR)
            return -errno;
    }
}

static void sp_detach(struct chan *ch)
{
    (void)ch;
}

static void sp_teardown(struct chan *ch)
{
    struct sp_priv *p = ch->priv;
    close(p->fd[0]);
    close(p->fd[1]);
    free(p);
}

const struct transport transport_seqpacket = {
    .name = "seqpacket",
    .label = "socketpair",
    .kind = TK_PEER,
    .setup = sp_setup,
    .attach = sp_attach,
    .send = sp_send,
    .recv = sp_recv,
    .detach = sp_detach,
    .teardown = sp_teardown,
};
