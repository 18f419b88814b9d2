/* SPDX-License-Identifier: MIT */
/* error.c - names of the errors the library returns. */
#include <errno.h>

#include "internal.h"
#include "shmq.h"

SHMQ_PUBLIC const char *shmq_strerror(int err)
{
    /* errno values are positive; the calls return them negated: take
     * both (INT_MIN has no positive twin and stays unknown). */
    if (err > 0)
        err = -err;
    switch (err) {
    case 0:
        return "success";
    case -EINVAL:
        return "invalid argument";
    case -EMSGSIZE:
        return "message longer than the queue's max_message";
    case -EPIPE:
        return "queue closed";
    case -EAGAIN:
        return "would block (queue full, queue empty or tasks unfinished)";
    case -ETIMEDOUT:
        return "timed out";
    case -ENOBUFS:
        return "buffer too small for the message";
    case -EBADMSG:
        return "queue memory corrupt, or message bytes not valid";
    case -EPROTO:
        return "not a shmq region of this layout version, or corrupt header";
    case -ENOTSUP:
        return "not supported (queue not joinable, or built without msgpuck)";
    case -EEXIST:
        return "a queue of that name exists";
    case -ENOENT:
        return "no such queue";
    case -EACCES:
        return "permission denied";
    case -ENAMETOOLONG:
        return "name too long";
    case -ENOMEM:
        return "out of memory";
    case -EMFILE:
        return "too many open files in this process";
    case -ENFILE:
        return "too many open files in the system";
    case -EBADF:
        return "bad file descriptor";
    case -EUSERS:
        return "too many handles attached to the queue";
    case -ENOSPC:
        return "no space for the shared region";
    case -ENODEV:
        return "descriptor cannot be mapped";
    case -ECANCELED:
        return "cancelled";
    case -EOWNERDEAD:
        return "the owner died";
    case -ENOSYS:
        return "not supported by this kernel";
    case -EPERM:
        return "operation not permitted";
    case -EBUSY:
        return "no free submission queue entry";
    case -EALREADY:
        return "the task has finished already";
    case -ESRCH:
        return "no such worker";
    default:
        return "unknown error";
    }
}
