"""Sharded search on Dask (`distributed`): one aligner.Retriever per shard, each kept on its own worker, queries
fanned out to every shard and the shards' top N merged exactly.

The ALIGNER score of a document depends only on the query and that document, so a document-partitioned index
merges exactly: each shard returns its top N (local ids mapped back to global ones), and the global top N is the
merge by score, ties toward the smaller global id, as in one retriever. Shards keep their documents in global id
order, so their own tie order agrees with the global one.

Exactly equal to one retriever (ids, scores, order): exhaustive search, and centroid postings without an ndocs
cut, for the f32, bf16, f16 and i8 stores. A token search with k' candidates per query token finds a superset of
one retriever's candidates (every shard contributes its own k' nearest tokens), so its results can only be as good
or better. A residual store ("residual" / "residual:N") is coded with one codec for all shards: the codec given as
`codec=`, or else one trained before the shards are built (on this process's arrays for from_arrays, by a task on
the first worker for from_collection) with the residual_* settings, exactly the codec one Retriever would train on
its first add of the same documents; so residual shards too merge exactly as one retriever (shared_codec=False
trains one per shard instead).

    from distributed import Client, LocalCluster
    import aligner, aligner.dask
    client = Client(LocalCluster(n_workers=4, threads_per_worker=1))
    index = aligner.dask.ShardedRetriever.from_collection(client, "data/cranfield", storage="bf16")
    ids, scores = index.search(query, top=10, exhaustive=True)

Collections too large for one machine's memory are sharded as index directories instead: build_directories runs
the streamed build of one contiguous range of documents on each worker (a .npy file every worker can read, one
codec for all shards), and from_directories serves directories built before (each worker opens its own, mapped,
searching its centroid postings); global ids follow the order of the directories. Writers keep working on the
directories (aligner.IndexDirectoryWriter, one per directory); refresh() moves every shard to its directory's
newest commit at once, all shards or none.

    index = aligner.dask.ShardedRetriever.build_directories(client, "/shared/idx", "/shared/docs.npy", offsets)
    ids, scores = index.search(query, top=10)            # nprobe 4, ndocs 1000 per shard; exhaustive=True exact

Failures are never silent: a shard whose task fails, or whose worker leaves the cluster (it died, or was
retired), raises ShardError naming the shard and the worker; the index must then be rebuilt.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

import aligner

try:
    import distributed
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("aligner.dask needs the `distributed` package: pip install 'aligner[dask]'") from e

_TIMEOUTS = (TimeoutError, getattr(distributed, "TimeoutError", TimeoutError))

__all__ = ["ShardedRetriever", "ShardError", "Hits", "partition_ids"]


class ShardError(RuntimeError):
    """A shard failed or its worker is gone; `shard` and `worker` name it."""

    def __init__(self, message: str, shard: int, worker: str):
        super().__init__(message)
        self.shard = shard
        self.worker = worker


class Hits(NamedTuple):
    """The merged top documents of one query: global ids (int64) and scores (float32), best first."""
    ids: np.ndarray
    scores: np.ndarray


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of each id: a stable hash, the same on every machine and Python process."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def partition_ids(n_docs: int, shards: int, partition: str = "range", offsets=None) -> list[np.ndarray]:
    """The global document ids of each shard, ascending: `range` cuts 0..n_docs-1 into contiguous ranges of
    (almost) equal size, `tokens` into contiguous ranges of about equal token counts (offsets: the documents'
    n_docs + 1 token offsets; each cut is the document boundary nearest to an equal share, ties to the earlier one,
    and every shard gets a document while documents remain), `hash` puts id d into shard splitmix64(d) mod shards."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    ids = np.arange(n_docs, dtype=np.int64)
    if partition == "range":
        return [part.copy() for part in np.array_split(ids, shards)]
    if partition == "hash":
        owner = (_mix(ids) % np.uint64(shards)).astype(np.int64)
        return [ids[owner == s] for s in range(shards)]
    if partition == "tokens":
        if offsets is None:
            raise ValueError("partition='tokens' needs the documents' offsets")
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.shape != (n_docs + 1,) or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError(f"offsets must hold n_docs + 1 = {n_docs + 1} values from 0, never decreasing")
        tokens = int(offsets[-1]) if n_docs else 0
        cuts = [0]
        for k in range(1, shards):
            target = tokens * k / shards
            i = int(np.searchsorted(offsets, target))  # offsets[i - 1] < target <= offsets[i]
            if 0 < i <= n_docs and target - offsets[i - 1] <= offsets[i] - target:
                i -= 1
            low = min(cuts[-1] + 1, n_docs)            # a document for the shard before, while any remain
            high = max(low, n_docs - (shards - k))     # and one for each shard after
            i = min(max(i, low), high)
            cuts.append(max(low, int(np.searchsorted(offsets, offsets[i]))))  # the first such boundary at that count
        cuts.append(n_docs)
        return [ids[a:b].copy() for a, b in zip(cuts, cuts[1:])]
    raise ValueError(f"partition must be 'range', 'tokens' or 'hash', got {partition!r}")


# ---- what runs on the workers -----------------------------------------------------------------------------------

class _Shard:
    """One shard on its worker: the retriever and the global id of each local document."""

    def __init__(self, retriever: aligner.Retriever, global_ids: np.ndarray):
        self.retriever = retriever
        self.global_ids = global_ids
        self.staged = None  # a directory shard's newer commit, opened by refresh's first phase
        self.lock = threading.Lock()  # a search reads (retriever, global_ids) as one pair; refresh replaces both

    def current(self) -> tuple:
        with self.lock:
            return self.retriever, self.global_ids

    def __reduce__(self):  # a shard never leaves its worker: moving it would copy the whole index
        raise TypeError("an aligner.dask shard cannot be pickled: it lives on its worker (the cluster tried to move or "
                        "spill it; give the workers more memory)")


def _build_from_arrays(vectors: np.ndarray, offsets: np.ndarray, salience, global_ids: np.ndarray, dim: int,
                       kwargs: dict) -> _Shard:
    r = aligner.Retriever(dim, **kwargs)
    r.add(vectors, offsets, salience=salience)
    return _Shard(r, global_ids)


def _slice_docs(vectors: np.ndarray, offsets: np.ndarray, ids: np.ndarray, salience=None):
    """The documents `ids` (ascending) of a back-to-back set, joined in that order."""
    lengths = offsets[ids + 1] - offsets[ids]
    new_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in ids]) if len(ids) else np.zeros(0, np.int64)
    part = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    part_salience = None if salience is None else np.ascontiguousarray(np.asarray(salience)[rows], dtype=np.float32)
    return part, new_offsets, part_salience


def _build_from_collection(path: str, vectors: str, global_ids: np.ndarray, kwargs: dict) -> _Shard:
    col = aligner.load_collection(path, vectors, split="")
    docs = col["docs"]
    part, offsets, _ = _slice_docs(docs["vectors"], docs["offsets"], global_ids)
    r = aligner.Retriever(docs["vectors"].shape[1], **kwargs)
    r.add(part, offsets)
    return _Shard(r, global_ids)


def _codec_settings(kwargs: dict) -> Optional[dict]:
    """aligner.train_codec's keywords for the residual Retriever keywords `kwargs`; None when the store is not
    residual or a codec is given."""
    storage = kwargs.get("storage", "f32")
    if not isinstance(storage, str) or not storage.startswith("residual") or kwargs.get("codec") is not None:
        return None
    nbits = kwargs.get("residual_nbits")
    nbits = 2 if nbits is None else nbits
    if storage.startswith("residual:"):
        try:
            nbits = int(storage[len("residual:"):])
        except ValueError:
            return None  # the shards' Retriever names the bad storage
    if nbits not in (1, 2, 4, 8):
        return None  # the same
    return {"nbits": nbits, "centroids": kwargs.get("residual_centroids", 0),
            "iterations": kwargs.get("residual_iterations", 10), "anisotropy": kwargs.get("residual_anisotropy", 0.0),
            "seed": kwargs.get("seed", 0), "threads": kwargs.get("threads", 1)}


def _shared_codec_kwargs(kwargs: dict, codec: aligner.ResidualCodec) -> dict:
    """The Retriever keywords with the codec given in place of its training settings."""
    out = {k: v for k, v in kwargs.items()
           if k not in ("residual_nbits", "residual_centroids", "residual_iterations", "residual_anisotropy")}
    out["codec"] = codec
    return out


def _train_collection_codec(path: str, vectors: str, settings: dict) -> aligner.ResidualCodec:
    docs = aligner.load_collection(path, vectors, split="")["docs"]
    return aligner.train_codec(docs["vectors"], **settings)


def _search_shard(shard: _Shard, queries, offsets, query_salience, params: dict, filter_fn, allowed_global):
    params = dict(params)
    retriever, gids = shard.current()
    if allowed_global is not None:  # global ids -> this shard's local ids (absent ones dropped)
        local = np.flatnonzero(np.isin(gids, allowed_global))
        if len(local) == 0:
            n_queries = len(offsets) - 1
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * n_queries
        params["allowed_ids"] = local.astype(np.int64)
    if filter_fn is not None:
        params["filter"] = lambda local_id: bool(filter_fn(int(gids[local_id])))
    try:  # as many search threads as the worker has task threads
        threads = distributed.get_worker().state.nthreads
    except (ValueError, AttributeError):
        threads = 0
    results = retriever.search_batch(queries, offsets, query_salience=query_salience, threads=threads, **params)
    return [(gids[r.ids], r.scores) for r in results]


def _shard_facts(shard: _Shard) -> dict:
    r, gids = shard.current()
    if isinstance(r, aligner.IndexDirectoryReader):
        return {"documents": len(r), "tokens": r.tokens, "storage": r.storage, "path": r.path, "segments": r.segments,
                "generation": r.generation, "first_id": int(gids[0]) if len(gids) else None}
    return {"documents": len(r), "tokens": r.tokens, "store_bytes": r.store_bytes, "storage": r.storage,
            "backend": r.backend}


# ---- index directories as shards ----------------------------------------------------------------------------------

def _open_directory_shard(path: str) -> _Shard:
    """A shard over the index directory at `path` (its global ids are set once every shard's size is known)."""
    return _Shard(aligner.IndexDirectoryReader(path), np.zeros(0, np.int64))


def _directory_shard_size(shard: _Shard) -> tuple:
    return shard.retriever.size, shard.retriever.dim


def _number_directory_shard(shard: _Shard, first: int) -> None:
    """Global id = first + the directory's own id (run on the shard's worker, on the object it holds)."""
    with shard.lock:
        shard.global_ids = np.arange(first, first + shard.retriever.size, dtype=np.int64)


def _stage_directory_refresh(shard: _Shard) -> tuple:
    """refresh, first phase (on the shard's worker): opens the directory's newest commit beside the one searched,
    which stays in service; returns that commit's (size, dim) and whether it is newer than the one searched."""
    if shard.staged is not None:
        shard.staged.close()
    shard.staged = aligner.IndexDirectoryReader(shard.retriever.path)
    return shard.staged.size, shard.staged.dim, shard.staged.generation != shard.current()[0].generation


def _finish_directory_refresh(shard: _Shard, first: Optional[int]) -> None:
    """refresh, second phase: serves the staged commit with global ids from `first`, or (first None) drops it.
    Searches running on the old commit finish on it (the reader is released when the last of them ends)."""
    staged, shard.staged = shard.staged, None
    if staged is None:
        return
    if first is None:
        staged.close()
        return
    retriever, gids = shard.current()
    if staged.generation == retriever.generation and len(gids) == staged.size and (not len(gids) or gids[0] == first):
        staged.close()  # the commit and the numbering it is served with already
        return
    with shard.lock:
        shard.retriever = staged
        shard.global_ids = np.arange(first, first + staged.size, dtype=np.int64)


def _first_ids(sizes) -> list[int]:
    """The numbering of from_directories: shard s's first global id is the count of document ids of the shards
    before it."""
    return [int(x) for x in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)[:-1]])] if len(sizes) else []


def _npy_rows(path: str):
    """The .npy file at `path` mapped read-only, [tokens, dim]."""
    a = np.load(path, mmap_mode="r")
    if a.ndim != 2:
        raise ValueError(f"{path}: expected a 2-d array [tokens, dim], got shape {a.shape}")
    return a


def _npy_sample(path: str, picks: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """Rows `picks` (ascending) of the .npy at `path` as float32, read with ordinary reads about 64 MB at a time, not
    through the mapping: a uniform sample touches nearly every page of the file, and pages read through a mapping
    would stay in the worker's resident set (what Dask's memory limits watch). `mapped`: the same file, mapped (used
    for the rare .npy header versions numpy's public readers do not parse)."""
    out = np.empty((len(picks), mapped.shape[1]), np.float32)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            out[:] = mapped[picks]
            return out
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or tuple(shape) != tuple(mapped.shape):
            out[:] = mapped[picks]
            return out
        start, dim = f.tell(), shape[1]
        block = max(1, (64 << 20) // max(1, dim * dtype.itemsize))
        i = 0
        while i < len(picks):
            first = int(picks[i])
            j = int(np.searchsorted(picks, first + block, "left"))
            count = int(picks[j - 1]) + 1 - first
            f.seek(start + first * dim * dtype.itemsize)
            rows = np.fromfile(f, dtype=dtype, count=count * dim)
            if rows.size != count * dim:
                raise ValueError(f"{path}: the file ends before row {first + count} of its {shape[0]} rows")
            out[i:j] = rows.reshape(count, dim)[picks[i:j] - first]
            i = j
    return out


def _train_npy_codec(path: str, tokens: int, settings: dict, training_tokens: int) -> aligner.ResidualCodec:
    """The shared codec of build_directories: trained on a seeded uniform sample of the tokens of `path` (read in
    ascending order, _npy_sample), with PLAID's centroid count for the whole collection by default."""
    rows = _npy_rows(path)
    settings = dict(settings)
    default_k = settings["centroids"] == 0
    if default_k:
        settings["centroids"] = aligner.default_centroids(tokens)
    want = training_tokens or max(64 * settings["centroids"], 65536)
    want = min(want, tokens)
    picks = np.sort(np.random.default_rng(settings["seed"]).choice(tokens, want, replace=False)) if want < tokens \
        else np.arange(tokens)
    sample = _npy_sample(path, picks, rows)
    if default_k:  # as the default of one build: at most the distinct vectors there are to train on
        settings["centroids"] = min(settings["centroids"], len(np.unique(sample, axis=0)))
    return aligner.train_codec(sample, **settings)


def _build_directory_shard(path: str, npy: str, first_token: int, offsets: np.ndarray, names, build: dict) -> _Shard:
    """Builds the index directory of one shard from its range of the .npy's rows (the streamed build, which drops
    the pages it has read: the worker's resident set never holds its part of the collection), then opens it."""
    aligner.build_directory(path, npy, offsets, names=names, first_token=first_token, **build)
    return _open_directory_shard(path)


def _worker_addresses(dask_scheduler=None) -> list:
    return list(dask_scheduler.workers)


def _live_workers(client) -> set:
    """The addresses of the workers the scheduler has now (asked of the scheduler itself: the client's cached
    scheduler_info() is refreshed in the background without the per-worker part)."""
    return set(client.run_on_scheduler(_worker_addresses))


# ---- the client side ----------------------------------------------------------------------------------------------

class ShardedRetriever:
    """A document-partitioned index over the workers of a Dask cluster (build with from_arrays or
    from_collection). `search` and `search_batch` take the keywords of aligner.Retriever.search."""

    def __init__(self, client: "distributed.Client", shards: list, workers: list[str], global_ids: list[np.ndarray],
                 dim: int, poll_seconds: float = 0.2):
        self.client = client
        self._shards = shards
        self.workers = workers
        self.global_ids = global_ids
        self.dim = dim
        self.poll_seconds = poll_seconds
        self._directories = False  # shards are index directories (from_directories, build_directories)

    # ---- building ----
    @staticmethod
    def _pick_workers(client, shards: Optional[int]) -> list[str]:
        workers = sorted(_live_workers(client))
        if not workers:
            raise ValueError("the Dask cluster has no workers")
        shards = len(workers) if shards is None else shards
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        return [workers[s % len(workers)] for s in range(shards)]

    @classmethod
    def from_arrays(cls, client, docs, offsets=None, *, salience=None, shards: Optional[int] = None,
                    partition: str = "tokens", shared_codec: bool = True, **retriever_kwargs) -> "ShardedRetriever":
        """Shards documents held by this process: `docs` is a list of [tokens, dim] arrays, or one array of all
        tokens with `offsets`. Each shard's documents are sent to its worker, which builds its retriever;
        retriever_kwargs are aligner.Retriever's (backend, storage, codec, ...). One shard per worker by default.
        A residual store without a `codec` gets one trained here on all the documents' tokens first
        (shared_codec=False: each shard trains its own). partition: which documents each shard gets
        (partition_ids: "tokens", the default, for contiguous ranges of about equal token counts; "range" or
        "hash")."""
        if isinstance(docs, (list, tuple)):
            if offsets is not None:
                raise ValueError("docs is a list of arrays: pass offsets only with one array of all tokens")
            lengths = [len(d) for d in docs]
            offsets = np.zeros(len(docs) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            vectors = np.concatenate([np.asarray(d, dtype=np.float32) for d in docs]) if docs else np.zeros((0, 0))
        else:
            vectors = np.asarray(docs, dtype=np.float32)
            offsets = np.asarray([0, len(vectors)] if offsets is None else offsets, dtype=np.int64)
        if vectors.ndim != 2:
            raise ValueError(f"docs must be [tokens, dim] arrays, got shape {vectors.shape}")
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(vectors) or \
                np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must start at 0, never decrease and end at the number of tokens")
        workers = cls._pick_workers(client, shards)
        parts = partition_ids(len(offsets) - 1, len(workers), partition, offsets)
        dim = vectors.shape[1]
        settings = _codec_settings(retriever_kwargs) if shared_codec else None
        if settings is not None and len(vectors):
            retriever_kwargs = _shared_codec_kwargs(retriever_kwargs, aligner.train_codec(vectors, **settings))
        futures = []
        for s, (worker, ids) in enumerate(zip(workers, parts)):
            part, part_offsets, part_salience = _slice_docs(vectors, offsets, ids, salience)
            part, part_offsets, part_salience = client.scatter([part, part_offsets, part_salience], workers=[worker],
                                                               hash=False)
            futures.append(client.submit(_build_from_arrays, part, part_offsets, part_salience, ids, dim,
                                         retriever_kwargs, workers=[worker], allow_other_workers=False, pure=False,
                                         key=f"aligner-shard-{s}-{uuid.uuid4().hex}"))
        index = cls(client, futures, workers, parts, dim)
        index._gather(futures, "build", fetch=False)  # raises ShardError for a shard that failed to build
        return index

    @classmethod
    def from_collection(cls, client, path, vectors: str = "glove100", *, shards: Optional[int] = None,
                        partition: str = "tokens", shared_codec: bool = True, **retriever_kwargs) -> "ShardedRetriever":
        """Each worker reads the collection folder at `path` itself (a path every worker can read: on one
        machine, or on shared storage) and builds its shard from its part of the documents. A residual store
        without a `codec` gets one trained first by a task on the first worker, on all the collection's document
        tokens (shared_codec=False: each shard trains its own). partition: as from_arrays'."""
        path = str(path)
        col = aligner.load_collection(path, vectors, split="", documents=False)  # the queries only: the dim
        dim = col["queries"]["vectors"].shape[1]
        doc_offsets = np.load(os.path.join(path, vectors, "doc_offsets.npy"), mmap_mode="r")
        n_docs = len(doc_offsets) - 1
        workers = cls._pick_workers(client, shards)
        parts = partition_ids(n_docs, len(workers), partition, doc_offsets if partition == "tokens" else None)
        settings = _codec_settings(retriever_kwargs) if shared_codec else None
        if settings is not None:
            codec = cls._train_on(client, workers[0], _train_collection_codec, path, vectors, settings)
            retriever_kwargs = _shared_codec_kwargs(retriever_kwargs, codec)
        futures = [client.submit(_build_from_collection, path, vectors, ids, retriever_kwargs, workers=[worker],
                                 allow_other_workers=False, pure=False, key=f"aligner-shard-{s}-{uuid.uuid4().hex}")
                   for s, (worker, ids) in enumerate(zip(workers, parts))]
        index = cls(client, futures, workers, parts, dim)
        index._gather(futures, "build", fetch=False)
        return index

    @classmethod
    def from_directories(cls, client, paths: Sequence, *, workers: Optional[Sequence[str]] = None) -> "ShardedRetriever":
        """Serves index directories (aligner.IndexDirectoryWriter / build_directory / `aligner index --layout
        directory`, one per shard, each at a path its worker can read: one machine, or shared storage) from the
        workers of the cluster: shard s opens paths[s] on its worker (workers: one address per path; default the
        cluster's, in turn). Global ids follow the order of `paths`: shard s's documents are numbered after all
        the documents ever added to the directories before it (id = that count + the directory's own id), so
        directories built from consecutive ranges of one collection keep the collection's ids. Each shard
        searches the commit it opened. Search keywords are IndexDirectoryReader.search's (a residual directory
        uses its centroid postings, nprobe 4 and ndocs 1000 by default, the cut applied per shard; give
        exhaustive=True or ndocs=0 for results that equal one directory holding every document, when the
        directories share one codec)."""
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("paths must name at least one index directory")
        if workers is None:
            live = sorted(_live_workers(client))
            if not live:
                raise ValueError("the Dask cluster has no workers")
            workers = [live[s % len(live)] for s in range(len(paths))]
        workers = list(workers)
        if len(workers) != len(paths):
            raise ValueError(f"workers must name one worker per path: {len(workers)} workers for {len(paths)} paths")
        futures = [client.submit(_open_directory_shard, path, workers=[worker], allow_other_workers=False, pure=False,
                                 key=f"aligner-dir-shard-{s}-{uuid.uuid4().hex}")
                   for s, (path, worker) in enumerate(zip(paths, workers))]
        index = cls(client, futures, workers, [], 0)
        index._directories = True
        index._gather(futures, "open", fetch=False)
        index._number_directories()
        return index

    @classmethod
    def build_directories(cls, client, folder, vectors, offsets, *, names=None, shards: Optional[int] = None,
                          storage: str = "residual:2", codec: Optional[aligner.ResidualCodec] = None,
                          shared_codec: bool = True, residual_centroids: int = 0, residual_iterations: int = 10,
                          residual_anisotropy: float = 0.0, seed: int = 0, training_tokens: int = 0,
                          segment_tokens: int = 1 << 22, chunk_tokens: int = 1 << 18,
                          threads: int = 1, partition: str = "tokens") -> "ShardedRetriever":
        """The streamed build of a collection too large for one machine's memory, one index directory a shard,
        each built by its worker, then served (from_directories). vectors: the path of a .npy file [tokens, dim]
        (float32 or float16) that every worker can read; offsets: documents + 1 integers; names: one str per
        document or None. Shard s holds a contiguous range of documents (ids as in the collection): of about equal
        token counts (partition="tokens", so that each worker builds, holds and searches a like share) or of equal
        document counts ("range"), built into
        `folder`/shard-NNN with build_directory (segment_tokens, chunk_tokens, threads per worker). A residual
        storage is coded with one codec: `codec`, or one trained first by a task on the first worker on a seeded
        sample of training_tokens tokens (0: max(64 K, 65536)) of the whole collection, K = residual_centroids or
        PLAID's rule for the whole collection (shared_codec=False: each shard trains its own)."""
        folder = os.fspath(folder)
        vectors = os.fspath(vectors)
        head = _npy_rows(vectors)
        tokens, dim = head.shape
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != tokens or np.any(np.diff(offsets) < 0):
            raise ValueError(f"offsets must start at 0, never decrease and end at the number of tokens ({tokens})")
        n_docs = len(offsets) - 1
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != n_docs:
                raise ValueError(f"names must hold one name per document: {len(names)} names for {n_docs} documents")
        if partition not in ("tokens", "range"):
            raise ValueError(f"partition must be 'tokens' or 'range' (a shard's directory holds a contiguous range of "
                             f"documents), got {partition!r}")
        workers = cls._pick_workers(client, shards)
        parts = partition_ids(n_docs, len(workers), partition, offsets)
        build = {"storage": storage, "residual_centroids": residual_centroids, "residual_iterations": residual_iterations,
                 "residual_anisotropy": residual_anisotropy, "seed": seed, "training_tokens": training_tokens,
                 "segment_tokens": segment_tokens, "chunk_tokens": chunk_tokens, "threads": threads, "codec": codec}
        settings = _codec_settings({"storage": storage, "codec": codec, "residual_centroids": residual_centroids,
                                    "residual_iterations": residual_iterations, "residual_anisotropy": residual_anisotropy,
                                    "seed": seed, "threads": threads}) if shared_codec else None
        if settings is not None and tokens:
            codec = cls._train_on(client, workers[0], _train_npy_codec, vectors, tokens, settings, training_tokens)
        if codec is not None:
            build = {k: v for k, v in build.items()
                     if k not in ("residual_centroids", "residual_iterations", "residual_anisotropy", "training_tokens")}
            build["codec"] = codec
            if storage.startswith("residual"):
                build["storage"] = "residual"  # the codec's bits
        os.makedirs(folder, exist_ok=True)
        futures = []
        for s, (worker, ids) in enumerate(zip(workers, parts)):
            first, last = (int(ids[0]), int(ids[-1]) + 1) if len(ids) else (0, 0)
            local = offsets[first:last + 1] - offsets[first] if len(ids) else np.zeros(1, np.int64)
            part_names = None if names is None else names[first:last]
            futures.append(client.submit(_build_directory_shard, os.path.join(folder, f"shard-{s:03d}"), vectors,
                                         int(offsets[first]) if len(ids) else 0, local, part_names, build,
                                         workers=[worker], allow_other_workers=False, pure=False,
                                         key=f"aligner-dir-build-{s}-{uuid.uuid4().hex}"))
        index = cls(client, futures, workers, [], dim)
        index._directories = True
        index._gather(futures, "build", fetch=False)
        index._number_directories()
        return index

    @classmethod
    def _train_on(cls, client, worker: str, train: Callable, *args) -> aligner.ResidualCodec:
        """The shared codec, trained by `train(*args)` as one task on `worker` (waited for as a one-shard index
        waits: ShardError naming the worker if the task fails or the worker leaves)."""
        training = client.submit(train, *args, workers=[worker], allow_other_workers=False, pure=False,
                                 key=f"aligner-codec-{uuid.uuid4().hex}")
        return cls(client, [training], [worker], [], 0)._gather([training], "codec training")[0]

    def _number_directories(self) -> None:
        facts = self._gather([self.client.submit(_directory_shard_size, f, workers=[w], allow_other_workers=False,
                                                 pure=False) for f, w in zip(self._shards, self.workers)], "open")
        dims = {dim for _, dim in facts}
        if len(dims) != 1 or (self.dim and self.dim not in dims):
            self.close()
            raise ValueError(f"the index directories have different dims: {[dim for _, dim in facts]}")
        self.dim = dims.pop()
        sizes = [size for size, _ in facts]
        firsts = _first_ids(sizes)
        self._gather([self.client.submit(_number_directory_shard, f, first, workers=[w], allow_other_workers=False,
                                         pure=False) for f, w, first in zip(self._shards, self.workers, firsts)],
                     "open")
        self.global_ids = [np.arange(a, a + size, dtype=np.int64) for a, size in zip(firsts, sizes)]
        self._firsts = firsts

    def refresh(self, *, renumber: bool = False) -> bool:
        """Moves every shard of index directories (from_directories, build_directories) to its directory's newest
        commit, all shards or none: each worker first opens the newest commit beside the one it searches, and
        only when every shard has opened one and the ids still fit are they put in service together. Returns
        whether any shard moved to a newer commit.

        Removed documents keep everyone's ids, and so does a compaction. New documents take the next ids of their
        directory, so only the last shard can take them without reaching the ids of the shard after it: a shard
        before the last that holds more documents than when it was numbered raises ValueError naming it, and
        every shard keeps its commit. renumber=True numbers the shards again by the rule of from_directories
        (shard s's ids start after every document ever added to the directories before it), which moves the ids
        of every shard after the one that grew. Searches under way finish on the commits they started with."""
        if not self._directories:
            raise TypeError("refresh: only shards that are index directories (from_directories, build_directories) "
                            "have newer commits to move to; an in-memory shard changes only when it is rebuilt")
        stage = [self.client.submit(_stage_directory_refresh, f, workers=[w], allow_other_workers=False, pure=False)
                 for f, w in zip(self._shards, self.workers)]
        try:
            facts = self._gather(stage, "refresh")
        except ShardError:
            self._finish_refresh([None] * len(self._shards), quiet=True)
            raise
        sizes = [size for size, _, _ in facts]
        problem = None
        if {dim for _, dim, _ in facts} != {self.dim}:
            problem = f"refresh: the index directories' dims changed to {[dim for _, dim, _ in facts]} (was {self.dim})"
        elif not renumber:
            for s in range(len(sizes) - 1):
                room = self._firsts[s + 1] - self._firsts[s]
                if sizes[s] > room:
                    problem = (f"refresh: shard {s} ({self.workers[s]}) now holds {sizes[s]} document ids, past the "
                               f"{room} it was numbered with: its new ids would be those of shard {s + 1}. Add new "
                               "documents to the last shard, or call refresh(renumber=True) to number the shards "
                               "again (the ids of the shards after it move)")
                    break
        if problem is not None:
            self._finish_refresh([None] * len(self._shards), quiet=True)
            raise ValueError(problem)
        firsts = _first_ids(sizes) if renumber else list(self._firsts)
        self._finish_refresh(firsts)
        self._firsts = firsts
        self.global_ids = [np.arange(a, a + size, dtype=np.int64) for a, size in zip(firsts, sizes)]
        return any(newer for _, _, newer in facts)

    def _finish_refresh(self, firsts: list, quiet: bool = False) -> None:
        futures = [self.client.submit(_finish_directory_refresh, f, first, workers=[w], allow_other_workers=False,
                                      pure=False) for f, w, first in zip(self._shards, self.workers, firsts)]
        try:
            self._gather(futures, "refresh", fetch=False)
        except ShardError:
            if not quiet:
                raise

    # ---- facts ----
    @property
    def shards(self) -> int:
        return len(self._shards)

    def __len__(self) -> int:
        return sum(f["documents"] for f in self.describe())

    def describe(self) -> list[dict]:
        """Per shard: its worker, documents, tokens, storage and store bytes and backend (retrievers) or path,
        segments and first global id (index directories)."""
        facts = self._gather([self.client.submit(_shard_facts, f, workers=[w], allow_other_workers=False, pure=False)
                              for f, w in zip(self._shards, self.workers)], "describe")
        for fact, worker in zip(facts, self.workers):
            fact["worker"] = worker
        return facts

    # ---- search ----
    def search(self, query, *, top: int = 10, query_salience=None, filter: Optional[Callable[[int], bool]] = None,
               allowed_ids=None, **params) -> Hits:
        """The global top documents of one query; keywords as aligner.Retriever.search."""
        self._check_top(top)
        aligner.Retriever(self.dim).search(query, query_salience=query_salience, **self._probe_params(params))
        q = np.ascontiguousarray(query, dtype=np.float32)
        return self._fan_out(q, np.array([0, len(q)], np.int64), top, query_salience, filter, allowed_ids, params)[0]

    def search_batch(self, queries, offsets=None, *, top: int = 10, query_salience=None,
                     filter: Optional[Callable[[int], bool]] = None, allowed_ids=None, **params) -> list[Hits]:
        """search() for many queries (a list of [tokens, dim] arrays, or one array with offsets): one task per shard
        runs them all on its worker's cores; the shards' top `top` of each query are merged by score, ties toward
        the smaller global id. `filter` (a picklable callable) and `allowed_ids` take global ids."""
        self._check_top(top)
        # Bad arguments fail here, naming themselves, before anything is sent (an empty retriever of the same dim).
        aligner.Retriever(self.dim).search_batch(queries, offsets, query_salience=query_salience,
                                                 **self._probe_params(params))
        if isinstance(queries, (list, tuple)):
            offsets = np.zeros(len(queries) + 1, dtype=np.int64)
            np.cumsum([len(q) for q in queries], out=offsets[1:])
            queries = np.concatenate([np.asarray(q, dtype=np.float32).reshape(-1, self.dim) for q in queries]) \
                if offsets[-1] else np.zeros((0, self.dim), np.float32)
        else:
            queries = np.ascontiguousarray(queries, dtype=np.float32)
            offsets = np.asarray([0, len(queries)] if offsets is None else offsets, dtype=np.int64)
        return self._fan_out(queries, offsets, top, query_salience, filter, allowed_ids, params)

    @staticmethod
    def _check_top(top) -> None:
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"top must be an int >= 1, got {top!r}")

    @staticmethod
    def _probe_params(params: dict) -> dict:
        """The keywords an empty retriever can check (its search is exhaustive: the candidate knobs are not)."""
        unknown = set(params) - {"strategy", "normalize", "candidates", "exhaustive", "nprobe", "ndocs", "query_prune",
                                 "use_doc_salience", "use_query_salience"}
        if unknown:
            raise TypeError(f"unexpected search keyword(s): {', '.join(sorted(unknown))}")
        return {k: v for k, v in params.items()
                if k in ("strategy", "normalize", "query_prune", "use_doc_salience", "use_query_salience")} | \
            {"exhaustive": True}

    def _fan_out(self, queries, offsets, top, query_salience, filter_fn, allowed_ids, params) -> list[Hits]:
        if self._directories and "candidates" in params:
            raise TypeError("candidates: index directories have no token index; search them with nprobe / ndocs "
                            "(residual storage) or exhaustive=True")
        allowed = None if allowed_ids is None else np.unique(np.asarray(allowed_ids, dtype=np.int64))
        params = dict(params, top=int(top))
        # The queries travel inside each shard's task (not scattered: a broadcast to a worker that died blocks).
        futures = [self.client.submit(_search_shard, shard, queries, offsets, query_salience, params, filter_fn, allowed,
                                      workers=[worker], allow_other_workers=False, pure=False)
                   for shard, worker in zip(self._shards, self.workers)]
        per_shard = self._gather(futures, "search")
        out = []
        for qi in range(len(offsets) - 1):
            ids = np.concatenate([res[qi][0] for res in per_shard])
            scores = np.concatenate([res[qi][1] for res in per_shard])
            order = np.lexsort((ids, -scores.astype(np.float64)))[:top]  # score descending, then id ascending
            out.append(Hits(ids[order], scores[order]))
        return out

    # ---- failure handling ----
    def _gather(self, futures: list, what: str, fetch: bool = True) -> list:
        """Waits for one future per shard (and fetches the results when `fetch`); a shard whose worker leaves,
        or whose task fails, raises ShardError naming it."""
        pending = set(range(len(futures)))
        while pending:
            try:
                distributed.wait([futures[s] for s in pending], timeout=self.poll_seconds, return_when="FIRST_COMPLETED")
            except _TIMEOUTS:
                pass
            alive = _live_workers(self.client)
            for s in sorted(pending):
                f = futures[s]
                if f.status == "error":
                    self._cancel(futures)
                    try:
                        f.result()
                    except Exception as e:  # the shard's own exception, named
                        raise ShardError(f"aligner.dask: shard {s} on worker {self.workers[s]} failed during {what}: "
                                         f"{type(e).__name__}: {e}", s, self.workers[s]) from e
                if f.status == "finished":
                    pending.discard(s)
                elif self.workers[s] not in alive or f.status in ("lost", "cancelled"):
                    self._cancel(futures)
                    raise ShardError(f"aligner.dask: shard {s} is lost: its worker {self.workers[s]} left the cluster "
                                     f"during {what} (it died or was retired); rebuild the index", s, self.workers[s])
        return self.client.gather(futures) if fetch else []

    def _cancel(self, futures: list) -> None:
        try:
            self.client.cancel([f for f in futures if f.status == "pending"])
        except Exception:  # pragma: no cover - best effort
            pass

    def close(self) -> None:
        """Releases the shards (their workers drop them)."""
        self._cancel(self._shards)
        self._shards = []

