/* SPDX-License-Identifier: MIT */
/*
 * test_kill.c - crash safety: producers and consumers SIGKILLed at random
 * moments while others keep going.
 *
 * For a few seconds the parent kills a random producer or consumer every
 * few milliseconds (some right after they start, some blocked in a wait,
 * most in the middle of traffic) and forks a fresh one in its place,
 * while the load swings between a full queue (consumers slowed) and an
 * empty one (producers slowed). Producers log the sequence number they
 * are attempting and the count committed (put returned 0) in shared
 * memory; consumers log every message right after get returned it.
 *
 * Afterwards: no duplicate, no torn message, each consumer saw each
 * producer's messages in order, no message that was never put, and the
 * committed messages nobody received are no more than the consumers
 * killed (each may lose the one it was getting). The queue never wedges:
 * progress never stops for long during the storm; afterwards, with the
 * producers stopped and every consumer killed at once, a fresh producer
 * and a fresh consumer move 10k messages, and the consumer drains to
 * -EPIPE after close.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>

#include "helpers.h"
#include "layout.h"
#include "shmq.h"

#define PRODUCERS      3 /* alive at once */
#define CONSUMERS      3
#define MAX_INST       8192 /* instances of each role over the whole test */
#define LOG_SIZE       (4u << 20)
#define MAX_LEN        1024
#define FRESH_MESSAGES 10000
#define STALL_LIMIT_NS (5 * TH_SEC) /* no progress that long: wedged */
#define RECOVERY_NS    (2 * TH_SEC) /* generous bound of a recovery */
#define REAP_NS        (20 * TH_SEC)

enum phase { PHASE_MIXED, PHASE_FULL, PHASE_EMPTY };
enum where { AT_PUT = 1, AT_GET, AT_LOG };

struct producer_log {
    _Atomic uint64_t attempting; /* seq + 1 of the put in progress */
    _Atomic uint64_t committed;  /* puts that returned 0 */
};

struct kill_shared {
    _Atomic int phase;
    _Atomic int stop_producers;
    _Atomic int closing; /* set before shmq_close: -EPIPE is fine now */
    _Atomic uint64_t progress;
    _Atomic uint64_t bad;
    _Atomic int bad_rc, bad_where;
    _Atomic uint64_t log_next;
    _Atomic uint8_t prod_in_call[MAX_INST];
    _Atomic uint8_t cons_busy[MAX_INST];
    struct producer_log prod[MAX_INST];
    _Atomic uint64_t log[LOG_SIZE];
};

/*
 * A log entry is one 64-bit store, so a consumer killed while logging
 * leaves 0 (nothing) rather than half an entry:
 *   bit 63 valid, bit 62 intact, 61..49 producer, 48..36 consumer,
 *   31..0 seq.
 */
#define ENTRY_VALID (1ull << 63)
#define ENTRY_OK    (1ull << 62)
static uint64_t entry_pack(bool ok, uint32_t producer, uint32_t consumer,
                           uint32_t seq)
{
    return ENTRY_VALID | (ok ? ENTRY_OK : 0) |
           (uint64_t)(producer & (MAX_INST - 1)) << 49 |
           (uint64_t)(consumer & (MAX_INST - 1)) << 36 | seq;
}
static uint32_t entry_producer(uint64_t e)
{
    return (uint32_t)(e >> 49) & (MAX_INST - 1);
}
static uint32_t entry_consumer(uint64_t e)
{
    return (uint32_t)(e >> 36) & (MAX_INST - 1);
}
static uint32_t entry_seq(uint64_t e)
{
    return (uint32_t)e;
}

struct kill_ctx {
    shmq_t *q;
    struct kill_shared *sh;
    size_t max_message;
    uint64_t seed; /* of the whole run: SHMQ_KILL_SEED replays it */
};

static void note_bad(struct kill_shared *sh, int where, int rc)
{
    if (atomic_fetch_add(&sh->bad, 1) == 0) {
        atomic_store(&sh->bad_rc, rc);
        atomic_store(&sh->bad_where, where);
    }
}

/* NOWAIT, a short timeout or FOREVER, at random. */
static int64_t pick_timeout(uint64_t *rng)
{
    uint64_t r = th_rand_below(rng, 10);
    if (r < 2)
        return SHMQ_NOWAIT;
    if (r < 4)
        return SHMQ_FOREVER;
    return (int64_t)(1 + th_rand_below(rng, 50)) * TH_MS;
}

static bool expected_wait_rc(int rc, int64_t timeout)
{
    if (rc == -EAGAIN)
        return timeout == SHMQ_NOWAIT;
    if (rc == -ETIMEDOUT)
        return timeout > 0;
    return false;
}

static void slow_down(uint64_t *rng)
{
    th_sleep_ns((int64_t)th_rand_below(rng, 500) * 1000);
}

static size_t pick_len(uint64_t *rng)
{
    if (th_rand_below(rng, 4) == 0)
        return TH_PAYLOAD_MIN + th_rand_below(rng, MAX_LEN - TH_PAYLOAD_MIN);
    return TH_PAYLOAD_MIN + th_rand_below(rng, 128);
}

/* Puts until told to stop (quota 0) or until quota messages committed. */
static int producer_run(const struct kill_ctx *k, uint32_t id, uint64_t quota)
{
    struct kill_shared *sh = k->sh;
    struct producer_log *pl = &sh->prod[id];
    unsigned char buf[MAX_LEN];
    uint64_t rng = k->seed ^ ((uint64_t)id << 32);
    uint32_t seq = 0;
    while (quota ? seq < quota : !atomic_load(&sh->stop_producers)) {
        if (atomic_load(&sh->phase) == PHASE_EMPTY)
            slow_down(&rng);
        if (!quota && atomic_load(&sh->log_next) > LOG_SIZE / 2)
            th_sleep_ns(TH_MS); /* keep the log from overflowing */
        size_t len = pick_len(&rng);
        int64_t timeout = quota ? 10 * TH_SEC : pick_timeout(&rng);
        th_payload_fill(buf, len, id, seq);
        atomic_store(&pl->attempting, (uint64_t)seq + 1);
        atomic_store(&sh->prod_in_call[id], 1);
        int rc = shmq_put(k->q, buf, len, timeout);
        atomic_store(&sh->prod_in_call[id], 0);
        if (rc == 0) {
            atomic_store(&pl->committed, (uint64_t)seq + 1);
            atomic_fetch_add(&sh->progress, 1);
            seq++;
        } else if (quota || !expected_wait_rc(rc, timeout)) {
            note_bad(sh, AT_PUT, rc);
            return 1;
        }
    }
    return 0;
}

/* Gets until the queue is closed and drained. */
static int consumer_run(const struct kill_ctx *k, uint32_t id)
{
    struct kill_shared *sh = k->sh;
    unsigned char *buf = malloc(k->max_message);
    uint64_t rng = k->seed ^ ((uint64_t)id << 32) ^ 0xc0ffee;
    if (!buf)
        return 2;
    for (;;) {
        if (atomic_load(&sh->phase) == PHASE_FULL)
            slow_down(&rng);
        int64_t timeout = pick_timeout(&rng);
        size_t len = 0;
        /* Busy from before get until the message is logged: a consumer
         * killed while not busy cannot have lost a message. */
        atomic_store(&sh->cons_busy[id], 1);
        int rc = shmq_get(k->q, buf, k->max_message, &len, timeout);
        if (rc != 0)
            atomic_store(&sh->cons_busy[id], 0);
        if (rc == 0) {
            uint32_t p = 0, seq = 0;
            bool ok =
                len <= k->max_message && th_payload_check(buf, len, &p, &seq);
            uint64_t i = atomic_fetch_add(&sh->log_next, 1);
            if (i >= LOG_SIZE) {
                note_bad(sh, AT_LOG, 0);
                break;
            }
            atomic_store(&sh->log[i], entry_pack(ok, p, id, seq));
            atomic_store(&sh->cons_busy[id], 0);
            atomic_fetch_add(&sh->progress, 1);
        } else if (rc == -EPIPE && atomic_load(&sh->closing)) {
            free(buf);
            return 0;
        } else if (!expected_wait_rc(rc, timeout)) {
            note_bad(sh, AT_GET, rc);
            break;
        }
    }
    free(buf);
    return 1;
}

/* ------------------------------------------------------------------ */
/* The parent: processes, the storm                                     */
/* ------------------------------------------------------------------ */

struct member {
    pid_t pid;
    uint32_t id;
    bool producer;
};

struct storm {
    struct kill_ctx k;
    struct member m[PRODUCERS + CONSUMERS];
    uint32_t next_prod, next_cons; /* instance ids handed out */
    unsigned prod_kills, cons_kills, early_kills;
    unsigned prod_kills_in_put; /* killed inside shmq_put */
    unsigned cons_kills_busy;   /* killed in get or before logging */
    unsigned failed; /* children that exited by themselves, not with 0 */
    unsigned hung;   /* children that did not end in time */
    unsigned seen_full, seen_empty;
    int64_t longest_stall_ns;
    uint64_t rng;
};

struct spawn_arg {
    const struct kill_ctx *k;
    uint32_t id;
    bool producer;
    uint64_t quota;
};

static int child_main(void *arg)
{
    const struct spawn_arg *a = arg;
    return a->producer ? producer_run(a->k, a->id, a->quota)
                       : consumer_run(a->k, a->id);
}

static void spawn_member(struct storm *s, struct member *m, bool producer)
{
    struct spawn_arg a = {&s->k, 0, producer, 0};
    uint32_t *next = producer ? &s->next_prod : &s->next_cons;
    cr_assert_lt(*next, MAX_INST, "too many instances");
    a.id = (*next)++;
    m->id = a.id;
    m->producer = producer;
    m->pid = th_fork(child_main, &a);
}

/* Reap a member; count a kill when SIGKILL ended it (it was alive). */
static void reap_member(struct storm *s, struct member *m, bool killed)
{
    int st = th_wait_pid(m->pid, REAP_NS);
    if (st == -1) {
        s->hung++;
    } else if (st < 0 || (WIFEXITED(st) && WEXITSTATUS(st) != 0)) {
        s->failed++;
    } else if (WIFSIGNALED(st)) {
        if (!killed || WTERMSIG(st) != SIGKILL)
            s->failed++;
        else if (m->producer)
            s->prod_kills++;
        else
            s->cons_kills++;
    }
    m->pid = -1;
}

static void kill_member(struct storm *s, struct member *m)
{
    unsigned before = s->prod_kills + s->cons_kills;
    kill(m->pid, SIGKILL);
    reap_member(s, m, true);
    if (s->prod_kills + s->cons_kills == before)
        return; /* it had exited already */
    /* as it died: */
    if (m->producer && atomic_load(&s->k.sh->prod_in_call[m->id]))
        s->prod_kills_in_put++;
    if (!m->producer && atomic_load(&s->k.sh->cons_busy[m->id]))
        s->cons_kills_busy++;
}

static void watch_progress(struct storm *s, uint64_t *last, int64_t *since)
{
    uint64_t p = atomic_load(&s->k.sh->progress);
    int64_t now = th_now_ns();
    if (p != *last) {
        *last = p;
        *since = now;
    } else if (now - *since > s->longest_stall_ns) {
        s->longest_stall_ns = now - *since;
    }
    s->seen_full += shmq_full(s->k.q);
    s->seen_empty += shmq_empty(s->k.q);
}

static void storm_run(struct storm *s, int64_t duration_ns)
{
    struct kill_shared *sh = s->k.sh;
    int64_t now = th_now_ns(), end = now + duration_ns;
    int64_t next_phase = now, since = now;
    uint64_t last = 0;
    unsigned n = PRODUCERS + CONSUMERS;
    while ((now = th_now_ns()) < end && s->longest_stall_ns < STALL_LIMIT_NS) {
        if (now >= next_phase) {
            atomic_store(&sh->phase, (int)th_rand_below(&s->rng, 3));
            next_phase =
                now + (200 + (int64_t)th_rand_below(&s->rng, 200)) * TH_MS;
        }
        th_sleep_ns((int64_t)th_rand_below(&s->rng, 10000) * 1000);
        watch_progress(s, &last, &since);
        struct member *m = &s->m[th_rand_below(&s->rng, n)];
        kill_member(s, m);
        spawn_member(s, m, m->producer);
        if (th_rand_below(&s->rng, 10) == 0) {
            /* Now and then: kill a fresh one while it starts up. */
            th_sleep_ns((int64_t)th_rand_below(&s->rng, 300) * 1000);
            kill_member(s, m);
            s->early_kills++;
            spawn_member(s, m, m->producer);
        }
    }
    atomic_store(&sh->phase, PHASE_MIXED);
}

/* ------------------------------------------------------------------ */
/* Verification                                                         */
/* ------------------------------------------------------------------ */

struct verdict {
    uint64_t delivered, unlogged, torn, never_put, duplicates, misordered;
    uint64_t committed, lost, fresh_delivered;
};

static void verify(const struct storm *s, uint32_t fresh_id, struct verdict *v)
{
    const struct kill_shared *sh = s->k.sh;
    uint32_t np = s->next_prod, nc = s->next_cons;
    uint64_t n = atomic_load(&sh->log_next);
    if (n > LOG_SIZE)
        n = LOG_SIZE;
    /* seen[p]: which seqs of producer p arrived (attempting bits). */
    uint8_t **seen = calloc(np, sizeof *seen);
    uint64_t *attempted = calloc(np, sizeof *attempted);
    cr_assert(seen && attempted);
    for (uint32_t p = 0; p < np; p++) {
        attempted[p] = atomic_load(&sh->prod[p].attempting);
        seen[p] = calloc(attempted[p] + 1, 1);
        cr_assert(seen[p]);
    }
    /* Entries by consumer, in log order, for the per-consumer order. */
    uint64_t *start = calloc((size_t)nc + 1, sizeof *start);
    uint64_t *by_cons = malloc((n + 1) * sizeof *by_cons);
    int64_t *last = malloc(np * sizeof *last);
    cr_assert(start && by_cons && last);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = atomic_load(&sh->log[i]);
        if (!(e & ENTRY_VALID))
            v->unlogged++;
        else if (!(e & ENTRY_OK))
            v->torn++;
        else if (entry_producer(e) >= np || entry_consumer(e) >= nc ||
                 entry_seq(e) >= attempted[entry_producer(e)])
            v->never_put++;
        else
            start[entry_consumer(e) + 1]++;
    }
    for (uint32_t c = 0; c < nc; c++)
        start[c + 1] += start[c];
    uint64_t *fill = malloc(((size_t)nc + 1) * sizeof *fill);
    cr_assert(fill);
    memcpy(fill, start, ((size_t)nc + 1) * sizeof *fill);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = atomic_load(&sh->log[i]);
        if ((e & ENTRY_VALID) && (e & ENTRY_OK) && entry_producer(e) < np &&
            entry_consumer(e) < nc &&
            entry_seq(e) < attempted[entry_producer(e)])
            by_cons[fill[entry_consumer(e)]++] = e;
    }
    for (uint32_t p = 0; p < np; p++)
        last[p] = -1;
    for (uint32_t c = 0; c < nc; c++) {
        for (uint64_t i = start[c]; i < start[c + 1]; i++) {
            uint64_t e = by_cons[i];
            uint32_t p = entry_producer(e), seq = entry_seq(e);
            v->delivered++;
            if (seen[p][seq]++)
                v->duplicates++;
            if ((int64_t)seq <= last[p])
                v->misordered++;
            last[p] = seq;
        }
        for (uint64_t i = start[c]; i < start[c + 1]; i++)
            last[entry_producer(by_cons[i])] = -1;
    }
    for (uint32_t p = 0; p < np; p++) {
        uint64_t committed = atomic_load(&sh->prod[p].committed);
        v->committed += committed;
        for (uint64_t seq = 0; seq < committed; seq++)
            if (!seen[p][seq])
                v->lost++;
        if (p == fresh_id)
            for (uint64_t seq = 0; seq < committed; seq++)
                v->fresh_delivered += seen[p][seq] != 0;
        free(seen[p]);
    }
    free(seen);
    free(attempted);
    free(start);
    free(by_cons);
    free(last);
    free(fill);
}

/* ------------------------------------------------------------------ */
/* Diagnosis of a wedged queue                                          */
/* ------------------------------------------------------------------ */

static const char *state_name(unsigned st)
{
    static const char *names[] = {"free", "writing", "committed", "reading",
                                  "aborted"};
    return st < 5 ? names[st] : "?";
}

/* "alive", "dead" or "?": whether anyone holds the slot's lock. */
static const char *slot_liveness(int lfd, unsigned slot)
{
    struct flock fl = {.l_type = F_WRLCK,
                       .l_whence = SEEK_SET,
                       .l_start = SHMQ_LOCK_BASE + (off_t)slot,
                       .l_len = 1};
    if (lfd < 0 || fcntl(lfd, F_OFD_GETLK, &fl) < 0)
        return "?";
    return fl.l_type == F_UNLCK ? "dead" : "alive";
}

/* Print the positions and the records from release to tail (layout.h),
 * with whether their owners live: what a wedged queue waits for. */
static void dump_region(shmq_t *q)
{
    struct stat st;
    if (fstat(shmq_fd(q), &st) < 0)
        return;
    unsigned char *map =
        mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, shmq_fd(q), 0);
    if (map == MAP_FAILED)
        return;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", shmq_fd(q));
    int lfd = open(path, O_RDWR | O_CLOEXEC); /* an OFD of our own */
    const struct shmq_header *h = (const void *)map;
    const struct shmq_participant *parts =
        (const void *)(map + SHMQ_PARTICIPANTS_OFFSET);
    const struct shmq_desc *desc = (const void *)(map + h->id.desc_offset);
    uint64_t r = h->release.word, hd = h->head.word, t = h->tail.word;
    fprintf(stderr,
            "wedged queue: release %u/%u head %u/%u tail %u/%u (seq/unit), "
            "closed %" PRIu64 "\n",
            pos_seq(r), pos_units(r), pos_seq(hd), pos_units(hd), pos_seq(t),
            pos_units(t), h->closed.word);
    for (uint32_t seq = pos_seq(r), n = 0;
         seq != pos_seq(t) + 1 && n < h->id.desc_count; seq++, n++) {
        uint64_t w = desc[seq & (h->id.desc_count - 1)].word;
        unsigned owner = desc_owner(w);
        fprintf(stderr,
                "  seq %u: desc seq %u %s, owner slot %u (%s, pid %u, "
                "slot state %u), units %u\n",
                seq, desc_seq(w), state_name(desc_state(w)), owner,
                slot_liveness(lfd, owner), parts[owner].pid, parts[owner].state,
                desc_units(w));
    }
    if (lfd >= 0)
        close(lfd);
    munmap(map, (size_t)st.st_size);
}

static const char *where_name(int where)
{
    return where == AT_PUT ? "put" : where == AT_GET ? "get" : "log overflow";
}

Test(kill, random_sigkill_storm, .timeout = 240)
{
    struct shmq_config qc = {
        .maxsize = 64, .capacity = 8192, .max_message = MAX_LEN};
    struct storm *s = calloc(1, sizeof *s);
    cr_assert(s);
    cr_assert_eq(shmq_create(&s->k.q, &qc), 0);
    s->k.max_message = shmq_max_message(s->k.q);
    s->k.sh = th_shared_alloc(sizeof(struct kill_shared));
    cr_assert(s->k.sh);
    /* The storm's choices and every member's come from one seed, printed
     * so that a failure can be replayed (timing still differs). */
    const char *env = getenv("SHMQ_KILL_SEED");
    s->k.seed = env ? strtoull(env, NULL, 0) : (uint64_t)th_now_ns();
    s->rng = s->k.seed;
    cr_log_info("kill storm seed %llu (SHMQ_KILL_SEED=%llu to replay)",
                (unsigned long long)s->k.seed, (unsigned long long)s->k.seed);
    struct kill_shared *sh = s->k.sh;
    int64_t storm_ns =
        (int64_t)(5 * TH_SEC * (th_test_scale() < 1 ? th_test_scale() : 1.0));
    if (storm_ns < TH_SEC)
        storm_ns = TH_SEC;

    for (unsigned i = 0; i < PRODUCERS + CONSUMERS; i++)
        spawn_member(s, &s->m[i], i < PRODUCERS);
    storm_run(s, storm_ns);
    bool wedged = s->longest_stall_ns >= STALL_LIMIT_NS;
    if (wedged)
        dump_region(s->k.q);

    /* Survivors: producers stop; consumers all die at once; then a fresh
     * producer and a fresh consumer must move FRESH_MESSAGES (and what
     * the storm left), and the consumer drains to -EPIPE after close. */
    atomic_store(&sh->stop_producers, 1);
    for (unsigned i = 0; i < PRODUCERS; i++)
        reap_member(s, &s->m[i], false);
    for (unsigned i = PRODUCERS; i < PRODUCERS + CONSUMERS; i++)
        kill_member(s, &s->m[i]);
    spawn_member(s, &s->m[PRODUCERS], false);
    struct member fresh = {.producer = true};
    struct spawn_arg a = {&s->k, s->next_prod++, true, FRESH_MESSAGES};
    fresh.id = a.id;
    int64_t t0 = th_now_ns();
    fresh.pid = th_fork(child_main, &a);
    unsigned failed = s->failed + s->hung;
    reap_member(s, &fresh, false);
    int64_t fresh_ms = (th_now_ns() - t0) / TH_MS;
    if (s->failed + s->hung != failed)
        dump_region(s->k.q);
    atomic_store(&sh->closing, 1);
    shmq_close(s->k.q);
    reap_member(s, &s->m[PRODUCERS], false);
    size_t left = shmq_qsize(s->k.q);

    struct verdict v = {0};
    verify(s, fresh.id, &v);
    cr_log_info("storm %" PRId64 " ms: %u producer kills (%u inside put), "
                "%u consumer kills (%u inside get or before logging), %u "
                "at start-up; %" PRIu64 " committed, %" PRIu64
                " delivered, %" PRIu64 " lost; longest stall %" PRId64
                " ms; full seen %u, empty seen %u; fresh pair: %" PRId64 " ms",
                storm_ns / TH_MS, s->prod_kills, s->prod_kills_in_put,
                s->cons_kills, s->cons_kills_busy, s->early_kills, v.committed,
                v.delivered, v.lost, s->longest_stall_ns / TH_MS, s->seen_full,
                s->seen_empty, fresh_ms);

    cr_expect(!wedged, "no progress for %" PRId64 " ms during the storm",
              s->longest_stall_ns / TH_MS);
    cr_expect_lt(s->longest_stall_ns, RECOVERY_NS,
                 "no progress for %" PRId64 " ms: recovery of dead peers "
                 "should take tens of ms",
                 s->longest_stall_ns / TH_MS);
    cr_expect_eq(s->hung, 0, "%u children did not finish: queue wedged?",
                 s->hung);
    cr_expect_eq(atomic_load(&sh->bad), 0,
                 "%" PRIu64 " unexpected results; first %d (%s) from %s",
                 atomic_load(&sh->bad), atomic_load(&sh->bad_rc),
                 shmq_strerror(atomic_load(&sh->bad_rc)),
                 where_name(atomic_load(&sh->bad_where)));
    cr_expect_eq(s->failed, 0, "%u children failed", s->failed);
    cr_expect_eq(v.torn, 0, "%" PRIu64 " torn messages", v.torn);
    cr_expect_eq(v.never_put, 0, "%" PRIu64 " messages never put", v.never_put);
    cr_expect_eq(v.duplicates, 0, "%" PRIu64 " duplicates", v.duplicates);
    cr_expect_eq(v.misordered, 0, "%" PRIu64 " out of producer order",
                 v.misordered);
    cr_expect_leq(v.unlogged, s->cons_kills_busy,
                  "%" PRIu64 " log entries unwritten, %u consumers killed "
                  "while busy",
                  v.unlogged, s->cons_kills_busy);
    cr_expect_leq(v.lost, s->cons_kills_busy,
                  "%" PRIu64 " committed messages lost, but only %u "
                  "consumers were killed inside get or before logging "
                  "(each may lose one)",
                  v.lost, s->cons_kills_busy);
    cr_expect_eq(v.fresh_delivered, FRESH_MESSAGES,
                 "fresh producer: %" PRIu64 " of %d delivered",
                 v.fresh_delivered, FRESH_MESSAGES);
    cr_expect_eq(left, 0, "%zu messages left after draining", left);
    cr_expect_gt(s->prod_kills, 0, "no producer was killed");
    cr_expect_gt(s->cons_kills, 0, "no consumer was killed");
    cr_expect_gt(s->prod_kills_in_put, 0, "no kill landed inside put");
    cr_expect_gt(s->cons_kills_busy, 0, "no kill landed inside get");
    cr_expect_gt(s->seen_full, 0, "the queue was never seen full");
    cr_expect_gt(s->seen_empty, 0, "the queue was never seen empty");

    th_shared_free(sh, sizeof(struct kill_shared));
    shmq_release(s->k.q);
    free(s);
}
