#!/usr/bin/env bash
# The DRAM-bandwidth share of the rerank kernels (issue "Matrix units"): one core's streaming read bandwidth
# (`memory_read_bandwidth`, a 1 GiB buffer) and, for each storage, the packed bytes the kernel reads per second with
# documents streamed from a pool of POOL_MB megabytes of float vectors (default 2048: the compact stores' copies
# then exceed any last-level cache too), n = 32, m = 128, dim = 128, Top-1 and Top-p 1%. Prints, per storage and
# strategy, the median over ROUNDS invocations (one per round, every storage in it) of docs/s, GB/s and GB/s as a
# share of the bandwidth.
#
#   bench/dram.sh [BUILD_DIR] [ROUNDS] [CPU]   (defaults: build-native, 3, 1)
#
# BUILD_DIR is configured with -DALIGNER_NATIVE=ON if it does not exist. Memory: about 3.5 x POOL_MB (the floats, their
# packed f32 copy, then the bf16, i8 and residual copies). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-native}
rounds=${2:-3}
cpu=${3:-1}
pool_mb=${POOL_MB:-2048}
source bench/bench_lib.sh
ensure_native_bench "$build"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# One invocation per round measures every storage, so the pool (and each packed copy) is built once per round.
for r in $(seq 1 "$rounds"); do
  taskset -c "$cpu" "$build/bin/aligner_bench" --benchmark_filter="^memory_read_bandwidth" --benchmark_format=csv 2>/dev/null >"$out/bw.$r.csv"
  ALIGNER_BENCH_POOL_MB=$pool_mb taskset -c "$cpu" "$build/bin/aligner_bench" \
    --benchmark_filter="^hadamard_xsimd(|_bf16|_i8|_residual2|_residual4)/n:32/m:128/dim:128/k:(1|0)\$" --benchmark_min_time=0.3 \
    --benchmark_format=csv 2>/dev/null >"$out/all.$r.csv"
done
python3 - "$out" "$rounds" <<'PY'
import statistics, sys, os
sys.path.insert(0, "bench")
from bench_csv import rows
out, rounds = sys.argv[1], int(sys.argv[2])
bw = statistics.median(float(rows(os.path.join(out, f"bw.{r}.csv"))[0]["bytes_per_second"]) for r in range(1, rounds + 1))
print(f"memory_read_bandwidth: {bw / 1e9:.1f} GB/s (median of {rounds})")
print("| kernel | label | docs/s | GB/s read | share of the bandwidth |")
print("|---|---|---|---|---|")
runs = {}
for r in range(1, rounds + 1):
    for row in rows(os.path.join(out, f"all.{r}.csv")):
        runs.setdefault(row["name"], []).append(row)
for name, rs in runs.items():
    docs = statistics.median(float(x["docs_per_second"]) for x in rs)
    gbs = statistics.median(float(x["bytes_per_second"]) for x in rs)
    print(f"| {name} | {rs[0]['label']} | {docs / 1e3:.1f}k | {gbs / 1e9:.2f} | {gbs / bw:.0%} |", flush=True)
PY
