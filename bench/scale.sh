#!/usr/bin/env bash
# The scale benchmark (issue "Scale, part 2"): a 52M-token collection indexed streaming into an index directory
# (residual:2 codes + centroid postings) and searched, on this machine.
#
#   bench/scale.sh [WORK_DIR] [COPIES]      (defaults: /tmp/aligner-scale, 50)
#
# 1. makes the collection with ../shared/tools/make_scale_collection.py (SciFact's 5,183 documents first, then
#    distractors made of spans of them: COPIES=50 gives about 52M tokens, 10 GB of float16), unless it exists;
# 2. builds the index directory with `aligner index --layout directory` on 2 threads under /usr/bin/time -v
#    (build time, peak RSS);
# 3. prints `aligner info` (bytes a token, every file included);
# 4. an exhaustive float32 rerank of the whole collection (scale_bench reference: the best possible ranking of
#    these vectors) and the postings search against it (scale_bench search: p50/p95 on one thread, QPS on two,
#    nDCG@10 of top1 and topp:0.01 and their difference to the exhaustive rerank).
# Needs numpy for step 1 (python3 -m pip install numpy, or a virtual environment in $PYTHON). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/aligner-scale}
copies=${2:-50}
python=${PYTHON:-python3}
centroids=${CENTROIDS:-16384}
nprobe=${NPROBE:-4}
ndocs=${NDOCS:-1000}
coll=$work/scifact_x$copies
index=$work/index_x${copies}_r2
mkdir -p "$work"

# -march=native: the kernels' vector width is chosen at compile time (a portable build scans with SSE2 and trains
# and encodes several times slower)
cmake -S . -B build-scale -DCMAKE_BUILD_TYPE=Release -DALIGNER_NATIVE=ON -DALIGNER_BUILD_TESTS=OFF -DALIGNER_INSTALL=OFF >/dev/null
cmake --build build-scale -j"$(nproc)" --target aligner_cli scale_bench

if [[ ! -f $coll/ctx100/doc_vectors.npy ]]; then
  echo "== making the collection ($copies copies) in $coll"
  "$python" ../shared/tools/make_scale_collection.py ../shared/data/scifact "$coll" --copies "$copies"
fi

echo "== build (2 threads, residual:2, $centroids centroids)"
rm -rf "$index"
/usr/bin/time -v build-scale/bin/aligner index --collection "$coll" --vectors ctx100 --storage residual:2 --centroids "$centroids" \
    --layout directory --threads 2 --out "$index" 2> "$work/build.time"
grep -E "Elapsed|Maximum resident" "$work/build.time"

echo "== index"
build-scale/bin/aligner info "$index"

echo "== exhaustive float32 reference"
[[ -f $work/reference_x$copies.top1.run ]] ||
  build-scale/bin/scale_bench reference --collection "$coll" --vectors ctx100 --threads 2 --out "$work/reference_x$copies"

echo "== postings search"
build-scale/bin/scale_bench search --index "$index" --collection "$coll" --vectors ctx100 --nprobe "$nprobe" --ndocs "$ndocs" \
    --threads 2 --reference "$work/reference_x$copies"
