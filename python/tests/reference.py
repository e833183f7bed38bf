"""NumPy references, written from SPEC.md independently of the C++ code: S in float64, a stable sort per row (ties
toward the smaller document token), the gate by bisection, trec_eval's measures."""
import math
import os

import numpy as np
import pytest

# The aligner tool of this build (tests that compare with it skip without it) and the bundled collections.
CLI = os.environ.get("ALIGNER_CLI")
DATA = os.environ.get("ALIGNER_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "data"))
needs_cli = pytest.mark.skipif(not CLI or not os.path.exists(CLI), reason="ALIGNER_CLI (the aligner tool of this build) not set")


def row_budget(strategy: str, m: int) -> int:
    if m == 0:
        return 0
    if strategy == "dense":
        return 1
    if strategy == "top1":
        return 1
    if strategy.startswith("topk:"):
        return min(int(strategy[5:]), m)
    if strategy.startswith("topp:"):
        p = float(strategy[5:])
        return min(max(int(math.floor(p * m)), 1), m)
    raise ValueError(strategy)


def score(q, d, strategy="top1", normalize="mean", uq=None, ud=None):
    q = np.asarray(q, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    if len(q) == 0 or len(d) == 0:
        return 0.0
    uq = np.ones(len(q)) if uq is None else np.asarray(uq, dtype=np.float64)
    ud = np.ones(len(d)) if ud is None else np.asarray(ud, dtype=np.float64)
    if strategy == "dense":
        q, d, uq, ud = q[:1], d[:1], uq[:1], ud[:1]
    # Each entry summed on its own (a BLAS product may sum two columns of identical tokens in different orders,
    # and break their tie at random).
    s = (q[:, None, :] * d[None, :, :]).sum(axis=2)
    k = row_budget(strategy, len(d))
    num = z = 0.0
    for i in range(len(q)):
        order = np.argsort(-s[i], kind="stable")[:k]
        a = uq[i] * ud[order]
        num += float(np.sum(s[i, order] * a))
        z += float(np.sum(a))
    if normalize == "none":
        return num
    return num / z if z > 0 else 0.0


def gate(scores, k, eps):
    """lambda_i = min(1, exp((s_i + a) / eps)) with sum = k, a by bisection (float64)."""
    s = np.asarray(scores, dtype=np.float64)
    if k >= len(s):
        return np.ones(len(s))
    if k <= 0:
        return np.zeros(len(s))

    def total(a):
        return np.minimum(1.0, np.exp(np.minimum((s + a) / eps, 0.0))).sum()

    lo, hi = -s.max() - 50 * eps * 100, -s.min() + eps
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if total(mid) < k:
            lo = mid
        else:
            hi = mid
    a = 0.5 * (lo + hi)
    return np.minimum(1.0, np.exp(np.minimum((s + a) / eps, 0.0)))


def trec_order(docs: dict):
    return sorted(docs.items(), key=lambda kv: (-kv[1], _neg(kv[0])))


class _neg(str):
    """Sorts strings in descending order (trec_eval breaks score ties by document id, descending)."""
    def __lt__(self, other):
        return str.__gt__(self, other)


def ndcg(run: dict, qrels: dict, k: int):
    per = {}
    for qid, judged in qrels.items():
        if qid not in run or not run[qid]:
            continue
        ranked = [doc for doc, _ in trec_order(run[qid])][:k]
        dcg = sum(judged.get(doc, 0) / math.log2(r + 2) for r, doc in enumerate(ranked) if judged.get(doc, 0) > 0)
        grades = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
        ideal = sum(g / math.log2(r + 2) for r, g in enumerate(grades))
        per[qid] = dcg / ideal if ideal > 0 else 0.0
    return (sum(per.values()) / len(per) if per else 0.0), per


def measure(run: dict, qrels: dict, name: str, k: int):
    """trec_eval's recip_rank (cut at k), recall_k, map_cut_k and P_k, per judged query the run has."""
    per = {}
    for qid, judged in qrels.items():
        if qid not in run or not run[qid]:
            continue
        ranked = [doc for doc, _ in trec_order(run[qid])][:k]
        rel = [judged.get(doc, 0) > 0 for doc in ranked]
        n_rel = sum(1 for g in judged.values() if g > 0)
        if name == "mrr":
            per[qid] = next((1.0 / (r + 1) for r, x in enumerate(rel) if x), 0.0)
        elif name == "recall":
            per[qid] = sum(rel) / n_rel if n_rel else 0.0
        elif name == "map":
            hits, total = 0, 0.0
            for r, x in enumerate(rel):
                if x:
                    hits += 1
                    total += hits / (r + 1)
            per[qid] = total / n_rel if n_rel else 0.0
        elif name == "precision":
            per[qid] = sum(rel) / k
    return (sum(per.values()) / len(per) if per else 0.0), per
