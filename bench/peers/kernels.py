#!/usr/bin/env python3
"""Kernel level, one core: MaxSim (Top-1, the sum of each query token's best dot product) of one query against N
documents through aligner and its peers, on the same vectors, with every library's scores checked against an exact
float64 MaxSim so that nobody is measured doing less work. Run by bench/peers/run.sh (under `taskset -c 0`, every
thread pool set to one thread); prints one markdown table.

Workloads: n = 32 query tokens, dim = 128, unit-length rows (NumKong's MaxSim returns angular distances, which equal
1 - dot on unit vectors), N in {1000, 10000} documents of m = 128 tokens, and of variable lengths (32..224, mean 128).
Values come from numpy's seeded generator (PCG64, seed 12345)."""
import argparse
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np

N_QUERY, DIM, SEED = 32, 128, 12345


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_data(n_docs: int, variable: bool):
    rng = np.random.default_rng(SEED)
    q = unit_rows(rng.standard_normal((N_QUERY, DIM)))
    lengths = rng.integers(32, 225, n_docs) if variable else np.full(n_docs, 128)
    flat = unit_rows(rng.standard_normal((int(lengths.sum()), DIM)))
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    docs = [flat[offsets[i]:offsets[i + 1]] for i in range(n_docs)]
    return q, docs, flat, offsets


def exact_maxsim(q, docs) -> np.ndarray:
    q64 = q.astype(np.float64)
    return np.array([float((d.astype(np.float64) @ q64.T).max(axis=0).sum()) for d in docs])


def timed(fn, repeats: int):
    fn()  # warm-up (and the result checked below)
    times = []
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


# ---- the contenders: each returns a setup function giving (label, callable -> scores in document order) ----------

def aligner_paths(q, docs, flat, offsets):
    import aligner
    out = []
    for storage in ("f32", "bf16", "i8"):
        r = aligner.Retriever(DIM, storage=storage, token_index=False)
        r.add(flat, offsets)
        n = len(docs)

        def run(r=r, n=n):
            res = r.search(q, exhaustive=True, top=n, normalize="none")
            scores = np.empty(n, dtype=np.float64)
            scores[res.ids] = res.scores
            return scores
        out.append((f"aligner {storage} store (Retriever exhaustive)", run))
    out.append(("aligner score_batch (unpacked f32, packs per call)",
                lambda: aligner.score_batch(q, flat, offsets, normalize="none").astype(np.float64)))
    return out


def numkong_paths(q, docs, flat, offsets):
    import numkong as nk
    out = []
    qp = nk.maxsim_pack(q, dtype="f32")
    packed = [nk.maxsim_pack(d, dtype="f32") for d in docs]
    # maxsim_packed returns sum_i min_j (1 - cos): on unit rows MaxSim = n - that
    out.append(("numkong maxsim_packed f32 (per document)",
                lambda: np.array([N_QUERY - nk.maxsim_packed(qp, dp) for dp in packed])))
    return out


def maxsim_cpu_paths(q, docs, flat, offsets):
    import maxsim_cpu as mc
    lengths = np.diff(offsets)
    if np.all(lengths == lengths[0]):
        block = flat.reshape(len(docs), int(lengths[0]), DIM)
        return [("maxsim-cpu maxsim_scores", lambda: np.asarray(mc.maxsim_scores(q, block), dtype=np.float64))]
    return [("maxsim-cpu maxsim_scores_variable", lambda: np.asarray(mc.maxsim_scores_variable(q, docs), dtype=np.float64))]


def padded(docs):
    m = max(len(d) for d in docs)
    block = np.zeros((len(docs), m, DIM), dtype=np.float32)
    mask = np.zeros((len(docs), m), dtype=bool)
    for i, d in enumerate(docs):
        block[i, :len(d)] = d
        mask[i, :len(d)] = True
    return block, mask


def torch_paths(q, docs, flat, offsets):
    import torch
    torch.set_num_threads(1)
    block, mask = padded(docs)
    tq, tb, tmask = torch.from_numpy(q), torch.from_numpy(block), torch.from_numpy(~mask)

    def einsum_max():  # PyLate / ColBERT's scoring: padded documents, einsum, max over document tokens, sum
        with torch.no_grad():
            s = torch.einsum("nd,bmd->bnm", tq, tb).masked_fill(tmask[:, None, :], float("-inf"))
            return s.max(dim=-1).values.sum(dim=-1).double().numpy()
    return [("torch einsum + max (PyLate/ColBERT)", einsum_max)]


def numpy_paths(q, docs, flat, offsets):
    block, mask = padded(docs)
    neg = ~mask

    def matmul_max():
        out = np.empty(len(docs))
        for a in range(0, len(docs), 1000):
            s = block[a:a + 1000] @ q.T  # [b, m, n]
            s[neg[a:a + 1000]] = -np.inf
            out[a:a + 1000] = s.max(axis=1).sum(axis=1)
        return out
    return [("numpy matmul + max", matmul_max)]


CONTENDERS = [("aligner", aligner_paths), ("numkong", numkong_paths), ("maxsim-cpu", maxsim_cpu_paths),
              ("torch", torch_paths), ("numpy", numpy_paths)]


def versions() -> str:
    out = []
    for mod in ("aligner", "numkong", "maxsim_cpu", "torch", "numpy"):
        try:
            m = __import__(mod)
            out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception as e:  # reported, never dropped silently
            out.append(f"{mod} not importable ({type(e).__name__}: {e})")
    return ", ".join(out)


def cpu_facts() -> str:
    name, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and not name.strip("x86_64"):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    return f"{name}; AMX-BF16: {'yes' if 'amx_bf16' in flags else 'no'}; AVX-512: {'yes' if 'avx512f' in flags else 'no'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="1000,10000")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(f"machine: {cpu_facts()}; affinity {sorted(os.sched_getaffinity(0))}")
    print(f"versions: {versions()}")
    print()
    print("| documents | lengths | library / path | docs/s | vs aligner best | max rel. error vs exact | top-10 = exact |")
    print("|---|---|---|---|---|---|---|")
    for n_docs in [int(x) for x in a.docs.split(",")]:
        for variable in (False, True):
            q, docs, flat, offsets = make_data(n_docs, variable)
            exact = exact_maxsim(q, docs)
            exact_top = set(np.argsort(-exact, kind="stable")[:10].tolist())
            rows = []
            for name, setup in CONTENDERS:
                try:
                    paths = setup(q, docs, flat, offsets)
                except Exception as e:
                    rows.append((name, None, f"failed: {type(e).__name__}: {e}".replace("|", "/"), None))
                    traceback.print_exc(file=sys.stderr)
                    continue
                for label, fn in paths:
                    try:
                        t, scores = timed(fn, a.repeats)
                        err = float(np.max(np.abs(scores - exact) / np.maximum(np.abs(exact), 1e-9)))
                        top = set(np.argsort(-scores, kind="stable")[:10].tolist()) == exact_top
                        rows.append((label, n_docs / t, f"{err:.1e}", top))
                    except Exception as e:
                        rows.append((label, None, f"failed: {type(e).__name__}: {e}".replace("|", "/"), None))
                        traceback.print_exc(file=sys.stderr)
            best = max((r[1] for r in rows if r[0].startswith("aligner") and r[1]), default=None)
            shape = "variable 32..224" if variable else "128"
            for label, rate, err, top in rows:
                if rate is None:
                    print(f"| {n_docs} | {shape} | {label} | - | - | {err} | - |")
                else:
                    ratio = f"{rate / best:.2f}x" if best else "-"
                    print(f"| {n_docs} | {shape} | {label} | {rate:,.0f} | {ratio} | {err} | {'yes' if top else 'no'} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
