/* SPDX-License-Identifier: MIT */
/*
 * batch.c - many messages per call: shmq_put_many and shmq_get_many.
 *
 * A producer process sends READINGS variable-length readings, BATCH at
 * a time. Most batches go with flags 0, which works like write(2) on a
 * pipe: it puts them as room comes, up to its deadline, and returns how
 * many went in, so the loop sends the rest. Every
 * tenth batch is a group that must be queued whole, sent with SHMQ_ALL
 * (all of it or none). A consumer process takes every message that is
 * there with one shmq_get_many per wakeup.
 *
 * Exits 0 only if every reading arrived once, in order, intact, and
 * the counts put_many returned are the ones the rules promise.
 */
#include <errno.h>
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define READINGS 200000u
#define BATCH    48u
#define MAXSIZE  64u
#define MAX_VALS 7u

/* A reading: a fixed header, then count values. */
struct reading {
    uint32_t seq;
    uint32_t count;
    uint64_t values[MAX_VALS];
};

static size_t reading_len(uint32_t count)
{
    return offsetof(struct reading, values) + count * sizeof(uint64_t);
}

static void make_reading(struct reading *r, uint32_t seq)
{
    r->seq = seq;
    r->count = seq % (MAX_VALS + 1); /* 8 to 64 bytes */
    for (uint32_t i = 0; i < r->count; i++)
        r->values[i] = (uint64_t)seq * 31u + i;
}

/* Put msgs[0..n) in order, as a write(2) loop on a pipe would: each
 * call puts what goes in before its deadline and says how many; the
 * loop sends the rest. Counts the calls that put fewer than asked. */
static int put_all(shmq_t *q, const struct iovec *msgs, size_t n,
                   unsigned *short_puts)
{
    size_t done = 0;
    while (done < n) {
        int k = shmq_put_many(q, msgs + done, n - done, 0, SHMQ_MS(1));
        if (k == -ETIMEDOUT) /* none went in within 1 ms: try again */
            k = 0;
        if (k < 0)
            return k; /* -EPIPE: closed before any went in */
        if ((size_t)k < n - done)
            (*short_puts)++;
        done += (size_t)k;
    }
    return 0;
}

static int produce(shmq_t *q)
{
    static struct reading r[BATCH];
    struct iovec msgs[BATCH];
    unsigned short_puts = 0;
    for (uint32_t seq = 0, b = 0; seq < READINGS; b++) {
        size_t n = READINGS - seq < BATCH ? READINGS - seq : BATCH;
        for (size_t i = 0; i < n; i++) {
            make_reading(&r[i], seq + (uint32_t)i);
            msgs[i] = (struct iovec){&r[i], reading_len(r[i].count)};
        }
        int rc;
        if (b % 10 == 9) { /* a group: queued whole, or not at all */
            rc = shmq_put_many(q, msgs, n, SHMQ_ALL, SHMQ_FOREVER);
            if (rc == (int)n)
                rc = 0;
        } else {
            rc = put_all(q, msgs, n, &short_puts);
        }
        if (rc != 0) {
            fprintf(stderr, "shmq_put_many: %s\n", shmq_strerror(rc));
            return 1;
        }
        seq += (uint32_t)n;
    }
    printf("producer: %u readings, %u short puts\n", READINGS, short_puts);
    shmq_close(q); /* the consumer drains what is left, then gets -EPIPE */
    return 0;
}

static int check(const struct iovec *m, uint32_t want_seq)
{
    struct reading r;
    if (m->iov_len < reading_len(0) || m->iov_len > sizeof r ||
        ((uintptr_t)m->iov_base & 7) != 0) /* at an 8-byte offset */
        return -1;
    memcpy(&r, m->iov_base, m->iov_len);
    if (r.seq != want_seq || r.count > MAX_VALS ||
        m->iov_len != reading_len(r.count))
        return -1;
    for (uint32_t i = 0; i < r.count; i++)
        if (r.values[i] != (uint64_t)r.seq * 31u + i)
            return -1;
    return 0;
}

static int consume(shmq_t *q)
{
    static _Alignas(8) unsigned char buf[16384];
    struct iovec msgs[MAXSIZE];
    uint32_t next = 0, calls = 0;
    int k;
    while ((k = shmq_get_many(q, buf, sizeof buf, msgs, MAXSIZE,
                              SHMQ_FOREVER)) > 0) {
        for (int i = 0; i < k; i++) /* msgs[i] points into buf */
            if (check(&msgs[i], next++) != 0) {
                fprintf(stderr, "reading %u: bad\n", next - 1);
                return 1;
            }
        calls++;
    }
    if (k != -EPIPE) { /* -EPIPE: closed and drained, the normal end */
        fprintf(stderr, "shmq_get_many: %s\n", shmq_strerror(k));
        return 1;
    }
    printf("consumer: %u readings in %u calls\n", next, calls);
    return next == READINGS ? 0 : 1;
}

/* The counts the rules promise, on a queue nobody else uses. */
static int check_counts(void)
{
    struct shmq_config cfg = {.maxsize = MAXSIZE};
    shmq_t *q;
    if (shmq_create(&q, &cfg) < 0)
        return 1;
    static struct reading r[MAXSIZE + 16];
    static struct iovec msgs[MAXSIZE + 16];
    for (uint32_t i = 0; i < MAXSIZE + 16; i++) {
        make_reading(&r[i], i);
        msgs[i] = (struct iovec){&r[i], reading_len(r[i].count)};
    }
    int failed = 0;
    /* More than could ever fit, all or none: refused at once. */
    if (shmq_put_many(q, msgs, MAXSIZE + 16, SHMQ_ALL, SHMQ_FOREVER) !=
        -EMSGSIZE)
        failed = 1;
    /* Without flags: what fits goes in (MAXSIZE), and the count says so. */
    if (shmq_put_many(q, msgs, MAXSIZE + 16, 0, SHMQ_NOWAIT) != (int)MAXSIZE ||
        shmq_qsize(q) != MAXSIZE)
        failed = 1;
    /* Full: none go in. */
    if (shmq_put_many(q, msgs, 1, 0, SHMQ_NOWAIT) != -EAGAIN)
        failed = 1;
    shmq_release(q);
    if (failed)
        fprintf(stderr, "put_many returned an unexpected count\n");
    return failed;
}

int main(void)
{
    if (check_counts() != 0)
        return 1;
    struct shmq_config cfg = {.maxsize = MAXSIZE};
    shmq_t *q;
    int rc = shmq_create(&q, &cfg);
    if (rc < 0) {
        fprintf(stderr, "shmq_create: %s\n", shmq_strerror(rc));
        return 1;
    }
    fflush(stdout);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        if (pids[i] == 0) { /* the children inherit q */
            int bad = i == 0 ? produce(q) : consume(q);
            fflush(stdout);
            _exit(bad);
        }
    }
    int failed = 0;
    for (int i = 0; i < 2; i++) {
        int status = 0;
        if (pids[i] < 0 || waitpid(pids[i], &status, 0) < 0 ||
            !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    shmq_release(q);
    return failed;
}
