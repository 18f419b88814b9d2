/* SPDX-License-Identifier: MIT */
/*
 * zerocopy.c - records written and read in place, in the queue's memory.
 *
 * The parent reserves room for the largest record (shmq_put_begin),
 * writes a variable-length record straight into the queue, and commits
 * only the bytes it wrote (shmq_put_commit). A forked child reads each
 * record where it lies (shmq_get_begin), checks it as untrusted input,
 * and gives its room back (shmq_get_end). No message is copied by the
 * library on either side.
 *
 * Exits 0 only if the child received every record, intact and in order.
 */
#include <errno.h>
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define RECORDS    20000u
#define MAX_VALUES 32u

/* A record: a fixed header, then count values. */
struct reading {
    uint32_t seq;
    uint32_t count;
    uint64_t values[]; /* 8-byte aligned: put_begin's data is */
};

#define MAX_RECORD (sizeof(struct reading) + MAX_VALUES * sizeof(uint64_t))

static uint64_t value(uint32_t seq, uint32_t i)
{
    return (uint64_t)seq * 1000003u + i;
}

static int produce(shmq_t *q)
{
    for (uint32_t seq = 0; seq < RECORDS; seq++) {
        struct shmq_msg m;
        int rc = shmq_put_begin(q, MAX_RECORD, &m, SHMQ_FOREVER);
        if (rc < 0) {
            fprintf(stderr, "shmq_put_begin: %s\n", shmq_strerror(rc));
            return 1;
        }
        /* Written in place; the bytes there may be an older record's. */
        struct reading *r = m.data;
        r->seq = seq;
        r->count = 1 + seq % MAX_VALUES;
        for (uint32_t i = 0; i < r->count; i++)
            r->values[i] = value(seq, i);
        size_t len = sizeof *r + r->count * sizeof r->values[0];
        rc = shmq_put_commit(q, &m, len); /* delivers the first len bytes */
        if (rc < 0) {
            fprintf(stderr, "shmq_put_commit: %s\n", shmq_strerror(rc));
            return 1;
        }
    }
    return 0;
}

/* Check one record where it lies. The bytes are in shared memory that
 * any holder of the queue can write: read each field once into a local,
 * check it against the message's length, and use only the local. */
static int check(const struct shmq_msg *m, uint32_t want_seq)
{
    struct reading head;
    if (m->len < sizeof head)
        return -1;
    memcpy(&head, m->data, sizeof head);
    if (head.seq != want_seq || head.count == 0 || head.count > MAX_VALUES ||
        m->len != sizeof head + head.count * sizeof(uint64_t))
        return -1;
    const struct reading *r = m->data;
    for (uint32_t i = 0; i < head.count; i++)
        if (r->values[i] != value(head.seq, i))
            return -1;
    return 0;
}

static int consume(shmq_t *q)
{
    uint32_t next = 0;
    struct shmq_msg m;
    int rc;
    while ((rc = shmq_get_begin(q, &m, SHMQ_FOREVER)) == 0) {
        int bad = check(&m, next);
        shmq_get_end(q, &m); /* m.data is not ours after this */
        if (bad) {
            fprintf(stderr, "record %u: bad\n", next);
            return 1;
        }
        next++;
    }
    if (rc != -EPIPE) { /* -EPIPE: closed and drained, the normal end */
        fprintf(stderr, "shmq_get_begin: %s\n", shmq_strerror(rc));
        return 1;
    }
    return next == RECORDS ? 0 : 1;
}

int main(void)
{
    /* Room for 64 records at most, and at most 16 of the largest. */
    struct shmq_config cfg = {
        .maxsize = 64, .capacity = 16 * MAX_RECORD, .max_message = MAX_RECORD};
    shmq_t *q;
    int rc = shmq_create(&q, &cfg);
    if (rc < 0) {
        fprintf(stderr, "shmq_create: %s\n", shmq_strerror(rc));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0)
        _exit(consume(q)); /* the child inherits q */

    int failed = produce(q);
    shmq_close(q); /* the child drains what is left, then gets -EPIPE */

    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        failed = 1;
    shmq_release(q);
    if (!failed)
        printf("%u records written and read in place\n", RECORDS);
    return failed;
}
