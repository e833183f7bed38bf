"""The readers and the metrics against independent Python: the qrels, run and BEIR files parsed by hand, .npy by
NumPy, and trec_eval's measures computed in reference.py."""
import json
import os
import shutil

import numpy as np
import pytest

import aligner
import reference as ref

DATA = os.environ.get("ALIGNER_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "data"))
CRAN = os.path.join(DATA, "cranfield")


def test_qrels_and_beir_readers_match_a_hand_parse():
    qrels = aligner.load_qrels(os.path.join(CRAN, "qrels", "test.tsv"))
    want = {}
    with open(os.path.join(CRAN, "qrels", "test.tsv"), encoding="utf-8") as f:
        for n, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if n == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # the BEIR header line
            want.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    assert qrels == want
    corpus = aligner.load_beir_jsonl(os.path.join(CRAN, "corpus.jsonl"))
    with open(os.path.join(CRAN, "corpus.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert [r["_id"] for r in corpus] == [r["_id"] for r in rows]
    assert all(a["text"] == b.get("text", "") and a["title"] == b.get("title", "") for a, b in zip(corpus, rows))
    with pytest.raises(OSError, match="nothing.tsv"):
        aligner.load_qrels(os.path.join(CRAN, "nothing.tsv"))


def test_collection_and_npy_readers(tmp_path):
    col = aligner.load_collection(CRAN)
    emb = np.load(os.path.join(CRAN, "glove100", "embeddings.npy"))
    ids = np.load(os.path.join(CRAN, "glove100", "doc_token_ids.npy"))
    offsets = np.load(os.path.join(CRAN, "glove100", "doc_offsets.npy"))
    np.testing.assert_array_equal(col["docs"]["offsets"], offsets)
    np.testing.assert_array_equal(col["docs"]["vectors"], emb[ids].astype(np.float32))
    assert col["vocab_size"] == len(emb)
    queries_only = aligner.load_collection(CRAN, documents=False)
    assert len(queries_only["docs"]["ids"]) == 0 and len(queries_only["queries"]["ids"]) == 225
    for dtype in (np.float32, np.float16, np.float64):
        for order in ("C", "F"):
            a = np.asarray(np.random.default_rng(1).standard_normal((7, 5)).astype(dtype), order=order)
            np.save(tmp_path / "a.npy", a)
            np.testing.assert_array_equal(aligner.load_npy(tmp_path / "a.npy"), a.astype(np.float32))
    np.save(tmp_path / "big.npy", np.array([1.0, -3e38, 1e39]))
    with pytest.raises(OSError, match="value 1e\\+39 at index 2 does not fit float32"):
        aligner.load_npy(tmp_path / "big.npy")
    # A collection saved with numpy's defaults (float64 vectors, int64 token ids, Fortran-order vectors) reads as
    # the bundled one does.
    alt = tmp_path / "cran"
    shutil.copytree(CRAN, alt)
    np.save(alt / "glove100" / "embeddings.npy", np.asfortranarray(emb.astype(np.float64)))
    np.save(alt / "glove100" / "doc_token_ids.npy", ids.astype(np.int64))
    np.save(alt / "glove100" / "doc_offsets.npy", offsets.astype(np.uint32))
    same = aligner.load_collection(str(alt))
    np.testing.assert_array_equal(same["docs"]["vectors"], col["docs"]["vectors"])
    np.testing.assert_array_equal(same["docs"]["offsets"], offsets)
    with pytest.raises(OSError, match="nothing: vectors folder not found"):
        aligner.load_collection(CRAN, vectors="nothing")


def test_metrics_match_trec_eval_definitions(tmp_path):
    rng = np.random.default_rng(3)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(0, 3)) for j in rng.choice(60, 12, replace=False)} for i in range(30)}
    run = {f"q{i}": {f"d{j}": float(np.round(rng.standard_normal(), 1)) for j in rng.choice(60, 40, replace=False)}
           for i in range(28)}  # rounded scores: ties, broken by doc id as trec_eval does
    for k in (1, 5, 10, 100):
        assert aligner.ndcg_at(run, qrels, k)[0] == pytest.approx(ref.ndcg(run, qrels, k)[0], abs=1e-12)
        for name, fn in (("mrr", aligner.mrr_at), ("recall", aligner.recall_at), ("map", aligner.map_at),
                         ("precision", aligner.precision_at)):
            mean, per = fn(run, qrels, k)
            want_mean, want_per = ref.measure(run, qrels, name, k)
            assert mean == pytest.approx(want_mean, abs=1e-12), (name, k)
            assert per == pytest.approx(want_per, abs=1e-12), (name, k)
    assert aligner.mean_average_precision(run, qrels)[0] == pytest.approx(ref.measure(run, qrels, "map", 10**9)[0])
    all_judged = aligner.ndcg_at(run, qrels, 10, all_judged=True)
    assert len(all_judged[1]) == 30 and all_judged[1]["q29"] == 0.0
    aligner.save_run(tmp_path / "r.run", run)
    back = aligner.load_run(tmp_path / "r.run")
    assert back.keys() == run.keys()
    for q in run:
        assert back[q] == pytest.approx(run[q])
    with pytest.raises(ValueError, match="k must be >= 1"):
        aligner.ndcg_at(run, qrels, 0)
    with pytest.raises(TypeError, match="run must be a dict"):
        aligner.ndcg_at([("q", "d")], qrels)


def test_salience_heads_file(tmp_path):
    text = ("aligner-salience-heads 1\ndim 3\ntrained_with top1 mean split=train\nquery_gate 0.5 0.002\n"
            "doc_gate none\nquery_bias 0.25\ndoc_bias -1.5\nquery_weights 1 -2 0.5\ndoc_weights 0 3 -0.125\n")
    path = tmp_path / "heads.txt"
    path.write_text(text)
    heads = aligner.load_salience_heads(path)
    assert heads["dim"] == 3 and heads["trained_with"] == "top1 mean split=train"
    assert heads["query"]["gate_alpha"] == 0.5 and heads["query"]["gate_epsilon"] == 0.002
    assert heads["doc"]["gate_alpha"] is None
    assert heads["query"]["bias"] == 0.25 and heads["doc"]["bias"] == -1.5
    np.testing.assert_array_equal(heads["doc"]["weights"], np.array([0, 3, -0.125], dtype=np.float32))
    tokens = np.array([[1, 1, 1], [0, 1, 0], [2, 0, 0]], dtype=np.float32)
    u = aligner.salience(tokens, **heads["doc"])  # the heads' own arguments
    np.testing.assert_allclose(u, np.maximum(tokens @ np.array([0, 3, -0.125]) - 1.5, 0), rtol=1e-6)
    path.write_text(text.replace("dim 3", "dim 4"))
    with pytest.raises(OSError, match="heads.txt:8: query_weights has 3 values, dim is 4"):
        aligner.load_salience_heads(path)
    with pytest.raises(OSError, match="absent"):
        aligner.load_salience_heads(tmp_path / "absent.txt")
