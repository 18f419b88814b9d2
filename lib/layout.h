/* SPDX-License-Identifier: MIT */
/*
 * layout.h - the shared memory region of one queue, declared once.
 *
 * Every process maps the same region:
 *
 *   +------------------------+  0
 *   | struct shmq_header     |  identity (written once), then one cache
 *   |                        |  line per hot word: tail, head, release,
 *   |                        |  the two wait events, the control line
 *   +------------------------+  SHMQ_PARTICIPANTS_OFFSET
 *   | participant[1024]      |  one per attached handle (liveness)
 *   +------------------------+  hdr.desc_offset
 *   | desc[desc_count]       |  one descriptor per message sequence
 *   +------------------------+  hdr.ring_offset (page aligned)
 *   | ring[ring_bytes]       |  message bytes, mapped twice in a row so
 *   +------------------------+  that a record crossing the end is
 *   | (mirror of the ring)   |  contiguous in the address space
 *   +------------------------+
 *
 * Offsets, never pointers. Every value here may have been scribbled on by
 * another process: readers bound-check before use (docs/internals.md).
 */
#ifndef SHMQ_LAYOUT_H
#define SHMQ_LAYOUT_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHMQ_MAGIC          0x31514d48534dull /* "SHMQ1" little-endian, in a u64 */
#define SHMQ_LAYOUT_VERSION 3u
#define SHMQ_CACHELINE      64
#define SHMQ_PARTICIPANTS   1024u /* owner field is 10 bits */

/*
 * A position word packs a message sequence number (high 32 bits) and a
 * ring position in storage units (low 32 bits). Both wrap; differences
 * are taken modulo 2^32. tail, head and release are position words.
 */
static inline uint64_t pos_pack(uint32_t seq, uint32_t pos)
{
    return (uint64_t)seq << 32 | pos;
}
static inline uint32_t pos_seq(uint64_t w)
{
    return (uint32_t)(w >> 32);
}
static inline uint32_t pos_units(uint64_t w)
{
    return (uint32_t)w;
}

/*
 * A descriptor word: the state of one record, which starts at sequence
 * number seq and covers `span` sequence numbers, one per message.
 *   bits  0..31  seq     the sequence number this state is for
 *   bits 32..34  state   enum desc_state
 *   bits 35..44  owner   participant slot of the writer or reader
 *   bits 45..63  size    the record's size:
 *                          bit 18 clear: units (>= 1), one message
 *                          bit 18 set:   a packed record (lib/packed.c):
 *                                        span - 1 in bits 12..17, units
 *                                        in bits 0..11
 * Claiming a record is one CAS on this word, so who owns a record and
 * how long it is are never unknown, whatever instant a process dies at.
 * The descriptors of the other sequence numbers a packed record covers
 * are not used: walks step from a record to seq + span.
 */
enum desc_state {
    DESC_FREE = 0,      /* consumed (or never used): reusable by seq+N */
    DESC_WRITING = 1,   /* claimed by owner, bytes being written */
    DESC_COMMITTED = 2, /* readable */
    DESC_READING = 3,   /* claimed by owner, bytes being read */
    DESC_ABORTED = 4,   /* withdrawn, or its writer died: never delivered */
    DESC_SKIPPED = 5,   /* being written, and consumers went past it: its
                           commit makes it DESC_LATE and announces it */
    DESC_LATE = 6,      /* committed after consumers went past it: found
                           through the header's late word, not the head */
    DESC_LOCKED = 7,    /* an unclaimed descriptor (its seq is still an
                           earlier lap's) that owner keeps from being
                           claimed while the record before it shrinks */
};

#define DESC_OWNER_BITS   10
#define DESC_SIZE_BITS    19
#define DESC_PACKED       (1u << 18)
#define DESC_MAX_UNITS    (DESC_PACKED - 1)
#define DESC_PACKED_UNITS ((1u << 12) - 1)
#define DESC_PACKED_SPAN  64u

static inline uint64_t desc_pack(uint32_t seq, unsigned state, unsigned owner,
                                 uint32_t size)
{
    return (uint64_t)seq | (uint64_t)(state & 7u) << 32 |
           (uint64_t)(owner & (SHMQ_PARTICIPANTS - 1)) << 35 |
           (uint64_t)(size & ((1u << DESC_SIZE_BITS) - 1)) << 45;
}
/* The size field of a packed record of span messages in units. */
static inline uint32_t desc_packed_size(uint32_t span, uint32_t units)
{
    return DESC_PACKED | (span - 1) << 12 | units;
}
static inline uint32_t desc_seq(uint64_t w)
{
    return (uint32_t)w;
}
static inline unsigned desc_state(uint64_t w)
{
    return (unsigned)(w >> 32) & 7u;
}
static inline unsigned desc_owner(uint64_t w)
{
    return (unsigned)(w >> 35) & (SHMQ_PARTICIPANTS - 1);
}
/* The size field as it is (to rebuild a word in another state). */
static inline uint32_t desc_size(uint64_t w)
{
    return (uint32_t)(w >> 45);
}
static inline bool desc_packed(uint64_t w)
{
    return desc_size(w) & DESC_PACKED;
}
static inline uint32_t desc_units(uint64_t w)
{
    uint32_t f = desc_size(w);
    return f & DESC_PACKED ? f & DESC_PACKED_UNITS : f;
}
static inline uint32_t desc_span(uint64_t w)
{
    uint32_t f = desc_size(w);
    return f & DESC_PACKED ? ((f >> 12) & (DESC_PACKED_SPAN - 1)) + 1 : 1;
}
/* The same record in another state (and owner). */
static inline uint64_t desc_with(uint64_t w, unsigned state, unsigned owner)
{
    return desc_pack(desc_seq(w), state, owner, desc_size(w));
}

/* One message sequence number's descriptor.
 * word: CAS by producers (claim, commit), consumers (take, free) and
 *       recoverers (abort a dead writer, free a dead reader's record).
 * len:  payload bytes; written by the owning producer before commit,
 *       read by consumers after they saw COMMITTED. */
struct shmq_desc {
    uint64_t word; /* atomic */
    uint64_t len;
};
_Static_assert(sizeof(struct shmq_desc) == 16, "desc is 16 bytes");

/* One attached handle. Whether it is alive is not stored here: it is the
 * OFD lock its process holds on byte SHMQ_LOCK_BASE + slot of the region
 * (lib/liveness.c). state tells a newcomer whether the slot was left
 * without a clean release, so that it must first recover the slot's
 * records. pid is for diagnostics only. */
enum participant_state { PART_FREE = 0, PART_ACTIVE = 1 };
struct shmq_participant {
    uint32_t state; /* atomic: written by the slot's holder */
    uint32_t pid;
};
#define SHMQ_LOCK_BASE ((int64_t)1 << 40)

struct shmq_line {
    alignas(SHMQ_CACHELINE) uint64_t word; /* atomic */
};

/* Written once by the creator before the region is shared; read once by
 * each attacher, which validates a private copy and never reads it again. */
struct shmq_identity {
    uint64_t magic;
    uint32_t version;
    uint32_t flags;        /* SHMQ_JOINABLE */
    uint32_t maxsize;      /* most messages queued */
    uint32_t desc_count;   /* power of two >= maxsize */
    uint32_t unit_shift;   /* storage unit = 1 << unit_shift bytes */
    uint32_t cap_units;    /* capacity in units */
    uint32_t ring_units;   /* power of two >= cap_units */
    uint32_t participants; /* SHMQ_PARTICIPANTS */
    uint64_t max_message;  /* bytes */
    uint64_t desc_offset;
    uint64_t ring_offset;
    uint64_t region_size; /* the file's size (the mirror is not in it) */
};

struct shmq_header {
    struct shmq_identity id;
    /* producers: a hint, at or before the first unclaimed record,
     * published every few claims (ring.c, "Lazy cursors") */
    struct shmq_line tail;
    /* consumers: a hint, at or before the first record not yet taken */
    struct shmq_line head;
    /* consumers (and recoverers): CAS past freed records, in ring order;
     * producers read it to know how much room and how many sequence
     * numbers are free. Exact: never past a record still in use. */
    struct shmq_line release;
    /* futex event counts (lib/wait.c): low 32 bits are the futex word */
    struct shmq_line not_empty; /* producers wake, consumers wait */
    struct shmq_line not_full;  /* consumers wake, producers wait */
    struct shmq_line all_done;  /* task_done wakes, join waits */
    /* records committed after consumers went past them: a hint,
     * gen:31 | has:1 | oldest seq:32 (ring.c, "Late records") */
    struct shmq_line late;
    /* control: closed flag; joinable accounting (seq arithmetic) */
    struct shmq_line closed;
    struct shmq_line tasks_done;    /* task_done() calls */
    struct shmq_line tasks_aborted; /* records aborted (never delivered) */
};

_Static_assert(offsetof(struct shmq_header, tail) % SHMQ_CACHELINE == 0,
               "hot words start cache lines");
_Static_assert(offsetof(struct shmq_header, head) -
                       offsetof(struct shmq_header, tail) ==
                   SHMQ_CACHELINE,
               "tail and head on separate lines");
_Static_assert(sizeof(struct shmq_header) % SHMQ_CACHELINE == 0,
               "header is whole cache lines");

#define SHMQ_PARTICIPANTS_OFFSET sizeof(struct shmq_header)

#endif /* SHMQ_LAYOUT_H */
