/* SPDX-License-Identifier: MIT */
/*
 * pairs.c - shmq-pairs: one process doing N put+get pairs of one 64-byte
 * message, over shmq (a default queue), the Vyukov MPMC ring or the raw
 * SPSC ring (rings.c, a default queue's footprint each), for
 * bench/instructions.py to count under callgrind.
 *
 *   shmq-pairs shmq|vyukov|spsc N
 *
 * The counted pairs run in measured_pairs(), which the script names with
 * --toggle-collect, so creating and warming the queue is not counted.
 * The loop only moves bytes (the last message is compared after it), so
 * the counts are the queue's and the call's, not a test's.
 * Before the loop the program prints where each loaded object sits
 * ("object <base> <path>"), so that the script can find the addresses
 * of the locked instructions that objdump lists in each file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rings.h"
#include "shmq.h"

#define MSG 64

struct pairs {
    int (*put)(void *q, const void *msg, size_t len);
    int (*get)(void *q, void *buf, size_t cap, size_t *len);
    void *q;
};

static int shmq_put_(void *q, const void *msg, size_t len)
{
    return shmq_put(q, msg, len, SHMQ_NOWAIT);
}
static int shmq_get_(void *q, void *buf, size_t cap, size_t *len)
{
    return shmq_get(q, buf, cap, len, SHMQ_NOWAIT);
}
static int vy_put(void *q, const void *msg, size_t len)
{
    return vyukov_try_put(q, msg, len);
}
static int vy_get(void *q, void *buf, size_t cap, size_t *len)
{
    return vyukov_try_get(q, buf, cap, len);
}

/* One ring, both ends in this process. */
struct spsc2 {
    struct spsc prod, cons;
};
static int spsc_put(void *q, const void *msg, size_t len)
{
    return spsc_try_put(&((struct spsc2 *)q)->prod, msg, len);
}
static int spsc_get(void *q, void *buf, size_t cap, size_t *len)
{
    return spsc_try_get(&((struct spsc2 *)q)->cons, buf, cap, len);
}

/* The counted part: nothing but the pairs. Returns the first error. */
static __attribute__((noinline)) int pairs_loop(const struct pairs *p, long n,
                                                unsigned char *msg,
                                                unsigned char *buf)
{
    size_t len;
    for (long i = 0; i < n; i++) {
        int rc = p->put(p->q, msg, MSG);
        if (rc == 0)
            rc = p->get(p->q, buf, MSG, &len);
        if (rc != 0)
            return rc;
        __asm__ volatile("" ::"r"(buf) : "memory");
    }
    return 0;
}

static void *map(size_t size)
{
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    memset(m, 0, size);
    return m;
}

/* The counted call (the warm-up runs pairs_loop outside it). */
static __attribute__((noinline)) int measured_pairs(const struct pairs *p,
                                                    long n, unsigned char *msg,
                                                    unsigned char *buf)
{
    int rc = pairs_loop(p, n, msg, buf);
    __asm__ volatile("" ::: "memory"); /* not a tail call: a frame of its own */
    return rc;
}

static int setup(const char *what, struct pairs *p, size_t footprint)
{
    if (!strcmp(what, "shmq")) {
        shmq_t *q;
        int rc = shmq_create(&q, NULL);
        *p = (struct pairs){shmq_put_, shmq_get_, q};
        return rc;
    }
    if (!strcmp(what, "vyukov")) {
        static struct vyukov r;
        void *m = map(vyukov_size(&r, MSG, footprint));
        if (!m)
            return -ENOMEM;
        vyukov_init(&r, m);
        *p = (struct pairs){vy_put, vy_get, &r};
        return 0;
    }
    if (!strcmp(what, "spsc")) {
        static struct spsc2 r;
        void *m = map(spsc_size(&r.prod, MSG, footprint));
        if (!m)
            return -ENOMEM;
        r.cons = r.prod;
        spsc_attach_producer(&r.prod, m);
        spsc_attach_consumer(&r.cons, m);
        *p = (struct pairs){spsc_put, spsc_get, &r};
        return 0;
    }
    return -EINVAL;
}

static int print_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (info->dlpi_name && info->dlpi_name[0])
        printf("object 0x%lx %s\n", (unsigned long)info->dlpi_addr,
               info->dlpi_name);
    else
        printf("object 0x%lx /proc/self/exe\n", (unsigned long)info->dlpi_addr);
    return 0;
}

/* The footprint of a default queue: its file's size. */
static size_t default_footprint(void)
{
    shmq_t *q;
    size_t bytes = 5u << 20;
    if (shmq_create(&q, NULL) == 0) {
        off_t end = lseek(shmq_fd(q), 0, SEEK_END);
        if (end > 0)
            bytes = (size_t)end;
        shmq_release(q);
    }
    return bytes;
}

int main(int argc, char **argv)
{
    static unsigned char msg[MSG], buf[MSG];
    struct pairs p;
    long n = argc == 3 ? atol(argv[2]) : 0;
    if (n <= 0) {
        fprintf(stderr, "usage: shmq-pairs shmq|vyukov|spsc N\n");
        return 2;
    }
    int rc = setup(argv[1], &p, default_footprint());
    if (rc < 0) {
        fprintf(stderr, "shmq-pairs: %s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    for (int i = 0; i < MSG; i++)
        msg[i] = (unsigned char)(i * 37 + 1);
    /* warm: code paths, lazy binding and every page of the storage (a
     * default queue wraps after 65536 messages of 64 B) */
    rc = pairs_loop(&p, 70000, msg, buf);
    if (rc == 0 && memcmp(msg, buf, MSG) != 0)
        rc = -EBADMSG;
    dl_iterate_phdr(print_object, NULL);
    fflush(stdout);
    if (rc == 0)
        rc = measured_pairs(&p, n, msg, buf);
    if (rc == 0 && memcmp(msg, buf, MSG) != 0)
        rc = -EBADMSG;
    if (rc != 0) {
        fprintf(stderr, "shmq-pairs: %s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    printf("pairs %ld\n", n);
    return 0;
}
