/* SPDX-License-Identifier: MIT */
/*
 * producer_consumer.c - one producer, several consumer processes.
 *
 * The Python it replaces:
 *
 *     q = multiprocessing.Queue(maxsize=1024)
 *     for _ in range(4): Process(target=consume, args=(q, results)).start()
 *     for i in range(1, N + 1): q.put(i)
 *     for _ in range(4): q.put(None)   # one sentinel per consumer
 *
 * With shmq, fork() shares the queue and shmq_close() replaces the
 * sentinels: each consumer drains what is left, then gets -EPIPE.
 * Exits 0 only if every message was consumed exactly once.
 */
#include <errno.h>
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONSUMERS 4
#define MESSAGES  100000u

struct tally {
    uint64_t count;
    uint64_t sum;
};

/* A consumer: take messages until the queue is closed and drained. */
static int consume(shmq_t *q, shmq_t *results)
{
    struct tally t = {0, 0};
    uint64_t v;
    size_t len;
    int rc;

    while ((rc = shmq_get(q, &v, sizeof v, &len, SHMQ_FOREVER)) == 0) {
        t.count++;
        t.sum += v;
    }
    if (rc != -EPIPE) /* -EPIPE: closed and drained, the normal end */
        return 1;
    return shmq_put(results, &t, sizeof t, SHMQ_FOREVER) == 0 ? 0 : 1;
}

int main(void)
{
    struct shmq_config cfg = {.maxsize = 1024};
    shmq_t *q, *results;
    pid_t pids[CONSUMERS];
    int rc, failed = 0;

    if ((rc = shmq_create(&q, &cfg)) < 0 ||
        (rc = shmq_create(&results, NULL)) < 0) {
        fprintf(stderr, "shmq_create: %s\n", shmq_strerror(rc));
        return 1;
    }
    for (int i = 0; i < CONSUMERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(consume(q, results)); /* the child inherits q */
    }

    for (uint64_t i = 1; i <= MESSAGES; i++) {
        if ((rc = shmq_put(q, &i, sizeof i, SHMQ_FOREVER)) < 0) {
            fprintf(stderr, "shmq_put: %s\n", shmq_strerror(rc));
            failed = 1;
            break;
        }
    }
    shmq_close(q); /* instead of one None per consumer */

    for (int i = 0; i < CONSUMERS; i++) {
        int status = 0;
        if (pids[i] < 0 || waitpid(pids[i], &status, 0) < 0 ||
            !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }

    struct tally total = {0, 0}, t;
    size_t len;
    while (shmq_get_nowait(results, &t, sizeof t, &len) == 0) {
        total.count += t.count;
        total.sum += t.sum;
    }
    shmq_release(q);
    shmq_release(results);

    uint64_t want = (uint64_t)MESSAGES * (MESSAGES + 1) / 2;
    printf("consumed %llu messages, sum %llu (want %u, %llu)\n",
           (unsigned long long)total.count, (unsigned long long)total.sum,
           MESSAGES, (unsigned long long)want);
    return failed || total.count != MESSAGES || total.sum != want;
}
