#!/usr/bin/env bash
# The learned-salience report (issue "Learned salience"): trains the salience heads on SciFact's train qrels (809
# queries) and reports pruned retrieval on its test qrels (300 queries) for the GloVe form and the contextual ctx100
# form, against IDF-fitted, token-norm and random keep (bench/salience_bench.cpp prints the tables).
#
#   bench/salience.sh [WORK_DIR]      (default /tmp/aligner-salience)
#
# For each form and each training setting (the gate with the budgets of the target, --alpha-query 0.5 --alpha-doc 0.2,
# from w = 0, b = 1 and from the IDF fit, --init idf-fit; no gate: 1 and 1; the tokens objective from w = 0; and the
# tokens objective with collection negatives, the gate annealed from 0.05, five seeds averaged, at --alpha-doc 0.2 and
# at 0.4):
# `aligner train-salience` on 2 threads under /usr/bin/time (training time, peak RSS), then salience_bench with the
# heads. The ctx100 form is made with ../shared/tools/make_scale_collection.py --copies 1 (numpy; $PYTHON) unless it
# exists. The tokens heads are also reported at one rerank cost (--ndocs 300), the two crowd settings only there. Not part
# of CI (about two and a half hours on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/aligner-salience}
python=${PYTHON:-python3}
scifact=../shared/data/scifact
mkdir -p "$work"

cmake -S . -B build-salience -DCMAKE_BUILD_TYPE=Release -DALIGNER_BUILD_TESTS=OFF -DALIGNER_INSTALL=OFF >/dev/null
cmake --build build-salience -j"$(nproc)" --target aligner_cli salience_bench
bin=build-salience/bin

if [[ ! -f $work/scifact_ctx/ctx100/doc_vectors.npy ]]; then
  echo "== making the ctx100 form in $work/scifact_ctx"
  "$python" ../shared/tools/make_scale_collection.py "$scifact" "$work/scifact_ctx" --copies 1
fi

for form in glove100 ctx100; do
  coll=$scifact
  [[ $form == ctx100 ]] && coll=$work/scifact_ctx
  for setting in "gate 0.5 0.2 none score 3" "gate_idf 0.5 0.2 idf-fit score 3" "nogate 1 1 none score 3" "tokens 0.5 0.2 none tokens 5" \
                 "crowd 0.5 0.2 none tokens 5 --collection-negatives 64 --epsilon-start 0.05 --ensemble 5" \
                 "crowd04 0.5 0.4 none tokens 5 --collection-negatives 64 --epsilon-start 0.05 --ensemble 5"; do
    read -r name aq ad init objective patience extra <<<"$setting"
    heads=$work/heads_${form}_$name.txt
    echo "== $form, $name: train-salience --alpha-query $aq --alpha-doc $ad --init $init --objective $objective --patience $patience $extra"
    # shellcheck disable=SC2086  # $extra: more flags, split on purpose
    /usr/bin/time -f "training: %e s wall, %M KB peak RSS" "$bin/aligner" train-salience --collection "$coll" --vectors "$form" \
        --split train --strategy top1 --alpha-query "$aq" --alpha-doc "$ad" --init "$init" --objective "$objective" \
        --patience "$patience" $extra --threads 2 --out "$heads"
    if [[ $name == crowd* ]]; then  # (RESULTS, seventh and eighth passes: only the one-cost report)
      "$bin/salience_bench" --collection "$coll" --vectors "$form" --heads "$heads" --candidates 10,100 --ndocs 300 --threads 2 |
          tee "$work/report_${form}_${name}_ndocs300.md"
      continue
    fi
    echo "== $form, $name: pruning report"
    "$bin/salience_bench" --collection "$coll" --vectors "$form" --heads "$heads" --candidates 10,100 --threads 2 | tee "$work/report_${form}_$name.md"
    if [[ $name == tokens ]]; then  # the rules at one rerank cost: each query's best 300 candidates (RESULTS, fifth pass)
      echo "== $form, $name: pruning report at one rerank cost (--ndocs 300)"
      "$bin/salience_bench" --collection "$coll" --vectors "$form" --heads "$heads" --candidates 10,100 --ndocs 300 --threads 2 |
          tee "$work/report_${form}_${name}_ndocs300.md"
    fi
  done
done
