/* SPDX-License-Identifier: MIT */
/*
 * uring_service.c - one io_uring loop serving a Unix socket and two shmq
 * queues at once.
 *
 *   client --socket--> service --work queue--> worker process
 *   client <-socket--- service <-results queue- worker process
 *
 * The service never blocks outside io_uring_wait_cqe: requests arrive as
 * recv completions, "a result is there" and "the work queue has room"
 * arrive as completions of shmq_uring_arm (or, where io_uring cannot wait
 * on a futex, of a poll on a shmq pollfd), replies leave as send SQEs.
 * After each queue completion the loop drains with the nowait calls and
 * arms again. Exits 0 when the client got a correct reply to every
 * request.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <shmq.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQUESTS 2000u
#define WINDOW   16u /* requests a client has in flight */
#define SLOTS    64u /* reply buffers of the service */

struct msg {
    uint32_t id;
    uint32_t value; /* request: x; reply: x * x (mod 2^32) */
};

enum { UD_ACCEPT = 1, UD_RECV, UD_RESULTS, UD_ROOM, UD_SEND = 16 };

/* ------------------------------------------------------------------ */
/* The worker and the client (ordinary blocking code)                   */
/* ------------------------------------------------------------------ */

static int worker(shmq_t *work, shmq_t *results)
{
    struct msg m;
    size_t len;
    int rc;
    while ((rc = shmq_get(work, &m, sizeof m, &len, SHMQ_FOREVER)) == 0) {
        m.value *= m.value;
        if (shmq_put(results, &m, sizeof m, SHMQ_FOREVER) < 0)
            return 1;
    }
    return rc == -EPIPE ? 0 : 1; /* closed and drained: done */
}

static int client(const struct sockaddr_un *addr)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (const struct sockaddr *)addr, sizeof *addr) < 0)
        return 1;
    for (uint32_t base = 0; base < REQUESTS; base += WINDOW) {
        uint32_t n = REQUESTS - base < WINDOW ? REQUESTS - base : WINDOW;
        for (uint32_t i = 0; i < n; i++) {
            struct msg m = {base + i, base + i};
            if (send(s, &m, sizeof m, 0) != sizeof m)
                return 1;
        }
        uint64_t seen = 0; /* replies may come in any order */
        for (uint32_t i = 0; i < n; i++) {
            struct msg m;
            if (recv(s, &m, sizeof m, 0) != sizeof m || m.id - base >= n ||
                m.value != m.id * m.id)
                return 1;
            seen |= 1ull << (m.id - base);
        }
        if (seen != (n == 64 ? ~0ull : (1ull << n) - 1))
            return 1;
    }
    close(s);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The service: one io_uring loop                                       */
/* ------------------------------------------------------------------ */

struct service {
    struct io_uring ring;
    shmq_t *work, *results;
    shmq_pollfd_t *results_fd, *room_fd; /* SHMQ_EVLOOP_THREAD only */
    int listener, conn;
    struct msg in;     /* the request being received */
    bool have_pending; /* a request waits for room in work */
    struct msg pending;
    struct msg out[SLOTS]; /* replies being sent */
    bool busy[SLOTS];
    unsigned sending, answered;
    bool client_done, results_armed, room_armed;
};

static struct io_uring_sqe *sqe_for(struct service *s, uint64_t ud)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) { /* SQ full: hand what we have to the kernel first */
        io_uring_submit(&s->ring);
        sqe = io_uring_get_sqe(&s->ring);
    }
    io_uring_sqe_set_data64(sqe, ud);
    return sqe;
}

/* Arm "ev on q" in the ring: a futex wait on the queue's own word where
 * the kernel has it, else a poll of the queue's pollfd. true when the
 * event holds already (nothing armed: look now). */
static bool arm(struct service *s, shmq_t *q, shmq_pollfd_t *pfd, unsigned ev,
                uint64_t ud)
{
    if (!pfd) {
        int rc = shmq_uring_arm(q, &s->ring, ev, ud, SHMQ_FOREVER);
        if (rc == -EBUSY) {
            io_uring_submit(&s->ring);
            rc = shmq_uring_arm(q, &s->ring, ev, ud, SHMQ_FOREVER);
        }
        return rc != 0;
    }
    if (shmq_pollfd_ack(pfd) > 0)
        return true;
    io_uring_prep_poll_add(sqe_for(s, ud), shmq_pollfd_fd(pfd), POLLIN);
    return false;
}

static void recv_next(struct service *s)
{
    io_uring_prep_recv(sqe_for(s, UD_RECV), s->conn, &s->in, sizeof s->in, 0);
}

static int send_reply(struct service *s, const struct msg *m)
{
    for (unsigned i = 0; i < SLOTS; i++) {
        if (s->busy[i])
            continue;
        s->busy[i] = true;
        s->out[i] = *m;
        io_uring_prep_send(sqe_for(s, UD_SEND + i), s->conn, &s->out[i],
                           sizeof s->out[i], 0);
        s->sending++;
        return 0;
    }
    return -ENOBUFS; /* cannot happen: the client's window is smaller */
}

/* The request in hand goes to the worker, or waits for room. */
static void forward(struct service *s, const struct msg *m)
{
    int rc = shmq_put_nowait(s->work, m, sizeof *m);
    if (rc == 0)
        return;
    s->pending = *m;
    s->have_pending = true;
}

static int drain_results(struct service *s)
{
    struct msg m;
    size_t len;
    while (shmq_get_nowait(s->results, &m, sizeof m, &len) == 0) {
        if (send_reply(s, &m) < 0)
            return -1;
        s->answered++;
    }
    return 0;
}

/* Look at both queues and arm what is not true yet. */
static int service_queues(struct service *s)
{
    for (;;) {
        if (s->have_pending &&
            shmq_put_nowait(s->work, &s->pending, sizeof s->pending) == 0) {
            s->have_pending = false;
            if (!s->client_done)
                recv_next(s); /* take the next request only now */
        }
        if (drain_results(s) < 0)
            return -1;
        bool again = false;
        if (!s->results_armed && s->answered < REQUESTS) {
            if (arm(s, s->results, s->results_fd, SHMQ_EV_READABLE, UD_RESULTS))
                again = true;
            else
                s->results_armed = true;
        }
        if (s->have_pending && !s->room_armed) {
            if (arm(s, s->work, s->room_fd, SHMQ_EV_WRITABLE, UD_ROOM))
                again = true;
            else
                s->room_armed = true;
        }
        if (!again)
            return 0;
    }
}

static int on_cqe(struct service *s, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    if (ud == UD_ACCEPT) {
        if (cqe->res < 0)
            return -1;
        s->conn = cqe->res;
        recv_next(s);
    } else if (ud == UD_RECV) {
        if (cqe->res == 0) {
            s->client_done = true; /* client hung up */
        } else if (cqe->res == (int)sizeof s->in) {
            forward(s, &s->in);
            if (!s->have_pending)
                recv_next(s);
        } else {
            return -1;
        }
    } else if (ud == UD_RESULTS || ud == UD_ROOM) {
        /* A futex completion is decoded (it may be the -ECANCELED of
         * nothing); a poll completion just says "look". */
        bool results = ud == UD_RESULTS;
        if (!(results ? s->results_fd : s->room_fd)) {
            int v = shmq_uring_result(
                results ? s->results : s->work,
                results ? SHMQ_EV_READABLE : SHMQ_EV_WRITABLE, cqe->res);
            if (v < 0 && v != -ECANCELED)
                return -1;
        }
        if (results)
            s->results_armed = false;
        else
            s->room_armed = false;
    } else if (ud >= UD_SEND && ud < UD_SEND + SLOTS) {
        if (cqe->res != (int)sizeof(struct msg))
            return -1;
        s->busy[ud - UD_SEND] = false;
        s->sending--;
    }
    return service_queues(s);
}

static int serve(struct service *s)
{
    io_uring_prep_accept(sqe_for(s, UD_ACCEPT), s->listener, NULL, NULL,
                         SOCK_CLOEXEC);
    if (service_queues(s) < 0)
        return -1;
    while (!(s->client_done && s->answered == REQUESTS && !s->sending)) {
        struct io_uring_cqe *cqe;
        io_uring_submit(&s->ring);
        int rc = io_uring_wait_cqe(&s->ring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return -1;
        rc = on_cqe(s, cqe);
        io_uring_cqe_seen(&s->ring, cqe);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int setup(struct service *s, struct sockaddr_un *addr)
{
    memset(s, 0, sizeof *s);
    struct shmq_config cfg = {.maxsize = 8, .max_message = sizeof(struct msg)};
    if (shmq_create(&s->work, &cfg) < 0 || shmq_create(&s->results, &cfg) < 0)
        return -1;
    /* io_uring waits on the futex where it can; elsewhere pollfds. */
    if (shmq_evloop_path() != SHMQ_EVLOOP_URING &&
        (shmq_pollfd_open(&s->results_fd, s->results, SHMQ_EV_READABLE) < 0 ||
         shmq_pollfd_open(&s->room_fd, s->work, SHMQ_EV_WRITABLE) < 0))
        return -1;
    if (io_uring_queue_init(32, &s->ring, 0) < 0)
        return -1;
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX; /* abstract name: nothing to clean up */
    snprintf(addr->sun_path + 1, sizeof addr->sun_path - 1,
             "shmq-uring-service-%d", (int)getpid());
    s->listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s->listener < 0 ||
        bind(s->listener, (struct sockaddr *)addr, sizeof *addr) < 0 ||
        listen(s->listener, 4) < 0)
        return -1;
    return 0;
}

static int reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return 1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

int main(void)
{
    struct service s;
    struct sockaddr_un addr;
    alarm(60); /* an example must never hang a test run */
    if (setup(&s, &addr) < 0) {
        perror("setup");
        return 1;
    }
    pid_t w = fork();
    if (w == 0)
        _exit(worker(s.work, s.results));
    pid_t c = fork();
    if (c == 0)
        _exit(client(&addr));
    int rc = serve(&s);
    shmq_close(s.work); /* the worker drains and ends */
    int failed = (rc < 0) | reap(w) | reap(c);
    printf("uring_service: %u requests answered over %s: %s\n", s.answered,
           s.results_fd ? "pollfds" : "io_uring futex waits",
           failed ? "FAILED" : "ok");
    io_uring_queue_exit(&s.ring);
    shmq_pollfd_close(s.results_fd);
    shmq_pollfd_close(s.room_fd);
    shmq_release(s.work);
    shmq_release(s.results);
    return failed;
}
