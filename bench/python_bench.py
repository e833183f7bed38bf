#!/usr/bin/env python3
"""Python binding benchmarks (not a test): the overhead of Retriever.search from Python against the same C++ calls
made in a C++ loop in the same process and run, and the queries per second of aligner.dask's sharded search with
1, 2 and 4 worker processes against one in-process retriever.

Usage (from a build with -DALIGNER_BUILD_PYTHON=ON, e.g. scripts/run-tests.sh's):
    PYTHONPATH=build/python build/venv/bin/python bench/python_bench.py [COLLECTION_DIR] [--storage bf16]
COLLECTION_DIR defaults to ../shared/data/scifact (else the bundled data/cranfield)."""
import argparse
import os
import platform
import statistics
import time

import numpy as np

import aligner


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def queries_of(col):
    q = col["queries"]
    judged = [i for i, qid in enumerate(q["ids"]) if qid in col["qrels"]]
    return [q["vectors"][q["offsets"][i]:q["offsets"][i + 1]] for i in judged]


def binding_overhead(r, queries, repeats, **params):
    """Median over `repeats` rounds of (Python loop of r.search, C++ loop of the same searches), seconds a query."""
    args = aligner._aligner._SearchArgs(params.get("top", 10), params.get("strategy", "top1"), "mean",
                                        params.get("candidates", 4000), params.get("exhaustive", False),
                                        params.get("nprobe", 0), 0, 1.0, True, None, None)
    py_times, cpp_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for q in queries:
            r.search(q, **params)
        py_times.append((time.perf_counter() - start) / len(queries))
        cpp_times.append(r._r._bench_search(queries, 1, args) / len(queries))
    return statistics.median(py_times), statistics.median(cpp_times)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "shared", "data", "scifact")
    if not os.path.isdir(default):
        default = os.path.join(here, "..", "data", "cranfield")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", nargs="?", default=default)
    ap.add_argument("--storage", default="bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--no-dask", action="store_true")
    a = ap.parse_args()

    col = aligner.load_collection(a.collection)
    docs = col["docs"]
    queries = queries_of(col)
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; aligner {aligner.__version__}")
    print(f"collection: {a.collection}: {len(docs['ids'])} documents, {len(docs['vectors'])} tokens, "
          f"{len(queries)} judged queries; storage {a.storage}")
    r = aligner.Retriever(docs["vectors"].shape[1], storage=a.storage)
    start = time.perf_counter()
    r.add(docs["vectors"], docs["offsets"])
    print(f"build: {time.perf_counter() - start:.2f} s")

    print("\n== binding overhead: Retriever.search from Python vs the same C++ calls in a C++ loop (one thread)")
    print(f"{'search':<28} {'python ms/q':>12} {'c++ ms/q':>10} {'overhead':>9}")
    for label, params in [("exhaustive top1", dict(exhaustive=True, top=10)),
                          ("token search k'=100 top1", dict(candidates=100, top=10)),
                          ("token search k'=100 topk:2", dict(candidates=100, top=10, strategy="topk:2"))]:
        py_s, cpp_s = binding_overhead(r, queries, a.repeats, **params)
        print(f"{label:<28} {py_s * 1e3:>12.3f} {cpp_s * 1e3:>10.3f} {100 * (py_s / cpp_s - 1):>8.2f}%")

    if a.no_dask:
        return
    import distributed
    import aligner.dask as adask
    print("\n== sharded search on Dask (LocalCluster, one thread a worker), exhaustive top1, queries per second")
    start = time.perf_counter()
    base = r.search_batch(queries, threads=1, top=10, exhaustive=True)
    single_qps = len(queries) / (time.perf_counter() - start)
    print(f"{'one retriever, 1 thread':<28} {single_qps:>10.1f} q/s")
    for w in [int(x) for x in a.workers.split(",")]:
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      memory_limit=0) as cluster, distributed.Client(cluster) as client:
            index = adask.ShardedRetriever.from_collection(client, a.collection, storage=a.storage)
            index.search_batch(queries[:8], top=10, exhaustive=True)  # warm up
            rounds = []
            for _ in range(3):
                start = time.perf_counter()
                hits = index.search_batch(queries, top=10, exhaustive=True)
                rounds.append(time.perf_counter() - start)
            same = all(list(h.ids) == list(b.ids) for h, b in zip(hits, base))
            qps = len(queries) / statistics.median(rounds)
            print(f"{f'{w} worker(s)':<28} {qps:>10.1f} q/s  {qps / single_qps:5.2f}x  identical={same}")


if __name__ == "__main__":
    main()
