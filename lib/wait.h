/* SPDX-License-Identifier: MIT */
/*
 * wait.h - futex event counts, deadlines and the adaptive spin.
 *
 * An event is the low 32 bits of a shared word: a counter in bits 0..30
 * and a "sleepers" flag in bit 31 (as Concurrency Kit's ck_ec). Sleepers
 * set the flag; a signaller pays for a futex wake only when it is set,
 * and wakes one sleeper per message (or record's room); the first wake
 * that finds nobody clears the flag. A queue nobody sleeps on costs no
 * system call at all (wait.c).
 */
#ifndef SHMQ_WAIT_H
#define SHMQ_WAIT_H

#include <stdbool.h>
#include <stdint.h>

/* The library's internal symbols are shmq__ names; these short ones
 * are what lib/ calls them by. */
#define wait_now         shmq__wait_now
#define wait_deadline    shmq__wait_deadline
#define wait_prepare     shmq__wait_prepare
#define wait_sleep       shmq__wait_sleep
#define wait_signal_slow shmq__wait_signal_slow
#define wait_broadcast   shmq__wait_broadcast
#define wait_signal_all  shmq__wait_signal_all

/* Absolute CLOCK_MONOTONIC time in ns; -1 means no deadline. */
typedef int64_t wait_deadline_t;

int64_t wait_now(void);
wait_deadline_t wait_deadline(int64_t timeout_ns);

/* Announce a sleeper; returns the value to pass to wait_sleep. The
 * caller must re-check its condition after this and before sleeping. */
uint32_t wait_prepare(uint64_t *event);

/* Sleep while the event still holds `seen`, until `until` (absolute,
 * -1 = forever). Spurious returns are fine; signals are absorbed.
 * 0, or -ETIMEDOUT once `until` has passed. */
int wait_sleep(uint64_t *event, uint32_t seen, wait_deadline_t until);

#define EVENT_SLEEPERS 0x80000000u

/* Does anybody sleep on the event (or is about to)? seq_cst: the
 * signaller's part of the Dekker argument (wait.c), after the seq_cst
 * free of a record. */
static inline bool wait_has_sleepers(uint64_t *event)
{
    return __atomic_load_n((uint32_t *)event, __ATOMIC_SEQ_CST) &
           EVENT_SLEEPERS;
}

/* The part of wait_signal that wakes. */
void wait_signal_slow(uint64_t *event, uint32_t seen);

/* Wake every sleeper if there is one (join's event, recovery). */
void wait_signal_all(uint64_t *event);

/* Wake one sleeper if there is one: a message (or a record's room) is
 * for one waiter. One load when nobody sleeps. */
static inline void wait_signal(uint64_t *event)
{
    /* seq_cst: the signaller's part of the Dekker argument (wait.c), after
     * the seq_cst step that published what the sleepers wait for. The
     * futex is the low half of the word (little-endian). */
    uint32_t v = __atomic_load_n((uint32_t *)event, __ATOMIC_SEQ_CST);
    if (v & EVENT_SLEEPERS)
        wait_signal_slow(event, v);
}

/* Wake every sleeper, flag or not (close). */
void wait_broadcast(uint64_t *event);

/* Pause the CPU briefly inside a spin loop. */
static inline void wait_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

#endif /* SHMQ_WAIT_H */
