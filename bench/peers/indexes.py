#!/usr/bin/env python3
"""Index level: aligner's residual codes + centroid postings and its token-level path against fast-plaid (LightOn,
PyLate's default index) and xtr-warp-rs, on the same token vectors (SciFact ctx100: the dense form made by
../shared/tools/make_scale_collection.py --copies 1). For each: index bytes per token (the files on disk), build
time (2 threads), search p50 / p95 over the first 100 test queries one at a time on one thread, queries per second with 2
threads, nDCG@10 on the test qrels (aligner's trec_eval-equal ndcg_at for every system). Run by bench/peers/run.sh;
prints one markdown table. A peer that fails to install, build or search is a row with its error."""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

import aligner


LATENCY_QUERIES = 100


def dir_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def percentile(values, p):
    return float(np.percentile(np.asarray(values), p))


class Workload:
    def __init__(self, path: str, vectors: str, pad_to: int = 0):
        col = aligner.load_collection(path, vectors, "test")
        self.docs, self.qrels = col["docs"], col["qrels"]
        q = col["queries"]
        if pad_to:  # zero components appended: every dot product (so every score) is unchanged
            for side in (self.docs, q):
                v = side["vectors"]
                if pad_to < v.shape[1]:
                    raise ValueError(f"--pad-to {pad_to} is below the dim {v.shape[1]}")
                side["vectors"] = np.ascontiguousarray(np.pad(v, ((0, 0), (0, pad_to - v.shape[1]))))
        judged = [i for i, qid in enumerate(q["ids"]) if qid in self.qrels]
        self.query_ids = [q["ids"][i] for i in judged]
        self.queries = [q["vectors"][q["offsets"][i]:q["offsets"][i + 1]] for i in judged]
        self.tokens = len(self.docs["vectors"])
        self.dim = self.docs["vectors"].shape[1]
        off = self.docs["offsets"]
        self.doc_list = [self.docs["vectors"][off[i]:off[i + 1]] for i in range(len(off) - 1)]

    def ndcg(self, ranked) -> float:
        """ranked: per query, a list of (document index, score)."""
        run = {qid: {self.docs["ids"][d]: float(s) for d, s in hits} for qid, hits in zip(self.query_ids, ranked)}
        return aligner.ndcg_at(run, self.qrels, 10)[0]


def to_hits(result):
    """[(doc, score)] from an aligner SearchResult or a peer's list of (doc, score) tuples."""
    if hasattr(result, "ids"):
        return list(zip(result.ids.tolist(), result.scores.tolist()))
    return [(int(d), float(s)) for d, s in result]


def measure(name, w: Workload, build, search_one, search_all, size_path, latency_queries: int):
    """build() -> None; search_one(q) -> hits; search_all(queries, threads) -> [hits]. Latency over the first
    `latency_queries` queries one at a time (one thread); QPS and nDCG@10 from one pass over all queries (2 threads)."""
    start = time.perf_counter()
    build()
    build_s = time.perf_counter() - start
    search_one(w.queries[0])  # warm-up
    lat = []
    for q in w.queries[:latency_queries]:
        start = time.perf_counter()
        search_one(q)
        lat.append(time.perf_counter() - start)
    start = time.perf_counter()
    ranked = [to_hits(r) for r in search_all(w.queries, 2)]
    qps = len(w.queries) / (time.perf_counter() - start)
    return (name, dir_bytes(size_path) / w.tokens, build_s, percentile(lat, 50) * 1e3, percentile(lat, 95) * 1e3, qps,
            w.ndcg(ranked))


def measured_row(label, w: Workload, build, one, many, path):
    """measure()'s row, or (label, the error) when building or searching fails."""
    try:
        return measure(label, w, build, one, many, path, LATENCY_QUERIES)
    except BaseException as e:  # a Rust panic (pyo3 PanicException) is a BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        traceback.print_exc(file=sys.stderr)
        return (label, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}")


def torch_build(torch, path: str, create):
    """A peer's build into a fresh folder `path` on 2 torch threads; searches then run on 1 unless told otherwise."""
    torch.set_num_threads(2)
    shutil.rmtree(path, ignore_errors=True)
    try:
        return create()
    finally:
        torch.set_num_threads(1)


def aligner_rows(w: Workload, work: str):
    rows = []
    configs = [("aligner residual:2 + postings (nprobe 4, ndocs 1000)", dict(storage="residual:2", token_index=False),
                dict(nprobe=4, ndocs=1000)),
               ("aligner residual:4 + postings (nprobe 4, ndocs 1000)", dict(storage="residual:4", token_index=False),
                dict(nprobe=4, ndocs=1000)),
               # The same indexes with a shorter rerank: the 100 best candidates by the centroid-only score.
               ("aligner residual:2 + postings (nprobe 4, ndocs 100)", dict(storage="residual:2", token_index=False),
                dict(nprobe=4, ndocs=100)),
               ("aligner residual:4 + postings (nprobe 4, ndocs 100)", dict(storage="residual:4", token_index=False),
                dict(nprobe=4, ndocs=100)),
               ("aligner token search exact-bf16 k'=100, bf16 store", dict(backend="exact-bf16", storage="bf16"),
                dict(candidates=100))]
    for label, build_kw, search_kw in configs:
        path = os.path.join(work, label.split()[1].replace(":", "") + ".aidx")
        holder = {}

        def build():
            r = aligner.Retriever(w.dim, threads=2, **build_kw)
            r.add(w.docs["vectors"], w.docs["offsets"])
            r.save(path)
            holder["r"] = r

        def one(q):
            return holder["r"].search(q, top=10, **search_kw)

        def many(qs, threads):
            return holder["r"].search_batch(qs, threads=threads, top=10, **search_kw)
        rows.append(measured_row(label, w, build, one, many, path))
    return rows


def fast_plaid_rows(w: Workload, work: str):
    rows = []
    try:
        import torch
        from fast_plaid import search as fp
    except Exception as e:
        return [("fast-plaid", f"failed to import: {type(e).__name__}: {e}")]
    docs_t = [torch.from_numpy(d) for d in w.doc_list]
    for nbits in (2, 4):
        label = f"fast-plaid nbits={nbits} (n_ivf_probe 8, n_full_scores 4096)"
        path = os.path.join(work, f"fast_plaid_{nbits}")
        holder = {}

        def build():
            def create():
                idx = fp.FastPlaid(index=path, device="cpu")
                idx.create(documents_embeddings=docs_t, nbits=nbits)
                return idx
            holder["i"] = torch_build(torch, path, create)

        def one(q):
            return holder["i"].search(torch.from_numpy(q)[None], top_k=10, show_progress=False, n_processes=1)[0]

        def many(qs, threads):
            torch.set_num_threads(threads)
            out = holder["i"].search([torch.from_numpy(q) for q in qs], top_k=10, show_progress=False,
                                     n_processes=threads)
            torch.set_num_threads(1)
            return out
        rows.append(measured_row(label, w, build, one, many, path))
    return rows


def xtr_warp_rows(w: Workload, work: str):
    rows = []
    try:
        import torch
        from xtr_warp import XTRWarp
    except Exception as e:
        return [("xtr-warp-rs", f"failed to import: {type(e).__name__}: {e}")]
    docs_t = [torch.from_numpy(d) for d in w.doc_list]
    for nbits in (2, 4):
        label = f"xtr-warp-rs nbits={nbits} (defaults)"
        path = os.path.join(work, f"xtr_warp_{nbits}")
        holder = {}

        def build():
            def create():
                XTRWarp(index=path, device="cpu").create(docs_t, device="cpu", nbits=nbits, show_progress=False)
                loaded = XTRWarp(index=path, device="cpu")
                loaded.load(device="cpu")
                return loaded
            holder["i"] = torch_build(torch, path, create)

        def one(q):
            return holder["i"].search(torch.from_numpy(q)[None], top_k=10, num_threads=1, show_progress=False)[0]

        def many(qs, threads):
            return holder["i"].search([torch.from_numpy(q) for q in qs], top_k=10, num_threads=threads,
                                      show_progress=False)
        rows.append(measured_row(label, w, build, one, many, path))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", help="the dense form folder made by make_scale_collection.py (holds ctx100/)")
    ap.add_argument("--vectors", default="ctx100")
    ap.add_argument("--only", default="aligner,fast-plaid,xtr-warp")
    ap.add_argument("--pad-to", type=int, default=0,
                    help="append zero components up to this dim for every system (fast-plaid needs dim %% 8 == 0 at nbits 2)")
    ap.add_argument("--latency-queries", type=int, default=100, help="queries timed one at a time (default 100)")
    a = ap.parse_args()
    global LATENCY_QUERIES
    LATENCY_QUERIES = a.latency_queries
    w = Workload(a.collection, a.vectors, a.pad_to)
    print(f"collection: {a.collection} ({a.vectors}): {len(w.doc_list)} documents, {w.tokens} tokens, dim {w.dim}"
          f"{' (zero-padded)' if a.pad_to else ''}, {len(w.queries)} test queries")
    work = tempfile.mkdtemp(prefix="aligner_peers_")
    try:
        rows = []
        only = a.only.split(",")
        if "aligner" in only:
            rows += aligner_rows(w, work)
        if "fast-plaid" in only:
            rows += fast_plaid_rows(w, work)
        if "xtr-warp" in only:
            rows += xtr_warp_rows(w, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| system | bytes/token | build s (2 threads) | p50 ms | p95 ms | QPS (2 threads) | nDCG@10 |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if len(row) == 2:
            print(f"| {row[0]} | {row[1]} | | | | | |".replace("\n", " "))
        else:
            name, bpt, build_s, p50, p95, qps, ndcg = row
            print(f"| {name} | {bpt:.1f} | {build_s:.1f} | {p50:.2f} | {p95:.2f} | {qps:.1f} | {ndcg:.4f} |")


if __name__ == "__main__":
    main()
