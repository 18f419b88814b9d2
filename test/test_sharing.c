/* SPDX-License-Identifier: MIT */
/*
 * test_sharing.c - every way of sharing a queue (DESIGN.md, semantics
 * table: fork inherits the handle, exec inherits shmq_fd(), unrelated
 * processes shmq_open(name) or receive the fd over a Unix socket), several
 * handles in one process, and threads sharing one handle.
 *
 * The exec'd children are this same executable: a constructor sees
 * SHARING_CHILD_ENV in the environment and runs the child's part before
 * Criterion starts, then exits.
 */
#include "helpers.h"

#include <pthread.h>

#define SHARING_CHILD_ENV "SHMQ_TEST_SHARING_CHILD"

static const struct shmq_config cfg = {
    .maxsize = 16, .capacity = 8192, .max_message = 256};

static shmq_t *make(void)
{
    shmq_t *q = NULL;
    cr_assert_eq(shmq_create(&q, &cfg), 0, "create");
    return q;
}

/* Get a message and compare it with text (in a child: 0 or 1). */
static int get_text(shmq_t *q, const char *text, int64_t timeout)
{
    char buf[256];
    size_t len = 0;
    int r = shmq_get(q, buf, sizeof buf, &len, timeout);
    if (r != 0) {
        fprintf(stderr, "get(\"%s\"): %d\n", text, r);
        return 1;
    }
    if (len != strlen(text) || memcmp(buf, text, len) != 0) {
        fprintf(stderr, "got \"%.*s\", expected \"%s\"\n", (int)len, buf, text);
        return 1;
    }
    return 0;
}

static int put_text(shmq_t *q, const char *text)
{
    int r = shmq_put(q, text, strlen(text), 10 * TH_SEC);
    if (r != 0)
        fprintf(stderr, "put(\"%s\"): %d\n", text, r);
    return r != 0;
}

#define expect_text(q, text)                                                   \
    cr_assert_eq(get_text((q), (text), 10 * TH_SEC), 0, "expected \"%s\"",     \
                 (text))

/*
 * A conversation between parent and child: two queues, down (parent to
 * child) and up (child to parent), so that nobody takes back its own
 * message. The child says "ready" on up, waits for "ping" on down and
 * answers on up.
 */
struct link {
    shmq_t *down, *up;
};

static struct link make_link(void)
{
    return (struct link){make(), make()};
}

static void release_link(struct link l)
{
    shmq_release(l.down);
    shmq_release(l.up);
}

static int child_talk(struct link l, const char *pong)
{
    if (put_text(l.up, "ready") != 0)
        return 1;
    if (get_text(l.down, "ping", 10 * TH_SEC) != 0)
        return 1;
    return put_text(l.up, pong);
}

/* ------------------------------------------------------------------ */
/* The exec'd child                                                     */
/* ------------------------------------------------------------------ */

/* arg: "<down fd>:<up fd>", both without FD_CLOEXEC. */
static int exec_child_fd(const char *arg)
{
    int fd[2];
    TH_CHECK_EQ(sscanf(arg, "%d:%d", &fd[0], &fd[1]), 2);
    shmq_t *q[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        TH_CHECK(th_fd_open(fd[i]) && !th_fd_cloexec(fd[i]));
        TH_CHECK_EQ(shmq_from_fd(&q[i], fd[i]), 0);
        close(fd[i]);
        TH_CHECK(th_fd_cloexec(shmq_fd(q[i])));
    }
    struct link l = {q[0], q[1]};
    TH_CHECK_EQ(child_talk(l, "pong from exec"), 0);
    release_link(l);
    return 0;
}

static int exec_child_cloexec(int fd)
{
    /* The parent handed over shmq_fd() itself, close-on-exec: the exec
     * closed it. */
    shmq_t *q = NULL;
    TH_CHECK(!th_fd_open(fd));
    TH_CHECK_EQ(shmq_from_fd(&q, fd), -EBADF);
    return 0;
}

/* Open the link named "<down name>:<up name>". */
static int open_link(const char *arg, struct link *l, char *dname, size_t cap)
{
    const char *colon = strchr(arg, ':');
    TH_CHECK(colon != NULL && (size_t)(colon - arg) < cap);
    memcpy(dname, arg, (size_t)(colon - arg));
    dname[colon - arg] = '\0';
    TH_CHECK_EQ(shmq_open(&l->down, dname), 0);
    TH_CHECK_EQ(shmq_open(&l->up, colon + 1), 0);
    return 0;
}

static int exec_child_name(const char *arg)
{
    struct link l;
    char dname[TH_NAME_MAX];
    TH_CHECK_EQ(open_link(arg, &l, dname, sizeof dname), 0);
    /* The parent unlinks the names before the ping. */
    TH_CHECK_EQ(child_talk(l, "pong from name"), 0);
    shmq_t *q2 = NULL;
    TH_CHECK_EQ(shmq_open(&q2, dname), -ENOENT);
    TH_CHECK_EQ(put_text(l.up, "still working"), 0);
    release_link(l);
    return 0;
}

__attribute__((constructor)) static void sharing_exec_child(void)
{
    const char *mode = getenv(SHARING_CHILD_ENV);
    if (mode == NULL)
        return;
    th_child_setup();
    int r = 2;
    if (strncmp(mode, "fd:", 3) == 0)
        r = exec_child_fd(mode + 3);
    else if (strncmp(mode, "cloexec:", 8) == 0)
        r = exec_child_cloexec(atoi(mode + 8));
    else if (strncmp(mode, "name:", 5) == 0)
        r = exec_child_name(mode + 5);
    _exit(r);
}

static char exec_mode[2 * TH_NAME_MAX + 16];

static int child_exec_self(void *p)
{
    (void)p;
    if (setenv(SHARING_CHILD_ENV, exec_mode, 1) != 0)
        return 125;
    execl("/proc/self/exe", "shmq-sharing-child", (char *)NULL);
    fprintf(stderr, "exec: %s\n", strerror(errno));
    return 126;
}

/* ------------------------------------------------------------------ */
/* fork                                                                 */
/* ------------------------------------------------------------------ */

/* The parent's side of the conversation. */
static void parent_talk(struct link l, const char *pong)
{
    expect_text(l.up, "ready");
    cr_assert_eq(put_text(l.down, "ping"), 0, "put ping");
    expect_text(l.up, pong);
}

static int child_inherited(void *p)
{
    struct link *l = p;
    TH_CHECK_EQ(child_talk(*l, "pong from fork"), 0);
    release_link(*l); /* the child's copies only */
    return 0;
}

Test(sharing, fork_inherits_handle, .timeout = 30)
{
    struct link l = make_link();
    pid_t pid = th_fork(child_inherited, &l);
    parent_talk(l, "pong from fork");
    th_assert_child_ok(pid);
    /* The child's release did not take the parent's handles with it. */
    cr_assert_eq(put_text(l.up, "after"), 0, "put after the child left");
    expect_text(l.up, "after");
    cr_assert_not(shmq_closed(l.up), "not closed");
    release_link(l);
}

static int child_exits_without_release(void *p)
{
    return put_text(p, "bye");
}

static int grandchild(void *p)
{
    return put_text(p, "from grandchild");
}

static int child_forks_again(void *p)
{
    pid_t pid = fork();
    TH_CHECK(pid >= 0);
    if (pid == 0)
        _exit(grandchild(p));
    int st;
    TH_CHECK_EQ(waitpid(pid, &st, 0), pid);
    TH_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return put_text(p, "from child");
}

Test(sharing, fork_many_generations, .timeout = 30)
{
    shmq_t *q = make();
    pid_t pid = th_fork(child_exits_without_release, q);
    th_assert_child_ok(pid);
    expect_text(q, "bye");
    pid = th_fork(child_forks_again, q);
    th_assert_child_ok(pid);
    expect_text(q, "from grandchild");
    expect_text(q, "from child");
    cr_assert_eq(put_text(q, "parent"), 0, "put");
    expect_text(q, "parent");
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* exec                                                                 */
/* ------------------------------------------------------------------ */

/* A dup of q's descriptor without FD_CLOEXEC. */
static int inheritable_fd(shmq_t *q)
{
    int d = dup(shmq_fd(q));
    cr_assert_geq(d, 0, "dup");
    int flags = fcntl(d, F_GETFD);
    cr_assert_eq(fcntl(d, F_SETFD, flags & ~FD_CLOEXEC), 0, "clear cloexec");
    return d;
}

Test(sharing, exec_inherits_fd, .timeout = 30)
{
    struct link l = make_link();
    int down = inheritable_fd(l.down), up = inheritable_fd(l.up);
    snprintf(exec_mode, sizeof exec_mode, "fd:%d:%d", down, up);
    pid_t pid = th_fork(child_exec_self, NULL);
    close(down);
    close(up);
    parent_talk(l, "pong from exec");
    th_assert_child_ok(pid);
    release_link(l);
}

Test(sharing, exec_closes_shmq_fd, .timeout = 30)
{
    shmq_t *q = make();
    snprintf(exec_mode, sizeof exec_mode, "cloexec:%d", shmq_fd(q));
    pid_t pid = th_fork(child_exec_self, NULL);
    th_assert_child_ok(pid);
    shmq_release(q);
}

/* ------------------------------------------------------------------ */
/* By name                                                              */
/* ------------------------------------------------------------------ */

static char down_name[TH_NAME_MAX], up_name[TH_NAME_MAX];

/* Criterion .fini: no name is left behind, also when a test fails. */
static void unlink_names(void)
{
    if (down_name[0] != '\0')
        shmq_unlink(down_name);
    if (up_name[0] != '\0')
        shmq_unlink(up_name);
}

static struct link make_named_link(mode_t mode)
{
    struct link l;
    th_queue_name(down_name, "down");
    th_queue_name(up_name, "up");
    cr_assert_eq(shmq_create_named(&l.down, down_name, &cfg, mode), 0,
                 "create_named");
    cr_assert_eq(shmq_create_named(&l.up, up_name, &cfg, mode), 0,
                 "create_named");
    return l;
}

/* As parent_talk, unlinking the names between "ready" and "ping". */
static void parent_talk_unlink(struct link l, const char *pong)
{
    expect_text(l.up, "ready");
    cr_assert_eq(shmq_unlink(down_name), 0, "unlink while both use it");
    cr_assert_eq(shmq_unlink(up_name), 0, "unlink while both use it");
    cr_assert_eq(put_text(l.down, "ping"), 0, "put after unlink");
    expect_text(l.up, pong);
}

Test(sharing, by_name_in_unrelated_process, .timeout = 30, .fini = unlink_names)
{
    struct link l = make_named_link(0);
    snprintf(exec_mode, sizeof exec_mode, "name:%s:%s", down_name, up_name);
    pid_t pid = th_fork(child_exec_self, NULL);
    parent_talk_unlink(l, "pong from name");
    expect_text(l.up, "still working");
    th_assert_child_ok(pid);
    release_link(l);
}

static int child_open_by_name(void *p)
{
    /* Act as an unrelated process: drop what fork gave us. */
    release_link(*(struct link *)p);
    struct link l;
    TH_CHECK_EQ(shmq_open(&l.down, down_name), 0);
    TH_CHECK_EQ(shmq_open(&l.up, up_name), 0);
    TH_CHECK_EQ(child_talk(l, "pong by name"), 0);
    release_link(l);
    return 0;
}

Test(sharing, by_name_in_forked_process, .timeout = 30, .fini = unlink_names)
{
    struct link l = make_named_link(0660);
    pid_t pid = th_fork(child_open_by_name, &l);
    parent_talk_unlink(l, "pong by name");
    th_assert_child_ok(pid);
    release_link(l);
}

/* ------------------------------------------------------------------ */
/* fd over a Unix socket                                                */
/* ------------------------------------------------------------------ */

static int sock_pair[2];

static int child_receive_fd(void *p)
{
    (void)p;
    close(sock_pair[0]);
    shmq_t *q[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        int fd = th_recv_fd(sock_pair[1]);
        TH_CHECK(fd >= 0);
        TH_CHECK_EQ(shmq_from_fd(&q[i], fd), 0);
        close(fd);
    }
    struct link l = {q[0], q[1]};
    TH_CHECK_EQ(child_talk(l, "pong over socket"), 0);
    release_link(l);
    return 0;
}

Test(sharing, fd_over_unix_socket, .timeout = 30)
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock_pair),
                 0, "socketpair");
    /* The child exists before the queue: it can only get it by the fd. */
    pid_t pid = th_fork(child_receive_fd, NULL);
    close(sock_pair[1]);
    struct link l = make_link();
    cr_assert_eq(th_send_fd(sock_pair[0], shmq_fd(l.down)), 0, "send fd");
    cr_assert_eq(th_send_fd(sock_pair[0], shmq_fd(l.up)), 0, "send fd");
    close(sock_pair[0]);
    parent_talk(l, "pong over socket");
    th_assert_child_ok(pid);
    release_link(l);
}

/* ------------------------------------------------------------------ */
/* Several handles in one process                                       */
/* ------------------------------------------------------------------ */

Test(sharing, several_handles_in_one_process, .timeout = 30)
{
    shmq_t *h1 = make(), *h2 = NULL, *h3 = NULL;
    cr_assert_eq(shmq_from_fd(&h2, shmq_fd(h1)), 0, "from_fd");
    cr_assert_eq(shmq_from_fd(&h3, shmq_fd(h2)), 0, "from_fd of from_fd");
    cr_assert_eq(put_text(h1, "one"), 0, "put");
    cr_assert_eq(put_text(h2, "two"), 0, "put");
    cr_assert_eq(put_text(h3, "three"), 0, "put");
    cr_assert_eq(shmq_qsize(h1), 3, "qsize h1");
    cr_assert_eq(shmq_qsize(h2), 3, "qsize h2");
    cr_assert_eq(shmq_qsize(h3), 3, "qsize h3");
    expect_text(h3, "one");
    expect_text(h1, "two");
    shmq_release(h1);
    expect_text(h2, "three");
    cr_assert(shmq_empty(h3), "empty");
    cr_assert_eq(shmq_close(h3), 0, "close");
    cr_assert(shmq_closed(h2), "closed seen by h2");
    shmq_release(h2);
    shmq_release(h3);

    char name[TH_NAME_MAX];
    th_queue_name(name, "handles");
    shmq_t *n1 = NULL, *n2 = NULL, *n3 = NULL;
    cr_assert_eq(shmq_create_named(&n1, name, &cfg, 0), 0, "create_named");
    cr_assert_eq(shmq_open(&n2, name), 0, "open");
    cr_assert_eq(shmq_open(&n3, name), 0, "open again");
    cr_assert_eq(put_text(n2, "a"), 0, "put");
    shmq_release(n1);
    cr_assert_eq(shmq_unlink(name), 0, "unlink");
    cr_assert_eq(put_text(n3, "b"), 0, "put");
    expect_text(n3, "a");
    expect_text(n2, "b");
    shmq_release(n2);
    shmq_release(n3);
}

Test(sharing, many_handles, .timeout = 30)
{
    enum { N = 64 };
    shmq_t *h[N];
    h[0] = make();
    for (int i = 1; i < N; i++)
        cr_assert_eq(shmq_from_fd(&h[i], shmq_fd(h[i - 1])), 0, "from_fd %d",
                     i);
    for (uint32_t i = 0; i < N; i++)
        cr_assert_eq(shmq_put(h[i], &i, sizeof i, SHMQ_NOWAIT),
                     i < 16 ? 0 : -EAGAIN, "put via handle %u", i);
    for (uint32_t i = 0; i < 16; i++) {
        uint32_t v;
        size_t len;
        cr_assert_eq(shmq_get_nowait(h[N - 1 - i], &v, sizeof v, &len), 0,
                     "get");
        cr_assert_eq(v, i, "FIFO across handles");
    }
    for (int i = 0; i < N; i++)
        shmq_release(h[i]);
}

/* ------------------------------------------------------------------ */
/* Threads sharing one handle                                           */
/* ------------------------------------------------------------------ */

#define T_PRODUCERS    2
#define T_CONSUMERS    2
#define T_PER_PRODUCER 20000

/* Consumer failures that are not a library return value. */
#define T_BAD_PAYLOAD 1001 /* torn, mixed or unknown message */
#define T_BAD_ORDER   1002 /* a producer's messages out of order */

struct tctx {
    shmq_t *q;
    uint32_t id;
    unsigned char *seen; /* [T_PRODUCERS][T_PER_PRODUCER] counters */
    int err;             /* a negative shmq return, or T_BAD_* */
    size_t bad_len;      /* the message behind a T_BAD_* */
    uint32_t bad_id, bad_seq;
};

static void *t_producer(void *p)
{
    struct tctx *c = p;
    unsigned char m[48];
    for (uint32_t s = 0; s < T_PER_PRODUCER; s++) {
        size_t len = TH_PAYLOAD_MIN + s % 33;
        th_payload_fill(m, len, c->id, s);
        int r = shmq_put(c->q, m, len, 20 * TH_SEC);
        if (r != 0) {
            c->err = r;
            break;
        }
    }
    return NULL;
}

static void *t_consumer(void *p)
{
    struct tctx *c = p;
    unsigned char m[256];
    int64_t last[T_PRODUCERS];
    for (int i = 0; i < T_PRODUCERS; i++)
        last[i] = -1;
    for (;;) {
        size_t len;
        int r = shmq_get(c->q, m, sizeof m, &len, 20 * TH_SEC);
        if (r == -EPIPE)
            break;
        if (r != 0) {
            c->err = r;
            break;
        }
        uint32_t id = 0, seq = 0;
        if (!th_payload_check(m, len, &id, &seq) || id >= T_PRODUCERS ||
            seq >= T_PER_PRODUCER) {
            c->err = T_BAD_PAYLOAD;
            c->bad_len = len;
            memcpy(&c->bad_id, m, sizeof c->bad_id);
            memcpy(&c->bad_seq, m + 4, sizeof c->bad_seq);
            break;
        }
        /* FIFO per producer, also as seen by one consumer of several. */
        if ((int64_t)seq <= last[id]) {
            c->err = T_BAD_ORDER;
            c->bad_id = id;
            c->bad_seq = seq;
            break;
        }
        last[id] = seq;
        __atomic_add_fetch(&c->seen[id * T_PER_PRODUCER + seq], 1,
                           __ATOMIC_RELAXED);
    }
    return NULL;
}

static void check_seen_once(const unsigned char *seen)
{
    for (uint32_t i = 0; i < T_PRODUCERS; i++)
        for (uint32_t s = 0; s < T_PER_PRODUCER; s++)
            cr_assert_eq(seen[i * T_PER_PRODUCER + s], 1,
                         "producer %u message %u seen %u times", i, s,
                         seen[i * T_PER_PRODUCER + s]);
}

Test(sharing, threads_share_one_handle, .timeout = 60)
{
    shmq_t *q = make();
    unsigned char *seen = calloc(T_PRODUCERS * T_PER_PRODUCER, 1);
    cr_assert_not_null(seen, "calloc");
    struct tctx prod[T_PRODUCERS], cons[T_CONSUMERS];
    pthread_t pt[T_PRODUCERS], ct[T_CONSUMERS];
    for (uint32_t i = 0; i < T_CONSUMERS; i++) {
        cons[i] = (struct tctx){.q = q, .id = i, .seen = seen};
        cr_assert_eq(pthread_create(&ct[i], NULL, t_consumer, &cons[i]), 0,
                     "consumer");
    }
    for (uint32_t i = 0; i < T_PRODUCERS; i++) {
        prod[i] = (struct tctx){.q = q, .id = i, .seen = seen};
        cr_assert_eq(pthread_create(&pt[i], NULL, t_producer, &prod[i]), 0,
                     "producer");
    }
    for (int i = 0; i < T_PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    cr_assert_eq(shmq_close(q), 0, "close");
    for (int i = 0; i < T_CONSUMERS; i++)
        pthread_join(ct[i], NULL);
    for (int i = 0; i < T_PRODUCERS; i++)
        cr_assert_eq(prod[i].err, 0, "producer %d: %d", i, prod[i].err);
    for (int i = 0; i < T_CONSUMERS; i++)
        cr_assert_eq(cons[i].err, 0,
                     "consumer %d: %d (message %zu bytes, producer %u seq "
                     "%u)",
                     i, cons[i].err, cons[i].bad_len, cons[i].bad_id,
                     cons[i].bad_seq);
    check_seen_once(seen);
    free(seen);
    shmq_release(q);
}

/* The same with processes: producers and consumers forked with the
 * inherited handle, the tally in shared memory. */
static struct tctx proc_ctx;

static int child_producer(void *p)
{
    struct tctx c = proc_ctx;
    c.id = (uint32_t)(uintptr_t)p;
    t_producer(&c);
    TH_CHECK_EQ(c.err, 0);
    return 0;
}

static int child_consumer(void *p)
{
    (void)p;
    struct tctx c = proc_ctx;
    t_consumer(&c);
    if (c.err != 0)
        fprintf(stderr,
                "consumer: %d (message %zu bytes, producer %u seq %u)\n", c.err,
                c.bad_len, c.bad_id, c.bad_seq);
    TH_CHECK_EQ(c.err, 0);
    return 0;
}

Test(sharing, processes_share_inherited_handle, .timeout = 60)
{
    size_t size = T_PRODUCERS * T_PER_PRODUCER;
    proc_ctx.q = make();
    proc_ctx.seen = th_shared_alloc(size);
    cr_assert_not_null(proc_ctx.seen, "shared memory");
    pid_t cons[T_CONSUMERS], prod[T_PRODUCERS];
    for (int i = 0; i < T_CONSUMERS; i++)
        cons[i] = th_fork(child_consumer, NULL);
    for (uintptr_t i = 0; i < T_PRODUCERS; i++)
        prod[i] = th_fork(child_producer, (void *)i);
    th_assert_children_ok_within(prod, T_PRODUCERS, 40 * TH_SEC);
    cr_assert_eq(shmq_close(proc_ctx.q), 0, "close");
    th_assert_children_ok_within(cons, T_CONSUMERS, 10 * TH_SEC);
    check_seen_once(proc_ctx.seen);
    th_shared_free(proc_ctx.seen, size);
    shmq_release(proc_ctx.q);
}
