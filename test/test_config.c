/* SPDX-License-Identifier: MIT */
/*
 * test_config.c - creating, opening, attaching and releasing queues:
 * argument checking and bad input (DESIGN.md, "Details of the contract").
 */
#include "helpers.h"

#include <limits.h>
#include <sys/stat.h>

/* A small valid configuration. */
static const struct shmq_config small_cfg = {
    .maxsize = 16, .capacity = 4096, .max_message = 256, .flags = 0};

/* Path of a queue name's file; the caller unlinks the name. */
static char shm_path[TH_NAME_MAX + 16];

static void expect_name_absent(const char *name)
{
    struct stat st;
    th_shm_path(shm_path, sizeof shm_path, name);
    cr_assert_eq(stat(shm_path, &st), -1, "%s exists", shm_path);
}

/* ------------------------------------------------------------------ */
/* shmq_create                                                          */
/* ------------------------------------------------------------------ */

Test(config, create_null_q_is_einval, .timeout = 10)
{
    cr_assert_eq(shmq_create(NULL, NULL), -EINVAL, "NULL q, NULL cfg");
    cr_assert_eq(shmq_create(NULL, &small_cfg), -EINVAL, "NULL q");
}

Test(config, create_defaults, .timeout = 10)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, NULL), 0, "create with cfg NULL");
    cr_assert_not_null(q, "handle");
    cr_assert_geq(shmq_max_message(q), (size_t)SHMQ_DEFAULT_MAX_MESSAGE,
                  "default max_message");
    cr_assert_eq(shmq_qsize(q), 0, "qsize");
    cr_assert(shmq_empty(q), "empty");
    cr_assert_not(shmq_full(q), "full");
    cr_assert_not(shmq_closed(q), "closed");
    cr_assert_geq(shmq_fd(q), 0, "fd");
    shmq_release(q);

    struct shmq_config zero = {0};
    cr_assert_eq(shmq_create(&q, &zero), 0, "create with all-zero cfg");
    cr_assert_geq(shmq_max_message(q), (size_t)SHMQ_DEFAULT_MAX_MESSAGE,
                  "default max_message");
    shmq_release(q);
}

Test(config, create_unknown_flags_is_einval, .timeout = 10)
{
    static const unsigned bad[] = {0x2u, 0x4u, 0x80000000u,
                                   SHMQ_JOINABLE | 0x8u, ~0u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct shmq_config cfg = small_cfg;
        cfg.flags = bad[i];
        shmq_t *q = NULL;
        cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "flags %#x", bad[i]);
    }
    struct shmq_config cfg = small_cfg;
    cfg.flags = SHMQ_JOINABLE;
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "SHMQ_JOINABLE is known");
    shmq_release(q);
}

Test(config, create_maxsize_limit, .timeout = 20)
{
    struct shmq_config cfg = small_cfg;
    shmq_t *q = NULL;
    cfg.maxsize = (size_t)SHMQ_MAXSIZE_LIMIT + 1;
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "maxsize LIMIT + 1");
    cfg.maxsize = SIZE_MAX;
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "maxsize SIZE_MAX");
    cfg.maxsize = (size_t)SHMQ_MAXSIZE_LIMIT * 2;
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "maxsize 2 * LIMIT");

    cfg.maxsize = SHMQ_MAXSIZE_LIMIT;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "maxsize == LIMIT is accepted");
    cr_assert_eq(shmq_put_nowait(q, "x", 1), 0, "put");
    shmq_release(q);
}

Test(config, create_capacity_too_small_is_einval, .timeout = 10)
{
    shmq_t *q = NULL;
    struct shmq_config cfg = {
        .maxsize = 16, .capacity = 100, .max_message = 1000};
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "capacity < max_message");
    cfg.capacity = 1016;
    cfg.max_message = 1024;
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "capacity 1016 < 1024");
    cfg.capacity = 0; /* the default capacity */
    cfg.max_message = SIZE_MAX;
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "max_message SIZE_MAX");
    cfg.capacity = SIZE_MAX;
    cfg.max_message = 64;
    cr_assert_eq(shmq_create(&q, &cfg), -EINVAL, "capacity SIZE_MAX");
}

Test(config, create_capacity_of_one_message, .timeout = 10)
{
    shmq_t *q = NULL;
    struct shmq_config cfg = {
        .maxsize = 16, .capacity = 1024, .max_message = 1024};
    cr_assert_eq(shmq_create(&q, &cfg), 0, "capacity == max_message");
    static char buf[1024];
    th_fill(buf, sizeof buf, 1);
    cr_assert_eq(shmq_put_nowait(q, buf, sizeof buf), 0,
                 "one max_message message fits");
    size_t len = 0;
    static char out[1024];
    cr_assert_eq(shmq_get_nowait(q, out, sizeof out, &len), 0, "get");
    cr_assert_eq(len, sizeof buf, "len");
    cr_assert(th_check(out, len, 1), "content");
    shmq_release(q);
}

Test(config, max_message_never_rounded_down, .timeout = 20)
{
    static const size_t req[] = {
        1, 7, 8, 9, 100, 1000, 4097, 65536, (1u << 20) + 3};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        struct shmq_config cfg = {
            .maxsize = 4, .capacity = 4u << 20, .max_message = req[i]};
        shmq_t *q = NULL;
        cr_assert_eq(shmq_create(&q, &cfg), 0, "max_message %zu", req[i]);
        size_t mm = shmq_max_message(q);
        cr_assert_geq(mm, req[i], "max_message %zu rounded down to %zu", req[i],
                      mm);
        shmq_release(q);
    }
}

Test(config, release_null_and_null_handles, .timeout = 10)
{
    shmq_release(NULL);
    cr_assert_eq(shmq_fd(NULL), -EINVAL, "fd(NULL)");
    cr_assert_eq(shmq_qsize(NULL), 0, "qsize(NULL)");
    cr_assert(shmq_empty(NULL), "empty(NULL)");
    cr_assert_not(shmq_full(NULL), "full(NULL)");
    cr_assert_eq(shmq_max_message(NULL), 0, "max_message(NULL)");
    size_t len;
    char buf[8];
    cr_assert_eq(shmq_put(NULL, "x", 1, SHMQ_NOWAIT), -EINVAL, "put");
    cr_assert_eq(shmq_put_nowait(NULL, "x", 1), -EINVAL, "put_nowait");
    cr_assert_eq(shmq_get(NULL, buf, sizeof buf, &len, SHMQ_NOWAIT), -EINVAL,
                 "get");
    cr_assert_eq(shmq_get_nowait(NULL, buf, sizeof buf, &len), -EINVAL,
                 "get_nowait");
    cr_assert_eq(shmq_close(NULL), -EINVAL, "close");
    cr_assert_eq(shmq_task_done(NULL), -EINVAL, "task_done");
    cr_assert_eq(shmq_join(NULL, SHMQ_NOWAIT), -EINVAL, "join");
    cr_assert_eq(shmq_set_spin(NULL, 0), -EINVAL, "set_spin");
}

Test(config, set_spin_arguments, .timeout = 10)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &small_cfg), 0, "create");
    cr_assert_eq(shmq_set_spin(q, -1), -EINVAL, "negative spin");
    cr_assert_eq(shmq_set_spin(q, INT64_MIN), -EINVAL, "INT64_MIN spin");
    cr_assert_eq(shmq_set_spin(q, 0), 0, "spin 0");
    cr_assert_eq(shmq_set_spin(q, SHMQ_DEFAULT_SPIN_NS), 0, "default spin");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* Names                                                                */
/* ------------------------------------------------------------------ */

static const char *const bad_names[] = {
    "", "noslash", "/", "/a/b", "/.", "/..", "//", "/a/", "a/b", "x/",
};

Test(config, bad_names_are_einval, .timeout = 10)
{
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        const char *n = bad_names[i];
        shmq_t *q = NULL;
        cr_assert_eq(shmq_create_named(&q, n, &small_cfg, 0), -EINVAL,
                     "create_named(\"%s\")", n);
        cr_assert_eq(shmq_open(&q, n), -EINVAL, "open(\"%s\")", n);
        cr_assert_eq(shmq_unlink(n), -EINVAL, "unlink(\"%s\")", n);
    }
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, NULL, &small_cfg, 0), -EINVAL,
                 "create_named(NULL)");
    cr_assert_eq(shmq_open(&q, NULL), -EINVAL, "open(NULL)");
    cr_assert_eq(shmq_unlink(NULL), -EINVAL, "unlink(NULL)");
}

/* "/" then n characters, unique to this process. */
static void long_name(char *buf, size_t n)
{
    char id[32];
    int k = snprintf(id, sizeof id, "shmq-%d-", (int)getpid());
    buf[0] = '/';
    for (size_t i = 0; i < n; i++)
        buf[1 + i] = i < (size_t)k ? id[i] : (char)('a' + i % 26);
    buf[1 + n] = '\0';
}

Test(config, name_length_limit, .timeout = 10)
{
    char name[260];
    shmq_t *q = NULL;

    long_name(name, 201);
    int r = shmq_create_named(&q, name, &small_cfg, 0);
    cr_assert(r == -EINVAL || r == -ENAMETOOLONG,
              "create_named with 201 characters: %d", r);
    expect_name_absent(name);
    r = shmq_open(&q, name);
    cr_assert(r == -EINVAL || r == -ENAMETOOLONG, "open 201: %d", r);
    r = shmq_unlink(name);
    cr_assert(r == -EINVAL || r == -ENAMETOOLONG, "unlink 201: %d", r);

    long_name(name, 250);
    r = shmq_create_named(&q, name, &small_cfg, 0);
    cr_assert(r == -EINVAL || r == -ENAMETOOLONG, "250 characters: %d", r);

    long_name(name, 200);
    shmq_unlink(name);
    cr_assert_eq(shmq_create_named(&q, name, &small_cfg, 0), 0,
                 "200 characters are fine");
    shmq_t *q2 = NULL;
    cr_assert_eq(shmq_open(&q2, name), 0, "open 200");
    cr_assert_eq(shmq_put_nowait(q, "ab", 2), 0, "put");
    cr_assert_eq(shmq_qsize(q2), 1, "seen through the opened handle");
    cr_assert_eq(shmq_unlink(name), 0, "unlink 200");
    shmq_release(q2);
    shmq_release(q);

    long_name(name, 1);
    shmq_unlink(name);
    cr_assert_eq(shmq_create_named(&q, name, &small_cfg, 0), 0,
                 "1 character is fine");
    cr_assert_eq(shmq_unlink(name), 0, "unlink");
    shmq_release(q);
}

Test(config, create_named_exists, .timeout = 10)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "exists");
    shmq_t *q = NULL, *q2 = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &small_cfg, 0), 0, "create");
    cr_assert_eq(shmq_put_nowait(q, "abc", 3), 0, "put");
    cr_assert_eq(shmq_create_named(&q2, name, &small_cfg, 0), -EEXIST,
                 "second create_named");
    cr_assert_eq(shmq_create_named(&q2, name, NULL, 0600), -EEXIST,
                 "second create_named with another cfg");
    /* The failed creates neither unlinked nor clobbered the queue. */
    cr_assert_eq(shmq_open(&q2, name), 0, "open");
    cr_assert_eq(shmq_qsize(q2), 1, "the message is still there");
    char buf[8];
    size_t len = 0;
    cr_assert_eq(shmq_get_nowait(q2, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(len, 3, "len");
    cr_assert_eq(memcmp(buf, "abc", 3), 0, "content");
    cr_assert_eq(shmq_unlink(name), 0, "unlink");
    shmq_release(q2);
    shmq_release(q);
}

Test(config, create_named_bad_cfg_leaves_no_name, .timeout = 10)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "badcfg");
    shmq_t *q = NULL;
    struct shmq_config cfg = small_cfg;
    cfg.flags = 0x10;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), -EINVAL, "flags");
    expect_name_absent(name);
    cfg = small_cfg;
    cfg.capacity = 8;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), -EINVAL, "capacity");
    expect_name_absent(name);
    cfg = small_cfg;
    cfg.maxsize = (size_t)SHMQ_MAXSIZE_LIMIT + 1;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), -EINVAL, "maxsize");
    expect_name_absent(name);
    cr_assert_eq(shmq_create_named(NULL, name, &small_cfg, 0), -EINVAL,
                 "NULL q");
    expect_name_absent(name);
}

static mode_t created_mode(mode_t mode, mode_t mask)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "mode");
    mode_t old = umask(mask);
    shmq_t *q = NULL;
    int r = shmq_create_named(&q, name, &small_cfg, mode);
    umask(old);
    cr_assert_eq(r, 0, "create_named mode %o umask %o", (unsigned)mode,
                 (unsigned)mask);
    struct stat st;
    th_shm_path(shm_path, sizeof shm_path, name);
    int s = stat(shm_path, &st);
    shmq_unlink(name);
    shmq_release(q);
    cr_assert_eq(s, 0, "stat %s: %s", shm_path, strerror(errno));
    return st.st_mode & 07777;
}

Test(config, create_named_mode, .timeout = 10)
{
    mode_t m = created_mode(0, 022);
    cr_assert_eq(m, 0600, "mode 0 gives 0600, got %o", (unsigned)m);
    m = created_mode(0, 0);
    cr_assert_eq(m, 0600, "mode 0 gives 0600 with umask 0, got %o",
                 (unsigned)m);
    m = created_mode(0660, 0);
    cr_assert_eq(m, 0660, "mode 0660, got %o", (unsigned)m);
    m = created_mode(0666, 0);
    cr_assert_eq(m, 0666, "mode 0666, got %o", (unsigned)m);
    /* the umask takes write from group and other: read goes too, so that
     * read access never comes without write access */
    m = created_mode(0666, 022);
    cr_assert_eq(m, 0600, "umask 022 applies to 0666, got %o", (unsigned)m);
    m = created_mode(0660, 020);
    cr_assert_eq(m, 0600, "umask 020 applies to 0660, got %o", (unsigned)m);
    m = created_mode(0666, 077);
    cr_assert_eq(m, 0600, "umask 077 applies to 0666, got %o", (unsigned)m);
    m = created_mode(0, 0077);
    cr_assert_eq(m, 0600, "umask 077 and mode 0, got %o", (unsigned)m);
}

Test(config, open_and_unlink_missing_is_enoent, .timeout = 10)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "missing");
    shmq_t *q = NULL;
    cr_assert_eq(shmq_open(&q, name), -ENOENT, "open missing");
    cr_assert_eq(shmq_unlink(name), -ENOENT, "unlink missing");
    cr_assert_eq(shmq_open(NULL, name), -EINVAL, "open with NULL q");
}

Test(config, open_then_unlink, .timeout = 10)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "open");
    shmq_t *q = NULL, *q2 = NULL;
    struct shmq_config cfg = small_cfg;
    cfg.flags = SHMQ_JOINABLE;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), 0, "create");
    cr_assert_eq(shmq_open(&q2, name), 0, "open");
    cr_assert_eq(shmq_max_message(q2), shmq_max_message(q), "max_message");
    cr_assert_eq(shmq_put_nowait(q2, "hi", 2), 0, "put via opened");
    cr_assert_eq(shmq_qsize(q), 1, "qsize via creator");
    cr_assert_eq(shmq_task_done(q2), 0, "joinable flag is kept");
    cr_assert_eq(shmq_unlink(name), 0, "unlink");
    cr_assert_eq(shmq_unlink(name), -ENOENT, "unlink twice");
    shmq_t *q3 = NULL;
    cr_assert_eq(shmq_open(&q3, name), -ENOENT, "open after unlink");
    char buf[4];
    size_t len = 0;
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(len, 2, "len");
    shmq_release(q2);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* shmq_fd and shmq_from_fd                                             */
/* ------------------------------------------------------------------ */

Test(config, fd_is_cloexec, .timeout = 10)
{
    shmq_t *q = NULL, *q2 = NULL, *q3 = NULL, *q4 = NULL;
    cr_assert_eq(shmq_create(&q, &small_cfg), 0, "create");
    cr_assert(th_fd_cloexec(shmq_fd(q)), "fd of created queue");

    cr_assert_eq(shmq_from_fd(&q2, shmq_fd(q)), 0, "from_fd");
    cr_assert(th_fd_cloexec(shmq_fd(q2)), "fd of attached handle");
    cr_assert_neq(shmq_fd(q2), shmq_fd(q), "from_fd duplicates the fd");

    char name[TH_NAME_MAX];
    th_queue_name(name, "cloexec");
    cr_assert_eq(shmq_create_named(&q3, name, &small_cfg, 0), 0, "named");
    cr_assert(th_fd_cloexec(shmq_fd(q3)), "fd of named queue");
    cr_assert_eq(shmq_open(&q4, name), 0, "open");
    cr_assert(th_fd_cloexec(shmq_fd(q4)), "fd of opened queue");
    shmq_unlink(name);

    /* A descriptor without FD_CLOEXEC passed in: the handle's is. */
    int d = dup(shmq_fd(q));
    cr_assert_geq(d, 0, "dup");
    cr_assert_not(th_fd_cloexec(d), "dup clears FD_CLOEXEC");
    shmq_t *q5 = NULL;
    cr_assert_eq(shmq_from_fd(&q5, d), 0, "from_fd of a plain dup");
    cr_assert(th_fd_cloexec(shmq_fd(q5)), "fd of handle from a plain fd");
    cr_assert_not(th_fd_cloexec(d), "caller's fd is left alone");
    close(d);

    shmq_release(q5);
    shmq_release(q4);
    shmq_release(q3);
    shmq_release(q2);
    shmq_release(q);
}

Test(config, from_fd_keeps_callers_fd, .timeout = 10)
{
    shmq_t *q = NULL, *q2 = NULL;
    cr_assert_eq(shmq_create(&q, &small_cfg), 0, "create");
    int d = dup(shmq_fd(q));
    cr_assert_geq(d, 0, "dup");
    cr_assert_eq(shmq_from_fd(&q2, d), 0, "from_fd");
    cr_assert_neq(shmq_fd(q2), d, "from_fd duplicates");
    cr_assert(th_fd_open(d), "caller's fd stays open");
    close(d);
    shmq_release(q); /* q2 keeps the region alive alone */
    cr_assert_eq(shmq_put_nowait(q2, "ok", 2), 0, "put after both closes");
    char buf[4];
    size_t len = 0;
    cr_assert_eq(shmq_get_nowait(q2, buf, sizeof buf, &len), 0, "get");
    cr_assert_eq(len, 2, "len");
    int fd2 = shmq_fd(q2);
    shmq_release(q2);
    cr_assert_not(th_fd_open(fd2), "release closes the handle's fd");
}

Test(config, from_fd_bad_descriptors, .timeout = 10)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_from_fd(&q, -1), -EBADF, "fd -1");
    cr_assert_eq(shmq_from_fd(&q, INT_MIN), -EBADF, "fd INT_MIN");
    int d = dup(0);
    cr_assert_geq(d, 0, "dup");
    close(d);
    cr_assert_eq(shmq_from_fd(&q, d), -EBADF, "closed fd");
    cr_assert_eq(shmq_from_fd(&q, 1 << 20), -EBADF, "fd far beyond the table");

    shmq_t *ok = NULL;
    cr_assert_eq(shmq_create(&ok, &small_cfg), 0, "create");
    cr_assert_eq(shmq_from_fd(NULL, shmq_fd(ok)), -EINVAL, "NULL q");
    shmq_release(ok);
}

/* from_fd(fd) must fail with a negative errno and leave fd open. */
static int from_fd_fails(int fd)
{
    shmq_t *q = NULL;
    int r = shmq_from_fd(&q, fd);
    cr_assert_lt(r, 0, "from_fd succeeded on a non-queue");
    cr_assert(th_fd_open(fd), "from_fd closed the caller's fd");
    return r;
}

static int temp_file(size_t size, bool garbage)
{
    char path[] = "/tmp/shmq-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "mkstemp");
    unlink(path);
    if (garbage) {
        unsigned char buf[4096];
        for (size_t off = 0; off < size; off += sizeof buf) {
            size_t n = size - off < sizeof buf ? size - off : sizeof buf;
            th_fill(buf, n, (uint32_t)off);
            cr_assert_eq(pwrite(fd, buf, n, (off_t)off), (ssize_t)n, "write");
        }
    } else {
        cr_assert_eq(ftruncate(fd, (off_t)size), 0, "ftruncate");
    }
    return fd;
}

Test(config, from_fd_not_a_queue, .timeout = 10)
{
    int fd = temp_file(1 << 20, true);
    from_fd_fails(fd);
    close(fd);

    fd = temp_file(0, false);
    from_fd_fails(fd);
    close(fd);

    fd = temp_file(100, false);
    from_fd_fails(fd);
    close(fd);

    fd = temp_file(100, true);
    from_fd_fails(fd);
    close(fd);

    int p[2];
    cr_assert_eq(pipe(p), 0, "pipe");
    from_fd_fails(p[0]);
    from_fd_fails(p[1]);
    close(p[0]);
    close(p[1]);

    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0, "/dev/null");
    from_fd_fails(fd);
    close(fd);

    fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "/tmp");
    from_fd_fails(fd);
    close(fd);
}

/* Size of a real queue's region, from its fd. */
static off_t region_size(const shmq_t *q)
{
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(q), &st), 0, "fstat");
    return st.st_size;
}

Test(config, shm_file_of_right_size_bad_magic_is_eproto, .timeout = 10)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &small_cfg), 0, "create");
    off_t size = region_size(q);
    void *image = malloc((size_t)size);
    cr_assert_not_null(image, "malloc");
    cr_assert_eq(pread(shmq_fd(q), image, (size_t)size, 0), (ssize_t)size,
                 "read the region");
    shmq_release(q);

    /* An all-zero /dev/shm file of the right size. */
    char name[TH_NAME_MAX];
    th_queue_name(name, "zero");
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "shm_open");
    cr_assert_eq(ftruncate(fd, size), 0, "ftruncate");
    cr_assert_eq(from_fd_fails(fd), -EPROTO, "zero header");
    shmq_t *q2 = NULL;
    cr_assert_eq(shmq_open(&q2, name), -EPROTO, "open of a zero region");

    /* A copy of a real region with its magic (the first word) flipped. */
    unsigned char *b = image;
    b[0] ^= 0x5a;
    cr_assert_eq(pwrite(fd, image, (size_t)size, 0), (ssize_t)size, "write");
    cr_assert_eq(from_fd_fails(fd), -EPROTO, "bad magic");
    cr_assert_eq(shmq_open(&q2, name), -EPROTO, "open with bad magic");

    /* The same copy with the magic restored: the header is whole again,
     * so this is a queue (it is fine, or at worst refused, never a crash). */
    b[0] ^= 0x5a;
    cr_assert_eq(pwrite(fd, image, (size_t)size, 0), (ssize_t)size, "write");
    int r = shmq_from_fd(&q2, fd);
    if (r == 0)
        shmq_release(q2);

    /* Wrong layout version: the 32-bit word after the magic. */
    uint32_t v;
    memcpy(&v, b + 8, sizeof v);
    v += 1000;
    memcpy(b + 8, &v, sizeof v);
    cr_assert_eq(pwrite(fd, image, (size_t)size, 0), (ssize_t)size, "write");
    cr_assert_eq(from_fd_fails(fd), -EPROTO, "bad version");

    close(fd);
    shm_unlink(name);
    free(image);
}

Test(config, open_of_a_non_queue_name_is_eproto, .timeout = 10)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "empty");
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "shm_open");
    shmq_t *q = NULL;
    int r = shmq_open(&q, name); /* a 0-byte file */
    cr_assert_eq(ftruncate(fd, 100), 0, "ftruncate");
    int r2 = shmq_open(&q, name); /* 100 zero bytes */
    unsigned char junk[8192];
    th_fill(junk, sizeof junk, 3);
    cr_assert_eq(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk,
                 "write");
    int r3 = shmq_open(&q, name); /* 8 KiB of garbage */
    close(fd);
    shm_unlink(name);
    cr_assert_eq(r, -EPROTO, "open of an empty file: %d", r);
    cr_assert_eq(r2, -EPROTO, "open of a 100-byte file: %d", r2);
    cr_assert_eq(r3, -EPROTO, "open of garbage: %d", r3);
}

Test(config, from_fd_truncated_region_fails, .timeout = 10)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &small_cfg), 0, "create");
    off_t size = region_size(q);
    size_t head = 4096;
    unsigned char *image = malloc(head);
    cr_assert_not_null(image, "malloc");
    cr_assert_eq(pread(shmq_fd(q), image, head, 0), (ssize_t)head, "read");
    shmq_release(q);

    /* A valid header in a file too small for the region it describes. */
    char name[TH_NAME_MAX];
    th_queue_name(name, "short");
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "shm_open");
    cr_assert_eq(pwrite(fd, image, head, 0), (ssize_t)head, "write");
    cr_assert_lt((off_t)head, size, "region larger than a page");
    cr_assert_eq(from_fd_fails(fd), -EPROTO, "truncated region");
    close(fd);
    shm_unlink(name);
    free(image);
}

/* ------------------------------------------------------------------ */
/* shmq_strerror                                                        */
/* ------------------------------------------------------------------ */

Test(config, strerror_names_every_code, .timeout = 10)
{
    static const int codes[] = {
        0,          -EINVAL,  -EMSGSIZE,     -EPIPE,      -EAGAIN,
        -ETIMEDOUT, -ENOBUFS, -ENOTSUP,      -EPROTO,     -EBADMSG,
        -EEXIST,    -ENOENT,  -ENAMETOOLONG, -EBADF,      -EACCES,
        -ENOMEM,    -EMFILE,  -ENFILE,       -EOWNERDEAD, -ECANCELED,
    };
    size_t n = sizeof codes / sizeof codes[0];
    const char *unknown = shmq_strerror(-99999);
    cr_assert_not_null(unknown, "unknown code");
    for (size_t i = 0; i < n; i++) {
        const char *s = shmq_strerror(codes[i]);
        cr_assert_not_null(s, "strerror(%d)", codes[i]);
        cr_assert_neq(s[0], '\0', "strerror(%d) is empty", codes[i]);
        if (codes[i] != 0)
            cr_assert_str_neq(s, unknown, "strerror(%d) is the unknown text",
                              codes[i]);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(s, shmq_strerror(codes[j]),
                              "strerror(%d) == strerror(%d)", codes[i],
                              codes[j]);
    }
    static const int odd[] = {1,       12345,   -4096, -99999,
                              INT_MIN, INT_MAX, EINVAL};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        cr_assert_not_null(shmq_strerror(odd[i]), "strerror(%d)", odd[i]);
}

/* Whoever opens a name while its queue is being created sees either no
 * queue (-ENOENT) or a complete one, never a half-made region (-EPROTO). */
static int open_until_there(void *arg)
{
    const char *name = arg;
    for (;;) {
        shmq_t *q;
        int rc = shmq_open(&q, name);
        if (rc == 0) {
            shmq_release(q);
            return 0;
        }
        TH_CHECK_EQ(rc, -ENOENT);
    }
}

Test(config, open_racing_create_sees_nothing_or_everything, .timeout = 60)
{
    char name[TH_NAME_MAX];
    for (int round = 0; round < 100; round++) {
        th_queue_name(name, "race");
        pid_t pid = th_fork(open_until_there, name);
        th_sleep_ns(200000);
        shmq_t *q;
        cr_assert_eq(shmq_create_named(&q, name, NULL, 0), 0);
        th_assert_child_ok_within(pid, 10 * TH_SEC);
        shmq_release(q);
        cr_assert_eq(shmq_unlink(name), 0);
    }
}

/* Defaults never make a valid request invalid: a small capacity given
 * alone gets a max_message that fits it, and a message that size fits. */
Test(config, small_capacity_alone_gets_a_fitting_max_message)
{
    static const size_t caps[] = {8, 9, 1000, 1001, 4096};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        struct shmq_config c = {.maxsize = 4, .capacity = caps[i]};
        shmq_t *q;
        cr_assert_eq(shmq_create(&q, &c), 0, "capacity %zu", caps[i]);
        size_t m = shmq_max_message(q);
        cr_assert(m >= 1 && m <= caps[i], "max_message %zu", m);
        static char buf[4096];
        cr_assert_eq(shmq_put_nowait(q, buf, m), 0);
        shmq_release(q);
    }
    struct shmq_config tiny = {.capacity = 7};
    shmq_t *q;
    cr_assert_eq(shmq_create(&q, &tiny), -EINVAL, "less than one unit");
}
