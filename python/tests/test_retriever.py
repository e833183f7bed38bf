"""aligner.Retriever against brute force (aligner.score over every document and the NumPy reference), across
backends and storages, with removals, filters, threads, files; and against the C++ CLI on the bundled Cranfield."""
import os
import subprocess
import threading

import numpy as np
import pytest

import aligner
import reference as ref

DIM = 16


def collection(seed=0, docs=60, dim=DIM, duplicates=True):
    rng = np.random.default_rng(seed)
    vocab = rng.standard_normal((40, dim)).astype(np.float32)
    out = []
    for i in range(docs):
        m = int(rng.integers(1, 30))
        if duplicates and i % 2 == 0:  # static-embedding style: tokens repeat vectors of a small vocabulary
            out.append(vocab[rng.integers(0, len(vocab), m)])
        else:
            out.append(rng.standard_normal((m, dim)).astype(np.float32))
    return out


def brute_force(docs, q, strategy="top1", normalize="mean", top=10, live=None):
    scores = [(aligner.score(q, d, strategy=strategy, normalize=normalize), i) for i, d in enumerate(docs)
              if live is None or i in live]
    scores.sort(key=lambda si: (-si[0], si[1]))
    return [i for _, i in scores[:top]], [s for s, _ in scores[:top]]


@pytest.mark.parametrize("backend", aligner.backends)
@pytest.mark.parametrize("strategy", ["top1", "topk:3", "topp:0.2"])
def test_search_equals_brute_force(backend, strategy):
    docs = collection()
    r = aligner.Retriever(DIM, backend=backend)
    ids = r.add(docs)
    np.testing.assert_array_equal(ids, np.arange(len(docs)))
    assert len(r) == r.size == len(docs)
    rng = np.random.default_rng(7)
    for _ in range(5):
        q = rng.standard_normal((6, DIM)).astype(np.float32)
        want_ids, want_scores = brute_force(docs, q, strategy)
        res = r.search(q, top=10, strategy=strategy, exhaustive=True)
        np.testing.assert_array_equal(res.ids, want_ids)
        np.testing.assert_array_equal(res.scores, np.float32(want_scores))
        assert res.reranked_all_allowed
        # k' = every token: the token search finds every document, so the ranking is the exhaustive one
        got_ids, got_scores = r.search(q, top=10, strategy=strategy, candidates=2000)
        if backend in ("exact", "exact-bf16", "exact-i8", "faiss-flat"):
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(got_scores, np.float32(want_scores))
        for i, s in zip(got_ids, got_scores):  # any backend: each hit carries its document's exact score
            assert s == aligner.score(q, docs[i], strategy=strategy)
        # the double reference agrees with the kernel
        for i, s in zip(res.ids[:3], res.scores[:3]):
            assert s == pytest.approx(ref.score(q, docs[i], strategy), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("storage", ["bf16", "f16", "i8", "residual:4", "residual:8"])
def test_compressed_stores_rank_like_their_own_scores(storage):
    docs = collection(1, docs=80, duplicates=False)
    r = aligner.Retriever(DIM, storage=storage, residual_centroids=16 if storage.startswith("residual") else 0)
    r.add(docs)
    assert r.storage == storage.split(":")[0]
    f32 = aligner.Retriever(DIM)
    f32.add(docs)
    assert r.store_bytes < f32.store_bytes
    q = np.random.default_rng(2).standard_normal((5, DIM)).astype(np.float32)
    exact_ids, _ = f32.search(q, top=5, exhaustive=True)
    ids, scores = r.search(q, top=80, exhaustive=True)
    assert list(scores) == sorted(scores, reverse=True)
    assert len(set(ids[:5]) & set(exact_ids)) >= 3  # a lossy store keeps most of the top 5
    if storage.startswith("residual"):
        post_ids, post_scores = r.search(q, top=80, nprobe=16)  # every centroid probed: every document is a candidate
        np.testing.assert_array_equal(post_ids, ids)
        np.testing.assert_array_equal(post_scores, scores)


def test_residual_without_token_index_searches_by_postings_only():
    docs = collection(3, docs=50, duplicates=False)
    r = aligner.Retriever(DIM, storage="residual", residual_nbits=2, residual_centroids=8, token_index=False)
    r.add(docs)
    assert r.indexed_tokens == 0
    q = docs[4][:3]
    with pytest.raises(ValueError, match="no token index"):
        r.search(q)
    res = r.search(q, nprobe=8, top=50)
    full = r.search(q, exhaustive=True, top=50)
    np.testing.assert_array_equal(res.ids, full.ids)
    assert res.backend_hits > 0


def test_residual_anisotropy_is_checked_and_one_means_nearest_buckets():
    docs = collection(5, docs=60, duplicates=False)
    for bad in (0.5, -1.0, float("nan"), 2e6):
        with pytest.raises(ValueError, match="residual_anisotropy must be 0"):
            aligner.Retriever(DIM, storage="residual:2", residual_anisotropy=bad)
    q = np.random.default_rng(7).standard_normal((4, DIM)).astype(np.float32)
    results = []
    for eta in (1.0, 0.0, 50.0):
        r = aligner.Retriever(DIM, storage="residual:2", residual_centroids=8, residual_anisotropy=eta)
        r.add(docs)
        results.append(r.search(q, top=60, exhaustive=True).scores)
    # the codes differ with the anisotropy, so do the scores of the same documents
    assert not np.array_equal(np.sort(results[0]), np.sort(results[2]))


def test_remove_filter_allowed_ids():
    docs = collection(4)
    r = aligner.Retriever(DIM)
    r.add(docs)
    r.remove(3)
    r.remove(np.array([5, 8]))
    assert len(r) == len(docs) - 3 and r.is_removed(5) and not r.is_removed(4)
    with pytest.raises(ValueError, match="already removed"):
        r.remove([9, 5])
    assert not r.is_removed(9)  # all or nothing
    with pytest.raises(ValueError, match="unknown document id 999"):
        r.remove(999)
    with pytest.raises(ValueError, match="listed twice"):
        r.remove([10, 10])
    live = set(range(len(docs))) - {3, 5, 8}
    q = docs[3][:4]
    want, _ = brute_force(docs, q, top=60, live=live)
    ids, _ = r.search(q, top=60, exhaustive=True)
    assert list(ids) == want
    even = r.search(q, top=60, candidates=2, filter=lambda i: i % 2 == 0)
    assert list(even.ids) == [i for i in want if i % 2 == 0]
    allowed = np.array([1, 2, 7, 11, 40], np.int64)
    got = r.search(q, top=3, candidates=1, allowed_ids=allowed)
    assert list(got.ids) == [i for i in want if i in set(allowed.tolist())][:3]

    def boom(i):
        raise KeyError("from the filter")
    with pytest.raises(KeyError, match="from the filter"):
        r.search(q, filter=boom)
    with pytest.raises(TypeError, match="filter"):
        r.search(q, filter=3)


def test_search_batch_equals_serial_searches_on_threads():
    docs = collection(5)
    r = aligner.Retriever(DIM)
    r.add(docs)
    rng = np.random.default_rng(8)
    queries = [rng.standard_normal((int(rng.integers(1, 9)), DIM)).astype(np.float32) for _ in range(25)]
    for threads in (1, 2, 0):
        batch = r.search_batch(queries, threads=threads, top=7, strategy="topk:2", candidates=50)
        for q, res in zip(queries, batch):
            one = r.search(q, top=7, strategy="topk:2", candidates=50)
            np.testing.assert_array_equal(res.ids, one.ids)
            np.testing.assert_array_equal(res.scores, one.scores)
        # exhaustive: blocks of queries sweep each document once; the same results bit for bit, with salience and
        # a Python filter too
        uq = rng.random(sum(len(q) for q in queries)).astype(np.float32)
        kw = dict(top=9, strategy="topp:0.2", exhaustive=True, filter=lambda d: d % 4 != 2)
        batch = r.search_batch(queries, threads=threads, query_salience=uq, **kw)
        at = 0
        for q, res in zip(queries, batch):
            one = r.search(q, query_salience=uq[at:at + len(q)], **kw)
            at += len(q)
            np.testing.assert_array_equal(res.ids, one.ids)
            np.testing.assert_array_equal(res.scores, one.scores)
    offsets = np.cumsum([0] + [len(q) for q in queries])
    joined = r.search_batch(np.concatenate(queries), offsets, top=7)
    assert [list(x.ids) for x in joined] == [list(r.search(q, top=7).ids) for q in queries]
    assert aligner.run_from_results(["a", "b"], joined[:2], [f"d{i}" for i in range(len(docs))])["b"] == {
        f"d{i}": float(s) for i, s in zip(joined[1].ids, joined[1].scores)}


@pytest.mark.parametrize("storage", ["f32", "bf16", "residual"])
def test_one_search_on_several_threads_equals_one_thread(storage):
    # threads= shares one search's rerank out in chunks (of at least 16 documents): the same results bit for bit
    docs = collection(7, docs=300)
    r = aligner.Retriever(DIM, storage=storage, **(dict(residual_centroids=32) if storage == "residual" else {}))
    r.add(docs)
    rng = np.random.default_rng(9)
    q = rng.standard_normal((6, DIM)).astype(np.float32)
    settings = [dict(exhaustive=True), dict(candidates=40), dict(candidates=40, ndocs=20)]
    if storage == "residual":
        settings.append(dict(nprobe=3))
    for kw in settings:
        one = r.search(q, top=50, strategy="topk:2", **kw)
        multi_one = r.search_multi(q, ["top1", "topp:0.1"], top=50, **kw)
        for threads in (2, 0):
            many = r.search(q, top=50, strategy="topk:2", threads=threads, **kw)
            np.testing.assert_array_equal(many.ids, one.ids)
            np.testing.assert_array_equal(many.scores, one.scores)
            for a, b in zip(r.search_multi(q, ["top1", "topp:0.1"], top=50, threads=threads, **kw), multi_one):
                np.testing.assert_array_equal(a.ids, b.ids)
                np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(ValueError, match="threads must be >= 0, got -1"):
        r.search(q, threads=-1)
    with pytest.raises(TypeError, match="threads must be an int"):
        r.search(q, threads=True)


def test_token_search_batches_equal_serial_searches_on_every_exact_backend():
    # The exact backends put consecutive queries' kept tokens into one scan (up to 64 rows): the same hits as each
    # query's own search, so the same results bit for bit, with query pruning, a filter and an empty query.
    docs = collection(11)
    rng = np.random.default_rng(12)
    queries = [rng.standard_normal((int(rng.integers(1, 15)), DIM)).astype(np.float32) for _ in range(30)]
    queries[7] = np.zeros((0, DIM), np.float32)
    uq = rng.random(sum(len(q) for q in queries)).astype(np.float32)
    for backend in ("exact", "exact-bf16", "exact-i8"):
        r = aligner.Retriever(DIM, backend=backend, doc_prune=0.7)
        r.add(docs, salience=np.random.default_rng(13).random(sum(len(d) for d in docs)).astype(np.float32))
        for kw in (dict(candidates=5), dict(candidates=3, query_prune=0.5, ndocs=4),
                   dict(candidates=8, filter=lambda d: d % 3 != 0, strategy="topk:2")):
            batch = r.search_batch(queries, threads=2, top=6, query_salience=uq, **kw)
            at = 0
            for q, res in zip(queries, batch):
                one = r.search(q, top=6, query_salience=uq[at:at + len(q)], **kw)
                at += len(q)
                np.testing.assert_array_equal(res.ids, one.ids)
                np.testing.assert_array_equal(res.scores, one.scores)
            assert len(batch[7].ids) == 0


def test_python_threads_search_while_another_adds():
    docs = collection(6)
    r = aligner.Retriever(DIM)
    r.add(docs[:30])
    errors = []
    q = docs[0][:3]

    def searcher():
        try:
            for _ in range(40):
                ids, scores = r.search(q, top=5, filter=lambda i: True)
                assert list(scores) == sorted(scores, reverse=True)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for d in docs[30:]:
        r.add([d])
    for t in threads:
        t.join()
    assert not errors
    assert len(r) == len(docs)


def test_explain_returns_the_search_score():
    docs = collection(7)
    r = aligner.Retriever(DIM)
    r.add(docs, salience=np.random.default_rng(1).uniform(0.1, 1, sum(len(d) for d in docs)).astype(np.float32))
    q = docs[2][:5]
    for strategy in ("top1", "topk:2", "topp:0.3"):
        res = r.search(q, top=3, strategy=strategy, exhaustive=True)
        for i, s in zip(res.ids, res.scores):
            e = r.explain(q, int(i), strategy=strategy)
            assert e["score"] == s
            assert len(e["query_token"]) == len(e["doc_token"]) == len(e["similarity"]) == len(e["weight"])
            assert e["score"] == pytest.approx(e["numerator"] / e["z"], rel=1e-5)
    r.remove(2)
    with pytest.raises(ValueError, match="removed"):
        r.explain(q, 2)


def test_salience_as_one_array_per_document_equals_the_joined_array(tmp_path):
    docs = collection(8, docs=12)
    rng = np.random.default_rng(2)
    per_doc = [rng.uniform(0.1, 1, len(d)).astype(np.float32) for d in docs]
    joined = aligner.Retriever(DIM)
    joined.add(docs, salience=np.concatenate(per_doc))
    listed = aligner.Retriever(DIM)
    listed.add(docs, salience=[list(map(float, u)) if i % 2 else u for i, u in enumerate(per_doc)])
    queries = [docs[1][:4], docs[5][:6]]
    uq = [rng.uniform(0.1, 1, len(q)).astype(np.float32) for q in queries]
    for a, b in zip(joined.search_batch(queries, top=5, exhaustive=True, query_salience=np.concatenate(uq)),
                    listed.search_batch(queries, top=5, exhaustive=True, query_salience=uq)):
        assert list(a.ids) == list(b.ids) and list(a.scores) == list(b.scores)
    # One array with offsets, and score_batch's doc_salience.
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    flat = np.concatenate(docs)
    assert np.array_equal(aligner.score_batch(queries[0], flat, offsets, doc_salience=per_doc),
                          aligner.score_batch(queries[0], docs, doc_salience=np.concatenate(per_doc)))
    # A list that does not match the documents is refused by name, and nothing is added.
    before = len(listed)
    with pytest.raises(ValueError, match=r"salience\[3\] has 2 values for a sequence of"):
        listed.add(docs, salience=per_doc[:3] + [np.ones(2, np.float32)] + per_doc[4:])
    with pytest.raises(ValueError, match="11 per-sequence arrays for 12 sequences"):
        listed.add(docs, salience=per_doc[:11])
    with pytest.raises(ValueError, match="query_salience: 1 per-sequence arrays for 2 sequences"):
        listed.search_batch(queries, query_salience=uq[:1])
    assert len(listed) == before
    # A directory's add takes the same form.
    with aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32") as w:
        w.add(docs, salience=per_doc)
        assert w.size == len(docs)


def test_save_and_load(tmp_path):
    docs = collection(8)
    for backend in aligner.backends:
        r = aligner.Retriever(DIM, backend=backend, storage="bf16")
        r.add(docs)
        r.remove(1)
        path = tmp_path / f"{backend}.aidx"
        r.save(path)
        q = docs[1][:4]
        want = r.search(q, top=20, candidates=100)
        for mmap in (True, False):
            back = aligner.Retriever.load(path, mmap=mmap)
            assert back.backend == backend and back.storage == "bf16" and len(back) == len(docs) - 1
            got = back.search(q, top=20, candidates=100)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.scores, want.scores)
    with pytest.raises(OSError, match="missing.aidx"):
        aligner.Retriever.load(tmp_path / "missing.aidx")
    (tmp_path / "junk.aidx").write_bytes(b"not an index")
    with pytest.raises(OSError, match="junk.aidx"):
        aligner.Retriever.load(tmp_path / "junk.aidx")


def test_bad_arguments_change_nothing():
    docs = collection(9)
    r = aligner.Retriever(DIM)
    r.add(docs[:5])
    bad = docs[5].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        r.add([docs[6], bad])
    assert r.size == 5
    with pytest.raises(ValueError, match="docs\\[1\\] must have 16 columns"):
        r.add([docs[6], np.ones((3, 4), np.float32)])
    with pytest.raises(ValueError, match="salience"):
        r.add(docs[6], salience=np.ones(2, np.float32))
    assert r.size == 5
    empty = r.search(np.zeros((0, DIM), np.float32))
    assert len(empty) == 0 and empty.empty_query
    assert not r.search(docs[0]).empty_query
    with pytest.raises(ValueError, match="query must have 16 columns"):
        r.search(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="top must be >= 1"):
        r.search(docs[0], top=0)
    # Integer arguments are refused by name with the value (NumPy integers are taken).
    for kw, err, msg in ((dict(ndocs=-1), ValueError, "ndocs must be >= 0, got -1"),
                         (dict(candidates=-5), ValueError, "candidates must be >= 0, got -5"),
                         (dict(nprobe=1.5), TypeError, "nprobe must be an int, got float"),
                         (dict(top=True), TypeError, "top must be an int, got bool")):
        for call in (lambda: r.search(docs[0], **kw), lambda: r.search_batch([docs[0]], **kw),
                     lambda: r.search_multi(docs[0], "top1", **kw)):
            with pytest.raises(err, match=msg):
                call()
    assert r.search(docs[0], top=np.int64(2), ndocs=np.uint32(3), candidates=np.int32(50)).ids.size == 2
    # A strategy named twice in a grid is refused, as a string or as a list.
    with pytest.raises(ValueError, match="names top1 twice"):
        r.search_multi(docs[0], "top1,topk:2,top1")
    with pytest.raises(ValueError, match="names topk:2 twice"):
        r.search_multi(docs[0], ["topk:2", "top1", "topk:2"])
    with pytest.raises(ValueError, match="backend must be one of"):
        aligner.Retriever(DIM, backend="annoy")
    with pytest.raises(ValueError, match="storage must be one of"):
        aligner.Retriever(DIM, storage="f8")
    with pytest.raises(ValueError, match="residual:N"):
        aligner.Retriever(DIM, storage="residual:3")
    with pytest.raises(ValueError, match="dim must be >= 1"):
        aligner.Retriever(0)
    with pytest.raises(TypeError, match="dim must be an int"):
        aligner.Retriever(2.5)
    with pytest.raises(ValueError, match="doc_prune"):
        aligner.Retriever(DIM, doc_prune=1.5)


CLI, DATA = ref.CLI, ref.DATA


@ref.needs_cli
def test_same_results_as_the_cli_on_cranfield(tmp_path):
    cran = os.path.join(DATA, "cranfield")
    col = aligner.load_collection(cran)
    docs, queries, qrels = col["docs"], col["queries"], col["qrels"]
    assert len(docs["ids"]) == 1400 and len(queries["ids"]) == 225
    # 1. an index the CLI built, searched from Python; 2. one Python built, searched by the CLI
    cli_index = tmp_path / "cli.aidx"
    subprocess.run([CLI, "index", "--collection", cran, "--out", str(cli_index), "--storage", "bf16"], check=True,
                   capture_output=True)
    py_index = tmp_path / "py.aidx"
    built = aligner.Retriever(docs["vectors"].shape[1], storage="bf16")
    built.add(docs["vectors"], docs["offsets"])
    built.save(py_index)
    judged = [i for i, q in enumerate(queries["ids"]) if q in qrels]
    qv, qo = queries["vectors"], queries["offsets"]
    qlist = [qv[qo[i]:qo[i + 1]] for i in judged]
    for index in (cli_index, py_index):
        run_file = tmp_path / (index.stem + ".run")
        out = subprocess.run([CLI, "search", "--index", str(index), "--collection", cran, "--strategy", "topk:2",
                              "--top", "100", "--run", str(run_file)], check=True, capture_output=True, text=True)
        cli_run = aligner.load_run(run_file)
        r = aligner.Retriever.load(index)
        results = r.search_batch(qlist, top=100, strategy="topk:2", exhaustive=True)
        py_run = aligner.run_from_results([queries["ids"][i] for i in judged], results, docs["ids"])
        assert cli_run.keys() == py_run.keys()
        for qid in py_run:
            # the same documents with the same scores (the CLI writes ties in trec_eval's order: doc id descending)
            assert set(cli_run[qid]) == set(py_run[qid])
            np.testing.assert_allclose([cli_run[qid][d] for d in py_run[qid]], list(py_run[qid].values()), rtol=1e-7)
            assert [d for d, _ in ref.trec_order(cli_run[qid])] == [d for d, _ in ref.trec_order(py_run[qid])]
        ndcg, per = aligner.ndcg_at(py_run, qrels, 10)
        want, want_per = ref.ndcg(py_run, qrels, 10)
        assert ndcg == pytest.approx(want, abs=1e-12)
        assert per == pytest.approx(want_per, abs=1e-12)
        assert f"ndcg@10={ndcg:.4f}" in out.stdout


def test_salience_that_only_chooses_tokens_leaves_the_rerank_unweighted():
    docs = collection(seed=11, duplicates=False)
    rng = np.random.default_rng(12)
    ud = [rng.uniform(0.1, 2.0, len(d)).astype(np.float32) for d in docs]
    r = aligner.Retriever(DIM, doc_prune=0.3)
    r.add(docs, salience=np.concatenate(ud))
    q = rng.standard_normal((6, DIM)).astype(np.float32)
    uq = rng.uniform(0.1, 2.0, 6).astype(np.float32)
    kept = r.search(q, top=60, candidates=5, query_salience=uq, query_prune=0.5, use_doc_salience=False,
                    use_query_salience=False)
    weighted = r.search(q, top=60, candidates=5, query_salience=uq, query_prune=0.5)
    assert len(kept.ids) > 0 and kept.candidates_scored == weighted.candidates_scored
    for i, s in zip(kept.ids, kept.scores):  # the candidates of the kept tokens, scored without weights
        assert s == pytest.approx(ref.score(q, docs[i], "top1"), rel=1e-5, abs=1e-5)
    batch = r.search_batch([q], top=60, candidates=5, query_salience=uq, query_prune=0.5, use_doc_salience=False,
                           use_query_salience=False)
    assert list(batch[0].ids) == list(kept.ids)


@pytest.mark.skipif("faiss-ivf" not in aligner.backends, reason="this build has no FAISS")
def test_faiss_ivf_probing_every_list_is_exhaustive_and_threads_build_hnswlib():
    docs = collection(3, docs=80, duplicates=False)
    r = aligner.Retriever(DIM, backend="faiss-ivf", nlist=4, ivf_nprobe=4)
    r.add(docs)
    q = np.random.default_rng(4).standard_normal((5, DIM)).astype(np.float32)
    want_ids, want_scores = brute_force(docs, q, "top1")
    ids, scores = r.search(q, top=10, candidates=len(docs) * 30)  # every list probed, k' past every token
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, np.float32(want_scores))
    with pytest.raises(ValueError, match="faiss"):  # 4 lists need 4 training vectors
        aligner.Retriever(DIM, backend="faiss-ivf", nlist=4).add([np.ones((2, DIM), np.float32)])
    if "hnswlib" in aligner.backends:
        g = aligner.Retriever(DIM, backend="hnswlib", threads=2)
        g.add(docs)
        got, _ = g.search(q, top=10, exhaustive=True)
        np.testing.assert_array_equal(got, want_ids)


def test_ndocs_cuts_token_search_candidates_by_their_hits():
    # Documents drawn from a vocabulary (identical vectors indexed once, each reaching every document holding it).
    rng = np.random.default_rng(8)
    words = rng.standard_normal((40, 12)).astype(np.float32)
    docs = [words[rng.integers(0, 40, size=int(rng.integers(1, 10)))] for _ in range(60)]
    q = rng.standard_normal((5, 12)).astype(np.float32)
    r = aligner.Retriever(dim=12)
    r.add(docs)
    assert r.indexed_tokens == len({w.tobytes() for d in docs for w in d})
    for k in (3, 10):
        # NumPy: each row's k best distinct vectors, every document holding one, the score of the row's best hit
        # reaching it minus the row's lowest hit score, summed over the rows; the best ndocs by (score desc, id asc).
        held = sorted({int(w) for d in docs for w in np.unique(np.nonzero((words[:, None, :] == d[None]).all(2))[0])})
        s = q.astype(np.float64) @ words[held].T.astype(np.float64)
        approx = {}
        for i in range(len(q)):
            order = np.argsort(-s[i], kind="stable")[:k]
            low = s[i, order[-1]]
            best = {}
            for t in order:
                w = words[held[t]]
                for d, doc in enumerate(docs):
                    if (doc == w).all(1).any() and d not in best:
                        best[d] = s[i, t] - low
            for d, g in best.items():
                approx[d] = approx.get(d, 0.0) + g
        ranked = sorted(approx, key=lambda d: (-approx[d], d))
        uncut = r.search(q, top=100, candidates=k)
        assert uncut.candidates_scored == len(ranked)
        for ndocs in (5, 20):
            got = r.search(q, top=100, candidates=k, ndocs=ndocs)
            assert set(got.ids.tolist()) == set(ranked[:ndocs]), (k, ndocs)
            assert got.candidates_scored == min(ndocs, len(ranked))
            # The kept candidates keep their exact scores: the uncut ranking restricted to them.
            keep = [i for i in uncut.ids.tolist() if i in set(ranked[:ndocs])]
            np.testing.assert_array_equal(got.ids, keep)
        np.testing.assert_array_equal(r.search(q, top=100, candidates=k, ndocs=0).ids, uncut.ids)


def test_documents_from_a_generator_or_a_3d_array_and_pickling(tmp_path):
    import pickle
    docs = [np.random.default_rng(i).standard_normal((7, DIM)).astype(np.float32) for i in range(5)]
    listed = aligner.Retriever(DIM)
    listed.add(docs)
    for form in ((d for d in docs), np.stack(docs), iter(docs)):
        other = aligner.Retriever(DIM)
        assert list(other.add(form)) == [0, 1, 2, 3, 4]
        a, b = other.search(docs[2][:3], top=5), listed.search(docs[2][:3], top=5)
        assert list(a.ids) == list(b.ids) and list(a.scores) == list(b.scores)
    queries = np.stack([docs[1][:3], docs[4][:3]])  # equal-length queries as one 3-d array
    assert [list(r.ids) for r in listed.search_batch(queries, top=3)] == \
           [list(r.ids) for r in listed.search_batch([q for q in queries], top=3)]
    q = docs[0][:3]
    assert np.array_equal(aligner.score_batch(q, (d for d in docs)), aligner.score_batch(q, docs))
    assert np.array_equal(aligner.score_batch(q, np.stack(docs)), aligner.score_batch(q, docs))
    with pytest.raises(ValueError, match="2-d array"):
        listed.add(np.stack(docs), np.array([0, 7]))  # with offsets, a 3-d array is still refused by name
    # A pickled retriever (multiprocessing, Dask) searches as the original, removals included.
    listed.remove(3)
    copy = pickle.loads(pickle.dumps(listed))
    assert len(copy) == len(listed) and copy.is_removed(3)
    for q in (docs[0][:4], docs[3][:2]):
        a, b = copy.search(q, top=5, exhaustive=True), listed.search(q, top=5, exhaustive=True)
        assert list(a.ids) == list(b.ids) and list(a.scores) == list(b.scores)
