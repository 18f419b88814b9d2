/* SPDX-License-Identifier: MIT */
/* stats.c - medians and latency percentiles. */
#include <stdlib.h>

#include "bench.h"

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Median of v (sorted in place); 0 for an empty set. */
double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Nearest-rank percentile of sorted samples. */
static double pct(const uint64_t *s, size_t n, double p)
{
    size_t k = (size_t)(p * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)s[k - 1];
}

void latency_summary(uint64_t *ns, size_t n, struct result *r)
{
    r->samples = n;
    if (n == 0)
        return;
    qsort(ns, n, sizeof(*ns), cmp_u64);
    r->p50 = pct(ns, n, 0.50);
    r->p99 = pct(ns, n, 0.99);
    r->p999 = pct(ns, n, 0.999);
    r->max = (double)ns[n - 1];
}
