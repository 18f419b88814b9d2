/* SPDX-License-Identifier: MIT */
/*
 * evloop.h - what the event-loop paths (uring.c, pollfd.c) share: which
 * path is in use, the event words, and "is the event true now".
 *
 * An armed io_uring futex wait or a helper thread is treated exactly like
 * a thread sleeping in shmq_get: it announces itself with wait_prepare(),
 * re-checks the queue, and only then waits for the word to move. After
 * every wakeup it looks again and re-arms, so a wakeup that reaches only
 * some of the waiters (or none, for a word scribbled on) never hides a
 * message for good.
 */
#ifndef SHMQ_EVLOOP_H
#define SHMQ_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* The futex flags and opcode liburing 2.3 and older uapi headers lack. */
#define SHMQ_FUTEX2_SIZE_U32      0x02u
#define SHMQ_IORING_OP_FUTEX_WAIT 51

/* Path shmq_uring_arm uses in this process (SHMQ_EVLOOP_*); probes once. */
int shmq__evloop_path(void);

/* wait_prepare that always changes the word (see evloop.c): the value
 * to wait on; re-check the condition after it. */
uint32_t shmq__ev_announce(uint64_t *event);

/* -EINVAL unless events is exactly SHMQ_EV_READABLE or SHMQ_EV_WRITABLE. */
int shmq__ev_check(unsigned events);

/* The futex event word waiters of `events` sleep on. */
uint64_t *shmq__ev_word(struct shmq *q, unsigned events);

/* SHMQ_EV_* bits true now for `events` (SHMQ_EV_CLOSED once closed), or
 * 0. A caller that armed with wait_prepare() calls this after it. */
int shmq__ev_ready(struct shmq *q, unsigned events);

#endif /* SHMQ_EVLOOP_H */
