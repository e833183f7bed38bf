"""Few-shot adaptation and salience fitting from Python: search_multi against one search per strategy, adapt and
fold_protocol against the CLI's `aligner adapt` on the bundled Cranfield and against plain NumPy, token_idf,
fit_salience and fit_idf_salience against NumPy least squares, and bad input."""
import os
import subprocess

import numpy as np
import pytest

import aligner
import reference as ref

DIM = 16


def collection(seed=0, docs=50):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 30)), DIM)).astype(np.float32) for _ in range(docs)]


def test_search_multi_equals_one_search_per_strategy(tmp_path):
    docs = collection()
    r = aligner.Retriever(DIM, storage="bf16")
    r.add(docs)
    r.remove([3])
    with aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="residual:4", residual_centroids=16) as w:
        w.add(docs)
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    rng = np.random.default_rng(1)
    grid = aligner.paper_grid()
    assert grid == ["top1", "topk:2", "topk:4", "topk:6", "topk:8", "topp:0.005", "topp:0.01", "topp:0.015", "topp:0.02"]
    for _ in range(4):
        q = rng.standard_normal((5, DIM)).astype(np.float32)
        for source, kw in ((r, dict(candidates=20)), (r, dict(exhaustive=True)), (d, dict()), (d, dict(exhaustive=True))):
            for strategies in (grid, "paper", "topk:3,top1"):
                multi = source.search_multi(q, strategies, top=7, **kw)
                names = grid if strategies == "paper" else strategies.split(",") if isinstance(strategies, str) else strategies
                assert len(multi) == len(names)
                for name, got in zip(names, multi):
                    want = source.search(q, strategy=name, top=7, **kw)
                    np.testing.assert_array_equal(got.ids, want.ids)
                    np.testing.assert_array_equal(got.scores, want.scores)
    with pytest.raises(ValueError, match="unknown alignment strategy"):
        r.search_multi(q, ["top1", "best"])
    with pytest.raises(ValueError, match="empty"):
        r.search_multi(q, [])
    with pytest.raises(TypeError, match="strategies must be"):
        r.search_multi(q, 3)


def test_adapt_and_the_fold_protocol_against_numpy():
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 1, (30, 4))
    values[:, 2] += 0.05  # column 2 is best on average
    grid = ["top1", "topk:2", "topk:4", "topp:0.01"]
    a = aligner.adapt(values, grid=grid)
    np.testing.assert_allclose(a["means"], values.mean(axis=0))
    assert a["best"] == int(np.argmax(values.mean(axis=0))) and a["strategy"] == grid[a["best"]]
    sub = [0, 5, 7]
    assert aligner.adapt(values, sub, grid=grid)["best"] == int(np.argmax(values[sub].mean(axis=0)))
    assert aligner.adapt(values, grid=grid, choices=2)["best"] == int(np.argmax(values.mean(axis=0)[:2]))
    ties = np.ones((3, 4))
    assert aligner.adapt(ties, grid=grid)["best"] == 0  # ties go to the earlier strategy
    f = aligner.fold_protocol(values, grid=grid, shots=8, seed=3)
    assert len(f["folds"]) == 3 and f["baseline"] == "top1"
    held = []
    for fold in f["folds"]:
        shots = fold["shots"]
        assert len(shots) == 8 and fold["best"] == int(np.argmax(values[shots].mean(axis=0)))
        rest = np.setdiff1d(np.arange(30), shots)
        assert fold["held_out"] == pytest.approx(values[rest, fold["best"]].mean(), abs=1e-12)
        assert fold["baseline_held_out"] == pytest.approx(values[rest, 0].mean(), abs=1e-12)
        held.append(fold["held_out"])
    assert f["mean"] == pytest.approx(np.mean(held), abs=1e-12) and f["std"] == pytest.approx(np.std(held), abs=1e-12)
    shots = np.concatenate([fold["shots"] for fold in f["folds"]])
    assert len(set(shots.tolist())) == 24  # disjoint folds
    assert aligner.fold_protocol(values, grid=grid, shots=8, seed=3)["mean"] == f["mean"]  # seeded
    # bad input
    with pytest.raises(ValueError, match="2-d"):
        aligner.adapt(values[0], grid=grid)
    with pytest.raises(ValueError, match="4 columns for a grid of 9"):
        aligner.adapt(values)
    bad = values.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"values\[4, 1\] is not finite"):
        aligner.adapt(bad, grid=grid)
    with pytest.raises(ValueError, match="outside the table of 30"):
        aligner.adapt(values, [30], grid=grid)
    with pytest.raises(ValueError, match="at least one labelled query"):
        aligner.adapt(values, [], grid=grid)
    with pytest.raises(ValueError, match="more than 30 labelled queries"):
        aligner.fold_protocol(values, grid=grid, shots=30)
    with pytest.raises(ValueError, match="choices must be >= 1"):
        aligner.adapt(values, grid=grid, choices=0)
    with pytest.raises(ValueError, match="baseline index 7"):
        aligner.fold_protocol(values, grid=grid, baseline=7)


@ref.needs_cli
def test_fold_protocol_equals_the_cli_adapt_on_cranfield():
    cran = os.path.join(ref.DATA, "cranfield")
    out = subprocess.run([ref.CLI, "adapt", "--collection", cran], check=True, capture_output=True, text=True).stdout
    col = aligner.load_collection(cran)
    docs, queries, qrels = col["docs"], col["queries"], col["qrels"]
    r = aligner.Retriever(docs["vectors"].shape[1], token_index=False)
    r.add(docs["vectors"], docs["offsets"])
    judged = [i for i, q in enumerate(queries["ids"]) if q in qrels]
    qv, qo = queries["vectors"], queries["offsets"]
    grid = aligner.paper_grid()
    runs = [dict() for _ in grid]
    for i in judged:
        for g, res in enumerate(r.search_multi(qv[qo[i]:qo[i + 1]], grid, top=100, exhaustive=True)):
            runs[g].update(aligner.run_from_results([queries["ids"][i]], [res], docs["ids"]))
    per = [aligner.ndcg_at(run, qrels, 10, all_judged=True)[1] for run in runs]
    qids = sorted(per[0])  # the CLI's table: the judged queries in query-id order
    values = np.array([[p[q] for p in per] for q in qids])
    f = aligner.fold_protocol(values, grid=grid, shots=8, seed=0)
    line = [x for x in out.splitlines() if x.startswith("adapted")][0]
    assert line.startswith(f"adapted ndcg@10={f['mean']:.4f} +- {f['std']:.4f} top1 ndcg@10={f['baseline_mean']:.4f} "
                           f"+- {f['baseline_std']:.4f} folds={len(f['folds'])} shots=8 seed=0")
    first = [x for x in out.splitlines() if x.startswith("fold 1:")][0]
    assert first.startswith(f"fold 1: chose {f['folds'][0]['strategy']} ")


def test_token_idf_and_the_salience_fits():
    rng = np.random.default_rng(4)
    offsets = np.array([0, 3, 3, 7, 12])
    ids = np.array([0, 1, 1, 2, 0, 3, 3, 1, 4, 4, 0, 2])
    idf = aligner.token_idf(ids, offsets)
    n = 4
    df = np.array([len({d for d in range(n) if t in ids[offsets[d]:offsets[d + 1]]}) for t in range(5)])
    np.testing.assert_allclose(idf, np.log(1 + (n - df + 0.5) / (df + 0.5)), rtol=1e-6)
    assert len(aligner.token_idf(ids, offsets, vocab_size=9)) == 9
    with pytest.raises(ValueError, match="outside the vocabulary of 3"):
        aligner.token_idf(ids, offsets, vocab_size=3)
    with pytest.raises(ValueError, match="token_ids has 11 entries for 12 tokens"):
        aligner.token_idf(ids[:-1], offsets)
    # fit_salience: the least-squares solution (ridge 0) and its R^2
    x = rng.standard_normal((200, 6)).astype(np.float32)
    w_true = rng.standard_normal(6)
    y = (x @ w_true + 0.3 + 0.01 * rng.standard_normal(200)).astype(np.float32)
    head, r2 = aligner.fit_salience(x, y, ridge=0.0)
    design = np.hstack([x.astype(np.float64), np.ones((200, 1))])
    beta = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(head["weights"], beta[:6], rtol=1e-4, atol=1e-5)
    assert head["bias"] == pytest.approx(beta[6], abs=1e-5) and head["gate_alpha"] is None
    resid = y - design @ beta
    assert r2 == pytest.approx(1 - resid @ resid / ((y - y.mean()) @ (y - y.mean())), abs=1e-6)
    np.testing.assert_allclose(aligner.salience(x[:5], **head), np.maximum(x[:5] @ head["weights"] + head["bias"], 0), rtol=1e-5)
    gated, _ = aligner.fit_salience(x, y, gate_alpha=0.5, gate_epsilon=0.01)
    assert gated["gate_alpha"] == 0.5 and gated["gate_epsilon"] == 0.01
    with pytest.raises(ValueError, match="targets must have 200 entries"):
        aligner.fit_salience(x, y[:10])
    with pytest.raises(ValueError, match="ridge"):
        aligner.fit_salience(x, y, ridge=-1.0)
    with pytest.raises(ValueError, match="gate_alpha"):
        aligner.fit_salience(x, y, gate_alpha=2.0)
    # fit_idf_salience with every token sampled is the fit to the IDF of every token
    docs = [rng.standard_normal((int(k), 6)).astype(np.float32) for k in np.diff(offsets)]
    head, r2 = aligner.fit_idf_salience(docs, ids, sample=1000)
    want, want_r2 = aligner.fit_salience(np.concatenate(docs), idf[ids])
    np.testing.assert_allclose(head["weights"], want["weights"], rtol=1e-4, atol=1e-5)
    assert r2 == pytest.approx(want_r2, abs=1e-6)
    with pytest.raises(ValueError, match="token_ids has 3 entries for 12 tokens"):
        aligner.fit_idf_salience(docs, ids[:3])
