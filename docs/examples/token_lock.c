/* SPDX-License-Identifier: MIT */
/*
 * token_lock.c - a one-message queue as a lock between processes.
 *
 * The Python it replaces:
 *
 *     token = multiprocessing.Queue(maxsize=1)
 *     token.put(None)
 *     def work(token, counter):
 *         for _ in range(N):
 *             token.get()          # take the token: enter
 *             counter.value += 1   # critical section
 *             token.put(None)      # give it back: leave
 *
 * The token is a 0-byte message. Whoever holds it may touch the shared
 * counter; a get that finds the queue empty sleeps until the holder puts
 * the token back. get acquires and put releases, so a plain, non-atomic
 * increment in MAP_SHARED memory is enough. Exits 0 only if the count is
 * exact and no two processes were ever inside at once.
 */
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define ROUNDS  5000

struct shared {
    uint64_t counter;    /* touched only by the token holder */
    uint32_t inside;     /* processes in the critical section */
    uint32_t collisions; /* times someone found it occupied */
};

static int work(shmq_t *token, struct shared *s)
{
    size_t len;

    for (int i = 0; i < ROUNDS; i++) {
        if (shmq_get(token, NULL, 0, &len, SHMQ_FOREVER) < 0) /* enter */
            return 1;
        if (s->inside++ != 0)
            s->collisions++;
        s->counter++;
        s->inside--;
        if (shmq_put(token, NULL, 0, SHMQ_FOREVER) < 0) /* leave */
            return 1;
    }
    return 0;
}

int main(void)
{
    struct shmq_config cfg = {.maxsize = 1};
    shmq_t *token;
    pid_t pids[WORKERS];
    int rc, failed = 0;

    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    if ((rc = shmq_create(&token, &cfg)) < 0 ||
        (rc = shmq_put_nowait(token, NULL, 0)) < 0) { /* the one token */
        fprintf(stderr, "token: %s\n", shmq_strerror(rc));
        return 1;
    }

    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(work(token, s));
    }
    for (int i = 0; i < WORKERS; i++) {
        int status = 0;
        if (pids[i] < 0 || waitpid(pids[i], &status, 0) < 0 ||
            !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }

    /* The token is back in the queue, and there is room for no other. */
    if (shmq_qsize(token) != 1 || !shmq_full(token))
        failed = 1;
    shmq_release(token);

    printf("counter %llu (want %d), collisions %u\n",
           (unsigned long long)s->counter, WORKERS * ROUNDS, s->collisions);
    failed |= s->counter != (uint64_t)WORKERS * ROUNDS || s->collisions != 0;
    munmap(s, sizeof *s);
    return failed;
}
