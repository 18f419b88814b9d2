/* SPDX-License-Identifier: MIT */
/*
 * transport_boost.c - boost::interprocess::message_queue, what a C++
 * programmer would pick: a named shared-memory queue of fixed-size slots
 * behind a process-shared mutex and condition variables (boost_mq.cpp).
 * The queue holds 8 MiB of messages or 4096 of them, whichever is fewer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench.h"

#ifdef HAVE_BOOST
int bmq_create(const char *name, size_t max_msgs, size_t max_size);
void *bmq_open(const char *name);
int bmq_send(void *q, const void *buf, size_t len);
int bmq_recv(void *q, void *buf, size_t cap, size_t *len, int try_only);
void bmq_close(void *q);
void bmq_remove(const char *name);

struct boost_priv {
    char name[64];
    void *q;
};

static int boost_setup(struct chan *ch)
{
    static unsigned serial;
    struct boost_priv *p = calloc(1, sizeof(*p));
    size_t depth = (8u << 20) / ch->cell->size;
    if (!p)
        return -ENOMEM;
    depth = depth > 4096 ? 4096 : depth < 2 ? 2 : depth;
    snprintf(p->name, sizeof(p->name), "shmq-bench-boost-%d-%u", (int)getpid(),
             serial++);
    int rc = bmq_create(p->name, depth, ch->cell->size);
    if (rc < 0) {
        free(p);
        return rc;
    }
    ch->priv = p;
    return 0;
}

static int boost_attach(struct chan *ch, enum role role, int idx)
{
    struct boost_priv *p = ch->priv;
    ch->role = role;
    ch->role_index = idx;
    p->q = bmq_open(p->name);
    return p->q ? 0 : -ENOENT;
}

static int boost_send(struct chan *ch, const void *buf, size_t len)
{
    struct boost_priv *p = ch->priv;
    return bmq_send(p->q, buf, len);
}

static int boost_recv(struct chan *ch, void *buf, size_t cap, size_t *len)
{
    struct boost_priv *p = ch->priv;
    int64_t spin = cell_spin_ns(ch->cell);
    (void)cap;
    if (spin) {
        uint64_t end = now_ns() + (uint64_t)spin;
        do {
            int rc = bmq_recv(p->q, buf, ch->cell->size, len, 1);
            if (rc <= 0)
                return rc;
        } while (now_ns() < end);
    }
    return bmq_recv(p->q, buf, ch->cell->size, len, 0);
}

static void boost_detach(struct chan *ch)
{
    struct boost_priv *p = ch->priv;
    bmq_close(p->q);
    p->q = NULL;
}

static void boost_teardown(struct chan *ch)
{
    struct boost_priv *p = ch->priv;
    bmq_remove(p->name);
    free(p);
}

const struct transport transport_boost = {
    .name = "boost",
    .label = "Boost.IPC mq",
    .kind = TK_PEER,
    .setup = boost_setup,
    .attach = boost_attach,
    .send = boost_send,
    .recv = boost_recv,
    .detach = boost_detach,
    .teardown = boost_teardown,
};
#else
const struct transport transport_boost = {.name = NULL};
#endif
