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
    q = Quantizer.fit("binary", x, threshold="median")
    bits = np.unpackbits(q.encode(x), axis=1, count=x.shape[1])
    np.testing.assert_allclose(bits.mean(0), 0.5, atol=0.01)


def test_guardrails():
    with pytest.raises(ValueError, match="already quantised"):
        Quantizer.fit("int8", np.ones((200, 8), np.int8))
    with pytest.warns(UserWarning, match="< 100"):
        Quantizer.fit("int8", _data(n=20))
    with pytest.raises(ValueError, match="precision"):
        Quantizer.fit("int4", _data())


def test_save_load_identical(tmp_path):
    x = _data()
    for precision in ("int8", "binary"):
        q = Quantizer.fit(precision, x, threshold="median")
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


@pytest.mark.parametrize("precision, rescore", [("int8", 0), ("binary", 0), ("binary", 4)])
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
