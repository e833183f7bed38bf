#!/usr/bin/env bash
# The run-time AVX-512 tiles of 4- and 8-wide panels (include/aligner/kernels/wide.hpp) in a portable build, and its
# AVX2 tiles of 4-wide panels on a CPU without AVX-512 (PORTABLE_FLAGS=""): the
# rerank kernels (n=32, m=128, dim=128; Top-1, Top-4, Top-8, Top-p 1%) of f32, bf16, f16 and i8 and the exact token
# search, measured in ROUNDS alternating invocations of
#   - a portable build (PORTABLE_FLAGS, default -march=x86-64-v3: AVX2, 8-wide panels; "" for no -march: SSE2,
#     4-wide panels) with ALIGNER_NO_AVX512=1 ALIGNER_NO_AVX2=1: its own tiles;
#   - the same binary with its run-time tiles (the default: AVX-512 where the CPU has it, else AVX2 at W = 4);
#   - a native build (-march=native; on an AVX-512 CPU: 16-wide panels, AVX-512 at compile time).
# Prints the median docs/s of each and the median per-round ratios: run-time tiles against the build's own tiles,
# and against the native build.
#
#   [PORTABLE_FLAGS=...] bench/wide.sh [PORTABLE_BUILD_DIR] [NATIVE_BUILD_DIR] [ROUNDS] [CPU]
#   (defaults: build-portable, build-native, 3, 1)
#
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
portable=${1:-build-portable}
native=${2:-build-native}
rounds=${3:-3}
cpu=${4:-1}
source bench/bench_lib.sh
ensure_native_bench "$native"
if [ ! -x "$portable/bin/aligner_bench" ]; then
  cmake -S . -B "$portable" -DCMAKE_BUILD_TYPE=Release -DALIGNER_NATIVE=OFF "-DCMAKE_CXX_FLAGS=${PORTABLE_FLAGS--march=x86-64-v3}" \
    -DALIGNER_BUILD_TESTS=OFF >/dev/null
  cmake --build "$portable" --target aligner_bench -j"$(nproc)" >/dev/null
fi
filter='^(hadamard_xsimd(_bf16|_f16|_i8)?/n:32/m:128/dim:128/k:(1|4|8|0)|exact_search_xsimd(_bf16)?/q:32/tokens:1048576/k:100)$'
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  ALIGNER_NO_AVX512=1 ALIGNER_NO_AVX2=1 taskset -c "$cpu" "$portable/bin/aligner_bench" --benchmark_filter="$filter" --benchmark_min_time=0.3 \
    --benchmark_format=json 2>/dev/null >"$out/narrow.$r.json"
  taskset -c "$cpu" "$portable/bin/aligner_bench" --benchmark_filter="$filter" --benchmark_min_time=0.3 \
    --benchmark_format=json 2>/dev/null >"$out/wide.$r.json"
  taskset -c "$cpu" "$native/bin/aligner_bench" --benchmark_filter="$filter" --benchmark_min_time=0.3 \
    --benchmark_format=json 2>/dev/null >"$out/native.$r.json"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
runs, labels = {}, {}
for kind in ("narrow", "wide", "native"):
    for r in range(1, rounds + 1):
        with open(os.path.join(out, f"{kind}.{r}.json")) as f:
            for row in json.load(f)["benchmarks"]:
                rate = row.get("docs_per_second") or row["queries_per_second"]
                runs.setdefault((kind, row["name"]), []).append(float(rate))
                labels[(kind, row["name"])] = row.get("label", "")
names = sorted({n for _, n in runs}, key=lambda n: (n.split("/")[0], n))
print(f"{rounds} rounds; median rate (docs/s for the rerank kernels, queries/s for the exact search of 32 query tokens); ratios are medians of per-round ratios")
print("| benchmark | the build's own tiles (kernel) | run-time tiles (kernel) | x own | native build (kernel) | share of native |")
print("|---|---|---|---|---|---|")
def med(k): return statistics.median(runs[k])
def ratio(a, b): return statistics.median(x / y for x, y in zip(runs[a], runs[b]))
for n in names:
    a, w, v = ("narrow", n), ("wide", n), ("native", n)
    if a not in runs or w not in runs or v not in runs: continue
    fmt = lambda x: f"{x / 1e3:.1f}k" if x > 1000 else f"{x:.2f}"
    print(f"| {n} | {fmt(med(a))} ({labels[a]}) | {fmt(med(w))} ({labels[w]}) | {ratio(w, a):.2f}x | {fmt(med(v))} ({labels[v]}) | {ratio(w, v):.0%} |")
PY
