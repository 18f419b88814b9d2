/* SPDX-License-Identifier: MIT */
/*
 * test_stat.c - shmq-stat (tools/) against live, dead and corrupt
 * regions. The tool's path comes in SHMQ_STAT (test/meson.build).
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <sys/stat.h>

#include "layout.h" /* SHMQ_LOCK_BASE, SHMQ_PARTICIPANTS */

static const struct shmq_config cfg = {.maxsize = 16,
                                       .capacity = 4096,
                                       .max_message = 256,
                                       .flags = SHMQ_JOINABLE};

/* Run shmq-stat with args; its stdout (up to cap bytes) in out. The exit
 * status, or -1 when it did not exit normally. */
static int run_stat(const char *args, char *out, size_t cap)
{
    const char *tool = getenv("SHMQ_STAT");
    cr_assert_not_null(tool, "SHMQ_STAT is not set");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "timeout 20 %s %s", tool, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(stat, live_queue_json, .timeout = 30)
{
    char name[TH_NAME_MAX], args[256], out[16384], want[128];
    th_queue_name(name, "stat");
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shmq_put_nowait(q, "abc", 3), 0);
    snprintf(args, sizeof args, "--json --attach %s", name);
    int rc = run_stat(args, out, sizeof out);
    shmq_unlink(name);
    cr_assert_eq(rc, 0, "shmq-stat: %d\n%s", rc, out);
    cr_assert(strstr(out, "\"maxsize\":16,"), "%s", out);
    cr_assert(strstr(out, "\"capacity\":4096,"), "%s", out);
    cr_assert(strstr(out, "\"joinable\":true"), "%s", out);
    cr_assert(strstr(out, "\"qsize\":3,"), "%s", out);
    snprintf(want, sizeof want,
             "\"pid\":%d,\"state\":\"active\",\"alive\":true", (int)getpid());
    cr_assert(strstr(out, want), "want %s in %s", want, out);
    shmq_release(q);
}

static int attach_and_die(void *arg)
{
    shmq_t *q = NULL;
    TH_CHECK_EQ(shmq_open(&q, arg), 0);
    kill(getpid(), SIGKILL);
    return 1;
}

Test(stat, dead_participant_and_watch, .timeout = 30)
{
    char name[TH_NAME_MAX], args[256], out[16384], want[128];
    th_queue_name(name, "statdead");
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &cfg, 0), 0);
    pid_t pid = th_fork(attach_and_die, name);
    int st = th_wait_pid(pid, 10 * TH_SEC);
    cr_assert(WIFSIGNALED(st), "child status %#x", st);
    snprintf(args, sizeof args, "--watch 0.05 --count 2 %s", name);
    int rc = run_stat(args, out, sizeof out);
    shmq_unlink(name);
    shmq_release(q);
    cr_assert_eq(rc, 0, "shmq-stat: %d\n%s", rc, out);
    snprintf(want, sizeof want, "pid %-8d active  dead", (int)pid);
    cr_assert(strstr(out, want), "want '%s' in\n%s", want, out);
    cr_assert(strstr(out, "participants: 1 alive"), "%s", out);
    cr_assert(strstr(out, "rate:"), "second round has rates: %s", out);
}

/* A file under /dev/shm holding len bytes of region, then scribbled. */
static void write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

Test(stat, corrupt_regions_are_refused, .timeout = 30)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0);
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(q), &st), 0);
    size_t size = (size_t)st.st_size;
    unsigned char *img = malloc(size);
    cr_assert_not_null(img);
    cr_assert_eq(pread(shmq_fd(q), img, size, 0), (ssize_t)size);
    shmq_release(q);

    char name[TH_NAME_MAX], path[160], args[256], out[16384];
    th_queue_name(name, "statbad");
    th_shm_path(path, sizeof path, name);
    struct shmq_identity *id = (struct shmq_identity *)img;
    struct {
        const char *what;
        size_t len;
        void (*scribble)(struct shmq_identity *);
    } cases[] = {
        {"100 bytes", 100, NULL},
        {"one byte short", size - 1, NULL},
        {"bad magic", size, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t magic = id->magic;
        if (i == 2)
            id->magic ^= 1;
        write_file(path, img, cases[i].len);
        id->magic = magic;
        snprintf(args, sizeof args, "%s 2>&1", name);
        int rc = run_stat(args, out, sizeof out);
        cr_expect_eq(rc, 2, "%s: exit %d\n%s", cases[i].what, rc, out);
    }
    /* offsets pointing outside the file */
    id->ring_offset = size * 2;
    write_file(path, img, size);
    snprintf(args, sizeof args, "--json %s 2>&1", name);
    cr_expect_eq(run_stat(args, out, sizeof out), 2, "bad offsets\n%s", out);
    unlink(path);
    free(img);
}

static void make_stray(const char *path, time_t age)
{
    write_file(path, "x", 1);
    struct timespec t[2] = {{.tv_sec = time(NULL) - age},
                            {.tv_sec = time(NULL) - age}};
    cr_assert_eq(utimensat(AT_FDCWD, path, t, 0), 0);
}

Test(stat, clean_removes_only_old_unlocked_strays, .timeout = 30)
{
    char old[128], fresh[128], locked[128], out[16384];
    snprintf(old, sizeof old, "/dev/shm/shmq-new-test-%d-old", (int)getpid());
    snprintf(fresh, sizeof fresh, "/dev/shm/shmq-new-test-%d-fresh",
             (int)getpid());
    snprintf(locked, sizeof locked, "/dev/shm/shmq-new-test-%d-locked",
             (int)getpid());
    make_stray(old, 120);
    make_stray(fresh, 0);
    make_stray(locked, 120);
    int lfd = open(locked, O_RDWR | O_CLOEXEC);
    struct flock fl = {.l_type = F_WRLCK,
                       .l_whence = SEEK_SET,
                       .l_start = SHMQ_LOCK_BASE + 3,
                       .l_len = 1};
    cr_assert_eq(fcntl(lfd, F_OFD_SETLK, &fl), 0);
    cr_assert_eq(run_stat("--clean --dry-run", out, sizeof out), 0);
    cr_assert(strstr(out, old), "dry run lists the old stray: %s", out);
    cr_assert_eq(access(old, F_OK), 0, "dry run removes nothing");
    cr_assert_eq(run_stat("--clean", out, sizeof out), 0);
    bool old_gone = access(old, F_OK) != 0;
    bool fresh_kept = access(fresh, F_OK) == 0;
    bool locked_kept = access(locked, F_OK) == 0;
    close(lfd);
    unlink(old);
    unlink(fresh);
    unlink(locked);
    cr_assert(old_gone, "an old, unlocked stray is removed");
    cr_assert(fresh_kept, "a fresh one may be a creator at work");
    cr_assert(locked_kept, "a locked one has a live creator");
}

Test(stat, anonymous_queue_through_proc, .timeout = 30)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0);
    cr_assert_eq(shmq_put_nowait(q, "abc", 3), 0);
    char args[256], out[16384];
    snprintf(args, sizeof args, "--json --attach /proc/%d/fd/%d", (int)getpid(),
             shmq_fd(q));
    int rc = run_stat(args, out, sizeof out);
    cr_assert_eq(rc, 0, "shmq-stat: %d\n%s", rc, out);
    cr_assert(strstr(out, "\"maxsize\":16,"), "%s", out);
    cr_assert(strstr(out, "\"qsize\":1,"), "%s", out);
    /* it released what it attached: the queue has one handle again */
    cr_assert(strstr(out, "\"participants\":[{"), "%s", out);
    shmq_release(q);
}
