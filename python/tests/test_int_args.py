"""Every integer argument of the public API is refused by name, with its value, when it is out of range: below its
least value or beyond what the C++ side takes (2^32 - 1 for a thread count, 2^64 - 1 for a count or seed). The
binding's own message for those ("incompatible function arguments") names no argument."""
import inspect

import numpy as np
import pytest

import aligner

DIM = 8
U32, U64 = 2**32 - 1, 2**64 - 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(3)
    docs = [rng.standard_normal((int(rng.integers(2, 9)), DIM)).astype(np.float32) for _ in range(30)]
    query = rng.standard_normal((3, DIM)).astype(np.float32)
    r = aligner.Retriever(DIM)
    r.add(docs)
    folder = tmp_path_factory.mktemp("ints")
    w = aligner.IndexDirectoryWriter.create(folder / "d", DIM, storage="f32")
    w.add(docs)
    w.close()
    d = aligner.IndexDirectoryReader(folder / "d")
    flat = np.vstack(docs)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in docs])]).astype(np.int64)
    token_ids = rng.integers(0, 50, len(flat)).astype(np.int64)
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 0.5}}
    calls = {  # name -> (function, positional arguments, keyword arguments every call gets)
        "Retriever": (aligner.Retriever, (DIM,), {}),
        "Retriever.search": (r.search, (query,), {}),
        "Retriever.search_batch": (r.search_batch, ([query],), {}),
        "Retriever.search_multi": (r.search_multi, (query, ["top1"]), {}),
        "IndexDirectoryReader.search": (d.search, (query,), {}),
        "IndexDirectoryReader.search_batch": (d.search_batch, ([query],), {}),
        "IndexDirectoryReader.search_multi": (d.search_multi, (query, ["top1"]), {}),
        "IndexDirectoryWriter.create": (aligner.IndexDirectoryWriter.create, (folder / "never", DIM), {}),
        "build_directory": (aligner.build_directory, (folder / "never2", flat, offsets), {}),
        "train_codec": (aligner.train_codec, (flat,), {}),
        "default_centroids": (aligner.default_centroids, (100,), {}),
        "train_salience": (aligner.train_salience, ([query], docs[:4], [(0, [1])]), {"hard_negatives": 0}),
        "fit_idf_salience": (aligner.fit_idf_salience, (flat, token_ids, offsets), {}),
        "fold_protocol": (aligner.fold_protocol, (np.ones((20, 3)),), {"grid": ["top1", "topk:2", "topk:4"]}),
        "gate_budget": (aligner.gate_budget, (0.5, 10), {}),
        "prune_keep_count": (aligner.prune_keep_count, (10, 0.5), {}),
        "solve_gate": (aligner.solve_gate, (np.arange(5, dtype=np.float32), 2.0), {}),
        "ndcg_at": (aligner.ndcg_at, (run, qrels), {}),
        "map_at": (aligner.map_at, (run, qrels), {}),
        "mrr_at": (aligner.mrr_at, (run, qrels), {}),
        "precision_at": (aligner.precision_at, (run, qrels), {}),
        "recall_at": (aligner.recall_at, (run, qrels), {}),
    }
    yield calls
    d.close()


def int_parameters(fn, positional):
    """The parameters of fn with an int default or annotation, past the given positional ones, except ids."""
    params = list(inspect.signature(fn).parameters.values())
    out = []
    for i, p in enumerate(params):
        if p.name in ("self", "id") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.annotation in (int, "int") or (type(p.default) is int):
            out.append((p.name, i < positional))
    return out


def test_out_of_range_integers_are_refused_by_name(world):
    checked, failures = 0, []
    for label, (fn, args, kwargs) in world.items():
        for name, is_positional in int_parameters(fn, len(args)):
            for value in (-1, 2**64, 2**70):
                a, kw = list(args), dict(kwargs)
                if is_positional:
                    a[[p for p in inspect.signature(fn).parameters].index(name)] = value
                else:
                    kw[name] = value
                try:
                    fn(*a, **kw)
                except (ValueError, TypeError, OverflowError) as caught:
                    e = caught
                else:
                    failures.append(f"{label}({name}={value}): accepted")
                    continue
                msg = str(e)
                if not (f"{name} must" in msg and str(value) in msg and "incompatible" not in msg):
                    failures.append(f"{label}({name}={value}): {type(e).__name__}: {msg[:120]}")
                checked += 1
    assert not failures, "\n".join(failures)
    assert checked > 150


def test_the_largest_thread_count_is_taken(world):
    # 2^32 - 1 threads: at most one per item, so the calls run (and 2^32 is refused by the test above).
    fn, args, _ = world["Retriever.search"]
    assert len(fn(*args, threads=U32).ids) > 0
    fn, args, _ = world["IndexDirectoryReader.search_batch"]
    assert len(fn(*args, threads=U32)) == 1
    with pytest.raises(ValueError, match=f"threads must be <= {U32}, got {U32 + 1}"):
        world["Retriever.search"][0](*world["Retriever.search"][1], threads=U32 + 1)
