/* SPDX-License-Identifier: MIT */
/*
 * gather.c - one message from two buffers: a header and a body.
 *
 * The body already exists (here: slices of one large document); the
 * header is built per message. shmq_putv sends header + body as one
 * message, copied straight from both buffers into the queue: no buffer
 * is assembled first. A forked consumer takes each message with
 * shmq_get and checks the header against the body it got.
 *
 * Exits 0 only if every message arrived once, in order, intact.
 */
#include <errno.h>
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define DOC_SIZE  (1u << 20)
#define MAX_SLICE 4000u

struct header {
    uint32_t seq;
    uint32_t offset; /* where the body starts in the document */
    uint32_t len;    /* bytes of body after the header */
    uint32_t sum;    /* a checksum of the body */
};

static unsigned char doc[DOC_SIZE];

static uint32_t checksum(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint32_t slice_len(uint32_t seq)
{
    return (seq * 2654435761u) % (MAX_SLICE + 1); /* 0 .. MAX_SLICE */
}

/* How many slices the document is cut into (the last one is dropped if
 * it would run past the end). */
static uint32_t slice_count(void)
{
    uint32_t seq = 0, off = 0;
    while (off + slice_len(seq) <= DOC_SIZE)
        off += slice_len(seq++);
    return seq;
}

static int produce(shmq_t *q)
{
    uint32_t seq = 0, off = 0;
    while (off + slice_len(seq) <= DOC_SIZE) {
        const unsigned char *body = doc + off;
        uint32_t n = slice_len(seq);
        struct header h = {
            .seq = seq, .offset = off, .len = n, .sum = checksum(body, n)};
        struct iovec iov[2] = {
            {.iov_base = &h, .iov_len = sizeof h},
            {.iov_base = (void *)body, .iov_len = n},
        };
        int rc = shmq_putv(q, iov, 2, SHMQ_FOREVER); /* h, then body */
        if (rc < 0) {
            fprintf(stderr, "shmq_putv: %s\n", shmq_strerror(rc));
            return 1;
        }
        off += n;
        seq++;
    }
    return 0;
}

static int consume(shmq_t *q)
{
    static _Alignas(8) unsigned char buf[sizeof(struct header) + MAX_SLICE];
    uint32_t next = 0, off = 0;
    size_t len;
    int rc;
    while ((rc = shmq_get(q, buf, sizeof buf, &len, SHMQ_FOREVER)) == 0) {
        struct header h;
        if (len < sizeof h)
            return 1;
        memcpy(&h, buf, sizeof h);
        const unsigned char *body = buf + sizeof h;
        if (h.seq != next || h.offset != off || h.len != len - sizeof h ||
            h.sum != checksum(body, h.len) ||
            memcmp(body, doc + off, h.len) != 0) {
            fprintf(stderr, "message %u: bad\n", next);
            return 1;
        }
        off += h.len;
        next++;
    }
    if (rc != -EPIPE) { /* -EPIPE: closed and drained, the normal end */
        fprintf(stderr, "shmq_get: %s\n", shmq_strerror(rc));
        return 1;
    }
    if (next != slice_count()) {
        fprintf(stderr, "%u of %u messages received\n", next, slice_count());
        return 1;
    }
    return 0;
}

int main(void)
{
    for (uint32_t i = 0; i < DOC_SIZE; i++) /* the document */
        doc[i] = (unsigned char)(i * 7u ^ i >> 9);

    struct shmq_config cfg = {.maxsize = 256,
                              .max_message = sizeof(struct header) + MAX_SLICE};
    shmq_t *q;
    int rc = shmq_create(&q, &cfg);
    if (rc < 0) {
        fprintf(stderr, "shmq_create: %s\n", shmq_strerror(rc));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0)
        _exit(consume(q)); /* the child inherits q */

    int failed = produce(q);

    /* A total above max_message is refused before anything is put. */
    struct header big = {.len = UINT32_MAX};
    struct iovec too_long[2] = {{&big, sizeof big}, {doc, DOC_SIZE}};
    if (shmq_putv(q, too_long, 2, SHMQ_NOWAIT) != -EMSGSIZE)
        failed = 1;

    shmq_close(q);
    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        failed = 1;
    shmq_release(q);
    if (!failed)
        printf("%u header + body messages sent with shmq_putv\n",
               slice_count());
    return failed;
}
