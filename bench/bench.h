/* SPDX-License-Identifier: MIT */
/*
 * bench.h - the pieces of shmq-bench and how they fit.
 *
 * A *cell* is one thing measured: a scenario (throughput or ping-pong
 * latency), a shape (P producers x C consumers), a message size and, for
 * latency, a wait mode. A *transport* moves messages for a cell: shmq,
 * the peers a user would pick instead (pipe, socketpair, POSIX mq,
 * ZeroMQ, Boost.Interprocess) and the raw limits. Every transport sits
 * behind the same small vtable, so the harness (harness.c) forks the same
 * processes, stamps and checks the same payloads and takes the same
 * timestamps for all of them; only send and recv differ.
 *
 * One *round* measures every selected (cell, transport) once, in an
 * interleaved order, so that the noise of this VM (vCPUs that move from
 * run to run) hits all transports alike; ratios are taken within a round
 * and their median over rounds is reported (stats.c, report.c).
 */
#ifndef SHMQ_BENCH_H
#define SHMQ_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#define BENCH_MAX_PROCS 8 /* most producers (and consumers) of a cell */
#define BENCH_MAX_MSG   (1u << 20)
/* The serialization scenario's large-message cell (shmq and memcpy
 * only; every other path stays at BENCH_MAX_MSG). */
#define BENCH_LARGE_MSG   (64u << 20)
#define BENCH_MAX_ROUNDS  64
#define BENCH_MAX_SAMPLES (1u << 21)

enum scenario { SC_THROUGHPUT, SC_LATENCY };
enum wait_mode { WAIT_BLOCK, WAIT_ADAPTIVE };
enum tkind { TK_SHMQ, TK_PEER, TK_LIMIT };

/* One measured cell. */
struct cell {
    enum scenario sc;
    unsigned producers, consumers; /* latency: 1 and 1 */
    size_t size;                   /* bytes per message */
    enum wait_mode mode;           /* latency only */
    double secs;                   /* how long one measurement runs */
    uint64_t count; /* instead: exactly this many messages (round trips) */
    bool pin;       /* pin the two processes to two CPUs */
};

/* Figures of one measurement of one (cell, transport). */
struct result {
    bool ran;        /* false: not applicable, see the transport's why */
    bool failed;     /* payload or count check failed, or an error */
    double secs;     /* wall time of the measurement */
    uint64_t msgs;   /* throughput: messages received */
    uint64_t bytes;  /* throughput: payload bytes received */
    double msg_rate; /* messages/s */
    double byte_rate;
    /* latency, round trip in nanoseconds */
    uint64_t samples;
    double p50, p99, p999, max;
    double fill;    /* throughput: mean fraction of the queue in use while
                       the producers ran (-1: the transport cannot tell) */
    char note[160]; /* why not run, or what failed */
};

/*
 * One direction of messages: what a transport keeps for one queue. The
 * parent fills it in setup(); children inherit it over fork() and call
 * attach() for their role first. priv is the transport's own state.
 */
enum role { ROLE_PRODUCER, ROLE_CONSUMER, ROLE_PARENT };

struct chan {
    const struct transport *t;
    const struct cell *cell;
    int index;      /* which channel of the cell: 0, or 1 for the reply */
    enum role role; /* set by attach() */
    int role_index; /* producer or consumer number */
    void *priv;
};

/* recv() result meaning "the sender side is finished" (closed queue). */
#define RECV_END 1

/*
 * A transport. Calls return 0 or a negative errno. recv() returns
 * RECV_END when the channel was closed by finish(). finish() is called by
 * the parent once every producer has exited; it must make every consumer
 * return from recv(): NULL means "send one stop message per consumer",
 * which the harness does through attach(ROLE_PARENT) and send().
 */
struct transport {
    const char *name;  /* short, for --transport and JSON */
    const char *label; /* column header */
    enum tkind kind;
    /* NULL when the cell can run, else a static reason it cannot. */
    const char *(*usable)(const struct cell *c);
    int (*setup)(struct chan *ch);
    int (*attach)(struct chan *ch, enum role role, int idx);
    int (*send)(struct chan *ch, const void *buf, size_t len);
    int (*recv)(struct chan *ch, void *buf, size_t cap, size_t *len);
    int (*finish)(struct chan *ch);
    void (*detach)(struct chan *ch);
    void (*teardown)(struct chan *ch);
    /* Optional, for the victim of the stall scenario: send or receive
     * one message in place, with *held 1 from the moment its room is
     * claimed until it is published (send) or given back (recv), so
     * that a stop can be aimed inside that window. */
    int (*send_held)(struct chan *ch, const void *buf, size_t len,
                     _Atomic uint32_t *held);
    int (*recv_held)(struct chan *ch, void *buf, size_t cap, size_t *len,
                     _Atomic uint32_t *held);
    /* Optional: the fraction of the queue's room in use now, read by the
     * parent during a throughput run (the regime: empty or full). */
    double (*fill)(struct chan *ch);
    /* Optional, the serialization scenario (transport_serialize.c). A
     * producer with send_many builds batch messages (fewer for large
     * ones, see bench_batch()) in separate buffers and hands them over
     * in one call, which returns 0 once all of them are sent. A
     * consumer with recv_ref checks each message where recv_ref says it
     * is (in the queue itself for get_begin) and calls recv_done after
     * the check; RECV_END as recv(). */
    unsigned batch;
    int (*send_many)(struct chan *ch, const struct iovec *msgs, size_t n);
    int (*recv_ref)(struct chan *ch, const void **msg, size_t *len);
    int (*recv_done)(struct chan *ch);
};

#define BENCH_MAX_BATCH 256 /* largest transport batch */
/* Messages per send_many call of t for messages of size bytes: batch,
 * but no more than 4 MiB of them (half of a throughput queue). */
size_t bench_batch(const struct transport *t, size_t size);

/* transports, each in its own transport_*.c (or limits.c) */
extern const struct transport transport_shmq;
extern int64_t shmq_throughput_spin; /* --spin: -1 = library default */
extern const struct transport transport_pipe;
extern const struct transport transport_seqpacket;
extern const struct transport transport_mq;
extern const struct transport transport_zmq;    /* name NULL when not built */
extern const struct transport transport_boost;  /* name NULL when not built */
extern const struct transport transport_ring;   /* raw SPSC ring, limits.c */
extern const struct transport transport_ringpp; /* its ping-pong, limits.c */
extern const struct transport transport_vyukov; /* Vyukov MPMC ring */
/* shmq's serialization layer (transport_serialize.c) */
extern const struct transport transport_shmq_many32;  /* put/get_many x32 */
extern const struct transport transport_shmq_many256; /* x256 */
extern const struct transport transport_shmq_zc;      /* put_begin, get_begin */
extern const struct transport transport_shmq_putv;    /* putv (header + body) */
/* Bytes of the region of a default shmq queue (transport_vyukov.c): the
 * footprint the raw rings are given for throughput. */
size_t bench_default_footprint(void);

/* payload.c: every message is stamped with (producer, sequence) and
 * carries a per-producer pattern; the receiver checks every byte. */
#define STAMP_STOP UINT64_MAX
struct payload {
    unsigned char *buf; /* the message being built (sender) */
    unsigned char *pattern;
    size_t size;
};
int payload_init(struct payload *p, size_t size, unsigned producer);
void payload_free(struct payload *p);
void payload_stamp(struct payload *p, uint64_t stamp);
uint64_t stamp_make(unsigned producer, uint64_t seq);
unsigned stamp_producer(uint64_t stamp);
uint64_t stamp_seq(uint64_t stamp);
uint64_t payload_stamp_of(const void *msg, size_t len);
/* 0, or a static description of what is wrong with msg. */
const char *payload_check(const void *msg, size_t len, size_t want,
                          const unsigned char *pattern);
void payload_fill_pattern(unsigned char *pattern, size_t size,
                          unsigned producer);

/* harness.c: run one cell over one transport, in forked processes. */
void harness_run(const struct transport *t, const struct cell *c,
                 struct result *r);
/* One stop message per consumer, from the parent (transports without
 * finish()). */
int harness_send_stops(struct chan *ch, unsigned n);

/* stall.c: 4 producers and 4 consumers, one victim SIGSTOPped for 100 ms
 * once a second; the others' rate during each stop and in the free part
 * of the same second. */
struct stall_result {
    const struct transport *t;
    enum role victim; /* ROLE_PRODUCER or ROLE_CONSUMER */
    bool ran, failed;
    unsigned periods;
    double free_rate[BENCH_MAX_ROUNDS], stop_rate[BENCH_MAX_ROUNDS];
    bool aimed;      /* stops aimed inside a claimed, unpublished record */
    unsigned inside; /* stops that landed there */
    uint64_t msgs;   /* received in all, every one checked */
    char note[160];
};
void stall_run(const struct transport *t, enum role victim, unsigned periods,
               struct stall_result *r);

/* limits.c: the physical limits that need no transport. */
void limit_spin_pingpong(const struct cell *c, struct result *r);
void limit_futex_pingpong(const struct cell *c, struct result *r);
void limit_memcpy(const struct cell *c, struct result *r);

/* transport_mq.c: raise the POSIX mq limits where allowed; a line for
 * the report saying what was done. */
const char *mq_limits_raise(void);

/* python.c: multiprocessing.Queue, one python3 run per round. */
struct py_job {
    const struct cell *cell;
    struct result *res;
};
const char *python_missing(void); /* NULL when python3 can run the script */
void python_run(struct py_job *jobs, size_t n, const char *script);

/* util.c */
double now_sec(void);
uint64_t now_ns(void);
void pin_to_cpu(int cpu);
int online_cpus(void);
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern bool bench_verbose_progress;
void fd_wait_readable(int fd, int64_t spin_ns);
/* Spin of the adaptive variant of the peers (same as shmq's default). */
int64_t cell_spin_ns(const struct cell *c);

/* stats.c */
int cmp_double(const void *a, const void *b);
double median(double *v, size_t n);
void latency_summary(uint64_t *ns, size_t n, struct result *r);

/* ---------------------------------------------------------------- */
/* a run: columns x cells x rounds (main.c builds it, report.c and     */
/* plot.c read it)                                                     */
/* ---------------------------------------------------------------- */

enum col_how { HOW_HARNESS, HOW_PYTHON, HOW_MEMCPY, HOW_SPIN, HOW_FUTEX };

/* One column of the tables: a transport or a limit. */
struct column {
    const char *name;  /* for --transport and JSON */
    const char *label; /* for tables and charts */
    enum tkind kind;
    enum col_how how;
    const struct transport *t; /* HOW_HARNESS */
    const char *missing;       /* not available on this machine: why */
};

#define BENCH_MAX_CELLS 64
#define BENCH_MAX_COLS  16

struct bench {
    struct cell cells[BENCH_MAX_CELLS];
    size_t ncells;
    struct column cols[BENCH_MAX_COLS];
    size_t ncols;
    unsigned rounds;
    double secs;
    bool pin;
    bool serialize;     /* --scenario serialize: its own tables */
    struct result *res; /* [round][cell][column] */
    char notes[8][512]; /* lines for the report's preamble */
    size_t nnotes;
    struct stall_result stall[4]; /* --scenario stall */
    size_t nstall;
    double elapsed;                       /* seconds the whole run took */
    char load_before[64], load_after[64]; /* /proc/loadavg */
};

static inline struct result *res_at(const struct bench *b, unsigned round,
                                    size_t cell, size_t col)
{
    return &b->res[(round * b->ncells + cell) * b->ncols + col];
}

/* Does this column measure this cell at all (before running)? */
bool column_applies(const struct column *col, const struct cell *c);

/* report.c */
struct ratio {
    bool valid;
    double med, min, max;
};
void report_markdown(const struct bench *b, FILE *out);
/* The serialization scenario's tables and targets (report.c). */
void report_serialize(const struct bench *b, FILE *out);
int report_json(const struct bench *b, const char *path);
/* Number of failed measurements (payload checks, counts, errors). */
size_t report_failures(const struct bench *b, FILE *out);
/* Median over rounds of one figure of a column in a cell. */
double cell_median(const struct bench *b, size_t cell, size_t col,
                   double (*get)(const struct result *));
double get_msg_rate(const struct result *r);
double get_byte_rate(const struct result *r);
double get_p50(const struct result *r);
double get_p99(const struct result *r);
double get_p999(const struct result *r);
double get_max(const struct result *r);
const char *size_name(size_t size);
const char *machine_cpu(void);

/* plot.c */
int plot_charts(const struct bench *b, const char *dir);

#endif
