#!/usr/bin/env bash
# Installs the build dependencies (Debian 12), builds the whole test suite and runs it with ctest.
# Usage: scripts/run-tests.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
scripts/install-deps.sh
# The benchmarks are not tests (bench/: cmake -DALIGNER_BUILD_BENCH=ON, bench/scale.sh); leaving them out keeps this
# command and CI within their time budgets.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DALIGNER_BUILD_TESTS=ON -DALIGNER_BUILD_BENCH=OFF "$@"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" -j"$(nproc)" --output-on-failure
