/* SPDX-License-Identifier: MIT */
/*
 * stall.c - the stall scenario: does a stopped process stop the others?
 *
 * 4 producers and 4 consumers move 64-byte messages (the throughput
 * cell's queue, every message stamped and checked as in harness.c). Once
 * a second, one victim - a producer, or in the second case a consumer -
 * is stopped with SIGSTOP for 100 ms, then continued. The figure is the
 * rate of the others during each stop against their rate in the free
 * part of the same second: messages received from the other producers,
 * or received by the other consumers. A queue whose consumers wait for
 * a stopped writer's record gives ~0; issue 7's target is >= 0.5.
 *
 * A stop at a random instant of a 64-byte put rarely lands between the
 * claim and the commit (the copy is a few nanoseconds; waiting for room
 * holds nothing), so the victim moves its messages in place (the
 * transport's send_held / recv_held: shmq_put_begin .. put_commit,
 * get_begin .. get_end) and raises a flag inside that window, and the
 * parent stops it at random instants until a stop lands inside: the
 * case the issue is about, every second.
 *
 * Every consumer publishes its per-producer counts in its own cache line
 * (a relaxed store per message, to a line nobody else writes); the
 * parent reads them at the edges of each window.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define STALL_N       4         /* producers, and consumers */
#define STALL_STOP_NS 100000000 /* each stop */
#define STALL_SETTLE  200000000 /* after a stop, before the free window */
#define STALL_SIZE    64

struct stall_ctl {
    _Atomic uint32_t ready, go, stop, failed;
    enum role victim; /* process 0 of this role is the victim */
    _Alignas(64) _Atomic uint32_t held; /* victim: inside the window */
    char err[160];
    struct {
        _Alignas(64) _Atomic uint64_t got[STALL_N]; /* per producer */
    } cons[STALL_N];
    _Alignas(64) uint64_t sent[STALL_N];
};

static void stall_fail(struct stall_ctl *ctl, const char *what, int err)
{
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&ctl->failed, &expected, 1))
        snprintf(ctl->err, sizeof(ctl->err), "%s%s%s", what, err ? ": " : "",
                 err ? strerror(-err) : "");
}

static void await_go(struct stall_ctl *ctl)
{
    atomic_fetch_add(&ctl->ready, 1);
    while (!atomic_load_explicit(&ctl->go, memory_order_acquire))
        usleep(100);
}

static int stall_producer(struct chan *ch, struct stall_ctl *ctl, unsigned i)
{
    struct payload pl;
    uint64_t seq = 0;
    int rc = 0;
    if (payload_init(&pl, STALL_SIZE, i) != 0 ||
        (rc = ch->t->attach(ch, ROLE_PRODUCER, (int)i)) < 0) {
        stall_fail(ctl, "producer: setup", rc);
        atomic_fetch_add(&ctl->ready, 1);
        return 1;
    }
    bool held = i == 0 && ctl->victim == ROLE_PRODUCER && ch->t->send_held;
    await_go(ctl);
    while (!atomic_load_explicit(&ctl->stop, memory_order_relaxed)) {
        payload_stamp(&pl, stamp_make(i, seq));
        rc = held ? ch->t->send_held(ch, pl.buf, pl.size, &ctl->held)
                  : ch->t->send(ch, pl.buf, pl.size);
        if (rc < 0) {
            stall_fail(ctl, "producer: send", rc);
            break;
        }
        seq++;
    }
    ctl->sent[i] = seq;
    ch->t->detach(ch);
    payload_free(&pl);
    return rc < 0;
}

/* One message checked as harness.c's consumer does; 1 at the end. */
static int stall_take(struct chan *ch, struct stall_ctl *ctl, bool held,
                      unsigned char *buf, unsigned char **patterns,
                      uint64_t *next)
{
    size_t len = 0;
    int rc = held ? ch->t->recv_held(ch, buf, 64, &len, &ctl->held)
                  : ch->t->recv(ch, buf, 64, &len);
    if (rc == RECV_END)
        return 1;
    if (rc < 0)
        return stall_fail(ctl, "consumer: recv", rc), -1;
    uint64_t s = payload_stamp_of(buf, len);
    if (s == STAMP_STOP && len == STALL_SIZE)
        return 1;
    unsigned p = stamp_producer(s);
    const char *why = p < STALL_N ? NULL : "bad producer in stamp";
    if (!why && stamp_seq(s) < next[p])
        why = "sequence went backwards (FIFO per producer broken)";
    if (!why)
        why = payload_check(buf, len, STALL_SIZE, patterns[p]);
    if (why)
        return stall_fail(ctl, why, 0), -1;
    next[p] = stamp_seq(s) + 1;
    return 0;
}

static int stall_consumer(struct chan *ch, struct stall_ctl *ctl, unsigned i)
{
    static unsigned char pat[STALL_N][64], buf[64];
    unsigned char *patterns[STALL_N];
    uint64_t next[STALL_N] = {0}, got[STALL_N] = {0};
    int rc;
    for (unsigned p = 0; p < STALL_N; p++) {
        payload_fill_pattern(pat[p], STALL_SIZE, p);
        patterns[p] = pat[p];
    }
    if ((rc = ch->t->attach(ch, ROLE_CONSUMER, (int)i)) < 0) {
        stall_fail(ctl, "consumer: attach", rc);
        atomic_fetch_add(&ctl->ready, 1);
        return 1;
    }
    bool held = i == 0 && ctl->victim == ROLE_CONSUMER && ch->t->recv_held;
    await_go(ctl);
    while ((rc = stall_take(ch, ctl, held, buf, patterns, next)) == 0) {
        unsigned p = stamp_producer(payload_stamp_of(buf, STALL_SIZE));
        atomic_store_explicit(&ctl->cons[i].got[p], ++got[p],
                              memory_order_relaxed);
    }
    ch->t->detach(ch);
    return rc < 0;
}

/* Messages moved by everyone but the victim. */
static uint64_t others(struct stall_ctl *ctl, enum role victim)
{
    uint64_t n = 0;
    for (unsigned c = 0; c < STALL_N; c++)
        for (unsigned p = 0; p < STALL_N; p++)
            if (!(victim == ROLE_PRODUCER && p == 0) &&
                !(victim == ROLE_CONSUMER && c == 0))
                n += atomic_load_explicit(&ctl->cons[c].got[p],
                                          memory_order_relaxed);
    return n;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Stop the victim and wait until it is stopped (kill() returns before). */
static void stop_once(pid_t pid)
{
    int st;
    kill(pid, SIGSTOP);
    while (waitpid(pid, &st, WUNTRACED) < 0 && errno == EINTR)
        ;
}

/* Stop the victim inside its window (claimed, not yet published or
 * given back): stop it at random instants until one lands there, for
 * up to ~100 ms, else leave it stopped wherever the last stop landed.
 * true when the stop is inside. */
static bool stop_victim(struct stall_ctl *ctl, pid_t pid, unsigned *seed)
{
    for (int tries = 0; tries < 400; tries++) {
        stop_once(pid);
        /* the victim's stores are visible: stopping it went through the
         * kernel on its CPU */
        if (atomic_load_explicit(&ctl->held, memory_order_relaxed))
            return true;
        if (tries == 399)
            break;
        kill(pid, SIGCONT);
        sleep_ns((uint64_t)(rand_r(seed) % 250) * 1000u);
    }
    return false;
}

/* The measured seconds: a free window, then a stop, once per period. */
static void stall_periods(struct stall_ctl *ctl, pid_t victim_pid,
                          enum role victim, struct stall_result *r)
{
    unsigned seed = (unsigned)now_ns();
    sleep_ns(STALL_SETTLE); /* processes running, queue in its regime */
    for (unsigned k = 0; k < r->periods && !ctl->failed; k++) {
        /* free part of the second: 700 ms at least, its end at random */
        uint64_t free_ns = (1000000000u - STALL_STOP_NS - STALL_SETTLE) -
                           (uint64_t)(rand_r(&seed) % 200) * 1000000u;
        uint64_t t0 = now_ns(), n0 = others(ctl, victim);
        sleep_ns(free_ns);
        uint64_t t1 = now_ns(), n1 = others(ctl, victim);
        r->inside += stop_victim(ctl, victim_pid, &seed);
        uint64_t t2 = now_ns(), n2 = others(ctl, victim);
        sleep_ns(STALL_STOP_NS);
        uint64_t t3 = now_ns(), n3 = others(ctl, victim);
        kill(victim_pid, SIGCONT);
        r->free_rate[k] = (double)(n1 - n0) * 1e9 / (double)(t1 - t0);
        r->stop_rate[k] = (double)(n3 - n2) * 1e9 / (double)(t3 - t2);
        sleep_ns(STALL_SETTLE);
    }
}

static pid_t stall_spawn(int (*fn)(struct chan *, struct stall_ctl *, unsigned),
                         struct chan *ch, struct stall_ctl *ctl, unsigned i)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(fn(ch, ctl, i));
    }
    return pid;
}

static int stall_reap(pid_t pid, double secs)
{
    int st;
    double end = now_sec() + secs;
    while (waitpid(pid, &st, WNOHANG) != pid) {
        if (now_sec() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return 1;
        }
        usleep(1000);
    }
    return !WIFEXITED(st) || WEXITSTATUS(st) != 0;
}

static void stall_finish(struct chan *ch, struct stall_ctl *ctl, pid_t *cons,
                         pid_t *prod, struct stall_result *r)
{
    int bad = 0, rc;
    atomic_store(&ctl->stop, 1);
    for (unsigned i = 0; i < STALL_N; i++)
        bad |= stall_reap(prod[i], 30);
    rc = ch->t->finish ? ch->t->finish(ch) : harness_send_stops(ch, STALL_N);
    if (rc < 0)
        stall_fail(ctl, "finish", rc);
    for (unsigned i = 0; i < STALL_N; i++)
        bad |= stall_reap(cons[i], 30);
    uint64_t sent = 0, got = 0;
    for (unsigned p = 0; p < STALL_N; p++) {
        sent += ctl->sent[p];
        for (unsigned c = 0; c < STALL_N; c++)
            got += ctl->cons[c].got[p];
    }
    if (!ctl->failed && got != sent)
        snprintf(r->note, sizeof(r->note), "received %llu of %llu sent",
                 (unsigned long long)got, (unsigned long long)sent);
    else if (ctl->failed || bad)
        snprintf(r->note, sizeof(r->note), "%s",
                 ctl->failed ? ctl->err : "a process failed or hung");
    r->failed = ctl->failed || bad || got != sent;
    r->msgs = got;
}

void stall_run(const struct transport *t, enum role victim, unsigned periods,
               struct stall_result *r)
{
    struct cell c = {.sc = SC_THROUGHPUT,
                     .producers = STALL_N,
                     .consumers = STALL_N,
                     .size = STALL_SIZE};
    struct chan ch = {.t = t, .cell = &c};
    pid_t cons[STALL_N], prod[STALL_N];
    struct stall_ctl *ctl;
    int rc;

    memset(r, 0, sizeof(*r));
    r->t = t;
    r->victim = victim;
    r->periods = periods > BENCH_MAX_ROUNDS ? BENCH_MAX_ROUNDS : periods;
    r->aimed =
        victim == ROLE_PRODUCER ? t->send_held != NULL : t->recv_held != NULL;
    ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl != MAP_FAILED)
        ctl->victim = victim;
    if (ctl == MAP_FAILED || (rc = t->setup(&ch)) < 0) {
        r->failed = true;
        snprintf(r->note, sizeof(r->note), "setup failed");
        if (ctl != MAP_FAILED)
            munmap(ctl, sizeof(*ctl));
        return;
    }
    r->ran = true;
    for (unsigned i = 0; i < STALL_N; i++)
        cons[i] = stall_spawn(stall_consumer, &ch, ctl, i);
    for (unsigned i = 0; i < STALL_N; i++)
        prod[i] = stall_spawn(stall_producer, &ch, ctl, i);
    while (atomic_load(&ctl->ready) < 2 * STALL_N && !ctl->failed)
        usleep(200);
    atomic_store_explicit(&ctl->go, 1, memory_order_release);
    stall_periods(ctl, victim == ROLE_PRODUCER ? prod[0] : cons[0], victim, r);
    stall_finish(&ch, ctl, cons, prod, r);
    t->teardown(&ch);
    munmap(ctl, sizeof(*ctl));
}
