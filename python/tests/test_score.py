"""aligner.score / score_batch / solve_gate / salience / prune against the NumPy references (reference.py) and the
C++ double-precision specification (reference=True), and the refusals of bad input."""
import numpy as np
import pytest

import aligner
import reference as ref

STRATEGIES = ["top1", "topk:2", "topk:5", "topp:0.1", "topp:0.5", "dense"]


def rand(rng, rows, dim):
    return rng.standard_normal((rows, dim)).astype(np.float32)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("normalize", ["mean", "none"])
def test_score_matches_numpy_reference(strategy, normalize):
    rng = np.random.default_rng(1)
    for n, m, dim in [(1, 1, 1), (3, 7, 5), (8, 33, 17), (32, 130, 128), (5, 2, 100)]:
        q, d = rand(rng, n, dim), rand(rng, m, dim)
        uq = rng.uniform(0, 2, n).astype(np.float32)
        ud = rng.uniform(0, 2, m).astype(np.float32)
        for a, b in [(None, None), (uq, None), (None, ud), (uq, ud)]:
            want = ref.score(q, d, strategy, normalize, a, b)
            got = aligner.score(q, d, strategy=strategy, normalize=normalize, query_salience=a, doc_salience=b)
            spec = aligner.score(q, d, strategy=strategy, normalize=normalize, query_salience=a, doc_salience=b,
                                 reference=True)
            assert spec == pytest.approx(want, rel=1e-9, abs=1e-9)
            assert got == pytest.approx(want, rel=2e-5, abs=2e-5 * max(1.0, abs(want)))


def test_score_is_maxsim_for_top1_without_normalisation():
    rng = np.random.default_rng(2)
    q, d = rand(rng, 9, 64), rand(rng, 40, 64)
    maxsim = float((q.astype(np.float64) @ d.T.astype(np.float64)).max(axis=1).sum())
    assert aligner.score(q, d, normalize="none") == pytest.approx(maxsim, rel=1e-5)


def test_ties_break_toward_the_smaller_document_token():
    q = np.ones((1, 2), np.float32)
    d = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5]], np.float32)  # three tokens tie at 1.0
    ud = np.array([1, 2, 4, 8], np.float32)
    # top2 takes tokens 0 and 1 (ties toward smaller j): (1*1 + 1*2) / (1 + 2)
    assert aligner.score(q, d, strategy="topk:2", doc_salience=ud) == pytest.approx(1.0)
    assert aligner.score(q, d, strategy="topk:2", normalize="none", doc_salience=ud) == pytest.approx(3.0)


@pytest.mark.parametrize("strategy", ["top1", "topk:3", "topk:8", "topk:22", "topp:0.2"])
def test_repeated_document_tokens_tie_toward_the_first_copy(strategy):
    # A token repeated across panels and lanes (as a phrase repeated in a passage) ties exactly in every row of S,
    # so with distinct weights per copy the score depends on the tie rule: the kernels' lane-wise selection, the
    # k > 16 path (topk:22) and the reference must all take the copies in document order.
    rng = np.random.default_rng(7)
    dim, m = 300, 179
    q, d = rand(rng, 18, dim), rand(rng, m, dim)
    copies = rng.choice(np.arange(1, m), 60, replace=False)
    d[copies] = d[0]
    ud = rng.uniform(0.1, 2.0, m).astype(np.float32)
    for normalize in ("mean", "none"):
        want = ref.score(q, d, strategy, normalize, None, ud)
        spec = aligner.score(q, d, strategy=strategy, normalize=normalize, doc_salience=ud, reference=True)
        got = aligner.score(q, d, strategy=strategy, normalize=normalize, doc_salience=ud)
        assert spec == pytest.approx(want, rel=1e-9)
        assert got == pytest.approx(want, rel=2e-5)


def test_empty_sides_score_zero():
    assert aligner.score(np.zeros((0, 4), np.float32), np.ones((3, 4), np.float32)) == 0.0
    assert aligner.score(np.ones((2, 4), np.float32), np.zeros((0, 4), np.float32)) == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_score_batch_equals_score(strategy):
    rng = np.random.default_rng(3)
    dim = 24
    q = rand(rng, 6, dim)
    docs = [rand(rng, m, dim) for m in (1, 5, 0, 17, 64)]
    got = aligner.score_batch(q, docs, strategy=strategy)
    assert got.dtype == np.float32 and got.shape == (len(docs),)
    for d, g in zip(docs, got):
        assert g == aligner.score(q, d, strategy=strategy)
    # the same documents back to back with offsets
    offsets = np.cumsum([0] + [len(d) for d in docs])
    got2 = aligner.score_batch(q, np.concatenate(docs), offsets, strategy=strategy)
    np.testing.assert_array_equal(got, got2)
    ud = rng.uniform(0, 1, offsets[-1]).astype(np.float32)
    got3 = aligner.score_batch(q, docs, strategy=strategy, doc_salience=ud)
    for i, d in enumerate(docs):
        want = ref.score(q, d, strategy, "mean", None, ud[offsets[i]:offsets[i + 1]])
        assert got3[i] == pytest.approx(want, rel=2e-5, abs=2e-5)


def test_other_dtypes_and_layouts_are_converted_once():
    rng = np.random.default_rng(4)
    q64 = rng.standard_normal((5, 16))
    d64 = rng.standard_normal((20, 16))
    want = aligner.score(q64.astype(np.float32), d64.astype(np.float32))
    assert aligner.score(q64, d64) == want
    assert aligner.score(np.asfortranarray(q64.astype(np.float32)), d64.astype(np.float32)) == want
    assert aligner.score(q64.tolist(), d64.tolist()) == want
    big = np.zeros((40, 32), np.float32)
    big[::2, :16] = d64
    assert aligner.score(q64.astype(np.float32), big[::2, :16]) == want  # a strided view
    ints = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert aligner.score(ints, ints) == aligner.score(ints.astype(np.float32), ints.astype(np.float32))


def test_float32_c_contiguous_input_is_not_copied():
    a = np.ones((4, 8), np.float32)
    address, copied = aligner._aligner._input_address(a)
    assert address == a.ctypes.data and not copied
    address, copied = aligner._aligner._input_address(a[1:3])  # a contiguous slice: still shared
    assert address == a[1:3].ctypes.data and not copied
    for other in (a.astype(np.float64), np.asfortranarray(np.ones((4, 8), np.float32)), a[:, ::2]):
        address, copied = aligner._aligner._input_address(other)
        assert copied


def test_bad_input_is_refused_by_name():
    q = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match="query"):
        aligner.score(None, q)
    with pytest.raises(TypeError, match="doc.*complex"):
        aligner.score(q, q.astype(np.complex64))
    with pytest.raises(TypeError, match="query.*bool"):
        aligner.score(q.astype(bool), q)
    with pytest.raises(TypeError, match="doc"):
        aligner.score(q, np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"query must be a 2-d array.*\(4,\)"):
        aligner.score(np.ones(4, np.float32), q)
    with pytest.raises(ValueError, match="dim"):
        aligner.score(q, np.ones((2, 5), np.float32))
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite|not finite|NaN"):
        aligner.score(q, bad)
    with pytest.raises(ValueError, match="strategy 'topk:0'|k >= 1"):
        aligner.score(q, q, strategy="topk:0")
    with pytest.raises(ValueError, match="top7x") as info:
        aligner.score(q, q, strategy="top7x")
    assert ".hpp" not in str(info.value)  # a release build's messages name no header (ALIGNER_ERROR_LOCATIONS 0)
    with pytest.raises(ValueError, match="normalization"):
        aligner.score(q, q, normalize="sum")
    with pytest.raises(ValueError, match="query_salience"):
        aligner.score(q, q, query_salience=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="salience"):
        aligner.score(q, q, doc_salience=np.array([1, -1], np.float32))
    with pytest.raises(ValueError, match="offsets"):
        aligner.score_batch(q, q, np.array([0, 3]))
    with pytest.raises(TypeError, match="offsets"):
        aligner.score_batch(q, q, np.array([0.0, 2.0]))


def test_strategy_names():
    assert aligner.strategy_name("topk:1") == "top1"
    assert aligner.strategy_name("topp:1%") == "topp:0.01"
    assert aligner.strategy_name("top4") == "topk:4"


@pytest.mark.parametrize("k", [1.0, 2.5, 7.0])
def test_gate_matches_bisection(k):
    rng = np.random.default_rng(5)
    s = rng.uniform(0, 1, 20).astype(np.float32)
    for eps in (0.002, 0.05, 1.0):
        lam = aligner.solve_gate(s, k, epsilon=eps)
        assert lam.dtype == np.float32
        assert float(lam.sum()) == pytest.approx(k, rel=1e-4)
        np.testing.assert_allclose(lam, ref.gate(s, k, eps), atol=2e-5)
        it = aligner.solve_gate(s, k, epsilon=eps, exact=False)
        np.testing.assert_allclose(it, lam, atol=1e-3)
    assert aligner.gate_budget(0.5, 7) == 4
    with pytest.raises(ValueError, match="epsilon"):
        aligner.solve_gate(s, 2.0, epsilon=0.0)


def test_salience_and_prune():
    rng = np.random.default_rng(6)
    x = rand(rng, 30, 12)
    w = rng.standard_normal(12).astype(np.float32)
    u = aligner.salience(x, w, 0.1)
    want = np.maximum(x.astype(np.float64) @ w + 0.1, 0.0)
    np.testing.assert_allclose(u, want, rtol=1e-5, atol=1e-6)
    gated = aligner.salience(x, w, 0.1, gate_alpha=0.3)
    lam = ref.gate(want.astype(np.float32), np.ceil(0.3 * 30), 0.002)
    np.testing.assert_allclose(gated, lam * want, atol=2e-4)
    keep = aligner.prune(u, 0.25)
    assert keep.dtype == np.uint32 and len(keep) == 8 == aligner.prune_keep_count(30, 0.25)
    order = np.argsort(-u.astype(np.float64), kind="stable")[:8]
    np.testing.assert_array_equal(keep, np.sort(order))
    with pytest.raises(ValueError, match="weights"):
        aligner.salience(x, w[:5], 0.0)
    with pytest.raises(ValueError, match="beta"):
        aligner.prune(u, 0.0)


def test_kernel_switches_turn_the_run_time_kernels_off_and_on():
    # The switches change what kernel_info reports, the scores stay the kernels' (within the rounding of each path).
    q = np.random.default_rng(3).standard_normal((5, 32)).astype(np.float32)
    d = np.random.default_rng(4).standard_normal((40, 32)).astype(np.float32)
    before = aligner.kernel_info()
    avx512_was_on = "set_avx512_enabled(false)" not in before  # (ALIGNER_NO_AVX512 / ALIGNER_NO_AMX may be set)
    avx2_was_on = "set_avx2_enabled(false)" not in before
    amx_was_on = "set_amx_enabled(false)" not in before
    try:
        aligner.set_avx512_enabled(False)
        aligner.set_avx2_enabled(False)
        aligner.set_amx_enabled(False)
        off = aligner.kernel_info()
        assert "avx512_wide=no" in off and "avx2_wide=no" in off
        assert "tdpbf16ps tiles" not in off and "tdpbssd tiles" not in off
        s_off = aligner.score(q, d)
    finally:
        aligner.set_avx512_enabled(avx512_was_on)
        aligner.set_avx2_enabled(avx2_was_on)
        aligner.set_amx_enabled(amx_was_on)
    assert aligner.kernel_info() == before
    assert aligner.score(q, d) == pytest.approx(s_off, rel=1e-5)
    for bad in (0, 1, "no", None):
        with pytest.raises(TypeError):
            aligner.set_amx_enabled(bad)
        with pytest.raises(TypeError):
            aligner.set_avx512_enabled(bad)
        with pytest.raises(TypeError):
            aligner.set_vnni_enabled(bad)
    # The run-time VNNI int8 tiles (4- and 8-wide panels; a native build runs its own): off and on again, the i8
    # store's scores stay within the rounding of the float and the int8 query forms.
    r = aligner.Retriever(32, storage="i8")
    r.add([d])
    try:
        aligner.set_vnni_enabled(False)
        s_float = r.search(q, top=1, exhaustive=True).scores[0]
    finally:
        aligner.set_vnni_enabled(True)
    assert r.search(q, top=1, exhaustive=True).scores[0] == pytest.approx(s_float, rel=1e-3)
    assert aligner.kernel_info() == before
