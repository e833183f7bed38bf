#!/usr/bin/env bash
# Installs the build dependencies (Debian 12), builds the examples and the `aligner` tool for this CPU
# (-march=native), then on the bundled Cranfield collection: runs the quick-start program, prints the
# strategy table of `aligner eval`, and runs few-shot adaptation with `aligner adapt`.
# Usage: scripts/run-example.sh [COLLECTION_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
collection=${1:-data/cranfield}
scripts/install-deps.sh
cmake -S . -B build-example -DCMAKE_BUILD_TYPE=Release -DALIGNER_NATIVE=ON -DALIGNER_BUILD_TESTS=OFF \
      -DALIGNER_BUILD_BENCH=OFF -DALIGNER_BUILD_EXAMPLES=ON >/dev/null
cmake --build build-example -j"$(nproc)"   # the examples and the CLI (all targets: -j runs them side by side)
echo "== quickstart: every building block on $collection"
./build-example/bin/quickstart "$collection"
echo
echo "== aligner eval: exhaustive reranking, one line per strategy"
./build-example/bin/aligner eval --collection "$collection" --strategy top1,topk:2,topk:4,topp:0.01,topp:0.02,dense
echo
echo "== aligner adapt: the paper's 8-shot fold protocol"
./build-example/bin/aligner adapt --collection "$collection" | tail -n 2
