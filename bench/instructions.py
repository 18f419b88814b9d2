#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""instructions.py - instructions and locked instructions per put+get pair.

Runs shmq-pairs (bench/pairs.c: one process, N put+get pairs of 64 B)
under callgrind for shmq, the Vyukov MPMC ring and the raw SPSC ring,
counting only the measured loop (--toggle-collect), with one count per
instruction address (--dump-instr=yes). callgrind does not count locked
instructions, so they are found by address: objdump lists every
instruction of each object the loop ran in (the program, the library if
shared, libc); those with a lock prefix, and xchg with a memory operand
(locked without one), are summed over callgrind's per-address counts.
Memory fences (mfence) are reported apart. Counts are exact and free of
this VM's noise: the same binary gives the same figures on every run.

    bench/instructions.py [--build DIR] [--pairs N]

Prints a Markdown table on stdout. scripts/bench --instructions runs it.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

QUEUES = [("shmq", "shmq (default queue)"),
          ("vyukov", "Vyukov MPMC ring"),
          ("spsc", "raw SPSC ring")]

INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
# pairs.c's own code: the loop and the wrappers that call the queue
LOOP = re.compile(r"^(pairs_loop|measured_pairs|shmq_put_|shmq_get_|vy_put|"
                  r"vy_get|spsc_put|spsc_get)(\.|$)")
NAMED = re.compile(r"^\((\d+)\)(?:\s+(.*))?$")


def objdump_kinds(path):
    """{address: 'lock' | 'fence'} for the special instructions of path."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                         capture_output=True, text=True, check=False).stdout
    kinds = {}
    for line in out.splitlines():
        m = INSN.match(line)
        if not m:
            continue
        text = m.group(2).strip()
        mnem = text.split()[0] if text else ""
        if mnem == "lock" or (mnem.startswith("xchg") and "(" in text):
            kinds[int(m.group(1), 16)] = "lock"
        elif mnem == "mfence":
            kinds[int(m.group(1), 16)] = "fence"
    return kinds


def parse_callgrind(path):
    """({object: {address: self Ir}}, {function: self Ir}, total Ir) of a
    --dump-instr file."""
    names, counts = {}, defaultdict(lambda: defaultdict(int))
    fnames, by_fn, fn = {}, defaultdict(int), None
    obj, last, after_call, total = None, 0, False, None
    positions = 1
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("positions:"):
                positions = len(line.split()[1:])
                continue
            if line.startswith(("ob=", "cob=")):
                key, val = line.split("=", 1)
                m = NAMED.match(val)
                ident = m.group(1) if m else val
                if m and m.group(2):
                    names[ident] = m.group(2)
                if key == "ob":
                    obj = ident
                continue
            if line.startswith(("fn=", "cfn=")):
                key, val = line.split("=", 1)
                m = NAMED.match(val)
                ident = m.group(1) if m else val
                if m and m.group(2):
                    fnames[ident] = m.group(2)
                if key == "fn":
                    fn = ident
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
                continue
            if not line or not (line[0] in "+-*" or line.startswith("0x")
                                or line[0].isdigit()):
                continue
            fields = line.split()
            pos = fields[0]
            if pos == "*":
                addr = last
            elif pos[0] in "+-":
                addr = last + int(pos, 0)
            else:
                addr = int(pos, 0)
            last = addr
            cost = int(fields[positions]) if len(fields) > positions else 0
            if after_call:  # inclusive cost of a call, not this address's
                after_call = False
                continue
            counts[obj][addr] += cost
            by_fn[fn] += cost
    return ({names.get(k, k): v for k, v in counts.items()},
            {fnames.get(k, k): v for k, v in by_fn.items()}, total)


def measure(exe, what, pairs, tmp):
    out = os.path.join(tmp, "callgrind." + what)
    cmd = ["valgrind", "--tool=callgrind", "--dump-instr=yes",
           "--toggle-collect=measured_pairs*", "--callgrind-out-file=" + out,
           exe, what, str(pairs)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0 or ("pairs %d" % pairs) not in run.stdout:
        sys.exit("instructions.py: %s failed:\n%s" % (" ".join(cmd),
                                                       run.stderr[-2000:]))
    counts, by_fn, total = parse_callgrind(out)
    loop = sum(n for f, n in by_fn.items() if LOOP.match(f or ""))
    locked = fences = 0
    for obj, per_addr in counts.items():
        if not os.path.exists(obj):
            continue
        kinds = objdump_kinds(obj)
        for addr, n in per_addr.items():
            k = kinds.get(addr)
            if k == "lock":
                locked += n
            elif k == "fence":
                fences += n
    counted = sum(sum(v.values()) for v in counts.values())
    if total is not None and counted != total:
        sys.exit("instructions.py: %s: parsed %d of %d Ir" %
                 (what, counted, total))
    top = sorted(by_fn.items(), key=lambda kv: -kv[1])[:10]
    return (counted / pairs, loop / pairs, locked / pairs, fences / pairs,
            [(f, n / pairs) for f, n in top])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(here, "..", "build-bench"))
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--check", action="store_true",
                    help="fail unless the rings' known counts come out "
                    "(Vyukov: 2 locked per pair, SPSC: 0): the test suite's "
                    "check of the method")
    a = ap.parse_args()
    exe = os.path.join(a.build, "bench", "shmq-pairs")
    if a.check and not shutil.which("valgrind"):
        sys.exit(77)
    for tool in ("valgrind", "objdump"):
        if not shutil.which(tool):
            sys.exit("instructions.py: %s is not installed" % tool)
    if not os.access(exe, os.X_OK):
        sys.exit("instructions.py: no %s (ninja -C %s bench/shmq-pairs)" %
                 (exe, a.build))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, label in QUEUES:
            rows.append((label,) + measure(exe, what, a.pairs, tmp))
    print("### Instructions per put+get pair (callgrind, one process, "
          "64 B, %d pairs)\n" % a.pairs)
    print("| queue | instructions | of which the test loop | "
          "locked instructions | mfence |")
    print("|---|---:|---:|---:|---:|")
    for label, ins, loop, locked, fences, _ in rows:
        print("| %s | %.1f | %.1f | %.2f | %.2f |" %
              (label, ins, loop, locked, fences))
    print("\nshmq, instructions per pair by function (self, top 10): " +
          ", ".join("%s %.1f" % (f, n) for f, n in rows[0][5]))
    if a.check and (abs(rows[1][3] - 2) > 1e-9 or rows[2][3] != 0 or
                    rows[0][3] < 1):
        sys.exit("instructions.py: locked counts are not what the rings "
                 "do (Vyukov %.2f, SPSC %.2f, shmq %.2f)" %
                 (rows[1][3], rows[2][3], rows[0][3]))
    shmq = rows[0]
    print("\nissue 7 targets for shmq: <= 250 instructions (%s), "
          "<= 3 locked instructions (%s)" %
          ("met" if shmq[1] <= 250 else "missed: %.1f" % shmq[1],
           "met" if shmq[3] <= 3 else "missed: %.2f" % shmq[3]))


if __name__ == "__main__":
    main()
