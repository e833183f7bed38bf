#!/usr/bin/env bash
# Kernel ratios against fp32 on a noisy machine: the rerank kernels (n=32, m=128, dim=128) of several storages,
# measured in ROUNDS alternating invocations of one aligner_bench binary (one storage per invocation, every
# strategy), so that a slow spell of the machine falls on every storage alike. Prints per storage and strategy the
# median docs/s over the rounds and the median of the per-round ratios to fp32.
#
#   bench/kernel_ratios.sh [BUILD_DIR] [ROUNDS] [CPU]   (defaults: build-native, 5, 1)
#
# BUILD_DIR is configured with -DALIGNER_NATIVE=ON (the kernels' vector width is chosen at compile time) if it does
# not exist. STORAGES overrides the list (names of the hadamard_xsimd benchmarks: "" for fp32, _bf16, _i8,
# _residual2, _residual4). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-native}
rounds=${2:-5}
cpu=${3:-1}
storages=${STORAGES:-"fp32 _bf16 _i8 _residual2 _residual4"}
source bench/bench_lib.sh
ensure_native_bench "$build"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  for s in $storages; do
    name=$([ "$s" = fp32 ] && echo "" || echo "$s")
    taskset -c "$cpu" "$build/bin/aligner_bench" --benchmark_filter="^hadamard_xsimd${name}/n:32/m:128/dim:128/k:(1|4|8|0)\$" \
      --benchmark_min_time=0.3 --benchmark_format=csv 2>/dev/null >"$out/$s.$r.csv"
  done
done
python3 - "$out" "$rounds" $storages <<'EOF'
import statistics, sys, os
sys.path.insert(0, "bench")
from bench_csv import rows
out, rounds, storages = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {}
for s in storages:
    for r in range(1, rounds + 1):
        for row in rows(os.path.join(out, f"{s}.{r}.csv")):
            k = row["name"].rsplit("k:", 1)[1]
            runs.setdefault((s, k), []).append(float(row["docs_per_second"]))
names = {"1": "Top-1", "4": "Top-4", "8": "Top-8", "0": "Top-p 1%"}
print(f"{rounds} rounds; median docs/s (median per-round ratio to fp32)")
print("| storage | " + " | ".join(names[k] for k in "1480") + " |")
print("|---|---|---|---|---|")
for s in storages:
    cells = []
    for k in "1480":
        v = runs[(s, k)]
        ratio = statistics.median(a / b for a, b in zip(v, runs[("fp32", k)]))
        cells.append(f"{statistics.median(v) / 1e3:.1f}k ({ratio:.2f}x)")
    print(f"| {s.lstrip('_') or 'fp32'} | " + " | ".join(cells) + " |")
EOF
