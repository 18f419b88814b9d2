/* SPDX-License-Identifier: MIT */
/*
 * codec_bench.c - shmq-codec-bench: what a structured value costs.
 *
 * One producer process, one consumer process, the dict of
 * docs/examples/codec_dict.c ({"id", "name", "tags", "blob": 32 bytes},
 * 64-89 bytes as MessagePack), three ways in each round:
 *
 *   shmq msgpack : encode in place (mp_sizeof_*, put_begin, mp_encode_*,
 *                  put_commit), shmq_get_value with the MessagePack codec
 *                  (copy out, shmq_msgpack_check), decode every field
 *   shmq raw     : shmq_put / shmq_get of bytes of the same sizes (no
 *                  codec: the transfer alone)
 *   py mpq dict  : Python's multiprocessing.Queue moving the same dict
 *                  (bench/codec_bench.py)
 *
 * Prints a Markdown table of msgs/s (median of the rounds) and the
 * ratios. Usage: shmq-codec-bench [--quick] [--no-python]
 */
#include <errno.h>
#include <msgpuck.h>
#include <shmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5
#define BLOB   32u

static const char *const tag_names[] = {"hot", "cold", "wet", "dry"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The dict of n, encoded at w (NULL: only sized). Returns its size. */
static uint32_t dict(char *w, uint32_t n)
{
    char name[32], blob[BLOB];
    uint32_t nlen = (uint32_t)snprintf(name, sizeof name, "sensor-%u", n);
    uint32_t ntags = n % 5, s = mp_sizeof_map(4);
    s += mp_sizeof_str(2) + mp_sizeof_uint(n) + mp_sizeof_str(4) +
         mp_sizeof_str(nlen) + mp_sizeof_str(4) + mp_sizeof_array(ntags) +
         mp_sizeof_str(4) + mp_sizeof_bin(BLOB);
    for (uint32_t i = 0; i < ntags; i++)
        s += mp_sizeof_str((uint32_t)strlen(tag_names[(n + i) % 4]));
    if (!w)
        return s;
    for (uint32_t i = 0; i < BLOB; i++)
        blob[i] = (char)(n * 31u + i);
    w = mp_encode_map(w, 4);
    w = mp_encode_str(w, "id", 2);
    w = mp_encode_uint(w, n);
    w = mp_encode_str(w, "name", 4);
    w = mp_encode_str(w, name, nlen);
    w = mp_encode_str(w, "tags", 4);
    w = mp_encode_array(w, ntags);
    for (uint32_t i = 0; i < ntags; i++) {
        const char *t = tag_names[(n + i) % 4];
        w = mp_encode_str(w, t, (uint32_t)strlen(t));
    }
    w = mp_encode_str(w, "blob", 4);
    mp_encode_bin(w, blob, BLOB);
    return s;
}

/* Reads every field of a checked dict; its id, or UINT32_MAX. */
static uint32_t decode(const char *r)
{
    uint32_t id = UINT32_MAX, len, pairs = mp_decode_map(&r);
    for (uint32_t p = 0; p < pairs; p++) {
        const char *k = mp_decode_str(&r, &len);
        if (len == 2 && memcmp(k, "id", 2) == 0 && mp_typeof(*r) == MP_UINT)
            id = (uint32_t)mp_decode_uint(&r);
        else if (mp_typeof(*r) == MP_ARRAY)
            for (uint32_t i = mp_decode_array(&r); i > 0; i--)
                mp_decode_str(&r, &len);
        else if (mp_typeof(*r) == MP_STR)
            mp_decode_str(&r, &len);
        else if (mp_typeof(*r) == MP_BIN)
            mp_decode_bin(&r, &len);
        else
            mp_next(&r);
    }
    return id;
}

static int produce(shmq_t *q, uint32_t n, bool codec)
{
    char raw[256] = {0};
    for (uint32_t i = 0; i < n; i++) {
        uint32_t size = dict(NULL, i);
        int rc;
        if (codec) {
            struct shmq_msg m;
            rc = shmq_put_begin(q, size, &m, SHMQ_FOREVER);
            if (rc == 0) {
                dict(m.data, i);
                rc = shmq_put_commit(q, &m, size);
            }
        } else {
            rc = shmq_put(q, raw, size, SHMQ_FOREVER);
        }
        if (rc < 0)
            return 1;
    }
    return 0;
}

/* msgs/s of one producer and this process as consumer; 0 on failure. */
static double run(uint32_t n, bool codec)
{
    struct shmq_config cfg = {.maxsize = 256, .max_message = 256};
    shmq_t *q;
    if (shmq_create(&q, &cfg) < 0)
        return 0;
    struct shmq_codec mp;
    if (shmq_msgpack_codec(&mp, 0) < 0)
        return 0;
    double t = now_s();
    pid_t pid = fork();
    if (pid == 0)
        _exit(produce(q, n, codec));
    bool ok = pid > 0;
    char buf[256];
    for (uint32_t i = 0; ok && i < n; i++) {
        if (codec) {
            struct iovec out = {buf, sizeof buf};
            ok = shmq_get_value(q, &mp, &out, SHMQ_SEC(10)) == 0 &&
                 decode(buf) == i;
        } else {
            size_t len;
            ok = shmq_get(q, buf, sizeof buf, &len, SHMQ_SEC(10)) == 0 &&
                 len == dict(NULL, i);
        }
    }
    t = now_s() - t;
    int status = 1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    shmq_release(q);
    return ok && status == 0 ? n / t : 0;
}

static double python(uint32_t n)
{
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "python3 '%s' %u", SHMQ_CODEC_BENCH_PY, n);
    FILE *f = popen(cmd, "r");
    double rate = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"seconds\": ");
        if (s && strstr(line, "\"ok\": true"))
            rate = n / strtod(s + 11, NULL);
    }
    if (!f || pclose(f) != 0)
        rate = 0;
    return rate;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static void report(double m, double w, double p, int rounds)
{
    char vs_raw[32] = "", vs_mp[32] = "";
    if (p > 0) {
        snprintf(vs_raw, sizeof vs_raw, "%.1fx", w / p);
        snprintf(vs_mp, sizeof vs_mp, "%.1fx", m / p);
    }
    printf("\nshmq-codec-bench: 1 producer, 1 consumer, %ld CPUs, dict of "
           "%u-%u bytes as MessagePack, median of %d rounds\n\n",
           sysconf(_SC_NPROCESSORS_ONLN), dict(NULL, 0), dict(NULL, 99999),
           rounds);
    printf("| path | msgs/s | vs shmq raw | vs Python mpq |\n"
           "|---|---:|---:|---:|\n");
    printf("| shmq raw bytes (put/get) | %.0f | 1.00x | %s |\n", w, vs_raw);
    printf("| shmq msgpack (encode in place, get_value, check, decode) | "
           "%.0f | %.2fx | %s |\n",
           m, m / w, vs_mp);
    if (p > 0)
        printf("| Python multiprocessing.Queue, same dict | %.0f | %.3fx | "
               "1.0x |\n",
               p, p / w);
}

int main(int argc, char **argv)
{
    bool quick = false, py = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--no-python") == 0) {
            py = false;
        } else {
            fprintf(stderr, "usage: shmq-codec-bench [--quick] "
                            "[--no-python]\n");
            return 2;
        }
    }
    if (py && system("python3 -c 'import multiprocessing' >/dev/null 2>&1"))
        py = false;
    uint32_t n = quick ? 20000 : 500000, npy = quick ? 5000 : 50000;
    int rounds = quick ? 1 : ROUNDS;
    double mp[ROUNDS], raw[ROUNDS], pyr[ROUNDS];
    for (int r = 0; r < rounds; r++) {
        mp[r] = run(n, true);
        raw[r] = run(n, false);
        pyr[r] = py ? python(npy) : 0;
        fprintf(stderr,
                "round %d: msgpack %.0f, raw %.0f, python %.0f msgs/s\n", r + 1,
                mp[r], raw[r], pyr[r]);
        if (mp[r] == 0 || raw[r] == 0)
            return 1;
    }
    report(median(mp, rounds), median(raw, rounds),
           py ? median(pyr, rounds) : 0, rounds);
    return 0;
}
