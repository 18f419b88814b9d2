/* SPDX-License-Identifier: MIT */
/*
 * shm.c - the shared region: geometry, memfd / shm_open, seals, the
 * identity header and its validation, and the mirrored mapping.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"
#include "shm.h"
#include "shmq.h"

#define SHM_NAME_MAX 200
#define SHM_PAGE     4096u
/* Upper bound of a region, against arithmetic overflow and absurd sizes. */
#define SHM_REGION_MAX ((uint64_t)1 << 40)

int shmq__shm_check_name(const char *name)
{
    if (!name || name[0] != '/')
        return -EINVAL;
    size_t n = strnlen(name + 1, SHM_NAME_MAX + 1);
    if (n == 0 || strchr(name + 1, '/'))
        return -EINVAL;
    if (!strcmp(name, "/.") || !strcmp(name, "/.."))
        return -EINVAL;
    return n > SHM_NAME_MAX ? -ENAMETOOLONG : 0;
}

static uint64_t round_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) & ~(align - 1);
}

static uint64_t pow2_at_least(uint64_t v)
{
    uint64_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/* The smallest unit (>= 8 bytes) in which a max_message record fits the
 * descriptor's units field. */
static uint32_t unit_shift_for(uint64_t max_message)
{
    uint32_t shift = 3;
    while (((max_message + ((uint64_t)1 << shift) - 1) >> shift) >
           DESC_MAX_UNITS)
        shift++;
    return shift;
}

static int geometry_sizes(uint64_t maxsize, uint64_t capacity,
                          uint64_t max_message, struct shmq_geometry *g)
{
    if (maxsize < 1 || maxsize > SHMQ_MAXSIZE_LIMIT || max_message < 1 ||
        max_message > ((uint64_t)1 << 32))
        return -EINVAL;
    g->maxsize = (uint32_t)maxsize;
    g->desc_count = (uint32_t)pow2_at_least(maxsize);
    g->unit_shift = unit_shift_for(max_message);
    g->max_message = max_message;
    uint64_t unit = (uint64_t)1 << g->unit_shift;
    g->max_units = (uint32_t)((max_message + unit - 1) >> g->unit_shift);
    uint64_t cap_units = capacity >> g->unit_shift;
    if (cap_units < g->max_units || cap_units > ((uint64_t)1 << 31))
        return -EINVAL;
    g->cap_units = (uint32_t)cap_units;
    uint64_t ring_units = pow2_at_least(cap_units);
    if (ring_units < SHM_PAGE >> g->unit_shift)
        ring_units = SHM_PAGE >> g->unit_shift;
    g->ring_units = (uint32_t)ring_units;
    uint64_t parts_end = SHMQ_PARTICIPANTS_OFFSET +
                         SHMQ_PARTICIPANTS * sizeof(struct shmq_participant);
    g->desc_offset = round_up(parts_end, SHMQ_CACHELINE);
    g->ring_offset = round_up(g->desc_offset + (uint64_t)g->desc_count *
                                                   sizeof(struct shmq_desc),
                              SHM_PAGE);
    g->region_size = g->ring_offset + (ring_units << g->unit_shift);
    return g->region_size <= SHM_REGION_MAX ? 0 : -EINVAL;
}

/* The default holds two max_message messages at least; when maxsize is
 * given it is no more than maxsize messages of max_message bytes can
 * use, so that a one-message queue does not take megabytes. */
static uint64_t default_capacity(uint64_t maxsize, uint64_t max_message)
{
    uint64_t capacity = SHMQ_DEFAULT_CAPACITY;
    if (capacity < 2 * max_message)
        capacity = 2 * max_message + 8;
    if (maxsize && maxsize <= SHMQ_MAXSIZE_LIMIT) {
        uint64_t unit = (uint64_t)1 << unit_shift_for(max_message);
        uint64_t need = maxsize * round_up(max_message, unit);
        if (need < capacity)
            capacity = need;
    }
    return capacity;
}

int shmq__shm_geometry(const struct shmq_config *cfg, struct shmq_geometry *geo)
{
    struct shmq_config c = {0};
    if (cfg)
        c = *cfg;
    if (c.flags & ~SHMQ_JOINABLE)
        return -EINVAL;
    uint64_t max_message =
        c.max_message ? c.max_message : SHMQ_DEFAULT_MAX_MESSAGE;
    /* A default never makes a valid request invalid: a small capacity
     * given alone gets the largest max_message that fits it (whole
     * 8-byte units; below one unit, capacity stays too small). */
    if (!c.max_message && c.capacity && c.capacity < max_message)
        max_message = c.capacity >= 8 ? c.capacity & ~(uint64_t)7 : 1;
    uint64_t capacity =
        c.capacity ? c.capacity : default_capacity(c.maxsize, max_message);
    geo->flags = c.flags;
    return geometry_sizes(c.maxsize ? c.maxsize : SHMQ_DEFAULT_MAXSIZE,
                          capacity, max_message, geo);
}

/* Allocate every page of the first size bytes of fd (extending it to
 * size if shorter). tmpfs would otherwise hand out pages as they are
 * first touched, and a put touching a page that tmpfs or the memory
 * limit cannot supply dies of SIGBUS: here it is -ENOSPC or -ENOMEM.
 * A file system without fallocate (none that can hold a shmq region
 * does, today) only gets its size set. */
static int allocate(int fd, uint64_t size)
{
    int rc = fallocate(fd, 0, 0, (off_t)size);
    if (rc == 0)
        return 0;
    if (errno != EOPNOTSUPP)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0)
        return -errno;
    return 0;
}

static int memfd_sealed(uint64_t size)
{
    int fd = memfd_create("shmq", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    int rc = allocate(fd, size);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* A named region is built under a private name and published with
 * link(2), which fails if the name exists: whoever opens the name sees
 * either nothing or a complete queue, never a half-made one, and a
 * creator killed half-way leaves no name behind. */
#define SHM_DIR "/dev/shm"

static void tmp_name(char *buf, size_t cap)
{
    static unsigned counter;
    snprintf(buf, cap, "/shmq-new-%d-%u-%llx", (int)getpid(),
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED),
             (unsigned long long)(uintptr_t)buf ^
                 (unsigned long long)time(NULL));
}

/* Read access alone must not let anyone fake liveness or block attaching
 * (an OFD read lock needs only read access): every class of users that
 * may read the region must also be allowed to write it, and then it can
 * do anything to the queue anyway. A mode asking otherwise is -EINVAL. */
static mode_t readers_without_write(mode_t mode)
{
    return (mode_t)((mode & 0444) >> 1 & ~(mode & 0222)) << 1;
}

/* The process's umask, without changing it (umask(2) would, for every
 * thread at once): Linux 4.7 and later show it in /proc/self/status. */
static int process_umask(mode_t *mask)
{
    char buf[2048];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    buf[n] = '\0';
    const char *line = strstr(buf, "\nUmask:");
    if (!line)
        return -ENOSYS;
    char *end;
    unsigned long v = strtoul(line + 7, &end, 8);
    if (end == line + 7 || v > 0777)
        return -EIO;
    *mask = (mode_t)v;
    return 0;
}

/* The mode the file ends with: the umask applied, and where it took
 * write from a class and left read, read taken too (the rule above). */
static int set_final_mode(int fd, mode_t wanted)
{
    wanted &= 07777;
    return fchmod(fd, wanted & ~readers_without_write(wanted)) < 0 ? -errno : 0;
}

static int shm_named(uint64_t size, char *tmp, size_t cap, mode_t mode)
{
    if (!mode)
        mode = 0600;
    if (readers_without_write(mode))
        return -EINVAL;
    /* Owner-only until the final mode is set, so that nobody else can
     * open the file in between (and keep a descriptor it should not
     * have). Without the umask at hand, the mode from the start. */
    mode_t mask = 0;
    bool mask_known = process_umask(&mask) == 0;
    int fd = -1;
    /* a stray private name left by a creator that died may be taken */
    for (int i = 0; fd < 0 && i < 8; i++) {
        tmp_name(tmp, cap);
        fd = shm_open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                      mask_known ? mode & 0700 : mode);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc == 0)
        rc = set_final_mode(fd, mask_known ? mode & ~mask : st.st_mode);
    if (rc == 0)
        rc = allocate(fd, size);
    if (rc < 0) {
        close(fd);
        shm_unlink(tmp);
        return rc;
    }
    return fd;
}

int shmq__shm_create_fd(const struct shmq_geometry *geo, char *tmp, size_t cap,
                        mode_t mode)
{
    return tmp ? shm_named(geo->region_size, tmp, cap, mode)
               : memfd_sealed(geo->region_size);
}

int shmq__shm_publish(const char *tmp, const char *name)
{
    char from[sizeof SHM_DIR + SHM_TMP_MAX], to[sizeof SHM_DIR + 256];
    snprintf(from, sizeof from, SHM_DIR "%s", tmp);
    snprintf(to, sizeof to, SHM_DIR "%s", name);
    int rc = link(from, to) < 0 ? -errno : 0;
    shm_unlink(tmp);
    return rc;
}

void shmq__shm_init_region(struct shmq *q)
{
    const struct shmq_geometry *g = &q->geo;
    struct shmq_header *h = q->hdr;
    /* Each sequence number s finds its descriptor "free since s - N",
     * which is what a producer claiming s expects. */
    for (uint32_t s = 0; s < g->desc_count; s++)
        store_relaxed(&ring_desc(q, s)->word,
                      desc_pack(s - g->desc_count, DESC_FREE, 0, 1));
    h->id = (struct shmq_identity){
        .magic = SHMQ_MAGIC,
        .version = SHMQ_LAYOUT_VERSION,
        .flags = g->flags,
        .maxsize = g->maxsize,
        .desc_count = g->desc_count,
        .unit_shift = g->unit_shift,
        .cap_units = g->cap_units,
        .ring_units = g->ring_units,
        .participants = SHMQ_PARTICIPANTS,
        .max_message = g->max_message,
        .desc_offset = g->desc_offset,
        .ring_offset = g->ring_offset,
        .region_size = g->region_size,
    };
    /* Publishes the identity and descriptors to whoever maps the fd
     * later (they synchronise through the fd hand-over itself). */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static int identity_matches(const struct shmq_identity *id,
                            struct shmq_geometry *g)
{
    if (id->magic != SHMQ_MAGIC || id->version != SHMQ_LAYOUT_VERSION ||
        id->participants != SHMQ_PARTICIPANTS || (id->flags & ~SHMQ_JOINABLE) ||
        id->unit_shift > 40)
        return -EPROTO;
    uint64_t capacity = (uint64_t)id->cap_units << id->unit_shift;
    if (geometry_sizes(id->maxsize, capacity, id->max_message, g) < 0)
        return -EPROTO;
    g->flags = id->flags;
    if (g->desc_count != id->desc_count || g->unit_shift != id->unit_shift ||
        g->cap_units != id->cap_units || g->ring_units != id->ring_units ||
        g->desc_offset != id->desc_offset ||
        g->ring_offset != id->ring_offset || g->region_size != id->region_size)
        return -EPROTO;
    return 0;
}

/* A memfd shows in /proc as "/memfd:<name> (deleted)"; a file of
 * /dev/shm as "/dev/shm/<name>". */
static bool is_memfd(int fd)
{
    char path[64], target[16];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target);
    return n >= 7 && !memcmp(target, "/memfd:", 7);
}

/* Whoever can write a region's file can truncate it, and a process
 * touching a page past the new end dies of SIGBUS. A memfd can be made
 * proof against that: seal it against shrinking (and growing) when it is
 * not yet, and refuse it (-EPERM) when its seals are frozen without
 * F_SEAL_SHRINK. A file with a name cannot be sealed; shmq.h says what
 * its writers can still do. */
static int seal_against_shrink(int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return errno == EINVAL ? 0 : -errno; /* not tmpfs: cannot seal */
    if (seals & F_SEAL_SHRINK)
        return 0;
    if (!(seals & F_SEAL_SEAL))
        return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0 ? -errno
                                                                       : 0;
    return is_memfd(fd) ? -EPERM : 0;
}

int shmq__shm_read_identity(int fd, struct shmq_geometry *geo)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size < sizeof(struct shmq_header))
        return -EPROTO;
    struct shmq_identity id;
    ssize_t n = pread(fd, &id, sizeof id, 0);
    if (n < 0)
        return -errno;
    if ((size_t)n != sizeof id)
        return -EPROTO;
    int rc = identity_matches(&id, geo);
    if (rc < 0)
        return rc;
    if ((uint64_t)st.st_size != geo->region_size)
        return -EPROTO;
    rc = seal_against_shrink(fd);
    if (rc < 0)
        return rc;
    /* The size again, now that the seal holds it. */
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size != geo->region_size)
        return -EPROTO;
    /* A region made sparse (by an older version or another program)
     * gets its pages now, not at a put's first touch. One with all its
     * blocks (the usual case) is left alone: fallocate would walk every
     * page of it again. */
    if ((uint64_t)st.st_blocks * 512 >= geo->region_size)
        return 0;
    rc = allocate(fd, geo->region_size);
    return rc == -EBADF ? -EACCES : rc; /* a read-only descriptor */
}

int shmq__shm_map(struct shmq *q)
{
    const struct shmq_geometry *g = &q->geo;
    uint64_t ring_bytes = (uint64_t)g->ring_units << g->unit_shift;
    size_t total = (size_t)(g->region_size + ring_bytes);
    /* Reserve the whole span first so that the mirror lands right after
     * the region, then map the fd twice into it. */
    unsigned char *base =
        mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return -errno;
    int prot = PROT_READ | PROT_WRITE;
    if (mmap(base, (size_t)g->region_size, prot, MAP_SHARED | MAP_FIXED, q->fd,
             0) == MAP_FAILED ||
        mmap(base + g->region_size, (size_t)ring_bytes, prot,
             MAP_SHARED | MAP_FIXED, q->fd,
             (off_t)g->ring_offset) == MAP_FAILED) {
        int err = -errno;
        munmap(base, total);
        return err;
    }
    q->map = base;
    q->map_size = total;
    q->hdr = (struct shmq_header *)base;
    q->parts = (struct shmq_participant *)(base + SHMQ_PARTICIPANTS_OFFSET);
    q->desc = (struct shmq_desc *)(base + g->desc_offset);
    q->ring = base + g->ring_offset;
    return 0;
}

void shmq__shm_unmap(struct shmq *q)
{
    if (q->map)
        munmap(q->map, q->map_size);
    q->map = NULL;
}
