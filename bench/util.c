/* SPDX-License-Identifier: MIT */
/* util.c - clocks, CPU pinning and progress lines on stderr. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

bool bench_verbose_progress;

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double now_sec(void)
{
    return (double)now_ns() / 1e9;
}

int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void pin_to_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % online_cpus(), &set);
    (void)sched_setaffinity(0, sizeof(set), &set);
}

/* One line, rewritten in place on a terminal, plain lines otherwise. */
void progress(const char *fmt, ...)
{
    static int tty = -1;
    va_list ap;
    if (!bench_verbose_progress)
        return;
    if (tty < 0)
        tty = isatty(2);
    va_start(ap, fmt);
    if (tty)
        fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    if (!tty)
        fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

#include <poll.h>

/* The adaptive wait of the fd-based peers: poll without sleeping for up
 * to spin_ns (each poll is a system call, which is what a user of these
 * transports can do), then sleep in poll. Returns once fd is readable. */
void fd_wait_readable(int fd, int64_t spin_ns)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (spin_ns > 0) {
        uint64_t end = now_ns() + (uint64_t)spin_ns;
        do {
            if (poll(&p, 1, 0) > 0)
                return;
        } while (now_ns() < end);
    }
    while (poll(&p, 1, -1) < 0)
        ;
}

int64_t cell_spin_ns(const struct cell *c)
{
    return c->sc == SC_LATENCY && c->mode == WAIT_ADAPTIVE ? 20000 : 0;
}
