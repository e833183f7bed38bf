"""aligner.ResidualCodec / train_codec: one trained codec given to several indexes (Retriever, index directory,
streamed build, Dask shards) codes them alike; it is the codec a residual Retriever trains on its first add, its bytes
and pickles round-trip, assign is the brute-force nearest centroid, reconstruct is what the store scores, and bad
input is refused without side effects."""
import os
import pickle

import numpy as np
import pytest

import aligner

DIM = 16


def collection(seed=0, docs=60, dim=DIM):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 25)), dim)).astype(np.float32) for _ in range(docs)]


def joined(docs):
    return np.concatenate(docs), np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)


def queries(seed=5, n=5, dim=DIM):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 9)), dim)).astype(np.float32) for _ in range(n)]


def same_results(a, b):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_train_codec_is_the_codec_a_residual_retriever_trains(nbits):
    docs = collection(1)
    tokens, _ = joined(docs)
    codec = aligner.train_codec(tokens, nbits=nbits, centroids=16, seed=3)
    assert (codec.dim, codec.nbits, codec.centroids, codec.storage) == (DIM, nbits, 16, f"residual:{nbits}")
    assert codec.bytes_per_token == pytest.approx(2 + DIM * nbits / 8)
    assert codec.anisotropy == pytest.approx(0.19047619 * (DIM - 1), rel=1e-6)  # the default eta
    r = aligner.Retriever(DIM, storage=f"residual:{nbits}", residual_centroids=16, seed=3)
    assert r.codec is None  # trained by the first add
    r.add(docs)
    assert r.codec == codec
    assert r.codec.to_bytes() == codec.to_bytes()
    # Deterministic for a seed; another seed gives another codec.
    assert aligner.train_codec(tokens, nbits=nbits, centroids=16, seed=3) == codec
    assert aligner.train_codec(tokens, nbits=nbits, centroids=16, seed=4) != codec
    assert aligner.Retriever(DIM).codec is None  # not a residual store


def test_bytes_and_pickle_round_trip():
    tokens, _ = joined(collection(2))
    codec = aligner.train_codec(tokens, nbits=4, centroids=8, anisotropy=1)
    back = aligner.ResidualCodec.from_bytes(codec.to_bytes())
    assert back == codec and hash(back) == hash(codec) and back.anisotropy == 1.0
    again = pickle.loads(pickle.dumps(codec))
    assert again == codec
    np.testing.assert_array_equal(again.centroid_vectors(), codec.centroid_vectors())
    assert codec.centroid_vectors().shape == (8, DIM)
    assert "centroids=8" in repr(codec)
    with pytest.raises(OSError):
        aligner.ResidualCodec.from_bytes(codec.to_bytes()[:-5])
    with pytest.raises(OSError):
        aligner.ResidualCodec.from_bytes(b"not a codec")
    with pytest.raises(TypeError, match="bytes"):
        aligner.ResidualCodec.from_bytes("text")
    with pytest.raises(TypeError):
        aligner.ResidualCodec(None)


def test_assign_is_the_nearest_centroid_and_reconstruct_what_the_store_scores():
    docs = collection(3, docs=80)
    tokens, offsets = joined(docs)
    # 8-bit codes are decoded to float by the vector tiles, to bf16 where AMX-BF16 (or an AVX512-BF16 build) scores them.
    residual_line = next(line for line in aligner.kernel_info().splitlines() if line.startswith("kernel_residual="))
    eight_bits_in_float = "decoded to float" in residual_line
    for nbits in (2, 8):
        codec = aligner.train_codec(tokens, nbits=nbits, centroids=32, seed=1)
        c = codec.centroid_vectors().astype(np.float64)
        ids = codec.assign(tokens)
        assert ids.dtype == np.uint32 and ids.shape == (len(tokens),)
        d2 = ((tokens.astype(np.float64)[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        best = d2.min(1)
        # the nearest in double, ties toward the smaller id (argmin returns the first)
        np.testing.assert_array_equal(ids, np.argmin(d2, 1))
        assert np.all(d2[np.arange(len(tokens)), ids] == best)
        rec = codec.reconstruct(tokens)
        assert rec.dtype == np.float32 and rec.shape == tokens.shape
        # Per component the decoded residual takes at most 2^nbits values.
        residual = rec.astype(np.float64) - c[ids]
        for k in range(DIM):
            values = np.sort(residual[:, k])
            assert 1 + np.count_nonzero(np.diff(values) > 1e-4) <= 2 ** nbits  # (float rounding of the sum aside)
        err = np.linalg.norm(rec - tokens, axis=1).mean()
        centroid_err = np.linalg.norm(tokens - c[ids], axis=1).mean()
        assert err < (0.6 if nbits == 2 else 0.02) * centroid_err
        # The store scores the reconstructed tokens: the Retriever's scores equal the reference on them (up to the
        # kernel's arithmetic).
        r = aligner.Retriever(DIM, storage="residual", codec=codec)
        r.add(docs)
        for q in queries():
            res = r.search(q, top=len(docs), exhaustive=True, strategy="topk:2")
            for i, s in zip(res.ids[:10], res.scores[:10]):
                d = rec[offsets[i]:offsets[i + 1]]
                want = aligner.score(q, d, strategy="topk:2", reference=True)
                if nbits == 8 and eight_bits_in_float:  # decoded to float
                    assert s == pytest.approx(want, rel=1e-5, abs=1e-5)
                else:  # the int8 / bf16 forms of the query and codes: within a few parts in 1000 of sum |q_k d_k|
                    assert s == pytest.approx(want, abs=8e-3 * float((np.abs(q) @ np.abs(d).T).max()))
    assert codec.assign(np.zeros((0, DIM), np.float32)).shape == (0,)
    assert codec.reconstruct(np.zeros((0, DIM), np.float32)).shape == (0, DIM)


def test_one_codec_for_retrievers_directories_and_streamed_builds(tmp_path):
    docs = collection(4, docs=70)
    tokens, offsets = joined(docs)
    codec = aligner.train_codec(tokens[:500], nbits=2, centroids=16, seed=9)
    first, second = docs[:40], docs[40:]
    # Two retrievers given the codec, each with half the documents, score those documents as one retriever holding
    # all of them with the codec: the same scores, so their merged top 10 is the whole collection's.
    whole = aligner.Retriever(DIM, storage="residual:2", codec=codec)
    whole.add(docs)
    a = aligner.Retriever(DIM, storage="residual", codec=codec)
    b = aligner.Retriever(DIM, storage="residual", codec=codec)
    a.add(first)
    b.add(second)
    assert a.codec == codec and b.codec == codec and whole.codec == codec
    for q in queries():
        w = whole.search(q, top=10, exhaustive=True)
        ra, rb = a.search(q, top=10, exhaustive=True), b.search(q, top=10, exhaustive=True)
        ids = np.concatenate([ra.ids, rb.ids + len(first)])
        scores = np.concatenate([ra.scores, rb.scores])
        order = np.lexsort((ids, -scores.astype(np.float64)))[:10]
        np.testing.assert_array_equal(ids[order], w.ids)
        np.testing.assert_array_equal(scores[order], w.scores)
    # A saved and loaded retriever keeps its codec.
    whole.save(tmp_path / "whole.idx")
    assert aligner.Retriever.load(tmp_path / "whole.idx").codec == codec
    # A directory created with the codec (no training at the first add), and a streamed build with it.
    with aligner.IndexDirectoryWriter.create(tmp_path / "dir", DIM, storage="residual", codec=codec) as w:
        assert w.codec == codec and w.storage == "residual:2" and w.centroids == 16
        w.add(first)
        w.add(second)
    report = aligner.build_directory(tmp_path / "built", tokens, offsets, storage="residual:2", codec=codec,
                                     segment_tokens=300)
    assert report["centroids"] == 16 and report["train_seconds"] == 0
    for path in ("dir", "built"):
        with aligner.IndexDirectoryReader(tmp_path / path) as reader:
            assert reader.codec == codec
            for q in queries():
                same_results(reader.search(q, top=15, exhaustive=True), whole.search(q, top=15, exhaustive=True))
                same_results(reader.search(q, top=15, nprobe=4), whole.search(q, top=15, nprobe=4))
    # Without a codec a directory trains one on its first add; a float directory has none.
    with aligner.IndexDirectoryWriter.create(tmp_path / "own", DIM, storage="residual:2") as w:
        assert w.codec is None
        w.add(docs)
        assert w.codec is not None and w.codec != codec
    with aligner.IndexDirectoryWriter.create(tmp_path / "f32", DIM, storage="f32") as w:
        assert w.codec is None


def test_bad_codec_arguments_are_refused_and_change_nothing(tmp_path):
    tokens, offsets = joined(collection(5))
    codec = aligner.train_codec(tokens, nbits=2, centroids=8)
    with pytest.raises(ValueError, match="needs storage 'residual'"):
        aligner.Retriever(DIM, storage="f32", codec=codec)
    with pytest.raises(ValueError, match="does not match the codec's 2 bits"):
        aligner.Retriever(DIM, storage="residual:4", codec=codec)
    with pytest.raises(ValueError, match="residual_nbits=4 does not match"):
        aligner.Retriever(DIM, storage="residual", residual_nbits=4, codec=codec)
    # A codec's training settings with a storage that has no codec are refused, not ignored.
    with pytest.raises(ValueError, match="residual_centroids=16 sets the residual codec, but storage='i8' has none"):
        aligner.Retriever(DIM, storage="i8", residual_centroids=16)
    with pytest.raises(ValueError, match="residual_nbits=4 sets the residual codec, but storage='f32'"):
        aligner.Retriever(DIM, residual_nbits=4)
    with pytest.raises(ValueError, match="residual_anisotropy=1.0 sets the residual codec, but storage='bf16'"):
        aligner.IndexDirectoryWriter.create(tmp_path / "none", DIM, storage="bf16", residual_anisotropy=1.0)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="training_tokens=5000 sets the residual codec, but storage='f32'"):
        aligner.build_directory(tmp_path / "none", tokens, offsets, storage="f32", training_tokens=5000)
    # "residual:N" and residual_nbits name the same setting: both may be given only when they agree.
    with pytest.raises(ValueError, match="residual_nbits=2 contradicts storage='residual:4'"):
        aligner.Retriever(DIM, storage="residual:4", residual_nbits=2)
    for kw, bits in ((dict(storage="residual:4", residual_nbits=4), 4), (dict(storage="residual", residual_nbits=4), 4),
                     (dict(storage="residual:1"), 1), (dict(storage="residual"), 2)):
        r = aligner.Retriever(DIM, residual_centroids=8, **kw)
        r.add(collection(5)[:6])
        assert r.codec.nbits == bits, kw
    with pytest.raises(ValueError, match="codec has dim 16 but the retriever has dim 8"):
        aligner.Retriever(8, storage="residual", codec=codec)
    with pytest.raises(ValueError, match="residual_centroids=4 trains a codec"):
        aligner.Retriever(DIM, storage="residual", codec=codec, residual_centroids=4)
    with pytest.raises(TypeError, match="ResidualCodec"):
        aligner.Retriever(DIM, storage="residual", codec=codec.to_bytes())
    with pytest.raises(ValueError, match="codec has dim 16 but the directory has dim 8"):
        aligner.IndexDirectoryWriter.create(tmp_path / "d8", 8, storage="residual", codec=codec)
    with pytest.raises(ValueError, match="needs storage 'residual'"):
        aligner.IndexDirectoryWriter.create(tmp_path / "dbf", DIM, storage="bf16", codec=codec)
    with pytest.raises(ValueError, match="training_tokens=100 trains a codec"):
        aligner.build_directory(tmp_path / "b", tokens, offsets, codec=codec, training_tokens=100)
    assert not any(os.scandir(tmp_path)) or all(not (tmp_path / n / "MANIFEST").exists() for n in ("d8", "dbf", "b"))
    # train_codec's own arguments
    with pytest.raises(ValueError, match="nbits must be 1, 2, 4 or 8"):
        aligner.train_codec(tokens, nbits=3)
    with pytest.raises(ValueError, match="at least one token"):
        aligner.train_codec(np.zeros((0, DIM), np.float32))
    with pytest.raises(ValueError, match="more than the"):
        aligner.train_codec(tokens[:5], centroids=6)
    bad = tokens.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        aligner.train_codec(bad)
    with pytest.raises(TypeError, match="nbits must be an int"):
        aligner.train_codec(tokens, nbits=2.0)
    with pytest.raises(ValueError, match="anisotropy"):
        aligner.train_codec(tokens, anisotropy=0.5)
    # assign / reconstruct check their tokens
    with pytest.raises(ValueError, match="16 columns"):
        codec.reconstruct(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="NaN|finite"):
        codec.assign(bad)
    with pytest.raises(TypeError):
        codec.reconstruct("tokens")
