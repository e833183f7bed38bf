"""aligner.IndexDirectoryWriter / IndexDirectoryReader / build_directory: the index directory from Python, against a
Retriever holding the same documents (the same ids, scores and order), brute force, the streamed build in every
input form, the lock, snapshots and refresh, a build killed part way, bad input, the alignment picture, and the CLI's
directories on the bundled Cranfield."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import aligner
import reference as ref

DIM = 16


def collection(seed=0, docs=80, dim=DIM):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 25)), dim)).astype(np.float32) for _ in range(docs)]


def joined(docs):
    return np.concatenate(docs), np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)


def queries(seed=5, n=6, dim=DIM):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 9)), dim)).astype(np.float32) for _ in range(n)]


def brute_force(docs, q, strategy="top1", top=10, live=None):
    scores = [(aligner.score(q, d, strategy=strategy), i) for i, d in enumerate(docs) if live is None or i in live]
    scores.sort(key=lambda si: (-si[0], si[1]))
    return [i for _, i in scores[:top]], [s for s, _ in scores[:top]]


@pytest.mark.parametrize("storage", ["f32", "bf16", "i8"])
@pytest.mark.parametrize("strategy", ["top1", "topk:3", "topp:0.2"])
def test_exhaustive_search_equals_a_retriever_and_brute_force(tmp_path, storage, strategy):
    docs = collection()
    with aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage=storage) as w:
        np.testing.assert_array_equal(w.add(docs[:30]), np.arange(30))
        np.testing.assert_array_equal(w.add(*joined(docs[30:])), np.arange(30, len(docs)))
        w.remove([4, 41])
        w.remove(np.array([77]))
        assert (w.size, len(w), w.segments, w.storage) == (len(docs), len(docs) - 3, 2, storage)
    r = aligner.Retriever(DIM, storage=storage, token_index=False)
    r.add(docs)
    r.remove([4, 41, 77])
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    assert d.tokens == r.tokens and len(d) == len(r) and d.size == r.size
    live = set(range(len(docs))) - {4, 41, 77}
    for q in queries():
        got = d.search(q, top=12, strategy=strategy)  # not residual: exhaustive by default
        want = r.search(q, top=12, strategy=strategy, exhaustive=True)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.reranked_all_allowed and got.candidates_scored == len(live)
        if storage == "f32":
            want_ids, want_scores = brute_force(docs, q, strategy, 12, live)
            np.testing.assert_array_equal(got.ids, want_ids)
            np.testing.assert_array_equal(got.scores, np.float32(want_scores))
            for i, s in zip(got.ids[:3], got.scores[:3]):
                assert s == pytest.approx(ref.score(q, docs[i], strategy), rel=1e-5, abs=1e-5)
        e = d.explain(q, int(got.ids[0]), strategy=strategy)
        assert np.float32(e["score"]) == got.scores[0]
    batch = d.search_batch(queries(), threads=2, top=12, strategy=strategy)
    for q, b in zip(queries(), batch):
        single = d.search(q, top=12, strategy=strategy)
        np.testing.assert_array_equal(b.ids, single.ids)
        np.testing.assert_array_equal(b.scores, single.scores)


@pytest.mark.parametrize("storage", ["residual:2", "residual:4"])
def test_residual_postings_equal_a_retriever_with_the_same_codec(tmp_path, storage):
    # the directory trains its codec on the first add's tokens as a Retriever does: same settings, same codec
    docs = collection(seed=1, docs=120)
    with aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage=storage, residual_centroids=32, seed=3) as w:
        w.add(docs[:70])
        w.add(docs[70:])
        w.remove([5, 90])
        assert w.centroids == 32 and w.storage == storage
        w.compact()  # one segment, removed documents dropped, ids kept
        assert (w.segments, len(w), w.size) == (1, 118, 120)
    r = aligner.Retriever(DIM, storage=storage, token_index=False, residual_centroids=32, seed=3)
    r.add(docs[:70])
    r.add(docs[70:])
    r.remove([5, 90])
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    assert not d.is_live(5) and d.is_live(6)
    for q in queries(seed=9):
        for nprobe, ndocs in ((4, 1000), (2, 10), (8, 0)):
            got = d.search(q, top=10, nprobe=nprobe, ndocs=ndocs)
            want = r.search(q, top=10, nprobe=nprobe, ndocs=ndocs)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.scores, want.scores)
            assert got.candidates_scored == want.candidates_scored
        got = d.search(q, top=10)  # defaults: nprobe 4, ndocs 1000
        np.testing.assert_array_equal(got.ids, r.search(q, top=10, nprobe=4, ndocs=1000).ids)
        threaded = d.search(q, top=10, threads=3)  # one search's rerank on 3 threads: the same, bit for bit
        np.testing.assert_array_equal(threaded.ids, got.ids)
        np.testing.assert_array_equal(threaded.scores, got.scores)
        got = d.search(q, top=10, exhaustive=True)
        np.testing.assert_array_equal(got.ids, r.search(q, top=10, exhaustive=True).ids)
        # restricted searches as a Retriever's
        allowed = np.array([1, 2, 3, 60, 100, 119])
        np.testing.assert_array_equal(d.search(q, allowed_ids=allowed).ids, r.search(q, nprobe=4, ndocs=1000, allowed_ids=allowed).ids)
        keep = lambda i: i % 3 == 0  # noqa: E731
        np.testing.assert_array_equal(d.search(q, filter=keep).ids, r.search(q, nprobe=4, ndocs=1000, filter=keep).ids)


def test_names_salience_and_their_rules(tmp_path):
    docs = collection(seed=2, docs=10)
    w = aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32")
    u = np.linspace(0.5, 2.0, sum(len(d) for d in docs)).astype(np.float32)
    w.add(docs[:6], names=[f"doc-{i}" for i in range(6)], salience=u[:sum(len(d) for d in docs[:6])])
    gen = w.generation
    with pytest.raises(ValueError, match="names"):  # every add must match the first: names and salience
        w.add(docs[6:], salience=u[sum(len(d) for d in docs[:6]):])
    with pytest.raises(ValueError, match="salience"):
        w.add(docs[6:], names=[f"doc-{i}" for i in range(6, 10)])
    with pytest.raises(ValueError, match="names has 3 entries for 4 documents"):
        w.add(docs[6:], names=["a", "b", "c"], salience=u[sum(len(d) for d in docs[:6]):])
    with pytest.raises(TypeError, match=r"names\[1\] must be str"):
        w.add(docs[6:], names=["a", 2, "c", "d"], salience=u[sum(len(d) for d in docs[:6]):])
    with pytest.raises(TypeError, match="sequence of str"):
        w.add(docs[6:], names="abcd", salience=u[sum(len(d) for d in docs[:6]):])
    with pytest.raises(ValueError, match="line break"):
        w.add(docs[6:], names=["a", "b\nc", "d", "e"], salience=u[sum(len(d) for d in docs[:6]):])
    assert w.generation == gen and len(w) == 6  # nothing committed by a refused add
    w.add(docs[6:], names=[f"doc-{i}" for i in range(6, 10)], salience=u[sum(len(d) for d in docs[:6]):])
    w.close()
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    assert [d.name(i) for i in range(10)] == [f"doc-{i}" for i in range(10)]
    r = aligner.Retriever(DIM, token_index=False)
    r.add(docs, salience=u)
    q = queries()[0]
    qu = np.linspace(1, 2, len(q)).astype(np.float32)
    got = d.search(q, query_salience=qu)
    want = r.search(q, exhaustive=True, query_salience=qu)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)
    unweighted = d.search(q, query_salience=qu, use_doc_salience=False, use_query_salience=False)
    np.testing.assert_array_equal(unweighted.scores, r.search(q, exhaustive=True, use_doc_salience=False).scores)
    with pytest.raises(ValueError, match="not a live document"):
        d.name(10)


def test_one_writer_at_a_time_and_readers_see_commits_after_refresh(tmp_path):
    docs = collection(seed=3, docs=40)
    w = aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32")
    w.add(docs[:20])
    with pytest.raises(OSError, match="another writer holds this index directory"):  # the LOCK is held
        aligner.IndexDirectoryWriter.open(tmp_path / "d")
    with pytest.raises(OSError, match="another writer holds this index directory"):
        aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM)
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    q = queries()[1]
    before = d.search(q, top=40)
    w.add(docs[20:])
    w.remove([0])
    assert len(d) == 20 and d.search(q, top=40).ids.tolist() == before.ids.tolist()  # still its snapshot
    assert d.refresh() and not d.refresh()
    assert len(d) == 39 and d.generation == w.generation
    np.testing.assert_array_equal(d.search(q, top=40).ids, brute_force(docs, q, top=40, live=set(range(1, 40)))[0])
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.add(docs[:1])
    w.close()  # a second close does nothing
    with pytest.raises(OSError, match="already holds an index directory"):
        aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM)
    with aligner.IndexDirectoryWriter.open(tmp_path / "d") as w2:  # the lock was released
        w2.remove([1])
    assert w2.closed
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.search(q)
    assert "closed" in repr(d)


def test_readers_search_from_threads_while_the_writer_commits(tmp_path):
    docs = collection(seed=4, docs=60)
    w = aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32")
    w.add(docs[:10])
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    errors = []
    stop = threading.Event()
    qs = queries(seed=6, n=3)
    # the answer of every commit the readers can see: the first 10, 20, ..., 60 documents
    expected = [{tuple(brute_force(docs[:k], q, top=5)[0]) for k in range(10, 61, 10)} for q in qs]

    def search():
        try:
            while not stop.is_set():
                d.refresh()
                for q, want in zip(qs, expected):
                    assert tuple(d.search(q, top=5).ids) in want  # exact for the snapshot it ran on
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for k in range(10, 60, 10):
        w.add(docs[k:k + 10])
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    w.close()
    d.refresh()
    for q in queries(seed=6, n=3):
        np.testing.assert_array_equal(d.search(q, top=5).ids, brute_force(docs, q, top=5)[0])


def test_a_writer_shared_by_python_threads(tmp_path):
    docs = collection(seed=14, docs=40)
    w = aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32")
    got, errors = [], []

    def add(part):
        try:
            got.append((part, w.add([docs[i] for i in part])))
            assert len(w) >= len(part) and w.generation >= 2  # facts read while other threads commit
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(list(range(k, 40, 4)),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(w) == 40 and w.segments == 4
    assert sorted(np.concatenate([ids for _, ids in got]).tolist()) == list(range(40))  # each add its own ids
    w.close()
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    order = [docs[i] for part, _ in sorted(got, key=lambda pi: pi[1][0]) for i in part]  # the documents in id order
    for q in queries(seed=15, n=3):
        np.testing.assert_array_equal(d.search(q, top=8).ids, brute_force(order, q, top=8)[0])


def write_npy(path, array):
    np.save(path, array)
    return path


@pytest.mark.parametrize("storage", ["residual:2", "f32"])
def test_streamed_build_is_the_same_from_every_input_form(tmp_path, storage):
    docs = collection(seed=7, docs=150)
    tokens, offsets = joined(docs)
    names = [f"n{i}" for i in range(len(docs))]
    kw = dict(storage=storage, segment_tokens=400, chunk_tokens=150)
    if storage.startswith("residual"):
        kw["residual_centroids"] = 32
    calls = []
    reports = {
        "npy32": aligner.build_directory(tmp_path / "a", write_npy(tmp_path / "v32.npy", tokens), offsets, names=names,
                                         progress=lambda done, total: calls.append((done, total)), **kw),
        "memmap": aligner.build_directory(tmp_path / "b", np.load(tmp_path / "v32.npy", mmap_mode="r"), offsets,
                                          names=names, threads=2, **kw),
        "float64": aligner.build_directory(tmp_path / "c", tokens.astype(np.float64), offsets, names=names, **kw),
        "npy16": aligner.build_directory(tmp_path / "e", str(write_npy(tmp_path / "v16.npy", tokens.astype(np.float16))),
                                         offsets, names=names, **kw),
        "float16": aligner.build_directory(tmp_path / "f", tokens.astype(np.float16), offsets, names=names, **kw),
    }
    for rep in reports.values():
        assert rep["documents"] == len(docs) and rep["tokens"] == len(tokens) and rep["segments"] > 2
        assert rep["centroids"] == (32 if storage != "f32" else 0)
    assert calls[0] == (0, len(tokens)) and calls[-1] == (len(tokens), len(tokens))
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    readers = {k: aligner.IndexDirectoryReader(tmp_path / p) for k, p in zip(reports, "abcef")}
    for q in queries(seed=8):
        results = {k: r.search(q, top=10) for k, r in readers.items()}
        for k in ("memmap", "float64"):  # the same float32 values: the same directory
            np.testing.assert_array_equal(results[k].ids, results["npy32"].ids)
            np.testing.assert_array_equal(results[k].scores, results["npy32"].scores)
        np.testing.assert_array_equal(results["float16"].ids, results["npy16"].ids)  # the same halves
        np.testing.assert_array_equal(results["float16"].scores, results["npy16"].scores)
        if storage == "f32":
            np.testing.assert_array_equal(results["npy32"].ids, brute_force(docs, q)[0])
    assert readers["npy32"].name(149) == "n149"
    # the writer's add with the same float32 store gives the same directory (no codec involved)
    if storage == "f32":
        with aligner.IndexDirectoryWriter.create(tmp_path / "w", DIM, storage="f32") as w:
            w.add(tokens, offsets, names=names)
        for q in queries(seed=8):
            np.testing.assert_array_equal(aligner.IndexDirectoryReader(tmp_path / "w").search(q, top=10).scores,
                                          readers["npy32"].search(q, top=10).scores)


def test_a_range_of_a_npy_files_rows_builds_that_part(tmp_path):
    docs = collection(seed=11, docs=150)
    tokens, offsets = joined(docs)
    names = [f"n{i}" for i in range(len(docs))]
    npy = write_npy(tmp_path / "v16.npy", tokens.astype(np.float16))
    codec = aligner.train_codec(tokens.astype(np.float16).astype(np.float32), centroids=32, seed=3)
    a, b = 40, 110  # documents [a, b), as a shard of the file
    first = int(offsets[a])
    local = offsets[a:b + 1] - first
    part = tokens.astype(np.float16)[first:int(offsets[b])]
    rep = aligner.build_directory(tmp_path / "range", npy, local, names=names[a:b], storage="residual", codec=codec,
                                  first_token=np.int64(first), segment_tokens=300, chunk_tokens=70, threads=2)
    assert rep["documents"] == b - a and rep["tokens"] == len(part)
    aligner.build_directory(tmp_path / "slice", part, local, names=names[a:b], storage="residual", codec=codec)
    ranged, sliced = aligner.IndexDirectoryReader(tmp_path / "range"), aligner.IndexDirectoryReader(tmp_path / "slice")
    assert ranged.name(0) == "n40" and ranged.name(69) == "n109"
    for q in queries(seed=12):
        for params in ({"top": 10}, {"top": 70, "exhaustive": True, "strategy": "topk:2"}):
            got, want = ranged.search(q, **params), sliced.search(q, **params)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.scores, want.scores)
    # Bad ranges and arguments are refused by name, nothing written.
    with pytest.raises(ValueError, match=r"rows \[\d+"):
        aligner.build_directory(tmp_path / "past", npy, local, codec=codec, storage="residual", first_token=len(tokens) - 3)
    for bad in (-1, 2.0, "3", True):
        with pytest.raises(ValueError, match="first_token must be an int >= 0"):
            aligner.build_directory(tmp_path / "bad", npy, local, codec=codec, storage="residual", first_token=bad)
    with pytest.raises(ValueError, match="first_token reads a range of a .npy file"):
        aligner.build_directory(tmp_path / "arr", tokens, local, codec=codec, storage="residual", first_token=0)
    for p in ("past", "bad", "arr"):
        assert not (tmp_path / p / "MANIFEST").exists()


def test_a_killed_build_leaves_the_segments_committed_so_far(tmp_path):
    docs = collection(seed=9, docs=100)
    tokens, offsets = joined(docs)
    np.save(tmp_path / "v.npy", tokens)
    np.save(tmp_path / "o.npy", offsets)
    script = textwrap.dedent(f"""
        import os, numpy as np, aligner
        offsets = np.load({str(tmp_path / 'o.npy')!r})
        def progress(done, total):
            if done >= total // 2:
                os._exit(9)   # no cleanup, no exception handling: as if the process were killed
        aligner.build_directory({str(tmp_path / 'd')!r}, {str(tmp_path / 'v.npy')!r}, offsets, storage="f32",
                                segment_tokens=100, chunk_tokens=50, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    n = len(d)
    assert 0 < n < len(docs) and d.size == n
    for q in queries(seed=10):  # exactly the first n documents
        np.testing.assert_array_equal(d.search(q, top=10).ids, brute_force(docs[:n], q)[0])
    with aligner.IndexDirectoryWriter.open(tmp_path / "d") as w:  # and it can be finished by a writer
        w.add(docs[n:])
    d.refresh()
    for q in queries(seed=10):
        np.testing.assert_array_equal(d.search(q, top=10).ids, brute_force(docs, q)[0])


def test_a_progress_callback_that_raises_stops_the_build(tmp_path):
    docs = collection(seed=11, docs=60)
    tokens, offsets = joined(docs)

    def progress(done, total):
        if done >= total // 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        aligner.build_directory(tmp_path / "d", tokens, offsets, storage="f32", segment_tokens=100, chunk_tokens=100,
                                progress=progress)
    assert len(aligner.IndexDirectoryReader(tmp_path / "d")) > 0  # the first segment was committed before


def test_bad_input_is_refused_and_changes_nothing(tmp_path):
    docs = collection(seed=12, docs=10)
    tokens, offsets = joined(docs)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        aligner.IndexDirectoryWriter.create(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="storage must be one of"):
        aligner.IndexDirectoryWriter.create(tmp_path / "x", DIM, storage="f64")
    with pytest.raises(ValueError, match="residual:N"):
        aligner.IndexDirectoryWriter.create(tmp_path / "x", DIM, storage="residual:3")
    with pytest.raises(ValueError, match="residual_anisotropy"):
        aligner.IndexDirectoryWriter.create(tmp_path / "x", DIM, residual_anisotropy=0.5)
    with pytest.raises(OSError, match="not an index directory"):
        aligner.IndexDirectoryReader(tmp_path / "missing")
    with pytest.raises(OSError, match="not an index directory"):
        aligner.IndexDirectoryWriter.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(OSError, match="not an index directory"):
        aligner.IndexDirectoryWriter.open(tmp_path / "plain")
    assert not os.listdir(tmp_path / "plain")  # no LOCK file left in a folder that holds no index
    w = aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32")
    w.add(docs[:5])
    gen = w.generation
    bad = [d.copy() for d in docs[5:]]
    bad[2][0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        w.add(bad)
    with pytest.raises(ValueError, match="columns"):
        w.add([np.ones((3, DIM + 1), np.float32)])
    with pytest.raises(TypeError, match="dtype"):
        w.add([np.ones((3, DIM), np.complex64)])
    with pytest.raises(ValueError, match="offsets"):
        w.add(tokens, np.array([0, 5, 3, len(tokens)]))
    with pytest.raises(ValueError, match="unknown document id 7"):
        w.remove([1, 7])
    with pytest.raises(ValueError, match="listed twice"):
        w.remove([1, 1])
    with pytest.raises(TypeError, match="integers"):
        w.remove(np.array([1.0]))
    assert w.generation == gen and len(w) == 5
    w.remove([])  # nothing to remove: no commit
    assert w.generation == gen
    w.remove(2)
    with pytest.raises(ValueError, match="already removed"):
        w.remove(2)
    w.close()
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    q = queries()[0]
    with pytest.raises(ValueError, match="nprobe"):
        d.search(q, nprobe=4)  # an f32 directory has no centroid postings
    with pytest.raises(ValueError, match="no token index"):
        d.search(q, exhaustive=False)
    with pytest.raises(ValueError, match="columns"):
        d.search(np.ones((2, DIM + 2), np.float32))
    with pytest.raises(ValueError, match="top"):
        d.search(q, top=0)
    with pytest.raises(ValueError, match="not a live document"):
        d.explain(q, 2)
    with pytest.raises(ValueError, match="allowed_ids"):
        d.search(q, allowed_ids=[99])
    with pytest.raises(ValueError, match="offsets"):
        aligner.build_directory(tmp_path / "b1", tokens, np.array([0, 4]))
    with pytest.raises(ValueError, match="names has 2 entries"):
        aligner.build_directory(tmp_path / "b2", tokens, offsets, names=["a", "b"])
    with pytest.raises(TypeError, match="progress must be callable"):
        aligner.build_directory(tmp_path / "b3", tokens, offsets, progress=3)
    with pytest.raises(ValueError, match="2-d"):
        aligner.build_directory(tmp_path / "b4", tokens[0], offsets)
    bad_tokens = tokens.copy()
    bad_tokens[7, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        aligner.build_directory(tmp_path / "b5", bad_tokens, offsets, storage="f32")
    np.save(tmp_path / "bad.npy", bad_tokens)
    with pytest.raises(OSError, match="non-finite value at token 7"):
        aligner.build_directory(tmp_path / "b6", tmp_path / "bad.npy", offsets, storage="f32")
    np.save(tmp_path / "ints.npy", np.ones((len(tokens), DIM), np.int32))
    with pytest.raises(OSError, match="integer"):
        aligner.build_directory(tmp_path / "b7", tmp_path / "ints.npy", offsets, storage="f32")
    for name in ("b1", "b2", "b3", "b4"):  # refused before anything was written
        assert not (tmp_path / name / "MANIFEST").exists()


def test_the_alignment_picture(tmp_path):
    docs = collection(seed=13, docs=12)
    r = aligner.Retriever(DIM)
    r.add(docs)
    with aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="f32") as w:
        w.add(docs)
    d = aligner.IndexDirectoryReader(tmp_path / "d")
    q = queries()[2]
    doc = 4
    qw = [f"q<{i}>" for i in range(len(q))]
    dw = [f"w&{j}" for j in range(len(docs[doc]))]
    for source in (r, d):
        page = source.view(q, doc, strategy="topk:2", query_words=qw, doc_words=dw, title="query <script>")
        assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "query &lt;script&gt;" in page
        assert "q&lt;0&gt;" in page and "w&amp;0" in page
        svg = source.view(q, doc, html=False)
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        # the score the picture prints is the search's
        e = source.explain(q, doc, strategy="topk:2")
        assert f"score {e['score']:.6g}" in page  # printed with 6 significant digits
        with pytest.raises(ValueError, match="query_words has 1 entries"):
            source.view(q, doc, query_words=["a"])
        with pytest.raises(TypeError, match="doc_words"):
            source.view(q, doc, doc_words=[1] * len(docs[doc]))
    assert r.view(q, doc, title="t") == d.view(q, doc, title="t")
    for storage in ("residual:2", "i8", "bf16"):  # the same picture from a Retriever and a directory of each store
        codec_kw = dict(residual_centroids=16) if storage.startswith("residual") else {}
        rs = aligner.Retriever(DIM, storage=storage, **codec_kw)
        rs.add(docs)
        with aligner.IndexDirectoryWriter.create(tmp_path / storage, DIM, storage=storage, **codec_kw) as w:
            w.add(docs)
        ds = aligner.IndexDirectoryReader(tmp_path / storage)
        page = ds.view(q, doc, strategy="topp:0.2")
        assert page == rs.view(q, doc, strategy="topp:0.2")
        assert f"score {ds.explain(q, doc, strategy='topp:0.2')['score']:.6g}" in page


def test_the_alignment_data(tmp_path):
    docs = collection(seed=17, docs=10)
    qs = queries(seed=3)
    uq = [np.random.default_rng(i).uniform(0.1, 2, len(q)).astype(np.float32) for i, q in enumerate(qs)]
    ud = np.random.default_rng(9).uniform(0.1, 2, sum(len(d) for d in docs)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    r = aligner.Retriever(DIM)
    r.add(docs, salience=ud)
    for q, u in zip(qs, uq):
        for doc in (0, 7):
            for strategy in ("top1", "topk:3", "topp:0.2", "dense"):
                a = r.alignment(q, doc, strategy=strategy, query_salience=u)
                S = a["similarity_matrix"]
                assert S.dtype == np.float32 and S.shape == (len(q), len(docs[doc]))
                np.testing.assert_allclose(S, q.astype(np.float64) @ docs[doc].T.astype(np.float64), rtol=1e-5, atol=1e-5)
                np.testing.assert_array_equal(a["query_salience"], u)
                np.testing.assert_array_equal(a["doc_salience"], ud[starts[doc]:starts[doc + 1]])
                assert a["strategy"] == aligner.strategy_name(strategy)
                # explain's pairs, each with its cell of S, and the score the search gives the document
                e = r.explain(q, doc, strategy=strategy, query_salience=u)
                for key in ("query_token", "doc_token", "similarity", "weight"):
                    np.testing.assert_array_equal(a[key], e[key])
                assert a["score"] == e["score"]
                if strategy == "dense":  # its one pair (0, 0) is the dense score's own dot product
                    np.testing.assert_allclose(a["similarity"], S[0, :1], rtol=1e-6)
                else:
                    np.testing.assert_array_equal(a["similarity"], S[a["query_token"], a["doc_token"]])
                # the score from S and the weights, independently of the scorer
                weights = u[a["query_token"]] * a["doc_salience"][a["doc_token"]]
                assert a["score"] == pytest.approx(float((weights * S[a["query_token"], a["doc_token"]]).sum() / weights.sum()),
                                                   rel=1e-5, abs=1e-6)
                if strategy == "top1":  # one aligned cell per row: its maximum
                    np.testing.assert_array_equal(a["similarity"], S.max(1))
    plain = aligner.Retriever(DIM, storage="bf16")
    plain.add(docs)
    a = plain.alignment(qs[0], 3)
    assert a["query_salience"] is None and a["doc_salience"] is None
    # bf16 rounds each document component (and, where a bf16 dot product runs, each query component) by at most 2^-9
    # of itself: each cell is within 2^-8 of the sum of |q_c d_c| (a fixed tolerance failed a cell that cancels)
    exact = qs[0].astype(np.float64) @ docs[3].T.astype(np.float64)
    bound = np.abs(qs[0]).astype(np.float64) @ np.abs(docs[3]).T.astype(np.float64) * 2.0 ** -8 + 1e-5
    assert np.all(np.abs(a["similarity_matrix"] - exact) <= bound)
    assert a["score"] == plain.search(qs[0], top=10, exhaustive=True, allowed_ids=[3]).scores[0]
    with aligner.IndexDirectoryWriter.create(tmp_path / "d", DIM, storage="bf16") as w:
        w.add(docs)
        w.remove(5)
    with aligner.IndexDirectoryReader(tmp_path / "d") as d:
        b = d.alignment(qs[0], 3)
        for key in ("similarity_matrix", "query_token", "doc_token", "similarity", "weight"):
            np.testing.assert_array_equal(a[key], b[key])
        assert a["score"] == b["score"]
        with pytest.raises(ValueError, match="not a live document"):
            d.alignment(qs[0], 5)
    with pytest.raises(ValueError, match="columns"):
        plain.alignment(np.ones((2, DIM + 1), np.float32), 0)
    with pytest.raises(ValueError):
        plain.alignment(qs[0], 99)


CLI, DATA = ref.CLI, ref.DATA


@ref.needs_cli
def test_the_cli_and_python_read_each_others_directories_on_cranfield(tmp_path):
    cran = os.path.join(DATA, "cranfield")
    col = aligner.load_collection(cran)
    docs, queries_, qrels = col["docs"], col["queries"], col["qrels"]
    cli_dir = tmp_path / "cli"
    subprocess.run([CLI, "index", "--collection", cran, "--layout", "directory", "--storage", "residual:2", "--out",
                    str(cli_dir), "--segment-tokens", "60000"], check=True, capture_output=True)
    judged = [i for i, q in enumerate(queries_["ids"]) if q in qrels][:60]
    qv, qo = queries_["vectors"], queries_["offsets"]
    qlist = [qv[qo[i]:qo[i + 1]] for i in judged]
    run_file = tmp_path / "cli.run"
    out = subprocess.run([CLI, "search", "--index", str(cli_dir), "--collection", cran, "--strategy", "top1",
                          "--candidates", "postings", "--top", "100", "--query-limit", "60", "--run", str(run_file)],
                         check=True, capture_output=True, text=True)
    d = aligner.IndexDirectoryReader(cli_dir)
    assert d.segments > 1 and d.storage == "residual:2" and d.name(0) == docs["ids"][0]
    results = d.search_batch(qlist, top=100, nprobe=4, ndocs=1000)
    py_run = aligner.run_from_results([queries_["ids"][i] for i in judged], results, docs["ids"])
    cli_run = aligner.load_run(run_file)
    assert cli_run.keys() == py_run.keys()
    for qid in py_run:
        assert set(cli_run[qid]) == set(py_run[qid])
        np.testing.assert_allclose([cli_run[qid][x] for x in py_run[qid]], list(py_run[qid].values()), rtol=1e-7)
    ndcg, _ = aligner.ndcg_at(py_run, qrels, 10)
    assert f"ndcg@10={ndcg:.4f}" in out.stdout
    # a directory Python built, searched by the CLI: the same ranking as the CLI's own build of the same documents
    rep = aligner.build_directory(tmp_path / "py", docs["vectors"], docs["offsets"], names=list(docs["ids"]),
                                  segment_tokens=60000)
    assert rep["documents"] == 1400
    out2 = subprocess.run([CLI, "search", "--index", str(tmp_path / "py"), "--collection", cran, "--strategy", "top1",
                           "--candidates", "postings", "--top", "100", "--query-limit", "60"],
                          check=True, capture_output=True, text=True)
    assert out2.stdout.split("ms_per_query")[0] == out.stdout.split("ms_per_query")[0]
