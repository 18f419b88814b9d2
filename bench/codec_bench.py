# SPDX-License-Identifier: MIT
"""codec_bench.py - Python's multiprocessing.Queue moving shmq-codec-bench's
dict: {"id": n, "name": "sensor-<n>", "tags": [...], "blob": 32 bytes}.

Run by shmq-codec-bench (bench/codec_bench.c) in each of its rounds; a
producer Process puts n dicts, this process gets them (pickle, pipe,
feeder thread, unpickle: what Python users pay) and checks each. Prints
one JSON line: {"case": "py mpq dict", "msgs": n, "seconds": s, "ok": b}.
Argument: n.
"""
import json
import multiprocessing as mp
import sys
import time

TAGS = ["hot", "cold", "wet", "dry"]


def make(n):
    return {"id": n, "name": f"sensor-{n}",
            "tags": [TAGS[(n + i) % 4] for i in range(n % 5)],
            "blob": bytes((n * 31 + i) & 0xff for i in range(32))}


def produce(q, n):
    for i in range(n):
        q.put(make(i))


def main():
    n = int(sys.argv[1])
    ctx = mp.get_context("fork")
    q = ctx.Queue(maxsize=256)
    p = ctx.Process(target=produce, args=(q, n))
    t = time.perf_counter()
    p.start()
    ok = True
    for i in range(n):
        d = q.get()
        ok = ok and d["id"] == i and len(d["blob"]) == 32
    secs = time.perf_counter() - t
    p.join()
    print(json.dumps({"case": "py mpq dict", "msgs": n, "seconds": secs,
                      "ok": ok}), flush=True)


if __name__ == "__main__":
    main()
