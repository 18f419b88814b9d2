/* SPDX-License-Identifier: MIT */
/*
 * shmq-stat - inspect shmq queues from outside: sizes, state words,
 * participants and whether they live; clean stray half-built regions.
 *
 *   shmq-stat [--json] [--watch SECONDS [--count N]] [--attach] QUEUE...
 *   shmq-stat --clean [--dry-run]
 *
 * QUEUE is a queue name ("/jobs", looked up under /dev/shm) or a path to
 * the region's file, such as /proc/PID/fd/N for an anonymous queue.
 *
 * The region is untrusted input: it is read with pread into private
 * buffers (a file truncated meanwhile cannot raise SIGBUS here), every
 * size is checked before use, and nothing is written. Only the identity,
 * the header words and the participant table are read (lib/layout.h);
 * the descriptors belong to the ring and change with it. Liveness is the
 * library's own test: a write lock on the slot's byte (F_OFD_GETLK).
 *
 * Without --attach the tool takes no participant slot, so it cannot give
 * qsize exactly (the header's tail and head are hints): "in flight" is
 * what the tail hint and release say. --attach opens the queue through
 * the public API (taking a slot for a moment, which may recover records
 * of dead participants, as any attach does) for shmq_qsize() and friends.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layout.h"
#include "shmq.h"

#define SHM_DIR       "/dev/shm"
#define STRAY_PREFIX  "shmq-new-"
#define STRAY_MIN_AGE 60 /* seconds: a live creator is done long before */

struct options {
    bool json;
    bool attach;
    bool clean;
    bool dry_run;
    double watch; /* seconds; 0: once */
    long count;   /* rounds of --watch; 0: until killed */
};

/* What one look at a region found; all of it copied out of the file. */
struct snapshot {
    struct shmq_header hdr;
    struct shmq_participant parts[SHMQ_PARTICIPANTS];
    char lock[SHMQ_PARTICIPANTS]; /* 'W' write-locked, 'R' read, '-' none */
    uint64_t file_size;
    /* from --attach, through the public API */
    bool attached;
    size_t qsize;
    bool closed, full;
};

/* ------------------------------------------------------------------ */
/* Reading and validating                                               */
/* ------------------------------------------------------------------ */

static int read_exact(int fd, void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n =
            pread(fd, (char *)buf + done, len - done, off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPROTO;
        done += (size_t)n;
    }
    return 0;
}

/* The identity says what the library would accept on attach; this checks
 * what the tool relies on: that the header and participants are there. */
static const char *identity_problem(const struct shmq_identity *id,
                                    uint64_t file_size)
{
    if (id->magic != SHMQ_MAGIC)
        return "not a shmq region (bad magic)";
    if (id->version != SHMQ_LAYOUT_VERSION)
        return "layout version differs from this tool's";
    if (id->participants != SHMQ_PARTICIPANTS)
        return "participant count differs";
    if (id->region_size != file_size)
        return "region size differs from the file's";
    if (id->unit_shift < 3 || id->unit_shift > 40)
        return "corrupt storage unit";
    uint64_t parts_end = SHMQ_PARTICIPANTS_OFFSET +
                         SHMQ_PARTICIPANTS * sizeof(struct shmq_participant);
    if (id->desc_offset < parts_end || id->ring_offset <= id->desc_offset ||
        id->ring_offset >= file_size)
        return "corrupt offsets";
    if (id->maxsize == 0 || id->maxsize > id->desc_count)
        return "corrupt maxsize";
    return NULL;
}

static char probe_lock(int fd, unsigned slot)
{
    struct flock fl = {.l_type = F_WRLCK,
                       .l_whence = SEEK_SET,
                       .l_start = SHMQ_LOCK_BASE + (off_t)slot,
                       .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return '?';
    return fl.l_type == F_WRLCK ? 'W' : fl.l_type == F_RDLCK ? 'R' : '-';
}

/* 0, or -errno with a message printed. */
static int take_snapshot(const char *path, int fd, struct snapshot *s)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "shmq-stat: %s: not a regular file\n", path);
        return -EPROTO;
    }
    s->file_size = (uint64_t)st.st_size;
    uint64_t need = SHMQ_PARTICIPANTS_OFFSET + sizeof s->parts;
    if (s->file_size < need) {
        fprintf(stderr, "shmq-stat: %s: too small for a shmq region\n", path);
        return -EPROTO;
    }
    int rc = read_exact(fd, &s->hdr, sizeof s->hdr, 0);
    if (rc == 0)
        rc = read_exact(fd, s->parts, sizeof s->parts,
                        (off_t)SHMQ_PARTICIPANTS_OFFSET);
    if (rc < 0) {
        fprintf(stderr, "shmq-stat: %s: %s\n", path, strerror(-rc));
        return rc;
    }
    const char *problem = identity_problem(&s->hdr.id, s->file_size);
    if (problem) {
        fprintf(stderr, "shmq-stat: %s: %s\n", path, problem);
        return -EPROTO;
    }
    for (unsigned i = 0; i < SHMQ_PARTICIPANTS; i++)
        s->lock[i] = probe_lock(fd, i);
    return 0;
}

/* Exact numbers through the library; takes a participant slot briefly. */
static void attach_snapshot(const char *path, struct snapshot *s)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    shmq_t *q = NULL;
    int rc = fd < 0 ? -errno : shmq_from_fd(&q, fd);
    if (fd >= 0)
        close(fd);
    if (rc < 0) {
        fprintf(stderr, "shmq-stat: %s: attach: %s\n", path, shmq_strerror(rc));
        return;
    }
    s->attached = true;
    s->qsize = shmq_qsize(q);
    s->closed = shmq_closed(q);
    s->full = shmq_full(q);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Printing                                                             */
/* ------------------------------------------------------------------ */

static const char *part_state(uint32_t state)
{
    return state == PART_FREE     ? "free"
           : state == PART_ACTIVE ? "active"
                                  : "corrupt";
}

static bool slot_shown(const struct snapshot *s, unsigned i)
{
    return s->parts[i].state != PART_FREE || s->lock[i] != '-';
}

static const char *lock_word(char l)
{
    return l == 'W'   ? "alive"
           : l == 'R' ? "read-locked (not alive)"
           : l == '-' ? "dead"
                      : "unknown";
}

struct words {
    uint32_t tail_seq, head_seq, release_seq;
    uint64_t done, aborted, closed;
};

static struct words words_of(const struct snapshot *s)
{
    const struct shmq_header *h = &s->hdr;
    return (struct words){
        .tail_seq = pos_seq(h->tail.word),
        .head_seq = pos_seq(h->head.word),
        .release_seq = pos_seq(h->release.word),
        .done = h->tasks_done.word,
        .aborted = h->tasks_aborted.word,
        .closed = h->closed.word,
    };
}

static void print_text(const char *path, const struct snapshot *s,
                       double put_rate, double take_rate, bool rates)
{
    const struct shmq_identity *id = &s->hdr.id;
    struct words w = words_of(s);
    uint64_t capacity = (uint64_t)id->cap_units << id->unit_shift;
    printf("%s\n", path);
    printf("  layout %" PRIu32 ", region %" PRIu64 " B, %s\n", id->version,
           s->file_size,
           id->flags & SHMQ_JOINABLE ? "joinable" : "not joinable");
    printf("  maxsize %" PRIu32 ", capacity %" PRIu64 " B, max_message %" PRIu64
           " B, unit %u B\n",
           id->maxsize, capacity, id->max_message, 1u << id->unit_shift);
    printf("  closed %s\n", w.closed ? "yes" : "no");
    printf("  sequence: claimed >= %" PRIu32 ", taken >= %" PRIu32
           ", released %" PRIu32 ", in flight <= %" PRIu32 " (hints)\n",
           w.tail_seq, w.head_seq, w.release_seq,
           (uint32_t)(w.tail_seq - w.release_seq));
    if (id->flags & SHMQ_JOINABLE)
        printf("  tasks: done %" PRIu64 ", aborted %" PRIu64
               ", unfinished >= %" PRId32 "\n",
               w.done, w.aborted,
               (int32_t)(w.tail_seq - (uint32_t)w.aborted - (uint32_t)w.done));
    if (s->attached)
        printf("  qsize %zu%s%s (attached)\n", s->qsize,
               s->full ? ", full" : "", s->closed ? ", closed" : "");
    if (rates)
        printf("  rate: %.0f puts/s, %.0f frees/s\n", put_rate, take_rate);
    unsigned alive = 0, shown = 0;
    for (unsigned i = 0; i < SHMQ_PARTICIPANTS; i++)
        alive += s->lock[i] == 'W';
    printf("  participants: %u alive\n", alive);
    for (unsigned i = 0; i < SHMQ_PARTICIPANTS; i++) {
        if (!slot_shown(s, i))
            continue;
        printf("    slot %4u  pid %-8" PRIu32 " %-7s %s\n", i, s->parts[i].pid,
               part_state(s->parts[i].state), lock_word(s->lock[i]));
        shown++;
    }
    if (!shown)
        printf("    (none)\n");
}

static void print_json(const char *path, const struct snapshot *s,
                       double put_rate, double take_rate, bool rates)
{
    const struct shmq_identity *id = &s->hdr.id;
    struct words w = words_of(s);
    printf("{\"path\":\"");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    printf("\",\"layout\":%" PRIu32 ",\"region_size\":%" PRIu64
           ",\"joinable\":%s,\"maxsize\":%" PRIu32 ",\"capacity\":%" PRIu64
           ",\"max_message\":%" PRIu64 ",\"unit\":%u,\"closed\":%s",
           id->version, s->file_size,
           id->flags & SHMQ_JOINABLE ? "true" : "false", id->maxsize,
           (uint64_t)id->cap_units << id->unit_shift, id->max_message,
           1u << id->unit_shift, w.closed ? "true" : "false");
    printf(",\"claimed_hint\":%" PRIu32 ",\"taken_hint\":%" PRIu32
           ",\"released\":%" PRIu32 ",\"in_flight_hint\":%" PRIu32,
           w.tail_seq, w.head_seq, w.release_seq,
           (uint32_t)(w.tail_seq - w.release_seq));
    if (id->flags & SHMQ_JOINABLE)
        printf(",\"tasks_done\":%" PRIu64 ",\"tasks_aborted\":%" PRIu64, w.done,
               w.aborted);
    if (s->attached)
        printf(",\"qsize\":%zu,\"full\":%s", s->qsize,
               s->full ? "true" : "false");
    if (rates)
        printf(",\"puts_per_s\":%.1f,\"frees_per_s\":%.1f", put_rate,
               take_rate);
    printf(",\"participants\":[");
    bool first = true;
    for (unsigned i = 0; i < SHMQ_PARTICIPANTS; i++) {
        if (!slot_shown(s, i))
            continue;
        printf(
            "%s{\"slot\":%u,\"pid\":%" PRIu32 ",\"state\":\"%s\",\"alive\":%s,"
            "\"read_locked\":%s}",
            first ? "" : ",", i, s->parts[i].pid, part_state(s->parts[i].state),
            s->lock[i] == 'W' ? "true" : "false",
            s->lock[i] == 'R' ? "true" : "false");
        first = false;
    }
    printf("]}\n");
}

/* ------------------------------------------------------------------ */
/* Inspecting                                                           */
/* ------------------------------------------------------------------ */

static void queue_path(const char *arg, char *buf, size_t cap)
{
    /* "/name" with no other '/' is a queue name, anything else a path */
    if (arg[0] == '/' && !strchr(arg + 1, '/'))
        snprintf(buf, cap, SHM_DIR "%s", arg);
    else
        snprintf(buf, cap, "%s", arg);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s,
                          .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int inspect(const char *arg, const struct options *o)
{
    char path[4096];
    queue_path(arg, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "shmq-stat: %s: %s\n", path, strerror(errno));
        return 1;
    }
    static struct snapshot s, prev;
    double t_prev = 0;
    int status = 0;
    for (long round = 0; o->count == 0 || round < o->count; round++) {
        memset(&s, 0, sizeof s);
        if (take_snapshot(path, fd, &s) < 0) {
            status = 2;
            break;
        }
        if (o->attach)
            attach_snapshot(path, &s);
        double t = now_s(), put_rate = 0, take_rate = 0;
        bool rates = round > 0;
        if (rates) {
            struct words a = words_of(&prev), b = words_of(&s);
            put_rate = (uint32_t)(b.tail_seq - a.tail_seq) / (t - t_prev);
            take_rate =
                (uint32_t)(b.release_seq - a.release_seq) / (t - t_prev);
        }
        (o->json ? print_json : print_text)(path, &s, put_rate, take_rate,
                                            rates);
        fflush(stdout);
        prev = s;
        t_prev = t;
        if (o->watch <= 0)
            break;
        sleep_s(o->watch);
    }
    close(fd);
    return status;
}

/* ------------------------------------------------------------------ */
/* Cleaning stray half-built regions                                    */
/* ------------------------------------------------------------------ */

/* A creator builds its region under shmq-new-* and links it to its name
 * within milliseconds; one older than a minute whose participant bytes
 * nobody locks was left by a creator that died. */
static bool stray(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    struct stat st;
    bool old = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
               time(NULL) - st.st_mtime >= STRAY_MIN_AGE;
    struct flock fl = {.l_type = F_WRLCK,
                       .l_whence = SEEK_SET,
                       .l_start = SHMQ_LOCK_BASE,
                       .l_len = SHMQ_PARTICIPANTS};
    bool unlocked = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_UNLCK;
    close(fd);
    return old && unlocked;
}

static int clean(const struct options *o)
{
    DIR *d = opendir(SHM_DIR);
    if (!d) {
        fprintf(stderr, "shmq-stat: " SHM_DIR ": %s\n", strerror(errno));
        return 1;
    }
    int status = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, STRAY_PREFIX, strlen(STRAY_PREFIX)) != 0 ||
            !stray(dirfd(d), e->d_name))
            continue;
        if (!o->dry_run && unlinkat(dirfd(d), e->d_name, 0) < 0) {
            fprintf(stderr, "shmq-stat: " SHM_DIR "/%s: %s\n", e->d_name,
                    strerror(errno));
            status = 1;
            continue;
        }
        printf("%s " SHM_DIR "/%s\n", o->dry_run ? "would remove" : "removed",
               e->d_name);
    }
    closedir(d);
    return status;
}

/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(
        f, "usage: shmq-stat [--json] [--watch SECONDS [--count N]] [--attach] "
           "QUEUE...\n"
           "       shmq-stat --clean [--dry-run]\n"
           "QUEUE: a queue name (/jobs) or a path (/proc/PID/fd/N).\n"
           "  --json      one JSON object per queue and round\n"
           "  --watch S   repeat every S seconds, with put and free rates\n"
           "              (one QUEUE, unless --count is given)\n"
           "  --count N   stop after N rounds of --watch\n"
           "  --attach    exact qsize through the library (takes a slot "
           "briefly)\n"
           "  --clean     remove stray " SHM_DIR "/" STRAY_PREFIX
           "* files (older than a minute, not locked)\n"
           "  --dry-run   with --clean: only list them\n");
}

static int parse(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"json", no_argument, NULL, 'j'},
        {"watch", required_argument, NULL, 'w'},
        {"count", required_argument, NULL, 'n'},
        {"attach", no_argument, NULL, 'a'},
        {"clean", no_argument, NULL, 'c'},
        {"dry-run", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "jw:n:acdh", longs, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'j':
            o->json = true;
            break;
        case 'a':
            o->attach = true;
            break;
        case 'c':
            o->clean = true;
            break;
        case 'd':
            o->dry_run = true;
            break;
        case 'w':
            o->watch = strtod(optarg, &end);
            if (*end || !(o->watch > 0))
                return -1;
            break;
        case 'n':
            o->count = strtol(optarg, &end, 10);
            if (*end || o->count <= 0)
                return -1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    if (parse(argc, argv, &o) < 0 || (o.clean == (optind < argc)) ||
        (o.watch > 0 && o.count == 0 && argc - optind > 1)) {
        /* (--watch without --count never ends: one queue then) */
        usage(stderr);
        return 1;
    }
    if (o.clean)
        return clean(&o);
    int status = 0;
    for (int i = optind; i < argc; i++) {
        int rc = inspect(argv[i], &o);
        status = rc > status ? rc : status;
    }
    return status;
}
