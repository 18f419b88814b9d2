/* SPDX-License-Identifier: MIT */
/*
 * joinable_worker.c - the JoinableQueue worker pattern.
 *
 * The Python it replaces:
 *
 *     def worker(tasks, results):
 *         while True:
 *             n = tasks.get()
 *             results.put(n * n)
 *             tasks.task_done()
 *
 *     tasks, results = JoinableQueue(), Queue()
 *     for _ in range(3):
 *         Process(target=worker, args=(tasks, results), daemon=True).start()
 *     for n in range(1000): tasks.put(n)
 *     tasks.join()        # every task marked done: all results are in
 *
 * Workers call shmq_task_done() after they put their result, so once
 * shmq_join() returns, every result is already in the results queue.
 * shmq_close() then stops the workers (Python relies on daemon=True).
 * Exits 0 only if every task was done once and every result is right.
 */
#include <errno.h>
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 3
#define TASKS   1000u

static int worker(shmq_t *tasks, shmq_t *results)
{
    uint64_t n;
    size_t len;
    int rc;

    while ((rc = shmq_get(tasks, &n, sizeof n, &len, SHMQ_FOREVER)) == 0) {
        uint64_t square = n * n;
        if (shmq_put(results, &square, sizeof square, SHMQ_FOREVER) < 0)
            return 1;
        if (shmq_task_done(tasks) < 0)
            return 1;
    }
    return rc == -EPIPE ? 0 : 1; /* -EPIPE: closed, no more work */
}

int main(void)
{
    struct shmq_config tcfg = {.maxsize = 64, .flags = SHMQ_JOINABLE};
    struct shmq_config rcfg = {.maxsize = TASKS};
    shmq_t *tasks, *results;
    pid_t pids[WORKERS];
    int rc, failed = 0;

    if ((rc = shmq_create(&tasks, &tcfg)) < 0 ||
        (rc = shmq_create(&results, &rcfg)) < 0) {
        fprintf(stderr, "shmq_create: %s\n", shmq_strerror(rc));
        return 1;
    }
    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(worker(tasks, results));
    }

    for (uint64_t n = 0; n < TASKS && !failed; n++)
        failed = shmq_put(tasks, &n, sizeof n, SHMQ_SEC(10)) < 0;

    /* tasks.join(): wait until every task put was marked done. */
    if (!failed && (rc = shmq_join(tasks, SHMQ_SEC(10))) < 0) {
        fprintf(stderr, "shmq_join: %s\n", shmq_strerror(rc));
        failed = 1;
    }

    /* After join, all results are there: no waiting needed. */
    uint64_t count = 0, sum = 0, square;
    size_t len;
    while (shmq_get_nowait(results, &square, sizeof square, &len) == 0) {
        count++;
        sum += square;
    }

    shmq_close(tasks); /* stop the workers */
    for (int i = 0; i < WORKERS; i++) {
        int status = 0;
        if (pids[i] < 0 || waitpid(pids[i], &status, 0) < 0 ||
            !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    shmq_release(tasks);
    shmq_release(results);

    uint64_t want = (uint64_t)(TASKS - 1) * TASKS * (2 * TASKS - 1) / 6;
    printf("%llu results, sum of squares %llu (want %u, %llu)\n",
           (unsigned long long)count, (unsigned long long)sum, TASKS,
           (unsigned long long)want);
    return failed || count != TASKS || sum != want;
}
