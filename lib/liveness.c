/* SPDX-License-Identifier: MIT */
/*
 * liveness.c - participant slots held by OFD locks, and fork handling.
 *
 * Fork: a child shares its parent's open file descriptions, so it would
 * keep the parent's slot locks alive after the parent died, and its own
 * operations would run under the parent's slot. The atfork child handler
 * therefore closes every inherited lock descriptor and bumps
 * shmq__liveness_epoch; a handle whose reg_epoch is older registers a slot of
 * its own before its next operation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "liveness.h"
#include "ring.h"

uint64_t shmq__liveness_epoch = 1;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static struct shmq *registry; /* handles of this process */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
}

static void atfork_child(void)
{
    for (struct shmq *q = registry; q; q = q->next) {
        if (q->lock_fd >= 0)
            close(q->lock_fd);
        q->lock_fd = -1;
    }
    store_relaxed(&shmq__liveness_epoch, shmq__liveness_epoch + 1);
    pthread_mutex_unlock(&registry_lock);
}

static void install_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static int lock_slot(int fd, short type, int cmd, unsigned slot)
{
    struct flock fl = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = SHMQ_LOCK_BASE + (off_t)slot,
        .l_len = 1,
    };
    if (fcntl(fd, cmd, &fl) < 0)
        return -errno;
    return cmd == F_OFD_GETLK ? fl.l_type : 0;
}

/* A description of the region's file that nobody else shares. */
static int open_private(int fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int lfd = open(path, O_RDWR | O_CLOEXEC);
    return lfd < 0 ? -errno : lfd;
}

static int try_slot(struct shmq *q, unsigned slot)
{
    int rc = lock_slot(q->lock_fd, F_WRLCK, F_OFD_SETLK, slot);
    if (rc < 0)
        return rc;
    struct shmq_participant *p = &q->parts[slot];
    /* A slot left active was held by a process that died: its records
     * are still marked with this slot number. */
    if (load_acquire(&p->state) != PART_FREE)
        shmq__ring_recover_owner(q, slot);
    store_relaxed(&p->pid, (uint32_t)getpid());
    store_release(&p->state, PART_ACTIVE);
    q->slot = slot;
    return 0;
}

/* Free-looking slots first (one fcntl each, normally the first one
 * wins), then slots whose holders may have died. */
static int take_slot(struct shmq *q)
{
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned s = 0; s < SHMQ_PARTICIPANTS; s++) {
            bool looks_free = load_relaxed(&q->parts[s].state) == PART_FREE;
            if (looks_free != (pass == 0))
                continue;
            int rc = try_slot(q, s);
            if (rc == 0)
                return 0;
            if (rc != -EAGAIN && rc != -EACCES)
                return rc;
        }
    }
    return -EUSERS;
}

static int register_locked(struct shmq *q)
{
    if (q->lock_fd < 0) {
        int lfd = open_private(q->fd);
        if (lfd < 0)
            return lfd;
        q->lock_fd = lfd;
    }
    int rc = take_slot(q);
    if (rc < 0) {
        close(q->lock_fd);
        q->lock_fd = -1;
        return rc;
    }
    store_release(&q->reg_epoch, load_relaxed(&shmq__liveness_epoch));
    return 0;
}

int shmq__liveness_register(struct shmq *q)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&registry_lock);
    int rc = register_locked(q);
    if (rc == 0) {
        q->prev = NULL;
        q->next = registry;
        if (registry)
            registry->prev = q;
        registry = q;
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

int shmq__liveness_ensure(struct shmq *q)
{
    if (shmq__liveness_current(q))
        return 0;
    pthread_mutex_lock(&registry_lock);
    int rc = shmq__liveness_current(q) ? 0 : register_locked(q);
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

void shmq__liveness_unregister(struct shmq *q)
{
    pthread_mutex_lock(&registry_lock);
    /* Only the process that registered owns the slot: a child that
     * inherited q must not free its parent's slot. */
    if (shmq__liveness_current(q) && q->lock_fd >= 0)
        store_release(&q->parts[q->slot].state, PART_FREE);
    if (q->lock_fd >= 0)
        close(q->lock_fd);
    q->lock_fd = -1;
    if (q->prev)
        q->prev->next = q->next;
    else if (registry == q)
        registry = q->next;
    if (q->next)
        q->next->prev = q->prev;
    pthread_mutex_unlock(&registry_lock);
}

bool shmq__liveness_dead(const struct shmq *q, unsigned slot)
{
    /* Our own lock does not conflict with our own description, so the
     * kernel would call it free: we are alive by definition. */
    if (slot == q->slot || q->lock_fd < 0)
        return false;
    /* Only a write lock, which needs the file open for writing, says a
     * participant lives: a read lock is all that read access can take,
     * and must not keep a dead slot's records from being recovered. */
    int type = lock_slot(q->lock_fd, F_WRLCK, F_OFD_GETLK, slot);
    return type == F_UNLCK || type == F_RDLCK;
}
