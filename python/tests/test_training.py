"""aligner.train_salience: the heads learned from labelled pairs on the caller's own vectors. Against the CLI's
train-salience on the bundled Cranfield (the same heads, bit for bit), on a synthetic task whose answer is known (the
learned document head ranks the informative tokens first), determinism, callbacks, starts, and bad input (nothing
written)."""
import numpy as np
import pytest

import aligner
import reference as ref

DIM = 12


def synthetic(seed=0, n_docs=60, n_queries=40):
    """Documents of noise tokens, each with a few 'topic' tokens; a query holds its topic's direction plus noise.
    Only the topic tokens tell documents apart, and they have a large component 0 (the signal a head can use)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_docs, DIM)).astype(np.float32)
    topics[:, 0] = 4.0
    docs, informative = [], []
    for d in range(n_docs):
        noise = rng.standard_normal((int(rng.integers(10, 20)), DIM)).astype(np.float32)
        noise[:, 0] = rng.uniform(-1, 1, len(noise))
        tokens = np.concatenate([noise, topics[d] + 0.1 * rng.standard_normal((3, DIM)).astype(np.float32)])
        docs.append(tokens.astype(np.float32))
        informative.append(np.arange(len(noise), len(tokens)))
    queries, examples = [], []
    for q in range(n_queries):
        d = int(rng.integers(0, n_docs))
        noise = rng.standard_normal((4, DIM)).astype(np.float32)
        noise[:, 0] = rng.uniform(-1, 1, 4)
        queries.append(np.concatenate([topics[d][None] + 0.1 * rng.standard_normal((1, DIM)), noise]).astype(np.float32))
        examples.append((q, [d]))
    return queries, docs, examples, informative


def test_training_learns_which_tokens_matter_and_is_deterministic(tmp_path):
    queries, docs, examples, informative = synthetic()
    seen = []
    kw = dict(alpha_query=1.0, alpha_doc=1.0, epochs=8, hard_negatives=8, holdout=0.2, seed=4)
    result = aligner.train_salience(queries, docs, examples, on_epoch=seen.append, out=tmp_path / "h.txt", **kw)
    assert result["dim"] == DIM and result["train_queries"] + result["holdout_queries"] == len(examples)
    assert [e["epoch"] for e in seen] == list(range(len(seen))) and len(result["epochs"]) == len(seen)
    assert result["epochs"][result["best_epoch"]]["holdout_loss"] < result["epochs"][0]["holdout_loss"]
    # the document head now weighs the topic tokens above the noise in most documents
    better = 0
    for d, keep in zip(docs, informative):
        u = aligner.salience(d, **result["doc"])
        better += u[keep].min() > np.median(np.delete(u, keep))
    assert better >= 0.9 * len(docs)
    # the file holds the same heads; a second run with the same seed, and one on 2 threads, give the same heads
    saved = aligner.load_salience_heads(tmp_path / "h.txt")
    # the provenance line names the settings as the CLI's does (the score objective has no token temperature)
    assert saved["trained_with"] == f"top1 mean epochs={result['best_epoch']} seed=4 init=none (python)"
    for side in ("query", "doc"):
        np.testing.assert_array_equal(saved[side]["weights"], result[side]["weights"])
        assert saved[side]["bias"] == result[side]["bias"]
        assert saved[side]["gate_alpha"] is None  # alpha 1: no gate
    for threads in (1, 2):
        again = aligner.train_salience(queries, docs, examples, threads=threads, **kw)
        for side in ("query", "doc"):
            np.testing.assert_array_equal(again[side]["weights"], result[side]["weights"])
    # joined arrays with offsets are the same input as lists
    qj, qo = np.concatenate(queries), np.concatenate([[0], np.cumsum([len(q) for q in queries])])
    dj, do = np.concatenate(docs), np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    joined = aligner.train_salience(qj, dj, examples, query_offsets=qo, doc_offsets=do, **kw)
    np.testing.assert_array_equal(joined["doc"]["weights"], result["doc"]["weights"])


def test_gated_heads_starts_and_given_negatives(tmp_path):
    queries, docs, examples, _ = synthetic(seed=1)
    gated = aligner.train_salience(queries, docs, examples, epochs=2, hard_negatives=4, alpha_query=0.5, alpha_doc=0.2)
    assert gated["query"]["gate_alpha"] == 0.5 and gated["doc"]["gate_alpha"] == 0.2
    assert gated["doc"]["gate_epsilon"] == 0.002
    # u = lambda * ReLU(w . x + b) with the gate's lambda in [0, 1] summing to the budget ceil(0.2 m)
    for d in docs[:10]:
        u = aligner.salience(d, **gated["doc"])
        relu = np.maximum(d.astype(np.float64) @ gated["doc"]["weights"] + gated["doc"]["bias"], 0)
        if np.all(relu > 0):
            lam = u / relu
            assert np.all(lam <= 1 + 1e-5) and lam.sum() == pytest.approx(aligner.gate_budget(0.2, len(d)), abs=1e-3)
    # a start from a dict or a file: with one epoch at learning rate ~0 the heads stay at the start
    start = {"query": {"weights": np.full(DIM, 0.5, np.float32), "bias": 0.25},
             "doc": {"weights": np.arange(DIM, dtype=np.float32) / DIM, "bias": 1.0, "gate_alpha": None}}
    tiny = dict(epochs=1, learning_rate=1e-12, hard_negatives=2, alpha_query=1.0, alpha_doc=1.0)
    r = aligner.train_salience(queries, docs, examples, start=start, out=tmp_path / "s.txt", **tiny)
    np.testing.assert_allclose(r["doc"]["weights"], start["doc"]["weights"], atol=1e-6)
    assert " init=dict " in aligner.load_salience_heads(tmp_path / "s.txt")["trained_with"]
    r2 = aligner.train_salience(queries, docs, examples, start=tmp_path / "s.txt", out=tmp_path / "s2.txt", **tiny)
    np.testing.assert_allclose(r2["doc"]["weights"], start["doc"]["weights"], atol=1e-6)
    assert " init=file " in aligner.load_salience_heads(tmp_path / "s2.txt")["trained_with"]
    # given negatives are kept with hard_negatives=0 (the loss then differs from mined ones)
    with_negatives = [(q, pos, [(pos[0] + 1) % len(docs), (pos[0] + 2) % len(docs)]) for q, pos in examples]
    a = aligner.train_salience(queries, docs, with_negatives, hard_negatives=0, epochs=1, holdout=0)
    b = aligner.train_salience(queries, docs, with_negatives, hard_negatives=3, epochs=1, holdout=0)
    assert a["epochs"][1]["train_loss"] != b["epochs"][1]["train_loss"]


def test_bad_input_is_refused_and_writes_nothing(tmp_path):
    queries, docs, examples, _ = synthetic(seed=2, n_docs=10, n_queries=6)
    out = tmp_path / "never.txt"

    def refused(error, match, *args, **kw):
        with pytest.raises(error, match=match):
            aligner.train_salience(*args, out=out, **{"epochs": 1, "hard_negatives": 2, **kw})
        assert not out.exists()

    refused(ValueError, "at least one labelled query", queries, docs, [])
    refused(ValueError, "alpha_query must be in \\(0, 1\\], got 0", queries, docs, examples, alpha_query=0.0)
    refused(ValueError, "alpha_doc must be in \\(0, 1\\], got 1.5", queries, docs, examples, alpha_doc=1.5)
    refused(ValueError, "epsilon must be finite and > 0, got -0.1", queries, docs, examples, epsilon=-0.1)
    refused(ValueError, "epsilon must be finite and > 0, got 0", queries, docs, examples, epsilon=0.0)
    refused(ValueError, "temperature", queries, docs, examples, temperature=float("nan"))
    refused(ValueError, "has no relevant document", queries, docs, [(0, [])])
    refused(ValueError, "names query 9", queries, docs, [(9, [1])])
    refused(ValueError, "names relevant document 10 of 10", queries, docs, [(0, [10])])
    refused(ValueError, "both relevant and negative", queries, docs, [(0, [1], [1])], hard_negatives=0)
    refused(ValueError, "not a document index", queries, docs, [(0, [-1])])
    refused(TypeError, "sequence of \\(query", queries, docs, 5)
    refused(TypeError, "examples\\[0\\] must be a", queries, docs, [(0,)])
    refused(TypeError, "must hold integers", queries, docs, [(0, np.array([1.0]))])
    bad = [d.copy() for d in docs]
    bad[3][2, 1] = np.nan
    refused(ValueError, "non-finite", queries, bad, examples)
    refused(ValueError, "columns", queries, [np.ones((3, DIM + 1), np.float32)], examples)
    refused(ValueError, "needs k >= 1, got k = 0", queries, docs, examples, strategy="top0")
    refused(TypeError, "on_epoch must be callable", queries, docs, examples, on_epoch=3)
    refused(TypeError, "start must be", queries, docs, examples, start=[1, 2])
    refused(ValueError, "start heads have dim 3", queries, docs, examples,
            start={"query": {"weights": np.ones(3), "bias": 0.0}, "doc": {"weights": np.ones(3), "bias": 0.0}})
    refused(OSError, "missing.txt", queries, docs, examples, start=tmp_path / "missing.txt")
    refused(ValueError, "objective must be 'score' or 'tokens', got 'nope'", queries, docs, examples, objective="nope")
    refused(TypeError, "incompatible function arguments", queries, docs, examples, objective=3)
    refused(ValueError, "token_temperature must be finite and > 0, got 0", queries, docs, examples, objective="tokens",
            token_temperature=0.0)
    refused(ValueError, "the tokens objective trains the gates", queries, docs, examples, objective="tokens",
            alpha_query=1.0, alpha_doc=1.0)
    refused(ValueError, "collection_negatives must be at most 2\\^20, got 1048577", queries, docs, examples,
            collection_negatives=2**20 + 1)
    refused(ValueError, "collection_negatives", queries, docs, examples, collection_negatives=-1)


@ref.needs_cli
@pytest.mark.parametrize("objective,ensemble,crowd", [("score", 1, 0), ("tokens", 1, 0), ("score", 2, 0), ("tokens", 1, 16)])
def test_the_same_heads_as_the_cli_on_cranfield(tmp_path, objective, ensemble, crowd):
    import os
    import subprocess
    cran = os.path.join(ref.DATA, "cranfield")
    # an epoch of the tokens objective costs 3 s here: one is enough to compare (and for each member of an ensemble)
    epochs = 2 if objective == "score" and ensemble == 1 and not crowd else 1
    cli_out = subprocess.run([ref.CLI, "train-salience", "--collection", cran, "--split", "test", "--epochs", str(epochs),
                              "--hard-negatives", "4", "--alpha-query", "0.5", "--alpha-doc", "0.4", "--threads", "2",
                              "--objective", objective, "--ensemble", str(ensemble), "--collection-negatives", str(crowd),
                              "--out", str(tmp_path / "cli.txt")],
                             check=True, capture_output=True, text=True).stdout
    assert ("member 2 of 2, seed 1" in cli_out) == (ensemble == 2)
    col = aligner.load_collection(cran)
    docs, queries, qrels = col["docs"], col["queries"], col["qrels"]
    index = {d: i for i, d in enumerate(docs["ids"])}
    # the CLI's examples: judged queries in collection order, relevant documents in judgment (document id) order
    examples = []
    for q, qid in enumerate(queries["ids"]):
        pos = [index[d] for d in sorted(qrels.get(qid, {})) if qrels[qid][d] > 0 and d in index]
        if pos:
            examples.append((q, pos))
    result = aligner.train_salience(queries["vectors"], docs["vectors"], examples, query_offsets=queries["offsets"],
                                    doc_offsets=docs["offsets"], epochs=epochs, hard_negatives=4, alpha_query=0.5,
                                    alpha_doc=0.4, threads=2, objective=objective, ensemble=ensemble,
                                    collection_negatives=crowd, out=tmp_path / "py.txt")
    cli = aligner.load_salience_heads(tmp_path / "cli.txt")
    assert (" ensemble=2 " in cli["trained_with"]) == (ensemble == 2)
    assert len(result.get("members", [])) == (2 if ensemble == 2 else 0)
    # the provenance lines hold the same fields but the CLI's split (Python is given its examples)
    py_line = aligner.load_salience_heads(tmp_path / "py.txt")["trained_with"]
    assert py_line == cli["trained_with"].replace(" split=test", "") + " (python)"
    assert ("objective=tokens token_temperature=50" in py_line) == (objective == "tokens")
    assert (" collection_negatives=16 " in py_line) == (crowd == 16)
    for side in ("query", "doc"):
        np.testing.assert_array_equal(result[side]["weights"], cli[side]["weights"])
        assert np.float32(result[side]["bias"]) == np.float32(cli[side]["bias"])
        assert result[side]["gate_alpha"] == cli[side]["gate_alpha"]


@ref.needs_cli
def test_a_start_from_the_idf_fit_as_the_cli_init(tmp_path):
    import os
    import subprocess
    cran = os.path.join(ref.DATA, "cranfield")
    subprocess.run([ref.CLI, "train-salience", "--collection", cran, "--split", "test", "--epochs", "1",
                    "--hard-negatives", "2", "--init", "idf-fit", "--out", str(tmp_path / "cli.txt")], check=True,
                   capture_output=True)
    col = aligner.load_collection(cran)
    docs, queries, qrels = col["docs"], col["queries"], col["qrels"]
    # the CLI's start: the FFN fitted to the IDF of 200,000 sampled document tokens, seed 0 ^ 0x1df
    head, r2 = aligner.fit_idf_salience(docs["vectors"], docs["token_ids"], docs["offsets"], vocab_size=col["vocab_size"],
                                        seed=0x1DF)
    assert 0.5 < r2 < 1
    index = {d: i for i, d in enumerate(docs["ids"])}
    examples = [(q, [index[d] for d in sorted(qrels[qid]) if qrels[qid][d] > 0 and d in index])
                for q, qid in enumerate(queries["ids"]) if qid in qrels]
    examples = [e for e in examples if e[1]]
    result = aligner.train_salience(queries["vectors"], docs["vectors"], examples, query_offsets=queries["offsets"],
                                    doc_offsets=docs["offsets"], epochs=1, hard_negatives=2,
                                    start={"query": head, "doc": head})
    cli = aligner.load_salience_heads(tmp_path / "cli.txt")
    for side in ("query", "doc"):
        np.testing.assert_array_equal(result[side]["weights"], cli[side]["weights"])


def test_an_ensemble_is_the_mean_of_the_trainings_of_its_seeds(tmp_path):
    queries, docs, examples, _ = synthetic(3)
    settings = dict(alpha_query=0.5, alpha_doc=0.4, epsilon=0.1, epochs=3, hard_negatives=4, holdout=0.2)
    starts = []
    bag = aligner.train_salience(queries, docs, examples, seed=7, ensemble=3, on_epoch=lambda e: starts.append(e["epoch"] == 0),
                                 out=tmp_path / "bag.txt", **settings)
    assert sum(starts) == 3 and bag["epochs"] == [] and bag["best_epoch"] == 0 and len(bag["members"]) == 3
    single = [aligner.train_salience(queries, docs, examples, seed=7 + i, **settings) for i in range(3)]
    for side in ("query", "doc"):
        for member, alone in zip(bag["members"], single):
            np.testing.assert_array_equal(member[side]["weights"], alone[side]["weights"])
            assert member["best_epoch"] == alone["best_epoch"]
        weights = np.array([alone[side]["weights"] for alone in single], np.float64)
        np.testing.assert_array_equal(np.asarray(bag[side]["weights"], np.float32),
                                      (((weights[0] + weights[1]) + weights[2]) / 3.0).astype(np.float32))
        assert np.float32(bag[side]["bias"]) == np.float32(sum(np.float64(np.float32(a[side]["bias"])) for a in single) / 3.0)
    assert not np.array_equal(single[0]["doc"]["weights"], single[1]["doc"]["weights"])
    line = aligner.load_salience_heads(tmp_path / "bag.txt")["trained_with"]
    assert " seed=7 ensemble=3 " in line
    with pytest.raises(ValueError, match="ensemble must be in"):
        aligner.train_salience(queries, docs, examples, ensemble=0, out=tmp_path / "none.txt", **settings)
    assert not (tmp_path / "none.txt").exists()
