"""aligner: multi-vector (late-interaction) retrieval as sparse alignment.

The ALIGNER model of arXiv 2211.01267, with ColBERT's MaxSim as its Top-1 special case, on the C++ library of the
same name. Arrays go in and out as NumPy arrays: a float32 C-contiguous array is read in place (no copy), any other
real-valued array is converted once, and anything else is refused with a TypeError or ValueError naming the
argument.

    import numpy as np, aligner
    docs = [np.random.rand(n, 64).astype(np.float32) for n in (30, 50, 40)]
    r = aligner.Retriever(dim=64)                 # exact token search + fp32 rerank
    r.add(docs)                                   # ids 0, 1, 2
    ids, scores = r.search(docs[1][:8], top=2)    # best first
    aligner.score(docs[1][:8], docs[1])           # sim(Q, D) of one pair

Strategies are written as in the CLI: "top1" (MaxSim), "topk:K", "topp:P" and "dense"; normalisation "mean" (the
paper's: divide by the number of aligned pairs) or "none" (the sum: ColBERT's score with top1).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

from . import _aligner
from ._aligner import SearchResult, backends, kernel_info, set_amx_enabled, set_avx512_enabled, set_vnni_enabled  # noqa: F401

__all__ = [
    "Retriever", "SearchResult", "backends", "kernel_info", "set_amx_enabled", "set_avx512_enabled", "set_vnni_enabled", "score",
    "score_batch", "solve_gate", "gate_budget",
    "salience", "prune", "prune_keep_count", "strategy_name", "ndcg_at", "mrr_at", "recall_at", "map_at",
    "mean_average_precision", "precision_at", "load_collection", "load_qrels", "load_run", "save_run",
    "load_beir_jsonl", "load_npy", "run_from_results", "load_salience_heads",
]

__version__ = _aligner.__version__


def score(query, doc, *, strategy: str = "top1", normalize: str = "mean", query_salience=None, doc_salience=None,
          reference: bool = False) -> float:
    """sim(Q, D): the ALIGNER score of one query and one document (token matrices [tokens, dim]).

    query_salience / doc_salience: one weight >= 0 per token, or None (all ones). reference=True computes the
    double-precision specification (scalar, S in float64) instead of the SIMD kernel."""
    return _aligner.score(query, doc, strategy=strategy, normalize=normalize, query_salience=query_salience,
                          doc_salience=doc_salience, reference=reference)


def score_batch(query, docs, offsets=None, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
                doc_salience=None):
    """sim(Q, D_d) for every document: `docs` is a list of [tokens, dim] arrays, or one [tokens, dim] array of all
    documents back to back with `offsets` (document d is rows offsets[d]..offsets[d+1]). Returns float32 [docs].
    doc_salience, when given, has one entry per token of all documents."""
    return _aligner.score_batch(query, docs, offsets, strategy=strategy, normalize=normalize,
                                query_salience=query_salience, doc_salience=doc_salience)


def solve_gate(scores, k: float, *, epsilon: float = 0.002, exact: bool = True, max_iterations: int = 10000):
    """The entropy-regularised top-k gate lambda of SPEC section 4: sum(lambda) = k, lambda in [0, 1].

    exact=True solves it exactly (lambda_i = min(1, exp((s_i + a*) / epsilon))); exact=False runs the paper's
    iteration for at most max_iterations updates."""
    return _aligner.solve_gate(scores, k, epsilon=epsilon, exact=exact, max_iterations=max_iterations)


def gate_budget(alpha: float, rows: int) -> float:
    """The gate's budget k = ceil(alpha * rows)."""
    return _aligner.gate_budget(alpha, rows)


def salience(tokens, weights, bias: float, *, gate_alpha: Optional[float] = None, gate_epsilon: float = 0.002):
    """Unary salience u_i = lambda_i * ReLU(w . x_i + b) of every token (float32 [tokens]); lambda is 1 without
    gate_alpha, else the entropy-regularised gate with budget ceil(gate_alpha * tokens)."""
    return _aligner.salience(tokens, weights, bias, gate_alpha=gate_alpha, gate_epsilon=gate_epsilon)


def load_salience_heads(path) -> dict:
    """A heads file of `aligner train-salience`: {"dim", "trained_with", "query": head, "doc": head}, each head a
    dict of weights (float32 [dim]), bias, gate_alpha (None: no gate) and gate_epsilon, the arguments salience()
    takes: `salience(tokens, **heads["doc"])`. OSError names the file and line of anything malformed."""
    return _aligner.load_salience_heads(os.fspath(path))


def prune(salience, beta: float):
    """Indices (ascending, uint32) of the ceil(beta * tokens) most salient tokens, ties toward the smaller index."""
    return _aligner.prune(salience, beta)


def prune_keep_count(rows: int, beta: float) -> int:
    """How many of `rows` tokens prune keeps at ratio beta."""
    return _aligner.prune_keep_count(rows, beta)


def strategy_name(strategy: str) -> str:
    """The canonical name of a strategy ("topk:1" -> "top1", "topp:1%" -> "topp:0.01"); ValueError when invalid."""
    return _aligner.strategy_name(strategy)


class Retriever:
    """ALIGNER retrieval: token search for candidates, then every candidate reranked with sim(Q, D).

    backend: a token MIPS backend of this build (aligner.backends: "exact", "exact-bf16", "exact-i8", and where built with them
    "faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib"). storage: the rerank store's precision: "f32", "bf16", "f16", "i8",
    "residual" (a centroid id plus residual_nbits per component; "residual:N" sets N; residual_anisotropy: the
    weight of a code's error along its token, 0 = 0.19 (dim - 1), 1 = nearest buckets). doc_prune: the fraction of
    each document's tokens (by salience) given to the token index (< 1 needs salience at add). dedup_tokens:
    identical token vectors enter the index once. token_index=False keeps no token index: search with
    exhaustive=True or, on a residual store, nprobe > 0 (centroid postings). threads: threads of an add's residual
    training and of the hnswlib graph's insertion (0 = all cores; hnswlib's graph then depends on the timing). nlist,
    ivf_nprobe: the "faiss-ivf" backend's inverted lists (0: 4 sqrt(vectors) rounded down to a power of two, at most
    vectors / 39, chosen at the first add) and lists probed per query token.

    Searches may run from many Python threads at once (the GIL is released); add and remove wait for them."""

    def __init__(self, dim: int, *, backend: str = "exact", storage: str = "f32", doc_prune: float = 1.0,
                 dedup_tokens: bool = True, token_index: bool = True, residual_nbits: int = 2,
                 residual_centroids: int = 0, residual_iterations: int = 10, residual_anisotropy: float = 0.0,
                 seed: int = 0, threads: int = 1,
                 graph_m: int = 16, ef_construction: int = 80, ef_search: int = 128,
                 nlist: int = 0, ivf_nprobe: int = 32, _impl=None):
        if _impl is not None:
            self._r = _impl
            return
        _check_int("dim", dim, 1)
        self._r = _aligner._Retriever(dim, backend, storage, doc_prune, dedup_tokens, token_index, residual_nbits,
                                      residual_centroids, residual_iterations, float(residual_anisotropy), seed, threads,
                                      graph_m, ef_construction, ef_search, nlist, ivf_nprobe)

    # ---- facts ----
    @property
    def dim(self) -> int:
        return self._r.dim

    @property
    def size(self) -> int:
        """Documents ever added (removed ones included: ids are never reused)."""
        return self._r.size

    def __len__(self) -> int:
        """Live documents (added minus removed)."""
        return self._r.live_size

    @property
    def indexed_tokens(self) -> int:
        """Distinct vectors in the token index."""
        return self._r.indexed_tokens

    @property
    def store_bytes(self) -> int:
        """Bytes of the rerank store (codes, panels and salience)."""
        return self._r.store_bytes

    @property
    def tokens(self) -> int:
        """Tokens in the rerank store."""
        return self._r.store_tokens

    @property
    def storage(self) -> str:
        return self._r.storage

    @property
    def backend(self) -> str:
        return self._r.backend

    def is_removed(self, id: int) -> bool:
        return self._r.is_removed(id)

    def __repr__(self) -> str:
        return (f"Retriever(dim={self.dim}, backend={self.backend!r}, storage={self.storage!r}, "
                f"documents={len(self)}, tokens={self.tokens})")

    # ---- changes ----
    def add(self, docs, offsets=None, *, salience=None):
        """Adds documents; returns their ids (int64, consecutive). `docs`: a list of [tokens, dim] arrays, or one
        [tokens, dim] array (one document; or all documents back to back with `offsets`). salience: one value per
        token of all documents, or None. All or nothing: on error nothing changes."""
        return self._r.add(docs, offsets, salience)

    def remove(self, ids) -> None:
        """Removes one id or an array of ids (all or nothing: every id must exist, be live and appear once)."""
        self._r.remove(ids)

    # ---- search ----
    def search(self, query, *, top: int = 10, strategy: str = "top1", normalize: str = "mean",
               candidates: int = 4000, exhaustive: bool = False, nprobe: int = 0, ndocs: int = 0,
               query_salience=None, query_prune: float = 1.0, use_doc_salience: bool = True, allowed_ids=None,
               filter: Optional[Callable[[int], bool]] = None, use_query_salience: bool = True) -> SearchResult:
        """The top documents of one query [tokens, dim], best first (score descending, ties to the smaller id).

        candidates: k', backend hits per kept query token; exhaustive: rerank every live document; nprobe > 0:
        centroid-posting candidates of a residual store (ndocs > 0 keeps the best ndocs by the centroid-only
        score); query_prune < 1 keeps that fraction of query tokens by query_salience for the token search.
        allowed_ids / filter restrict the results (min(top, allowed documents) are returned).
        use_query_salience=False (with use_doc_salience=False): salience only chooses the searched tokens and the
        rerank is unweighted (learned gated heads are keep rules). Returns a SearchResult: `ids, scores = result`,
        plus its diagnostics."""
        args = _aligner._SearchArgs(top, strategy, normalize, candidates, exhaustive, nprobe, ndocs, query_prune,
                                    use_doc_salience, allowed_ids, filter, use_query_salience)
        return self._r.search(query, query_salience, args)

    def search_batch(self, queries, offsets=None, *, threads: int = 0, top: int = 10, strategy: str = "top1",
                     normalize: str = "mean", candidates: int = 4000, exhaustive: bool = False, nprobe: int = 0,
                     ndocs: int = 0, query_salience=None, query_prune: float = 1.0, use_doc_salience: bool = True,
                     allowed_ids=None, filter: Optional[Callable[[int], bool]] = None,
                     use_query_salience: bool = True) -> list:
        """search() for many queries (a list of arrays, or one array with offsets) on `threads` threads (0: all
        cores), the GIL released; results equal serial searches. query_salience: one value per token of all
        queries."""
        args = _aligner._SearchArgs(top, strategy, normalize, candidates, exhaustive, nprobe, ndocs, query_prune,
                                    use_doc_salience, allowed_ids, filter, use_query_salience)
        return self._r.search_batch(queries, offsets, query_salience, threads, args)

    def explain(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
                use_doc_salience: bool = True) -> dict:
        """The aligned pairs behind document `id`'s score: a dict of arrays query_token, doc_token, similarity,
        weight (grouped by query token, best first) and numerator, z and score; pass the search's strategy,
        normalisation and salience and `score` equals the search's score of that document."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None)
        return self._r.explain(query, id, query_salience, args)

    # ---- files ----
    def save(self, path) -> None:
        """Writes the whole index to one file, atomically (the CLI's `aligner search --index` reads it)."""
        self._r.save(str(path))

    @classmethod
    def load(cls, path, *, mmap: bool = True) -> "Retriever":
        """Opens an index file written by save() or by the CLI (`aligner index`), with the backend it was built
        with; mmap=True maps the token store read-only instead of reading it."""
        return cls(0, _impl=_aligner._Retriever.load(str(path), mmap))


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


# ---- evaluation (trec_eval's measures; run and qrels as pytrec_eval takes them) ----

def _measure(name: str, k: int, run: dict, qrels: dict, all_judged: bool):
    return _aligner._metric(name, k, run, qrels, all_judged)


def ndcg_at(run: dict, qrels: dict, k: int = 10, *, all_judged: bool = False):
    """nDCG@k as trec_eval's ndcg_cut_k. run: {query id: {doc id: score}}, qrels: {query id: {doc id: grade}}.
    Returns (mean, {query id: value}) over the judged queries the run has (all judged queries with all_judged)."""
    return _measure("ndcg", k, run, qrels, all_judged)


def mrr_at(run: dict, qrels: dict, k: int = 10, *, all_judged: bool = False):
    """Reciprocal rank of the first relevant document within k (trec_eval recip_rank with a cutoff)."""
    return _measure("mrr", k, run, qrels, all_judged)


def recall_at(run: dict, qrels: dict, k: int = 100, *, all_judged: bool = False):
    """Recall@k as trec_eval's recall_k."""
    return _measure("recall", k, run, qrels, all_judged)


def map_at(run: dict, qrels: dict, k: int = 1000, *, all_judged: bool = False):
    """Average precision cut at k (trec_eval map_cut_k)."""
    return _measure("map", k, run, qrels, all_judged)


def mean_average_precision(run: dict, qrels: dict, *, all_judged: bool = False):
    """Average precision over each whole ranking (trec_eval map)."""
    return _measure("map", 2**63 - 1, run, qrels, all_judged)


def precision_at(run: dict, qrels: dict, k: int = 10, *, all_judged: bool = False):
    """Precision at k (trec_eval P_k)."""
    return _measure("precision", k, run, qrels, all_judged)


def run_from_results(query_ids: Iterable[str], results: Iterable[SearchResult], doc_ids=None) -> dict:
    """A run {query id: {doc id: score}} from search results; doc_ids maps a document id (int) to its name."""
    run = {}
    for qid, res in zip(query_ids, results):
        ids, scores = res
        names = ids.tolist() if doc_ids is None else [doc_ids[i] for i in ids.tolist()]
        run[str(qid)] = {str(n): float(s) for n, s in zip(names, scores.tolist())}
    return run


# ---- readers ----

def load_collection(path, vectors: str = "glove100", split: str = "test", *, documents: bool = True) -> dict:
    """A collection folder (the layout of ../shared/data: token-id or dense form). Returns {"docs": {...},
    "queries": {...}, "qrels": {...}, "vocab_size": int}; docs and queries hold "vectors" (float32 [tokens, dim]),
    "offsets" (int64) and "ids" (list of str). split "" reads no qrels; documents=False reads queries only."""
    return _aligner.load_collection(str(path), vectors, split, documents)


def load_qrels(path) -> dict:
    """A TREC or BEIR qrels file as {query id: {doc id: grade}}."""
    return _aligner.load_qrels(str(path))


def load_run(path) -> dict:
    """A TREC run file as {query id: {doc id: score}}."""
    return _aligner.load_run(str(path))


def save_run(path, run: dict, tag: str = "aligner") -> None:
    """Writes a run as a TREC run file (ranked by score, ties by doc id), atomically."""
    _aligner.save_run(str(path), run, tag)


def load_beir_jsonl(path) -> list:
    """A BEIR corpus or queries .jsonl file as a list of {"_id", "title", "text"}."""
    return _aligner.load_beir_jsonl(str(path))


def load_npy(path):
    """A .npy file of float32 or float16 as a float32 array (the library's reader)."""
    return _aligner.load_npy(str(path))
