# SPDX-License-Identifier: MIT
"""pool_bench.py - Python's process pools doing shmq-pool-bench's work.

Run by shmq-pool-bench (bench/pool_bench.c) in the same run as shmq's
pool; prints one JSON object per line: {"case": ..., "tasks": n,
"seconds": s, "ok": bool}. Arguments: workers, then scale (1.0 = the
default sizes).

  tiny   : add two integers          (the pure per-task cost)
  medium : CRC-32 of 4 KiB (zlib)    (work that dominates the transfer)

Per case: Pool.apply_async one task at a time, ProcessPoolExecutor.submit
one at a time, Pool.map with its default chunking.
"""
import json
import multiprocessing as mp
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor


def add(a, b):
    return a + b


def add_pair(p):
    return p[0] + p[1]


def crc(buf):
    return zlib.crc32(buf)


def block(i):
    # 4 KiB, different per task, as the C side builds them
    return (i.to_bytes(8, "little") * 512)


def emit(case, n, secs, ok):
    print(json.dumps({"case": case, "tasks": n, "seconds": secs, "ok": ok}),
          flush=True)


def run(workers, scale):
    n_tiny_async = int(50000 * scale)
    n_tiny_exec = int(20000 * scale)
    n_tiny_map = int(4000000 * scale)
    n_med_async = int(20000 * scale)
    n_med_map = int(50000 * scale)
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        pool.map(add_pair, [(1, 2)] * 1000)  # warm up
        t = time.perf_counter()
        rs = [pool.apply_async(add, (i, i)) for i in range(n_tiny_async)]
        ok = all(r.get() == 2 * i for i, r in enumerate(rs))
        emit("tiny apply_async", n_tiny_async, time.perf_counter() - t, ok)

        pairs = [(i, i) for i in range(n_tiny_map)]
        t = time.perf_counter()
        out = pool.map(add_pair, pairs)
        secs = time.perf_counter() - t
        emit("tiny Pool.map", n_tiny_map, secs,
             len(out) == n_tiny_map and out[-1] == 2 * (n_tiny_map - 1))
        del pairs, out

        blocks = [block(i) for i in range(n_med_async)]
        t = time.perf_counter()
        rs = [pool.apply_async(crc, (b,)) for b in blocks]
        ok = all(r.get() == zlib.crc32(b) for r, b in zip(rs, blocks))
        emit("medium apply_async", n_med_async, time.perf_counter() - t, ok)

        blocks = [block(i) for i in range(n_med_map)]
        t = time.perf_counter()
        out = pool.map(crc, blocks)
        secs = time.perf_counter() - t
        emit("medium Pool.map", n_med_map, secs,
             out[-1] == zlib.crc32(blocks[-1]))
        del blocks, out

    with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
        list(ex.map(add, range(100), range(100)))  # warm up
        t = time.perf_counter()
        fs = [ex.submit(add, i, i) for i in range(n_tiny_exec)]
        ok = all(f.result() == 2 * i for i, f in enumerate(fs))
        emit("tiny executor.submit", n_tiny_exec, time.perf_counter() - t, ok)


if __name__ == "__main__":
    run(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
