"""`smec bench compression` plumbing on a small synthetic BEIR folder, MTEB cross-check included."""
import json

import numpy as np
import pytest
from conftest import write_beir

from smec.config import Config
from smec.data import resolve_beir_dir
from smec.io import write_json
from smec.runfolder import RunFolder
from smec.store import embedding_table, write_part


@pytest.fixture
def synthetic_run(tmp_path):
    rng = np.random.default_rng(0)
    n_docs, n_queries, dim = 80, 30, 16
    docs = rng.normal(size=(n_docs, dim)).astype(np.float32)
    queries = docs[:n_queries] + 0.5 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document number {i}"} for i in range(n_docs)]
    qs = [{"_id": f"q{i}", "text": f"question number {i}"} for i in range(n_queries)]
    qrels = {"train": [(f"q{i}", f"d{i}", 1) for i in range(20)],
             "test": [(f"q{i}", f"d{i}", 1) for i in range(20, 30)]}
    root = write_beir(tmp_path / "synthetic", corpus, qs, qrels)
    out = tmp_path / "run"
    write_part(out / "embeddings" / "corpus", 0,
               embedding_table([d["_id"] for d in corpus], docs, {"model": "synthetic"}))
    write_part(out / "embeddings" / "queries", 0,
               embedding_table([q["_id"] for q in qs], queries, {"model": "synthetic"}))
    write_json(out / "embeddings" / "embed.json", {"model": "synthetic"})
    return resolve_beir_dir(root), out


def test_bench_rows_seeds_and_mteb_agreement(synthetic_run):
    from smec.pipelines.bench import run_compression_bench
    paths, out = synthetic_run
    cfg = Config.model_validate({"train": {"max_epochs_per_stage": 2, "batch_queries": 8,
                                           "batch_unlabelled": 16, "memory_size": 40,
                                           "neighbours": 3, "hard_pool": 10,
                                           "adapter_hidden": 8},
                                 "eval": {"precisions": ["float32", "binary"]}})
    run_compression_bench(paths, RunFolder(out), cfg, ["mrl", "mrl+smrl", "smec"], [8, 4],
                          seeds=2, mteb=True, memory=[20, 40], echo=lambda *a: None)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["seeds"] == 2 and on_disk["model"] == "synthetic"
    keys = {(r["method"], r["dims"], r["seed"]) for r in on_disk["rows"]}
    # SMEC's own defaults skip the full-dim stage; MRL's keep it
    levels = {"mrl": (16, 8, 4), "mrl+smrl": (16, 8, 4), "smec": (8, 4)}
    for method in ("mrl", "mrl+smrl", "smec"):
        for seed in (0, 1):
            assert {(method, d, seed) for d in levels[method]} <= keys
    assert {("pca", 8, 0), ("truncation", 4, 0)} <= keys
    methods = ("mrl", "mrl+smrl", "smec")
    assert set(on_disk["timings_s"]) == {f"{kind}:{m}" for kind in ("train", "epoch")
                                         for m in methods}
    for m in methods:   # seconds per epoch = total train seconds over the epochs trained
        epochs = on_disk["epochs_trained"][m]
        assert 1 <= epochs <= 2 * 3 and on_disk["timings_s"][f"epoch:{m}"] == pytest.approx(
            on_disk["timings_s"][f"train:{m}"] / epochs, rel=0.05, abs=0.011)
    assert on_disk["gradient_variance"]["mrl_over_smrl"] > 0
    assert on_disk["gradient_variance"]["median_epoch_ratio_mrl_over_smrl"] > 0
    assert 1 <= len(on_disk["gradient_variance"]["per_epoch"]["mrl"]) <= 6   # seed 0's epochs
    assert (out / "gradient_variance.png").is_file()
    balance = on_disk["gradient_balance"]   # each stage's start: |grad rank|, alpha |grad unsup|
    assert set(balance["smec"]) == {"8", "4"} and balance["mrl"]["16/8/4"][1] is None
    assert all(rank > 0 and unsup > 0 for rank, unsup in balance["smec"].values())
    memory = on_disk["sxbm_memory"]
    assert [m["memory_size"] for m in memory["sizes"]] == [20, 40]
    assert memory["sizes"][0]["step_time_s"] > 0 and set(memory["sizes"][0]["ndcg_at_10"]) == \
        {"8", "4"}
    # the 8-d level kept its vectors when a 4-d level was added later
    assert on_disk["continued_training"]["max_abs_change_of_kept_level"] == 0.0
    # MTEB, through its own retrieval evaluator, agrees with our nDCG@10 everywhere
    check = on_disk["mteb_crosscheck"]
    assert len(check["levels"]) == 1 + 3 * 2 + 3 + 3 + 2   # raw, 3 recipes x2, the methods
    assert check["max_abs_diff"] < 1e-4
    assert (out / "ndcg_vs_bytes.png").is_file() and "±" in (out / "results.md").read_text()
    # hold-out rows (training queries, never test) for every trained level and every recipe
    holdout = {(r["method"], r["dims"], r["precision"], r.get("rescore", 0), r["seed"])
               for r in on_disk["rows"] if r["split"] == "holdout"}
    assert {("smec", 4, "float32", 0, 1), ("raw", 16, "binary", 4, 0),
            ("pca", 8, "int8", 0, 1)} <= holdout
    assert {r["split"] for r in on_disk["rows"]} == {"test", "holdout"}
    test_binary = {(r["method"], r["dims"], r.get("rescore", 0)) for r in on_disk["rows"]
                   if r["split"] == "test" and r["precision"] == "binary"}
    assert {("smec", 4, 0), ("smec", 8, 4), ("raw", 16, 4), ("pca", 8, 0)} <= test_binary
    checks = on_disk["recipe_check"]
    # every trained level x seed at every eval precision: float32, binary, binary + rescore
    assert len(checks) == (3 + 3 + 2) * 2 * 3 and all("wins" in c for c in checks)
    assert on_disk["recipe_summary"].startswith("hold-out: ")
    assert set(on_disk["holdout_overlap"]["0"]) == {"random_split", "grouped_split"}


def test_bench_trains_label_free_and_scores_transferred_compressors(synthetic_run, tmp_path):
    """--supervision none trains only the methods with an unsupervised term (rows labelled
    smec:none, hold-out rows too), progress names seed, method, level and time left; and
    --transfer-from scores every saved compressor on another dataset, recording both."""
    import shutil

    from smec.pipelines.bench import run_compression_bench
    paths, out = synthetic_run
    cfg = Config.model_validate({"train": {"max_epochs_per_stage": 2, "batch_queries": 8,
                                           "batch_unlabelled": 16, "memory_size": 40,
                                           "neighbours": 3, "hard_pool": 10,
                                           "adapter_hidden": 8, "probe_docs": 8,
                                           "val_corpus_docs": 80}})
    lines: list[str] = []
    run_compression_bench(paths, RunFolder(out), cfg, ["mrl", "smec"], [8, 4], seeds=1, memory=[],
                          echo=lines.append, supervision=["none", "qrels"])
    rows = json.loads((out / "results.json").read_text())["rows"]
    trained = {(r["method"], r["split"]) for r in rows}
    assert {("smec:none", "test"), ("smec:none", "holdout"), ("smec", "test"),
            ("mrl", "test")} <= trained
    assert not any(m.startswith("mrl:") for m, _ in trained)
    assert any(line.startswith("  seed 0 smec:none: level 4 d trained (1/3)")
               and "min left" in line for line in lines)
    assert sorted(p.relative_to(out / "compressors").as_posix()
                  for p in (out / "compressors").glob("*/seed*") if p.is_dir()) == \
        ["mrl/seed0", "smec/seed0", "smec:none/seed0"]

    other_root = shutil.copytree(paths.root, tmp_path / "other-set")
    other = tmp_path / "other-run"
    shutil.copytree(out / "embeddings", other / "embeddings")
    run_compression_bench(resolve_beir_dir(other_root), RunFolder(other), cfg, ["mrl"], [8, 4],
                          seeds=1, memory=[], echo=lambda *a: None, transfer_from=RunFolder(out))
    moved = [r for r in json.loads((other / "results.json").read_text())["rows"]
             if r["method"].endswith(":from-synthetic")]
    assert {r["method"] for r in moved} == {"mrl:from-synthetic", "smec:from-synthetic",
                                            "smec:none:from-synthetic"}
    assert all(r["trained_on"] == "synthetic" and r["evaluated_on"] == "other-set"
               for r in moved)
    source = {(r["method"], r["dims"]): r["ndcg_at_10"] for r in rows if r["split"] == "test"}
    for r in moved:   # the same vectors and queries: the scores the source bench wrote
        assert r["ndcg_at_10"] == pytest.approx(source[(r["method"][:-len(":from-synthetic")],
                                                        r["dims"])])


def test_a_rerun_bench_loads_the_units_it_finished_and_retrains_what_changed(synthetic_run):
    """A bench stopped after seed 0 and run again with more seeds loads seed 0 (same rows, same
    train seconds) and trains only seed 1; a changed config retrains."""
    from smec.pipelines.bench import run_compression_bench
    paths, out = synthetic_run
    settings = {"max_epochs_per_stage": 2, "batch_queries": 8, "hard_pool": 10,
                "adapter_hidden": 8}
    cfg = Config.model_validate({"train": settings})

    def bench(config: Config, seeds: int) -> tuple[list[str], dict]:
        lines: list[str] = []
        run_compression_bench(paths, RunFolder(out), config, ["mrl"], [8, 4], seeds=seeds,
                              memory=[], echo=lines.append)
        return lines, json.loads((out / "results.json").read_text())

    def seed0(results: dict) -> dict:
        return {(r["dims"], r["precision"], r["split"]): r["ndcg_at_10"]
                for r in results["rows"] if r["method"] == "mrl" and r["seed"] == 0}

    _, first = bench(cfg, 1)
    record = RunFolder(out).bench_unit("mrl", 0)
    kept = record.read_text()
    lines, second = bench(cfg, 2)
    loaded = [line for line in lines if "finished by an earlier run" in line]
    assert [line.split(":")[0] for line in loaded] == ["seed 0 mrl"]
    assert any(line.startswith("  seed 1 mrl: level 4 d trained") for line in lines)
    assert seed0(second) == seed0(first)
    assert record.read_text() == kept   # seed 0's train seconds and history, as recorded
    assert second["epochs_trained"]["mrl"] == pytest.approx(np.mean(
        [len(json.loads(RunFolder(out).bench_unit("mrl", s).read_text())["history"])
         for s in (0, 1)]))

    changed = Config.model_validate({"train": {**settings, "lr": 0.01}})
    lines, _ = bench(changed, 1)
    assert not any("finished by an earlier run" in line for line in lines)


def test_training_data_fingerprint_follows_every_value():
    import dataclasses

    import torch

    from smec.data import Qrels
    from smec.training.prepare import TrainingData
    data = TrainingData(corpus=torch.eye(4), doc_ids=list("abcd"), queries=torch.eye(4)[:2],
                        positives=[[(0, 1)], [(1, 1)]], hard_pools=[torch.arange(2000)] * 2,
                        val_queries=np.eye(4, dtype=np.float32)[2:], val_query_ids=["q2", "q3"],
                        val_qrels=Qrels({"q2": {"c": 1}, "q3": {"d": 1}}),
                        val_doc_rows=torch.arange(4))
    assert data.fingerprint() == dataclasses.replace(data, corpus=torch.eye(4)).fingerprint()
    nudged = torch.eye(4)
    nudged[3, 3] = 0.999
    pool = torch.arange(2000)
    pool[1000] = 7   # a middle value: str(tensor) elides it, so only the bytes can tell
    for change in ({"corpus": nudged}, {"hard_pools": [torch.arange(2000), pool]},
                   {"positives": [[(0, 2)], [(1, 1)]]}, {"teacher": torch.eye(4)},
                   {"val_qrels": Qrels({"q2": {"c": 1}, "q3": {"c": 1}})}):
        assert dataclasses.replace(data, **change).fingerprint() != data.fingerprint(), change
