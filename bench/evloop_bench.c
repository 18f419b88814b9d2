/* SPDX-License-Identifier: MIT */
/*
 * evloop_bench.c - what waiting in an event loop costs: the consumer of a
 * queue in an io_uring loop (shmq_uring_arm), behind a pollfd under epoll
 * (shmq_pollfd_open), next to a blocking shmq_get (default spin, and no
 * spin: sleeps at once) and next to a pipe watched by epoll, in one run.
 *
 *   ping-pong  the producer stamps a 64-byte message, puts it, and waits
 *              for a one-byte answer on a pipe (the same for every
 *              variant), so the consumer is asleep or armed for each
 *              message: one-way latency put -> consumer, p50/p99/p99.9.
 *   1x1        the producer puts 64-byte messages as fast as it can:
 *              messages per second through the consumer.
 * The pollfd's helper thread spins like a blocking get before it sleeps
 * (shmq_set_spin): both are shown with the default spin and with none.
 *
 * Usage: shmq-evloop-bench [--quick] [--pingpong N] [--messages M]
 *                          [--repeat R]
 * Producer and consumer are two processes. Each figure is the median of
 * R runs (default 3), the variants taking turns, so the machine's other
 * load falls on every variant alike: compare rows, not runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <shmq.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

enum variant {
    V_GET_SPIN,
    V_GET_SLEEP,
    V_URING,
    V_POLLFD,
    V_POLLFD_SLEEP,
    V_PIPE,
    NVARIANT
};

static const char *names[NVARIANT] = {
    "shmq_get (blocking, default spin)",    "shmq_get (blocking, no spin)",
    "io_uring futex wait (shmq_uring_arm)", "pollfd under epoll (default spin)",
    "pollfd under epoll (no spin)",         "pipe under epoll",
};

struct msg {
    int64_t t; /* CLOCK_MONOTONIC ns at put; -1 ends a 1x1 run */
    char pad[MSG - sizeof(int64_t)];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "evloop_bench: %s: %s\n", what,
            rc < 0 ? shmq_strerror(rc) : strerror(errno));
    exit(1);
}

/* ------------------------------------------------------------------ */
/* The consumer's ways of waiting                                        */
/* ------------------------------------------------------------------ */

struct consumer {
    enum variant v;
    shmq_t *q;
    int pipe_rd; /* V_PIPE */
    struct io_uring ring;
    shmq_pollfd_t *pfd;
    int ep;
};

static void consumer_open(struct consumer *c, enum variant v, shmq_t *q,
                          int pipe_rd)
{
    memset(c, 0, sizeof *c);
    c->v = v;
    c->q = q;
    c->pipe_rd = pipe_rd;
    c->ep = -1;
    int rc = 0;
    if (v == V_GET_SLEEP || v == V_POLLFD_SLEEP)
        rc = shmq_set_spin(q, 0);
    /* A loop thread owns its ring: let the kernel run completions when
     * it waits (Linux 6.1+), as io_uring's authors advise for loops. */
    if (v == V_URING && io_uring_queue_init(4, &c->ring,
                                            IORING_SETUP_SINGLE_ISSUER |
                                                IORING_SETUP_DEFER_TASKRUN) < 0)
        rc = io_uring_queue_init(4, &c->ring, 0);
    if ((v == V_POLLFD || v == V_POLLFD_SLEEP) && rc == 0)
        rc = shmq_pollfd_open(&c->pfd, q, SHMQ_EV_READABLE);
    if (rc < 0)
        die("consumer setup", rc);
    if (v == V_POLLFD || v == V_POLLFD_SLEEP || v == V_PIPE) {
        c->ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e = {.events = EPOLLIN};
        int fd = v == V_PIPE ? pipe_rd : shmq_pollfd_fd(c->pfd);
        if (c->ep < 0 || epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &e) < 0)
            die("epoll", 0);
    }
}

static void consumer_close(struct consumer *c)
{
    if (c->v == V_URING)
        io_uring_queue_exit(&c->ring);
    if (c->ep >= 0)
        close(c->ep);
    shmq_pollfd_close(c->pfd);
    shmq_set_spin(c->q, SHMQ_DEFAULT_SPIN_NS);
}

/* Block until a message may be there (event-loop variants). */
static void consumer_wait(struct consumer *c)
{
    if (c->v == V_URING) {
        for (;;) {
            int rc = shmq_uring_arm(c->q, &c->ring, SHMQ_EV_READABLE, 1,
                                    SHMQ_FOREVER);
            if (rc > 0)
                return;
            if (rc < 0)
                die("shmq_uring_arm", rc);
            struct io_uring_cqe *cqe;
            do
                rc = io_uring_submit_and_wait(&c->ring, 1);
            while (rc == -EINTR);
            if (io_uring_peek_cqe(&c->ring, &cqe) < 0)
                die("io_uring", 0);
            rc = shmq_uring_result(c->q, SHMQ_EV_READABLE, cqe->res);
            io_uring_cqe_seen(&c->ring, cqe);
            if (rc > 0)
                return;
        }
    }
    struct epoll_event e;
    while (epoll_wait(c->ep, &e, 1, -1) < 1)
        ;
}

/* Take every message there is; calls fn for each. -EPIPE once the
 * queue is closed and drained (or the pipe at EOF). */
static int consumer_drain(struct consumer *c, void (*fn)(const struct msg *))
{
    struct msg m;
    size_t len;
    int rc;
    if (c->v == V_PIPE) {
        static struct msg buf[1024];
        ssize_t n = read(c->pipe_rd, buf, sizeof buf);
        if (n == 0)
            return -EPIPE;
        for (ssize_t i = 0; i < n / MSG; i++)
            fn(&buf[i]);
        return 0;
    }
    while ((rc = shmq_get_nowait(c->q, &m, sizeof m, &len)) == 0)
        fn(&m);
    if (c->pfd)
        shmq_pollfd_ack(c->pfd);
    return rc == -EAGAIN ? 0 : rc;
}

/* One message, or -EPIPE at the end. */
static int consumer_run(struct consumer *c, void (*fn)(const struct msg *))
{
    if (c->v == V_GET_SPIN || c->v == V_GET_SLEEP) {
        struct msg m;
        size_t len;
        int rc = shmq_get(c->q, &m, sizeof m, &len, SHMQ_FOREVER);
        if (rc == 0)
            fn(&m);
        return rc;
    }
    consumer_wait(c);
    return consumer_drain(c, fn);
}

/* ------------------------------------------------------------------ */
/* Ping-pong                                                            */
/* ------------------------------------------------------------------ */

static int64_t *lat;
static long nlat;
static int pong_wr;

static void on_ping(const struct msg *m)
{
    lat[nlat++] = now_ns() - m->t;
    char c = 'p';
    if (write(pong_wr, &c, 1) != 1)
        die("pong", 0);
}

static void send_msg(enum variant v, shmq_t *q, int wr, const struct msg *m)
{
    if (v == V_PIPE) {
        if (write(wr, m, sizeof *m) != sizeof *m)
            die("pipe write", 0);
        return;
    }
    int rc = shmq_put(q, m, sizeof *m, SHMQ_FOREVER);
    if (rc < 0)
        die("shmq_put", rc);
}

static void pp_producer(enum variant v, shmq_t *q, int wr, int pong_rd, long n)
{
    struct msg m = {0};
    for (long i = 0; i < n; i++) {
        m.t = now_ns();
        send_msg(v, q, wr, &m);
        char c;
        if (read(pong_rd, &c, 1) != 1)
            die("pong read", 0);
    }
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct result {
    double p50, p99, p999; /* us */
    double rate;           /* messages per second */
};

static void pingpong(enum variant v, long n, struct result *r)
{
    shmq_t *q;
    struct shmq_config cfg = {.maxsize = 1024, .max_message = MSG};
    int data[2], pong[2];
    if (shmq_create(&q, &cfg) < 0 || pipe2(data, O_CLOEXEC) < 0 ||
        pipe2(pong, O_CLOEXEC) < 0)
        die("setup", 0);
    pid_t pid = fork();
    if (pid == 0) {
        pp_producer(v, q, data[1], pong[0], n);
        _exit(0);
    }
    struct consumer c;
    consumer_open(&c, v, q, data[0]);
    lat = calloc((size_t)n, sizeof *lat);
    nlat = 0;
    pong_wr = pong[1];
    while (nlat < n)
        if (consumer_run(&c, on_ping) < 0)
            die("consumer", 0);
    waitpid(pid, NULL, 0);
    qsort(lat, (size_t)n, sizeof *lat, cmp64);
    r->p50 = lat[n / 2] / 1e3;
    r->p99 = lat[n * 99 / 100] / 1e3;
    r->p999 = lat[n * 999 / 1000] / 1e3;
    free(lat);
    consumer_close(&c);
    shmq_release(q);
    for (int i = 0; i < 2; i++) {
        close(data[i]);
        close(pong[i]);
    }
}

/* ------------------------------------------------------------------ */
/* 1x1 throughput                                                       */
/* ------------------------------------------------------------------ */

static long received;

static void on_msg(const struct msg *m)
{
    (void)m;
    received++;
}

static void tp_producer(enum variant v, shmq_t *q, int wr, long n)
{
    struct msg m = {0};
    for (long i = 0; i < n; i++)
        send_msg(v, q, wr, &m);
    if (v == V_PIPE)
        close(wr);
    else
        shmq_close(q);
}

static void throughput(enum variant v, long n, struct result *r)
{
    shmq_t *q;
    struct shmq_config cfg = {.maxsize = 1024, .max_message = MSG};
    int data[2];
    if (shmq_create(&q, &cfg) < 0 || pipe2(data, O_CLOEXEC) < 0)
        die("setup", 0);
    (void)fcntl(data[1], F_SETPIPE_SZ, 1 << 20);
    struct consumer c;
    consumer_open(&c, v, q, data[0]);
    int64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid == 0) {
        close(data[0]);
        tp_producer(v, q, data[1], n);
        _exit(0);
    }
    close(data[1]);
    received = 0;
    int rc;
    while ((rc = consumer_run(&c, on_msg)) == 0)
        ;
    if (rc != -EPIPE || received != n)
        die("throughput run", rc);
    r->rate = n / ((now_ns() - t0) / 1e9);
    waitpid(pid, NULL, 0);
    consumer_close(&c);
    shmq_release(q);
    close(data[0]);
}

/* ------------------------------------------------------------------ */
/* Report                                                               */
/* ------------------------------------------------------------------ */

#define MAX_REPS 15

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double runs[NVARIANT][4][MAX_REPS];

static void run_once(enum variant v, long n, long m, long rep)
{
    struct result r;
    pingpong(v, n, &r);
    throughput(v, m, &r);
    runs[v][0][rep] = r.p50;
    runs[v][1][rep] = r.p99;
    runs[v][2][rep] = r.p999;
    runs[v][3][rep] = r.rate;
}

/* Each field: the median over reps runs. */
static void median_of(enum variant v, long reps, struct result *out)
{
    for (int k = 0; k < 4; k++)
        qsort(runs[v][k], (size_t)reps, sizeof runs[v][k][0], cmpd);
    out->p50 = runs[v][0][reps / 2];
    out->p99 = runs[v][1][reps / 2];
    out->p999 = runs[v][2][reps / 2];
    out->rate = runs[v][3][reps / 2];
}

int main(int argc, char **argv)
{
    long n = 50000, m = 2000000, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            n = 2000;
            m = 100000;
            reps = 1;
        } else if (!strcmp(argv[i], "--pingpong") && i + 1 < argc) {
            n = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--messages") && i + 1 < argc) {
            m = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            reps = atol(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: %s [--quick] [--pingpong N] "
                    "[--messages M] [--repeat R]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n < 1000 || m < 1000 || reps < 1 || reps > MAX_REPS)
        return 2;
    bool uring = shmq_evloop_path() == SHMQ_EVLOOP_URING;
    struct result r[NVARIANT] = {0};
    printf("# ping-pong: %ld round trips; 1x1: %ld messages of %d bytes\n", n,
           m, MSG);
    printf("%-40s %9s %9s %9s %14s\n", "consumer waits with", "p50 us",
           "p99 us", "p99.9 us", "1x1 msg/s");
    for (long rep = 0; rep < reps; rep++)
        for (int v = 0; v < NVARIANT; v++)
            if (v != V_URING || uring)
                run_once(v, n, m, rep);
    for (int v = 0; v < NVARIANT; v++) {
        if (v == V_URING && !uring) {
            printf("%-40s skipped: io_uring futex waits unavailable\n",
                   names[v]);
            continue;
        }
        median_of(v, reps, &r[v]);
        printf("%-40s %9.1f %9.1f %9.1f %14.0f\n", names[v], r[v].p50, r[v].p99,
               r[v].p999, r[v].rate);
    }
    if (uring)
        printf("# io_uring vs blocking get (no spin): p50 %.2fx, "
               "throughput %.2fx; vs default spin: p50 %.2fx, "
               "throughput %.2fx\n",
               r[V_URING].p50 / r[V_GET_SLEEP].p50,
               r[V_URING].rate / r[V_GET_SLEEP].rate,
               r[V_URING].p50 / r[V_GET_SPIN].p50,
               r[V_URING].rate / r[V_GET_SPIN].rate);
    printf("# pollfd vs pipe under epoll: p50 %.2fx, throughput %.2fx; "
           "without spin: p50 %.2fx, throughput %.2fx\n",
           r[V_POLLFD].p50 / r[V_PIPE].p50, r[V_POLLFD].rate / r[V_PIPE].rate,
           r[V_POLLFD_SLEEP].p50 / r[V_PIPE].p50,
           r[V_POLLFD_SLEEP].rate / r[V_PIPE].rate);
    return 0;
}
