import numpy as np
import pytest

from smec.eval import exact_search
from smec.quantize import (
    Quantizer,
    bytes_per_vector,
    compression_factor,
    quantized_search,
)


def _data(n=500, d=64, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_int8_round_trip_error_within_half_a_step():
    x = _data()
    q = Quantizer.fit("int8", x, ranges="minmax")
    codes = q.encode(x)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    assert codes.min() == -128 and codes.max() == 127
    step = (q.params["hi"] - q.params["lo"]) / 255
    assert np.all(np.abs(q.decode(codes) - x) <= step / 2 + 1e-6)


def test_int8_percentile_ranges_clip_outliers():
    x = _data()
    x[0, 0] = 50.0
    q = Quantizer.fit("int8", x)             # 0.1 / 99.9 percentiles
    assert q.params["hi"][0] < 50.0
    assert q.encode(x)[0, 0] == 127
    single = Quantizer.fit("int8", x, ranges="minmax").encode(x[:1])
    assert np.any(single != 0)               # calibrated: one vector does not collapse to 0


def test_binary_packs_bits_and_unpacks_to_signs():
    x = np.array([[0.5, -0.1, 0.2, -0.3, 0.0, 1.0, -1.0, 0.1, 0.3]], np.float32)
    q = Quantizer(precision="binary", dim=9, params={"threshold": np.zeros(9, np.float32)})
    codes = q.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (1, 2)
    assert codes[0, 0] == 0b10100101 and codes[0, 1] == 0b10000000
    np.testing.assert_array_equal(q.decode(codes), np.where(x > 0, 1.0, -1.0))


def test_median_threshold_splits_each_dim_in_half():
    x = _data() + 0.3
    q = Quantizer.fit("binary-median", x)
    bits = np.unpackbits(q.encode(x), axis=1, count=x.shape[1])
    np.testing.assert_allclose(bits.mean(0), 0.5, atol=0.01)


# --- binary codes with a fitted threshold and rotation --------------------------------------

def _offset(n=2000, d=64, seed=0):
    """Unbalanced dims around a common offset, as a trained level's output often is."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d) + 0.7).astype(np.float32)


def test_binary_fits_are_named_and_cost_one_bit_per_dim():
    from smec.results import binary_fit, check_precision
    assert [binary_fit(p) for p in ("binary", "binary-median", "binary-itq", "binary-rotated",
                                    "int8", "binary-pca")] == \
        ["zero", "median", "itq", "rotated", None, None]
    assert bytes_per_vector(384, "binary-itq") == 48 == bytes_per_vector(384, "binary")
    with pytest.raises(ValueError, match="binary-median"):
        check_precision("binary-pca")


@pytest.mark.parametrize("precision", ["binary-median", "binary-rotated", "binary-itq"])
def test_a_fitted_binary_code_is_the_sign_of_the_centred_rotated_vector(precision, tmp_path):
    x = _offset()
    q = Quantizer.fit(precision, x)
    rotation = q.params.get("rotation", np.eye(64, dtype=np.float32))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(64), atol=1e-4)
    projected = (x - q.params["threshold"]) @ rotation.T
    codes = q.encode(x)
    assert codes.shape == (2000, 8)
    np.testing.assert_array_equal(np.unpackbits(codes, axis=1), projected > 0)
    balance = np.unpackbits(codes, axis=1).mean(0)   # centred: no bit is mostly one sign
    assert np.abs(balance - 0.5).max() < (0.01 if precision == "binary-median" else 0.1)
    # decoded: the centre plus each rotated dim's mean magnitude, signed, rotated back
    want = (np.where(projected > 0, 1.0, -1.0) * q.params["scale"]) @ rotation + \
        q.params["threshold"]
    np.testing.assert_allclose(q.decode(codes), want, atol=1e-4)
    q.save(tmp_path / "q.npz")
    back = Quantizer.load(tmp_path / "q.npz")
    np.testing.assert_array_equal(back.encode(x), codes)
    np.testing.assert_array_equal(back.decode(codes), q.decode(codes))


def test_hamming_by_blocks_counts_the_bits_that_differ(monkeypatch):
    import smec.quantize as quantize
    rng = np.random.default_rng(0)
    queries = rng.integers(0, 256, (30, 5), dtype=np.uint8)   # 40 bits: padding of 9 dims too
    docs = rng.integers(0, 256, (1000, 5), dtype=np.uint8)
    popcount = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    want = np.stack([popcount[np.bitwise_xor(docs, q)].sum(1) for q in queries])
    monkeypatch.setattr(quantize, "HAMMING_BLOCK", 300)          # four blocks, the last short
    np.testing.assert_array_equal(quantize._hamming(queries, docs), want)


def test_itq_fits_on_a_sample_of_a_large_corpus(monkeypatch):
    import smec.quantize as quantize
    monkeypatch.setattr(quantize, "ITQ_SAMPLE", 500)
    q = Quantizer.fit("binary-itq", _offset(2000))
    rotation = q.params["rotation"]
    assert rotation.dtype == np.float32
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(64), atol=1e-4)
    np.testing.assert_allclose(q.params["threshold"], _offset(2000).mean(0), atol=1e-5)


def test_itq_lowers_the_quantisation_error_of_its_random_start():
    x = _offset()
    error = {}
    for precision in ("binary-rotated", "binary-itq"):
        q = Quantizer.fit(precision, x)
        z = (x - q.params["threshold"]) @ q.params["rotation"].T
        error[precision] = np.mean((np.sign(z) - z / np.abs(z).mean()) ** 2)
    assert error["binary-itq"] < 0.9 * error["binary-rotated"], error


def test_a_rotation_spreads_unbalanced_dims_over_every_bit():
    # Hamming weighs every bit alike; with a few dims holding most of the variance, a rotation
    # gives each bit a share of it and finds more of the exact top 10, ITQ most of all.
    docs = _offset(2000, 64, 1)
    queries = docs[:50] + 0.3 * np.random.default_rng(2).normal(size=(50, 64)).astype(np.float32)
    ids, qids = [str(i) for i in range(len(docs))], [f"q{i}" for i in range(50)]
    exact = exact_search(queries, qids, docs, ids, k=10)

    def overlap(precision):
        quant = Quantizer.fit(precision, docs)
        run = quantized_search(quant, queries, qids, quant.encode(docs), ids, k=10,
                               ignore_identical_ids=False)
        return np.mean([len(set(run[q]) & set(exact[q])) / 10 for q in qids])
    found = {p: overlap(p) for p in ("binary", "binary-median", "binary-rotated", "binary-itq")}
    assert min(found["binary-rotated"], found["binary-itq"]) > \
        max(found["binary"], found["binary-median"]) + 0.05, found
    assert found["binary-itq"] >= found["binary-rotated"], found


def test_guardrails():
    with pytest.raises(ValueError, match="already quantised"):
        Quantizer.fit("int8", np.ones((200, 8), np.int8))
    with pytest.warns(UserWarning, match="< 100"):
        Quantizer.fit("int8", _data(n=20))
    with pytest.raises(ValueError, match="precision"):
        Quantizer.fit("int4", _data())


def test_save_load_identical(tmp_path):
    x = _data()
    for precision in ("int8", "binary-median"):
        q = Quantizer.fit(precision, x)
        q.save(tmp_path / f"{precision}.npz")
        back = Quantizer.load(tmp_path / f"{precision}.npz")
        assert back.precision == precision and back.dim == q.dim
        np.testing.assert_array_equal(back.encode(x), q.encode(x))


def test_rescoring_orders_candidates_by_float_query_against_dequantised_codes():
    docs, queries = _data(400, 32, 1), _data(20, 32, 2)
    ids = [f"d{i}" for i in range(len(docs))]
    qids = [f"q{i}" for i in range(len(queries))]
    for precision in ("int8", "binary"):
        quant = Quantizer.fit(precision, docs)
        codes = quant.encode(docs)
        run = quantized_search(quant, queries, qids, codes, ids, k=10, rescore_multiplier=4)
        deq = quant.decode(codes)
        for row, qid in enumerate(qids):
            got = run[qid]
            assert len(got) == 10
            for doc_id, score in got.items():   # scores are float q · dequantised doc
                assert score == pytest.approx(float(deq[int(doc_id[1:])] @ queries[row]), abs=1e-5)
            # ... and they are the best 10 of the first pass's 40 candidates
            first = quantized_search(quant, queries[row:row + 1], [qid], codes, ids, k=40)[qid]
            rescored = sorted(first, key=lambda d: -float(deq[int(d[1:])] @ queries[row]))[:10]
            assert set(got) == set(rescored)


def test_rescoring_recovers_most_of_float_search():
    docs, queries = _data(2000, 64, 3), _data(50, 64, 4)
    ids, qids = [str(i) for i in range(len(docs))], [f"q{i}" for i in range(len(queries))]
    exact = exact_search(queries, qids, docs, ids, k=10)
    quant = Quantizer.fit("binary", docs)
    codes = quant.encode(docs)

    def overlap(run):
        return np.mean([len(set(run[q]) & set(exact[q])) / 10 for q in qids])
    plain = overlap(quantized_search(quant, queries, qids, codes, ids, k=10))
    rescored = overlap(quantized_search(quant, queries, qids, codes, ids, k=10,
                                        rescore_multiplier=4))
    assert rescored > plain


@pytest.mark.parametrize("precision, rescore", [("int8", 0), ("binary", 0), ("binary", 4),
                                               ("binary-itq", 4)])
def test_a_doc_with_the_query_id_is_never_returned(precision, rescore):
    # ArguAna-style: every query is also a corpus document with the same id, and is its own
    # nearest neighbour; BEIR drops it (ignore_identical_ids), as exact_search does.
    docs = _data(300, 64, 5)
    ids = [str(i) for i in range(len(docs))]
    qids = ids[:20]
    quant = Quantizer.fit(precision, docs)
    run = quantized_search(quant, docs[:20], qids, quant.encode(docs), ids, k=10,
                           rescore_multiplier=rescore)
    assert all(q not in run[q] and len(run[q]) == 10 for q in qids)
    kept = quantized_search(quant, docs[:20], qids, quant.encode(docs), ids, k=10,
                            rescore_multiplier=rescore, ignore_identical_ids=False)
    assert sum(q in kept[q] for q in qids) == 20


def test_bytes_and_compression_factor_arithmetic():
    assert bytes_per_vector(384, "float32") == 1536
    assert bytes_per_vector(128, "int8") == 128
    assert bytes_per_vector(1024, "binary") == 128
    assert bytes_per_vector(9, "binary") == 2
    assert compression_factor(1536, 128, "int8") == 48.0     # METHOD.md §5.4 examples
    assert compression_factor(1536, 1024, "binary") == 48.0
    assert compression_factor(1536, 512, "binary") == 96.0
    assert compression_factor(384, 384, "binary") == 32.0


def test_compare_scores_every_precision_and_keeps_calibration():
    from smec.compare import compare
    from smec.compressors import PCA
    docs, queries = _data(300, 32, 5), _data(20, 32, 6)
    ids, qids = [f"d{i}" for i in range(300)], [f"q{i}" for i in range(20)]
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(qids)}
    pca = PCA(32, [16, 8]).fit(docs)
    rows = compare(ids, docs, qids, queries, qrels, {"pca": pca},
                   precisions=[("float32", 0), ("int8", 0), ("binary", 0), ("binary", 4)])
    got = {(r.method, r.dims, r.precision, r.extra.get("rescore", 0)) for r in rows}
    assert ("raw", 32, "binary", 4) in got and ("pca", 8, "int8", 0) in got
    assert len(rows) == 4 * 3
    assert set(pca.quantizers) == {(16, "int8"), (16, "binary"), (8, "int8"), (8, "binary")}
    binary = next(r for r in rows if r.method == "pca" and r.dims == 16 and r.precision == "binary"
                  and not r.extra)
    assert binary.bytes_per_vector == 2


def test_every_binary_precision_is_also_rescored():
    from smec.compare import precisions_of
    assert precisions_of(["float32", "binary", "binary-itq", "pq48"], 4) == [
        ("float32", 0), ("binary", 0), ("binary-itq", 0), ("pq48", 0), ("binary", 4),
        ("binary-itq", 4)]
    assert precisions_of(["binary-median"], 0) == [("binary-median", 0)]


# --- product quantisers (faiss PQ / OPQ) ---------------------------------------------------

def test_product_quantizer_bytes_and_names():
    assert bytes_per_vector(384, "pq48") == 48 == bytes_per_vector(192, "opq48")
    assert compression_factor(384, 384, "pq48") == 32.0
    with pytest.raises(ValueError, match="pqM"):
        bytes_per_vector(384, "pq")
    with pytest.raises(ValueError, match="48 dims do not divide by 5"):
        Quantizer.fit("pq5", _data(300, 48))
    with pytest.raises(ValueError, match="give at least 256"):
        Quantizer.fit("pq4", _data(100, 16))
    assert bytes_per_vector(384, "pq96x4") == 48 == bytes_per_vector(384, "opq96x4")
    with pytest.raises(ValueError, match="M even"):      # two 4-bit codes share a byte
        bytes_per_vector(384, "pq3x4")
    with pytest.raises(ValueError, match="give at least 16"):
        Quantizer.fit("pq4x4", _data(10, 16))


def test_4_bit_pq_codes_pack_two_to_a_byte_as_faiss_does():
    import faiss
    x = _data(1000, 32)
    q = Quantizer.fit("pq8x4", x)
    codes = q.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (1000, 4) and q.bytes_per_vector() == 4
    assert q.params["codebooks"].shape == (8, 16, 4)
    pq = faiss.ProductQuantizer(32, 8, 4)
    faiss.copy_array_to_vector(q.params["codebooks"].ravel(), pq.centroids)
    assert (pq.compute_codes(x) == codes).mean() > 0.999
    np.testing.assert_allclose(q.decode(codes), pq.decode(codes), atol=1e-6)
    assert (q.decode(codes) - x).std() < (x - x.mean(0)).std()     # it does quantise


def test_pq_codes_are_each_sub_vectors_nearest_codeword_and_match_faiss():
    import faiss
    x = _data(1000, 32)
    q = Quantizer.fit("pq8", x)
    codes = q.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (1000, 8) and q.bytes_per_vector() == 8
    books = q.params["codebooks"]
    assert books.shape == (8, 256, 4)
    pq = faiss.ProductQuantizer(32, 8, 8)
    faiss.copy_array_to_vector(books.ravel(), pq.centroids)
    theirs = pq.compute_codes(x)
    assert (theirs == codes).mean() > 0.999      # float ties aside, faiss assigns the same
    decoded = q.decode(codes)
    for j in range(8):      # no other codeword is nearer to any sub-vector
        part, rec = x[:, 4 * j:4 * j + 4], decoded[:, 4 * j:4 * j + 4]
        best = ((part[:, None, :] - books[j][None]) ** 2).sum(-1).min(1)
        np.testing.assert_allclose(((part - rec) ** 2).sum(1), best, atol=1e-5)


def test_opq_rotation_is_orthogonal_and_beats_pq_on_unbalanced_dims():
    rng = np.random.default_rng(0)
    scale = np.r_[np.full(8, 3.0), np.full(24, 0.2)].astype(np.float32)   # variance in 8 dims
    x = (rng.normal(size=(3000, 32)) * scale).astype(np.float32)
    pq, opq = Quantizer.fit("pq4", x), Quantizer.fit("opq4", x)
    rotation = opq.params["rotation"]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(32), atol=1e-4)
    error = {name: float(((q.decode(q.encode(x)) - x) ** 2).sum(1).mean())
             for name, q in (("pq", pq), ("opq", opq))}
    assert error["opq"] < 0.8 * error["pq"], error


def test_pq_search_is_the_float_query_against_decoded_codes(tmp_path):
    docs, queries = _data(600, 32, 1), _data(20, 32, 2)
    ids, qids = [f"d{i}" for i in range(600)], [f"q{i}" for i in range(20)]
    q = Quantizer.fit("opq8", docs)
    q.save(tmp_path / "opq.npz")
    back = Quantizer.load(tmp_path / "opq.npz")
    assert back.asymmetric and back.precision == "opq8"
    np.testing.assert_array_equal(back.encode(docs), q.encode(docs))
    run = quantized_search(back, queries, qids, back.encode(docs), ids, k=10)
    want = queries @ q.decode(q.encode(docs)).T
    for row, qid in enumerate(qids):
        top = np.argsort(-want[row], kind="stable")[:10]
        assert set(run[qid]) == {ids[j] for j in top}


def test_holdout_rows_score_raw_product_quantisers_where_they_can_be_fitted():
    from smec.compare import RECIPES, baselines, holdout_rows
    from smec.compressors import PCA
    rng = np.random.default_rng(0)
    for n_docs, expect_pq in ((300, True), (200, False)):   # 256 codewords need 256 documents
        docs = _data(n_docs, 48)
        queries = docs[:30] + 0.1 * rng.normal(size=(30, 48)).astype(np.float32)
        ids, qids = [f"d{i}" for i in range(n_docs)], [f"q{i}" for i in range(30)]
        qrels = {f"q{i}": {f"d{i}": 1} for i in range(30)}
        recipes = baselines(48, [24, 12], docs, RECIPES)
        rows = holdout_rows(ids, docs, qids, queries, qrels, {"t": PCA(48, [24, 10]).fit(docs)},
                            recipes, precisions=[("float32", 0), ("pq12", 0)],
                            raw_products=["pq24", "opq48", "pq5"])
        got = {(r.method, r.dims, r.precision, r.bytes_per_vector) for r in rows}
        product = {g for g in got if "pq" in g[2]}
        want = {("raw", 48, "pq24", 24), ("raw", 48, "opq48", 48), ("t", 24, "pq12", 12)}
        assert product == (want if expect_pq else set()), product   # pq5, 10 d pq12: skipped
        assert ("raw", 48, "binary", 6) in got and all(r.extra["split"] == "holdout"
                                                        for r in rows)
