/* SPDX-License-Identifier: MIT */
/*
 * pool.h - what the pool's three parts share: the owner (pool.c, the
 * public calls), the fork server (forkserver.c) and the workers
 * (pool_worker.c).
 *
 * Transport. Each worker slot w has a task queue of its own, tq[w]: the
 * owner is its only producer and the slot's worker its only consumer, so
 * it is strictly FIFO and every message carries its index in that
 * queue. All workers put their results into one result queue, rq. The
 * owner records, per slot, the jobs it put in index order; a worker
 * records in the control region the index of the job it runs. So which
 * task a dead worker held is never a guess:
 *   - the job it recorded as running, unless its result arrived first
 *     (results it put before dying are in rq when its death is seen);
 *   - a job it took but did not record yet (killed in that window):
 *     the next worker of the slot sees the gap in the indices and says
 *     so with a LOST message; the owner puts a FENCE job after every
 *     death so that the gap is seen even if no other job follows.
 * Jobs behind it in tq[w] are simply run by the slot's next worker.
 *
 * Control region (memfd, shared by owner, fork server and workers):
 * every field says who writes it. Values read from it are bounds-checked
 * by their readers; a scribbled region can make tasks fail, not make
 * the owner crash or hang.
 */
#ifndef SHMQ_POOL_H
#define SHMQ_POOL_H

#include <stdint.h>
#include <sys/types.h>

#include "shmq.h"

#define POOL_MAGIC       0x6c6f6f7071686d73ull /* "shmqpool" */
#define POOL_MAX_WORKERS 256u
#define POOL_DEATH_LOG   64u /* deaths the control region remembers */
#define POOL_CANCEL_SET  64u /* cancelled tickets workers skip */

/* running: the job index + 1 and this flag when the fork server killed
 * the worker for it (time limit, cancel). */
#define POOL_KILLED (1ull << 63)

/* Why the fork server killed a worker. */
enum pool_kill { KILL_NONE, KILL_TIMEOUT, KILL_CANCEL, KILL_TERMINATE };

/* Why the pool broke (ctl.broken). */
enum pool_broken { BROKEN_NO, BROKEN_INIT, BROKEN_CRASHLOOP, BROKEN_FS };

struct pool_slot {
    /* worker: */
    uint64_t running;    /* index + 1 of the job it runs, 0 between jobs */
    uint64_t item;       /* batch jobs: item of the batch being run */
    uint64_t taken;      /* next index it expects from tq[w] */
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = no time limit */
    uint32_t init_failed;
    uint32_t retiring; /* enum pool_retire: exits on purpose */
    /* fork server: */
    int32_t pid;
    uint32_t kill_reason; /* enum pool_kill, for the job in running */
    uint64_t pad[2];
};
_Static_assert(sizeof(struct pool_slot) == 64, "one cache line per slot");

struct pool_death_rec { /* written by the fork server */
    uint64_t seq;       /* 1 + position in the log once complete */
    uint32_t slot;
    int32_t pid;
    int32_t wstatus;  /* as waitpid(2) */
    uint32_t reason;  /* enum pool_kill */
    uint64_t running; /* the slot's running word at death */
    uint64_t item;
};

struct pool_ctl {
    uint64_t magic;
    uint32_t workers;
    int32_t owner_pid;
    uint32_t broken;      /* fork server: enum pool_broken */
    uint32_t limits;      /* owner: a time limit was used: fork server ticks */
    uint64_t deaths;      /* fork server: deaths logged (release) */
    uint64_t deaths_seen; /* owner: deaths it has read; the log's room */
    uint64_t cancel_seq;  /* owner: cancel[] entries written */
    uint64_t cancel[POOL_CANCEL_SET]; /* owner: ticket; workers skip it */
    struct pool_death_rec death[POOL_DEATH_LOG];
    struct pool_slot slot[]; /* workers entries, 64-byte aligned */
};

/* Job kinds on tq[w]. */
enum pool_job { JOB_TASK = 1, JOB_BATCH, JOB_FENCE };

struct pool_task_hdr {
    uint64_t index;  /* position in tq[w] */
    uint64_t ticket; /* TASK: ticket; BATCH: first item of the map */
    uint64_t gen;    /* BATCH: the map call's generation */
    uintptr_t fn;
    int64_t limit_ns; /* 0 = none */
    uint32_t kind;
    uint32_t count; /* BATCH: items, then count uint32 lengths */
};

/* Message kinds on rq. */
/* PM_FENCE: a fence job was taken (it resolves the owner's record). */
enum pool_msg { PM_RESULT = 1, PM_BATCH, PM_LOST, PM_WAKE, PM_FENCE };

struct pool_result_hdr {
    uint64_t ticket; /* RESULT: ticket; BATCH: first item; LOST: first index */
    uint64_t index;  /* job index in tq[slot]; LOST: end of the gap */
    uint64_t gen;    /* BATCH: map generation */
    uint32_t kind;
    uint32_t slot;
    int32_t status; /* RESULT */
    uint32_t count; /* BATCH: items; each as pool_item_hdr + data */
};

struct pool_item_hdr { /* one result inside a BATCH message, 8-aligned */
    int32_t status;
    uint32_t len;
};

#define POOL_ALIGN8(x) (((x) + 7u) & ~(size_t)7u)

/* Fork server commands, over the owner's socket. */
/* CMD_LIMITS: time limits are in use from now on: poll with a tick. */
enum pool_cmd { CMD_KILL = 1, CMD_TERMINATE, CMD_STOP, CMD_LIMITS };
struct pool_cmd_msg {
    uint32_t cmd;
    uint32_t slot;
    uint64_t running; /* CMD_KILL: kill only while the slot still runs it */
    uint32_t reason;
    uint32_t pad;
};

/* What the fork server and the workers need: all inherited over fork. */
struct pool_shared {
    struct pool_ctl *ctl;
    size_t ctl_size;
    shmq_t *rq;
    shmq_t **tq;
    unsigned workers;
    size_t max_message; /* of a task's argument or result */
    unsigned max_tasks_per_child;
    int (*initializer)(void *ctx);
    void *ctx;
};

/* The fork server's main: never returns. sock is its end of the owner's
 * socket. */
_Noreturn void shmq__forkserver_run(const struct pool_shared *sh, int sock);

/* A worker's main, in the child forked for slot w by parent (the fork
 * server): never returns. */
_Noreturn void shmq__worker_run(const struct pool_shared *sh, unsigned w,
                                pid_t parent);

/* How a worker leaves on purpose: exit status and slot.retiring, both,
 * so that a task calling exit() itself is still a death. */
#define POOL_INIT_FAILED_EXIT 111
#define POOL_RETIRE_EXIT      113 /* retiring = RETIRE_RECYCLE or _DRAINED */
enum pool_retire { RETIRE_NO, RETIRE_RECYCLE, RETIRE_DRAINED };

#endif /* SHMQ_POOL_H */
