/* SPDX-License-Identifier: MIT */
/*
 * report.c - what a run found: the Markdown tables on stdout, the JSON
 * file, the ratios of shmq to pipe, to the fastest peer and to the
 * matching limit (each taken within a round, then the median and the
 * min-max over rounds), and the targets of the issue, met or missed.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "bench.h"

#ifndef SHMQ_VERSION
#define SHMQ_VERSION "unknown"
#endif
#ifdef HAVE_ZMQ
#include <zmq.h>
#endif
#ifdef HAVE_BOOST
const char *bmq_boost_version(void);
#endif

double get_msg_rate(const struct result *r)
{
    return r->msg_rate;
}
double get_byte_rate(const struct result *r)
{
    return r->byte_rate;
}
double get_p50(const struct result *r)
{
    return r->p50;
}
double get_p99(const struct result *r)
{
    return r->p99;
}
double get_p999(const struct result *r)
{
    return r->p999;
}
double get_max(const struct result *r)
{
    return r->max;
}

const char *size_name(size_t size)
{
    static char buf[4][32];
    static int k;
    char *s = buf[k++ & 3];
    if (size >= (1u << 20) && size % (1u << 20) == 0)
        snprintf(s, 32, "%zu MiB", size >> 20);
    else if (size >= 1024 && size % 1024 == 0)
        snprintf(s, 32, "%zu KiB", size >> 10);
    else
        snprintf(s, 32, "%zu B", size);
    return s;
}

const char *machine_cpu(void)
{
    static char model[128] = "unknown";
    char line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof(line), f)) {
        char *c = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && c) {
            snprintf(model, sizeof(model), "%s", c + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    }
    if (f)
        fclose(f);
    return model;
}

static bool good(const struct result *r)
{
    return r->ran && !r->failed;
}

/* The figure a cell is judged by: messages/s, or the p50 round trip. */
static double key(const struct cell *c, const struct result *r)
{
    return c->sc == SC_THROUGHPUT ? r->msg_rate : r->p50;
}

double cell_median(const struct bench *b, size_t cell, size_t col,
                   double (*get)(const struct result *))
{
    double v[BENCH_MAX_ROUNDS];
    size_t n = 0;
    for (unsigned r = 0; r < b->rounds; r++) {
        const struct result *x = res_at(b, r, cell, col);
        if (good(x) && get(x) > 0)
            v[n++] = get(x);
    }
    return n ? median(v, n) : NAN;
}

static int col_of(const struct bench *b, const char *name)
{
    for (size_t j = 0; j < b->ncols; j++)
        if (!strcmp(b->cols[j].name, name))
            return (int)j;
    return -1;
}

static int find_cell(const struct bench *b, enum scenario sc, unsigned n,
                     size_t size, enum wait_mode mode)
{
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        if (c->sc == sc && c->producers == n && c->size == size &&
            (sc == SC_THROUGHPUT || c->mode == mode))
            return (int)k;
    }
    return -1;
}

static struct ratio summarize(double *v, size_t n)
{
    struct ratio q = {0};
    if (!n)
        return q;
    q.valid = true;
    q.min = q.max = v[0];
    for (size_t i = 1; i < n; i++) {
        q.min = fmin(q.min, v[i]);
        q.max = fmax(q.max, v[i]);
    }
    q.med = median(v, n);
    return q;
}

/* Ratio within each round of figure(a in cell ka) / figure(b in cell kb);
 * col_b FASTEST_PEER means the fastest peer of that round; a missing
 * column (-1) gives no ratio. */
#define FASTEST_PEER (-2)

static struct ratio ratio_of(const struct bench *b, int ka, int col_a, int kb,
                             int col_b, double (*get)(const struct result *))
{
    double v[BENCH_MAX_ROUNDS];
    size_t n = 0;
    if (ka < 0 || kb < 0 || col_a < 0 || col_b == -1)
        return (struct ratio){0};
    const struct cell *cb = &b->cells[kb];
    for (unsigned r = 0; r < b->rounds; r++) {
        const struct result *x = res_at(b, r, (size_t)ka, (size_t)col_a);
        double y = NAN;
        if (col_b >= 0) {
            const struct result *z = res_at(b, r, (size_t)kb, (size_t)col_b);
            if (good(z))
                y = get ? get(z) : key(cb, z);
        } else {
            for (size_t j = 0; j < b->ncols; j++) {
                const struct result *z = res_at(b, r, (size_t)kb, j);
                if (b->cols[j].kind != TK_PEER || !good(z) || key(cb, z) <= 0)
                    continue;
                double w = key(cb, z);
                if (isnan(y) || (cb->sc == SC_THROUGHPUT ? w > y : w < y))
                    y = w;
            }
        }
        double xa = good(x) ? (get ? get(x) : key(&b->cells[ka], x)) : NAN;
        if (!isnan(xa) && !isnan(y) && y > 0 && xa > 0)
            v[n++] = xa / y;
    }
    return summarize(v, n);
}

/* The peer with the best median in a cell, for the table. */
static int best_peer(const struct bench *b, size_t k)
{
    int best = -1;
    double bv = NAN;
    for (size_t j = 0; j < b->ncols; j++) {
        if (b->cols[j].kind != TK_PEER)
            continue;
        double m = cell_median(
            b, k, j, b->cells[k].sc == SC_THROUGHPUT ? get_msg_rate : get_p50);
        if (isnan(m))
            continue;
        if (isnan(bv) || (b->cells[k].sc == SC_THROUGHPUT ? m > bv : m < bv))
            bv = m, best = (int)j;
    }
    return best;
}

/* The limit a shmq cell is compared with, and in which cell it is. */
static int limit_of(const struct bench *b, size_t k, int *cell)
{
    const struct cell *c = &b->cells[k];
    if (c->sc == SC_THROUGHPUT) {
        *cell = find_cell(b, SC_THROUGHPUT, 1, c->size, WAIT_BLOCK);
        return col_of(b, "ring");
    }
    *cell = (int)k;
    return col_of(b, c->mode == WAIT_BLOCK ? "futex" : "spin");
}

static void fmt_ratio(char *buf, size_t n, struct ratio q)
{
    if (!q.valid)
        snprintf(buf, n, "–");
    else if (q.min == q.max)
        snprintf(buf, n, "%.2f", q.med);
    else
        snprintf(buf, n, "%.2f (%.2f–%.2f)", q.med, q.min, q.max);
}

static void fmt_si(char *buf, size_t n, double v)
{
    static const char *suf[] = {"", " k", " M", " G", " T"};
    int i = 0;
    while (v >= 1000 && i < 4)
        v /= 1000, i++;
    snprintf(buf, n,
             v >= 100  ? "%.0f%s"
             : v >= 10 ? "%.1f%s"
                       : "%.2f%s",
             v, suf[i]);
}

static void fmt_us(char *buf, size_t n, double ns)
{
    double us = ns / 1000;
    snprintf(buf, n, us >= 100 ? "%.0f" : us >= 10 ? "%.1f" : "%.2f", us);
}

/* A table cell: the median, or why there is none. */
static void fmt_cell(const struct bench *b, size_t k, size_t j,
                     double (*get)(const struct result *), bool us, char *buf,
                     size_t n)
{
    const struct result *r0 = res_at(b, 0, k, j);
    bool any_failed = false, any_ran = false;
    for (unsigned r = 0; r < b->rounds; r++) {
        any_failed |= res_at(b, r, k, j)->failed;
        any_ran |= res_at(b, r, k, j)->ran;
    }
    if (any_failed) {
        snprintf(buf, n, "FAIL");
        return;
    }
    if (!any_ran) {
        snprintf(buf, n, "%s", r0->note[0] ? "n/a" : "");
        return;
    }
    double m = cell_median(b, k, j, get);
    if (isnan(m))
        snprintf(buf, n, "–");
    else if (us)
        fmt_us(buf, n, m);
    else
        fmt_si(buf, n, m);
}

static bool col_in_scenario(const struct bench *b, size_t j, enum scenario sc)
{
    for (size_t k = 0; k < b->ncells; k++)
        if (b->cells[k].sc == sc && column_applies(&b->cols[j], &b->cells[k]))
            return true;
    return false;
}

static void throughput_table(const struct bench *b, FILE *out,
                             double (*get)(const struct result *),
                             const char *title)
{
    char v[64];
    fprintf(out, "\n### %s\n\n| P×C | size |", title);
    for (size_t j = 0; j < b->ncols; j++)
        if (col_in_scenario(b, j, SC_THROUGHPUT))
            fprintf(out, " %s |", b->cols[j].label);
    fprintf(out, "\n|---|---:|");
    for (size_t j = 0; j < b->ncols; j++)
        if (col_in_scenario(b, j, SC_THROUGHPUT))
            fprintf(out, "---:|");
    fputc('\n', out);
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        if (c->sc != SC_THROUGHPUT)
            continue;
        fprintf(out, "| %ux%u | %s |", c->producers, c->consumers,
                size_name(c->size));
        for (size_t j = 0; j < b->ncols; j++) {
            if (!col_in_scenario(b, j, SC_THROUGHPUT))
                continue;
            if (column_applies(&b->cols[j], c))
                fmt_cell(b, k, j, get, false, v, sizeof(v));
            else
                v[0] = 0;
            fprintf(out, b->cols[j].kind == TK_SHMQ ? " **%s** |" : " %s |", v);
        }
        fputc('\n', out);
    }
}

/* shmq's ratios in cell k: to the pipe, to the fastest peer (whose
 * column goes to *peer), to the cell's physical limit (its column to
 * *limit, the cell it was measured in to *lk). */
struct shmq_ratios {
    char pipe[64], peer[64], limit[64];
    int peer_col, limit_col, limit_cell;
};

static void shmq_ratios_of(const struct bench *b, size_t k, int s,
                           struct shmq_ratios *r)
{
    int pipe = col_of(b, "pipe");
    r->limit_col = limit_of(b, k, &r->limit_cell);
    r->peer_col = best_peer(b, k);
    fmt_ratio(r->pipe, sizeof(r->pipe),
              ratio_of(b, (int)k, s, (int)k, pipe, NULL));
    fmt_ratio(r->peer, sizeof(r->peer),
              ratio_of(b, (int)k, s, (int)k, FASTEST_PEER, NULL));
    fmt_ratio(r->limit, sizeof(r->limit),
              ratio_of(b, (int)k, s, r->limit_cell, r->limit_col, NULL));
}

static const char *label_of(const struct bench *b, int col)
{
    return col >= 0 ? b->cols[col].label : "–";
}

static void throughput_ratios(const struct bench *b, FILE *out)
{
    int s = col_of(b, "shmq"), mc = col_of(b, "memcpy");
    int vy = col_of(b, "vyukov");
    char m[64], v[64];
    if (s < 0)
        return;
    fprintf(out, "\n### shmq throughput ratios (shmq ÷ other, messages/s; "
                 "median (min–max) of per-round ratios; higher is better)\n\n"
                 "| P×C | size | ÷ pipe | ÷ fastest peer | fastest peer |"
                 " ÷ raw SPSC ring (1x1) | ÷ Vyukov MPMC ring |"
                 " ÷ memcpy (bytes/s) |\n"
                 "|---|---:|---:|---:|---|---:|---:|---:|\n");
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        struct shmq_ratios r;
        if (c->sc != SC_THROUGHPUT)
            continue;
        shmq_ratios_of(b, k, s, &r);
        fmt_ratio(m, sizeof(m),
                  ratio_of(b, (int)k, s, r.limit_cell, mc, get_byte_rate));
        fmt_ratio(v, sizeof(v), ratio_of(b, (int)k, s, (int)k, vy, NULL));
        fprintf(out, "| %ux%u | %s | %s | %s | %s | %s | %s | %s |\n",
                c->producers, c->consumers, size_name(c->size), r.pipe, r.peer,
                label_of(b, r.peer_col), r.limit, v, m);
    }
}

/* Median over rounds of the mean fill, or NAN where never sampled. */
static double fill_median(const struct bench *b, size_t k, size_t j)
{
    double v[BENCH_MAX_ROUNDS];
    size_t n = 0;
    for (unsigned r = 0; r < b->rounds; r++) {
        const struct result *x = res_at(b, r, k, j);
        if (good(x) && x->fill >= 0)
            v[n++] = x->fill;
    }
    return n ? median(v, n) : NAN;
}

/* Which side waited: a queue near 0 ran empty (consumers wait for
 * producers), near 1 full (producers wait for consumers). */
static void fill_table(const struct bench *b, FILE *out)
{
    bool has[BENCH_MAX_COLS] = {0}, any = false;
    for (size_t j = 0; j < b->ncols; j++)
        for (size_t k = 0; k < b->ncells; k++)
            if (b->cols[j].how == HOW_HARNESS && b->cols[j].t->fill &&
                b->cells[k].sc == SC_THROUGHPUT && !isnan(fill_median(b, k, j)))
                has[j] = any = true;
    if (!any)
        return;
    fprintf(out, "\n### Queue fill while the producers ran (mean fraction "
                 "of the queue in use, sampled every 4-5 ms; median over "
                 "rounds; 0 = empty, consumers wait; 1 = full, producers "
                 "wait)\n\n| P×C | size |");
    for (size_t j = 0; j < b->ncols; j++)
        if (has[j])
            fprintf(out, " %s |", b->cols[j].label);
    fprintf(out, "\n|---|---:|");
    for (size_t j = 0; j < b->ncols; j++)
        if (has[j])
            fprintf(out, "---:|");
    fputc('\n', out);
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        if (c->sc != SC_THROUGHPUT)
            continue;
        fprintf(out, "| %ux%u | %s |", c->producers, c->consumers,
                size_name(c->size));
        for (size_t j = 0; j < b->ncols; j++) {
            double f = has[j] ? fill_median(b, k, j) : NAN;
            if (has[j] && isnan(f))
                fprintf(out, "  |");
            else if (has[j])
                fprintf(out, " %.2f |", f);
        }
        fputc('\n', out);
    }
}

static void latency_tables(const struct bench *b, FILE *out)
{
    int s = col_of(b, "shmq");
    char v[4][32];
    bool any = false;
    for (size_t k = 0; k < b->ncells; k++)
        any |= b->cells[k].sc == SC_LATENCY;
    if (!any)
        return;
    fprintf(out, "\n### Ping-pong round trip, µs (median over rounds of "
                 "each percentile)\n\n| size | wait | transport | p50 | p99 |"
                 " p99.9 | max |\n|---:|---|---|---:|---:|---:|---:|\n");
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        if (c->sc != SC_LATENCY)
            continue;
        for (size_t j = 0; j < b->ncols; j++) {
            if (!column_applies(&b->cols[j], c))
                continue;
            fmt_cell(b, k, j, get_p50, true, v[0], 32);
            fmt_cell(b, k, j, get_p99, true, v[1], 32);
            fmt_cell(b, k, j, get_p999, true, v[2], 32);
            fmt_cell(b, k, j, get_max, true, v[3], 32);
            const char *f =
                b->cols[j].kind == TK_SHMQ
                    ? "| %s | %s | **%s** | **%s** | %s | %s | %s |\n"
                    : "| %s | %s | %s | %s | %s | %s | %s |\n";
            fprintf(out, f, size_name(c->size),
                    c->mode == WAIT_BLOCK ? "blocking" : "adaptive",
                    b->cols[j].label, v[0], v[1], v[2], v[3]);
        }
    }
    if (s < 0)
        return;
    fprintf(out, "\n### shmq latency ratios (shmq p50 ÷ other p50; median "
                 "(min–max) of per-round ratios; lower is better)\n\n"
                 "| size | wait | ÷ pipe | ÷ fastest peer | fastest peer |"
                 " ÷ floor | floor | ÷ ring floor (same payload) |\n"
                 "|---:|---|---:|---:|---|---:|---|---:|\n");
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        struct shmq_ratios r;
        if (c->sc != SC_LATENCY)
            continue;
        shmq_ratios_of(b, k, s, &r);
        fmt_ratio(v[0], sizeof(v[0]),
                  ratio_of(b, (int)k, s, (int)k, col_of(b, "ringpp"), NULL));
        fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
                size_name(c->size),
                c->mode == WAIT_BLOCK ? "blocking" : "adaptive", r.pipe, r.peer,
                label_of(b, r.peer_col), r.limit, label_of(b, r.limit_col),
                v[0]);
    }
}

/* ---------------------------------------------------------------- */
/* stall                                                              */
/* ---------------------------------------------------------------- */

/* Rate of the others during each stop over their rate in the free part
 * of the same second, median (min-max) over the seconds. */
static struct ratio stall_ratio(const struct stall_result *r)
{
    double v[BENCH_MAX_ROUNDS];
    size_t n = 0;
    if (!r->ran || r->failed)
        return (struct ratio){0};
    for (unsigned k = 0; k < r->periods; k++)
        if (r->free_rate[k] > 0)
            v[n++] = r->stop_rate[k] / r->free_rate[k];
    return summarize(v, n);
}

static double stall_median(const struct stall_result *r, const double *rates)
{
    double v[BENCH_MAX_ROUNDS];
    for (unsigned k = 0; k < r->periods; k++)
        v[k] = rates[k];
    return median(v, r->periods);
}

static const char *victim_name(const struct stall_result *r)
{
    return r->victim == ROLE_PRODUCER ? "a producer" : "a consumer";
}

static void stall_table(const struct bench *b, FILE *out)
{
    char f[32], st[32], q[64], in[32];
    if (!b->nstall)
        return;
    fprintf(out, "\n### Stall: 4x4, 64 B, one process SIGSTOPped for "
                 "100 ms every second (the others' messages/s; ratio: "
                 "during the stop ÷ free part of the same second, median "
                 "(min–max) over the seconds; inside: stops that caught the "
                 "victim holding a claimed record)\n\n| queue | stopped |"
                 " seconds | inside | others, free | others, during stops |"
                 " ratio |\n|---|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < b->nstall; i++) {
        const struct stall_result *r = &b->stall[i];
        if (r->failed) {
            fprintf(out, "| %s | %s | %u | | FAIL | FAIL | %s |\n", r->t->label,
                    victim_name(r), r->periods, r->note);
            continue;
        }
        if (r->aimed)
            snprintf(in, sizeof(in), "%u", r->inside);
        else
            snprintf(in, sizeof(in), "not aimed");
        fmt_si(f, sizeof(f), stall_median(r, r->free_rate));
        fmt_si(st, sizeof(st), stall_median(r, r->stop_rate));
        fmt_ratio(q, sizeof(q), stall_ratio(r));
        fprintf(out,
                r->t->kind == TK_SHMQ
                    ? "| **%s** | %s | %u | %s | %s | %s | **%s** |\n"
                    : "| %s | %s | %u | %s | %s | %s | %s |\n",
                r->t->label, victim_name(r), r->periods, in, f, st, q);
    }
}

static struct ratio shmq_stall(const struct bench *b, enum role victim)
{
    for (size_t i = 0; i < b->nstall; i++)
        if (b->stall[i].t->kind == TK_SHMQ && b->stall[i].victim == victim)
            return stall_ratio(&b->stall[i]);
    return (struct ratio){0};
}

/* ---------------------------------------------------------------- */
/* targets                                                            */
/* ---------------------------------------------------------------- */

struct target {
    const char *what;
    struct ratio q;
    double bound;
    bool at_least; /* q.med >= bound, else q.med <= bound */
};

static size_t targets(const struct bench *b, struct target *t)
{
    int s = col_of(b, "shmq");
    int k64 = find_cell(b, SC_THROUGHPUT, 1, 64, WAIT_BLOCK);
    int k1m = find_cell(b, SC_THROUGHPUT, 1, 1u << 20, WAIT_BLOCK);
    int k88 = find_cell(b, SC_THROUGHPUT, 8, 64, WAIT_BLOCK);
    int lb = find_cell(b, SC_LATENCY, 1, 64, WAIT_BLOCK);
    int la = find_cell(b, SC_LATENCY, 1, 64, WAIT_ADAPTIVE);
    int pipe = col_of(b, "pipe");
    size_t n = 0;

    t[n++] = (struct target){"1x1 64 B: shmq ÷ raw SPSC ring ≥ 0.60",
                             ratio_of(b, k64, s, k64, col_of(b, "ring"), NULL),
                             0.60, true};
    t[n++] =
        (struct target){"1x1 64 B: shmq ÷ fastest peer ≥ 2",
                        ratio_of(b, k64, s, k64, FASTEST_PEER, NULL), 2, true};
    t[n++] = (struct target){
        "1x1 1 MiB: shmq ÷ memcpy bytes/s ≥ 0.40",
        ratio_of(b, k1m, s, k1m, col_of(b, "memcpy"), get_byte_rate), 0.40,
        true};
    t[n++] = (struct target){"ping-pong 64 B blocking: p50 ÷ futex floor ≤ 1.3",
                             ratio_of(b, lb, s, lb, col_of(b, "futex"), NULL),
                             1.3, false};
    t[n++] = (struct target){"ping-pong 64 B adaptive: p50 ÷ spin floor ≤ 2",
                             ratio_of(b, la, s, la, col_of(b, "spin"), NULL), 2,
                             false};
    /* issue 7 (ring v2) */
    t[n++] = (struct target){
        "1x1 64 B: shmq ÷ Vyukov MPMC ring ≥ 0.80",
        ratio_of(b, k64, s, k64, col_of(b, "vyukov"), NULL), 0.8, true};
    t[n++] = (struct target){"ping-pong 64 B adaptive: p50 ÷ ring floor ≤ 1.0",
                             ratio_of(b, la, s, la, col_of(b, "ringpp"), NULL),
                             1.0, false};
    t[n++] = (struct target){"8x8 64 B: shmq ÷ shmq 1x1 64 B ≥ 0.60",
                             ratio_of(b, k88, s, k64, s, NULL), 0.6, true};
    t[n++] = (struct target){"stall, producer stopped: others during ÷ "
                             "without stops ≥ 0.5",
                             shmq_stall(b, ROLE_PRODUCER), 0.5, true};
    t[n++] = (struct target){"stall, consumer stopped: others during ÷ "
                             "without stops ≥ 0.5",
                             shmq_stall(b, ROLE_CONSUMER), 0.5, true};
    /* no cell where shmq is slower than pipe: the worst cell's median */
    struct ratio worst = {0};
    const char *where = "";
    for (size_t k = 0; k < b->ncells; k++) {
        struct ratio q = ratio_of(b, (int)k, s, (int)k, pipe, NULL);
        if (!q.valid)
            continue;
        if (b->cells[k].sc == SC_LATENCY) /* lower is better: invert */
            q = (struct ratio){true, 1 / q.med, 1 / q.max, 1 / q.min};
        if (!worst.valid || q.med < worst.med) {
            worst = q;
            static char w[64];
            snprintf(
                w, sizeof(w), "every cell vs pipe ≥ 1 (worst: %s %ux%u %s)",
                b->cells[k].sc == SC_THROUGHPUT ? "throughput" : "ping-pong",
                b->cells[k].producers, b->cells[k].consumers,
                size_name(b->cells[k].size));
            where = w;
        }
    }
    t[n++] = (struct target){worst.valid ? where : "every cell vs pipe ≥ 1",
                             worst, 1, true};
    return n;
}

/* The serialization scenario's targets (issue 11). */
static size_t serialize_targets(const struct bench *b, struct target *t)
{
    int s = col_of(b, "shmq"), m32 = col_of(b, "many32");
    int zc = col_of(b, "zerocopy");
    int k64 = find_cell(b, SC_THROUGHPUT, 1, 64, WAIT_BLOCK);
    int k1m = find_cell(b, SC_THROUGHPUT, 1, 1u << 20, WAIT_BLOCK);
    size_t n = 0;
    t[n++] = (struct target){"1x1 64 B: put_many/get_many ×32 ÷ put/get ≥ 5",
                             ratio_of(b, k64, m32, k64, s, NULL), 5, true};
    t[n++] = (struct target){
        "1x1 64 B: put_many/get_many ×32 ÷ raw SPSC ring (one message at a "
        "time) ≥ 1",
        ratio_of(b, k64, m32, k64, col_of(b, "ring"), NULL), 1, true};
    t[n++] = (struct target){
        "1x1 1 MiB: put_begin/get_begin ÷ memcpy bytes/s ≥ 0.8",
        ratio_of(b, k1m, zc, k1m, col_of(b, "memcpy"), get_byte_rate), 0.8,
        true};
    return n;
}

static const char *verdict(const struct target *t)
{
    if (!t->q.valid)
        return "not measured";
    bool met = t->at_least ? t->q.med >= t->bound : t->q.med <= t->bound;
    return met ? "met" : "missed";
}

static void target_table(const struct bench *b, FILE *out)
{
    struct target t[16];
    size_t n = b->serialize ? serialize_targets(b, t) : targets(b, t);
    char q[64];
    fprintf(out, "\n### Targets (ratios within a round, median (min–max))"
                 "\n\n| target | measured | verdict |\n|---|---:|---|\n");
    for (size_t i = 0; i < n; i++) {
        fmt_ratio(q, sizeof(q), t[i].q);
        const char *v = verdict(&t[i]);
        fprintf(out,
                strcmp(v, "missed") ? "| %s | %s | %s |\n"
                                    : "| %s | %s | **%s** |\n",
                t[i].what, q, v);
    }
}

void report_markdown(const struct bench *b, FILE *out)
{
    struct utsname u;
    uname(&u);
    fprintf(out,
            "## shmq-bench\n\n"
            "%s, %d CPUs online, Linux %s; shmq %s; %u round%s of "
            "%.2f s per measurement, interleaved; run took %.0f s.  \n",
            machine_cpu(), online_cpus(), u.release, SHMQ_VERSION, b->rounds,
            b->rounds == 1 ? "" : "s", b->secs, b->elapsed);
    fprintf(out,
            "Load average (1, 5, 15 min) before: %s, after: %s "
            "(anything else running skews every figure).  \n",
            b->load_before, b->load_after);
    fprintf(out, "%s  \n",
            b->pin ? "1x1 and ping-pong cells: the two processes pinned to "
                     "CPUs 0 and 1; P×C > 1 left to the scheduler."
                   : "No process pinned (--no-pin).");
    fprintf(out, "Every message is checked byte for byte on receipt; "
                 "throughput counts must match what was sent.  \n");
    for (size_t i = 0; i < b->nnotes; i++)
        fprintf(out, "%s.  \n", b->notes[i]);
    if (b->serialize) {
        report_serialize(b, out);
        return;
    }
    bool tp = false;
    for (size_t k = 0; k < b->ncells; k++)
        tp |= b->cells[k].sc == SC_THROUGHPUT;
    if (tp) {
        throughput_table(b, out, get_msg_rate,
                         "Throughput, messages/s (median over rounds)");
        throughput_table(b, out, get_byte_rate,
                         "Throughput, payload bytes/s (median over rounds)");
        throughput_ratios(b, out);
        fill_table(b, out);
    }
    latency_tables(b, out);
    stall_table(b, out);
    target_table(b, out);
}

/* ---------------------------------------------------------------- */
/* serialization                                                      */
/* ---------------------------------------------------------------- */

/* Ratio of a column to put/get (or to another column) in cell k. */
static void ser_ratio(const struct bench *b, size_t k, const char *a,
                      const char *other, double (*get)(const struct result *),
                      char *buf, size_t n)
{
    fmt_ratio(buf, n,
              ratio_of(b, (int)k, col_of(b, a), (int)k, col_of(b, other), get));
}

static void serialize_ratios(const struct bench *b, FILE *out)
{
    char r[8][64];
    fprintf(out,
            "\n### Serialization ratios (messages/s, or bytes/s against "
            "memcpy; median (min–max) of per-round ratios; higher is "
            "better)\n\n"
            "| size | ×32 ÷ put/get | ×256 ÷ put/get | zero-copy ÷ put/get |"
            " putv ÷ put/get | ×32 ÷ raw SPSC ring | put/get ÷ memcpy |"
            " zero-copy ÷ memcpy | ×32 ÷ memcpy |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t k = 0; k < b->ncells; k++) {
        ser_ratio(b, k, "many32", "shmq", NULL, r[0], sizeof(r[0]));
        ser_ratio(b, k, "many256", "shmq", NULL, r[1], sizeof(r[1]));
        ser_ratio(b, k, "zerocopy", "shmq", NULL, r[2], sizeof(r[2]));
        ser_ratio(b, k, "putv", "shmq", NULL, r[3], sizeof(r[3]));
        ser_ratio(b, k, "many32", "ring", NULL, r[4], sizeof(r[4]));
        ser_ratio(b, k, "shmq", "memcpy", get_byte_rate, r[5], sizeof(r[5]));
        ser_ratio(b, k, "zerocopy", "memcpy", get_byte_rate, r[6],
                  sizeof(r[6]));
        ser_ratio(b, k, "many32", "memcpy", get_byte_rate, r[7], sizeof(r[7]));
        fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                size_name(b->cells[k].size), r[0], r[1], r[2], r[3], r[4], r[5],
                r[6], r[7]);
    }
}

void report_serialize(const struct bench *b, FILE *out)
{
    fprintf(out,
            "Serialization: 1 producer, 1 consumer (processes). put/get: "
            "shmq_put, shmq_get. ×32, ×256: shmq_put_many of that many "
            "messages (at most 4 MiB of them: ×256 is 64 at 64 KiB, both are "
            "4 at 1 MiB), shmq_get_many of as many, each checked in "
            "get_many's buffer. zero-copy: shmq_put_begin, payload written "
            "in place, shmq_put_commit; shmq_get_begin, payload checked in "
            "place, shmq_get_end. putv: a 16-byte header and the rest as two "
            "iovecs; shmq_get. 64 MiB: a 256 MiB queue.  \n");
    throughput_table(b, out, get_msg_rate,
                     "Serialization, messages/s (median over rounds)");
    throughput_table(b, out, get_byte_rate,
                     "Serialization, payload bytes/s (median over rounds)");
    serialize_ratios(b, out);
    target_table(b, out);
}

size_t report_failures(const struct bench *b, FILE *out)
{
    size_t n = 0;
    for (unsigned r = 0; r < b->rounds; r++)
        for (size_t k = 0; k < b->ncells; k++)
            for (size_t j = 0; j < b->ncols; j++) {
                const struct result *x = res_at(b, r, k, j);
                const struct cell *c = &b->cells[k];
                if (!x->failed)
                    continue;
                n++;
                fprintf(
                    out, "FAILED: round %u, %s %ux%u %s%s, %s: %s\n", r + 1,
                    c->sc == SC_THROUGHPUT ? "throughput" : "ping-pong",
                    c->producers, c->consumers, size_name(c->size),
                    c->sc == SC_LATENCY
                        ? (c->mode == WAIT_BLOCK ? " blocking" : " adaptive")
                        : "",
                    b->cols[j].name, x->note);
            }
    for (size_t i = 0; i < b->nstall; i++)
        if (b->stall[i].failed) {
            n++;
            fprintf(out, "FAILED: stall, %s stopped, %s: %s\n",
                    victim_name(&b->stall[i]), b->stall[i].t->name,
                    b->stall[i].note);
        }
    return n;
}

/* ---------------------------------------------------------------- */
/* JSON                                                               */
/* ---------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fputs("null", f);
    else
        fprintf(f, "%.6g", v);
}

static void json_ratio(FILE *f, const char *name, struct ratio q)
{
    fprintf(f, "\"%s\": ", name);
    if (!q.valid) {
        fputs("null", f);
        return;
    }
    fputs("{\"median\": ", f);
    json_num(f, q.med);
    fputs(", \"min\": ", f);
    json_num(f, q.min);
    fputs(", \"max\": ", f);
    json_num(f, q.max);
    fputc('}', f);
}

static void json_versions(FILE *f)
{
    char py[64] = "";
    FILE *p = popen("python3 --version 2>&1", "r");
    if (p) {
        if (!fgets(py, sizeof(py), p))
            py[0] = 0;
        py[strcspn(py, "\n")] = 0;
        pclose(p);
    }
    fputs("\"versions\": {\"shmq\": ", f);
    json_str(f, SHMQ_VERSION);
    fputs(", \"compiler\": ", f);
    json_str(f, __VERSION__);
#ifdef HAVE_ZMQ
    int a, b, c;
    char z[32];
    zmq_version(&a, &b, &c);
    snprintf(z, sizeof(z), "%d.%d.%d", a, b, c);
    fputs(", \"libzmq\": ", f);
    json_str(f, z);
#endif
#ifdef HAVE_BOOST
    fputs(", \"boost\": ", f);
    json_str(f, bmq_boost_version());
#endif
    fputs(", \"python\": ", f);
    json_str(f, py);
    fputc('}', f);
}

int report_json(const struct bench *b, const char *path)
{
    FILE *f = fopen(path, "w");
    struct utsname u;
    struct target t[16];
    size_t nt;
    if (!f)
        return -1;
    uname(&u);
    fputs("{\n\"machine\": {\"cpu\": ", f);
    json_str(f, machine_cpu());
    fprintf(f, ", \"cpus_online\": %d, \"kernel\": ", online_cpus());
    json_str(f, u.release);
    fputs(", \"arch\": ", f);
    json_str(f, u.machine);
    fputs(", ", f);
    json_versions(f);
    fprintf(f,
            "},\n\"config\": {\"rounds\": %u, \"secs_per_measurement\": "
            "%g, \"pinned\": %s, \"elapsed_s\": %.1f, "
            "\"loadavg_before\": \"%s\", \"loadavg_after\": \"%s\"},"
            "\n\"notes\": [",
            b->rounds, b->secs, b->pin ? "true" : "false", b->elapsed,
            b->load_before, b->load_after);
    for (size_t i = 0; i < b->nnotes; i++) {
        if (i)
            fputs(", ", f);
        json_str(f, b->notes[i]);
    }
    fputs("],\n\"cells\": [\n", f);
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        fprintf(f,
                "%s{\"scenario\": \"%s\", \"producers\": %u, "
                "\"consumers\": %u, \"size\": %zu, \"wait\": \"%s\", "
                "\"pinned\": %s, \"transports\": [\n",
                k ? ",\n" : "",
                c->sc == SC_THROUGHPUT ? "throughput" : "latency", c->producers,
                c->consumers, c->size,
                c->sc == SC_THROUGHPUT  ? "default"
                : c->mode == WAIT_BLOCK ? "blocking"
                                        : "adaptive",
                c->pin ? "true" : "false");
        bool first = true;
        for (size_t j = 0; j < b->ncols; j++) {
            if (!column_applies(&b->cols[j], c))
                continue;
            fprintf(f, "%s  {\"name\": \"%s\", \"kind\": \"%s\", \"rounds\": [",
                    first ? "" : ",\n", b->cols[j].name,
                    b->cols[j].kind == TK_SHMQ   ? "shmq"
                    : b->cols[j].kind == TK_PEER ? "peer"
                                                 : "limit");
            first = false;
            for (unsigned r = 0; r < b->rounds; r++) {
                const struct result *x = res_at(b, r, k, j);
                fprintf(f, "%s{\"ran\": %s, \"failed\": %s, \"secs\": ",
                        r ? ", " : "", x->ran ? "true" : "false",
                        x->failed ? "true" : "false");
                json_num(f, x->secs);
                if (c->sc == SC_THROUGHPUT) {
                    fprintf(f,
                            ", \"messages\": %llu, \"bytes\": %llu, "
                            "\"messages_per_s\": ",
                            (unsigned long long)x->msgs,
                            (unsigned long long)x->bytes);
                    json_num(f, x->msg_rate);
                    fputs(", \"bytes_per_s\": ", f);
                    json_num(f, x->byte_rate);
                    fputs(", \"mean_fill\": ", f);
                    json_num(f, b->cols[j].how == HOW_HARNESS &&
                                        b->cols[j].t->fill && x->fill >= 0
                                    ? x->fill
                                    : NAN);
                } else {
                    fprintf(f, ", \"samples\": %llu, \"p50_ns\": ",
                            (unsigned long long)x->samples);
                    json_num(f, x->p50);
                    fputs(", \"p99_ns\": ", f);
                    json_num(f, x->p99);
                    fputs(", \"p999_ns\": ", f);
                    json_num(f, x->p999);
                    fputs(", \"max_ns\": ", f);
                    json_num(f, x->max);
                }
                if (x->note[0]) {
                    fputs(", \"note\": ", f);
                    json_str(f, x->note);
                }
                fputc('}', f);
            }
            fputs("]", f);
            if (c->sc == SC_THROUGHPUT) {
                fputs(", \"median_messages_per_s\": ", f);
                json_num(f, cell_median(b, k, j, get_msg_rate));
                fputs(", \"median_bytes_per_s\": ", f);
                json_num(f, cell_median(b, k, j, get_byte_rate));
            } else {
                fputs(", \"median_p50_ns\": ", f);
                json_num(f, cell_median(b, k, j, get_p50));
                fputs(", \"median_p99_ns\": ", f);
                json_num(f, cell_median(b, k, j, get_p99));
                fputs(", \"median_p999_ns\": ", f);
                json_num(f, cell_median(b, k, j, get_p999));
            }
            fputc('}', f);
        }
        int s = col_of(b, "shmq"), lk, lc = limit_of(b, k, &lk);
        fputs("],\n \"shmq_ratios\": {", f);
        json_ratio(f, "vs_pipe",
                   ratio_of(b, (int)k, s, (int)k, col_of(b, "pipe"), NULL));
        fputs(", ", f);
        json_ratio(f, "vs_fastest_peer",
                   ratio_of(b, (int)k, s, (int)k, FASTEST_PEER, NULL));
        fputs(", ", f);
        json_ratio(f, "vs_limit", ratio_of(b, (int)k, s, lk, lc, NULL));
        fputs(", ", f);
        json_ratio(
            f, c->sc == SC_THROUGHPUT ? "vs_vyukov" : "vs_ring_floor",
            ratio_of(b, (int)k, s, (int)k,
                     col_of(b, c->sc == SC_THROUGHPUT ? "vyukov" : "ringpp"),
                     NULL));
        if (c->sc == SC_THROUGHPUT) {
            fputs(", ", f);
            json_ratio(
                f, "vs_memcpy_bytes",
                ratio_of(b, (int)k, s, lk, col_of(b, "memcpy"), get_byte_rate));
        }
        fputs("}}", f);
    }
    fputs("\n],\n\"stall\": [", f);
    for (size_t i = 0; i < b->nstall; i++) {
        const struct stall_result *r = &b->stall[i];
        fprintf(f,
                "%s\n  {\"transport\": \"%s\", \"stopped\": \"%s\", "
                "\"failed\": %s, \"messages\": %llu, \"stops_inside\": %u, "
                "\"seconds\": [",
                i ? "," : "", r->t->name,
                r->victim == ROLE_PRODUCER ? "producer" : "consumer",
                r->failed ? "true" : "false", (unsigned long long)r->msgs,
                r->inside);
        for (unsigned k = 0; k < r->periods; k++) {
            fputs(k ? ", {\"free_per_s\": " : "{\"free_per_s\": ", f);
            json_num(f, r->free_rate[k]);
            fputs(", \"stopped_per_s\": ", f);
            json_num(f, r->stop_rate[k]);
            fputc('}', f);
        }
        fputs("], ", f);
        json_ratio(f, "ratio", stall_ratio(r));
        fputc('}', f);
    }
    fputs("\n],\n\"targets\": [", f);
    nt = b->serialize ? serialize_targets(b, t) : targets(b, t);
    for (size_t i = 0; i < nt; i++) {
        fputs(i ? ",\n  {\"target\": " : "\n  {\"target\": ", f);
        json_str(f, t[i].what);
        fputs(", ", f);
        json_ratio(f, "ratio", t[i].q);
        fputs(", \"verdict\": ", f);
        json_str(f, verdict(&t[i]));
        fputc('}', f);
    }
    fputs("\n]\n}\n", f);
    return fclose(f) == 0 ? 0 : -1;
}
