/* SPDX-License-Identifier: MIT */
/*
 * exec_child.c - share a queue with a program started by exec.
 *
 * fork() alone shares a handle; exec replaces the process image, so the
 * child must attach again. The queue's descriptor survives exec if
 * FD_CLOEXEC is clear on it: the parent's child dups shmq_fd() (a dup is
 * not close-on-exec), execs this program with the fd number in argv, and
 * the new program attaches with shmq_from_fd(). The handle's own fd stays
 * close-on-exec, so other programs never inherit it by accident.
 *
 *     parent:  ./exec_child               puts 1000 lines, closes
 *     child:   ./exec_child --child FD    gets them in order until -EPIPE
 *
 * Exits 0 only if the child received every line, in order.
 */
#include <errno.h>
#include <fcntl.h>
#include <shmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINES 1000

/* The exec'd program: attach to the inherited fd and drain the queue. */
static int child(int fd)
{
    shmq_t *q;
    char buf[64], want[64];
    size_t len;
    int rc, n = 0;

    if ((rc = shmq_from_fd(&q, fd)) < 0) {
        fprintf(stderr, "shmq_from_fd: %s\n", shmq_strerror(rc));
        return 1;
    }
    close(fd); /* shmq_from_fd took its own dup */

    while ((rc = shmq_get(q, buf, sizeof buf, &len, SHMQ_SEC(10))) == 0) {
        snprintf(want, sizeof want, "line %d", n++);
        if (len != strlen(want) || memcmp(buf, want, len) != 0) {
            fprintf(stderr, "child: got '%.*s', want '%s'\n", (int)len, buf,
                    want);
            rc = -EBADMSG;
            break;
        }
    }
    shmq_release(q);
    return rc == -EPIPE && n == LINES ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return child(atoi(argv[2]));

    struct shmq_config cfg = {.maxsize = 64, .max_message = 64};
    shmq_t *q;
    int rc, failed = 0;

    if ((rc = shmq_create(&q, &cfg)) < 0) {
        fprintf(stderr, "shmq_create: %s\n", shmq_strerror(rc));
        return 1;
    }

    pid_t pid = fork();
    if (pid == 0) {
        int fd = dup(shmq_fd(q)); /* FD_CLOEXEC is clear on the dup */
        char fdarg[16];
        snprintf(fdarg, sizeof fdarg, "%d", fd);
        execl("/proc/self/exe", argv[0], "--child", fdarg, (char *)NULL);
        _exit(127); /* exec failed */
    }
    if (pid < 0) {
        perror("fork");
        return 1;
    }

    for (int i = 0; i < LINES && !failed; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "line %d", i);
        if ((rc = shmq_put(q, line, (size_t)n, SHMQ_SEC(10))) < 0) {
            fprintf(stderr, "shmq_put: %s\n", shmq_strerror(rc));
            failed = 1;
        }
    }
    shmq_close(q); /* the child drains, then sees -EPIPE */

    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        failed = 1;
    if (!shmq_empty(q))
        failed = 1;
    shmq_release(q);
    printf("exec'd child %s\n", failed ? "FAILED" : "received every line");
    return failed;
}
