"""`smec concat` end to end on a cut of the bundled mini set with two real models."""
import json

import numpy as np
import pytest

from smec.compressors import load_compressor
from smec.config import load_config

pytestmark = pytest.mark.slow

MODELS = ["all-MiniLM-L6-v2", "tokenlearn-static-64d"]


@pytest.fixture(scope="module")
def concat_run(mini_cut, tmp_path_factory):
    pytest.importorskip("model2vec")
    from smec.pipelines.concat import run_concat

    from smec.data import resolve_beir_dir
    root = tmp_path_factory.mktemp("concat")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(json.dumps({
        "model": {"max_seq_length": 128},
        "embed": {"num_cpus_per_actor": 0.5},
        "train": {"max_epochs_per_stage": 2, "patience": 2},
        "concat": {"models": MODELS, "single_models": [], "d_max": 64, "levels": [32, 16],
                   "schedules": ["mrl", "smec"]}}))
    cfg = load_config(cfg_path)
    from smec.runfolder import RunFolder
    out = root / "run"
    results = run_concat(resolve_beir_dir(mini_cut), RunFolder(out), cfg, echo=lambda *a: None)
    return out, results, cfg


def test_rows_cover_every_level_precision_and_reference(concat_run):
    out, results, _ = concat_run
    rows = results["rows"]
    keys = {(r["method"], r["dims"], r["precision"], r.get("rescore", 0)) for r in rows}
    for model in MODELS:
        assert (f"single:{model}", {"all-MiniLM-L6-v2": 384}.get(model, 64), "float32", 0) in keys
    assert ("single:all-MiniLM-L6-v2", 384, "binary", 4) in keys   # the off-the-shelf floor
    assert ("concat", 448, "float32", 0) in keys
    for method in ("concat_pca", "concat_decoder", "concat_decoder_smec"):
        for dims in (64, 32, 16):
            for precision, rescore in (("float32", 0), ("int8", 0), ("binary", 0),
                                       ("binary", 4)):
                assert (method, dims, precision, rescore) in keys
    for r in rows:
        assert 0 <= r["ndcg_at_10"] <= 1
        assert r["cf_vs_concat"] == pytest.approx(448 * 4 / r["bytes_per_vector"], rel=1e-2)
    assert results["references"]["concat"]["bytes_per_vector"] == 448 * 4
    assert (out / "retained_vs_cf.png").stat().st_size > 0
    assert "| concat_decoder | 16 | binary +rescore x4 | 2 |" in (out / "results.md").read_text()
    assert set(results["targets"]) >= {"concat_vs_best_small_single", "retained_at_cf48",
                                       "decoder_beats_pca_everywhere"}


def test_trained_concat_compressor_reloads_with_its_calibration(concat_run):
    out, results, _ = concat_run
    from smec.store import read_columns
    comp = load_compressor(out / "compressors" / "concat_decoder")
    assert [m["name"] for m in comp.models] == MODELS
    assert {(16, "int8"), (16, "binary")} <= set(comp.quantizers)
    _, columns, _ = read_columns(out / "embeddings" / "corpus",
                                 [f"embedding:{m}" for m in MODELS])
    x = comp.concatenate({m: columns[f"embedding:{m}"] for m in MODELS})
    codes = comp.quantizers[(16, "int8")].encode(comp.encode(x, 16))
    assert codes.dtype == np.int8 and codes.shape == (len(x), 16)


def test_second_run_reuses_the_embeddings(concat_run):
    out, _, cfg = concat_run
    from smec.pipelines.concat import load_or_embed
    said = []
    from smec.runfolder import RunFolder
    data = load_or_embed(None, RunFolder(out), cfg, MODELS, said.append)   # never reaches the ETL
    assert any("reusing" in line for line in said)
    assert set(data["corpus"][1]) == set(MODELS)


@pytest.mark.parametrize("supervision", ["none", "pseudo"])
def test_the_decoder_trains_without_labels(concat_run, mini_cut, tmp_path, supervision):
    """`smec concat --supervision none|pseudo`: the decoder learns from the concatenation's
    own similarities (pseudo: and mined pairs, each embedded with every model); its rows say
    so, at every precision, beside the same PCA baseline. The embeddings are reused."""
    import shutil
    import subprocess
    import sys
    out, _, _ = concat_run
    run = tmp_path / "run"
    shutil.copytree(out / "embeddings", run / "embeddings")
    config = tmp_path / "cfg.yaml"
    config.write_text(json.dumps({
        "model": {"max_seq_length": 128}, "embed": {"num_cpus_per_actor": 0.5},
        "train": {"max_epochs_per_stage": 2, "patience": 2, "pseudo_queries": 100},
        "concat": {"models": MODELS, "single_models": [], "d_max": 64, "levels": [32, 16],
                   "schedules": ["mrl"]}}))
    done = subprocess.run([sys.executable, "-m", "smec.cli", "concat", "--data-dir",
                           str(mini_cut), "--out", str(run), "--config", str(config),
                           "--supervision", supervision],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((run / "results.json").read_text())["rows"]
    label = f"concat_decoder:{supervision}"
    keys = {(r["method"], r["dims"], r["precision"], r.get("rescore", 0)) for r in rows}
    for dims in (64, 32, 16):
        for precision, rescore in (("float32", 0), ("int8", 0), ("binary", 0), ("binary", 4)):
            assert (label, dims, precision, rescore) in keys
    assert not any(r["method"] == "concat_decoder" for r in rows)
    if supervision == "pseudo":
        info = json.loads((run / "pseudo" / "seed0" / "pseudo.json").read_text())
        assert info["made_from"]["model"] == MODELS and info["queries"] > 50
