/* SPDX-License-Identifier: MIT */
/*
 * test_hostile.c - what an unlucky or hostile process around a queue can
 * do to it, and what it gets instead of crashing the others:
 *
 *   - a region larger than what tmpfs has left: -ENOSPC at creation, not
 *     SIGBUS at a later put;
 *   - a memfd handed over without seals: sealed on attach, so its sender
 *     can no longer truncate it under the receiver; one that cannot be
 *     sealed is refused (-EPERM);
 *   - read access alone: modes that grant it are refused, and a read lock
 *     on a dead participant's byte does not make it look alive.
 *
 * Everything goes through the public API; a writer "killed mid-put" is a
 * child whose message points at a PROT_NONE page, so it faults in the
 * middle of its own put, after claiming room.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "layout.h" /* SHMQ_LOCK_BASE, SHMQ_PARTICIPANTS: the lock bytes */

/* ------------------------------------------------------------------ */
/* Hole 1: pages allocated at creation                                  */
/* ------------------------------------------------------------------ */

/* Names under the (private) /dev/shm of this process. */
static int count_shm_names(void)
{
    DIR *d = opendir("/dev/shm");
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Child, in a mount namespace of its own with a 1 MiB tmpfs on /dev/shm:
 * returns 77 when it cannot set that up (not root, no namespaces). */
static int private_small_shm(void)
{
    if (unshare(CLONE_NEWNS) < 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("shmq-test", "/dev/shm", "tmpfs", 0, "size=1m") < 0)
        return 77;
    return 0;
}

static int child_small_tmpfs(void *arg)
{
    (void)arg;
    if (private_small_shm() != 0)
        return 77;
    /* 4 MiB of storage in 1 MiB of tmpfs */
    struct shmq_config big = {.maxsize = 64, .capacity = 4u << 20};
    shmq_t *q = NULL;
    TH_CHECK_EQ(shmq_create_named(&q, "/big", &big, 0), -ENOSPC);
    TH_CHECK_EQ(count_shm_names(), 0); /* nothing left behind */
    /* two regions of ~600 KiB: the first fits, the second does not, and
     * the first can then be filled to the last byte without SIGBUS */
    struct shmq_config half = {
        .maxsize = 64, .capacity = 512u << 10, .max_message = 8192};
    shmq_t *a = NULL, *b = NULL;
    TH_CHECK_EQ(shmq_create_named(&a, "/a", &half, 0), 0);
    TH_CHECK_EQ(shmq_create_named(&b, "/b", &half, 0), -ENOSPC);
    TH_CHECK_EQ(count_shm_names(), 1);
    static char msg[8192];
    memset(msg, 0x5a, sizeof msg);
    int n = 0;
    while (shmq_put_nowait(a, msg, sizeof msg) == 0)
        n++;
    TH_CHECK_EQ(n, 64);
    shmq_unlink("/a");
    shmq_release(a);
    return 0;
}

Test(hostile, region_larger_than_tmpfs_is_enospc, .timeout = 30)
{
    pid_t pid = th_fork(child_small_tmpfs, NULL);
    int st = th_wait_pid(pid, 20 * TH_SEC);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("cannot mount a private tmpfs (needs root and "
                     "mount namespaces)");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "child: status %#x (signal %d)", st,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ------------------------------------------------------------------ */
/* Hole 2: a memfd that is not sealed                                   */
/* ------------------------------------------------------------------ */

/* A memfd holding a copy of q's region; flags for memfd_create. */
static int copy_region(shmq_t *q, unsigned flags)
{
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(q), &st), 0);
    void *buf = malloc((size_t)st.st_size);
    cr_assert_not_null(buf);
    cr_assert_eq(pread(shmq_fd(q), buf, (size_t)st.st_size, 0), st.st_size);
    int fd = memfd_create("copy", MFD_CLOEXEC | flags);
    cr_assert_geq(fd, 0, "memfd_create: %s", strerror(errno));
    cr_assert_eq(write(fd, buf, (size_t)st.st_size), st.st_size);
    free(buf);
    return fd;
}

static const struct shmq_config small = {
    .maxsize = 8, .capacity = 4096, .max_message = 256};

Test(hostile, unsealed_memfd_is_sealed_on_attach, .timeout = 10)
{
    shmq_t *orig = NULL, *q = NULL;
    cr_assert_eq(shmq_create(&orig, &small), 0);
    int fd = copy_region(orig, MFD_ALLOW_SEALING);
    shmq_release(orig);
    cr_assert_eq(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK, 0, "not sealed");
    cr_assert_eq(shmq_from_fd(&q, fd), 0);
    int seals = fcntl(fd, F_GET_SEALS);
    cr_assert(seals >= 0 && (seals & F_SEAL_SHRINK) && (seals & F_SEAL_GROW),
              "seals %#x", seals);
    /* the sender, with its own descriptor, can no longer pull pages away */
    cr_assert_eq(ftruncate(fd, 0), -1, "truncate of an attached region");
    cr_assert_eq(errno, EPERM);
    size_t len = 0;
    char buf[8];
    cr_assert_eq(shmq_put_nowait(q, "abc", 3), 0);
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 3);
    shmq_release(q);
    close(fd);
}

/* A sparse copy of q's region: only its non-zero pages are written. */
static int sparse_copy(shmq_t *q, off_t *size)
{
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(q), &st), 0);
    int fd = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, st.st_size), 0);
    static char page[4096], zero[4096];
    for (off_t off = 0; off < st.st_size; off += (off_t)sizeof page) {
        cr_assert_eq(pread(shmq_fd(q), page, sizeof page, off),
                     (ssize_t)sizeof page);
        if (memcmp(page, zero, sizeof page) != 0)
            cr_assert_eq(pwrite(fd, page, sizeof page, off),
                         (ssize_t)sizeof page);
    }
    *size = st.st_size;
    return fd;
}

Test(hostile, sparse_region_is_allocated_on_attach, .timeout = 10)
{
    shmq_t *orig = NULL, *q = NULL;
    struct shmq_config c = {.maxsize = 8, .capacity = 256 << 10};
    cr_assert_eq(shmq_create(&orig, &c), 0);
    off_t size;
    int fd = sparse_copy(orig, &size);
    shmq_release(orig);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    cr_assert_lt(st.st_blocks * 512, size, "the copy is sparse");
    cr_assert_eq(shmq_from_fd(&q, fd), 0);
    cr_assert_eq(fstat(fd, &st), 0);
    cr_assert_geq(st.st_blocks * 512, size, "every page allocated on attach");
    shmq_release(q);
    close(fd);
}

Test(hostile, unsealable_memfd_is_eperm, .timeout = 10)
{
    shmq_t *orig = NULL, *q = NULL;
    cr_assert_eq(shmq_create(&orig, &small), 0);
    int fd = copy_region(orig, 0); /* F_SEAL_SEAL set from the start */
    shmq_release(orig);
    cr_assert_eq(shmq_from_fd(&q, fd), -EPERM);
    close(fd);
}

Test(hostile, frozen_seals_with_shrink_are_accepted, .timeout = 10)
{
    shmq_t *orig = NULL, *q = NULL;
    cr_assert_eq(shmq_create(&orig, &small), 0);
    int fd = copy_region(orig, MFD_ALLOW_SEALING);
    shmq_release(orig);
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL), 0);
    cr_assert_eq(shmq_from_fd(&q, fd), 0);
    shmq_release(q);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* Hole 3: read access must not fake liveness or block attaching        */
/* ------------------------------------------------------------------ */

Test(hostile, modes_granting_read_without_write_are_einval, .timeout = 10)
{
    static const mode_t bad[] = {0644, 0640, 0604, 0400, 0460, 0664, 0646};
    static const mode_t good[] = {0600, 0660, 0666, 0606, 0200, 0620};
    char name[TH_NAME_MAX], path[128];
    mode_t old = umask(0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shmq_t *q = NULL;
        th_queue_name(name, "mode");
        int rc = shmq_create_named(&q, name, &small, bad[i]);
        bool left = access(th_shm_path(path, sizeof path, name), F_OK) == 0;
        if (rc == 0) {
            shmq_unlink(name);
            shmq_release(q);
        }
        cr_expect_eq(rc, -EINVAL, "mode %o: %d", (unsigned)bad[i], rc);
        cr_expect(!left || rc == 0, "mode %o left a name", (unsigned)bad[i]);
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        shmq_t *q = NULL;
        th_queue_name(name, "mode");
        int rc = shmq_create_named(&q, name, &small, good[i]);
        cr_expect_eq(rc, 0, "mode %o: %d", (unsigned)good[i], rc);
        shmq_unlink(name);
        shmq_release(q);
    }
    umask(old);
}

/* Child: put a message whose bytes fault: it dies inside its own put,
 * holding a claimed record. */
static int die_mid_put(void *arg)
{
    const char *name = arg;
    shmq_t *q = NULL;
    TH_CHECK_EQ(shmq_open(&q, name), 0);
    long page = sysconf(_SC_PAGESIZE);
    void *bad =
        mmap(NULL, (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TH_CHECK(bad != MAP_FAILED);
    shmq_put(q, bad, 200, SHMQ_NOWAIT);
    return 2; /* not reached: the copy faults */
}

/* Read locks, through a read-only descriptor, on every participant byte
 * that is not write-locked: what a process with read access could do. */
static int read_lock_all_slots(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "open %s read-only: %s", path, strerror(errno));
    int taken = 0;
    for (unsigned s = 0; s < SHMQ_PARTICIPANTS; s++) {
        struct flock fl = {.l_type = F_RDLCK,
                           .l_whence = SEEK_SET,
                           .l_start = SHMQ_LOCK_BASE + (off_t)s,
                           .l_len = 1};
        taken += fcntl(fd, F_OFD_SETLK, &fl) == 0;
    }
    cr_assert_gt(taken, 0);
    return fd;
}

Test(hostile, read_lock_on_a_dead_writer_does_not_fake_liveness, .timeout = 30)
{
    char name[TH_NAME_MAX], path[128];
    th_queue_name(name, "rdlock");
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &small, 0600), 0);
    pid_t pid = th_fork(die_mid_put, name);
    int st = th_wait_pid(pid, 10 * TH_SEC);
    int rd = read_lock_all_slots(th_shm_path(path, sizeof path, name));
    shmq_unlink(name); /* nothing left behind, whatever fails below */
    /* killed by the fault (or exit 1 from a sanitizer's fault handler) */
    cr_assert(st >= 0 &&
                  (WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 1)),
              "child should have died in its put: status %#x", st);
    /* the dead writer's record holds the head; the message after it must
     * come out once the waiter sees the writer is dead */
    cr_assert_eq(shmq_put_nowait(q, "after", 5), 0);
    char buf[16];
    size_t len = 0;
    int64_t t0 = th_now_ns();
    int rc = shmq_get(q, buf, sizeof buf, &len, 2 * TH_SEC);
    int64_t took = th_now_ns() - t0;
    cr_assert_eq(rc, 0,
                 "get behind a dead writer whose byte is read-locked: "
                 "%d (%s)",
                 rc, shmq_strerror(rc));
    cr_assert(len == 5 && !memcmp(buf, "after", 5));
    cr_expect_lt(took, 500 * TH_MS, "recovery took %lld ms",
                 (long long)(took / TH_MS));
    close(rd);
    shmq_release(q);
}
