"""Issue 7: the S-XBM memory protocol and Ray actor, mid-stage checkpoints, MLflow, Ray Tune."""
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from test_train import TINY, synthetic

from smec.config import TrainConfig
from smec.modules import SXBM
from smec.runfolder import RunFolder
from smec.store import embedding_table, write_part
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data


def test_exchange_is_neighbours_then_enqueue():
    torch.manual_seed(0)
    a, b = SXBM(20, 8), SXBM(20, 8)
    for step in range(4):
        feats = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
        ids = torch.arange(6) + 6 * (step % 3)       # ids repeat: self-exclusion matters
        got = a.exchange(feats, ids, 3)
        if b.filled >= 3:
            _, pool_ids, index, teacher = b.neighbours(feats, ids, 3)
            nbr_ids, inverse, got_teacher = got
            assert torch.equal(nbr_ids[inverse], pool_ids[index])
            assert torch.equal(got_teacher, teacher)
            assert len(nbr_ids) <= 6 * 3
            assert (pool_ids[index] != ids[:, None]).all()        # never its own id
        else:
            assert got is None
        b.enqueue(feats, ids)
        assert (a.ptr, a.filled) == (b.ptr, b.filled)
    restored = SXBM(20, 8)
    restored.load_state_dict(a.state_dict())
    assert torch.equal(restored.feats, a.feats) and restored.filled == a.filled


def test_stage_resumes_from_a_mid_stage_snapshot_exactly():
    doc_ids, docs, query_ids, queries, qrels = synthetic()
    cfg = TrainConfig(**TINY)
    data = prepare_data(doc_ids, docs, query_ids, queries, qrels, cfg)
    snaps = []

    class Snapshots(Reporter):
        def step_done(self, step, snapshot):
            if step == 3:
                snaps.append(snapshot())
    whole_reporter = Snapshots()
    whole = train_method(data, cfg, "smec", whole_reporter)
    whole_log = whole_reporter.history
    mid = next(s for s in snaps if s["stage_no"] == 1)       # stage 1, after its 3rd step
    finished = type(whole)(whole.input_dim, [], cfg.adapter, cfg.adapter_hidden, "smec",
                           stages=whole.stages[:1])
    resumed_reporter = Reporter()
    resumed = train_method(data, cfg, "smec", resumed_reporter, resume=finished,
                           resume_partial=mid)
    resumed_log = resumed_reporter.history
    for a, b in zip(whole.stages, resumed.stages):
        assert a.dim == b.dim and torch.equal(a.indices, b.indices)
        for key in a.adapter_state:
            assert torch.equal(a.adapter_state[key], b.adapter_state[key])
    later = [h["val_score"] for h in whole_log if h["stage"] >= 1]
    assert [h["val_score"] for h in resumed_log] == later
    assert all("val_score_target" in h and "memory_fill" in h for h in whole_log)


def test_train_run_metrics_read_back_from_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient
    from smec.pipelines.supervision import TrainingInputs
    from smec.pipelines.tracking import log_training_run, tracking_uri
    from smec.pipelines.train import FolderReporter, train_func
    doc_ids, docs, query_ids, queries, qrels = synthetic()
    write_part(tmp_path / "emb" / "corpus", 0, embedding_table(doc_ids, docs))
    write_part(tmp_path / "emb" / "queries", 0, embedding_table(query_ids, queries))
    cfg = TrainConfig(**TINY)
    train_func({"train": cfg.model_dump(), "inputs": TrainingInputs(
                    "qrels", tmp_path / "emb" / "corpus", tmp_path / "emb" / "queries", qrels)},
               FolderReporter(RunFolder(tmp_path)))
    history = json.loads((tmp_path / "compressor" / "history.json").read_text())
    uri = tracking_uri(RunFolder(tmp_path))
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    run_id = log_training_run(uri, cfg.model_dump(), history, tmp_path / "compressor", "t")

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == str(cfg.lr)
    assert json.loads(run.data.params["train.stages"]) == [8, 4]
    val = client.get_metric_history(run_id, "val_score")
    assert [m.value for m in sorted(val, key=lambda m: m.step)] == pytest.approx(
        [h["val_score"] for h in history if "val_score" in h])
    for name in ("loss_rank", "tau", "ads_overlap_truncation", "memory_fill",
                 "stage_val_score.d4", "stage_val_score.d8"):
        assert client.get_metric_history(run_id, name), name
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"compressor", "history.json", "training_curves.png"} <= artifacts
    # artifacts live beside the store, not in ./mlruns of wherever the job ran
    assert (tmp_path / "mlartifacts").is_dir()
    assert client.get_run(run_id).info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


@pytest.mark.slow
def test_actor_memory_matches_the_local_ring_buffer():
    import ray
    from smec.pipelines.memory_actor import ActorMemory
    started = not ray.is_initialized()      # an earlier test may have left Ray running
    if started:
        ray.init(num_cpus=1, include_dashboard=False, object_store_memory=256 * 1024**2,
                 log_to_driver=False, configure_logging=False)
    try:
        local, remote = SXBM(50, 16), ActorMemory.create(50, 16)
        torch.manual_seed(0)
        for step in range(5):
            feats = torch.nn.functional.normalize(torch.randn(16, 16), dim=-1)
            ids = torch.arange(16) + 16 * step
            a, b = local.exchange(feats, ids, 4), remote.exchange(feats, ids, 4)
            assert (a is None) == (b is None)
            if a is not None:
                for x, y in zip(a, b):
                    assert torch.allclose(x.float(), y.float())
            assert remote.filled == local.filled
        state = remote.state_dict()
        assert torch.equal(state["feats"], local.feats) and state["ptr"] == local.ptr
    finally:
        if started:
            ray.shutdown()


KILL = """\
train:
  stages: [96, 48]
  max_epochs_per_stage: 3
  patience: 10
  batch_queries: 8
  batch_unlabelled: 64
  memory_size: 500
  memory_backend: actor
  checkpoint_every_steps: 3
  max_failures: 1
"""


def kill_worker_in_stage(progress: Path, stage: int, marker: Path, stop: threading.Event) -> None:
    """SIGKILL the Ray Train worker once it has logged the first epoch of ``stage`` (read from
    the progress file the driver follows), from outside, as a crash would; ``marker`` records
    the pid killed."""
    while not stop.is_set():
        lines = progress.read_text().splitlines() if progress.is_file() else []
        if any(json.loads(line)["stage"] == stage for line in lines if line.strip()):
            workers = [p for p in psutil.process_iter(["cmdline"])
                       if (p.info["cmdline"] or [""])[0].startswith("ray::RayTrainWorker")]
            if workers:
                marker.write_text(str(workers[0].pid))
                workers[0].send_signal(signal.SIGKILL)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint(mini_cut, mini_cut_embeddings, tmp_path):
    """SIGKILL the worker mid-stage, from outside; Ray Train restarts it from the last step
    checkpoint and the run ends within 0.5 nDCG@10 point of an undisturbed one."""
    import ray
    from smec.pipelines.evaluate import run_evaluate
    from smec.pipelines.train import run_train

    from smec.config import load_config
    from smec.data import resolve_beir_dir
    (tmp_path / "kill.yaml").write_text(KILL)
    cfg = load_config(tmp_path / "kill.yaml")
    paths = resolve_beir_dir(mini_cut)
    scores = {}
    started = not ray.is_initialized()
    try:
        for name in ("clean", "killed"):
            out = tmp_path / name
            shutil.copytree(mini_cut_embeddings / "embeddings", out / "embeddings")
            stop = threading.Event()
            killer = threading.Thread(target=kill_worker_in_stage, args=(
                RunFolder(out).train_progress, 1, tmp_path / "killed.marker", stop))
            if name == "killed":
                killer.start()
            try:
                summary = run_train(paths, RunFolder(out), cfg)
            finally:
                stop.set()
                if killer.is_alive():
                    killer.join()
            results = run_evaluate(paths, RunFolder(out), cfg)
            scores[name] = {r["dims"]: r["ndcg_at_10"] for r in results["rows"]
                            if r["method"] == "smec" and r["split"] == "test"}
            history = json.loads((out / "compressor" / "history.json").read_text())
            assert [s for s in summary["stages"]] == [96, 48]   # SMEC's own: no full-dim stage
            assert summary["mlflow_run_id"]
        assert (tmp_path / "killed.marker").exists()   # the worker really was killed
        # the restarted attempt resumed mid-stage: stage 1 was not started over
        assert sum(1 for h in history if h["stage"] == 1) == 3
        print(f"test nDCG@10 by level, undisturbed vs killed: {scores}")
        assert abs(scores["killed"][48] - scores["clean"][48]) <= 0.005, scores
    finally:
        if started:
            ray.shutdown()
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=summary["mlflow_uri"])
    assert client.get_metric_history(summary["mlflow_run_id"], "val_score")


TUNE = """\
train:
  stages: [8, 4]
  max_epochs_per_stage: 2
  batch_queries: 16
  batch_unlabelled: 32
  memory_size: 100
  neighbours: 3
  hard_pool: 10
  adapter_hidden: 16
tune:
  space:
    tau0: {choice: [0.5, 1.0]}
    stages: {choice: [[8, 4], [4]]}
    lr: {loguniform: [1.0e-4, 1.0e-2]}
  num_samples: 3
  grace_period: 1
"""


def synthetic_beir(root: Path, n_docs=200, n_train=60, n_test=20, dim=16):
    """A BEIR folder of ids plus a run folder with 16-d embeddings for them (no model)."""
    from conftest import write_beir
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(n_docs, dim)).astype(np.float32)
    nq = n_train + n_test
    queries = docs[:nq] + 0.5 * rng.normal(size=(nq, dim)).astype(np.float32)
    doc_ids, q_ids = [f"d{i}" for i in range(n_docs)], [f"q{i}" for i in range(nq)]
    data = write_beir(root / "beir", [{"_id": d, "text": d} for d in doc_ids],
                      [{"_id": q, "text": q} for q in q_ids],
                      {"train": [(f"q{i}", f"d{i}", 1) for i in range(n_train)],
                       "test": [(f"q{i}", f"d{i}", 1) for i in range(n_train, nq)]})
    out = root / "run"
    write_part(out / "embeddings" / "corpus", 0, embedding_table(doc_ids, docs))
    write_part(out / "embeddings" / "queries", 0, embedding_table(q_ids, queries))
    return data, out


@pytest.mark.slow
def test_smec_tune_best_config_test_results_mlflow_and_restore(tmp_path):
    from mlflow.tracking import MlflowClient

    from smec.config import load_config
    data, out = synthetic_beir(tmp_path)
    (tmp_path / "tune.yaml").write_text(TUNE)

    def smec_tune():
        return subprocess.run([sys.executable, "-m", "smec.cli", "tune", "--config",
                               str(tmp_path / "tune.yaml"), "--data-dir", str(data), "--out",
                               str(out)], capture_output=True, text=True, timeout=900,
                              check=False)

    first = smec_tune()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "best config:" in first.stdout
    best = load_config(out / "best_config.yaml")          # `smec train --config` accepts it
    summary = json.loads((out / "tune_summary.json").read_text())
    assert len(summary["trials"]) == 3
    default = TrainConfig().for_method("smec")   # the first trial: the train section as
    #                                             SMEC trains it (its own defaults applied)
    assert summary["trials"][0]["config"] == {"tau0": default.tau0, "stages": [8, 4],
                                              "lr": default.lr}
    assert best.train.stages == summary["best"]["config"]["stages"]
    results = json.loads((out / "results.json").read_text())
    assert results["split"] == "test"
    assert {r["dims"] for r in results["rows"] if r["method"] == "smec"} >= {4}
    assert (out / "default" / "results.json").is_file()
    client = MlflowClient(tracking_uri=summary["mlflow_uri"])
    exp = client.get_experiment_by_name("smec-tune")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")
                == summary["mlflow_parent_run_id"]]
    assert len(children) == 3
    assert all(client.get_metric_history(r.info.run_id, "val_score") for r in children)
    assert all(r.info.status != "RUNNING" for r in runs)
    # a second call finds the experiment and restores it (all trials done: nothing to rerun)
    again = smec_tune()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restoring the experiment" in again.stdout


@pytest.mark.slow
def test_smec_tune_cv_picks_over_two_datasets_folds_without_test_and_restores(
        mini_cut, mini_cut_embeddings, tmp_path):
    """`smec tune --cv`: every trial runs both folds of both datasets (4 units), the pick
    comes from the cross-validated gains, the test qrels are never read (they are not even
    qrels here), every trial is an MLflow run with one `cv_gain` per unit, and a second call
    restores the experiment instead of training again."""
    from mlflow.tracking import MlflowClient

    from smec.config import load_config
    specs = []
    for name in ("cut-a", "cut-b"):
        shutil.copytree(mini_cut, tmp_path / name)
        (tmp_path / name / "qrels" / "test.tsv").write_text("this is not read\n")
        specs += ["--cv", f"{tmp_path / name}:{mini_cut_embeddings}"]
    (tmp_path / "select.yaml").write_text(
        "train:\n  method: mrl\n  max_epochs_per_stage: 1\n  patience: 1\n"
        "tune:\n  space:\n    lr: {choice: [0.0003, 0.003]}\n  num_samples: 2\n"
        "  grace_period: 4\n  max_concurrent_trials: 2\n")
    out = tmp_path / "select"

    def smec_select():
        return subprocess.run([sys.executable, "-m", "smec.cli", "tune", *specs, "--config",
                               str(tmp_path / "select.yaml"), "--out", str(out)],
                              capture_output=True, text=True, timeout=900, check=False)

    first = smec_select()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "chosen for mrl" in first.stdout
    assert first.stdout.count("unit 4/4 (cut-b fold 1)") == 2     # progress: a line per unit
    summary = json.loads((out / "selection.json").read_text())
    assert summary["test_qrels_read"] == 0 and summary["units_per_trial"] == 4
    assert set(summary["datasets"]) == {"cut-a", "cut-b"}
    rows = summary["picks"]["mrl"]["rows"]
    assert len(rows) == 2 and sum(r["chosen"] for r in rows) == 1
    assert {json.dumps(r["setting"]) for r in rows} <= {"{}", '{"lr": 0.0003}',
                                                        '{"lr": 0.003}'}
    chosen = next(r for r in rows if r["chosen"])
    best = load_config(out / "best_config.yaml")          # `smec train --config` accepts it
    assert best.train.method == "mrl" and best.train.stages == [192, 96, 48, 24]
    assert best.train.lr == chosen["setting"].get("lr", TrainConfig().for_method("mrl").lr)
    client = MlflowClient(tracking_uri=summary["mlflow_uri"])
    exp = client.get_experiment_by_name("smec-select")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == summary["mlflow_parent_run_id"]]
    assert len(children) == 2
    assert all(len(client.get_metric_history(r.info.run_id, "cv_gain")) == 4 for r in children)
    again = smec_select()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restoring the experiment" in again.stdout
    assert json.loads((out / "selection.json").read_text())["picks"] == summary["picks"]
