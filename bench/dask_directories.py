#!/usr/bin/env python3
"""Dask shards as index directories (not a test): the streamed build of a collection split over W worker processes
(ShardedRetriever.build_directories, one shared codec) against one build_directory of the whole, then the judged
queries through both (centroid postings, nprobe 4, ndocs 1000: per shard in the sharded index; and exhaustive), with
nDCG@10 and milliseconds a query (one query at a time, and a batch).

Usage (from a build with -DALIGNER_BUILD_PYTHON=ON, e.g. scripts/run-tests.sh's):
    PYTHONPATH=build/python build/venv/bin/python bench/dask_directories.py COLLECTION_DIR [--vectors ctx100]
        [--workers 2] [--storage residual:2] [--work /tmp/aligner-dask-dirs] [--centroids K] [--threads T]
        [--sharded-only] [--exhaustive-queries N]
The dense form (doc_vectors.npy) is read in place; the token-id form is written out as a .npy first.
--sharded-only (large collections, e.g. the 52M-token one of make_scale_collection.py --copies 50) builds the
sharded index once, with the codec's training, and skips the encode-only rebuild and the single directory;
--exhaustive-queries limits the exhaustive searches to the first N judged queries (0: none)."""
import argparse
import os
import resource
import shutil
import statistics
import time

import numpy as np

import aligner
import aligner.dask as adask
import distributed


def judged(col):
    q = col["queries"]
    idx = [i for i, qid in enumerate(q["ids"]) if qid in col["qrels"]]
    return [q["ids"][i] for i in idx], [q["vectors"][q["offsets"][i]:q["offsets"][i + 1]] for i in idx]


def ndcg(qids, hits, doc_ids, qrels):
    run = {qid: {doc_ids[int(d)]: float(s) for d, s in zip(h[0], h[1])} for qid, h in zip(qids, hits)}
    return aligner.ndcg_at(run, qrels, 10)[0]


def timed(fn, queries):
    one = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        one.append(time.perf_counter() - start)
    return 1e3 * statistics.median(one)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection")
    ap.add_argument("--vectors", default="glove100")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--storage", default="residual:2")
    ap.add_argument("--work", default="/tmp/aligner-dask-dirs")
    ap.add_argument("--centroids", type=int, default=0, help="the shared codec's centroids (0: PLAID's rule)")
    ap.add_argument("--threads", type=int, default=1, help="threads of the codec's training and of each worker's build")
    ap.add_argument("--sharded-only", action="store_true")
    ap.add_argument("--exhaustive-queries", type=int, default=-1, help="-1: every judged query")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    vdir = os.path.join(a.collection, a.vectors)
    col = aligner.load_collection(a.collection, a.vectors, documents=False)
    offsets = np.load(os.path.join(vdir, "doc_offsets.npy"))
    with open(os.path.join(vdir, "doc_ids.txt"), encoding="utf-8") as f:
        doc_ids = f.read().split("\n")[:len(offsets) - 1]
    npy = os.path.join(vdir, "doc_vectors.npy")
    if not os.path.exists(npy):
        npy = os.path.join(a.work, "doc_vectors.npy")
        np.save(npy, aligner.load_collection(a.collection, a.vectors, split="")["docs"]["vectors"])
    tokens = int(offsets[-1])
    print(f"# {a.collection}/{a.vectors}: {len(offsets) - 1} documents, {tokens} tokens; {a.workers} workers; "
          f"storage {a.storage}; {os.cpu_count()} cores")
    qids, queries = judged(col)

    with distributed.LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cluster, distributed.Client(cluster) as client:
        start = time.perf_counter()
        sharded = adask.ShardedRetriever.build_directories(client, os.path.join(a.work, "shards"), npy, offsets,
                                                           names=doc_ids, storage=a.storage,
                                                           residual_centroids=a.centroids, threads=a.threads)
        build_sharded = time.perf_counter() - start
        codec = None
        for f in sharded.describe():
            with aligner.IndexDirectoryReader(f["path"]) as r:
                codec = r.codec
        rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(a.work, "shards")) for f in fs)
        print(f"\nbuild, wall: sharded {build_sharded:.1f} s on {a.workers} workers with the shared codec's training "
              f"({codec.centroids if codec else 0} centroids, {a.threads} thread(s)); workers' peak RSS "
              f"{', '.join(f'{v:.2f}' for v in rss.values())} GB; {disk} bytes on disk, {disk / tokens:.2f} a token")
        if a.sharded_only:
            search(a, qids, queries, doc_ids, col, [(f"{a.workers} directory shards", sharded)])
            sharded.close()
            return
        sharded.close()
        start = time.perf_counter()  # again with the codec: the encoding alone
        sharded = adask.ShardedRetriever.build_directories(client, os.path.join(a.work, "shards2"), npy, offsets,
                                                           names=doc_ids, storage=a.storage, codec=codec)
        encode_sharded = time.perf_counter() - start
        start = time.perf_counter()
        aligner.build_directory(os.path.join(a.work, "single"), npy, offsets, names=doc_ids,
                                storage="residual" if codec else a.storage, codec=codec, threads=1)
        build_single = time.perf_counter() - start
        single = aligner.IndexDirectoryReader(os.path.join(a.work, "single"))
        print(f"build, wall: sharded with that codec given {encode_sharded:.1f} s; one directory with it, one thread, "
              f"{build_single:.1f} s")
        search(a, qids, queries, doc_ids, col, [("one directory", single), (f"{a.workers} directory shards", sharded)])
        sharded.close()
        single.close()


def search(a, qids, queries, doc_ids, col, indexes):
    print("\n| search | index | queries | nDCG@10 | ms a query (one at a time) | ms a query (batch) |\n"
          "|---|---|---|---|---|---|")
    limit = len(queries) if a.exhaustive_queries < 0 else a.exhaustive_queries
    for label, params, n in (("postings (nprobe 4, ndocs 1000)", {}, len(queries)),
                             ("exhaustive", {"exhaustive": True}, limit)):
        if n == 0:
            continue
        for name, index in indexes:
            hits = index.search_batch(queries[:n], top=100, **params)
            score = ndcg(qids[:n], [(h.ids, h.scores) for h in hits], doc_ids, {q: col["qrels"][q] for q in qids[:n]})
            one = timed(lambda q: index.search(q, top=100, **params), queries[:min(n, 50)])
            start = time.perf_counter()
            index.search_batch(queries[:n], top=100, **params)
            batch = 1e3 * (time.perf_counter() - start) / n
            print(f"| {label} | {name} | {n} | {score:.4f} | {one:.2f} | {batch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
