/* SPDX-License-Identifier: MIT */
/*
 * shmq.h - process-safe shared-memory queues for Linux.
 *
 * shmq gives C programs what Python programmers get from multiprocessing:
 * a bounded FIFO queue that any number of processes can put to and get
 * from (Queue), with task accounting (JoinableQueue). Messages are byte
 * strings of 0 to max_message bytes. The queue lives in one shared memory
 * region (memfd or /dev/shm); put and get on a queue that is neither full
 * nor empty are a few atomic operations and a memcpy, with no system call.
 *
 * Conventions, for every call below:
 *   - 0 (or a documented non-negative value) on success, a negative errno
 *     value on failure. errno is never read or changed; nothing is printed;
 *     nothing aborts. shmq_strerror() names every value.
 *   - Argument errors (-EINVAL, -EMSGSIZE) are returned before the queue's
 *     state is looked at.
 *   - timeout_ns is relative, in nanoseconds, on CLOCK_MONOTONIC.
 *     SHMQ_FOREVER waits without limit, SHMQ_NOWAIT does not wait, any
 *     other negative value is -EINVAL. Signals never end a wait early.
 *   - A handle (shmq_t) is thread-safe: any number of threads may put and
 *     get through one handle. A handle inherited over fork() is usable in
 *     the child. No call is async-signal-safe.
 *   - Shared memory is untrusted: a region scribbled on by another process
 *     yields -EPROTO (when attaching) or -EBADMSG (during an operation),
 *     never a crash or an endless loop. What a file can still do to its
 *     mappings is another matter: every page of a region is allocated at
 *     creation (and on attach, if some are missing), and an anonymous
 *     queue's memfd is sealed against shrinking, so neither tmpfs running
 *     out nor its creator truncating it can kill a process with SIGBUS. A
 *     named queue's file cannot be sealed: a process allowed to write it
 *     (which the mode of shmq_create_named decides) can still truncate it
 *     or punch holes in it, and then a process touching the lost pages
 *     dies of SIGBUS (or gets zeroed pages back). Give write access only
 *     to processes you would trust with the queue's memory.
 *   - A process killed at any point of put or get loses at most the one
 *     message it was putting or getting (or the reservations and borrows
 *     it held); the queue keeps working for the others (see
 *     docs/internals.md, "Crash recovery").
 *   - A message is there for gets as soon as its put returns: a process
 *     stopped, preempted or slow in the middle of its own put or get
 *     never holds back the messages others put, and others go on putting
 *     while there is room. What it holds is its own record's room and,
 *     because room comes back in ring order, the room after it, until it
 *     finishes or dies.
 */
#ifndef SHMQ_H
#define SHMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Types and constants                                                  */
/* ------------------------------------------------------------------ */

/** Opaque handle of one queue in this process. */
typedef struct shmq shmq_t;

#define SHMQ_FOREVER  ((int64_t)-1) /**< timeout_ns: wait without limit */
#define SHMQ_NOWAIT   ((int64_t)0)  /**< timeout_ns: do not wait */
#define SHMQ_JOINABLE 0x1u          /**< cfg.flags: task_done()/join() */

/* ------------------------------------------------------------------ */
/* Version and timeout helpers                                          */
/* ------------------------------------------------------------------ */

/** The version of this header. shmq_version() tells the library's. */
#define SHMQ_VERSION_MAJOR 0
#define SHMQ_VERSION_MINOR 2
#define SHMQ_VERSION_PATCH 0
#define SHMQ_VERSION_NUMBER                                                    \
    ((unsigned)SHMQ_VERSION_MAJOR << 16 | (unsigned)SHMQ_VERSION_MINOR << 8 |  \
     (unsigned)SHMQ_VERSION_PATCH)

/** Timeouts in milliseconds and seconds, for timeout_ns arguments. */
#define SHMQ_MS(n)  ((int64_t)(n)*1000000)
#define SHMQ_SEC(n) ((int64_t)(n)*1000000000)

/** Defaults used where a field of struct shmq_config is 0. */
#define SHMQ_DEFAULT_MAXSIZE     65536u
#define SHMQ_DEFAULT_CAPACITY    (4u << 20)
#define SHMQ_DEFAULT_MAX_MESSAGE (64u << 10)

/** Largest maxsize a queue accepts. */
#define SHMQ_MAXSIZE_LIMIT (1u << 22)

/**
 * Sizes of a queue, fixed at creation.
 *
 * maxsize bounds the number of queued messages, capacity the bytes they
 * occupy. A message of len bytes occupies len rounded up to the queue's
 * storage unit (8 bytes unless max_message exceeds 4 MiB), and at least
 * one unit, so n messages of len bytes fit only if n * len <= capacity,
 * and n messages of a multiple of 8 bytes fit exactly when they also fit
 * maxsize. capacity must hold at least one max_message message.
 *
 * ABI: this struct is part of the fixed contract and keeps its size and
 * fields in every 0.x release (it has no reserved fields). A release that
 * needs more settings adds a call taking a new struct, under a new symbol
 * version (lib/libshmq.map), so binaries built against this one keep
 * working. Initialise it with a designated initializer (or zero it): a
 * field left 0 means its default.
 */
struct shmq_config {
    size_t maxsize;     /**< most messages queued at once; 0 = default */
    size_t capacity;    /**< bytes of message storage; 0 = default, or
                             2 * max_message + 8 if that is larger, but
                             when maxsize is given no more than maxsize
                             max_message messages take */
    size_t max_message; /**< largest message put accepts; 0 = default,
                             or capacity (rounded down to 8) if given
                             and smaller */
    unsigned flags;     /**< SHMQ_JOINABLE */
};

/* ------------------------------------------------------------------ */
/* Creating, sharing and releasing                                      */
/* ------------------------------------------------------------------ */

/**
 * Create an anonymous queue (memfd-backed) and a handle to it.
 *
 * cfg may be NULL for all defaults. Share the queue with fork() (children
 * inherit the handle), across exec (shmq_fd() with FD_CLOEXEC cleared, then
 * shmq_from_fd()), or by sending shmq_fd() over a Unix socket.
 *
 * Every page of the region is allocated here: a queue that does not fit
 * in memory fails now with -ENOMEM (or -ENOSPC), never later with SIGBUS.
 *
 * Returns 0 and *q, or -EINVAL (q NULL, unknown flags, maxsize above
 * SHMQ_MAXSIZE_LIMIT, capacity smaller than one max_message message or
 * too large), -ENOMEM, -ENOSPC, -EMFILE/-ENFILE, or another errno of
 * memfd_create, fallocate or mmap. Does not block. Thread-safe.
 */
int shmq_create(shmq_t **q, const struct shmq_config *cfg);

/**
 * Create a named queue under /dev/shm. The region is built under a
 * private name and linked to `name` only once complete (failing with
 * -EEXIST if the name is taken), so shmq_open() in another process sees
 * either no queue or a complete one.
 *
 * name: '/' then 1 to 200 characters, none of them '/', not "/." or "/..".
 * mode: permission bits of the region; 0 means 0600; the umask applies.
 * Bits outside 07777 are -EINVAL, and so is a mode that lets a class of
 * users (owner, group, other) read without letting it write: with read
 * access alone, a process could take the locks that say a participant
 * is alive and keep others from attaching or recovering. Where the umask
 * takes write access from a class, read access goes too (0666 with
 * umask 022 gives 0600).
 *
 * Returns 0 and *q, -EINVAL (bad name, mode or cfg, as shmq_create),
 * -ENAMETOOLONG, -EEXIST (the name is taken), -EACCES, -ENOSPC (/dev/shm
 * has no room for the region), or the errors of shmq_create. On failure
 * no name is left behind. Does not block.
 */
int shmq_create_named(shmq_t **q, const char *name,
                      const struct shmq_config *cfg, mode_t mode);

/**
 * Open a named queue created by shmq_create_named().
 *
 * Returns 0 and *q, -EINVAL (bad name, q NULL), -ENAMETOOLONG, -ENOENT,
 * -EACCES, -EPROTO (the region is not a shmq queue of this layout
 * version, or its header is corrupt), -ENOMEM, -ENOSPC (pages of the
 * region could not be allocated), -EMFILE/-ENFILE, -EUSERS (1024 handles
 * attached already). Does not block.
 */
int shmq_open(shmq_t **q, const char *name);

/**
 * Remove a queue's name. Open handles keep working; the memory is freed
 * when the last handle is released.
 *
 * Returns 0, -EINVAL (bad name), -ENAMETOOLONG, -ENOENT, -EACCES.
 */
int shmq_unlink(const char *name);

/**
 * The descriptor of the queue's region, to inherit across exec or to send
 * over a Unix socket (SCM_RIGHTS). It belongs to the handle: do not close
 * it. It is close-on-exec; clear FD_CLOEXEC on it, or on a dup, to pass
 * it across exec. Returns the fd, or -EINVAL when q is NULL.
 */
int shmq_fd(const shmq_t *q);

/**
 * Attach to the queue whose region fd refers to. The fd is duplicated
 * (close-on-exec); the caller keeps its own.
 *
 * A memfd not yet sealed against shrinking is sealed here (F_SEAL_SHRINK
 * and F_SEAL_GROW), so that its sender cannot truncate it under this
 * process; one whose seals cannot be changed any more (made without
 * MFD_ALLOW_SEALING, or F_SEAL_SEAL without F_SEAL_SHRINK) is refused.
 *
 * Returns 0 and *q, -EINVAL (q NULL), -EBADF (fd negative or not open),
 * -EPROTO (not a shmq region, wrong layout version, wrong size or corrupt
 * header), -EPERM (a memfd that cannot be sealed against shrinking),
 * -EACCES (fd not open for reading and writing), -ENOMEM, -ENOSPC,
 * -EMFILE, -EUSERS (1024 handles attached already). Does not block.
 */
int shmq_from_fd(shmq_t **q, int fd);

/**
 * Release this handle: unmap, close its descriptors. Other handles, in
 * this or other processes, are not affected; the queue is not closed.
 * NULL is fine. No other thread may use the handle during or after it.
 */
void shmq_release(shmq_t *q);

/* ------------------------------------------------------------------ */
/* Putting and getting                                                  */
/* ------------------------------------------------------------------ */

/**
 * Put one message of len bytes (len may be 0; msg may be NULL then).
 *
 * Blocks while the queue is full (by count or by bytes), up to timeout_ns.
 * Returns 0, or
 *   -EINVAL    q NULL, msg NULL with len > 0, bad timeout
 *   -EMSGSIZE  len > shmq_max_message(q)
 *   -EPIPE     the queue is closed (whatever the timeout)
 *   -EAGAIN    full and timeout_ns is SHMQ_NOWAIT
 *   -ETIMEDOUT full until the timeout expired
 *   -EBADMSG   the shared region is corrupt
 *   -EUSERS, -EMFILE, -ENOENT  first call in a forked child, which
 *              takes a participant slot of its own (see shmq_create)
 * Lock-free when the queue is not full: a preempted, stopped or killed
 * process never stops the others from putting (it holds its own
 * record's room and the room after it). The message is there for gets
 * when this returns 0. Thread-safe.
 */
int shmq_put(shmq_t *q, const void *msg, size_t len, int64_t timeout_ns);

/**
 * Get the oldest message into buf (cap bytes); its length goes to *len.
 *
 * Blocks while the queue is empty, up to timeout_ns. Returns 0, or
 *   -EINVAL    q or len NULL, buf NULL with cap > 0, bad timeout
 *   -ENOBUFS   the message is longer than cap: *len is the size needed,
 *              the message stays in the queue
 *   -EPIPE     the queue is closed and drained (also with SHMQ_NOWAIT)
 *   -EAGAIN    no message can be taken now and timeout_ns is SHMQ_NOWAIT
 *              (puts in progress are not messages yet)
 *   -ETIMEDOUT no message could be taken until the timeout expired
 *   -EBADMSG   the shared region is corrupt
 *   -EUSERS, -EMFILE, -ENOENT  as for shmq_put
 * Order: FIFO per producer thread; across producers, a message whose put
 * returned before another put began is taken first. A put stopped in the
 * middle holds back no other message. On failure buf is left as it was.
 * Thread-safe.
 */
int shmq_get(shmq_t *q, void *buf, size_t cap, size_t *len, int64_t timeout_ns);

/** shmq_put(q, msg, len, SHMQ_NOWAIT). */
int shmq_put_nowait(shmq_t *q, const void *msg, size_t len);

/** shmq_get(q, buf, cap, len, SHMQ_NOWAIT). */
int shmq_get_nowait(shmq_t *q, void *buf, size_t cap, size_t *len);

/* ------------------------------------------------------------------ */
/* State                                                                */
/* ------------------------------------------------------------------ */

/**
 * Number of messages a get could take now (0-byte ones included):
 * committed and not yet taken. A put in progress (or an open reservation)
 * is not counted until it commits; a message taken by get_begin is not
 * counted. Exact when no put or get is in progress, a snapshot otherwise;
 * O(messages in flight). 0 for NULL.
 */
size_t shmq_qsize(const shmq_t *q);

/** shmq_qsize(q) == 0. true for NULL. */
bool shmq_empty(const shmq_t *q);

/**
 * true exactly when shmq_put_nowait of a 0-byte message would return
 * -EAGAIN: maxsize records are in the queue, or no storage unit is free.
 * Records in flight (being put, being read, open reservations and
 * borrows) count like queued messages, and room comes back in ring
 * order, so a stalled reader or writer can keep it true. false for NULL.
 * A snapshot, as qsize (a dead process's record is recovered by the next
 * put that waits for room, not by this call).
 */
bool shmq_full(const shmq_t *q);

/** Largest message put accepts (the requested value, perhaps rounded
 * up, never down). 0 for NULL. */
size_t shmq_max_message(const shmq_t *q);

/* ------------------------------------------------------------------ */
/* Closing and task accounting                                          */
/* ------------------------------------------------------------------ */

/**
 * Close the queue, for every handle in every process: blocked puts and
 * gets wake; put returns -EPIPE from now on; get drains what is queued,
 * then returns -EPIPE. Replaces sentinel messages. A second close
 * returns 0. Returns 0 or -EINVAL (q NULL). Does not block.
 */
int shmq_close(shmq_t *q);

/** true once shmq_close() was called on any handle of the queue; false
 * for NULL. */
bool shmq_closed(const shmq_t *q);

/**
 * Mark one message as processed (JoinableQueue.task_done). Returns 0,
 * -EINVAL (q NULL, or more task_done calls than messages put), -ENOTSUP
 * (the queue was not created with SHMQ_JOINABLE). Does not block.
 */
int shmq_task_done(shmq_t *q);

/**
 * Wait until every message put has been marked with shmq_task_done()
 * (JoinableQueue.join). A message that nobody will receive (withdrawn
 * at close, aborted with a writer that died, lost with a reader that
 * died while taking it) counts as done. Returns 0, -EINVAL (q NULL, bad
 * timeout), -ENOTSUP (not joinable; never blocks), -EAGAIN (unfinished
 * tasks and SHMQ_NOWAIT), -ETIMEDOUT, -EBADMSG (the counters say more
 * tasks were done than put: the region was scribbled on), and the
 * first-call errors of a forked child (-EUSERS, -EMFILE, -ENOENT).
 * Thread-safe.
 */
int shmq_join(shmq_t *q, int64_t timeout_ns);

/* ------------------------------------------------------------------ */
/* Tuning                                                               */
/* ------------------------------------------------------------------ */

/** Default spin of the adaptive wait, in nanoseconds. */
#define SHMQ_DEFAULT_SPIN_NS 20000

/**
 * Set how long a blocking put or get through this handle spins (polling
 * the queue, no system call) before it sleeps on a futex. 0 sleeps at
 * once. The default, SHMQ_DEFAULT_SPIN_NS, lets a message that arrives
 * within microseconds be taken without a sleep and a wakeup. Returns 0
 * or -EINVAL (q NULL, spin_ns negative). Thread-safe.
 */
int shmq_set_spin(shmq_t *q, int64_t spin_ns);

/* ------------------------------------------------------------------ */
/* Serialization layer: several buffers, several messages, zero copy    */
/* ------------------------------------------------------------------ */
/*
 * Every call here follows the rules of put and get above: argument
 * errors first (-EINVAL, then -EMSGSIZE), closed wins (-EPIPE), timeouts
 * as for put/get, signals never end a wait early, thread-safe, and a
 * JoinableQueue counts every message put and every message taken.
 */
#include <sys/uio.h>

/**
 * Put one message, the concatenation of iov[0..iovcnt), as shmq_put
 * would. iovcnt 0 is a 0-byte message. Returns 0, or -EINVAL (q NULL,
 * iovcnt negative or above IOV_MAX, iov NULL with iovcnt > 0, an entry
 * with a NULL base and a non-zero length, bad timeout), -EMSGSIZE (the
 * total, overflow included, is above shmq_max_message), and the errors
 * of shmq_put.
 */
int shmq_putv(shmq_t *q, const struct iovec *iov, int iovcnt,
              int64_t timeout_ns);

#define SHMQ_ALL 0x1u /**< put_many flags: all n messages or none */

/**
 * Put msgs[0..n) in order; they reach consumers in that order (other
 * producers' messages may come between them).
 *
 * Without flags it works like write(2) on a pipe: it puts as many as it
 * can, waiting for room up to the deadline, and returns how many it put
 * (>= 1); with none put it returns -EAGAIN (full, SHMQ_NOWAIT),
 * -ETIMEDOUT or -EPIPE (closed). With SHMQ_ALL it puts all n or none:
 * it waits until all n fit; a batch that could never fit (n above
 * maxsize, or more storage units than capacity holds) is -EMSGSIZE at
 * once. If the queue is closed while an SHMQ_ALL batch commits, either
 * the whole batch is withdrawn (-EPIPE) or, when a consumer took its
 * first message already, it stays (n).
 *
 * Cost: on a queue that is not joinable, runs of messages of up to 512
 * bytes go as packed records of up to 64 messages each: one record is
 * claimed and committed once for all of them (plain gets still take
 * them one by one; maxsize and qsize count messages). A packed record
 * uses 16 bytes more per message than separate records. A JoinableQueue
 * gets one record per message.
 *
 * Crash: a process killed inside put_many loses the messages of the
 * record it was writing (at most 64, the run of small messages being
 * written, or one larger message); messages of records it committed
 * before are delivered. An SHMQ_ALL batch of at most 64 small messages
 * is one record, so it is delivered whole or not at all, even when the
 * producer dies; a larger SHMQ_ALL batch killed half-way may deliver
 * part of it.
 *
 * n 0 returns 0, msgs NULL or not. -EINVAL: q NULL, msgs NULL with
 * n > 0 (or n above INT_MAX), an entry with a NULL base and a non-zero
 * length, unknown flag bits, bad timeout. -EMSGSIZE: any message above
 * shmq_max_message (before anything is put). -ENOMEM: SHMQ_ALL with more
 * than 64 messages could not allocate its bookkeeping (once per call).
 */
int shmq_put_many(shmq_t *q, const struct iovec *msgs, size_t n, unsigned flags,
                  int64_t timeout_ns);

/**
 * Wait, as shmq_get does, until a message can be taken, then take in
 * queue order as many as are there, up to max_msgs and as many as fit in
 * buf: each message is copied to the next offset of buf that is a
 * multiple of 8, and msgs[i] points at it with its length. Returns the
 * count (>= 1), or -ENOBUFS (the first message is longer than cap:
 * msgs[0].iov_len is the size needed, nothing taken), -EINVAL (q or msgs
 * NULL, max_msgs 0, buf NULL with cap > 0, bad timeout), -EPIPE (closed
 * and drained), -EAGAIN, -ETIMEDOUT, -EBADMSG, as shmq_get.
 *
 * Crash: a process killed inside get_many loses the messages it had
 * taken (they are in its buffer, no longer in the queue); the others
 * stay for other consumers. Messages are taken one at a time.
 */
int shmq_get_many(shmq_t *q, void *buf, size_t cap, struct iovec *msgs,
                  size_t max_msgs, int64_t timeout_ns);

/** A message in place: a reservation (put_begin) or a borrow
 * (get_begin). */
struct shmq_msg {
    void *data;       /**< put_begin: where to write; get_begin: the message */
    size_t len;       /**< put_begin: bytes reserved; get_begin: its length */
    uint64_t priv[2]; /**< the library's */
};

/**
 * Reserve room for a message of up to max_len bytes, to write in place.
 * On 0, m->data is a writable, contiguous, 8-byte-aligned area of
 * m->len = max_len bytes in the queue's shared memory. Nothing is
 * visible to consumers until shmq_put_commit; consumers meanwhile take
 * the messages others put (the reservation holds back no message, only
 * its own room and, since room comes back in ring order, the room after
 * it). Errors as shmq_put of max_len bytes: -EINVAL (q or m NULL, bad
 * timeout), -EMSGSIZE, -EPIPE, -EAGAIN, -ETIMEDOUT, -EBADMSG, and the
 * first-call errors of a forked child.
 */
int shmq_put_begin(shmq_t *q, size_t max_len, struct shmq_msg *m,
                   int64_t timeout_ns);

/**
 * Deliver the first len (<= m->len) bytes of a reservation. Returns 0
 * (it will be delivered), -EINVAL (len above the reservation, or m is
 * not an open reservation of this handle in this process: nothing
 * changes), or -EPIPE (the queue was closed since put_begin: the message
 * is dropped as if aborted). The room a shorter message does not use
 * comes back at once when no put claimed room after the reservation
 * yet (the usual case); otherwise it comes back with the record, in ring
 * order. Does not block.
 */
int shmq_put_commit(shmq_t *q, struct shmq_msg *m, size_t len);

/** Drop a reservation. 0, or -EINVAL (m is not an open reservation of
 * this handle in this process). Does not block. */
int shmq_put_abort(shmq_t *q, struct shmq_msg *m);

/**
 * Take the next message, as shmq_get does, without copying it: on 0,
 * m->data is the message (read-only, in shared memory, 8-byte aligned)
 * and m->len its length. The message is taken when this returns: no
 * other consumer will see it; its room stays in use until shmq_get_end.
 * [data, data + len) stays mapped until then; what another process
 * writes there is not the library's to prevent. Errors as shmq_get
 * (no -ENOBUFS): -EINVAL (q or m NULL, bad timeout), -EPIPE, -EAGAIN,
 * -ETIMEDOUT, -EBADMSG.
 */
int shmq_get_begin(shmq_t *q, struct shmq_msg *m, int64_t timeout_ns);

/** Give a borrowed message's room back. 0, or -EINVAL (m is not an open
 * borrow of this handle in this process). Does not block. */
int shmq_get_end(shmq_t *q, struct shmq_msg *m);

/*
 * A handle may hold several open reservations and borrows at once, from
 * any of its threads; they count against maxsize and capacity like any
 * queued message, and belong to the process that made them (a forked
 * child's copy of the handle cannot end them: -EINVAL). A process that
 * dies holding some loses only those messages; their room is recovered
 * as for a dead put or get. shmq_release() aborts the handle's open
 * reservations and ends its open borrows.
 */

/* ------------------------------------------------------------------ */
/* Codecs: structured values without hand-packing                       */
/* ------------------------------------------------------------------ */
/*
 * A codec turns a value of the caller's type into the bytes of one
 * message and back. shmq_put_value sizes the value, reserves exactly
 * that room (shmq_put_begin), lets the codec encode in place (no copy,
 * no buffer of the caller's) and commits; shmq_get_value borrows the
 * next message (shmq_get_begin), lets the codec decode it and gives the
 * room back. The codec never sees the queue, only bytes.
 *
 * Writing a codec: the callbacks get the codec's ctx. They must not
 * call the queue, should not block, and return negative errno values.
 * decode reads bytes that another process wrote into shared memory:
 * untrusted, and not private either (a process with write access to the
 * region may change them while decode runs). A decode that must be safe
 * against such a process validates a private copy, as the MessagePack
 * codec below does.
 *
 * MessagePack (built with msgpuck, meson option msgpack): the encoding
 * itself is msgpuck's mp_sizeof_* and mp_encode_* (exact sizes, so the
 * room reserved is the room used, and it encodes in place);
 * shmq_msgpack_check validates untrusted bytes before anything is
 * decoded, without allocating. A build without msgpuck still has every
 * call below: the shmq_msgpack_ ones return -ENOTSUP there (one ABI
 * for every build).
 */

/** A codec: how a value becomes the bytes of a message and back. */
struct shmq_codec {
    const char *name; /**< for messages and debuggers; may be NULL */
    /** Exact (or upper bound on the) encoded size of value, or a
     * negative errno value (put_value returns it). */
    ssize_t (*size)(const void *value, void *ctx);
    /** Encode value into [buf, buf + cap), cap being what size said:
     * bytes written (0..cap), or a negative errno value. */
    ssize_t (*encode)(const void *value, void *buf, size_t cap, void *ctx);
    /** Validate and decode [buf, buf + len) (untrusted) into out: 0, or
     * a negative errno value (-EBADMSG for bad bytes). */
    int (*decode)(const void *buf, size_t len, void *out, void *ctx);
    void *ctx; /**< passed to every callback */
};

/**
 * Put one value, encoded by codec c, as one message: c->size, then
 * shmq_put_begin of that many bytes (waiting for room as shmq_put does),
 * c->encode in place into the reservation, shmq_put_commit of the bytes
 * it wrote. Nothing is copied and nothing is allocated by the library.
 *
 * Returns 0 (delivered), or -EINVAL (q or c NULL, c->size or c->encode
 * NULL, bad timeout; or the codec broke its contract: encode said it
 * wrote more than the room it was given), the codec's own negative
 * value (size or encode failed: when encode fails the reservation is
 * aborted, nothing is delivered and the room comes back), -EMSGSIZE
 * (the size is above shmq_max_message), and the errors of shmq_put_begin
 * and shmq_put_commit: -EPIPE, -EAGAIN, -ETIMEDOUT, -EBADMSG.
 *
 * Blocks as shmq_put does (only while waiting for room, never in the
 * codec's name). Thread-safe as the codec is. A process killed in the
 * middle loses only this value, as a put killed before it returned.
 */
int shmq_put_value(shmq_t *q, const struct shmq_codec *c, const void *value,
                   int64_t timeout_ns);

/**
 * Take the next message and decode it with codec c into out:
 * shmq_get_begin, c->decode of the borrowed bytes, shmq_get_end. The
 * message is taken whatever decode says: a message that does not decode
 * is consumed and reported (decode's value, -EBADMSG for bad bytes), so
 * that one bad message never blocks the queue for every consumer.
 *
 * Returns 0, or -EINVAL (q or c NULL, c->decode NULL, bad timeout),
 * the codec's negative value (the message was consumed), and the
 * errors of shmq_get_begin: -EPIPE (closed and drained), -EAGAIN,
 * -ETIMEDOUT, -EBADMSG. Blocks as shmq_get does. Thread-safe as the
 * codec is. A process killed in the middle loses that one message.
 */
int shmq_get_value(shmq_t *q, const struct shmq_codec *c, void *out,
                   int64_t timeout_ns);

/** Default and largest nesting depth shmq_msgpack_check accepts. */
#define SHMQ_MSGPACK_DEPTH     32
#define SHMQ_MSGPACK_MAX_DEPTH 256

/**
 * Check that [buf, buf + len) is exactly one well-formed MessagePack
 * value, safe to decode with msgpuck's mp_decode_* and mp_next:
 * mp_check's rules (every header, length and element inside the
 * buffer), containers nested at most max_depth deep (0 means
 * SHMQ_MSGPACK_DEPTH; a scalar is depth 0, [1] depth 1), and no array or
 * map count above the bytes left after its header (each element takes a
 * byte at least), so a claimed count of 2^32-1 followed by 5 bytes fails
 * at once. Nothing after the value. Reads each byte about once; never
 * allocates; the stack it uses is bounded.
 *
 * Returns 0 (valid), -EBADMSG (not valid), -EINVAL (buf NULL with len
 * above 0, max_depth above SHMQ_MSGPACK_MAX_DEPTH), -ENOTSUP (built
 * without msgpuck). Does not block; thread- and async-signal-safe
 * (it only reads buf).
 */
int shmq_msgpack_check(const void *buf, size_t len, size_t max_depth);

/**
 * Fill *c with the MessagePack codec for shmq_put_value and
 * shmq_get_value. Its values are encoded MessagePack buffers:
 *
 *   put: value is a const struct iovec * on one encoded value (built
 *        with mp_encode_*); size checks it (shmq_msgpack_check with
 *        max_depth) and -EBADMSG keeps bad bytes off the queue; encode
 *        copies it.
 *   get: out is a struct iovec * on the caller's buffer, iov_len its
 *        capacity on entry and the message's length on return. decode
 *        copies the message there first, then checks the copy: once
 *        get_value returns 0 the bytes are private and valid, and
 *        mp_decode_* can read them without bounds worries. -EMSGSIZE
 *        (the message is longer than iov_len; it is consumed: give
 *        shmq_max_message(q) bytes), -EBADMSG (not valid MessagePack;
 *        consumed), -EINVAL (out NULL, or iov_base NULL with room).
 *
 * To encode in place rather than copy, reserve with shmq_put_begin the
 * size mp_sizeof_* gives and mp_encode_* into m.data (see
 * docs/examples/codec_dict.c), or write a struct shmq_codec whose size
 * and encode are mp_sizeof_* and mp_encode_* of your own type.
 *
 * Returns 0, -EINVAL (c NULL, max_depth above SHMQ_MSGPACK_MAX_DEPTH;
 * 0 means SHMQ_MSGPACK_DEPTH), -ENOTSUP (built without msgpuck: *c is
 * left alone). Does not block; thread-safe. The codec holds no state:
 * use it from any thread and any number of queues.
 */
int shmq_msgpack_codec(struct shmq_codec *c, size_t max_depth);

/* ------------------------------------------------------------------ */
/* Event-loop integration (io_uring, poll/epoll)                        */
/* ------------------------------------------------------------------ */
/*
 * "A message is there" (readable) and "there is room" (writable) as
 * completions in the caller's io_uring, or as a level-triggered fd for
 * poll/epoll (libuv, libevent). Works for any holder of a handle,
 * including unrelated processes that opened the queue by name. The loop:
 * on a completion or a readable fd, drain with the nowait calls until
 * -EAGAIN, then re-arm (shmq_uring_arm) or acknowledge
 * (shmq_pollfd_ack). Producers pay no system call while nothing is
 * armed. See docs/guide.md, "Event loops".
 *
 * Paths (shmq_evloop_path):
 *   SHMQ_EVLOOP_URING   IORING_OP_FUTEX_WAIT on the queue's own futex
 *                       word: Linux 6.7+, any liburing >= 2.0 (the SQE is
 *                       filled by hand; liburing 2.6 has a helper).
 *   SHMQ_EVLOOP_THREAD  everywhere else (older kernel, opcode missing,
 *                       io_uring disabled by sysctl or seccomp):
 *                       shmq_uring_arm returns -ENOSYS; use a pollfd
 *                       (a helper thread turns the futex into an eventfd
 *                       write), with poll/epoll or io_uring_prep_poll_add.
 * The pollfd works on every path (Linux 2.6.27+, eventfd).
 */

struct io_uring;

#define SHMQ_EV_READABLE 0x1u /**< a get would find a message */
#define SHMQ_EV_WRITABLE 0x2u /**< a put would find room */
#define SHMQ_EV_CLOSED   0x4u /**< result only: the queue was closed */

#define SHMQ_EVLOOP_AUTO   0 /**< shmq_evloop_set_path: probe */
#define SHMQ_EVLOOP_URING  1 /**< io_uring futex waits */
#define SHMQ_EVLOOP_THREAD 2 /**< helper thread + eventfd only */

/**
 * The path shmq_uring_arm uses in this process: SHMQ_EVLOOP_URING or
 * SHMQ_EVLOOP_THREAD. The first call probes the kernel (one short-lived
 * io_uring) unless the environment variable SHMQ_EVLOOP is "uring" or
 * "thread" (then that path is used; "uring" where it is unavailable
 * means SHMQ_EVLOOP_THREAD). Thread-safe; does not block.
 */
int shmq_evloop_path(void);

/**
 * Force a path for this process (tests, or to keep io_uring out):
 * SHMQ_EVLOOP_AUTO probes again. Returns 0, -EINVAL (unknown path) or
 * -ENOSYS (SHMQ_EVLOOP_URING where the kernel lacks it). Arms made
 * before the change complete as they were made. Thread-safe.
 */
int shmq_evloop_set_path(int path);

/**
 * Arm a wait for one event of q in the caller's ring: one SQE
 * (IORING_OP_FUTEX_WAIT, a shared futex: never FUTEX2_PRIVATE), or two
 * when timeout_ns >= 0 (plus an IORING_OP_LINK_TIMEOUT counting from
 * submission, rounded up by at most 1/16). Both carry user_data; keep it
 * unique among armed waits.
 * Nothing is submitted: the caller calls io_uring_submit(). An arm moves
 * the queue's event word (so that no wakeup can slip past it): a wait
 * for the same event of the same queue armed before it and not yet
 * submitted completes at once (shmq_uring_result 0: arm again), so
 * submit between such arms.
 *
 * Returns:
 *   0            armed; decode its completion(s) with shmq_uring_result.
 *   > 0          the event is true already (SHMQ_EV_* bits, with
 *                SHMQ_EV_CLOSED once the queue is closed): no SQE used;
 *                drain, then arm again.
 *   -EINVAL      q or ring NULL, ring not initialised (zeroed), events
 *                not exactly SHMQ_EV_READABLE or SHMQ_EV_WRITABLE,
 *                timeout_ns negative other than SHMQ_FOREVER.
 *   -EBUSY       not enough free SQEs (submit, then arm again); a ring of
 *                one entry takes untimed arms only.
 *   -ENOSYS      path is SHMQ_EVLOOP_THREAD: use shmq_pollfd_open.
 * Does not block. Thread-safe as far as the ring is: liburing rings are
 * used from one thread at a time. Linux 6.7+; liburing 2.0+.
 */
int shmq_uring_arm(shmq_t *q, struct io_uring *ring, unsigned events,
                   uint64_t user_data, int64_t timeout_ns);

/**
 * Decode a completion of shmq_uring_arm: events is what was armed, res
 * the CQE's res. Looks at the queue again, so a completion is never
 * taken on trust. Returns:
 *   > 0          SHMQ_EV_* bits true now: drain with the nowait calls,
 *                then arm again. SHMQ_EV_CLOSED: the queue was closed
 *                (gets drain what is left, then -EPIPE).
 *   0            woken, nothing true now (another consumer was faster,
 *                or a spurious wakeup): arm again.
 *   -ETIMEDOUT   the linked timeout expired first: arm again or give up.
 *   -ECANCELED   not a verdict: the partner CQE of a timed arm, or the
 *                wait was cancelled (io_uring_prep_cancel64 on
 *                user_data, ring teardown). Do not arm again for it.
 *   -EINVAL      q NULL or events not one SHMQ_EV_* bit.
 *   other < 0    the kernel refused the SQE (res as is).
 * Every timed arm gives exactly one verdict (> 0, 0, -ETIMEDOUT), except
 * in the rare race where the timer fires as the futex completes: then
 * both CQEs carry one. A loop that keeps an "armed" flag per user_data
 * (set by the arm, cleared by the first verdict, later verdicts ignored
 * while it is clear) never arms twice. Does not block; thread-safe.
 */
int shmq_uring_result(shmq_t *q, unsigned events, int res);

/** Opaque pollable fd of one event of one queue. */
typedef struct shmq_pollfd shmq_pollfd_t;

/**
 * A level-triggered fd for poll/epoll: readable (POLLIN) while the event
 * (SHMQ_EV_READABLE: a message is queued; SHMQ_EV_WRITABLE: there is
 * room; or the queue is closed) holds, until shmq_pollfd_ack finds it
 * false. Never an edge to miss: if the caller takes only part of the
 * queue, the fd stays readable. A helper thread of this process waits on
 * the queue's futex like a blocked get would and writes an eventfd; like
 * a blocked get, it first polls for the handle's spin time (shmq_set_spin:
 * 0 makes it sleep at once, costing one more wakeup in series).
 * The pollfd must be closed before q is released. A forked child has
 * no helper thread: there, shmq_pollfd_close only frees; open a pollfd of
 * its own. q must not be used after shmq_release (no call can tell a
 * released handle from a live one). Returns 0,
 * -EINVAL (p or q NULL, events not one SHMQ_EV_* bit), -EMFILE/-ENFILE,
 * -ENOMEM, -EAGAIN (no thread). Thread-safe; does not block.
 */
int shmq_pollfd_open(shmq_pollfd_t **p, shmq_t *q, unsigned events);

/** The fd to watch for POLLIN (close-on-exec; do not read it or close
 * it yourself), or -EINVAL for p NULL. */
int shmq_pollfd_fd(const shmq_pollfd_t *p);

/**
 * Call after draining (or whenever the fd was readable): the fd stays
 * readable if the event still holds, otherwise the helper watches the
 * queue again. Returns the SHMQ_EV_* bits true now (the fd stays
 * readable), 0 (fd cleared, watching), or -EINVAL (p NULL). Does not
 * block. One thread at a time per pollfd.
 */
int shmq_pollfd_ack(shmq_pollfd_t *p);

/** Stop the helper thread, close the fd, free p. NULL is fine. */
void shmq_pollfd_close(shmq_pollfd_t *p);

/* ------------------------------------------------------------------ */
/* Process pool                                                         */
/* ------------------------------------------------------------------ */

/*
 * A pool of forked worker processes running task functions, as Python's
 * multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor, on
 * shmq queues. A task is a function of the program (workers are forked,
 * so any function pointer of the program, not of a library dlopen()ed
 * after shmq_pool_create, is valid in them) with a byte-string argument;
 * its result is a byte string of up to max_message bytes.
 *
 * Workers are forked by a single-threaded fork server that
 * shmq_pool_create forks once: respawning and recycling never fork the
 * caller's (possibly threaded) process. A worker that dies while running
 * a task (any signal, exit, abort, segfault, OOM kill) completes that
 * task at once with status -EOWNERDEAD and is replaced; no other task is
 * lost (see docs/guide.md, "From multiprocessing.Pool to shmq_pool").
 * Deaths are watched with pidfds in the fork server: the pool installs
 * no signal handler, and the host's SIGCHLD disposition (SIG_IGN, its
 * own reaping) does not matter. Workers and the fork server exit within
 * a second when the process that created the pool dies.
 *
 * A pool handle is used from one thread at a time, and only in the
 * process that created it (not in a forked child). Timeouts follow the
 * queue's rules: relative ns, SHMQ_FOREVER, SHMQ_NOWAIT, other negatives
 * -EINVAL, signals never end a wait early. No call is async-signal-safe.
 */
#include <sys/uio.h>

/** Opaque handle of a process pool. */
typedef struct shmq_pool shmq_pool_t;

/**
 * A task. arg/arglen: the argument as submitted (arg is 8-byte aligned
 * and stays valid during the call). Write the result, up to outcap
 * (= the pool's max_message) bytes, to out and its length to *outlen
 * (0 when left alone); an *outlen above outcap makes the task's status
 * -EMSGSIZE (the result is dropped, never truncated). ctx: cfg.ctx as
 * the initializer left it in this worker. The return value is the
 * task's status.
 */
typedef int (*shmq_task_fn)(const void *arg, size_t arglen, void *out,
                            size_t outcap, size_t *outlen, void *ctx);

/** Largest max_message a pool accepts (64 MiB). */
#define SHMQ_POOL_MAX_MESSAGE (64u << 20)
/** Default max_message of a pool (64 KiB). */
#define SHMQ_POOL_DEFAULT_MAX_MESSAGE (64u << 10)
/** Most workers a pool has. */
#define SHMQ_POOL_MAX_WORKERS 256u
/** Most tickets given out and not yet collected (submit waits). */
#define SHMQ_POOL_MAX_PENDING 8192u

struct shmq_pool_config {
    /** 0 = online CPUs */
    unsigned workers;
    /** largest argument or result; 0 = default */
    size_t max_message;
    /** 0 = unlimited; a map batch counts as one */
    unsigned max_tasks_per_child;
    /** run once in each worker; non-zero breaks the pool */
    int (*initializer)(void *ctx);
    /** given to the initializer and to every task */
    void *ctx;
};

/**
 * Create a pool and start its workers. They start asynchronously: an
 * initializer that fails shows as a broken pool (see shmq_pool_submit).
 * cfg may be NULL for all defaults.
 *
 * Returns 0 and *p, or -EINVAL (p NULL, workers above
 * SHMQ_POOL_MAX_WORKERS, max_message above SHMQ_POOL_MAX_MESSAGE),
 * -ENOMEM, -EMFILE, -EAGAIN (fork), or another errno of memfd_create,
 * mmap, socketpair, fork or pidfd_open. Does not block. Thread-safe.
 */
int shmq_pool_create(shmq_pool_t **p, const struct shmq_pool_config *cfg);

/**
 * Submit fn(arg) and get its ticket (apply_async, executor.submit). The
 * argument is copied; len may be 0 (arg may be NULL then).
 *
 * Blocks while the pool is saturated (every worker's queue is full, or
 * SHMQ_POOL_MAX_PENDING tickets are uncollected: then only collecting
 * results makes room), up to timeout_ns; while it waits it takes results
 * in, so workers never stall on a full result queue. Returns 0 and
 * *ticket (never 0), or
 *   -EINVAL    p, fn or ticket NULL, arg NULL with len > 0, bad timeout
 *   -EMSGSIZE  len > max_message
 *   -EPIPE     after shmq_pool_close or shmq_pool_terminate
 *   -ECANCELED the pool is broken (failed initializer, crash loop)
 *   -EAGAIN    saturated and SHMQ_NOWAIT
 *   -ETIMEDOUT saturated until the timeout
 */
int shmq_pool_submit(shmq_pool_t *p, shmq_task_fn fn, const void *arg,
                     size_t len, uint64_t *ticket, int64_t timeout_ns);

/**
 * shmq_pool_submit with a time limit: a task still running limit_ns
 * after it started has its worker killed (and replaced) and completes
 * with status -ETIMEDOUT. The limit is enforced by the fork server
 * within about 5 ms, whether or not the owner is in a pool call.
 * Returns as shmq_pool_submit; -EINVAL also for limit_ns <= 0.
 */
int shmq_pool_submit_timed(shmq_pool_t *p, shmq_task_fn fn, const void *arg,
                           size_t len, uint64_t *ticket, int64_t timeout_ns,
                           int64_t limit_ns);

/**
 * Wait for the task of ticket and collect its result (AsyncResult.get).
 *
 * Returns 0 when the task finished, whatever it returned: *status is
 * its return value, -EOWNERDEAD (its worker died running it),
 * -ETIMEDOUT (its time limit), -ECANCELED (cancelled, or never started
 * on a broken or terminated pool), -EMSGSIZE (its result was longer than
 * max_message); the result is in buf and its length in *len, and the
 * ticket is collected. Otherwise
 *   -EINVAL    p, len or status NULL, buf NULL with cap > 0, bad timeout
 *   -ENOENT    ticket never issued, or already collected
 *   -ENOBUFS   the result is longer than cap: *len is set, the result
 *              stays for another call
 *   -EAGAIN    not finished and SHMQ_NOWAIT
 *   -ETIMEDOUT not finished until the timeout
 */
int shmq_pool_wait(shmq_pool_t *p, uint64_t ticket, void *buf, size_t cap,
                   size_t *len, int *status, int64_t timeout_ns);

/**
 * Collect the next finished task, in completion order (imap_unordered,
 * as_completed): its ticket in *ticket, the rest as shmq_pool_wait.
 * -ENOENT when no submitted task is left uncollected; -ENOBUFS sets
 * *ticket and *len and leaves the result first in line.
 */
int shmq_pool_next(shmq_pool_t *p, uint64_t *ticket, void *buf, size_t cap,
                   size_t *len, int *status, int64_t timeout_ns);

/**
 * Run fn on args[0..n) and wait for all (Pool.map). Items are sent in
 * batches (several per message, Pool's chunking) with a bounded number
 * of batches in flight: memory does not grow with n. results[i] is the
 * caller's buffer for item i: on return iov_len is the result's length,
 * statuses[i] its status as for shmq_pool_wait, or -ENOBUFS when the
 * result was longer than results[i].iov_len (iov_len is then the size
 * needed; the result is dropped). Input order is kept.
 *
 * A map item whose worker died after running it but before its result
 * was sent is run again (unlike submit, which runs a task at most
 * once); only the item being run at the death gets -EOWNERDEAD.
 *
 * Returns 0 (every status is set), or -EINVAL (p or fn NULL; args,
 * results or statuses NULL with n > 0; an iov_base NULL with a non-zero
 * iov_len; bad timeout), -EMSGSIZE (an argument above max_message),
 * -EPIPE (closed), -ECANCELED (the pool is, or broke during the call,
 * broken: the statuses of items not run are -ECANCELED), -EAGAIN /
 * -ETIMEDOUT (statuses of unfinished items are unspecified; their
 * results are discarded when they come).
 */
int shmq_pool_map(shmq_pool_t *p, shmq_task_fn fn, const struct iovec *args,
                  size_t n, struct iovec *results, int *statuses,
                  int64_t timeout_ns);

/**
 * Cancel a submitted task whose result was not collected. Not started:
 * it will not run (the last 64 cancels are remembered; an older one may
 * still run, and its result is dropped). Running: its worker is killed
 * and replaced. Either
 * way the ticket completes at once with status -ECANCELED (collect it
 * with wait or next). Returns 0, -EINVAL (p NULL), -ENOENT (ticket
 * unknown or collected), -EALREADY (it has finished: its result is
 * kept). Does not block.
 */
int shmq_pool_cancel(shmq_pool_t *p, uint64_t ticket);

/**
 * Stop taking tasks (Pool.close): workers finish what was submitted,
 * then exit. Returns 0 (also when called again, or on a broken pool) or
 * -EINVAL (p NULL). Does not block.
 */
int shmq_pool_close(shmq_pool_t *p);

/**
 * Wait until every submitted task finished and every worker exited
 * (Pool.join). Results stay until collected. Returns 0, -EINVAL (p
 * NULL, bad timeout, or the pool was not closed), -EAGAIN (SHMQ_NOWAIT)
 * or -ETIMEDOUT. 0 at once on a broken or terminated pool.
 */
int shmq_pool_join(shmq_pool_t *p, int64_t timeout_ns);

/**
 * Kill every worker now (Pool.terminate), even with thousands of tasks
 * queued or tasks that never return. Results already finished stay
 * collectable; every other task completes with -ECANCELED. Waits for
 * the fork server to exit (milliseconds). NULL does nothing. In a
 * forked child of the owner (an atexit handler, say) it stops nothing:
 * the pool is the owner's.
 */
void shmq_pool_terminate(shmq_pool_t *p);

/**
 * Terminate if needed, then free everything: no process, zombie,
 * descriptor, mapping or name is left. Uncollected results are lost.
 * NULL does nothing. p is invalid afterwards. In a forked child of the
 * owner it frees only the child's copy (descriptors, memory); the
 * owner's pool goes on.
 */
void shmq_pool_destroy(shmq_pool_t *p);

/** How a worker died; see shmq_pool_death. */
struct shmq_pool_death {
    pid_t pid;       /**< the worker */
    unsigned worker; /**< its slot, 0 .. workers - 1 */
    int wstatus;     /**< as waitpid(2): WIFSIGNALED(), WTERMSIG(),
                          WIFEXITED(), WEXITSTATUS() */
    int reason;      /**< 0 (died by itself or killed from outside),
                          -ETIMEDOUT (time limit), -ECANCELED (cancel) */
    uint64_t ticket; /**< the submitted task it was running, 0 if none
                          (idle, or a map batch) */
};

/**
 * How the worker that ran a ticket died. Ticket 0 asks for the latest
 * death seen. The pool remembers its last 64 deaths; it sees a death when one
 * of its calls runs after it. Returns 0 and *d, -EINVAL (p or d NULL), -ENOENT
 * (no such death remembered). Does not block.
 */
int shmq_pool_death(shmq_pool_t *p, uint64_t ticket, struct shmq_pool_death *d);

/**
 * The pid of the worker in a slot now. worker is 0 .. workers - 1; use
 * it to watch the worker, say. Returns the pid (> 0), -EINVAL (p NULL, worker
 * out of range), -ESRCH (the slot has no worker: being replaced, or the pool
 * stopped). The pid may belong to a worker that just died. Does not block.
 */
int shmq_pool_worker_pid(const shmq_pool_t *p, unsigned worker);

/** Number of workers of the pool (cfg.workers, or the CPUs for 0);
 * 0 for NULL. */
unsigned shmq_pool_workers(const shmq_pool_t *p);

/* ------------------------------------------------------------------ */
/* Errors and version                                                   */
/* ------------------------------------------------------------------ */

/** A static string naming err: a negative errno as the calls return it,
 * the same errno positive (EPIPE as -EPIPE), or 0. Never NULL. */
const char *shmq_strerror(int err);

/** The version of the library running: SHMQ_VERSION_NUMBER as the
 * library was built ((major << 16) | (minor << 8) | patch). Compare it
 * with the header's SHMQ_VERSION_NUMBER to learn whether the library is
 * older than what the program was compiled against. Thread-safe. */
unsigned shmq_version(void);

/** The same as a static string, "major.minor.patch". Never NULL. */
const char *shmq_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* SHMQ_H */
