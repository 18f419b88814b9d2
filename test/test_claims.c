/* SPDX-License-Identifier: MIT */
/*
 * test_claims.c - claims of the header and the README checked by
 * counting: no system call and no malloc per message on the fast path,
 * the errors each call documents, memory given back with the last
 * handle, no name left by a creator killed half-way, and the version and
 * convenience macros.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* Sanitizer runtimes own malloc and make system calls of their own. */
#if defined(__SANITIZE_ADDRESS__) || defined(TH_TSAN)
#define TH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_SANITIZED 1
#endif
#endif

static const struct shmq_config small = {
    .maxsize = 64, .capacity = 64 << 10, .max_message = 1024};

/* ------------------------------------------------------------------ */
/* No system call on the fast path                                     */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t syscalls_trapped;

static void on_sigsys(int sig)
{
    (void)sig;
    syscalls_trapped++;
}

#if defined(__x86_64__)
#define TH_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TH_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* From here on, every system call but exit/exit_group/rt_sigreturn traps
 * (SIGSYS, not executed). 0, or -1 when seccomp is unavailable. */
static int trap_all_syscalls(void)
{
#ifdef TH_AUDIT_ARCH
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TH_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigreturn, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        return -1;
    return 0;
#else
    return -1;
#endif
}

#define FAST_PAIRS 100000

/* Child: 100k put+get pairs (nowait and with a timeout) under a filter
 * that traps every system call. Exit status: the number trapped (capped),
 * 77 when seccomp is unavailable, 100+ for a failed call. */
static int child_fast_path(void *arg)
{
    (void)arg;
    shmq_t *q = NULL;
    if (shmq_create(&q, &small) != 0)
        return 101;
    char msg[64] = "fast", buf[64];
    size_t len;
    /* the first call of a handle may register; warm up before trapping */
    if (shmq_put_nowait(q, msg, 8) != 0 ||
        shmq_get_nowait(q, buf, sizeof buf, &len) != 0)
        return 102;
    struct sigaction sa = {.sa_handler = on_sigsys};
    sigaction(SIGSYS, &sa, NULL);
    alarm(0); /* the watchdog's timer is set; nothing may call alarm now */
    if (trap_all_syscalls() < 0)
        return 77;
    (void)getppid(); /* the counter counts: one trap */
    if (syscalls_trapped != 1)
        return 104;
    syscalls_trapped = 0;
    int bad = 0;
    for (int i = 0; i < FAST_PAIRS && !bad; i++) {
        bool timed = i & 1;
        int p = timed ? shmq_put(q, msg, (size_t)(i % 64), SHMQ_SEC(1))
                      : shmq_put_nowait(q, msg, (size_t)(i % 64));
        int g = timed ? shmq_get(q, buf, sizeof buf, &len, SHMQ_SEC(1))
                      : shmq_get_nowait(q, buf, sizeof buf, &len);
        bad = p != 0 || g != 0 || len != (size_t)(i % 64);
    }
    if (bad)
        return 103;
    return syscalls_trapped > 50 ? 50 : (int)syscalls_trapped;
}

Test(claims, no_syscall_on_the_fast_path, .timeout = 60)
{
#ifdef TH_SANITIZED
    cr_skip_test("the sanitizer runtime makes system calls of its own");
#endif
    pid_t pid = th_fork(child_fast_path, NULL);
    int st = th_wait_pid(pid, 20 * TH_SEC);
    cr_assert(st >= 0 && WIFEXITED(st), "child status %#x (signal %d)", st,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (WEXITSTATUS(st) == 77)
        cr_skip_test("seccomp filters unavailable");
    cr_assert_eq(WEXITSTATUS(st), 0,
                 "%d system calls (or error 10x) in %d put+get pairs",
                 WEXITSTATUS(st), FAST_PAIRS);
}

/* ------------------------------------------------------------------ */
/* No malloc per message                                                */
/* ------------------------------------------------------------------ */

#ifndef TH_SANITIZED
#include "count_malloc.h"
#endif

Test(claims, no_malloc_per_message, .timeout = 60)
{
#ifdef TH_SANITIZED
    cr_skip_test("the sanitizer runtime owns malloc in this build");
#else
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &small), 0);
    long before_create = allocations;
    shmq_t *q2 = NULL;
    cr_assert_eq(shmq_create(&q2, &small), 0);
    cr_assert_gt(allocations, before_create, "the counter counts");
    shmq_release(q2);
    char msg[64] = "m", buf[64];
    size_t len;
    cr_assert_eq(shmq_put_nowait(q, msg, 1), 0); /* warm up */
    cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
    long before = allocations;
    for (int i = 0; i < FAST_PAIRS; i++) {
        cr_assert_eq(shmq_put(q, msg, (size_t)(i % 64), SHMQ_SEC(1)), 0);
        cr_assert_eq(shmq_get(q, buf, sizeof buf, &len, SHMQ_SEC(1)), 0);
    }
    long used = allocations - before;
    cr_assert_eq(used, 0, "%ld allocations in %d put+get pairs", used,
                 FAST_PAIRS);
    shmq_release(q);
#endif
}

/* ------------------------------------------------------------------ */
/* Documented errors                                                    */
/* ------------------------------------------------------------------ */

/* Child: with no descriptor left, every call that needs one says so. */
static int child_emfile(void *arg)
{
    const char *name = arg;
    shmq_t *q = NULL, *have = NULL;
    TH_CHECK_EQ(shmq_create(&have, &small), 0);
    int fd = shmq_fd(have);
    /* the lowest free descriptor becomes the limit: none is left */
    int lowest = dup(0);
    TH_CHECK(lowest >= 0);
    close(lowest);
    struct rlimit rl;
    TH_CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = (rlim_t)lowest;
    TH_CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    errno = 1234;
    TH_CHECK_EQ(shmq_create(&q, &small), -EMFILE);
    TH_CHECK_EQ(shmq_open(&q, name), -EMFILE);
    TH_CHECK_EQ(shmq_from_fd(&q, fd), -EMFILE);
    TH_CHECK_EQ(errno, 1234);
    shmq_release(have);
    return 0;
}

Test(claims, emfile, .timeout = 20)
{
    char name[TH_NAME_MAX];
    th_queue_name(name, "emfile");
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &small, 0), 0);
    pid_t pid = th_fork(child_emfile, name);
    char why[160];
    bool ok = th_reap_ok(pid, 15 * TH_SEC, why, sizeof why);
    shmq_unlink(name);
    shmq_release(q);
    cr_assert(ok, "%s", why);
}

Test(claims, enametoolong, .timeout = 10)
{
    char name[260];
    name[0] = '/';
    memset(name + 1, 'n', 201);
    name[202] = '\0';
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &small, 0), -ENAMETOOLONG);
    cr_assert_eq(shmq_open(&q, name), -ENAMETOOLONG);
    cr_assert_eq(shmq_unlink(name), -ENAMETOOLONG);
    name[201] = '\0'; /* 200 characters: fine */
    cr_assert_eq(shmq_open(&q, name), -ENOENT);
}

/* Child: as another user, a queue of mode 0600 is out of reach. */
static int child_other_user(void *arg)
{
    const char *name = arg;
    if (setgid(65534) < 0 || setuid(65534) < 0)
        return 77;
    shmq_t *q = NULL;
    TH_CHECK_EQ(shmq_open(&q, name), -EACCES);
    /* /dev/shm is sticky: another user's name cannot be removed */
    int rc = shmq_unlink(name);
    TH_CHECK(rc == -EACCES || rc == -EPERM);
    return 0;
}

Test(claims, eacces_for_another_user, .timeout = 20)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to become another user");
    char name[TH_NAME_MAX];
    th_queue_name(name, "eacces");
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create_named(&q, name, &small, 0600), 0);
    pid_t pid = th_fork(child_other_user, name);
    int st = th_wait_pid(pid, 15 * TH_SEC);
    shmq_unlink(name);
    shmq_release(q);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("cannot change user");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
}

#ifndef TH_SANITIZED
/* Child: with the address space limited, mapping a region fails. */
static int child_enomem(void *arg)
{
    (void)arg;
    struct rlimit rl;
    TH_CHECK_EQ(getrlimit(RLIMIT_AS, &rl), 0);
    /* the current size plus 8 MiB: a 64 MiB queue cannot be mapped */
    FILE *f = fopen("/proc/self/statm", "re");
    TH_CHECK(f != NULL);
    unsigned long pages = 0;
    TH_CHECK_EQ(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (8 << 20);
    TH_CHECK_EQ(setrlimit(RLIMIT_AS, &rl), 0);
    struct shmq_config big = {.maxsize = 1024, .capacity = 64u << 20};
    shmq_t *q = NULL;
    TH_CHECK_EQ(shmq_create(&q, &big), -ENOMEM);
    return 0;
}
#endif

Test(claims, enomem_when_the_region_cannot_be_mapped, .timeout = 20)
{
#ifdef TH_SANITIZED
    cr_skip_test("the sanitizer reserves the address space");
#else
    pid_t pid = th_fork(child_enomem, NULL);
    th_assert_child_ok_within(pid, 15 * TH_SEC);
#endif
}

/* Grandchild: its first call on an inherited handle needs a slot of its
 * own, and all 1024 are taken. */
static int first_call_in_fork(void *arg)
{
    shmq_t *q = arg;
    errno = 4321;
    TH_CHECK_EQ(shmq_put_nowait(q, "x", 1), -EUSERS);
    char buf[8];
    size_t len;
    TH_CHECK_EQ(shmq_get_nowait(q, buf, sizeof buf, &len), -EUSERS);
    TH_CHECK_EQ(errno, 4321);
    return 0;
}

/* Child: fill every participant slot, then fork. */
static int child_fill_slots_then_fork(void *arg)
{
    (void)arg;
    struct rlimit rl;
    TH_CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max < 2 * 1024 + 64)
        return 77;
    rl.rlim_cur = rl.rlim_max;
    TH_CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    static shmq_t *h[1024];
    TH_CHECK_EQ(shmq_create(&h[0], &small), 0);
    unsigned n = 1;
    int rc;
    while (n < 1024 && (rc = shmq_from_fd(&h[n], shmq_fd(h[0]))) == 0)
        n++;
    TH_CHECK_EQ(n, 1024);
    shmq_t *extra = NULL;
    TH_CHECK_EQ(shmq_from_fd(&extra, shmq_fd(h[0])), -EUSERS);
    pid_t pid = th_fork(first_call_in_fork, h[0]);
    int st = th_wait_pid(pid, 20 * TH_SEC);
    TH_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (unsigned i = 0; i < n; i++)
        shmq_release(h[i]);
    return 0;
}

Test(claims, eusers_on_a_forked_childs_first_call, .timeout = 60)
{
    pid_t pid = th_fork(child_fill_slots_then_fork, NULL);
    int st = th_wait_pid(pid, 50 * TH_SEC);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("RLIMIT_NOFILE hard limit too low for 1024 handles");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
}

/* ------------------------------------------------------------------ */
/* Memory freed with the last handle                                    */
/* ------------------------------------------------------------------ */

/* Mappings of this process whose file is a memfd named "shmq". */
static int shmq_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    cr_assert_not_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, "/memfd:shmq") != NULL;
    fclose(f);
    return n;
}

Test(claims, memory_freed_with_the_last_handle, .timeout = 10)
{
    int before = shmq_mappings();
    shmq_t *a = NULL, *b = NULL;
    cr_assert_eq(shmq_create(&a, &small), 0);
    cr_assert_eq(shmq_from_fd(&b, shmq_fd(a)), 0);
    cr_assert_gt(shmq_mappings(), before);
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(b), &st), 0);
    shmq_release(a);
    cr_assert_gt(shmq_mappings(), before, "b still maps the region");
    shmq_release(b);
    cr_assert_eq(shmq_mappings(), before, "nothing maps the region");
}

/* ------------------------------------------------------------------ */
/* A creator killed half-way leaves no name                             */
/* ------------------------------------------------------------------ */

static int child_create(void *arg)
{
    shmq_t *q = NULL;
    /* a 16 MiB region: allocation takes long enough to be hit */
    struct shmq_config c = {.maxsize = 4096, .capacity = 16u << 20};
    return shmq_create_named(&q, arg, &c, 0) == 0 ? 0 : 1;
}

Test(claims, creator_killed_half_way_leaves_no_name, .timeout = 60)
{
    char name[TH_NAME_MAX];
    uint64_t rng = (uint64_t)th_now_ns();
    int complete = 0, absent = 0;
    for (int i = 0; i < 40; i++) {
        th_queue_name(name, "halfway");
        pid_t pid = th_fork(child_create, name);
        th_sleep_ns((int64_t)th_rand_below(&rng, 4000) * 1000);
        kill(pid, SIGKILL);
        th_wait_pid(pid, 10 * TH_SEC);
        shmq_t *q = NULL;
        int rc = shmq_open(&q, name);
        cr_assert(rc == 0 || rc == -ENOENT, "open after a killed create: %d",
                  rc);
        if (rc == 0) {
            char buf[8];
            size_t len;
            cr_assert_eq(shmq_put_nowait(q, "x", 1), 0);
            cr_assert_eq(shmq_get_nowait(q, buf, sizeof buf, &len), 0);
            shmq_release(q);
            shmq_unlink(name);
            complete++;
        } else {
            absent++;
        }
        /* the killed creator's private name, if any: shmq-stat --clean
         * removes those; here, by its pid */
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -f /dev/shm/shmq-new-%d-*", (int)pid);
        (void)!system(cmd);
    }
    cr_log_info("killed creators: %d left a complete queue, %d no name",
                complete, absent);
}

/* ------------------------------------------------------------------ */
/* Version and conveniences                                             */
/* ------------------------------------------------------------------ */

Test(claims, version, .timeout = 10)
{
    cr_assert_eq(shmq_version(), SHMQ_VERSION_NUMBER);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SHMQ_VERSION_MAJOR,
             SHMQ_VERSION_MINOR, SHMQ_VERSION_PATCH);
    cr_assert_str_eq(shmq_version_string(), want);
}

Test(claims, strerror_takes_both_signs, .timeout = 10)
{
    static const int errs[] = {EPIPE,    EAGAIN, ETIMEDOUT, EINVAL,
                               EMSGSIZE, ENOSPC, EPERM,     EUSERS};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        cr_assert_str_eq(shmq_strerror(errs[i]), shmq_strerror(-errs[i]));
        cr_assert_str_neq(shmq_strerror(errs[i]), "unknown error");
    }
    cr_assert_str_eq(shmq_strerror(INT32_MIN), "unknown error");
    /* every value shmq.h names (grep -o -- '-E[A-Z]*' include/shmq.h) */
    static const int named[] = {
        EACCES,    EAGAIN,     EALREADY, EBADF,  EBADMSG,  EBUSY,
        ECANCELED, EEXIST,     EINVAL,   EMFILE, EMSGSIZE, ENAMETOOLONG,
        ENFILE,    ENOBUFS,    ENOENT,   ENOMEM, ENOSPC,   ENOSYS,
        ENOTSUP,   EOWNERDEAD, EPERM,    EPIPE,  EPROTO,   ESRCH,
        ETIMEDOUT, EUSERS,
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        cr_expect_str_neq(shmq_strerror(-named[i]), "unknown error",
                          "no name for -%d", named[i]);
    cr_assert_eq(SHMQ_MS(5), 5 * TH_MS);
    cr_assert_eq(SHMQ_SEC(3), 3 * TH_SEC);
}

Test(claims, small_maxsize_gets_a_small_region, .timeout = 10)
{
    shmq_t *q = NULL;
    struct shmq_config one = {.maxsize = 1};
    cr_assert_eq(shmq_create(&q, &one), 0);
    struct stat st;
    cr_assert_eq(fstat(shmq_fd(q), &st), 0);
    cr_assert_lt(st.st_size, 256 << 10, "a one-message queue takes %lld B",
                 (long long)st.st_size);
    /* and holds its one message of the default max_message */
    static char msg[SHMQ_DEFAULT_MAX_MESSAGE];
    cr_assert_eq(shmq_max_message(q), SHMQ_DEFAULT_MAX_MESSAGE);
    cr_assert_eq(shmq_put_nowait(q, msg, sizeof msg), 0);
    cr_assert_eq(shmq_put_nowait(q, msg, 0), -EAGAIN);
    shmq_release(q);
    /* four of max_message fit exactly: n * len <= capacity holds */
    struct shmq_config four = {.maxsize = 4, .max_message = 100};
    cr_assert_eq(shmq_create(&q, &four), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(shmq_put_nowait(q, msg, 100), 0, "message %d", i);
    cr_assert(shmq_full(q));
    shmq_release(q);
}
