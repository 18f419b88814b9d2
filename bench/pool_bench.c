/* SPDX-License-Identifier: MIT */
/*
 * pool_bench.c - shmq-pool-bench: shmq_pool against Python's process
 * pools, doing the same work in the same run.
 *
 *   tiny   : add two integers       - what one task costs the pool
 *   medium : CRC-32 of 4 KiB (zlib) - work that dominates; compared with
 *            the ideal: one process hashing alone, divided by workers
 *
 * shmq: submit/next one task at a time (each task its own submit and its
 * own next, as apply_async and executor.submit), and map (batched). Each
 * result is checked. Python: bench/pool_bench.py (apply_async,
 * ProcessPoolExecutor.submit, Pool.map with its default chunking).
 *
 * Usage: shmq-pool-bench [--quick] [--workers N] [--no-python]
 * Prints a Markdown table (tasks/s, and shmq's ratio to each Python row).
 * Exit status 1 if any result was wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "shmq.h"

#define BLOCK 4096

#define MAX_ROUNDS 9

struct row {
    char name[48];
    double rate[MAX_ROUNDS]; /* tasks/s, per round */
    unsigned n;
};

static struct row rows[32];
static unsigned nrows;
static bool all_ok = true;

static struct row *row_of(const char *name, bool make)
{
    for (unsigned i = 0; i < nrows; i++)
        if (strcmp(rows[i].name, name) == 0)
            return &rows[i];
    if (!make || nrows == sizeof rows / sizeof rows[0])
        return NULL;
    struct row *r = &rows[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void add_row(const char *name, size_t n, double secs, bool ok)
{
    struct row *r = row_of(name, true);
    double rate = secs > 0 ? (double)n / secs : 0;
    if (r && r->n < MAX_ROUNDS)
        r->rate[r->n++] = rate;
    all_ok = all_ok && ok;
    fprintf(stderr, "  %-34s %12.0f tasks/s%s\n", name, rate,
            ok ? "" : "  WRONG RESULTS");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, unsigned n)
{
    double s[MAX_ROUNDS];
    if (n == 0)
        return 0;
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* ------------------------------------------------------------------ */
/* Tasks                                                                */
/* ------------------------------------------------------------------ */

static int t_add(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)len, (void)cap, (void)ctx;
    int64_t ab[2];
    memcpy(ab, arg, sizeof ab);
    int64_t s = ab[0] + ab[1];
    memcpy(out, &s, sizeof s);
    *outlen = sizeof s;
    return 0;
}

static uint32_t crc_of(const void *buf, size_t len)
{
    return (uint32_t)crc32(0L, buf, (uInt)len);
}

static int t_crc(const void *arg, size_t len, void *out, size_t cap,
                 size_t *outlen, void *ctx)
{
    (void)cap, (void)ctx;
    uint32_t c = crc_of(arg, len);
    memcpy(out, &c, sizeof c);
    *outlen = sizeof c;
    return 0;
}

/* Task i's 4 KiB block: i repeated, as pool_bench.py builds it. */
static void block(unsigned char *b, uint64_t i)
{
    for (size_t k = 0; k < BLOCK; k += 8)
        memcpy(b + k, &i, 8);
}

/* ------------------------------------------------------------------ */
/* shmq                                                                 */
/* ------------------------------------------------------------------ */

/* Inputs of the tickets in flight: open addressing on the ticket. */
#define HT_SIZE (1u << 16) /* above twice SHMQ_POOL_MAX_PENDING */
static uint64_t ht_key[HT_SIZE];
static uint32_t ht_val[HT_SIZE];

static uint32_t ht_slot(uint64_t t)
{
    return (uint32_t)((t * 0x9e3779b97f4a7c15ull) >> 48) & (HT_SIZE - 1);
}

static void ht_put(uint64_t t, uint32_t v)
{
    uint32_t h = ht_slot(t);
    while (ht_key[h])
        h = (h + 1) & (HT_SIZE - 1);
    ht_key[h] = t;
    ht_val[h] = v;
}

/* The input of t, removed; false if t was not in flight. */
static bool ht_take(uint64_t t, uint32_t *v)
{
    uint32_t h = ht_slot(t);
    while (ht_key[h] != t) {
        if (!ht_key[h])
            return false;
        h = (h + 1) & (HT_SIZE - 1);
    }
    *v = ht_val[h];
    /* backward-shift deletion keeps every probe chain whole */
    for (uint32_t j = (h + 1) & (HT_SIZE - 1); ht_key[j];
         j = (j + 1) & (HT_SIZE - 1)) {
        uint32_t home = ht_slot(ht_key[j]);
        if (((j - home) & (HT_SIZE - 1)) >= ((j - h) & (HT_SIZE - 1))) {
            ht_key[h] = ht_key[j];
            ht_val[h] = ht_val[j];
            h = j;
        }
    }
    ht_key[h] = 0;
    return true;
}

/* Submit args[0..n) one task at a time, collecting with next whenever
 * the pool is saturated, then the rest. Each result is compared with
 * its expected value (esize bytes at expect + i * esize), computed
 * before the clock started, as Python's inputs are built before its. */
static bool submit_next(shmq_pool_t *p, shmq_task_fn fn,
                        const struct iovec *args, size_t n, const void *expect,
                        size_t esize)
{
    unsigned char res[64];
    size_t got = 0;
    bool ok = true;
    for (size_t i = 0; ok && (i < n || got < n);) {
        int rc = -EAGAIN;
        uint64_t t;
        if (i < n) {
            rc = shmq_pool_submit(p, fn, args[i].iov_base, args[i].iov_len, &t,
                                  SHMQ_NOWAIT);
            if (rc == 0) {
                ht_put(t, (uint32_t)i++);
                continue;
            }
        }
        size_t len;
        int st;
        uint32_t in = 0;
        rc = shmq_pool_next(p, &t, res, sizeof res, &len, &st, SHMQ_FOREVER);
        ok =
            rc == 0 && st == 0 && ht_take(t, &in) && len == esize &&
            memcmp(res, (const unsigned char *)expect + in * esize, esize) == 0;
        got++;
    }
    return ok;
}

static void bench_shmq_tiny(shmq_pool_t *p, size_t n_submit, size_t n_map)
{
    size_t n = n_submit > n_map ? n_submit : n_map;
    int64_t *in = malloc(n * 2 * sizeof *in);
    int64_t *expect = malloc(n * sizeof *expect);
    int64_t *out = malloc(n * sizeof *out);
    struct iovec *args = malloc(n * sizeof *args);
    struct iovec *res = malloc(n * sizeof *res);
    int *st = malloc(n * sizeof *st);
    if (!in || !expect || !out || !args || !res || !st) {
        add_row("tiny map", 0, 0, false);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        in[2 * i] = in[2 * i + 1] = (int64_t)i;
        expect[i] = (int64_t)(2 * i);
        args[i] = (struct iovec){&in[2 * i], 16};
        res[i] = (struct iovec){&out[i], sizeof out[i]};
    }
    double t = now();
    bool ok = submit_next(p, t_add, args, n_submit, expect, sizeof *expect);
    add_row("tiny submit/next", n_submit, now() - t, ok);

    t = now();
    int rc = shmq_pool_map(p, t_add, args, n_map, res, st, SHMQ_FOREVER);
    double secs = now() - t;
    ok = rc == 0;
    for (size_t i = 0; ok && i < n_map; i++)
        ok = st[i] == 0 && out[i] == expect[i];
    add_row("tiny map", n_map, secs, ok);
    free(in), free(expect), free(out), free(args), free(res), free(st);
}

static void bench_shmq_medium(shmq_pool_t *p, unsigned workers, size_t n)
{
    unsigned char *blocks = malloc(n * BLOCK);
    uint32_t *out = malloc(n * sizeof *out);
    uint32_t *expect = malloc(n * sizeof *expect);
    struct iovec *args = malloc(n * sizeof *args);
    struct iovec *res = malloc(n * sizeof *res);
    int *st = malloc(n * sizeof *st);
    if (!blocks || !out || !expect || !args || !res || !st) {
        add_row("medium map", 0, 0, false);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        block(blocks + i * BLOCK, i);
        args[i] = (struct iovec){blocks + i * BLOCK, BLOCK};
        res[i] = (struct iovec){&out[i], sizeof out[i]};
    }
    /* The ideal: one process hashing alone, divided by the workers. */
    double t = now();
    for (size_t i = 0; i < n; i++)
        expect[i] = crc_of(blocks + i * BLOCK, BLOCK);
    double serial = now() - t;
    add_row("medium ideal (serial / workers)", n, serial / workers, true);

    t = now();
    bool ok = submit_next(p, t_crc, args, n, expect, sizeof *expect);
    add_row("medium submit/next", n, now() - t, ok);

    t = now();
    int rc = shmq_pool_map(p, t_crc, args, n, res, st, SHMQ_FOREVER);
    double secs = now() - t;
    ok = rc == 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = st[i] == 0 && out[i] == expect[i];
    add_row("medium map", n, secs, ok);
    free(blocks), free(out), free(expect), free(args), free(res), free(st);
}

/* ------------------------------------------------------------------ */
/* Python                                                               */
/* ------------------------------------------------------------------ */

static void bench_python(unsigned workers, double scale)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 '%s' %u %g", SHMQ_POOL_BENCH_PY, workers,
             scale);
    FILE *f = popen(cmd, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char name[48] = "py ";
        const char *c = strstr(line, "\"case\": \"");
        const char *n = strstr(line, "\"tasks\": ");
        const char *s = strstr(line, "\"seconds\": ");
        if (!c || !n || !s)
            continue;
        c += 9;
        size_t len = strcspn(c, "\"");
        if (len > sizeof name - 4)
            len = sizeof name - 4;
        memcpy(name + 3, c, len);
        name[3 + len] = 0;
        add_row(name, (size_t)strtod(n + 9, NULL), strtod(s + 11, NULL),
                strstr(line, "\"ok\": true") != NULL);
    }
    if (!f || pclose(f) != 0)
        fprintf(stderr, "python3 run failed: Python rows missing\n");
}

/* ------------------------------------------------------------------ */
/* Report                                                               */
/* ------------------------------------------------------------------ */

/* The median over rounds of the per-round ratio (both rows were
 * measured in the same round, under the same load), with its range. */
static void ratio(const char *what, const char *shmq, const char *py)
{
    struct row *a = row_of(shmq, false), *b = row_of(py, false);
    if (!a || !b)
        return;
    double r[MAX_ROUNDS];
    unsigned n = a->n < b->n ? a->n : b->n, k = 0;
    for (unsigned i = 0; i < n; i++)
        if (b->rate[i] > 0)
            r[k++] = a->rate[i] / b->rate[i];
    if (k == 0)
        return;
    double lo = r[0], hi = r[0];
    for (unsigned i = 1; i < k; i++) {
        lo = r[i] < lo ? r[i] : lo;
        hi = r[i] > hi ? r[i] : hi;
    }
    printf("| %s | %s / %s | %.2fx (%.2f-%.2f) |\n", what, shmq, py,
           median(r, k), lo, hi);
}

static void report(unsigned workers, unsigned rounds)
{
    printf("\nshmq-pool-bench: %u workers, %ld CPUs, %u rounds\n\n", workers,
           sysconf(_SC_NPROCESSORS_ONLN), rounds);
    printf("| case | tasks/s (median) |\n|---|---:|\n");
    for (unsigned i = 0; i < nrows; i++)
        printf("| %s | %.0f |\n", rows[i].name,
               median(rows[i].rate, rows[i].n));
    printf("\n| comparison | rows | shmq / other, median (min-max) of "
           "per-round ratios |\n|---|---|---:|\n");
    ratio("per task vs apply_async", "tiny submit/next", "py tiny apply_async");
    ratio("per task vs executor.submit", "tiny submit/next",
          "py tiny executor.submit");
    ratio("map vs Pool.map", "tiny map", "py tiny Pool.map");
    ratio("medium per task vs apply_async", "medium submit/next",
          "py medium apply_async");
    ratio("medium map vs Pool.map", "medium map", "py medium Pool.map");
    ratio("medium submit/next vs ideal", "medium submit/next",
          "medium ideal (serial / workers)");
    ratio("medium map vs ideal", "medium map",
          "medium ideal (serial / workers)");
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    unsigned workers = 0, rounds = 3;
    bool python = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            scale = 0.1, rounds = 1;
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            workers = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-python") == 0)
            python = false;
        else {
            fprintf(stderr,
                    "usage: %s [--quick] [--rounds N] [--workers N] "
                    "[--no-python]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS)
        rounds = 3;
    if (python &&
        system("python3 -c 'import multiprocessing' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "python3 not found: Python rows missing\n");
        python = false;
    }
    for (unsigned r = 0; r < rounds; r++) {
        shmq_pool_t *p;
        struct shmq_pool_config cfg = {.workers = workers};
        int rc = shmq_pool_create(&p, &cfg);
        if (rc != 0) {
            fprintf(stderr, "shmq_pool_create: %s\n", shmq_strerror(rc));
            return 1;
        }
        workers = shmq_pool_workers(p);
        fprintf(stderr, "round %u: %u workers\n", r + 1, workers);
        bench_shmq_tiny(p, (size_t)(2000000 * scale),
                        (size_t)(10000000 * scale));
        bench_shmq_medium(p, workers, (size_t)(50000 * scale));
        shmq_pool_close(p);
        shmq_pool_join(p, SHMQ_FOREVER);
        shmq_pool_destroy(p);
        if (python)
            bench_python(workers, scale);
    }
    report(workers, rounds);
    return all_ok ? 0 : 1;
}
