/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - what the Criterion suites under test/ share.
 *
 * Everything is static (inline) so that each test file is one translation
 * unit and -Wmissing-prototypes stays quiet. Names start with th_ ("test
 * helper"). Add functions here; do not change existing ones: several
 * suites use them.
 *
 * Processes: th_fork() runs a function in a child that dies with its
 * parent (PR_SET_PDEATHSIG) and by a SIGALRM watchdog, so a library bug
 * makes a test fail rather than leave a process hanging. A child reports
 * through its exit status only (never cr_assert in a child: the child
 * shares the test worker's channel to the Criterion runner); TH_CHECK()
 * prints what failed on stderr and returns 1 from the child function.
 */
#ifndef SHMQ_TEST_HELPERS_H
#define SHMQ_TEST_HELPERS_H

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

#define TH_MS  ((int64_t)1000000)
#define TH_SEC ((int64_t)1000000000)

/* How late a call with a timeout may return on a loaded 2-CPU machine
 * (sanitizers included): a deadline bug of a second still fails. */
#define TH_TIMEOUT_SLACK_NS (300 * TH_MS)

/* A child's watchdog: no test child lives longer than this. */
#define TH_CHILD_ALARM_S 60u
/* How long th_assert_child_ok() waits for a child before killing it. */
#define TH_REAP_TIMEOUT_NS (30 * TH_SEC)

/* ------------------------------------------------------------------ */
/* Time                                                                 */
/* ------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds (the clock shmq measures timeouts on). */
static inline int64_t th_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * TH_SEC + ts.tv_nsec;
}

/* Sleep at least ns nanoseconds, resuming after signals. */
static inline void th_sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / TH_SEC, .tv_nsec = ns % TH_SEC};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------ */
/* Names and descriptors                                                */
/* ------------------------------------------------------------------ */

#define TH_NAME_MAX 96

/*
 * A queue name no other test, process or earlier run uses:
 * "/shmq-test-<tag>-<pid>-<counter>-<ns>". buf holds TH_NAME_MAX bytes.
 */
static inline const char *th_queue_name(char *buf, const char *tag)
{
    static unsigned counter;
    snprintf(buf, TH_NAME_MAX, "/shmq-test-%s-%d-%u-%lld", tag, (int)getpid(),
             counter++, (long long)(th_now_ns() % 1000000000));
    return buf;
}

/* The /dev/shm path of a queue name ("/x" -> "/dev/shm/x"). */
static inline const char *th_shm_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "/dev/shm%s", name);
    return buf;
}

/* true when fd is open and has FD_CLOEXEC set. */
static inline bool th_fd_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    return flags >= 0 && (flags & FD_CLOEXEC);
}

/* true when fd is an open descriptor. */
static inline bool th_fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* Send one descriptor over a Unix socket (SCM_RIGHTS). 0 or -errno. */
static inline int th_send_fd(int sock, int fd)
{
    char byte = 'F';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -errno;
}

/* Receive one descriptor sent by th_send_fd(). The fd (close-on-exec),
 * or -errno (-EBADMSG when the message carried none). */
static inline int th_recv_fd(int sock)
{
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (n != 1 || c == NULL || c->cmsg_level != SOL_SOCKET ||
        c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        return -EBADMSG;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* ------------------------------------------------------------------ */
/* Memory shared with children                                          */
/* ------------------------------------------------------------------ */

/* Zeroed MAP_SHARED memory that forked children see; NULL on failure. */
static inline void *th_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static inline void th_shared_free(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, size);
}

/* ------------------------------------------------------------------ */
/* Child processes                                                      */
/* ------------------------------------------------------------------ */

/* In a child function: on failure, say what and where, and return 1. */
#define TH_CHECK(cond)                                                         \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: child %d: check failed: %s\n", __FILE__,   \
                    __LINE__, (int)getpid(), #cond);                           \
            return 1;                                                          \
        }                                                                      \
    } while (0)

/* As TH_CHECK, printing an int value too (typically a return code). */
#define TH_CHECK_EQ(val, expected)                                             \
    do {                                                                       \
        long long th_v_ = (long long)(val);                                    \
        long long th_e_ = (long long)(expected);                               \
        if (th_v_ != th_e_) {                                                  \
            fprintf(stderr, "%s:%d: child %d: %s is %lld, expected %lld\n",    \
                    __FILE__, __LINE__, (int)getpid(), #val, th_v_, th_e_);    \
            return 1;                                                          \
        }                                                                      \
    } while (0)

typedef int (*th_child_fn)(void *arg);

/* What a freshly forked (or exec'd) test child does first: die with the
 * parent thread, and by a watchdog alarm. */
static inline void th_child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGALRM, SIG_DFL);
    alarm(TH_CHILD_ALARM_S);
}

/*
 * Fork a child that runs fn(arg) and exits with its return value (0 =
 * success). The parent gets the pid (asserts that fork worked). The child
 * is killed when the forking thread exits, and after TH_CHILD_ALARM_S.
 */
static inline pid_t th_fork(th_child_fn fn, void *arg)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        th_child_setup();
        if (getppid() != parent) /* the parent died before prctl */
            _exit(127);
        _exit(fn(arg) & 0xff);
    }
    return pid;
}

/*
 * Wait for pid up to timeout_ns. Returns its wait status, or -1 when it
 * did not end in time: it is then killed (SIGKILL) and reaped.
 */
static inline int th_wait_pid(pid_t pid, int64_t timeout_ns)
{
    int64_t deadline = th_now_ns() + timeout_ns;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -2;
        if (th_now_ns() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return -1;
        }
        th_sleep_ns(TH_MS / 2);
    }
}

/* Reap pid (waiting up to timeout_ns); true when it exited with status 0,
 * else false and a description in why. */
static inline bool th_reap_ok(pid_t pid, int64_t timeout_ns, char *why,
                              size_t cap)
{
    int st = th_wait_pid(pid, timeout_ns);
    if (st == -1)
        snprintf(why, cap, "child %d still running after %lld ms: killed",
                 (int)pid, (long long)(timeout_ns / TH_MS));
    else if (st == -2)
        snprintf(why, cap, "child %d: waitpid failed", (int)pid);
    else if (WIFSIGNALED(st))
        snprintf(why, cap, "child %d killed by signal %d (%s)", (int)pid,
                 WTERMSIG(st), strsignal(WTERMSIG(st)));
    else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
        snprintf(why, cap, "child %d exited with status %d", (int)pid,
                 WEXITSTATUS(st));
    else
        return true;
    return false;
}

/* waitpid, and assert that the child exited with status 0 within
 * timeout_ns (then it is killed). */
#define th_assert_child_ok_within(pid, timeout_ns)                             \
    do {                                                                       \
        char th_why_[160];                                                     \
        bool th_ok_ =                                                          \
            th_reap_ok((pid), (timeout_ns), th_why_, sizeof th_why_);          \
        cr_assert(th_ok_, "%s", th_why_);                                      \
    } while (0)

#define th_assert_child_ok(pid)                                                \
    th_assert_child_ok_within((pid), TH_REAP_TIMEOUT_NS)

/* Reap n children (each waited for up to timeout_ns from the call), then
 * assert that all exited with status 0. All are reaped before asserting. */
#define th_assert_children_ok_within(pids, n, timeout_ns)                      \
    do {                                                                       \
        char th_why_[160] = "";                                                \
        bool th_all_ = true;                                                   \
        int64_t th_end_ = th_now_ns() + (timeout_ns);                          \
        for (size_t th_i_ = 0; th_i_ < (size_t)(n); th_i_++) {                 \
            char th_w_[160];                                                   \
            int64_t th_left_ = th_end_ - th_now_ns();                          \
            if (!th_reap_ok((pids)[th_i_], th_left_ > 0 ? th_left_ : 1, th_w_, \
                            sizeof th_w_) &&                                   \
                th_all_) {                                                     \
                th_all_ = false;                                               \
                memcpy(th_why_, th_w_, sizeof th_why_);                        \
            }                                                                  \
        }                                                                      \
        cr_assert(th_all_, "%s", th_why_);                                     \
    } while (0)

/*
 * The scheduler state letter of a thread ('R', 'S', 'D', ...) from
 * /proc/<pid>/task/<tid>/stat, or 0 when it cannot be read. For a
 * single-threaded process tid == pid.
 */
static inline char th_task_state(pid_t pid, pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    return p != NULL && p[1] == ' ' ? p[2] : 0;
}

/* The calling thread's kernel id (for th_task_state of a thread). */
static inline pid_t th_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/*
 * Wait (up to timeout_ns) until the thread sleeps ('S') in the kernel:
 * after it announced that it is about to call a blocking shmq function,
 * that means it is blocked in it (past any spinning). true when it does.
 */
static inline bool th_wait_sleeping(pid_t pid, pid_t tid, int64_t timeout_ns)
{
    int64_t deadline = th_now_ns() + timeout_ns;
    while (th_now_ns() < deadline) {
        if (th_task_state(pid, tid) == 'S')
            return true;
        th_sleep_ns(TH_MS);
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Payloads                                                             */
/* ------------------------------------------------------------------ */

/* FNV-1a, 32 bits, continuing from h (start with TH_FNV_INIT). */
#define TH_FNV_INIT 2166136261u
static inline uint32_t th_fnv1a(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

/* Byte i of the filler of a message identified by (a, b). */
static inline unsigned char th_pattern_byte(uint32_t a, uint32_t b, size_t i)
{
    uint32_t x = a * 2654435761u ^ b * 40503u ^ (uint32_t)i * 97u;
    return (unsigned char)(x ^ x >> 13 ^ (uint32_t)(i >> 8));
}

/* Fill len bytes with a pattern that depends on seed and on len. */
static inline void th_fill(void *buf, size_t len, uint32_t seed)
{
    unsigned char *b = buf;
    for (size_t i = 0; i < len; i++)
        b[i] = th_pattern_byte(seed, (uint32_t)len, i);
}

/* true when buf holds exactly what th_fill(buf, len, seed) wrote. */
static inline bool th_check(const void *buf, size_t len, uint32_t seed)
{
    const unsigned char *b = buf;
    for (size_t i = 0; i < len; i++)
        if (b[i] != th_pattern_byte(seed, (uint32_t)len, i))
            return false;
    return true;
}

/*
 * Self-describing payload for many-producer tests: a 16-byte head
 * (producer, seq, len, checksum) then filler bytes derived from
 * (producer, seq). The checksum covers the head's other fields and the
 * filler, so a torn, mixed or shifted message is caught.
 */
struct th_payload_head {
    uint32_t producer;
    uint32_t seq;
    uint32_t len;
    uint32_t sum;
};
#define TH_PAYLOAD_MIN sizeof(struct th_payload_head)

static inline uint32_t th_payload_sum(const struct th_payload_head *h,
                                      const unsigned char *body, size_t n)
{
    uint32_t s =
        th_fnv1a(TH_FNV_INIT, h, offsetof(struct th_payload_head, sum));
    return th_fnv1a(s, body, n);
}

/* Write a payload of len >= TH_PAYLOAD_MIN bytes into buf. */
static inline void th_payload_fill(void *buf, size_t len, uint32_t producer,
                                   uint32_t seq)
{
    struct th_payload_head h = {producer, seq, (uint32_t)len, 0};
    unsigned char *body = (unsigned char *)buf + TH_PAYLOAD_MIN;
    size_t n = len - TH_PAYLOAD_MIN;
    for (size_t i = 0; i < n; i++)
        body[i] = th_pattern_byte(producer, seq, i);
    h.sum = th_payload_sum(&h, body, n);
    memcpy(buf, &h, sizeof h);
}

/*
 * Check a payload of len bytes; true when it is intact, with its producer
 * and seq stored (either pointer may be NULL).
 */
static inline bool th_payload_check(const void *buf, size_t len,
                                    uint32_t *producer, uint32_t *seq)
{
    if (len < TH_PAYLOAD_MIN)
        return false;
    struct th_payload_head h;
    memcpy(&h, buf, sizeof h);
    const unsigned char *body = (const unsigned char *)buf + TH_PAYLOAD_MIN;
    size_t n = len - TH_PAYLOAD_MIN;
    if (h.len != len || h.sum != th_payload_sum(&h, body, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (body[i] != th_pattern_byte(h.producer, h.seq, i))
            return false;
    if (producer != NULL)
        *producer = h.producer;
    if (seq != NULL)
        *seq = h.seq;
    return true;
}

/* ------------------------------------------------------------------ */
/* Randomness and scale (robustness suites)                             */
/* ------------------------------------------------------------------ */

/* splitmix64: a small seedable generator; one state per thread. */
static inline uint64_t th_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform enough in [0, n); n > 0. */
static inline uint64_t th_rand_below(uint64_t *state, uint64_t n)
{
    return th_rand_next(state) % n;
}

#if defined(__SANITIZE_THREAD__)
#define TH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TH_TSAN 1
#endif
#endif

/* Size factor of the long suites: SHMQ_TEST_SCALE (a positive number,
 * default 1), times 0.5 in a ThreadSanitizer build (slower). */
static inline double th_test_scale(void)
{
    const char *env = getenv("SHMQ_TEST_SCALE");
    double scale = env != NULL && atof(env) > 0 ? atof(env) : 1.0;
#ifdef TH_TSAN
    scale *= 0.5;
#endif
    return scale;
}

/* n times th_test_scale(), at least min. */
static inline uint64_t th_scaled(uint64_t n, uint64_t min)
{
    double v = (double)n * th_test_scale();
    return v < (double)min ? min : (uint64_t)v;
}

#endif /* SHMQ_TEST_HELPERS_H */
