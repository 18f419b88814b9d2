/* SPDX-License-Identifier: MIT */
/*
 * test_liveness.c - crash recovery at exact points of put and get.
 *
 * The kill storm (test_kill.c) hits random instructions; these tests stop
 * a child at a chosen point instead, using the ring's internal steps
 * (lib/ring.h), so that each recovery path is exercised every run: a
 * writer dead between claim and commit, a reader dead between take and
 * free, a full queue whose only blocker is dead, a stopped (not dead)
 * writer, fork re-registration, a joiner recovering a dead writer.
 */
#include "helpers.h"

#include "internal.h"
#include "liveness.h"
#include "ring.h"

/* The promise is about 10 ms after a waiter notices (LIVENESS_PERIOD_NS
 * in lib/attempt.c); a loaded 2-CPU machine needs some slack, a lost
 * recovery (the 100 ms re-check, or none) does not fit. */
#define RECOVERY_BOUND_NS (80 * TH_MS)

static shmq_t *make(size_t maxsize, unsigned flags)
{
    struct shmq_config c = {.maxsize = maxsize,
                            .capacity = 4096,
                            .max_message = 256,
                            .flags = flags};
    shmq_t *q;
    cr_assert_eq(shmq_create(&q, &c), 0);
    return q;
}

/* Child: claim a record and die (SIGKILL) before writing it. */
static int die_after_claim(void *arg)
{
    struct shmq *q = arg;
    struct ring_ref ref;
    struct ring_stall st;
    TH_CHECK_EQ(shmq__liveness_ensure(q), 0);
    TH_CHECK_EQ(shmq__ring_claim(q, 5, &ref, &st), 0);
    memcpy(ring_addr(q, ref.pos), "to", 2); /* a torn half */
    raise(SIGKILL);
    return 1;
}

/* Child: take the oldest record and die before freeing it. */
static int die_after_take(void *arg)
{
    struct shmq *q = arg;
    struct ring_ref ref;
    struct ring_stall st;
    uint64_t len;
    TH_CHECK_EQ(shmq__liveness_ensure(q), 0);
    TH_CHECK_EQ(shmq__ring_take(q, NULL, 256, &len, &ref, &st), 0);
    raise(SIGKILL);
    return 1;
}

static void run_to_death(th_child_fn fn, shmq_t *q)
{
    pid_t pid = th_fork(fn, q);
    int st = th_wait_pid(pid, 10 * TH_SEC);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "child should have died by SIGKILL (status %d)", st);
}

static void expect_get(shmq_t *q, const char *want, int64_t timeout_ns)
{
    char buf[256];
    size_t len = 0;
    int64_t t0 = th_now_ns();
    int rc = shmq_get(q, buf, sizeof buf, &len, timeout_ns);
    cr_assert_eq(rc, 0, "get: %s after %lld ms", shmq_strerror(rc),
                 (long long)((th_now_ns() - t0) / TH_MS));
    cr_assert_eq(len, strlen(want));
    cr_assert_arr_eq(buf, want, len);
}

Test(liveness, dead_writer_is_skipped)
{
    shmq_t *q = make(8, 0);
    run_to_death(die_after_claim, q);
    /* qsize counts committed messages: a claim in flight is not one */
    cr_assert_eq(shmq_qsize(q), 0, "a dead claim is not a message");
    cr_assert_eq(shmq_put(q, "after", 5, SHMQ_NOWAIT), 0);
    expect_get(q, "after", 5 * TH_SEC);
    cr_assert_eq(shmq_qsize(q), 0);
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN);
    shmq_release(q);
}

Test(liveness, nowait_get_recovers_dead_writer)
{
    shmq_t *q = make(8, 0);
    run_to_death(die_after_claim, q);
    cr_assert_eq(shmq_put(q, "x", 1, SHMQ_NOWAIT), 0);
    char buf[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 1);
    shmq_release(q);
}

Test(liveness, dead_reader_gives_room_back)
{
    shmq_t *q = make(1, 0);
    cr_assert_eq(shmq_put(q, "lost", 4, SHMQ_NOWAIT), 0);
    run_to_death(die_after_take, q);
    cr_assert_eq(shmq_qsize(q), 0, "the taken record is no longer queued");
    /* maxsize 1: room only if the dead reader's record is freed, which
     * the waiting put does within its liveness period (10 ms) */
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put(q, "next", 4, 5 * TH_SEC), 0);
    cr_assert_lt(th_now_ns() - t0, RECOVERY_BOUND_NS, "recovery took %lld ms",
                 (long long)((th_now_ns() - t0) / TH_MS));
    expect_get(q, "next", SHMQ_NOWAIT);
    shmq_release(q);
}

Test(liveness, full_queue_of_a_dead_writer_without_consumers)
{
    shmq_t *q = make(1, 0);
    run_to_death(die_after_claim, q);
    /* No consumer will ever come by: the producer recovers it itself,
     * within its liveness period. */
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_put(q, "mine", 4, 5 * TH_SEC), 0);
    cr_assert_lt(th_now_ns() - t0, RECOVERY_BOUND_NS, "recovery took %lld ms",
                 (long long)((th_now_ns() - t0) / TH_MS));
    expect_get(q, "mine", SHMQ_NOWAIT);
    shmq_release(q);
}

struct stopped {
    struct shmq *q;
};

/* Child: claim, stop itself (as a descheduled process would be), then
 * finish the put when continued. */
static int stop_after_claim(void *arg)
{
    struct shmq *q = arg;
    struct ring_ref ref;
    struct ring_stall st;
    TH_CHECK_EQ(shmq__liveness_ensure(q), 0);
    TH_CHECK_EQ(shmq__ring_claim(q, 7, &ref, &st), 0);
    raise(SIGSTOP);
    memcpy(ring_addr(q, ref.pos), "stopped", 7);
    TH_CHECK_EQ(shmq__ring_commit(q, &ref, 7), 0);
    return 0;
}

Test(liveness, stopped_writer_is_not_declared_dead)
{
    shmq_t *q = make(8, 0);
    pid_t pid = th_fork(stop_after_claim, q);
    int st;
    cr_assert_eq(waitpid(pid, &st, WUNTRACED), pid);
    cr_assert(WIFSTOPPED(st));
    char buf[16];
    size_t len;
    /* Several liveness periods pass: the record must stay its own. */
    cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, 100 * TH_MS), -ETIMEDOUT);
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), -EAGAIN);
    kill(pid, SIGCONT);
    th_assert_child_ok(pid);
    expect_get(q, "stopped", 5 * TH_SEC);
    shmq_release(q);
}

static int report_slot(void *arg)
{
    struct shmq *q = arg;
    unsigned parent_slot = q->slot;
    TH_CHECK_EQ(shmq_put(q, "c", 1, SHMQ_NOWAIT), 0);
    TH_CHECK(shmq__liveness_current(q));
    TH_CHECK(q->slot != parent_slot);
    TH_CHECK(q->lock_fd >= 0);
    return 0;
}

Test(liveness, fork_child_takes_a_slot_of_its_own)
{
    shmq_t *q = make(8, 0);
    th_assert_child_ok(th_fork(report_slot, q));
    /* The parent's slot still reads as alive to anyone else. */
    shmq_t *other;
    cr_assert_eq(shmq_from_fd(&other, shmq_fd(q)), 0);
    cr_assert_neq(other->slot, q->slot);
    cr_assert(!shmq__liveness_dead(other, q->slot));
    shmq_release(other);
    expect_get(q, "c", SHMQ_NOWAIT);
    shmq_release(q);
}

Test(liveness, released_handle_reads_as_dead)
{
    shmq_t *q = make(8, 0);
    shmq_t *other;
    cr_assert_eq(shmq_from_fd(&other, shmq_fd(q)), 0);
    unsigned slot = other->slot;
    cr_assert(!shmq__liveness_dead(q, slot));
    shmq_release(other);
    cr_assert(shmq__liveness_dead(q, slot));
    shmq_release(q);
}

Test(liveness, join_recovers_dead_writer)
{
    shmq_t *q = make(8, SHMQ_JOINABLE);
    run_to_death(die_after_claim, q);
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), 0,
                 "a dead writer's message is not a task");
    cr_assert_eq(shmq_task_done(q), -EINVAL);
    shmq_release(q);
}

Test(liveness, recover_owner_aborts_what_a_dead_slot_left)
{
    shmq_t *q = make(8, 0);
    run_to_death(die_after_claim, q);
    cr_assert_eq(shmq_put(q, "y", 1, SHMQ_NOWAIT), 0);
    /* find the dead writer's slot in its descriptor */
    uint64_t hd = load_acquire(&q->hdr->head.word);
    uint64_t w = load_acquire(&ring_desc(q, pos_seq(hd))->word);
    cr_assert_eq(desc_state(w), DESC_WRITING);
    shmq__ring_recover_owner(q, desc_owner(w));
    w = load_acquire(&ring_desc(q, pos_seq(hd))->word);
    cr_assert_eq(desc_state(w), DESC_ABORTED);
    shmq_set_spin(q, 0);
    expect_get(q, "y", SHMQ_NOWAIT);
    shmq_release(q);
}

#include <sys/resource.h>

#define SLOTS SHMQ_PARTICIPANTS

/* Each handle holds two descriptors (the region and its lock): raise the
 * soft limit for SLOTS handles; false if the hard limit does not allow. */
static bool allow_many_fds(void)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t want = 2 * SLOTS + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur >= want;
}

/* Child: take every free slot, claim a record under the first (the
 * lowest free slot: the first a newcomer reclaims), die. */
static int hog_slots_and_die(void *arg)
{
    struct shmq *q = arg;
    static shmq_t *h[SLOTS];
    unsigned n = 0;
    while (n < SLOTS && shmq_from_fd(&h[n], shmq_fd(q)) == 0)
        n++;
    TH_CHECK(n > 0);
    struct ring_ref ref;
    struct ring_stall st;
    TH_CHECK_EQ(shmq__ring_claim(h[0], 3, &ref, &st), 0);
    raise(SIGKILL);
    return 1;
}

Test(liveness, all_slots_taken_then_reclaimed_from_the_dead, .timeout = 60)
{
    if (!allow_many_fds())
        cr_skip_test("RLIMIT_NOFILE too low for %u handles", SLOTS);
    shmq_t *q = make(8, 0);
    /* The child fills every slot the parent's handle left free. */
    run_to_death(hog_slots_and_die, q);
    /* Every slot now reads as taken; the dead child's are reclaimed, and
     * the one with a record in flight is recovered on the way. */
    shmq_t *other;
    cr_assert_eq(shmq_from_fd(&other, shmq_fd(q)), 0);
    /* The dead child's record was the first one (seq 0). */
    uint64_t w = load_acquire(&ring_desc(q, 0)->word);
    cr_assert_eq(desc_state(w), DESC_ABORTED,
                 "taking over the dead slot recovers its record");
    cr_assert_eq(desc_owner(w), other->slot, "in the slot taken over");
    cr_assert_eq(shmq_qsize(q), 0, "and it no longer counts");
    cr_assert_eq(shmq_put(other, "new", 3, SHMQ_NOWAIT), 0);
    shmq_set_spin(q, 0);
    expect_get(q, "new", 5 * TH_SEC);
    shmq_release(other);
    shmq_release(q);
}

static int fill_slots(void *arg)
{
    struct shmq *q = arg;
    static shmq_t *h[SLOTS + 1];
    unsigned n = 0;
    int rc;
    while ((rc = shmq_from_fd(&h[n], shmq_fd(q))) == 0 && n < SLOTS)
        n++;
    TH_CHECK_EQ(rc, -EUSERS);
    TH_CHECK_EQ(n, SLOTS - 1); /* the parent's handle holds one */
    shmq_release(h[0]);
    TH_CHECK_EQ(shmq_from_fd(&h[0], shmq_fd(q)), 0);
    for (unsigned i = 0; i < n; i++)
        shmq_release(h[i]);
    return 0;
}

Test(liveness, more_handles_than_slots_is_eusers, .timeout = 60)
{
    if (!allow_many_fds())
        cr_skip_test("RLIMIT_NOFILE too low for %u handles", SLOTS);
    shmq_t *q = make(8, 0);
    th_assert_child_ok(th_fork(fill_slots, q));
    shmq_release(q);
}

/* The library never changes errno, also on the slow paths: the first
 * call of a forked child (which registers a slot), a timed-out wait. */
static int errno_untouched_in_child(void *arg)
{
    char b[8];
    size_t len;
    errno = 4242;
    TH_CHECK_EQ(shmq_put(arg, "e", 1, SHMQ_NOWAIT), 0);
    TH_CHECK_EQ(errno, 4242);
    TH_CHECK_EQ(shmq_get(arg, b, sizeof b, &len, SHMQ_NOWAIT), 0);
    TH_CHECK_EQ(shmq_get(arg, b, sizeof b, &len, 20 * TH_MS), -ETIMEDOUT);
    TH_CHECK_EQ(errno, 4242);
    return 0;
}

Test(liveness, errno_is_never_touched)
{
    shmq_t *q = make(8, 0);
    th_assert_child_ok(th_fork(errno_untouched_in_child, q));
    shmq_release(q);
}

/* Child: the first half of a claim-first take, the CAS to READING, and
 * death before the head moves. */
static int die_between_take_and_head(void *arg)
{
    struct shmq *q = arg;
    TH_CHECK_EQ(shmq__liveness_ensure(q), 0);
    uint64_t hd = load_acquire(&q->hdr->head.word);
    struct shmq_desc *d = ring_desc(q, pos_seq(hd));
    uint64_t w = load_acquire(&d->word);
    TH_CHECK_EQ(desc_state(w), DESC_COMMITTED);
    uint64_t mine =
        desc_pack(pos_seq(hd), DESC_READING, q->slot, desc_units(w));
    TH_CHECK(__atomic_compare_exchange_n(&d->word, &w, mine, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    raise(SIGKILL);
    return 1;
}

Test(liveness, record_taken_by_a_dead_reader_is_not_queued)
{
    shmq_t *q = make(1, 0);
    cr_assert_eq(shmq_put(q, "gone", 4, SHMQ_NOWAIT), 0);
    run_to_death(die_between_take_and_head, q);
    cr_assert_eq(shmq_qsize(q), 0, "taken, though the head did not move");
    cr_assert(shmq_empty(q));
    cr_assert_eq(shmq_put(q, "next", 4, 5 * TH_SEC), 0);
    expect_get(q, "next", SHMQ_NOWAIT);
    shmq_release(q);
}

/* A put that claimed its record just as the queue was closed withdraws
 * it (queue.c): the record is no message, so it is neither counted by
 * qsize nor delivered. */
Test(liveness, withdrawn_record_is_not_queued)
{
    shmq_t *q = make(8, 0);
    struct ring_ref ref;
    struct ring_stall st;
    cr_assert_eq(shmq__liveness_ensure(q), 0);
    cr_assert_eq(shmq__ring_claim(q, 3, &ref, &st), 0);
    cr_assert_eq(shmq_close(q), 0);
    cr_assert_eq(shmq__ring_abort(q, &ref), 0);
    cr_assert_eq(shmq_qsize(q), 0);
    cr_assert(shmq_empty(q));
    char b[8];
    size_t len;
    cr_assert_eq(shmq_get_nowait(q, b, sizeof b, &len), -EPIPE);
    shmq_release(q);
}

/* A message lost with a reader that died while taking it counts as done:
 * join does not wait forever for its task_done. */
Test(liveness, join_after_a_reader_died_with_a_message, .timeout = 30)
{
    shmq_t *q = make(4, SHMQ_JOINABLE);
    cr_assert_eq(shmq_put(q, "lost", 4, SHMQ_NOWAIT), 0);
    run_to_death(die_after_take, q);
    int64_t t0 = th_now_ns();
    cr_assert_eq(shmq_join(q, 5 * TH_SEC), 0);
    cr_assert_lt(th_now_ns() - t0, 500 * TH_MS, "join took %lld ms",
                 (long long)((th_now_ns() - t0) / TH_MS));
    shmq_release(q);
}

/* Counters scribbled into an impossible state (more done than put):
 * join says so instead of waiting for ever. */
Test(liveness, join_with_impossible_counters_is_ebadmsg, .timeout = 30)
{
    shmq_t *q = make(4, SHMQ_JOINABLE);
    struct shmq *h = q;
    cr_assert_eq(shmq_put(q, "x", 1, SHMQ_NOWAIT), 0);
    __atomic_store_n(&h->hdr->tasks_done.word, 5, __ATOMIC_SEQ_CST);
    cr_assert_eq(shmq_join(q, SHMQ_FOREVER), -EBADMSG);
    cr_assert_eq(shmq_join(q, SHMQ_NOWAIT), -EBADMSG);
    shmq_release(q);
}

/* Child: take every free slot and die without releasing any. */
static int take_all_slots_and_die(void *arg)
{
    struct shmq *q = arg;
    static shmq_t *h[SLOTS + 1];
    unsigned n = 0;
    while (n < SLOTS && shmq_from_fd(&h[n], shmq_fd(q)) == 0)
        n++;
    raise(SIGKILL);
    return 1;
}

/* Child: the first call registers, taking a dead slot (and recovering
 * its records first); report how long that call took, in units of
 * 100 us (up to 25.5 ms). */
static int time_first_call(void *arg)
{
    struct shmq *q = arg;
    char b[8];
    size_t len;
    int64_t t0 = th_now_ns();
    TH_CHECK_EQ(shmq_get(q, b, sizeof b, &len, SHMQ_NOWAIT), -EAGAIN);
    int64_t units = (th_now_ns() - t0) / 100000;
    return units > 255 ? 255 : (int)units;
}

/* How long a newcomer's first call takes, in us (to 100 us). */
static int64_t first_call_after_crash_loop_us(size_t maxsize)
{
    shmq_t *q = make(maxsize, 0);
    run_to_death(take_all_slots_and_die, q);
    int st = th_wait_pid(th_fork(time_first_call, q), 30 * TH_SEC);
    cr_assert(WIFEXITED(st), "status %d", st);
    shmq_release(q);
    return WEXITSTATUS(st) * 100;
}

/* After 1023 processes died holding their slots, a newcomer's first call
 * takes a dead slot and recovers its records: it looks only at the
 * records in flight, not at every descriptor. The same call on a queue
 * of 4 M descriptors and on one of 8 costs the same (scanning 4 M
 * descriptors took 20-27 ms). */
Test(liveness, slot_takeover_after_a_crash_loop_is_bounded, .timeout = 120)
{
    if (!allow_many_fds())
        cr_skip_test("RLIMIT_NOFILE too low for %u handles", SLOTS);
    int64_t small = first_call_after_crash_loop_us(8);
    int64_t big = first_call_after_crash_loop_us(SHMQ_MAXSIZE_LIMIT);
    cr_log_info("first call after 1023 deaths: %lld us (maxsize 8), "
                "%lld us (maxsize %u)",
                (long long)small, (long long)big, SHMQ_MAXSIZE_LIMIT);
    cr_assert_lt(big, 4 * small + 3000,
                 "first call took %lld us with 4 M descriptors, %lld us "
                 "with 8",
                 (long long)big, (long long)small);
}
