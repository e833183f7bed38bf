#!/usr/bin/env bash
# Installs the build dependencies (Debian 12), builds the examples for this CPU (-march=native) and runs
# the main example on the bundled Cranfield collection.
# Usage: scripts/run-example.sh [COLLECTION_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-example -DCMAKE_BUILD_TYPE=Release -DALIGNER_NATIVE=ON -DALIGNER_BUILD_TESTS=OFF \
      -DALIGNER_BUILD_BENCH=OFF -DALIGNER_BUILD_EXAMPLES=ON
cmake --build build-example -j"$(nproc)" --target quickstart
./build-example/bin/quickstart "$@"
