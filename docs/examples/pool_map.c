/* SPDX-License-Identifier: MIT */
/*
 * pool_map.c - a process pool: map, submit/next, and a worker that dies.
 *
 * The Python it replaces:
 *
 *     def square(x): return x * x
 *     with multiprocessing.Pool(4) as pool:
 *         print(sum(pool.map(square, range(N))))
 *         r = pool.apply_async(crash)      # a worker segfaults:
 *         r.get()                          # Pool waits forever here
 *
 * With shmq_pool, the task that killed its worker completes with status
 * -EOWNERDEAD, the worker is replaced, and every other task completes.
 * Exits 0 only if every result is right.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <shmq.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#define N 100000

/* A task: the argument is an int64, the result its square. */
static int square(const void *arg, size_t len, void *out, size_t cap,
                  size_t *outlen, void *ctx)
{
    int64_t x;
    (void)cap, (void)ctx;
    if (len != sizeof x)
        return -EINVAL; /* the task's status, seen by the caller */
    memcpy(&x, arg, sizeof x);
    x *= x;
    memcpy(out, &x, sizeof x);
    *outlen = sizeof x;
    return 0;
}

/* A task that kills its worker, as a segfault or the OOM killer would. */
static int crash(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)arg, (void)len, (void)out, (void)cap, (void)outlen, (void)ctx;
    raise(SIGKILL);
    return 0;
}

static int64_t in[N], out[N];
static struct iovec args[N], results[N];
static int statuses[N];

int main(void)
{
    shmq_pool_t *pool;
    struct shmq_pool_config cfg = {.workers = 4};
    int rc = shmq_pool_create(&pool, &cfg);
    if (rc != 0) {
        fprintf(stderr, "create: %s\n", shmq_strerror(rc));
        return 1;
    }

    /* pool.map(square, range(N)): input order, batched. */
    for (int i = 0; i < N; i++) {
        in[i] = i;
        args[i] = (struct iovec){&in[i], sizeof in[i]};
        results[i] = (struct iovec){&out[i], sizeof out[i]};
    }
    rc = shmq_pool_map(pool, square, args, N, results, statuses, SHMQ_FOREVER);
    int64_t sum = 0;
    for (int i = 0; rc == 0 && i < N; i++) {
        if (statuses[i] != 0 || out[i] != (int64_t)i * i)
            rc = -EBADMSG;
        sum += out[i];
    }
    printf("map: %s, sum of squares %lld\n", shmq_strerror(rc), (long long)sum);

    /* apply_async of a crashing task among normal ones. */
    uint64_t dead, ok[8];
    int64_t x = 12;
    shmq_pool_submit(pool, crash, NULL, 0, &dead, SHMQ_FOREVER);
    for (int i = 0; i < 8; i++)
        shmq_pool_submit(pool, square, &x, sizeof x, &ok[i], SHMQ_FOREVER);

    int status;
    size_t len;
    int64_t r;
    int wrc = shmq_pool_wait(pool, dead, NULL, 0, &len, &status, SHMQ_FOREVER);
    struct shmq_pool_death d;
    if (wrc == 0 && status == -EOWNERDEAD &&
        shmq_pool_death(pool, dead, &d) == 0 && WIFSIGNALED(d.wstatus))
        printf("crash: worker %d killed by signal %d, task status %s\n",
               (int)d.pid, WTERMSIG(d.wstatus), shmq_strerror(status));
    else
        rc = -EBADMSG;
    for (int i = 0; i < 8; i++) {
        wrc = shmq_pool_wait(pool, ok[i], &r, sizeof r, &len, &status,
                             SHMQ_FOREVER);
        if (wrc != 0 || status != 0 || r != 144)
            rc = -EBADMSG;
    }

    shmq_pool_close(pool);
    shmq_pool_join(pool, SHMQ_FOREVER);
    shmq_pool_destroy(pool);
    printf("%s\n", rc == 0 ? "all results right" : "WRONG");
    return rc == 0 ? 0 : 1;
}
