"""aligner.dask: a sharded index over 2 and 4 worker processes returns exactly the single-node results (ids,
scores, order) on Cranfield and SciFact; failures of a shard or a worker raise ShardError naming it."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import aligner

distributed = pytest.importorskip("distributed")
import aligner.dask as adask  # noqa: E402

DATA = os.environ.get("ALIGNER_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "data"))
SHARED = os.environ.get("ALIGNER_SHARED_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                                 "data"))


@pytest.fixture(scope="module")
def cluster4():
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cluster, distributed.Client(cluster) as client:
        yield cluster, client


def single_node(col, **kwargs):
    docs = col["docs"]
    r = aligner.Retriever(docs["vectors"].shape[1], **kwargs)
    r.add(docs["vectors"], docs["offsets"])
    return r


def judged_queries(col, limit=None):
    q = col["queries"]
    idx = [i for i, qid in enumerate(q["ids"]) if qid in col["qrels"]][:limit]
    return [q["vectors"][q["offsets"][i]:q["offsets"][i + 1]] for i in idx]


def check_equal(sharded, single, queries, **params):
    got = sharded.search_batch(queries, **params)
    want = single.search_batch(queries, **params)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.ids, w.ids)
        np.testing.assert_array_equal(g.scores, w.scores)


def test_partitions():
    for part in ("range", "hash"):
        for shards in (1, 2, 3, 4):
            parts = adask.partition_ids(101, shards, part)
            joined = np.sort(np.concatenate(parts))
            np.testing.assert_array_equal(joined, np.arange(101))
            assert all(np.all(np.diff(p) > 0) for p in parts)
    hashed = adask.partition_ids(1000, 4, "hash")
    assert min(len(p) for p in hashed) > 200  # spread
    with pytest.raises(ValueError, match="partition"):
        adask.partition_ids(10, 2, "random")


def token_cuts_reference(offsets, shards):
    """partition='tokens' written out: cut k is the boundary i nearest to k / shards of the tokens among those that
    leave a document for every shard before and after it (while documents remain), ties to the smaller i."""
    n = len(offsets) - 1
    cuts = [0]
    for k in range(1, shards):
        target = offsets[-1] * k / shards
        low = min(cuts[-1] + 1, n)
        high = max(low, n - (shards - k))
        cuts.append(min(range(low, high + 1), key=lambda i: (abs(offsets[i] - target), i)))
    return cuts + [n]


def test_token_partitions_balance_tokens():
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(0, 40))
        lengths = rng.integers(0, 3, size=n) * rng.integers(1, 200, size=n)  # empty, short and long documents
        if n and trial % 3 == 0:
            lengths[int(rng.integers(0, n))] = 5000  # one document longer than all the rest
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        shards = int(rng.integers(1, 7))
        parts = adask.partition_ids(n, shards, "tokens", offsets)
        assert len(parts) == shards
        np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))  # contiguous, in order, every id once
        cuts = [0] + list(np.cumsum([len(p) for p in parts]))
        assert cuts == token_cuts_reference(offsets, shards), (offsets.tolist(), shards)
        assert all(len(p) for p in parts) or n < shards
    # equal document counts but very unequal tokens: the token cut evens the shards out
    offsets = np.concatenate([[0], np.cumsum([1000] * 10 + [10] * 90)])
    by_docs = [offsets[p[-1] + 1] - offsets[p[0]] for p in adask.partition_ids(100, 2, "range")]
    by_tokens = [offsets[p[-1] + 1] - offsets[p[0]] for p in adask.partition_ids(100, 2, "tokens", offsets)]
    assert by_docs == [10400, 500] and by_tokens == [5000, 5900]
    with pytest.raises(ValueError, match="needs the documents' offsets"):
        adask.partition_ids(10, 2, "tokens")
    with pytest.raises(ValueError, match="n_docs \\+ 1 = 11"):
        adask.partition_ids(10, 2, "tokens", np.arange(10))


@pytest.mark.parametrize("shards,partition", [(2, "range"), (4, "hash"), (4, "tokens")])
def test_cranfield_sharded_equals_single_node(cluster4, shards, partition):
    _, client = cluster4
    cran = os.path.join(DATA, "cranfield")
    col = aligner.load_collection(cran)
    single = single_node(col, storage="bf16")
    sharded = adask.ShardedRetriever.from_collection(client, cran, shards=shards, partition=partition, storage="bf16")
    assert sharded.shards == shards and len(sharded) == len(col["docs"]["ids"])
    facts = sharded.describe()
    assert len({f["worker"] for f in facts}) == shards
    if partition == "tokens":  # each shard within one document's length of an equal share of the tokens
        lengths = np.diff(col["docs"]["offsets"])
        assert max(abs(f["tokens"] - lengths.sum() / shards) for f in facts) <= lengths.max()
    queries = judged_queries(col, 75)  # a third of the judged queries: every shard answers each of them
    check_equal(sharded, single, queries, top=20, strategy="topk:2", exhaustive=True)
    check_equal(sharded, single, queries[:40], top=5, strategy="top1", exhaustive=True, allowed_ids=np.arange(0, 1400, 3))
    check_equal(sharded, single, queries[:40], top=5, exhaustive=True, filter=lambda d: d % 7 != 0)
    one = sharded.search(queries[0], top=3, exhaustive=True)
    np.testing.assert_array_equal(one.ids, single.search(queries[0], top=3, exhaustive=True).ids)
    sharded.close()


def test_from_arrays_equals_single_node_on_2_workers():
    cran = os.path.join(DATA, "cranfield")
    col = aligner.load_collection(cran)
    docs = col["docs"]
    single = single_node(col)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cluster, distributed.Client(cluster) as client:
        sharded = adask.ShardedRetriever.from_arrays(client, docs["vectors"], docs["offsets"], partition="hash")
        assert sharded.shards == 2
        check_equal(sharded, single, judged_queries(col, 60), top=10, strategy="topp:0.02", exhaustive=True)
        with pytest.raises(ValueError, match="query must have 100 columns"):
            sharded.search(np.ones((2, 5), np.float32))
        with pytest.raises(adask.ShardError, match=r"shard \d on worker .* failed during build.*residual:N"):
            adask.ShardedRetriever.from_arrays(client, [np.ones((3, 4), np.float32), np.ones((2, 4), np.float32)],
                                               shards=2, backend="exact", storage="residual:3")


def test_residual_shards_share_one_codec_and_equal_single_node(cluster4):
    _, client = cluster4
    cran = os.path.join(DATA, "cranfield")
    col = aligner.load_collection(cran)
    docs = col["docs"]
    settings = dict(storage="residual:2", residual_centroids=256, seed=5)
    single = single_node(col, **settings)
    queries = judged_queries(col, 40)
    # from_collection: the codec is trained once, by a task on a worker, on every document token: the one a single
    # Retriever trains on its first add of the same documents, so the shards score exactly as it does.
    sharded = adask.ShardedRetriever.from_collection(client, cran, shards=3, **settings)
    check_equal(sharded, single, queries, top=10, strategy="top1", exhaustive=True)
    check_equal(sharded, single, queries, top=10, strategy="topk:2", nprobe=8)  # postings without an ndocs cut
    sharded.close()
    # from_arrays trains it here; or takes a given one (then it is every shard's, and the single node's too).
    sharded = adask.ShardedRetriever.from_arrays(client, docs["vectors"], docs["offsets"], shards=4, partition="hash",
                                                 **settings)
    check_equal(sharded, single, queries, top=10, strategy="topp:0.02", exhaustive=True)
    sharded.close()
    codec = aligner.train_codec(docs["vectors"][::3], nbits=4, centroids=64)
    given = aligner.Retriever(docs["vectors"].shape[1], storage="residual", codec=codec)
    given.add(docs["vectors"], docs["offsets"])
    sharded = adask.ShardedRetriever.from_collection(client, cran, shards=2, storage="residual", codec=codec)
    check_equal(sharded, given, queries, top=10, strategy="top1", exhaustive=True)
    sharded.close()
    # shared_codec=False: every shard trains its own on its part (scores then differ from the single node's).
    sharded = adask.ShardedRetriever.from_arrays(client, docs["vectors"], docs["offsets"], shards=2, shared_codec=False,
                                                 partition="tokens", **settings)
    got = sharded.search_batch(queries, top=10, exhaustive=True)
    want = single.search_batch(queries, top=10, exhaustive=True)
    assert any(not np.array_equal(g.scores, w.scores) for g, w in zip(got, want))
    sharded.close()


def test_index_directories_as_shards(cluster4, tmp_path):
    _, client = cluster4
    col = aligner.load_collection(os.path.join(DATA, "cranfield"))
    docs = col["docs"]
    n = 700  # the first 700 documents, as one .npy every worker reads
    offsets = docs["offsets"][:n + 1]
    vectors = docs["vectors"][:offsets[-1]]
    npy = tmp_path / "docs.npy"
    np.save(npy, vectors)
    names = [str(x) for x in docs["ids"][:n]]
    queries = judged_queries(col, 30)
    codec = aligner.train_codec(vectors, centroids=64, seed=1)
    aligner.build_directory(tmp_path / "single", npy, offsets, names=names, storage="residual", codec=codec)
    single = aligner.IndexDirectoryReader(tmp_path / "single")
    # Built by three workers with the given codec: the global ids are the collection's, and with the cut off (or an
    # exhaustive rerank) the results are one directory's exactly.
    sharded = adask.ShardedRetriever.build_directories(client, tmp_path / "shards", npy, offsets, names=names, shards=3,
                                                       codec=codec, segment_tokens=20000)
    assert sharded.shards == 3 and len(sharded) == n and sharded.dim == 100
    facts = sharded.describe()
    # contiguous ranges of about a third of the tokens each (partition="tokens", the default)
    firsts = [int(p[0]) for p in adask.partition_ids(n, 3, "tokens", offsets)]
    assert [f["first_id"] for f in facts] == firsts and all(f["storage"] == "residual:2" for f in facts)
    shard_tokens = np.diff(offsets[firsts + [n]])
    assert np.abs(shard_tokens - offsets[-1] / 3).max() <= np.diff(offsets).max()
    check_equal(sharded, single, queries, top=10, strategy="top1", exhaustive=True)
    check_equal(sharded, single, queries, top=10, strategy="topk:2", nprobe=8, ndocs=0)
    for f in facts:
        with aligner.IndexDirectoryReader(f["path"]) as r:
            assert r.codec == codec and r.name(0) == names[f["first_id"]]
    sharded.close()
    # The same directories served again (their order gives the ids), from other workers.
    paths = [f["path"] for f in facts]
    served = adask.ShardedRetriever.from_directories(client, paths, workers=sorted(sharded.workers)[::-1])
    check_equal(served, single, queries, top=10, strategy="topp:0.02", exhaustive=True)
    one = served.search(queries[0], top=5, nprobe=4, ndocs=0)
    np.testing.assert_array_equal(one.ids, single.search(queries[0], top=5, nprobe=4, ndocs=0).ids)
    with pytest.raises(TypeError, match="no token index"):
        served.search(queries[0], candidates=100)
    served.close()
    # Without a codec, one is trained by a task for all shards; float storage needs none.
    trained = adask.ShardedRetriever.build_directories(client, tmp_path / "trained", npy, offsets, shards=2,
                                                       residual_centroids=32)
    codecs = []
    for f in trained.describe():
        with aligner.IndexDirectoryReader(f["path"]) as r:
            codecs.append(r.codec)
    assert codecs[0] == codecs[1] and codecs[0].centroids == 32
    trained.close()
    flat = adask.ShardedRetriever.build_directories(client, tmp_path / "flat", npy, offsets, shards=4, storage="bf16",
                                                    partition="range")
    assert [f["first_id"] for f in flat.describe()] == [0, 175, 350, 525]  # equal document counts
    reference = aligner.Retriever(100, storage="bf16")
    reference.add(vectors, offsets)
    check_equal(flat, reference, queries, top=10, strategy="topk:2", exhaustive=True)
    flat.close()
    # Misuse
    with pytest.raises(ValueError, match="one worker per path"):
        adask.ShardedRetriever.from_directories(client, paths, workers=sharded.workers[:1])
    with pytest.raises(adask.ShardError, match="failed during open"):
        adask.ShardedRetriever.from_directories(client, paths + [str(tmp_path / "nothing")])
    with pytest.raises(ValueError, match="offsets"):
        adask.ShardedRetriever.build_directories(client, tmp_path / "bad", npy, offsets[:-1])
    with pytest.raises(ValueError, match="one name per document"):
        adask.ShardedRetriever.build_directories(client, tmp_path / "bad", npy, offsets, names=names[:3])
    with pytest.raises(ValueError, match="partition must be 'tokens' or 'range'.*got 'hash'"):
        adask.ShardedRetriever.build_directories(client, tmp_path / "bad", npy, offsets, partition="hash")
    assert not (tmp_path / "bad").exists()


def test_directory_shards_refresh_to_the_newest_commits(cluster4, tmp_path):
    _, client = cluster4
    col = aligner.load_collection(os.path.join(DATA, "cranfield"))
    docs = col["docs"]
    vectors, offsets = docs["vectors"], docs["offsets"]
    queries = judged_queries(col, 20)
    codec = aligner.train_codec(vectors[:offsets[600]], centroids=64, seed=1)

    def part(a, b):  # documents [a, b) as (tokens, offsets from 0)
        return vectors[offsets[a]:offsets[b]], offsets[a:b + 1] - offsets[a]

    def directory(path, ranges, removed=()):  # one directory holding `ranges` in order: the reference
        with aligner.IndexDirectoryWriter.create(path, 100, storage="residual", codec=codec) as w:
            for a, b in ranges:
                w.add(*part(a, b))
            if removed:
                w.remove(list(removed))
        return aligner.IndexDirectoryReader(path)

    # Three shards: documents [0, 200), [200, 400), [400, 500); [500, 600) are added to the last one later.
    paths = [str(tmp_path / f"d{s}") for s in range(3)]
    for path, (a, b) in zip(paths, [(0, 200), (200, 400), (400, 500)]):
        directory(path, [(a, b)]).close()
    sharded = adask.ShardedRetriever.from_directories(client, paths)
    before = directory(tmp_path / "ref500", [(0, 500)])
    check_equal(sharded, before, queries, top=10, strategy="top1", exhaustive=True)
    assert sharded.refresh() is False  # nothing committed since the shards opened
    # Writers change the directories under the served shards: the shards keep their commits until refresh().
    with aligner.IndexDirectoryWriter.open(paths[2]) as w:
        ids = w.add(*part(500, 600))
        assert ids[0] == 100 and ids[-1] == 199
    with aligner.IndexDirectoryWriter.open(paths[0]) as w:
        w.remove([3, 50])
    check_equal(sharded, before, queries, top=10, strategy="top1", exhaustive=True)
    assert len(sharded) == 500
    assert sharded.refresh() is True
    after = directory(tmp_path / "ref600", [(0, 600)], removed=[3, 50])
    assert len(sharded) == 598
    assert [f["first_id"] for f in sharded.describe()] == [0, 200, 400]
    check_equal(sharded, after, queries, top=10, strategy="top1", exhaustive=True)
    check_equal(sharded, after, queries, top=10, strategy="topk:2", nprobe=8, ndocs=0)
    assert sharded.refresh() is False
    # A shard before the last that grows would reach the next shard's ids: refused, every shard keeps its commit.
    with aligner.IndexDirectoryWriter.open(paths[0]) as w:
        w.add(*part(600, 601))
    generations = [f["generation"] for f in sharded.describe()]
    with pytest.raises(ValueError, match="shard 0 .* 201 document ids, past the 200"):
        sharded.refresh()
    assert [f["generation"] for f in sharded.describe()] == generations
    check_equal(sharded, after, queries, top=10, strategy="top1", exhaustive=True)
    # renumber=True numbers the shards again: shard 0 now has ids 0..200, the others move up by one.
    assert sharded.refresh(renumber=True) is True
    assert [f["first_id"] for f in sharded.describe()] == [0, 201, 401]
    renumbered = directory(tmp_path / "ref601", [(0, 200), (600, 601), (200, 600)], removed=[3, 50])
    check_equal(sharded, renumbered, queries, top=10, strategy="topp:0.02", exhaustive=True)
    sharded.close()
    # Shards held in memory have no commits to move to.
    small = adask.ShardedRetriever.from_arrays(client, vectors[:offsets[20]], offsets[:21], shards=2)
    with pytest.raises(TypeError, match="only shards that are index directories"):
        small.refresh()
    small.close()


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "scifact")), reason="../shared/data/scifact not present")
def test_scifact_sharded_equals_single_node(cluster4):
    _, client = cluster4
    path = os.path.join(SHARED, "scifact")
    col = aligner.load_collection(path)
    single = single_node(col, storage="bf16")
    queries = judged_queries(col, 24)
    for shards in (2, 4):
        sharded = adask.ShardedRetriever.from_collection(client, path, shards=shards, storage="bf16")
        check_equal(sharded, single, queries, top=10, strategy="top1", exhaustive=True)
        sharded.close()


def test_a_worker_killed_during_a_search_raises_shard_error():
    cran = os.path.join(DATA, "cranfield")
    col = aligner.load_collection(cran)
    queries = judged_queries(col) * 20
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cluster, distributed.Client(cluster) as client:
        sharded = adask.ShardedRetriever.from_collection(client, cran, storage="f32")
        victim = sharded.workers[1]
        pid = client.run(os.getpid, workers=[victim])[victim]
        outcome = {}

        def search():
            try:
                sharded.search_batch(queries, top=10, strategy="topk:4", exhaustive=True)
                outcome["result"] = "finished"
            except Exception as e:
                outcome["error"] = e

        t = threading.Thread(target=search)
        t.start()
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)  # the worker process dies at once
        t.join(timeout=120)
        assert not t.is_alive(), "the search hung after its worker died"
        if "error" not in outcome:  # the search finished before the kill: the next one must fail
            with pytest.raises(adask.ShardError) as info:
                sharded.search_batch(queries[:5], top=10, exhaustive=True)
            outcome["error"] = info.value
        err = outcome["error"]
        assert isinstance(err, adask.ShardError), repr(err)
        assert err.shard == 1 and err.worker == victim and victim in str(err)
