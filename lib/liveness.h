/* SPDX-License-Identifier: MIT */
/*
 * liveness.h - who is attached, and whether they are still alive.
 *
 * Each handle holds an OFD lock on one byte (its participant slot) of the
 * region's file, through an open file description of its own. The kernel
 * drops the lock when the process dies, at once and whatever it was
 * doing; a live process keeps it however long it is descheduled, and pid
 * reuse cannot fake it. A slot number in a descriptor word therefore
 * names an owner whose death anyone can observe with one F_OFD_GETLK.
 */
#ifndef SHMQ_LIVENESS_H
#define SHMQ_LIVENESS_H

#include <stdbool.h>

#include "internal.h"

/* Take a participant slot for q in this process; recover the records of
 * a dead previous holder of that slot first. */
int shmq__liveness_register(struct shmq *q);

/* Registered in this process (not only inherited over fork)? Fast. */
static inline bool shmq__liveness_current(const struct shmq *q)
{
    extern uint64_t shmq__liveness_epoch;
    return likely(load_acquire(&q->reg_epoch) ==
                  load_relaxed(&shmq__liveness_epoch));
}

/* Register again if q was inherited over fork. */
int shmq__liveness_ensure(struct shmq *q);

/* Give the slot back (clean release) and forget q. */
void shmq__liveness_unregister(struct shmq *q);

/* true when the slot's holder is gone: nobody holds a write lock on its
 * byte. A read lock (which read access alone can take) proves nothing. */
bool shmq__liveness_dead(const struct shmq *q, unsigned slot);

#endif /* SHMQ_LIVENESS_H */
