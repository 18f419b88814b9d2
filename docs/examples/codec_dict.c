/* SPDX-License-Identifier: MIT */
/*
 * codec_dict.c - a nested dict through a queue as MessagePack.
 *
 * A forked producer encodes, for each n,
 *     {"id": n, "name": "sensor-<n>", "tags": ["a", "b", ...], "blob": bin}
 * with msgpuck straight into the queue: mp_sizeof_* gives the exact
 * size, shmq_put_begin reserves exactly that, mp_encode_* writes into
 * the reservation, shmq_put_commit delivers it. No buffer, no copy.
 *
 * The consumer takes each message with shmq_get_value and the
 * MessagePack codec, which copies it out of shared memory and checks
 * the copy (shmq_msgpack_check: well formed, depth, counts) before
 * anything is decoded; then mp_decode_* reads it, keys in any order.
 *
 * Build: cc codec_dict.c -lshmq -lmsgpuck. Exits 0 only if every dict
 * arrived intact and in order.
 */
#include <errno.h>
#include <msgpuck.h>
#include <shmq.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define DICTS    20000u
#define MAX_TAGS 4u
#define BLOB     32u

struct dict {
    uint32_t id;
    char name[32];
    uint32_t ntags;
    const char *tags[MAX_TAGS];
    unsigned char blob[BLOB];
};

static const char *const tag_names[] = {"hot", "cold", "wet", "dry"};

static void make_dict(struct dict *d, uint32_t n)
{
    d->id = n;
    snprintf(d->name, sizeof d->name, "sensor-%u", n);
    d->ntags = n % (MAX_TAGS + 1);
    for (uint32_t i = 0; i < d->ntags; i++)
        d->tags[i] = tag_names[(n + i) % MAX_TAGS];
    for (uint32_t i = 0; i < BLOB; i++)
        d->blob[i] = (unsigned char)(n * 31u + i);
}

static uint32_t dict_size(const struct dict *d)
{
    uint32_t s = mp_sizeof_map(4);
    s += mp_sizeof_str(2) + mp_sizeof_uint(d->id);
    s += mp_sizeof_str(4) + mp_sizeof_str((uint32_t)strlen(d->name));
    s += mp_sizeof_str(4) + mp_sizeof_array(d->ntags);
    for (uint32_t i = 0; i < d->ntags; i++)
        s += mp_sizeof_str((uint32_t)strlen(d->tags[i]));
    s += mp_sizeof_str(4) + mp_sizeof_bin(BLOB);
    return s;
}

static char *dict_encode(char *w, const struct dict *d)
{
    w = mp_encode_map(w, 4);
    w = mp_encode_str(w, "id", 2);
    w = mp_encode_uint(w, d->id);
    w = mp_encode_str(w, "name", 4);
    w = mp_encode_str(w, d->name, (uint32_t)strlen(d->name));
    w = mp_encode_str(w, "tags", 4);
    w = mp_encode_array(w, d->ntags);
    for (uint32_t i = 0; i < d->ntags; i++)
        w = mp_encode_str(w, d->tags[i], (uint32_t)strlen(d->tags[i]));
    w = mp_encode_str(w, "blob", 4);
    return mp_encode_bin(w, (const char *)d->blob, BLOB);
}

static int produce(shmq_t *q)
{
    for (uint32_t n = 0; n < DICTS; n++) {
        struct dict d;
        make_dict(&d, n);
        uint32_t size = dict_size(&d);
        struct shmq_msg m;
        int rc = shmq_put_begin(q, size, &m, SHMQ_SEC(10));
        if (rc < 0) {
            fprintf(stderr, "put_begin: %s\n", shmq_strerror(rc));
            return 1;
        }
        char *end = dict_encode(m.data, &d);
        rc = shmq_put_commit(q, &m, (size_t)(end - (char *)m.data));
        if (rc < 0) {
            fprintf(stderr, "put_commit: %s\n", shmq_strerror(rc));
            return 1;
        }
    }
    return 0;
}

static bool key_is(const char *k, uint32_t len, const char *want)
{
    return len == strlen(want) && memcmp(k, want, len) == 0;
}

/* r is checked already (shmq_get_value with the msgpack codec): every
 * mp_decode_* stays inside it; only the shape must still be checked. */
static bool dict_decode(const char *r, struct dict *d, char *tags, size_t cap)
{
    if (mp_typeof(*r) != MP_MAP)
        return false;
    uint32_t pairs = mp_decode_map(&r), len;
    memset(d, 0, sizeof *d);
    for (uint32_t p = 0; p < pairs; p++) {
        if (mp_typeof(*r) != MP_STR)
            return false;
        const char *k = mp_decode_str(&r, &len), *v;
        if (key_is(k, len, "id") && mp_typeof(*r) == MP_UINT) {
            d->id = (uint32_t)mp_decode_uint(&r);
        } else if (key_is(k, len, "name") && mp_typeof(*r) == MP_STR) {
            v = mp_decode_str(&r, &len);
            if (len >= sizeof d->name)
                return false;
            memcpy(d->name, v, len);
        } else if (key_is(k, len, "tags") && mp_typeof(*r) == MP_ARRAY) {
            d->ntags = mp_decode_array(&r);
            size_t used = 0;
            for (uint32_t i = 0; i < d->ntags; i++) {
                if (mp_typeof(*r) != MP_STR)
                    return false;
                v = mp_decode_str(&r, &len);
                if (i >= MAX_TAGS || used + len + 1 > cap)
                    return false;
                memcpy(tags + used, v, len);
                tags[used + len] = '\0';
                d->tags[i] = tags + used;
                used += len + 1;
            }
        } else if (key_is(k, len, "blob") && mp_typeof(*r) == MP_BIN) {
            v = mp_decode_bin(&r, &len);
            if (len != BLOB)
                return false;
            memcpy(d->blob, v, BLOB);
        } else {
            mp_next(&r); /* a key we do not know: skip its value */
        }
    }
    return true;
}

static bool same(const struct dict *a, const struct dict *b)
{
    if (a->id != b->id || strcmp(a->name, b->name) != 0 ||
        a->ntags != b->ntags || memcmp(a->blob, b->blob, BLOB) != 0)
        return false;
    for (uint32_t i = 0; i < a->ntags; i++)
        if (strcmp(a->tags[i], b->tags[i]) != 0)
            return false;
    return true;
}

static int consume(shmq_t *q)
{
    struct shmq_codec mp;
    int rc = shmq_msgpack_codec(&mp, 0);
    if (rc < 0) {
        fprintf(stderr, "msgpack codec: %s\n", shmq_strerror(rc));
        return 1;
    }
    char buf[256], tags[64];
    for (uint32_t n = 0; n < DICTS; n++) {
        struct iovec msg = {buf, sizeof buf};
        rc = shmq_get_value(q, &mp, &msg, SHMQ_SEC(10));
        if (rc < 0) {
            fprintf(stderr, "get_value %u: %s\n", n, shmq_strerror(rc));
            return 1;
        }
        struct dict got, want;
        make_dict(&want, n);
        if (!dict_decode(buf, &got, tags, sizeof tags) || !same(&got, &want)) {
            fprintf(stderr, "dict %u: wrong\n", n);
            return 1;
        }
    }
    return 0;
}

int main(void)
{
    struct shmq_config cfg = {.maxsize = 256, .max_message = 256};
    shmq_t *q;
    int rc = shmq_create(&q, &cfg);
    if (rc < 0) {
        fprintf(stderr, "create: %s\n", shmq_strerror(rc));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0)
        _exit(produce(q));
    int status = consume(q);
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    shmq_release(q);
    if (status == 0 && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        printf("%u dicts through the queue as MessagePack\n", DICTS);
        return 0;
    }
    return 1;
}
