#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default 60), starting from
# the seed corpus in tests/fuzz/corpus/<target>/ (copied to a scratch folder, so the repository is untouched).
# A finding stops with a non-zero exit code and leaves the crashing input in build-fuzz/findings/.
# Usage: [JOBS=N] scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_npy fuzz_text fuzz_index)
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
# -O1 with line tables (enough for the sanitizers' stack traces): fuzz_index compiled in 280 s on a slow 2-core day
# against 521 s at RelWithDebInfo's -O2 -g. JOBS: parallel compile jobs (default: every core).
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only -DNDEBUG" -DALIGNER_FUZZ=ON \
      -DALIGNER_BUILD_TESTS=OFF -DALIGNER_BUILD_BENCH=OFF -DALIGNER_BUILD_EXAMPLES=OFF -DALIGNER_INSTALL=OFF >/dev/null
cmake --build build-fuzz -j"${JOBS:-$(nproc)}" --target "${targets[@]}"
mkdir -p build-fuzz/findings
for t in "${targets[@]}"; do
  work=build-fuzz/corpus/$t
  rm -rf "$work" && mkdir -p "$work" && cp tests/fuzz/corpus/"$t"/* "$work"/
  echo "== $t for ${seconds}s"
  ./build-fuzz/bin/"$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix=build-fuzz/findings/"$t"- "$work" 2>&1 | tail -n 12
done
