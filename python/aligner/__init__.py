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

import operator
import os
from typing import Any, Callable, Iterable, Optional

from . import _aligner
from ._aligner import (SearchResult, backends, kernel_info, paper_grid, set_amx_enabled, set_avx2_enabled,  # noqa: F401
                       set_avx512_enabled, set_vnni_enabled, token_idf)

__all__ = [
    "Retriever", "SearchResult", "backends", "kernel_info", "set_amx_enabled", "set_avx512_enabled", "set_avx2_enabled",
    "set_vnni_enabled", "score", "score_batch", "solve_gate", "gate_budget",
    "salience", "prune", "prune_keep_count", "strategy_name", "ndcg_at", "mrr_at", "recall_at", "map_at",
    "mean_average_precision", "precision_at", "load_collection", "load_qrels", "load_run", "save_run",
    "load_beir_jsonl", "load_npy", "run_from_results", "load_salience_heads",
    "IndexDirectoryWriter", "IndexDirectoryReader", "build_directory", "train_salience", "token_idf", "fit_salience",
    "fit_idf_salience", "paper_grid", "adapt", "fold_protocol", "ResidualCodec", "train_codec", "default_centroids",
]

__version__ = _aligner.__version__


def _per_token(values, seqs, offsets, name: str):
    """`values` as one flat array of per-token values: a list (or tuple) of 1-d arrays, one per sequence of `seqs`
    (a list of [tokens, dim] arrays, or one array with `offsets`: one sequence without), is checked sequence by
    sequence and joined; anything else is passed on as given (the C++ side checks it)."""
    if not isinstance(values, (list, tuple)) or not values:
        return values
    import numpy as np
    if not all(np.ndim(v) == 1 for v in values):
        return values
    if isinstance(seqs, (list, tuple)):
        lengths = [len(s) for s in seqs]
    elif offsets is not None:
        o = np.asarray(offsets).reshape(-1)
        lengths = [int(b) - int(a) for a, b in zip(o[:-1], o[1:])]
    else:
        lengths = [len(seqs)]
    if len(values) != len(lengths):
        raise ValueError(f"{name}: {len(values)} per-sequence arrays for {len(lengths)} sequences")
    for i, (v, n) in enumerate(zip(values, lengths)):
        if len(v) != n:
            raise ValueError(f"{name}[{i}] has {len(v)} values for a sequence of {n} tokens")
    return np.concatenate([np.asarray(v, dtype=np.float32) for v in values])


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
    doc_salience, when given, has one entry per token of all documents (one array), or is a list of one array per
    document."""
    docs = _sequences_arg(docs, offsets)
    doc_salience = _per_token(doc_salience, docs, offsets, "doc_salience")
    return _aligner.score_batch(query, docs, offsets, strategy=strategy, normalize=normalize,
                                query_salience=query_salience, doc_salience=doc_salience)


def solve_gate(scores, k: float, *, epsilon: float = 0.002, exact: bool = True, max_iterations: int = 10000):
    """The entropy-regularised top-k gate lambda of SPEC section 4: sum(lambda) = k, lambda in [0, 1].

    exact=True solves it exactly (lambda_i = min(1, exp((s_i + a*) / epsilon))); exact=False runs the paper's
    iteration for at most max_iterations updates."""
    max_iterations = _count_arg("max_iterations", max_iterations, 0)
    return _aligner.solve_gate(scores, k, epsilon=epsilon, exact=exact, max_iterations=max_iterations)


def gate_budget(alpha: float, rows: int) -> float:
    """The gate's budget k = ceil(alpha * rows)."""
    return _aligner.gate_budget(alpha, _count_arg("rows", rows, 0))


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
    return _aligner.prune_keep_count(_count_arg("rows", rows, 0), beta)


def strategy_name(strategy: str) -> str:
    """The canonical name of a strategy ("topk:1" -> "top1", "topp:1%" -> "topp:0.01"); ValueError when invalid."""
    return _aligner.strategy_name(strategy)


class ResidualCodec:
    """A trained residual codec (SPEC section 10): K centroids and, per component, 2^nbits buckets (cutoffs and a
    reconstruction value each). A token is stored as its nearest centroid's id plus the bucket of every component
    of its residual, about 2 + dim * nbits / 8 bytes.

    One codec can be given to several indexes (Retriever, IndexDirectoryWriter.create, build_directory, the shards
    of aligner.dask.ShardedRetriever): they then code every token alike, so their scores agree and the codec is
    trained once. Made by aligner.train_codec, taken from an index (Retriever.codec, IndexDirectoryReader.codec),
    or read back with ResidualCodec.from_bytes; it pickles as its bytes. Immutable."""

    def __init__(self, _impl):
        if not isinstance(_impl, _aligner._ResidualCodec):
            raise TypeError("make a ResidualCodec with aligner.train_codec or ResidualCodec.from_bytes")
        self._c = _impl

    @classmethod
    def from_bytes(cls, data: bytes) -> "ResidualCodec":
        """The codec of to_bytes(); OSError naming what is wrong for anything else."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return cls(_aligner._ResidualCodec.from_bytes(bytes(data)))

    def to_bytes(self) -> bytes:
        """The codec's bytes (the form an index file embeds)."""
        return self._c.to_bytes()

    def __reduce__(self):
        return (ResidualCodec.from_bytes, (self.to_bytes(),))

    @property
    def dim(self) -> int:
        return self._c.dim

    @property
    def nbits(self) -> int:
        """Bits a residual component: 1, 2, 4 or 8."""
        return self._c.nbits

    @property
    def centroids(self) -> int:
        """K, the number of centroids."""
        return self._c.centroids

    @property
    def anisotropy(self) -> float:
        """eta of the anisotropic codes (1: nearest buckets)."""
        return self._c.anisotropy

    @property
    def bytes_per_token(self) -> float:
        """2 + dim * nbits / 8: a stored token's centroid id and codes."""
        return self._c.bytes_per_token

    @property
    def storage(self) -> str:
        """The storage name of an index with this codec: "residual:N"."""
        return f"residual:{self.nbits}"

    def centroid_vectors(self):
        """The centroids, float32 [centroids, dim] (a copy)."""
        return self._c.centroid_vectors()

    def assign(self, tokens):
        """The nearest centroid of every token [tokens, dim] (smallest L2 distance, ties to the smaller id), uint32."""
        return self._c.assign(tokens)

    def reconstruct(self, tokens):
        """Every token [tokens, dim] as an index with this codec stores it (its centroid plus its decoded residual
        codes), float32 [tokens, dim]: what the rerank scores instead of the token."""
        return self._c.reconstruct(tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, ResidualCodec) and self._c.same(other._c)

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return (f"ResidualCodec(dim={self.dim}, nbits={self.nbits}, centroids={self.centroids}, "
                f"anisotropy={self.anisotropy:.6g})")


def train_codec(tokens, *, nbits: int = 2, centroids: int = 0, sample: int = 0, iterations: int = 10,
                anisotropy: float = 0.0, seed: int = 0, threads: int = 1) -> ResidualCodec:
    """Trains a residual codec on token vectors [tokens, dim] (finite): k-means (Lloyd, `iterations`, seeded) for
    the centroids on `sample` tokens drawn from them (0: max(64 K, 65536), at most all), then each component's
    bucket cutoffs and values from the residuals' quantiles. centroids: K (0: PLAID's rule 2^floor(log2(16
    sqrt(tokens))), at most the distinct vectors and 65536); anisotropy: eta of the anisotropic codes (0: 0.19 (dim -
    1), 1: nearest buckets); threads: the assignment's threads (0: all cores). The same as the codec a residual
    Retriever trains on its first add with the same settings."""
    _check_int("nbits", nbits, 1)
    _check_int("centroids", centroids, 0)
    _check_int("sample", sample, 0)
    _check_int("iterations", iterations, 1)
    _check_int("seed", seed, 0)
    _check_int("threads", threads, 0, _U32)
    return ResidualCodec(_aligner._ResidualCodec.train(tokens, nbits, centroids, sample, iterations, float(anisotropy), seed,
                                                       threads))


def default_centroids(tokens: int) -> int:
    """PLAID's number of centroids for a collection of `tokens` tokens: 2^floor(log2(16 sqrt(tokens))), at most
    65536 and at most `tokens` (what centroids=0 chooses)."""
    _check_int("tokens", tokens, 0)
    return _aligner.default_centroids(tokens)


def _codec_training_given(residual_centroids=0, residual_iterations=10, residual_anisotropy=0.0) -> list:
    """The codec-training settings given a value other than their default, as (name, value) pairs."""
    return [(name, value) for name, value, default in (("residual_centroids", residual_centroids, 0),
                                                       ("residual_iterations", residual_iterations, 10),
                                                       ("residual_anisotropy", residual_anisotropy, 0.0))
            if value != default]


def _check_residual_settings(storage, residual_centroids=0, residual_iterations=10, residual_anisotropy=0.0,
                              **others):
    """Settings of a residual codec's training given with a storage that has none are refused by name (they would
    be ignored). `others`: further residual-only settings, each None unless given."""
    if not isinstance(storage, str) or storage.startswith("residual"):
        return
    given = _codec_training_given(residual_centroids, residual_iterations, residual_anisotropy)
    given += [(name, value) for name, value in others.items() if value is not None]
    if given:
        name, value = given[0]
        raise ValueError(f"{name}={value!r} sets the residual codec, but storage={storage!r} has none "
                         "(use storage='residual:N', or leave it out)")


def _codec_arg(codec, residual_centroids=0, residual_iterations=10, residual_anisotropy=0.0):
    """The C++ codec of a `codec` keyword (None or a ResidualCodec); with a codec, the codec-training settings must
    keep their defaults (they would not be used)."""
    if codec is None:
        return None
    if not isinstance(codec, ResidualCodec):
        raise TypeError(f"codec must be an aligner.ResidualCodec or None, got {type(codec).__name__}")
    given = _codec_training_given(residual_centroids, residual_iterations, residual_anisotropy)
    if given:
        name, value = given[0]
        raise ValueError(f"{name}={value!r} trains a codec, but codec is given (it is already trained)")
    return codec._c


def _sequences_arg(seqs, offsets):
    """`seqs` as the C++ side takes it: a 3-d array [sequences, tokens, dim] (equal lengths, offsets not given)
    becomes a list of its 2-d rows, and a generator or other iterator a list; anything else is passed on as given."""
    if offsets is None and getattr(seqs, "ndim", None) == 3:
        return list(seqs)
    if not isinstance(seqs, (list, tuple, str, bytes)) and not hasattr(seqs, "__array__") and hasattr(seqs, "__next__"):
        return list(seqs)
    return seqs


def _retriever_from_bytes(data: bytes) -> "Retriever":
    """Unpickles a Retriever: the bytes of its index file, read back without a mapping."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="aligner-") as folder:
        path = os.path.join(folder, "index.aligner")
        with open(path, "wb") as f:
            f.write(data)
        return Retriever.load(path, mmap=False)


class Retriever:
    """ALIGNER retrieval: token search for candidates, then every candidate reranked with sim(Q, D).

    backend: a token MIPS backend of this build (aligner.backends: "exact", "exact-bf16", "exact-i8", and where built with them
    "faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib"). storage: the rerank store's precision: "f32", "bf16", "f16", "i8",
    "residual" (a centroid id plus residual_nbits per component, 2 unless given; "residual:N" sets N, and a
    residual_nbits that differs from N is an error; residual_anisotropy: the
    weight of a code's error along its token, 0 = 0.19 (dim - 1), 1 = nearest buckets). doc_prune: the fraction of
    each document's tokens (by salience) given to the token index (< 1 needs salience at add). dedup_tokens:
    identical token vectors enter the index once. token_index=False keeps no token index: search with
    exhaustive=True or, on a residual store, nprobe > 0 (centroid postings). threads: threads of an add's residual
    training and of the hnswlib graph's insertion (0 = all cores; hnswlib's graph then depends on the timing). nlist,
    ivf_nprobe: the "faiss-ivf" backend's inverted lists (0: 4 sqrt(vectors) rounded down to a power of two, at most
    vectors / 39, chosen at the first add) and lists probed per query token. codec: a trained ResidualCodec (storage
    "residual" or its "residual:N") instead of one trained on the first add.

    Searches may run from many Python threads at once (the GIL is released); add and remove wait for them."""

    def __init__(self, dim: int, *, backend: str = "exact", storage: str = "f32", doc_prune: float = 1.0,
                 dedup_tokens: bool = True, token_index: bool = True, residual_nbits: Optional[int] = None,
                 residual_centroids: int = 0, residual_iterations: int = 10, residual_anisotropy: float = 0.0,
                 seed: int = 0, threads: int = 1,
                 graph_m: int = 16, ef_construction: int = 80, ef_search: int = 128,
                 nlist: int = 0, ivf_nprobe: int = 32, codec: Optional["ResidualCodec"] = None, _impl=None):
        if _impl is not None:
            self._r = _impl
            return
        _check_int("dim", dim, 1)
        residual_centroids, residual_iterations, seed, graph_m, ef_construction, ef_search, nlist, ivf_nprobe = (
            _count_arg(n, v, 0) for n, v in (("residual_centroids", residual_centroids),
                                             ("residual_iterations", residual_iterations), ("seed", seed),
                                             ("graph_m", graph_m), ("ef_construction", ef_construction),
                                             ("ef_search", ef_search), ("nlist", nlist), ("ivf_nprobe", ivf_nprobe)))
        threads = _threads_arg(threads)
        _check_residual_settings(storage, residual_centroids, residual_iterations, residual_anisotropy,
                                 residual_nbits=residual_nbits)
        c = _codec_arg(codec, residual_centroids, residual_iterations, residual_anisotropy)
        if residual_nbits is not None and isinstance(storage, str) and storage.startswith("residual:") \
                and storage[len("residual:"):] != str(residual_nbits):
            raise ValueError(f"residual_nbits={residual_nbits!r} contradicts storage={storage!r} (give one of them)")
        if codec is not None:
            if residual_nbits is not None and residual_nbits != codec.nbits:
                raise ValueError(f"residual_nbits={residual_nbits} does not match the codec's {codec.nbits} bits")
            residual_nbits = codec.nbits
        if residual_nbits is None:
            residual_nbits = 2
        self._r = _aligner._Retriever(dim, backend, storage, doc_prune, dedup_tokens, token_index, residual_nbits,
                                      residual_centroids, residual_iterations, float(residual_anisotropy), seed, threads,
                                      graph_m, ef_construction, ef_search, nlist, ivf_nprobe, c)

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

    @property
    def codec(self) -> Optional["ResidualCodec"]:
        """The residual store's codec (given, trained by the first add, or loaded with the index), else None."""
        c = self._r.codec
        return None if c is None else ResidualCodec(c)

    def is_removed(self, id: int) -> bool:
        return self._r.is_removed(id)

    def __repr__(self) -> str:
        return (f"Retriever(dim={self.dim}, backend={self.backend!r}, storage={self.storage!r}, "
                f"documents={len(self)}, tokens={self.tokens})")

    # ---- changes ----
    def add(self, docs, offsets=None, *, salience=None):
        """Adds documents; returns their ids (int64, consecutive). `docs`: a list (or any iterable) of [tokens, dim]
        arrays, a [documents, tokens, dim] array of equal-length documents, or one [tokens, dim] array (one
        document; or all documents back to back with `offsets`). salience: one value per token of all documents (one
        array, or a list of one array per document), or None. All or nothing: on error nothing changes."""
        docs = _sequences_arg(docs, offsets)
        return self._r.add(docs, offsets, _per_token(salience, docs, offsets, "salience"))

    def remove(self, ids) -> None:
        """Removes one id or an array of ids (all or nothing: every id must exist, be live and appear once)."""
        self._r.remove(ids)

    # ---- search ----
    def search(self, query, *, top: int = 10, strategy: str = "top1", normalize: str = "mean",
               candidates: int = 4000, exhaustive: bool = False, nprobe: int = 0, ndocs: int = 0,
               query_salience=None, query_prune: float = 1.0, use_doc_salience: bool = True, allowed_ids=None,
               filter: Optional[Callable[[int], bool]] = None, use_query_salience: bool = True,
               threads: int = 1) -> SearchResult:
        """The top documents of one query [tokens, dim], best first (score descending, ties to the smaller id).

        threads: threads of this search's exact rerank (0: all cores; the results are the same bit for bit);
        candidates: k', backend hits per kept query token; exhaustive: rerank every live document; nprobe > 0:
        centroid-posting candidates of a residual store; ndocs > 0 keeps the best ndocs candidates by an approximate
        score (per kept query token, the best similarity through which it found the document, else its lowest one:
        the probed centroids' with nprobe, the token hits' without) before the exact rerank; query_prune < 1 keeps
        that fraction of query tokens by query_salience for the token search.
        allowed_ids / filter restrict the results (min(top, allowed documents) are returned).
        use_query_salience=False (with use_doc_salience=False): salience only chooses the searched tokens and the
        rerank is unweighted (learned gated heads are keep rules). Returns a SearchResult: `ids, scores = result`,
        plus its diagnostics."""
        args = _search_args(top, strategy, normalize, candidates, exhaustive, nprobe, ndocs, query_prune,
                            use_doc_salience, allowed_ids, filter, use_query_salience, threads)
        return self._r.search(query, query_salience, args)

    def search_batch(self, queries, offsets=None, *, threads: int = 0, top: int = 10, strategy: str = "top1",
                     normalize: str = "mean", candidates: int = 4000, exhaustive: bool = False, nprobe: int = 0,
                     ndocs: int = 0, query_salience=None, query_prune: float = 1.0, use_doc_salience: bool = True,
                     allowed_ids=None, filter: Optional[Callable[[int], bool]] = None,
                     use_query_salience: bool = True) -> list:
        """search() for many queries (a list of arrays, or one array with offsets) on `threads` threads (0: all
        cores), the GIL released; results equal serial searches. query_salience: one value per token of all
        queries (one array, or a list of one array per query). With exhaustive=True the queries go in blocks of up
        to 8 that sweep each document once (the store is read once a block instead of once a query); with the exact
        backends' token search, consecutive queries' kept tokens go to one scan of the token index, up to 64 rows a
        block. The results are the same bit for bit."""
        args = _search_args(top, strategy, normalize, candidates, exhaustive, nprobe, ndocs, query_prune,
                                    use_doc_salience, allowed_ids, filter, use_query_salience)
        queries = _sequences_arg(queries, offsets)
        return self._r.search_batch(queries, offsets, _per_token(query_salience, queries, offsets, "query_salience"),
                                    _threads_arg(threads), args)

    def search_multi(self, query, strategies, *, top: int = 10, normalize: str = "mean", candidates: int = 4000,
                     exhaustive: bool = False, nprobe: int = 0, ndocs: int = 0, query_salience=None,
                     query_prune: float = 1.0, use_doc_salience: bool = True, allowed_ids=None,
                     filter: Optional[Callable[[int], bool]] = None, use_query_salience: bool = True,
                     threads: int = 1) -> list:
        """One query under several strategies at once (a list of strategy strings, a comma-separated string or
        "paper" for paper_grid()): the candidates are gathered and S computed once; result g equals
        search(query, strategy=strategies[g], ...). What few-shot adaptation needs (adapt, fold_protocol). threads:
        as in search()."""
        args = _search_args(top, "top1", normalize, candidates, exhaustive, nprobe, ndocs, query_prune,
                            use_doc_salience, allowed_ids, filter, use_query_salience, threads)
        return self._r.search_multi(query, strategies, query_salience, args)

    def explain(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
                use_doc_salience: bool = True, use_query_salience: bool = True) -> dict:
        """The aligned pairs behind document `id`'s score: a dict of arrays query_token, doc_token, similarity,
        weight (grouped by query token, best first) and numerator, z and score; pass the search's strategy,
        normalisation and salience and `score` equals the search's score of that document."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None,
                                    use_query_salience)
        return self._r.explain(query, id, query_salience, args)

    def view(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
             use_doc_salience: bool = True, use_query_salience: bool = True, query_words=None, doc_words=None,
             title: str = "", html: bool = True) -> str:
        """The picture of document `id`'s alignment with `query`: S as a heatmap (query tokens as rows), the aligned
        cells outlined, the salience as bars, the score and its parts; a self-contained HTML page (html=True, no
        script, no network) or an SVG. query_words / doc_words label the tokens (one str each; None: positions).
        Write it to a file, or show it in a notebook with IPython.display.HTML / SVG."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None,
                                    use_query_salience)
        return self._r.view(query, id, query_salience, args, query_words, doc_words, title, html)

    def alignment(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
                  use_doc_salience: bool = True, use_query_salience: bool = True) -> dict:
        """The data behind view(): explain()'s dict (the aligned pairs, numerator, z, score) plus "similarity_matrix"
        (float32 [query tokens, document tokens]: every S_ij as the scorer's kernel computes it over the stored
        document), "query_salience" / "doc_salience" (the weights of the rerank, or None) and "strategy"; for
        plotting an alignment your own way."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None,
                                    use_query_salience)
        return self._r.alignment(query, id, query_salience, args)

    # ---- files ----
    def save(self, path) -> None:
        """Writes the whole index to one file, atomically (the CLI's `aligner search --index` reads it)."""
        self._r.save(str(path))

    @classmethod
    def load(cls, path, *, mmap: bool = True) -> "Retriever":
        """Opens an index file written by save() or by the CLI (`aligner index`), with the backend it was built
        with; mmap=True maps the token store read-only instead of reading it."""
        return cls(0, _impl=_aligner._Retriever.load(str(path), mmap))

    def __reduce__(self):
        """Pickling (multiprocessing, Dask): the bytes save() writes, through a temporary file; the copy searches
        exactly as this retriever does."""
        import tempfile
        with tempfile.TemporaryDirectory(prefix="aligner-") as folder:
            path = os.path.join(folder, "index.aligner")
            self.save(path)
            with open(path, "rb") as f:
                data = f.read()
        return (_retriever_from_bytes, (data,))


class _DirectoryFacts:
    """Facts of an index directory's commit, shared by its writer and reader."""

    _d: Any

    def _facts(self) -> dict:
        return self._d.facts()

    @property
    def path(self) -> str:
        return self._facts()["path"]

    @property
    def dim(self) -> int:
        return self._facts()["dim"]

    @property
    def generation(self) -> int:
        """The commit's number: every add, remove and compact commits once."""
        return self._facts()["generation"]

    @property
    def size(self) -> int:
        """Document ids ever assigned (removed ones included: ids are never reused)."""
        return self._facts()["size"]

    def __len__(self) -> int:
        """Live documents."""
        return self._facts()["live_size"]

    @property
    def tokens(self) -> int:
        """Tokens held by the segments (removed documents' included until compact())."""
        return self._facts()["tokens"]

    @property
    def segments(self) -> int:
        return self._facts()["segments"]

    @property
    def storage(self) -> str:
        """"f32", "bf16", "f16", "i8" or "residual:N"."""
        return self._facts()["storage"]

    @property
    def centroids(self) -> int:
        """Centroids of the residual codec (0: none yet, or not a residual store)."""
        return self._facts()["centroids"]

    @property
    def codec(self) -> Optional["ResidualCodec"]:
        """The residual codec (given at create, or trained by the first add), else None."""
        c = self._d.codec()
        return None if c is None else ResidualCodec(c)

    @property
    def closed(self) -> bool:
        return self._d.closed

    def close(self) -> None:
        """Releases the directory (a writer's LOCK, a reader's mapped segments); later calls raise ValueError."""
        self._d.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"{type(self).__name__}(closed)"
        f = self._facts()
        return (f"{type(self).__name__}({f['path']!r}, dim={f['dim']}, storage={f['storage']!r}, "
                f"documents={f['live_size']}, segments={f['segments']}, generation={f['generation']})")


class IndexDirectoryWriter(_DirectoryFacts):
    """The one writer of an index directory: a folder of immutable segments in which every add, remove and compact
    is one atomic commit (a crash at any moment leaves the last commit; readers, also in other processes, see a
    commit once they refresh). Made by create() or open(); holds the directory's LOCK until close() (or the end of
    a `with` block), so a second writer is refused with OSError. The C++ index_directory_writer.

        with aligner.IndexDirectoryWriter.create("idx", dim=128) as w:   # residual:2 codes by default
            w.add(docs, names=[...])          # one segment, one commit; the codec is trained on the first add
            w.remove([3, 7])
            w.compact()
    """

    def __init__(self, _impl):
        self._d = _impl

    @classmethod
    def create(cls, path, dim: int, *, storage: str = "residual:2", residual_centroids: int = 0,
               residual_iterations: int = 10, residual_anisotropy: float = 0.0, seed: int = 0, threads: int = 1,
               check_finite: bool = True, codec: Optional["ResidualCodec"] = None) -> "IndexDirectoryWriter":
        """Creates a new index directory at `path` (a new or empty folder) for vectors of `dim` components.

        storage: "residual:N" (a centroid id plus N bits a component, N in 1, 2, 4, 8; the codec is trained on the
        first add's tokens with residual_centroids (0: PLAID's rule), residual_iterations, residual_anisotropy (0:
        0.19 (dim - 1)), seed and threads, unless `codec` gives a trained ResidualCodec; storage "residual" then takes
        its bits), or "f32", "bf16", "f16", "i8". check_finite: refuse NaN/Inf in added documents. OSError when
        `path` already holds an index directory."""
        _check_int("dim", dim, 1)
        residual_centroids, residual_iterations, seed = (
            _count_arg(n, v, 0) for n, v in (("residual_centroids", residual_centroids),
                                             ("residual_iterations", residual_iterations), ("seed", seed)))
        threads = _threads_arg(threads)
        _check_residual_settings(storage, residual_centroids, residual_iterations, residual_anisotropy)
        c = _codec_arg(codec, residual_centroids, residual_iterations, residual_anisotropy)
        return cls(_aligner._DirectoryWriter.create(os.fspath(path), dim, storage, residual_centroids,
                                                     residual_iterations, float(residual_anisotropy), seed, threads,
                                                     check_finite, c))

    @classmethod
    def open(cls, path) -> "IndexDirectoryWriter":
        """Opens an existing index directory for writing (checked as a reader checks it)."""
        return cls(_aligner._DirectoryWriter.open(os.fspath(path)))

    def add(self, docs, offsets=None, *, salience=None, names=None):
        """Adds documents as one new segment and commits; returns their ids (int64, consecutive, never reused).
        `docs`: a list (or any iterable) of [tokens, dim] arrays, a [documents, tokens, dim] array, or one [tokens,
        dim] array (one document; or all documents back to back with `offsets`). salience: one value per token (one
        array, or a list of one array per document) or None (every add of a directory must match the first). names:
        one str per document (no line breaks) or None (again as the first add). All or nothing."""
        docs = _sequences_arg(docs, offsets)
        return self._d.add(docs, offsets, _per_token(salience, docs, offsets, "salience"), names)

    def remove(self, ids) -> None:
        """Removes one id or an array of ids and commits (all or nothing: every id must be live and listed once)."""
        self._d.remove(ids)

    def compact(self) -> None:
        """Merges every segment into one without the removed documents (codes copied, ids kept) and commits."""
        self._d.compact()


class IndexDirectoryReader(_DirectoryFacts):
    """Searches an index directory: the commit it opened (or last refreshed to), while a writer, in this process or
    another, goes on changing the directory. Results equal those of one Retriever holding the same documents with
    the same removals (ids, scores, order). Searches may run from many Python threads at once (the GIL is
    released). The C++ index_directory_reader.

        r = aligner.IndexDirectoryReader("idx")
        ids, scores = r.search(query, top=10)        # centroid postings (nprobe 4, ndocs 1000), exact rerank
        r.refresh()                                  # pick up the writer's newer commits
    """

    def __init__(self, path):
        self._d = _aligner._DirectoryReader(os.fspath(path))
        self._residual = self.storage.startswith("residual")  # fixed when the directory was created

    def refresh(self) -> bool:
        """Moves to the newest commit (mapped segments are reused); True when it changed."""
        return self._d.refresh()

    def name(self, id: int) -> str:
        """The name document `id` was added with ("" when the directory stores none); ValueError for an id that is
        not live."""
        return self._d.name(id)

    def is_live(self, id: int) -> bool:
        """True when `id` names a document that was added and not removed."""
        return self._d.is_live(id)

    def _args(self, top, strategy, normalize, exhaustive, nprobe, ndocs, query_prune, use_doc_salience, allowed_ids,
              filter, use_query_salience, threads=1):
        residual = self._residual
        if exhaustive is None:
            exhaustive = not residual
        if nprobe is None:
            nprobe = 4 if residual and not exhaustive else 0
        if ndocs is None:
            ndocs = 1000 if isinstance(nprobe, int) and nprobe > 0 else 0
        return _search_args(top, strategy, normalize, 4000, exhaustive, nprobe, ndocs, query_prune,
                            use_doc_salience, allowed_ids, filter, use_query_salience, threads)

    def search(self, query, *, top: int = 10, strategy: str = "top1", normalize: str = "mean",
               exhaustive: Optional[bool] = None, nprobe: Optional[int] = None, ndocs: Optional[int] = None,
               query_salience=None, query_prune: float = 1.0, use_doc_salience: bool = True, allowed_ids=None,
               filter: Optional[Callable[[int], bool]] = None, use_query_salience: bool = True,
               threads: int = 1) -> SearchResult:
        """The top documents of one query [tokens, dim], best first (score descending, ties to the smaller id).

        Candidates: a residual directory's centroid postings (nprobe best centroids per kept query token, default
        4; ndocs, default 1000, keeps the best by the centroid-only score; 0: all), or every live document
        (exhaustive; the default, and the only way, for a directory of another storage). Then the exact rerank
        of every candidate (on `threads` threads; 0: all cores). The other keywords as in Retriever.search."""
        args = self._args(top, strategy, normalize, exhaustive, nprobe, ndocs, query_prune, use_doc_salience,
                          allowed_ids, filter, use_query_salience, threads)
        return self._d.search(query, query_salience, args)

    def search_batch(self, queries, offsets=None, *, threads: int = 0, top: int = 10, strategy: str = "top1",
                     normalize: str = "mean", exhaustive: Optional[bool] = None, nprobe: Optional[int] = None,
                     ndocs: Optional[int] = None, query_salience=None, query_prune: float = 1.0,
                     use_doc_salience: bool = True, allowed_ids=None, filter: Optional[Callable[[int], bool]] = None,
                     use_query_salience: bool = True) -> list:
        """search() for many queries (a list of arrays, or one array with offsets) on `threads` threads (0: all
        cores), all on one commit; results equal serial searches. With exhaustive=True the queries go in blocks of
        up to 8 that sweep each document once."""
        args = self._args(top, strategy, normalize, exhaustive, nprobe, ndocs, query_prune, use_doc_salience,
                          allowed_ids, filter, use_query_salience)
        queries = _sequences_arg(queries, offsets)
        return self._d.search_batch(queries, offsets, _per_token(query_salience, queries, offsets, "query_salience"),
                                    _threads_arg(threads), args)

    def search_multi(self, query, strategies, *, top: int = 10, normalize: str = "mean",
                     exhaustive: Optional[bool] = None, nprobe: Optional[int] = None, ndocs: Optional[int] = None,
                     query_salience=None, query_prune: float = 1.0, use_doc_salience: bool = True, allowed_ids=None,
                     filter: Optional[Callable[[int], bool]] = None, use_query_salience: bool = True,
                     threads: int = 1) -> list:
        """As Retriever.search_multi: one query under several strategies, candidates and S computed once."""
        args = self._args(top, "top1", normalize, exhaustive, nprobe, ndocs, query_prune, use_doc_salience,
                          allowed_ids, filter, use_query_salience, threads)
        return self._d.search_multi(query, strategies, query_salience, args)

    def explain(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
                use_doc_salience: bool = True, use_query_salience: bool = True) -> dict:
        """As Retriever.explain: the aligned pairs behind document `id`'s score (equal to its search score)."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None,
                                    use_query_salience)
        return self._d.explain(query, id, query_salience, args)

    def view(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
             use_doc_salience: bool = True, use_query_salience: bool = True, query_words=None, doc_words=None,
             title: str = "", html: bool = True) -> str:
        """As Retriever.view: the picture of document `id`'s alignment, HTML (html=True) or SVG."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None,
                                    use_query_salience)
        return self._d.view(query, id, query_salience, args, query_words, doc_words, title, html)

    def alignment(self, query, id: int, *, strategy: str = "top1", normalize: str = "mean", query_salience=None,
                  use_doc_salience: bool = True, use_query_salience: bool = True) -> dict:
        """As Retriever.alignment: the aligned pairs, the score's parts and the whole similarity matrix of document
        `id` (a live one)."""
        args = _aligner._SearchArgs(1, strategy, normalize, 1, True, 0, 0, 1.0, use_doc_salience, None, None,
                                    use_query_salience)
        return self._d.alignment(query, id, query_salience, args)


def build_directory(path, vectors, offsets, *, names=None, storage: str = "residual:2", residual_centroids: int = 0,
                    residual_iterations: int = 10, residual_anisotropy: float = 0.0, seed: int = 0,
                    segment_tokens: int = 1 << 22, chunk_tokens: int = 1 << 18, training_tokens: int = 0,
                    threads: int = 1, progress: Optional[Callable[[int, int], Any]] = None,
                    codec: Optional["ResidualCodec"] = None, first_token: Optional[int] = None) -> dict:
    """Builds a new index directory at `path` from token vectors that need not fit in memory, and returns a report
    (documents, tokens, segments, centroids, train_seconds, encode_seconds).

    vectors: the path of a .npy file [tokens, dim] of float32 or float16 (memory-mapped and read chunk by chunk;
    the pages read are dropped again, so the resident set never holds the collection), or an array (a float32
    C-contiguous one, np.memmap included, is read in place; any other is converted a chunk at a time). offsets:
    documents + 1 integers from 0 to tokens (document d is rows offsets[d]..offsets[d+1]). names: one str per
    document or None. A residual codec is trained first on training_tokens tokens drawn from the whole collection
    (0: max(64 K, 65536)), unless `codec` gives a trained ResidualCodec; every segment_tokens tokens (whole documents) are committed as a segment, so a build that
    stops leaves a readable directory of the segments so far. threads: encoding threads (0: all cores).
    progress(done_tokens, total_tokens) is called before the first chunk and after each. The codes do not depend on
    the chunking or the threads: the directory searches exactly as one built by IndexDirectoryWriter.add with the
    same codec. first_token (with a .npy path only): build from the file's rows [first_token, first_token +
    offsets[-1]), one contiguous part of a larger collection (a shard of it), with offsets from 0 for that part;
    its pages are dropped as the whole file's are (slicing an np.memmap instead would keep them resident)."""
    if first_token is not None:
        try:
            value = None if isinstance(first_token, bool) else operator.index(first_token)
        except TypeError:
            value = None
        if value is None or value < 0:
            raise ValueError(f"first_token must be an int >= 0 or None, got {first_token!r}")
        first_token = value
    residual_centroids, residual_iterations, seed, segment_tokens, chunk_tokens, training_tokens = (
        _count_arg(n, v, 0) for n, v in (("residual_centroids", residual_centroids),
                                         ("residual_iterations", residual_iterations), ("seed", seed),
                                         ("segment_tokens", segment_tokens), ("chunk_tokens", chunk_tokens),
                                         ("training_tokens", training_tokens)))
    threads = _threads_arg(threads)
    _check_residual_settings(storage, residual_centroids, residual_iterations, residual_anisotropy,
                             training_tokens=training_tokens or None)
    c = _codec_arg(codec, residual_centroids, residual_iterations, residual_anisotropy)
    if codec is not None and training_tokens != 0:
        raise ValueError(f"training_tokens={training_tokens!r} trains a codec, but codec is given (it is already trained)")
    return _aligner._build_directory(os.fspath(path), vectors, offsets, names, storage, residual_centroids,
                                     residual_iterations, float(residual_anisotropy), seed, segment_tokens,
                                     chunk_tokens, training_tokens, threads, progress, c, first_token)


def train_salience(queries, docs, examples, *, query_offsets=None, doc_offsets=None, strategy: str = "top1",
                   normalize: str = "mean", alpha_query: float = 0.5, alpha_doc: float = 0.4, epsilon: float = 0.002,
                   epsilon_start: float = 0.0, temperature: float = 20.0, in_batch_negatives: bool = True,
                   batch_size: int = 32, epochs: int = 20, learning_rate: float = 0.01,
                   final_learning_rate: float = 0.1, holdout: float = 0.1, patience: int = 3, seed: int = 0,
                   hard_negatives: int = 16, start=None, threads: int = 1,
                   on_epoch: Optional[Callable[[dict], Any]] = None, out=None, objective: str = "score",
                   token_temperature: float = 50.0, ensemble: int = 1, collection_negatives: int = 0) -> dict:
    """Learns the query and document salience heads u = lambda * ReLU(w . x + b) on frozen token vectors, from
    labelled pairs (the C++ salience_trainer; `aligner train-salience` does the same for a collection folder).

    queries, docs: lists of [tokens, dim] arrays, or one array each with query_offsets / doc_offsets. examples: a
    sequence of (query index, relevant document indices) or (query index, relevant, negatives). hard_negatives > 0
    replaces every example's negatives by its best-scoring non-relevant documents (an exhaustive search under the
    strategy, without salience); 0 keeps the given ones. The loss is the softmax cross-entropy of tau * sim over
    the relevant document, the negatives and (in_batch_negatives) the batch's other documents, with the
    entropy-regularised gate at the budgets alpha_query, alpha_doc (1: no gate, the heads are weights) and
    temperature epsilon (annealed from epsilon_start when it is larger). objective="tokens" (for heads used to prune)
    trains the gates on the token search instead: each kept query token's softmax (token_temperature) over the kept
    document tokens of the candidates should find the relevant document; it needs alpha_query or alpha_doc < 1. Adam
    with a cosine decay to
    final_learning_rate, early stopping on a seeded holdout (patience epochs); deterministic for a seed at any
    thread count. start: None (w = 0, b = 1), a heads file's path, or a dict as returned here.

    Returns a dict: "query" and "doc" heads (each the keyword arguments of aligner.salience: weights, bias,
    gate_alpha, gate_epsilon), "dim", "best_epoch", "stopped_early", "train_queries", "holdout_queries" and
    "epochs" (one dict per epoch, the start first: train_loss, holdout_loss, holdout_accuracy, learning_rate,
    epsilon, seconds). on_epoch(dict) is called after each epoch. out: also write the heads file there (atomically;
    the CLI's --salience FILE and load_salience_heads read it); nothing is written when anything is refused.
    ensemble=N > 1 trains N heads with seeds seed, seed + 1, ... (each its own holdout) and returns their mean (w and
    b averaged); "members" then holds each member's dict, and "epochs" / "best_epoch" are empty / 0.
    collection_negatives=N > 0: every step N documents drawn at random from all of `docs` (seeded) join every
    query's candidates, each weighted len(docs) / N so that the sample stands for the collection in the softmax (a
    token search competes with every document, not only the hard negatives); the holdout uses one fixed draw."""
    batch_size, epochs, patience, seed, hard_negatives, ensemble, collection_negatives = (
        _count_arg(n, v, 0) for n, v in (("batch_size", batch_size), ("epochs", epochs), ("patience", patience),
                                         ("seed", seed), ("hard_negatives", hard_negatives), ("ensemble", ensemble),
                                         ("collection_negatives", collection_negatives)))
    threads = _threads_arg(threads)
    return _aligner._train_salience(queries, docs, examples, query_offsets, doc_offsets, strategy, normalize,
                                    float(alpha_query), float(alpha_doc), float(epsilon), float(epsilon_start),
                                    float(temperature), in_batch_negatives, batch_size, epochs, float(learning_rate),
                                    float(final_learning_rate), float(holdout), patience, seed, hard_negatives, start,
                                    threads, on_epoch, out, objective, float(token_temperature), ensemble,
                                    collection_negatives)


def fit_salience(vectors, targets, *, ridge: float = 1e-3, gate_alpha: Optional[float] = None,
                 gate_epsilon: float = 0.002):
    """Fits one salience head w . x + b to `targets` (one per row of `vectors` [tokens, dim]) by ridge least
    squares (`ridge` on w); returns (head, r_squared), the head as salience()'s keyword arguments (with the gate
    of gate_alpha / gate_epsilon, or none)."""
    return _aligner._fit_salience(vectors, targets, float(ridge), gate_alpha, float(gate_epsilon))


def fit_idf_salience(docs, token_ids, offsets=None, *, vocab_size: int = 0, sample: int = 200000, seed: int = 0,
                     ridge: float = 1e-3, gate_alpha: Optional[float] = None, gate_epsilon: float = 0.002):
    """The head fitted to the IDF of the documents' token ids (token_idf; vocab_size 0: the largest id + 1) on a
    seeded sample of at most `sample` document tokens: (head, r_squared). `docs` as Retriever.add takes them,
    `token_ids` one vocabulary id per token. The `--init idf-fit` start of train_salience (pass
    start={"query": head, "doc": head}) and the CLI's --salience idf when used as weights."""
    vocab_size, sample, seed = (_count_arg(n, v, 0) for n, v in (("vocab_size", vocab_size), ("sample", sample),
                                                                  ("seed", seed)))
    return _aligner._fit_idf_salience(docs, token_ids, offsets, vocab_size, sample, seed, float(ridge), gate_alpha,
                                      float(gate_epsilon))


def adapt(values, queries=None, *, grid=None, choices: Optional[int] = None) -> dict:
    """Few-shot alignment adaptation (SPEC section 7): `values` [queries, strategies] holds a metric (e.g. nDCG@10)
    of each labelled query under each strategy of `grid` (default paper_grid(); a list of strategy strings, a
    comma-separated string or "paper"). Picks the strategy with the best mean over `queries` (row indices; None:
    all) among the first `choices` columns (ties go to the earlier one). Returns {"means", "best", "strategy"}."""
    return _aligner._adapt(values, queries, grid, choices)


def fold_protocol(values, *, grid=None, shots: int = 8, seed: int = 0, baseline: Optional[int] = None,
                  choices: Optional[int] = None) -> dict:
    """The paper's protocol on a table as adapt() takes it: the rows shuffled (seeded), folds of `shots` rows,
    adapt on each fold and evaluate the choice on every other row. Returns "mean" and "std" over folds (population
    standard deviation), the same for the `baseline` column ("baseline_mean", "baseline_std"; default the grid's
    top1, else column 0) and "folds" (each: shots, means, best, strategy, held_out, baseline_held_out). The CLI's
    `aligner adapt` is this over the judged queries in query-id order."""
    shots, seed = _count_arg("shots", shots, 0), _count_arg("seed", seed, 0)
    return _aligner._fold_protocol(values, grid, shots, seed, baseline, choices)


_U32 = 2**32 - 1  # the C++ side's thread counts (unsigned)
_U64 = 2**64 - 1  # its counts, sizes and seeds (std::size_t, std::uint64_t)


def _check_int(name: str, value: Any, low: int, high: int = _U64) -> None:
    """_count_arg for a Python int only (NumPy integers refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    _count_arg(name, value, low, high)


def _count_arg(name: str, value: Any, low: int, high: int = _U64) -> int:
    """An integer argument (a Python or NumPy integer, not a bool) in [low, high], refused by name otherwise (the
    binding's own message for a value its C++ type cannot hold names no argument)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def _threads_arg(threads: Any) -> int:
    return _count_arg("threads", threads, 0, _U32)


def _search_args(top, strategy, normalize, candidates, exhaustive, nprobe, ndocs, query_prune, use_doc_salience,
                 allowed_ids, filter, use_query_salience, threads=1):
    """The search arguments for the C++ side, their integers checked here so that a wrong one is refused by name
    (the binding's own message only lists the types it takes)."""
    top, candidates, nprobe, ndocs = (_count_arg(n, v, low) for n, v, low in (("top", top, 1), ("candidates", candidates, 0),
                                                                              ("nprobe", nprobe, 0), ("ndocs", ndocs, 0)))
    threads = _threads_arg(threads)
    return _aligner._SearchArgs(top, strategy, normalize, candidates, exhaustive, nprobe, ndocs, query_prune,
                                use_doc_salience, allowed_ids, filter, use_query_salience, threads)


# ---- evaluation (trec_eval's measures; run and qrels as pytrec_eval takes them) ----

def _measure(name: str, k: int, run: dict, qrels: dict, all_judged: bool):
    return _aligner._metric(name, _count_arg("k", k, 0), run, qrels, all_judged)


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
    """A .npy file of floats (float16, float32 or float64; C or Fortran order) as a C-order float32 array (the
    library's reader; a finite float64 beyond float32's range is an OSError naming it)."""
    return _aligner.load_npy(str(path))
