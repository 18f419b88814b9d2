#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/compare.sh - an independent check of shmq-bench's own timers:
# hyperfine times whole-process runs of the same fixed work (N messages
# from one producer process to one consumer process, checked on receipt)
# through each transport, and exports the result as Markdown.
#
# Usage: bench/compare.sh [N [SIZE [OUT.md]]]
#   N     messages per run (default 1000000)
#   SIZE  message size, e.g. 64, 4K, 1M (default 64)
#   OUT   Markdown file (default bench-compare.md)
# Environment: SHMQ_BENCH (path of shmq-bench; default: build it with
# scripts/bench's build directory), HYPERFINE_ARGS (default
# "--warmup 2 --runs 10").
#
# Each run includes process start, queue setup, fork and teardown: the
# per-message figure is (mean time - fixed cost) / N, so compare the
# transports to each other, and to shmq-bench's messages/s at the same
# cell, not to 1/mean.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
n="${1:-1000000}"
size="${2:-64}"
out="${3:-bench-compare.md}"
bench="${SHMQ_BENCH:-}"
if [ -z "$bench" ]; then
    SHMQ_BENCH_NO_INSTALL="${SHMQ_BENCH_NO_INSTALL:-}" \
        "$here/scripts/bench" --help >/dev/null
    bench="${SHMQ_BENCH_BUILD:-$here/build-bench}/bench/shmq-bench"
fi
command -v hyperfine >/dev/null || {
    echo "compare.sh: hyperfine not found (apt-get install hyperfine)" >&2
    exit 1
}

# The fixed work of one run: one cell, one round, no warm-up.
common="--scenario throughput --shape 1x1 --size $size --count $n --rounds 1 --no-warmup"
set --
for t in shmq pipe seqpacket mq zmq boost ring vyukov python; do
    set -- "$@" -n "$t" "$bench $common --transport $t"
done

# shellcheck disable=SC2086
hyperfine ${HYPERFINE_ARGS:---warmup 2 --runs 10} --style basic \
    --export-markdown "$out" "$@" >&2
echo "compare.sh: $n messages of $size bytes per run; results in $out" >&2
cat "$out"
