#!/usr/bin/env bash
# Installs the build dependencies (Debian 12), builds the whole test suite (C++ and the Python package) and runs it
# with ctest. The Python side runs in <build>/venv (Debian's python3, packages pinned in python/requirements-test.txt).
# Usage: scripts/run-tests.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
scripts/install-deps.sh
# The benchmarks are not tests (bench/: cmake -DALIGNER_BUILD_BENCH=ON, bench/scale.sh); leaving them out keeps this
# command and CI within their time budgets.
mkdir -p "$build"
venv="$(cd "$build" && pwd)/venv"
if [[ ! -x "$venv/bin/python" ]]; then
  /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt
# The example programs are built by scripts/run-example.sh (no test runs them); the CLI is built here (test_cli).
# -O2 rather than Release's -O3: the tests check results, not speed, and the build compiles 15% faster (the
# benchmarks and the example command build at -O3; the per-architecture kernel tests at -O1, tests/CMakeLists.txt).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DALIGNER_BUILD_TESTS=ON -DALIGNER_BUILD_BENCH=OFF \
      -DALIGNER_BUILD_EXAMPLE_PROGRAMS=OFF \
      -DALIGNER_BUILD_PYTHON=ON -DPython_EXECUTABLE="$venv/bin/python" "$@"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" -j"$(nproc)" --output-on-failure
