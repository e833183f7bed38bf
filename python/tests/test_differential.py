"""Seeded random cases against the NumPy reference (reference.py), across shapes the other tests do not pin: odd
dimensions (1 .. 257), empty and one-token documents, repeated tokens and documents, every storage and exact backend,
removals, AMX on and off, and an index directory against a Retriever holding the same documents."""
import numpy as np
import pytest

import aligner
import reference as ref

DIMS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 129, 257]


def bf16(x):
    """Round to bfloat16, nearest even (as the store and the AMX query do)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


@pytest.fixture(params=[True, False], ids=["amx-on", "amx-off"])
def amx(request):
    aligner.set_amx_enabled(request.param)
    yield request.param
    aligner.set_amx_enabled(True)


def test_score_against_the_reference_on_random_shapes(amx):
    rng = np.random.default_rng(11)
    for case in range(60):
        dim = int(rng.choice(DIMS))
        n, m = int(rng.integers(1, 70)), int(rng.integers(0, 300))
        scale = float(rng.choice([1e-3, 1.0, 30.0]))
        q = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
        d = (rng.standard_normal((m, dim)) * scale).astype(np.float32)
        if m > 3 and case % 3 == 0:
            d[1] = d[3] = d[0]  # ties in S
        strategy = str(rng.choice(["top1", "topk:2", "topk:3", "topk:8", "topp:0.01", "topp:0.3", "dense"]))
        normalize = str(rng.choice(["mean", "none"]))
        uq = rng.random(n).astype(np.float32) if case % 4 == 1 else None
        ud = rng.random(m).astype(np.float32) if case % 5 == 2 else None
        want = ref.score(q, d, strategy, normalize, uq, ud)
        got = aligner.score(q, d, strategy=strategy, normalize=normalize, query_salience=uq, doc_salience=ud)
        bound = 1e-5 * float(np.abs(q).max() * (np.abs(d).max() if m else 0) * dim) + 1e-30
        if normalize == "none":
            bound *= n * ref.row_budget(strategy, m)
        assert abs(got - want) <= bound, (case, dim, n, m, strategy, normalize)


@pytest.mark.parametrize("storage", ["f32", "bf16", "f16", "i8", "residual"])
def test_retriever_against_the_reference_and_its_own_paths(storage, amx):
    rng = np.random.default_rng({"f32": 1, "bf16": 2, "f16": 3, "i8": 4, "residual": 5}[storage])
    for case in range(6):
        dim = int(rng.choice(DIMS[1:] if storage == "residual" else DIMS))
        docs = [rng.standard_normal((int(rng.integers(1, 60)), dim)).astype(np.float32) for _ in range(int(rng.integers(2, 40)))]
        if case % 2:
            for d in docs[1::3]:
                d[:] = docs[0][0]  # one vector repeated across documents
            docs[-1] = docs[0].copy()  # and a repeated document
        q = rng.standard_normal((int(rng.integers(1, 30)), dim)).astype(np.float32)
        strategy = ["top1", "topk:2", "topk:5", "topp:0.05", "topp:0.5", "top1"][case]
        normalize = "none" if case % 3 == 2 else "mean"
        backend = ["exact", "exact-bf16", "exact-i8"][case % 3]
        kw = dict(storage=storage, residual_nbits=int(rng.choice([1, 2, 4, 8]))) if storage == "residual" else dict(storage=storage)
        r = aligner.Retriever(dim, backend=backend, dedup_tokens=case % 4 != 3, **kw)
        salience = [rng.random(len(d)).astype(np.float32) for d in docs] if case % 3 == 1 else None
        r.add(docs, salience=salience)
        removed = set(int(i) for i in rng.choice(len(docs), size=len(docs) // 4, replace=False))
        if removed:
            r.remove(sorted(removed))
        live = [i for i in range(len(docs)) if i not in removed]
        ex = r.search(q, top=len(docs), strategy=strategy, normalize=normalize, exhaustive=True)
        got = dict(zip(ex.ids.tolist(), ex.scores.tolist()))
        assert sorted(got) == live
        assert np.all(np.diff(ex.scores) <= 0)
        for i in live[:4]:
            assert r.explain(q, i, strategy=strategy, normalize=normalize)["score"] == got[i]
        if storage in ("f32", "bf16", "f16"):
            decode = {"f32": lambda x: x, "bf16": bf16, "f16": lambda x: x.astype(np.float16).astype(np.float32)}[storage]
            # bf16 documents are scored with the query rounded to bf16 where a path reads them as pairs (AVX512-BF16,
            # AMX), with the float query elsewhere: either reference may hold
            query = bf16(q) if storage == "bf16" else q
            for i in live:
                want = ref.score(query, decode(docs[i]), strategy, normalize, None, None if salience is None else salience[i])
                want_float = ref.score(q, decode(docs[i]), strategy, normalize, None, None if salience is None else salience[i])
                bound = 3e-4 * (1 + abs(want)) * (len(q) if normalize == "none" else 1)
                assert min(abs(got[i] - want), abs(got[i] - want_float)) <= bound, (case, dim, i)
        # Every token as a candidate: the token search reranks exactly the exhaustive set.
        every = r.search(q, top=len(docs), strategy=strategy, normalize=normalize, candidates=100000)
        assert dict(zip(every.ids.tolist(), every.scores.tolist())) == got


@pytest.mark.parametrize("storage", ["f32", "i8", "residual:1", "residual:4"])
def test_a_directory_searches_as_a_retriever_through_adds_removals_and_compactions(tmp_path, storage):
    rng = np.random.default_rng(len(storage))
    dim = 17
    vocab = rng.standard_normal((30, dim)).astype(np.float32)

    def some(count):
        out = []
        for _ in range(count):
            m = int(rng.integers(0, 25))
            out.append(vocab[rng.integers(0, 30, m)] if rng.random() < 0.5 else rng.standard_normal((m, dim)).astype(np.float32))
        return out

    first = some(30)
    w = aligner.IndexDirectoryWriter.create(tmp_path / "d", dim, storage=storage)
    w.add(first)
    kw = dict(storage=storage.split(":")[0])
    if storage.startswith("residual"):
        kw["codec"] = w.codec
    r = aligner.Retriever(dim, **kw)
    r.add(first)
    docs = list(first)
    for step in range(6):
        if step % 3 == 0:
            more = some(10)
            w.add(more)
            r.add(more)
            docs += more
        elif step % 3 == 1:
            live = [i for i in range(len(docs)) if not r.is_removed(i)]
            gone = rng.choice(live, size=3, replace=False).astype(np.int64)
            w.remove(gone)
            r.remove(gone)
        else:
            w.compact()
    w.close()
    with aligner.IndexDirectoryReader(tmp_path / "d") as d:
        for strategy in ("top1", "topk:3", "topp:0.3"):
            q = rng.standard_normal((int(rng.integers(1, 10)), dim)).astype(np.float32)
            a = d.search(q, top=15, strategy=strategy, exhaustive=True)
            b = r.search(q, top=15, strategy=strategy, exhaustive=True)
            assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.scores, b.scores)
            if storage.startswith("residual"):  # postings of every centroid: the exhaustive ranking of non-empty documents
                full = d.search(q, top=len(docs), strategy=strategy, exhaustive=True)
                nonempty = [i for i in full.ids.tolist() if len(docs[i]) > 0]
                probed = d.search(q, top=15, strategy=strategy, exhaustive=False, nprobe=100000, ndocs=0)
                assert probed.ids.tolist() == nonempty[:15]
