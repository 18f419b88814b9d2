/* SPDX-License-Identifier: MIT */
/*
 * plot.c - --plot DIR: PNG charts drawn by gnuplot from the medians.
 *   throughput_PxC.png   payload bytes/s against message size, one line
 *                        per transport and limit, log-log
 *   latency_SIZE_WAIT.png  p50 / p99 / p99.9 round trip per transport,
 *                        log scale
 * The data files and the gnuplot script stay in DIR next to the PNGs.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static void tag(const struct cell *c, char *buf, size_t n)
{
    snprintf(buf, n, "%zu%s_%s",
             c->size >= 1024 ? c->size >> (c->size >= (1u << 20) ? 20 : 10)
                             : c->size,
             c->size >= (1u << 20) ? "MiB"
             : c->size >= 1024     ? "KiB"
                                   : "B",
             c->mode == WAIT_BLOCK ? "blocking" : "adaptive");
}

static void put(FILE *f, double v)
{
    isnan(v) ? fputs(" ?", f) : fprintf(f, " %g", v);
}

static int throughput_charts(const struct bench *b, const char *dir, FILE *gp)
{
    int charts = 0;
    for (unsigned n = 1; n <= BENCH_MAX_PROCS; n *= 2) {
        size_t cells[8], nc = 0;
        for (size_t k = 0; k < b->ncells && nc < 8; k++)
            if (b->cells[k].sc == SC_THROUGHPUT && b->cells[k].producers == n)
                cells[nc++] = k;
        if (nc < 2)
            continue;
        char path[4200];
        snprintf(path, sizeof(path), "%s/throughput_%ux%u.dat", dir, n, n);
        FILE *f = fopen(path, "w");
        if (!f)
            return -1;
        size_t used[BENCH_MAX_COLS], nu = 0;
        for (size_t j = 0; j < b->ncols; j++) {
            bool any = false;
            for (size_t i = 0; i < nc; i++)
                any |= !isnan(cell_median(b, cells[i], j, get_byte_rate));
            if (any)
                used[nu++] = j;
        }
        fputs("# size", f);
        for (size_t u = 0; u < nu; u++)
            fprintf(f, " \"%s\"", b->cols[used[u]].label);
        fputc('\n', f);
        for (size_t i = 0; i < nc; i++) {
            fprintf(f, "%zu", b->cells[cells[i]].size);
            for (size_t u = 0; u < nu; u++)
                put(f, cell_median(b, cells[i], used[u], get_byte_rate) / 1e6);
            fputc('\n', f);
        }
        fclose(f);
        fprintf(gp,
                "set output '%s/throughput_%ux%u.png'\n"
                "set title 'Throughput, %u producer%s x %u consumer%s "
                "(median of %u rounds)'\n"
                "set xlabel 'message size (bytes)'\nset ylabel 'payload MB/s'\n"
                "set logscale xy\nset key outside right top\nset grid\n"
                "set style data linespoints\n",
                dir, n, n, n, n > 1 ? "s" : "", n, n > 1 ? "s" : "", b->rounds);
        fputs("set xtics (", gp);
        for (size_t i = 0; i < nc; i++)
            fprintf(gp, "%s'%s' %zu", i ? ", " : "",
                    size_name(b->cells[cells[i]].size),
                    b->cells[cells[i]].size);
        fputs(")\nset xrange [*:*]\n", gp);
        fputs("plot ", gp);
        for (size_t u = 0; u < nu; u++) {
            const struct column *c = &b->cols[used[u]];
            fprintf(gp,
                    "%s'%s' using 1:%zu with linespoints lw %d %s "
                    "title '%s'",
                    u ? ", \\\n  " : "", path, u + 2,
                    c->kind == TK_SHMQ ? 3 : 1,
                    c->kind == TK_LIMIT ? "dt 2" : "", c->label);
        }
        fputs("\nunset logscale\nset xtics autofreq\n", gp);
        charts++;
    }
    return charts;
}

static int latency_charts(const struct bench *b, const char *dir, FILE *gp)
{
    int charts = 0;
    for (size_t k = 0; k < b->ncells; k++) {
        const struct cell *c = &b->cells[k];
        char t[64], path[4200];
        if (c->sc != SC_LATENCY)
            continue;
        tag(c, t, sizeof(t));
        snprintf(path, sizeof(path), "%s/latency_%s.dat", dir, t);
        FILE *f = fopen(path, "w");
        if (!f)
            return -1;
        fputs("transport p50 p99 p99.9\n", f);
        for (size_t j = 0; j < b->ncols; j++) {
            double p50 = cell_median(b, k, j, get_p50);
            if (isnan(p50))
                continue;
            fprintf(f, "\"%s\"", b->cols[j].label);
            put(f, p50 / 1000);
            put(f, cell_median(b, k, j, get_p99) / 1000);
            put(f, cell_median(b, k, j, get_p999) / 1000);
            fputc('\n', f);
        }
        fclose(f);
        fprintf(gp,
                "set output '%s/latency_%s.png'\n"
                "set title 'Ping-pong round trip, %s messages, %s wait "
                "(median of %u rounds)'\n"
                "set xlabel ''\nset ylabel 'round trip (µs)'\n"
                "set logscale y\nset key outside right top\nset grid ytics\n"
                "set style data histograms\n"
                "set style histogram clustered gap 1\n"
                "set style fill solid 0.8 border -1\nset boxwidth 0.9\n"
                "set xtics rotate by -30\n"
                "plot '%s' using 2:xtic(1) title columnheader(2), "
                "'' using 3 title columnheader(3), "
                "'' using 4 title columnheader(4)\n"
                "unset logscale\nset xtics norotate\nunset style\n",
                dir, t, size_name(c->size),
                c->mode == WAIT_BLOCK ? "blocking"
                                      : "adaptive (spin, then block)",
                b->rounds, path);
        charts++;
    }
    return charts;
}

int plot_charts(const struct bench *b, const char *dir)
{
    char path[4200], cmd[4300];
    snprintf(path, sizeof(path), "%s/plot.gp", dir);
    FILE *gp = fopen(path, "w");
    if (!gp)
        return -1;
    fputs("set terminal pngcairo size 1000,560 font ',10'\n"
          "set datafile missing '?'\n",
          gp);
    int n = throughput_charts(b, dir, gp);
    int m = latency_charts(b, dir, gp);
    fclose(gp);
    if (n < 0 || m < 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "gnuplot '%s'", path);
    return system(cmd) == 0 ? 0 : -1;
}
