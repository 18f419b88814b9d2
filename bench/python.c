/* SPDX-License-Identifier: MIT */
/*
 * python.c - the multiprocessing.Queue row: one python3 run of
 * mpq_bench.py per round, with every Python cell of that round as a job
 * on its stdin and one JSON object per job on its stdout.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

const char *python_missing(void)
{
    static int state = -1;
    if (state < 0)
        state = system("python3 -c 'import multiprocessing' "
                       ">/dev/null 2>&1") == 0;
    return state ? NULL : "n/a: python3 with multiprocessing not found";
}

static double field(const char *line, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0;
}

static void parse(const char *line, struct result *r, const struct cell *c)
{
    const char *note = strstr(line, "\"note\": \"");
    r->ran = true;
    r->failed = strstr(line, "\"ok\": true") == NULL;
    if (note) {
        note += 9;
        size_t n = strcspn(note, "\"");
        if (n >= sizeof(r->note))
            n = sizeof(r->note) - 1;
        memcpy(r->note, note, n);
        r->note[n] = 0;
    }
    r->secs = field(line, "secs");
    if (c->sc == SC_THROUGHPUT) {
        r->msgs = (uint64_t)field(line, "msgs");
        r->bytes = (uint64_t)field(line, "bytes");
        if (r->secs > 0) {
            r->msg_rate = (double)r->msgs / r->secs;
            r->byte_rate = (double)r->bytes / r->secs;
        }
    } else {
        r->samples = (uint64_t)field(line, "samples");
        r->p50 = field(line, "p50");
        r->p99 = field(line, "p99");
        r->p999 = field(line, "p999");
        r->max = field(line, "max");
    }
}

void python_run(struct py_job *jobs, size_t n, const char *script)
{
    char tmp[] = "/tmp/shmq-bench-py-XXXXXX", cmd[4200], line[1024];
    int fd = mkstemp(tmp);
    FILE *in, *out;
    size_t i = 0;

    for (size_t k = 0; k < n; k++)
        memset(jobs[k].res, 0, sizeof(*jobs[k].res));
    if (fd < 0 || !(in = fdopen(fd, "w")))
        goto fail;
    for (size_t k = 0; k < n; k++) {
        const struct cell *c = jobs[k].cell;
        if (c->sc == SC_THROUGHPUT)
            fprintf(in, "tput %u %u %zu %.3f %llu\n", c->producers,
                    c->consumers, c->size, c->secs,
                    (unsigned long long)c->count);
        else
            fprintf(in, "lat %zu %.3f %llu\n", c->size, c->secs,
                    (unsigned long long)c->count);
    }
    fclose(in);
    snprintf(cmd, sizeof(cmd), "python3 '%s' < '%s'", script, tmp);
    out = popen(cmd, "r");
    if (!out)
        goto fail;
    while (i < n && fgets(line, sizeof(line), out))
        parse(line, jobs[i].res, jobs[i].cell), i++;
    pclose(out);
fail:
    for (; i < n; i++) {
        jobs[i].res->ran = true;
        jobs[i].res->failed = true;
        snprintf(jobs[i].res->note, sizeof(jobs[i].res->note),
                 "python3 %s gave no answer", script);
    }
    if (fd >= 0)
        unlink(tmp);
}
