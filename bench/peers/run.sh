#!/usr/bin/env bash
# aligner against its peers, side by side in one run, on this machine (not a test: it downloads and runs for long).
#   bench/peers/run.sh [--kernels-only] [--collection DIR]
# 1. a virtual environment bench/peers/.venv with the peers of requirements.txt (pinned; each installed on its own,
#    so one that fails is reported and the others still run) and aligner's Python package built for this CPU;
# 2. kernels.py on one core (taskset -c 0, every thread pool at 1 thread): MaxSim of one query against 1,000 and
#    10,000 documents through aligner, NumKong, maxsim-cpu, PyTorch and NumPy, scores checked against float64;
# 3. indexes.py on SciFact ctx100 (made here from ../shared/data/scifact when absent): aligner's residual codes
#    and token path against fast-plaid and xtr-warp-rs.
# Output: the tables on stdout and in bench/peers/last-run.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
kernels_only=0
collection=""
while (($#)); do
  case "$1" in
    --kernels-only) kernels_only=1 ;;
    --collection) collection="$2"; shift ;;
    *) echo "usage: bench/peers/run.sh [--kernels-only] [--collection DIR]" >&2; exit 2 ;;
  esac
  shift
done
scripts/install-deps.sh
venv=bench/peers/.venv
[[ -x $venv/bin/python ]] || /usr/bin/python3 -m venv "$venv"
py="$PWD/$venv/bin/python"
out=bench/peers/last-run.md
: > "$out"
log() { echo "$*" | tee -a "$out"; }
"$py" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
while read -r req; do
  [[ -z "$req" || "$req" == \#* ]] && continue
  if ! err=$("$py" -m pip install -q --disable-pip-version-check "$req" 2>&1); then
    log "peer $req failed to install: $(echo "$err" | tail -n 3 | tr '\n' ' ')"
  fi
done < bench/peers/requirements.txt
"$py" -m pip install -q --disable-pip-version-check . >/dev/null   # aligner, -march=native
single=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1 taskset -c 0)
log "## kernels ($(date -u +%F), one core)"
"${single[@]}" "$py" bench/peers/kernels.py | tee -a "$out"
((kernels_only)) && exit 0
if [[ -z "$collection" ]]; then
  collection=bench/peers/.data/scifact_ctx
  if [[ ! -d $collection/ctx100 ]]; then
    "$py" ../shared/tools/make_scale_collection.py ../shared/data/scifact "$collection" --copies 1
  fi
fi
log ""
log "## indexes ($(date -u +%F))"
"$py" bench/peers/indexes.py "$collection" --pad-to 128 | tee -a "$out"
