/* SPDX-License-Identifier: MIT */
/*
 * pool_owner.h - the owner's side of a pool: its handle, the tickets it
 * gave out, the jobs it put on each worker's queue, and the map in
 * progress. Private to the owner process (never in shared memory).
 *
 *   pool.c        the public calls
 *   pool_track.c  bookkeeping: tickets and jobs
 *   pool_events.c rq messages, deaths, waiting (pump)
 *   pool_map.c    map: batching, bounded in-flight, re-dispatch
 */
#ifndef SHMQ_POOL_OWNER_H
#define SHMQ_POOL_OWNER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "pool.h"
#include "wait.h"

#define POOL_TICKET_BITS   13
#define POOL_TICKETS       (1u << POOL_TICKET_BITS) /* uncollected at most */
#define POOL_JOBS_PER_SLOT 1024u /* jobs in flight per worker; power of 2 */
#define POOL_INLINE        48u   /* results this small need no malloc */
#define POOL_DEATHS_KEPT   64u   /* shmq_pool_death's memory */
#define POOL_BATCH_MAX     256u  /* items per map batch */

enum entry_state { E_FREE, E_PENDING, E_DONE };

struct pool_entry {
    uint64_t ticket; /* 0 when free */
    uint64_t index;  /* job index in tq[slot] */
    void *data;      /* the result, when longer than POOL_INLINE */
    uint32_t len;
    int32_t status;
    uint32_t slot;
    uint32_t state; /* enum entry_state */
    unsigned char inl[POOL_INLINE];
};

struct pool_jobrec {
    uint64_t ticket; /* TASK */
    uint64_t gen;    /* BATCH: the map's generation */
    uint32_t kind;   /* enum pool_job; 0 once resolved */
    uint32_t batch;  /* BATCH: batch number in the map */
};

struct pool_slotjobs {
    struct pool_jobrec *ring; /* POOL_JOBS_PER_SLOT, by index */
    uint64_t head;            /* oldest unresolved index */
    uint64_t tail;            /* index of the next job put */
    bool fence_owed;          /* after a death, until a fence is put */
};

struct pool_batch {
    size_t first;
    uint32_t count;
    uint32_t left; /* items without a status */
    bool used;
    uint64_t bits[POOL_BATCH_MAX / 64]; /* items with a status */
};

struct pool_range {
    size_t first, count;
};

struct pool_map {
    uint64_t gen;
    shmq_task_fn fn;
    const struct iovec *args;
    size_t n;
    struct iovec *results;
    int *statuses;
    size_t next; /* first item never dispatched */
    size_t done; /* items with a status */
    size_t chunk;
    struct pool_batch *batch;
    unsigned nbatch;         /* in-flight bound */
    struct pool_range *redo; /* items to dispatch again */
    size_t nredo, redo_cap;
    int error; /* -ENOMEM while growing redo */
};

struct shmq_pool {
    struct pool_shared sh;
    int ctl_fd;
    int sock; /* to the fork server */
    int fs_pidfd;
    pid_t fs_pid;
    pid_t owner; /* the process that created the pool */
    bool closed, terminated, fs_gone;
    uint64_t fs_polled;   /* fs_dead calls, to ask the pidfd now and then */
    uint32_t broken;      /* enum pool_broken, once seen */
    uint64_t next_ticket; /* generation of the last ticket given out */
    uint32_t *freeq;      /* free entries, oldest freed first (a ring) */
    uint64_t free_head, free_tail;
    size_t uncollected; /* entries not free */
    size_t pending;     /* entries waiting for their result */
    struct pool_entry *tab;
    uint64_t *done; /* tickets in completion order (a ring) */
    size_t done_head, done_tail, done_cap;
    struct pool_slotjobs *jobs;
    unsigned rr; /* where the least-loaded search starts */
    uint64_t deaths_seen;
    struct shmq_pool_death dlog[POOL_DEATHS_KEPT];
    uint64_t dcount;
    struct pool_map *map;
    uint64_t map_gen;
    bool in_deaths;
};

/* pool_track.c */
struct pool_jobrec *shmq__pool_job_at(struct shmq_pool *p, unsigned w,
                                      uint64_t index);
void shmq__pool_job_resolve(struct shmq_pool *p, unsigned w,
                            struct pool_jobrec *j);
void shmq__pool_job_fail(struct shmq_pool *p, unsigned w, struct pool_jobrec *j,
                         int64_t item, int status);
void shmq__pool_put_fences(struct shmq_pool *p);
bool shmq__pool_jobs_idle(const struct shmq_pool *p);
struct pool_entry *shmq__pool_entry(struct shmq_pool *p, uint64_t ticket);
struct pool_entry *shmq__pool_ticket_new(struct shmq_pool *p);
void shmq__pool_ticket_commit(struct shmq_pool *p);
void shmq__pool_complete(struct shmq_pool *p, struct pool_entry *e, int status,
                         const void *data, size_t len);
int shmq__pool_deliver(struct shmq_pool *p, struct pool_entry *e, void *buf,
                       size_t cap, size_t *len, int *status);
struct pool_entry *shmq__pool_done_peek(struct shmq_pool *p);
void shmq__pool_done_pop(struct shmq_pool *p);
int shmq__pool_pick_slot(struct shmq_pool *p);
int shmq__pool_put_job(struct shmq_pool *p, unsigned w, struct iovec *iov,
                       int n, const struct pool_jobrec *rec, uint64_t *index);
void shmq__pool_record_job(struct shmq_pool *p, unsigned w,
                           const struct pool_jobrec *rec, uint64_t *index);
/* pool_events.c */
int shmq__pool_pump(struct shmq_pool *p, wait_deadline_t until, bool nowait);
void shmq__pool_check_deaths(struct shmq_pool *p);
void shmq__pool_cancel_all(struct shmq_pool *p);

/* pool_map.c */
void shmq__pool_map_batch(struct shmq_pool *p, const struct pool_jobrec *j,
                          const struct pool_result_hdr *h,
                          const unsigned char *msg, size_t len);
void shmq__pool_map_fail(struct shmq_pool *p, const struct pool_jobrec *j,
                         int64_t item, int status);
void shmq__pool_map_cancel(struct shmq_pool *p);
int shmq__pool_map_run(struct shmq_pool *p, struct pool_map *m,
                       wait_deadline_t until, bool nowait);

#endif /* SHMQ_POOL_OWNER_H */
