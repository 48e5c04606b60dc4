"""Deploying a compressor: codes on disk, `smec compress` (Ray Data, resumable), `smec export`."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from smec.codes import codes_table, read_codes
from smec.compressors.adapter import AdapterCompressor, Stage
from smec.compressors.base import load_compressor
from smec.compressors.pca import PCA
from smec.errors import SmecError
from smec.io import write_json
from smec.modules.networks import build_adapter
from smec.quantize import Quantizer
from smec.store import embedding_table, read_embeddings, write_part

REPO = Path(__file__).resolve().parents[1]
MODEL = "all-MiniLM-L6-v2"
INPUTS = [{"name": MODEL, "column": "embedding", "dim": 384, "query_prompt": "",
           "document_prompt": ""}]


@pytest.mark.parametrize("precision, dtype, width", [("float32", np.float32, 24),
                                                     ("float16", np.float16, 24),
                                                     ("int8", np.int8, 24),
                                                     ("binary", np.uint8, 3),
                                                     ("pq6", np.uint8, 6),
                                                     ("opq4", np.uint8, 4),
                                                     ("pq8x4", np.uint8, 4)])
def test_codes_roundtrip_in_their_smallest_type(tmp_path, precision, dtype, width):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 24)).astype(np.float32)
    calibration = rng.normal(size=(300, 24)).astype(np.float32)
    quantizer = Quantizer.uncalibrated(precision, 24) if precision in ("float32", "float16",
                                                                       "binary") \
        else Quantizer.fit(precision, calibration)
    codes = quantizer.encode(vectors)
    assert codes.dtype == dtype and codes.shape == (50, width)
    table = codes_table([f"d{i}" for i in range(50)], codes, {"precision": precision, "dim": 24})
    write_part(tmp_path, 0, table)
    write_json(tmp_path / "manifest.json", {"complete": True, "shards": 1})
    ids, back, meta = read_codes(tmp_path)
    assert ids == [f"d{i}" for i in range(50)] and meta["precision"] == precision
    np.testing.assert_array_equal(back, codes)
    stored = pq.read_schema(tmp_path / "part-00000.parquet").field("codes").type
    assert str(stored) == {"float32": "fixed_size_list<element: float>[24]",
                           "float16": "fixed_size_list<element: halffloat>[24]",
                           "int8": "fixed_size_list<element: int8>[24]",
                           "binary": "fixed_size_binary[3]", "pq6": "fixed_size_binary[6]",
                           "opq4": "fixed_size_binary[4]",
                           "pq8x4": "fixed_size_binary[4]"}[precision]


def test_codes_of_a_killed_run_are_refused(tmp_path):
    write_part(tmp_path, 0, codes_table(["a"], np.zeros((1, 8), np.float32),
                                        {"precision": "float32", "dim": 8}))
    write_json(tmp_path / "manifest.json", {"complete": False, "shards": 2})
    with pytest.raises(SmecError, match="smec compress"):
        read_codes(tmp_path)


def _smec_compressor(input_dim: int, dims: list[int], seed: int = 0) -> AdapterCompressor:
    """A real SMEC-shaped compressor (pca_residual adapter per level) with non-trivial weights."""
    torch.manual_seed(seed)
    comp = AdapterCompressor(input_dim, dims, adapter="pca_residual", adapter_hidden=32)
    for dim in dims:
        net = build_adapter("pca_residual", input_dim, 32, input_dim)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        comp.stages.append(Stage(dim, torch.randperm(input_dim)[:dim], net.state_dict()))
    return comp


@pytest.fixture(scope="module")
def deploy_run(mini_cut_embeddings, tmp_path_factory) -> Path:
    """A run folder: the real store of the mini cut + a SMEC compressor and a PCA beside it."""
    run = tmp_path_factory.mktemp("deploy-run")
    (run / "embeddings").symlink_to(mini_cut_embeddings / "embeddings")
    _, docs, _ = read_embeddings(run / "embeddings" / "corpus")
    _smec_compressor(384, [384, 96, 48]).save(run / "compressor")
    pca = PCA(384, [96, 48]).fit(docs)
    pca.save(run / "compressors" / "pca")
    return run


def _texts(n: int = 20) -> list[str]:
    from smec.data import bundled_dataset_dir
    lines = (bundled_dataset_dir() / "queries.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def _export(run_arg: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smec.cli", "export", str(run_arg), str(out),
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("which, dim, builtin", [("compressor", 48, False),
                                                 ("compressors/pca", 96, True)])
def test_exported_model_returns_the_pipeline_vectors(deploy_run, tmp_path, which, dim, builtin):
    from sentence_transformers import SentenceTransformer

    from smec.encoders import encode, load_model, resolve_model
    out = tmp_path / "encoder"
    result = _export(deploy_run / which, out, "--dims", str(dim))
    assert result.returncode == 0, result.stderr[-2000:]
    types = [m["type"] for m in json.loads((out / "modules.json").read_text())]
    assert all(t.startswith("sentence_transformers.") for t in types) == builtin, types
    texts = _texts()
    if builtin:    # built-in modules only: loads with no custom code allowed
        model = SentenceTransformer(str(out), local_files_only=True)
    else:
        with pytest.raises(ValueError, match="trust_remote_code"):
            SentenceTransformer(str(out), local_files_only=True)
        model = SentenceTransformer(str(out), local_files_only=True, trust_remote_code=True)
    got = model.encode(texts, prompt_name="query", convert_to_numpy=True)
    base = encode(load_model(resolve_model(MODEL)), texts, "")
    want = load_compressor(deploy_run / which).encode(base, dim)
    assert got.shape == (len(texts), dim)
    assert np.abs(got - want).max() < 1e-5
    info = json.loads((out / "smec_export.json").read_text())
    assert info["dim"] == dim and info["models"] == [MODEL] and info["builtin_only"] == builtin


@pytest.mark.slow
def test_export_refuses_a_level_the_compressor_lacks(deploy_run, tmp_path):
    result = _export(deploy_run, tmp_path / "encoder", "--dims", "50")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"smec: error: --dims 50: {deploy_run / 'compressor'} has no level 50; its levels are "
        "[384, 96, 48]"]
    assert not (tmp_path / "encoder").exists()


def _synthetic_store(directory: Path, parts: int, rows: int, dim: int = 384,
                     model: str = MODEL) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    ids, vectors = [], []
    for k in range(parts):
        part_ids = [f"doc-{k}-{i}" for i in range(rows)]
        v = rng.normal(size=(rows, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        write_part(directory, k, embedding_table(part_ids, v, {"model": model, "kind": "corpus",
                                                               "prompt": ""}))
        ids += part_ids
        vectors.append(v)
    write_json(directory / "manifest.json", {"complete": True, "shards": parts})
    return ids, np.concatenate(vectors)


def _compress_cmd(store: Path, compressor: Path, out: Path, dim: int, precision: str,
                  config: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "smec.cli", "compress", "--store", str(store), "--compressor",
           str(compressor), "--dims", str(dim), "--precision", precision, "--out", str(out)]
    return cmd + (["--config", str(config)] if config else [])


@pytest.mark.slow
def test_compress_killed_mid_run_resumes_every_id_once_equal_to_encode(tmp_path):
    from test_etl_resume import kill_after_first_shard
    store = tmp_path / "store"
    ids, vectors = _synthetic_store(store, parts=30, rows=40)
    comp = _smec_compressor(384, [384, 48])
    comp.inputs = INPUTS
    comp.save(tmp_path / "smec")
    config = tmp_path / "c.yaml"
    config.write_text("compress:\n  batch_size: 40\n  calibration_rows: 400\n")
    out = tmp_path / "codes"
    cmd = _compress_cmd(store, tmp_path / "smec", out, 48, "int8", config)
    finished_at_kill = kill_after_first_shard(cmd, out, poll_s=0.05)
    assert 1 <= finished_at_kill < 30, finished_at_kill
    calibration = (out / "quantizer.npz").read_bytes()

    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "shards resumed" in resumed.stdout, resumed.stdout
    assert (out / "quantizer.npz").read_bytes() == calibration     # the same calibration
    got_ids, codes, meta = read_codes(out)
    assert got_ids == ids                                           # each once, in store order
    quantizer = Quantizer.load(out / "quantizer.npz")
    want = comp.encode(vectors, 48)
    np.testing.assert_array_equal(codes, quantizer.encode(want))
    inside = (want >= quantizer.params["lo"]) & (want <= quantizer.params["hi"])
    step = (quantizer.params["hi"] - quantizer.params["lo"]) / 255
    assert (np.abs(quantizer.decode(codes) - want) <= step / 2 + 1e-6)[inside].all()
    assert meta["precision"] == "int8" and meta["dim"] == 48 and meta["models"][0]["name"] == MODEL


@pytest.mark.slow
def test_compress_float16_binary_and_pq_equal_encode(tmp_path):
    store = tmp_path / "store"
    ids, vectors = _synthetic_store(store, parts=2, rows=150)
    pca = PCA(384, [48]).fit(vectors)
    pca.inputs = INPUTS
    pca.save(tmp_path / "pca")
    want = pca.encode(vectors, 48)
    for precision in ("float16", "binary", "binary-itq", "opq6", "pq12x4"):
        out = tmp_path / precision
        result = subprocess.run(_compress_cmd(store, tmp_path / "pca", out, 48, precision),
                                cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        got_ids, codes, _ = read_codes(out)
        assert got_ids == ids
        if precision == "float16":
            assert np.abs(codes.astype(np.float32) - want).max() < 1e-3
        elif precision in ("opq6", "binary-itq", "pq12x4"):   # fitted on the corpus, beside
            quantizer = Quantizer.load(out / "quantizer.npz")
            assert codes.shape == (300, 6) and quantizer.bytes_per_vector() == 6
            assert quantizer.precision == precision
            np.testing.assert_array_equal(codes, quantizer.encode(want))
        else:
            np.testing.assert_array_equal(codes, np.packbits(want > 0, axis=1))
            assert not (out / "quantizer.npz").exists()


@pytest.mark.parametrize("case, message", [
    ("model", "embedded with ['other-model'], but the compressor was trained on "
              "all-MiniLM-L6-v2 embeddings"),
    ("dim", "all-MiniLM-L6-v2 vectors of 64 dims, the compressor expects 384"),
    ("level", "--dims 40: {comp} has no level 40; its levels are [48]"),
    ("pq", "--precision pq5 --dims 48: pq5 cuts a vector into 5 sub-vectors, and 48 dims do "
           "not divide by 5"),
    ("unfinished", "the run that writes it has not finished (0 of 3 shards); run the same "
                   "`smec embed` again"),
])
def test_compress_bad_input_is_one_line_and_writes_nothing(tmp_path, case, message):
    store = tmp_path / "store"
    if case == "model":
        _synthetic_store(store, 1, 10, model="other-model")
    elif case == "dim":
        _synthetic_store(store, 1, 10, dim=64)
    else:
        _synthetic_store(store, 1, 10)
    if case == "unfinished":
        write_json(store / "manifest.json", {"complete": False, "shards": 3})
    pca = PCA(384, [48]).fit(np.random.default_rng(0).normal(size=(60, 384)))
    pca.inputs = INPUTS
    pca.save(tmp_path / "pca")
    out = tmp_path / "codes"
    result = subprocess.run(_compress_cmd(store, tmp_path / "pca", out,
                                          40 if case == "level" else 48,
                                          "pq5" if case == "pq" else "int8"),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(comp=tmp_path / "pca") in lines[0], lines
    assert not out.exists()


@pytest.mark.slow
def test_exported_concat_model_runs_every_base_model(tmp_path):
    from sentence_transformers import SentenceTransformer

    from smec.compressors.concatenation import ConcatCompressor
    from smec.encoders import encode, load_model, resolve_model
    second = "tokenlearn-static-64d"
    # each base model keeps its own prompt: one here has a query prompt, the other none
    inputs = [{**INPUTS[0], "query_prompt": "search query: "},
              {"name": second, "column": f"embedding:{second}", "dim": 64,
               "query_prompt": "", "document_prompt": ""}]
    comp = ConcatCompressor(448, [448, 48], [{"name": MODEL, "dim": 384},
                                             {"name": second, "dim": 64}],
                            _smec_compressor(448, [448, 48], seed=3))
    comp.inputs = inputs
    comp.save(tmp_path / "concat")
    result = _export(tmp_path / "concat", tmp_path / "encoder", "--dims", "48")
    assert result.returncode == 0, result.stderr[-2000:]
    texts = _texts()
    model = SentenceTransformer(str(tmp_path / "encoder"), local_files_only=True,
                                trust_remote_code=True)
    got = model.encode(texts, prompt_name="query", convert_to_numpy=True)
    columns = {MODEL: encode(load_model(resolve_model(MODEL)), texts, "search query: "),
               second: encode(load_model(resolve_model(second)), texts, "")}
    want = comp.encode(comp.concatenate(columns), 48)
    assert got.shape == (len(texts), 48) and np.abs(got - want).max() < 1e-5


@pytest.mark.slow
def test_compress_corpus_embeds_and_compresses_in_one_pass(tmp_path):
    """`smec compress --corpus`: encoder actors then compressor actors; no store written."""
    from smec.data import bundled_dataset_dir
    from smec.encoders import encode, load_model, resolve_model
    lines = (bundled_dataset_dir() / "corpus.jsonl").read_text().splitlines()[:150]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    records = [json.loads(line) for line in lines]
    texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in records]
    vectors = encode(load_model(resolve_model(MODEL)), texts, "")
    pca = PCA(384, [48]).fit(vectors)
    pca.inputs = INPUTS
    pca.save(tmp_path / "pca")
    config = tmp_path / "c.yaml"
    config.write_text("embed:\n  shard_rows: 50\ncompress:\n  calibration_rows: 120\n")
    out = tmp_path / "codes"
    result = subprocess.run([sys.executable, "-m", "smec.cli", "compress", "--corpus",
                             str(corpus), "--compressor", str(tmp_path / "pca"), "--dims", "48",
                             "--precision", "int8", "--out", str(out), "--config", str(config)],
                            cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ids, codes, meta = read_codes(out)
    assert ids == [r["_id"] for r in records] and len(list(out.glob("part-*.parquet"))) == 3
    quantizer = Quantizer.load(out / "quantizer.npz")
    want = pca.encode(vectors, 48)
    # the actors embed in other batches than this process: allow a step for rounding
    assert np.abs(codes.astype(int) - quantizer.encode(want).astype(int)).max() <= 1
    assert meta["precision"] == "int8" and not list(out.glob("*.npy"))


def test_compress_bad_option_names_the_flag(tmp_path):
    result = subprocess.run([sys.executable, "-m", "smec.cli", "compress", "--store",
                             str(tmp_path), "--compressor", str(tmp_path), "--dims", "48",
                             "--num-gpus", "-1", "--out", str(tmp_path / "codes")],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == \
        "smec: error: --num-gpus: Input should be greater than or equal to 0"
