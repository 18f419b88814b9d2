#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""multiprocessing.Queue moving the same messages as shmq-bench.

Reads jobs from stdin, one per line, as shmq-bench writes them:
    tput P C SIZE SECS [COUNT]  P producer processes -> C consumer processes
    lat SIZE SECS [COUNT]       ping-pong over two queues (blocking get)
(COUNT > 0: exactly that many messages or round trips instead of SECS)
and prints one JSON object per job on stdout, in order, with every
figure shmq-bench needs. Messages are bytes objects stamped like the C
ones: (producer, sequence) at offset 0, every 4 KiB and in the last 8
bytes, the rest a per-producer pattern; consumers check every byte and
the per-producer order, and the total received must equal the total sent.
End of a throughput run: one None per consumer, the usual Python idiom.
"""
import json
import multiprocessing as mp
import random
import struct
import sys
import time

STRIDE = 4096
STOP = None


def offsets(n):
    offs = [0]
    o = STRIDE
    while o + 16 <= n:
        offs.append(o)
        o += STRIDE
    if n >= 16:
        offs.append(n - 8)
    return offs


def pattern(producer, size):
    return random.Random(producer + 1).randbytes(size)


def make(buf, offs, stamp):
    for o in offs:
        struct.pack_into("<Q", buf, o, stamp)
    return bytes(buf)


def check(msg, size, offs, patterns):
    if len(msg) != size:
        return "wrong message length"
    (s0,) = struct.unpack_from("<Q", msg, 0)
    p = s0 >> 56
    if p >= len(patterns):
        return "bad producer in stamp"
    pat = patterns[p]
    for i, o in enumerate(offs):
        if struct.unpack_from("<Q", msg, o)[0] != s0:
            return "stamps disagree"
        end = offs[i + 1] if i + 1 < len(offs) else size
        if msg[o + 8:end] != pat[o + 8:end]:
            return "payload bytes differ from the pattern"
    return None


def producer(q, idx, size, go, start, secs, res, quota):
    offs = offsets(size)
    buf = bytearray(pattern(idx, size))
    go.wait()
    deadline = start.value + secs
    seq = 0
    while (seq < quota) if quota else (time.monotonic() < deadline):
        q.put(make(buf, offs, (idx << 56) | seq))
        seq += 1
    res.put(("sent", seq))


def consumer(q, nprod, size, go, res):
    offs = offsets(size)
    patterns = [pattern(p, size) for p in range(nprod)]
    nxt = [0] * nprod
    msgs = nbytes = 0
    err = None
    go.wait()
    while True:
        m = q.get()
        if m is STOP:
            break
        if err:
            continue
        err = check(m, size, offs, patterns)
        if not err:
            s = struct.unpack_from("<Q", m, 0)[0]
            p, seq = s >> 56, s & ((1 << 56) - 1)
            if seq < nxt[p]:
                err = "sequence went backwards"
            nxt[p] = seq + 1
            msgs += 1
            nbytes += len(m)
    res.put(("recv", msgs, nbytes, time.monotonic(), err))


def throughput(ctx, p, c, size, secs, count=0):
    q = ctx.Queue()
    res = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    cons = [ctx.Process(target=consumer, args=(q, p, size, go, res))
            for _ in range(c)]
    prods = [ctx.Process(target=producer,
                         args=(q, i, size, go, start, secs, res,
                               count // p))
             for i in range(p)]
    for x in cons + prods:
        x.start()
    time.sleep(0.05)
    start.value = time.monotonic()
    go.set()
    sent = recv = nbytes = 0
    t_end = 0.0
    err = None
    got = []
    for _ in range(p):
        got.append(res.get())
    for x in prods:
        x.join()
    for _ in range(c):
        q.put(STOP)
    for _ in range(c):
        got.append(res.get())
    for x in cons:
        x.join()
    for g in got:
        if g[0] == "sent":
            sent += g[1]
        else:
            recv += g[1]
            nbytes += g[2]
            t_end = max(t_end, g[3])
            err = err or g[4]
    if not err and recv != sent:
        err = "received %d of %d messages sent" % (recv, sent)
    return {"ok": err is None, "msgs": recv, "bytes": nbytes,
            "secs": t_end - start.value, "note": err or ""}


def echo(qin, qout, size):
    offs = offsets(size)
    pats = [pattern(0, size)]
    while True:
        m = qin.get()
        if m is STOP:
            return
        err = check(m, size, offs, pats)
        qout.put(m if not err else b"")


def latency(ctx, size, secs, count=0):
    a, b = ctx.Queue(), ctx.Queue()
    e = ctx.Process(target=echo, args=(a, b, size))
    e.start()
    offs = offsets(size)
    buf = bytearray(pattern(0, size))
    samples = []
    err = None
    end = time.monotonic() + secs
    n = 0
    t0 = time.perf_counter_ns()
    while (n < count) if count else (time.monotonic() < end):
        m = make(buf, offs, n)
        a.put(m)
        r = b.get()
        t1 = time.perf_counter_ns()
        if r != m:
            err = "echo returned another message"
            break
        samples.append(t1 - t0)
        t0 = t1
        n += 1
    a.put(STOP)
    e.join()
    samples.sort()

    def pct(p):
        if not samples:
            return 0
        k = max(1, min(len(samples), int(p * len(samples) + 0.999999)))
        return samples[k - 1]
    return {"ok": err is None and bool(samples), "samples": len(samples),
            "secs": secs, "p50": pct(0.5), "p99": pct(0.99),
            "p999": pct(0.999), "max": samples[-1] if samples else 0,
            "note": err or ""}


def main():
    ctx = mp.get_context("fork")
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        try:
            if w[0] == "tput":
                r = throughput(ctx, int(w[1]), int(w[2]), int(w[3]),
                               float(w[4]), int(w[5]) if len(w) > 5 else 0)
            else:
                r = latency(ctx, int(w[1]), float(w[2]),
                            int(w[3]) if len(w) > 3 else 0)
        except Exception as ex:  # report, never hang the C side
            r = {"ok": False, "note": "python: %s" % ex}
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
