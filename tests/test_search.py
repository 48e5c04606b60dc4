"""faiss indexes over codes, search with rescoring, TREC runs, and the bytes-budget planner."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smec.codes import codes_table
from smec.compressors.pca import PCA
from smec.errors import SmecError
from smec.index import Searcher, build_index
from smec.io import write_json
from smec.plan import choices, pareto_front, recommend
from smec.quantize import Quantizer, quantized_search
from smec.store import write_part

REPO = Path(__file__).resolve().parents[1]
MODEL = "all-MiniLM-L6-v2"
INPUTS = [{"name": MODEL, "column": "embedding", "dim": 384, "query_prompt": "",
           "document_prompt": ""}]


def _codes_folder(tmp: Path, vectors: np.ndarray, precision: str, parts: int = 3) -> Path:
    """A codes folder as `smec compress` writes it, from float vectors of one level."""
    out = tmp / f"codes-{precision}"
    calibrated = precision not in ("float32", "float16", "binary")
    q = Quantizer.fit(precision, vectors) if calibrated else \
        Quantizer.uncalibrated(precision, vectors.shape[1])
    if calibrated:
        q.save(out / "quantizer.npz")
    meta = {"precision": precision, "dim": vectors.shape[1], "compressor": "f" * 16,
            "compressor_path": str(tmp / "gone"), "models": INPUTS}
    for k, chunk in enumerate(np.array_split(np.arange(len(vectors)), parts)):
        write_part(out, k, codes_table([f"d{i}" for i in chunk], q.encode(vectors[chunk]), meta))
    write_json(out / "manifest.json", {"complete": True, "shards": parts})
    return out


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "binary", "binary-itq",
                                       "pq16", "opq8", "pq16x4", "opq8x4"])
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_finds_what_the_pipeline_search_finds(tmp_path, precision, kind):
    if kind == "hnsw" and "pq" in precision:
        pytest.skip("PQ codes are indexed flat (test_pq_index_refuses_hnsw)")
    """The index + rescoring returns what smec's own (numpy) quantised search returns."""
    docs = _vectors(600, 64)
    queries = docs[:40] + 0.05 * _vectors(40, 64, seed=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    codes = _codes_folder(tmp_path, docs, precision)
    manifest = build_index(codes, tmp_path / "index", kind)
    assert manifest["count"] == 600 and manifest["precision"] == precision
    searcher = Searcher(tmp_path / "index")
    hits = searcher.search_vectors(queries, k=10, rescore=4)
    doc_ids, qids = [f"d{i}" for i in range(600)], [f"q{i}" for i in range(40)]
    quantizer = searcher.quantizer
    want = quantized_search(quantizer, queries, qids, quantizer.encode(docs), doc_ids, k=10,
                            rescore_multiplier=4)
    overlap = np.mean([len({d for d, _ in h} & set(want[f"q{i}"])) / 10
                       for i, h in enumerate(hits)])
    # integer Hamming distances tie at the R·k cut, and faiss and numpy break ties differently
    assert overlap >= (0.97 if kind == "flat" and "binary" not in precision else 0.9), overlap
    assert all(h[0][0] == f"d{i}" for i, h in enumerate(hits))   # each query's own doc first


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "binary", "binary-itq",
                                       "pq16", "opq8", "pq16x4", "opq8x4"])
def test_ivf_index_scanning_every_list_finds_what_the_flat_index_finds(tmp_path, precision):
    docs = _vectors(600, 64)
    queries = docs[:40] + 0.05 * _vectors(40, 64, seed=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    codes = _codes_folder(tmp_path, docs, precision)
    build_index(codes, tmp_path / "flat")
    manifest = build_index(codes, tmp_path / "ivf", "ivf", nlist=8)
    assert manifest["kind"] == "ivf" and manifest["nlist"] == 8 and manifest["count"] == 600
    flat = Searcher(tmp_path / "flat").search_vectors(queries, k=10, rescore=1)
    every = Searcher(tmp_path / "ivf", nprobe=8).search_vectors(queries, k=10, rescore=1)
    same = np.mean([len({d for d, _ in a} & {d for d, _ in b}) / 10 for a, b in zip(flat, every)])
    assert same >= (0.93 if "binary" in precision else 0.99), same   # Hamming ties aside
    one = Searcher(tmp_path / "ivf", nprobe=1).search_vectors(queries, k=10, rescore=1)
    fewer = np.mean([len({d for d, _ in a} & {d for d, _ in b}) / 10 for a, b in zip(flat, one)])
    assert fewer < same and all(h[0][0] == f"d{i}" for i, h in enumerate(every))
    with pytest.raises(SmecError, match="--nlist 601: choose between 1 and the 600 codes"):
        build_index(codes, tmp_path / "bad", "ivf", nlist=601)


def test_rescoring_drops_missing_candidates_and_ranks_by_the_float_query(tmp_path):
    """R·k candidates from an IVF list shorter than R·k (faiss pads with -1) are dropped, the
    rest ranked by the float query against their decoded rescoring codes, ties to the lower
    row."""
    docs = _vectors(300, 32)
    docs[7] = docs[5]                                    # a tie the order must break
    queries = docs[:25] + 0.05 * _vectors(25, 32, seed=1)
    build_index(_codes_folder(tmp_path, docs, "int8"), tmp_path / "ivf", "ivf", nlist=30)
    searcher = Searcher(tmp_path / "ivf", nprobe=1)
    hits = searcher.search_vectors(queries, k=10, rescore=4)
    probe = np.ascontiguousarray(queries, dtype=np.float32)
    _, cand = searcher.index.search(probe, 40)
    assert (cand < 0).any()                              # some lists hold fewer than 40
    decoded = searcher.rescorer.decode(np.asarray(searcher.codes))
    for query, row, got in zip(probe, cand, hits):
        rows = sorted(int(r) for r in row if r >= 0)
        want = sorted(rows, key=lambda r: (-float(decoded[r] @ query), r))[:10]
        assert [d for d, _ in got] == [searcher.ids[r] for r in want]
        assert np.allclose([s for _, s in got], [decoded[r] @ query for r in want], atol=1e-5)
    assert [d for d, _ in hits[5]][:2] == ["d5", "d7"]


def test_int8_index_stores_exactly_our_codes(tmp_path):
    import faiss
    docs = _vectors(300, 32)
    codes = _codes_folder(tmp_path, docs, "int8")
    build_index(codes, tmp_path / "index")
    index = faiss.read_index(str(tmp_path / "index" / "index.faiss"))
    stored = faiss.vector_to_array(index.codes).reshape(300, 32)
    ours = np.load(tmp_path / "index" / "codes.npy")
    np.testing.assert_array_equal(stored.astype(np.int16), ours.astype(np.int16) + 128)


@pytest.mark.parametrize("precision", ["pq16", "opq16"])
def test_pq_index_holds_exactly_our_codes_and_their_bytes(tmp_path, precision):
    import faiss
    docs = _vectors(600, 64)
    build_index(_codes_folder(tmp_path, docs, precision), tmp_path / "index")
    index = faiss.read_index(str(tmp_path / "index" / "index.faiss"))
    inner = faiss.downcast_index(index.index) if precision.startswith("opq") else index
    stored = faiss.vector_to_array(inner.codes).reshape(600, -1)
    assert stored.shape[1] == 16 == inner.code_size          # 16 bytes per vector
    np.testing.assert_array_equal(stored, np.load(tmp_path / "index" / "codes.npy"))
    quantizer = Quantizer.load(tmp_path / "index" / "quantizer.npz")
    # faiss's ADC distances are smec's float query · decoded codes
    queries = _vectors(5, 64, seed=3)
    scores, rows = index.search(queries, 5)
    want = queries @ quantizer.decode(stored).T
    np.testing.assert_allclose(scores, np.take_along_axis(want, rows, 1), atol=1e-4)


def test_pq_index_refuses_hnsw(tmp_path):
    codes = _codes_folder(tmp_path, _vectors(300, 16), "pq4", parts=1)
    with pytest.raises(SmecError, match="--kind hnsw: pq4 codes are searched with --kind flat"):
        build_index(codes, tmp_path / "index", "hnsw")
    assert not (tmp_path / "index").exists()


def test_binary_index_is_32x_smaller_than_float32(tmp_path):
    docs = _vectors(2000, 384)
    small = build_index(_codes_folder(tmp_path, docs, "binary"), tmp_path / "b")
    big = build_index(_codes_folder(tmp_path, docs, "float32"), tmp_path / "f")
    assert big["index_bytes"] / small["index_bytes"] > 30


def test_search_refuses_a_missing_or_empty_index(tmp_path):
    with pytest.raises(SmecError, match="no index"):
        Searcher(tmp_path / "nothing")
    codes = _codes_folder(tmp_path, _vectors(10, 8), "float32", parts=1)
    build_index(codes, tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    write_json(tmp_path / "index" / "manifest.json", {**manifest, "count": 0})
    with pytest.raises(SmecError, match="empty"):
        Searcher(tmp_path / "index")


def test_search_refuses_queries_of_another_dimension(tmp_path):
    build_index(_codes_folder(tmp_path, _vectors(50, 16), "float32", 1), tmp_path / "index")
    with pytest.raises(SmecError, match="the index holds 16-d codes"):
        Searcher(tmp_path / "index").search_vectors(_vectors(2, 24))


def _results(path: Path, rows: list[dict]) -> Path:
    write_json(path, {"dataset": "x", "model": MODEL, "split": "test", "rows": rows,
                      "timings_s": {}})
    return path


def _row(method, dims, precision, ndcg, split, seed=0, rescore=0):
    from smec.results import bytes_per_vector
    return {"method": method, "dims": dims, "precision": precision, "ndcg_at_10": ndcg,
            "recall_at_100": 1.0, "seed": seed, "split": split, "rescore": rescore,
            "bytes_per_vector": bytes_per_vector(dims, precision)}


def test_plan_ranks_by_holdout_never_by_test(tmp_path):
    path = _results(tmp_path / "results.json", [
        _row("smec", 48, "float32", 0.60, "holdout"), _row("smec", 48, "float32", 0.50, "test"),
        _row("pca", 48, "float32", 0.55, "holdout"), _row("pca", 48, "float32", 0.70, "test"),
        _row("smec", 384, "binary", 0.58, "holdout", rescore=4),
        _row("smec", 96, "float32", 0.62, "holdout", seed=0),
        _row("smec", 96, "float32", 0.64, "holdout", seed=1),
        _row("raw", 384, "float32", 0.66, "holdout")])
    found = choices([path])
    pick = recommend(found, 192)
    assert (pick.method, pick.dims, pick.precision) == ("smec", 48, "float32")
    assert pick.test_ndcg == 0.50          # shown, not used: pca's 0.70 test did not win
    assert recommend(found, 384).dims == 96 and recommend(found, 384).holdout_ndcg == 0.63
    assert recommend(found, 10) is None
    front = pareto_front(found)
    assert [(c.method, c.bytes_per_vector) for c in front] == [
        ("smec", 48), ("smec", 192), ("smec", 384), ("raw", 1536)]


def test_plan_ranks_product_quantisers_by_their_bytes(tmp_path):
    path = _results(tmp_path / "results.json", [
        _row("raw", 384, "binary", 0.58, "holdout", rescore=4),   # 48 B
        _row("raw", 384, "pq48", 0.60, "holdout"), _row("raw", 384, "opq96", 0.66, "holdout"),
        _row("smec", 192, "pq24", 0.59, "holdout"), _row("smec", 48, "int8", 0.55, "holdout")])
    found = choices([path])
    assert {c.label(): c.bytes_per_vector for c in found}["smec 192 d pq24"] == 24
    assert recommend(found, 48).label() == "raw 384 d pq48"
    assert recommend(found, 24).label() == "smec 192 d pq24"
    assert recommend(found, 96).label() == "raw 384 d opq96"


def test_plan_without_holdout_rows_says_what_to_run(tmp_path):
    path = _results(tmp_path / "results.json", [_row("smec", 48, "float32", 0.6, "test")])
    with pytest.raises(SmecError, match="smec bench compression"):
        choices([path])


def test_evaluate_run_names_the_bad_line(tmp_path):
    run = tmp_path / "run.tsv"
    run.write_text("q1 Q0 d1 1 0.5 smec\nq1 Q0 d2 2 high smec\n")
    result = subprocess.run([sys.executable, "-m", "smec.cli", "evaluate", "--run", str(run)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"smec: error: {run}:2: score 'high' is not a number"


@pytest.mark.slow
def test_search_run_scores_what_the_pipeline_scores(mini_cut, mini_cut_embeddings, tmp_path):
    """compress -> index -> search --queries -> evaluate --run gives the pipeline's nDCG@10."""
    from smec.config import Config
    from smec.data import resolve_beir_dir
    from smec.eval import evaluate_vectors
    from smec.store import read_embeddings
    emb = mini_cut_embeddings / "embeddings"
    doc_ids, docs, _ = read_embeddings(emb / "corpus")
    query_ids, queries, _ = read_embeddings(emb / "queries")
    pca = PCA(384, [48]).fit(docs)
    pca.inputs = INPUTS
    pca.save(tmp_path / "pca")

    def smec(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "smec.cli", *args], cwd=REPO,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout
    smec("compress", "--store", str(emb / "corpus"), "--compressor", str(tmp_path / "pca"),
         "--dims", "48", "--out", str(tmp_path / "codes"))
    smec("export", str(tmp_path / "pca"), str(tmp_path / "encoder"), "--dims", "48")
    smec("index", "--codes", str(tmp_path / "codes"), "--out", str(tmp_path / "index"),
         "--encoder", str(tmp_path / "encoder"))
    smec("search", str(tmp_path / "index"), "--queries", str(mini_cut / "queries.jsonl"),
         "--out", str(tmp_path / "run.tsv"))
    line = smec("evaluate", "--run", str(tmp_path / "run.tsv"), "--data-dir", str(mini_cut))
    data = Config().data
    test_qrels = resolve_beir_dir(mini_cut, data.train_split, data.test_split,
                                  data.split_test_frac).read_test_qrels()
    want = evaluate_vectors(pca.encode(queries, 48), query_ids, pca.encode(docs, 48), doc_ids,
                            test_qrels)["ndcg_at_10"]
    got = float(line.split("nDCG@10 ")[1].split(",")[0])
    assert abs(got - want) < 1e-4, (got, want)
    hit = smec("search", str(tmp_path / "index"), "cancer", "-k", "3", "--corpus",
               str(mini_cut / "corpus.jsonl"))
    assert len(hit.strip().splitlines()) == 3


def test_search_refuses_an_encoder_of_another_compressor(tmp_path):
    build_index(_codes_folder(tmp_path, _vectors(50, 16), "float32", 1), tmp_path / "index")
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    info = {"compressor": "0" * 16, "compressor_path": "/elsewhere", "dim": 16,
            "builtin_only": True}
    (encoder / "smec_export.json").write_text(json.dumps(info))
    with pytest.raises(SmecError, match="exported from another compressor"):
        Searcher(tmp_path / "index", encoder)
    (encoder / "smec_export.json").write_text(json.dumps({**info, "compressor": "f" * 16,
                                                          "dim": 24}))
    with pytest.raises(SmecError, match="24-d vectors, the index holds 16-d codes"):
        Searcher(tmp_path / "index", encoder)
    with pytest.raises(SmecError, match="not a folder `smec export` wrote"):
        Searcher(tmp_path / "index", tmp_path)
