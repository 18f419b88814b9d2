/* SPDX-License-Identifier: MIT */
/*
 * main.c - shmq-bench: the command line, the plan of cells and the
 * interleaved rounds. Tables, JSON and charts are report.c and plot.c.
 *
 * Method (see docs/benchmarks.md): a short warm-up of every transport,
 * then --rounds rounds; each round measures every (cell, column) once,
 * cell by cell, the columns of a cell back to back in an order rotated
 * from round to round, so that a slow patch of this VM hits all of them.
 * Ratios are taken within a round; their median (min-max) is reported.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

#ifndef SHMQ_BENCH_PY
#define SHMQ_BENCH_PY "bench/mpq_bench.py"
#endif

static const size_t all_sizes[] = {8, 64, 512, 4096, 65536, 1u << 20};
static const unsigned all_shapes[] = {1, 2, 4, 8};

struct opts {
    bool quick, smoke, full, pin;
    unsigned rounds;
    double secs;
    unsigned long long count;
    bool no_warmup;
    unsigned scenarios; /* bits: 0 throughput, 1 latency, 2 stall,
                           3 serialize */
    size_t sizes[16];
    size_t nsizes;
    unsigned shapes[8];
    size_t nshapes;
    unsigned modes; /* bit 0 blocking, bit 1 adaptive */
    char transports[256];
    const char *json, *plot, *script;
};

static void usage(FILE *f)
{
    fputs(
        "usage: shmq-bench [options]\n"
        "  (default)            the ~1 minute plan: throughput 1x1 at every\n"
        "                       size, 2x2/4x4/8x8 at 64 B and 4 KiB; "
        "ping-pong\n"
        "                       at 64 B and 4 KiB, blocking and adaptive;\n"
        "                       5 rounds; then the stall scenario\n"
        "  --quick              a run of a few seconds (1 round, short cells)\n"
        "  --smoke              fail unless every scenario ran and verified\n"
        "  --full               every shape at every size\n"
        "  --rounds N           rounds (default 5)\n"
        "  --secs S             seconds per measurement (default 0.04)\n"
        "  --scenario LIST      throughput,latency,stall (stall: 4x4 64 B,\n"
        "                       a producer, then a consumer, SIGSTOPped\n"
        "                       100 ms every second; shmq 4 s each, the\n"
        "                       Vyukov ring 2 s each)\n"
        "  --scenario serialize on its own: 1x1 at 8 B to 1 MiB and 64 MiB,\n"
        "                       put/get, put_many/get_many x32 and x256,\n"
        "                       put_begin/get_begin, putv, the raw SPSC\n"
        "                       ring and memcpy; 7 rounds, under a minute\n"
        "                       (--quick: a few seconds, without 64 MiB)\n"
        "  --size LIST          e.g. 64,4K,1M (8 B to 1 MiB; 64M with\n"
        "                       serialize)\n"
        "  --shape LIST         e.g. 1x1,8x8 (PxC, P = C = 1, 2, 4 or 8)\n"
        "  --mode LIST          blocking,adaptive (latency waits)\n"
        "  --transport LIST     shmq,pipe,seqpacket,mq,zmq,boost,python,\n"
        "                       ring,vyukov,memcpy,ringpp,spin,futex\n"
        "                       (default: all)\n"
        "  --json FILE          every figure, per round, and the machine\n"
        "  --plot DIR           PNG charts (gnuplot)\n"
        "  --no-pin             do not pin the two processes of 1x1 and\n"
        "                       ping-pong cells to two CPUs\n"
        "  --python SCRIPT      mpq_bench.py to run (default: the source's)\n"
        "  --count N            fixed work instead of --secs: N messages per\n"
        "                       throughput cell (split over the producers),\n"
        "                       N round trips per ping-pong "
        "(bench/compare.sh)\n"
        "  --no-warmup          skip the warm-up pass\n"
        "  --spin NS            shmq_set_spin() for shmq's throughput cells\n"
        "                       (default: the library's adaptive default)\n",
        f);
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1 << 20, end++;
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    return *end || v < 8 || v > BENCH_LARGE_MSG ? 0 : (size_t)v;
}

static int parse_list(char *arg, struct opts *o, int what)
{
    for (char *tok = strtok(arg, ","); tok; tok = strtok(NULL, ",")) {
        if (what == 's') {
            if (!strcmp(tok, "throughput"))
                o->scenarios |= 1;
            else if (!strcmp(tok, "latency"))
                o->scenarios |= 2;
            else if (!strcmp(tok, "stall"))
                o->scenarios |= 4;
            else if (!strcmp(tok, "serialize"))
                o->scenarios |= 8;
            else
                return -1;
        } else if (what == 'z') {
            size_t v = parse_size(tok);
            if (!v || o->nsizes == 16)
                return -1;
            o->sizes[o->nsizes++] = v;
        } else if (what == 'h') {
            unsigned p, c;
            if (sscanf(tok, "%ux%u", &p, &c) != 2 || p != c || !p ||
                p > BENCH_MAX_PROCS || o->nshapes == 8)
                return -1;
            o->shapes[o->nshapes++] = p;
        } else if (what == 'm') {
            if (!strcmp(tok, "blocking"))
                o->modes |= 1;
            else if (!strcmp(tok, "adaptive"))
                o->modes |= 2;
            else
                return -1;
        }
    }
    return 0;
}

static bool has_size(const struct opts *o, size_t s)
{
    for (size_t i = 0; i < o->nsizes; i++)
        if (o->sizes[i] == s)
            return true;
    return o->nsizes == 0;
}

static bool has_shape(const struct opts *o, unsigned p)
{
    for (size_t i = 0; i < o->nshapes; i++)
        if (o->shapes[i] == p)
            return true;
    return o->nshapes == 0;
}

static void add_cell(struct bench *b, const struct opts *o, enum scenario sc,
                     unsigned n, size_t size, enum wait_mode mode)
{
    struct cell *c;
    if (b->ncells == BENCH_MAX_CELLS)
        return;
    c = &b->cells[b->ncells++];
    *c = (struct cell){.sc = sc,
                       .producers = n,
                       .consumers = n,
                       .size = size,
                       .mode = mode,
                       .secs = o->secs,
                       .count = o->count};
    c->pin = o->pin && n == 1 && online_cpus() >= 2;
}

/* The default plan, or what the options pick. An explicit --size or
 * --shape applies to the whole matrix; the default keeps the multi-
 * process shapes to 64 B and 4 KiB to stay near one minute. */
static void plan(struct bench *b, const struct opts *o)
{
    bool explicit = o->nsizes || o->nshapes || o->full;
    if (o->scenarios & 8) { /* 1x1 only; 64 MiB not when quick */
        for (size_t s = 0; s < 7; s++) {
            size_t size = s < 6 ? all_sizes[s] : BENCH_LARGE_MSG;
            bool large = size > BENCH_MAX_MSG;
            if (o->nsizes ? !has_size(o, size)
                          : large && (o->quick || o->smoke))
                continue;
            add_cell(b, o, SC_THROUGHPUT, 1, size, WAIT_BLOCK);
            /* a 64 MiB message takes ~10 ms: time for a few dozen */
            if (large && !o->count && b->cells[b->ncells - 1].secs < 0.3)
                b->cells[b->ncells - 1].secs = 0.3;
        }
        return;
    }
    if (o->scenarios & 1) {
        for (size_t h = 0; h < 4; h++) {
            unsigned n = all_shapes[h];
            if (!has_shape(o, n))
                continue;
            for (size_t s = 0; s < 6; s++) {
                size_t size = all_sizes[s];
                if (!has_size(o, size))
                    continue;
                if (!explicit && n > 1 && size != 64 && size != 4096)
                    continue;
                if (o->smoke && n > 1 && n != 8 && size != 64)
                    continue;
                add_cell(b, o, SC_THROUGHPUT, n, size, WAIT_BLOCK);
            }
        }
    }
    if (o->scenarios & 2) {
        for (size_t s = 0; s < 6; s++) {
            size_t size = all_sizes[s];
            if (o->nsizes ? !has_size(o, size) : !(size == 64 || size == 4096))
                continue;
            for (int m = 0; m < 2; m++)
                if (o->modes & (1u << m))
                    add_cell(b, o, SC_LATENCY, 1, size, (enum wait_mode)m);
        }
    }
}

static bool picked(const struct opts *o, const char *name)
{
    char list[260];
    if (!o->transports[0])
        return true;
    snprintf(list, sizeof(list), ",%s,", o->transports);
    char want[40];
    snprintf(want, sizeof(want), ",%s,", name);
    return strstr(list, want) != NULL;
}

static void add_col(struct bench *b, const struct opts *o, const char *name,
                    const char *label, enum tkind kind, enum col_how how,
                    const struct transport *t, const char *missing)
{
    if (!picked(o, name) || b->ncols == BENCH_MAX_COLS)
        return;
    b->cols[b->ncols++] = (struct column){name, label, kind, how, t, missing};
}

static void columns(struct bench *b, const struct opts *o)
{
    if (o->scenarios & 8) {
        add_col(b, o, "shmq", "put/get", TK_SHMQ, HOW_HARNESS, &transport_shmq,
                NULL);
        add_col(b, o, "many32", transport_shmq_many32.label, TK_SHMQ,
                HOW_HARNESS, &transport_shmq_many32, NULL);
        add_col(b, o, "many256", transport_shmq_many256.label, TK_SHMQ,
                HOW_HARNESS, &transport_shmq_many256, NULL);
        add_col(b, o, "zerocopy", transport_shmq_zc.label, TK_SHMQ, HOW_HARNESS,
                &transport_shmq_zc, NULL);
        add_col(b, o, "putv", transport_shmq_putv.label, TK_SHMQ, HOW_HARNESS,
                &transport_shmq_putv, NULL);
        add_col(b, o, "ring", "raw SPSC ring", TK_LIMIT, HOW_HARNESS,
                &transport_ring, NULL);
        add_col(b, o, "memcpy", "memcpy", TK_LIMIT, HOW_MEMCPY, NULL, NULL);
        return;
    }
    add_col(b, o, "shmq", "shmq", TK_SHMQ, HOW_HARNESS, &transport_shmq, NULL);
    add_col(b, o, "pipe", "pipe", TK_PEER, HOW_HARNESS, &transport_pipe, NULL);
    add_col(b, o, "seqpacket", "socketpair", TK_PEER, HOW_HARNESS,
            &transport_seqpacket, NULL);
    add_col(b, o, "mq", "POSIX mq", TK_PEER, HOW_HARNESS, &transport_mq, NULL);
    add_col(b, o, "zmq", "ZeroMQ ipc", TK_PEER, HOW_HARNESS, &transport_zmq,
            transport_zmq.name ? NULL
                               : "n/a: built without libzmq (libzmq3-dev)");
    add_col(b, o, "boost", "Boost.IPC mq", TK_PEER, HOW_HARNESS,
            &transport_boost,
            transport_boost.name
                ? NULL
                : "n/a: built without Boost (libboost-dev) or C++");
    add_col(b, o, "python", "mp.Queue", TK_PEER, HOW_PYTHON, NULL,
            picked(o, "python") ? python_missing() : NULL);
    add_col(b, o, "ring", "raw SPSC ring", TK_LIMIT, HOW_HARNESS,
            &transport_ring, NULL);
    add_col(b, o, "vyukov", "Vyukov MPMC ring", TK_LIMIT, HOW_HARNESS,
            &transport_vyukov, NULL);
    add_col(b, o, "memcpy", "memcpy", TK_LIMIT, HOW_MEMCPY, NULL, NULL);
    add_col(b, o, "ringpp", "ring floor", TK_LIMIT, HOW_HARNESS,
            &transport_ringpp, NULL);
    add_col(b, o, "spin", "spin floor", TK_LIMIT, HOW_SPIN, NULL, NULL);
    add_col(b, o, "futex", "futex floor", TK_LIMIT, HOW_FUTEX, NULL, NULL);
}

bool column_applies(const struct column *col, const struct cell *c)
{
    switch (col->how) {
    case HOW_MEMCPY:
        return c->sc == SC_THROUGHPUT && c->producers == 1;
    case HOW_SPIN:
        return c->sc == SC_LATENCY && c->mode == WAIT_ADAPTIVE;
    case HOW_FUTEX:
        return c->sc == SC_LATENCY && c->mode == WAIT_BLOCK;
    case HOW_HARNESS:
        return col->kind != TK_LIMIT || !col->t->usable(c);
    case HOW_PYTHON:
        return true;
    }
    return false;
}

static void measure(const struct bench *b, const struct column *col,
                    const struct cell *c, struct result *r)
{
    memset(r, 0, sizeof(*r));
    if (col->missing) {
        snprintf(r->note, sizeof(r->note), "%s", col->missing);
        return;
    }
    if (!column_applies(col, c))
        return;
    (void)b;
    switch (col->how) {
    case HOW_HARNESS:
        harness_run(col->t, c, r);
        break;
    case HOW_MEMCPY:
        limit_memcpy(c, r);
        break;
    case HOW_SPIN:
        limit_spin_pingpong(c, r);
        break;
    case HOW_FUTEX:
        limit_futex_pingpong(c, r);
        break;
    case HOW_PYTHON:
        break; /* batched per round, see run_python() */
    }
}

static void run_python(struct bench *b, unsigned round, const char *script)
{
    struct py_job jobs[BENCH_MAX_CELLS];
    size_t n = 0;
    for (size_t j = 0; j < b->ncols; j++) {
        if (b->cols[j].how != HOW_PYTHON || b->cols[j].missing)
            continue;
        for (size_t k = 0; k < b->ncells; k++)
            jobs[n++] = (struct py_job){&b->cells[k], res_at(b, round, k, j)};
        progress("round %u/%u: multiprocessing.Queue (%zu cells)", round + 1,
                 b->rounds, n);
        python_run(jobs, n, script);
    }
}

static void warm_up(struct bench *b)
{
    struct cell c = {.sc = SC_THROUGHPUT,
                     .producers = 1,
                     .consumers = 1,
                     .size = 64,
                     .secs = 0.03,
                     .pin = b->pin};
    struct result r;
    for (size_t j = 0; j < b->ncols; j++) {
        if (b->cols[j].how != HOW_HARNESS || b->cols[j].missing)
            continue;
        progress("warm-up: %s", b->cols[j].label);
        harness_run(b->cols[j].t, &c, &r);
    }
}

static void cell_name(const struct cell *c, char *buf, size_t n)
{
    if (c->sc == SC_THROUGHPUT)
        snprintf(buf, n, "throughput %ux%u %s", c->producers, c->consumers,
                 size_name(c->size));
    else
        snprintf(buf, n, "ping-pong %s %s", size_name(c->size),
                 c->mode == WAIT_BLOCK ? "blocking" : "adaptive");
}

static void loadavg(char *buf, size_t n)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b5 = 0, c = 0;
    if (f && fscanf(f, "%lf %lf %lf", &a, &b5, &c) == 3)
        snprintf(buf, n, "%.2f %.2f %.2f", a, b5, c);
    else
        snprintf(buf, n, "unknown");
    if (f)
        fclose(f);
}

/* The stall scenario: over shmq and, for contrast, the Vyukov ring, a
 * producer then a consumer stopped; fewer seconds when quick. */
static void plan_stall(struct bench *b, const struct opts *o)
{
    const struct transport *ts[2] = {&transport_shmq, &transport_vyukov};
    const char *names[2] = {"shmq", "vyukov"};
    if (!(o->scenarios & 4))
        return;
    for (int i = 0; i < 2; i++)
        for (int v = 0; v < 2 && picked(o, names[i]); v++)
            b->stall[b->nstall++] = (struct stall_result){
                .t = ts[i],
                .victim = v ? ROLE_CONSUMER : ROLE_PRODUCER,
                .periods = o->quick || o->smoke ? 1
                           : i                  ? 2
                                                : 4};
}

static void run_stalls(struct bench *b)
{
    for (size_t i = 0; i < b->nstall; i++) {
        struct stall_result *r = &b->stall[i];
        progress("stall: %s, a %s stopped (%u s)", r->t->label,
                 r->victim == ROLE_PRODUCER ? "producer" : "consumer",
                 r->periods);
        stall_run(r->t, r->victim, r->periods, r);
    }
}

static void run(struct bench *b, const char *script, bool warm)
{
    double t0 = now_sec();
    loadavg(b->load_before, sizeof(b->load_before));
    if (warm && b->ncells)
        warm_up(b);
    for (unsigned r = 0; r < b->rounds && b->ncells; r++) {
        for (size_t k = 0; k < b->ncells; k++) {
            char name[64];
            cell_name(&b->cells[k], name, sizeof(name));
            progress("round %u/%u: %s (%.0f s)", r + 1, b->rounds, name,
                     now_sec() - t0);
            for (size_t i = 0; i < b->ncols; i++) {
                size_t j = (i + r + k) % b->ncols; /* rotate the order */
                if (b->cols[j].how != HOW_PYTHON)
                    measure(b, &b->cols[j], &b->cells[k], res_at(b, r, k, j));
            }
        }
        run_python(b, r, script);
    }
    run_stalls(b);
    b->elapsed = now_sec() - t0;
    loadavg(b->load_after, sizeof(b->load_after));
    progress("done in %.0f s", b->elapsed);
    if (bench_verbose_progress && isatty(2))
        fputc('\n', stderr);
}

static void note(struct bench *b, const char *fmt, const char *arg)
{
    if (b->nnotes < 8)
        snprintf(b->notes[b->nnotes++], sizeof(b->notes[0]), fmt, arg);
}

/* --smoke: every scenario ran over shmq (where it applies) and no check
 * failed anywhere. */
static int smoke_verdict(const struct bench *b)
{
    int bad = 0;
    for (size_t k = 0; k < b->ncells; k++)
        for (size_t j = 0; j < b->ncols; j++)
            for (unsigned r = 0; r < b->rounds; r++) {
                const struct result *x = res_at(b, r, k, j);
                if (b->cols[j].kind == TK_SHMQ && !x->ran &&
                    strncmp(x->note, "n/a", 3) != 0) {
                    fprintf(stderr, "smoke: shmq did not run a cell: %s\n",
                            x->note);
                    bad = 1;
                }
            }
    for (size_t i = 0; i < b->nstall; i++)
        if (b->stall[i].t->kind == TK_SHMQ && !b->stall[i].ran) {
            fprintf(stderr, "smoke: shmq did not run the stall scenario\n");
            bad = 1;
        }
    return bad;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"quick", no_argument, 0, 'q'},
                                       {"smoke", no_argument, 0, 'S'},
                                       {"full", no_argument, 0, 'F'},
                                       {"rounds", required_argument, 0, 'r'},
                                       {"secs", required_argument, 0, 't'},
                                       {"scenario", required_argument, 0, 's'},
                                       {"size", required_argument, 0, 'z'},
                                       {"shape", required_argument, 0, 'h'},
                                       {"mode", required_argument, 0, 'm'},
                                       {"transport", required_argument, 0, 'T'},
                                       {"json", required_argument, 0, 'j'},
                                       {"plot", required_argument, 0, 'p'},
                                       {"no-pin", no_argument, 0, 'P'},
                                       {"python", required_argument, 0, 'y'},
                                       {"help", no_argument, 0, 'H'},
                                       {"count", required_argument, 0, 'n'},
                                       {"no-warmup", no_argument, 0, 'W'},
                                       {"spin", required_argument, 0, 'i'},
                                       {0, 0, 0, 0}};
    struct opts o = {.pin = true, .script = SHMQ_BENCH_PY};
    bool rounds_set = false, secs_set = false;
    struct bench *b = calloc(1, sizeof(*b));
    int opt;

    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (opt) {
        case 'q':
            o.quick = true;
            break;
        case 'S':
            o.smoke = true;
            break;
        case 'F':
            o.full = true;
            break;
        case 'r':
            o.rounds = (unsigned)atoi(optarg);
            rounds_set = true;
            break;
        case 't':
            o.secs = atof(optarg);
            secs_set = true;
            break;
        case 's':
        case 'z':
        case 'h':
        case 'm':
            if (parse_list(optarg, &o, opt) < 0) {
                fprintf(stderr, "shmq-bench: bad list: %s\n", optarg);
                return 2;
            }
            break;
        case 'T':
            snprintf(o.transports, sizeof(o.transports), "%s", optarg);
            break;
        case 'j':
            o.json = optarg;
            break;
        case 'p':
            o.plot = optarg;
            break;
        case 'P':
            o.pin = false;
            break;
        case 'y':
            o.script = optarg;
            break;
        case 'n':
            o.count = strtoull(optarg, NULL, 10);
            break;
        case 'W':
            o.no_warmup = true;
            break;
        case 'i':
            shmq_throughput_spin = atoll(optarg);
            break;
        case 'H':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (!rounds_set) /* serialize: short cells, noisy ratios, more rounds */
        o.rounds = o.quick || o.smoke ? 1 : (o.scenarios & 8) ? 7 : 5;
    if (!secs_set)
        o.secs = o.smoke ? 0.02 : o.quick ? 0.03 : 0.04;
    if (o.rounds < 1 || o.rounds > BENCH_MAX_ROUNDS || o.secs <= 0 ||
        o.secs > 60) {
        fprintf(stderr, "shmq-bench: --rounds 1..%d, --secs (0, 60]\n",
                BENCH_MAX_ROUNDS);
        return 2;
    }
    if (!o.scenarios)
        o.scenarios = 7;
    if ((o.scenarios & 8) && (o.scenarios & 7)) {
        fprintf(stderr, "shmq-bench: --scenario serialize runs alone\n");
        return 2;
    }
    if (!o.modes)
        o.modes = 3;

    b->rounds = o.rounds;
    b->secs = o.secs;
    b->pin = o.pin;
    b->serialize = o.scenarios & 8;
    note(b, "%s", mq_limits_raise());
    columns(b, &o);
    plan(b, &o);
    plan_stall(b, &o);
    if ((!b->ncells && !b->nstall) || !b->ncols) {
        fprintf(stderr, "shmq-bench: nothing selected\n");
        return 2;
    }
    for (size_t j = 0; j < b->ncols; j++)
        if (b->cols[j].missing)
            note(b, "%s", b->cols[j].missing);
    b->res = calloc((size_t)b->rounds * b->ncells * b->ncols, sizeof(*b->res));
    if (!b->res)
        return 1;
    /* progress only when the run is longer than a few seconds */
    bench_verbose_progress =
        (double)b->rounds * (double)b->ncells * (double)b->ncols * o.secs >
            4.0 ||
        b->nstall > 2;
    run(b, o.script, !o.no_warmup);

    report_markdown(b, stdout);
    fflush(stdout);
    if (o.json && report_json(b, o.json) < 0)
        fprintf(stderr, "shmq-bench: cannot write %s\n", o.json);
    if (o.plot) {
        mkdir(o.plot, 0755);
        if (plot_charts(b, o.plot) < 0)
            fprintf(stderr, "shmq-bench: charts not drawn (gnuplot?)\n");
    }
    size_t failures = report_failures(b, stderr);
    int bad = failures > 0;
    if (o.smoke)
        bad |= smoke_verdict(b);
    free(b->res);
    free(b);
    return bad;
}
