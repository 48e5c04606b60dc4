"""`smec tune`: Ray Tune over SMEC's training settings, ASHA on the train-query hold-out.

1. Embeddings are computed once into ``OUT/embeddings`` by the usual embed pipeline (skipped when
   they are there) and the training data is built once and shared by every trial
   (``tune.with_parameters``).
2. Each trial trains in its own process (1 CPU; no Ray Train inside: on a small box a
   ``TorchTrainer`` per trial would cost ~30 s of start-up each) and reports after every epoch
   ``val_score_target``: hold-out nDCG@10 of the current model cut to the *final* level
   (e.g. 48 d), which every schedule can be compared on at every epoch; ASHA stops the weak
   trials on it. Scores come from a hold-out of *train* queries, never from test.
3. Each trial checkpoints at the end of every stage; when ``OUT/tune/smec-tune`` already holds
   an experiment, ``Tuner.restore`` continues it (unfinished trials resume from their last
   finished stage).
4. Every trial is an MLflow run (params, per-epoch metrics, compressor), nested under one parent
   run of the search, which gets the best config, its test results and plot.
5. The best trial (hold-out nDCG@10 at the final level, among trials that finished) is written
   as ``OUT/best_config.yaml`` (a full config `smec train --config` accepts), its compressor as
   ``OUT/compressor``, and it is evaluated once on test (``OUT/results.json``). The default
   ``train`` section is one trial; if ASHA stopped it, it is trained alone once so that
   ``OUT/default/results.json`` always holds the default's test score to compare with.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from pydantic import ValidationError
from smec.tune.search import (
    decode,
    default_point,
    max_epochs,
    new_tuner,
    trial_train_config,
)

from smec import console
from smec.config import Config
from smec.data import BeirPaths
from smec.errors import SmecError
from smec.results import scored_rows
from smec.runfolder import Checkpoint, RunFolder
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data

EXPERIMENT = "smec-tune"
METRIC = "val_score_target"


def _scalars(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out["dim"] = min(metrics.get("dims", [0]))
    return out


class TuneReporter(Reporter):
    """A Ray Tune trial: every epoch's scalars to Tune (ASHA reads ``val_score_target``)
    and to the trial's MLflow run; every finished stage a Tune checkpoint (the checkpoint of
    :class:`~smec.runfolder.Checkpoint`, with the MLflow run id); the last one also
    logs the compressor and the training curves and ends the run."""

    def __init__(self, run, levels: int, history: list) -> None:
        super().__init__()
        self.run, self.levels, self.history, self.last = run, levels, history, {}

    def log(self, metrics: dict) -> None:
        from ray import tune
        super().log(metrics)
        self.last = _scalars(metrics) | {"epochs": len(self.history)}
        self.run.log_metrics(self.last, len(self.history) - 1)
        tune.report(dict(self.last))

    def stage_done(self, compressor) -> None:
        from ray import tune
        from smec.pipelines.tracking import plot_history
        finished = len(compressor.stages) == self.levels
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Checkpoint(Path(tmp))
            checkpoint.write(compressor, self.history, mlflow_run_id=self.run.run_id)
            if finished:
                self.run.log_artifact(checkpoint.compressor, "compressor")
                if plot_history(self.history, Path(tmp) / "training_curves.png"):
                    self.run.log_artifact(Path(tmp) / "training_curves.png")
                self.run.end()
            tune.report(dict(self.last) | {"stage_done": compressor.stages[-1].dim,
                                           "completed": int(finished)},
                        checkpoint=tune.Checkpoint.from_directory(tmp))


def trainable(config: dict, data=None, base: dict | None = None, uri: str = "",
              parent_run_id: str | None = None, cpus: float = 1.0) -> None:
    """One trial: train ``base`` with the trial's values; report every epoch to Tune."""
    import torch
    from ray import tune
    from smec.pipelines.tracking import RunLogger, flat_params

    torch.set_num_threads(max(1, int(cpus)))
    cfg = trial_train_config(base, config)
    context = tune.get_context()
    history: list[dict] = []
    resume, run_id = None, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            resume, history, _ = Checkpoint(Path(ckpt_dir)).read()
            run_id = Checkpoint(Path(ckpt_dir)).read_mlflow_run_id()
    run = RunLogger(uri, EXPERIMENT, context.get_trial_name(),
                    flat_params(cfg.model_dump(), "train.") | {"trial_id": context.get_trial_id()},
                    parent_run_id=parent_run_id, run_id=run_id)
    levels = len(cfg.stages) + int(cfg.full_dim_stage)
    try:
        train_method(data, cfg, cfg.method, TuneReporter(run, levels, history), resume=resume)
    except BaseException:
        run.end("KILLED")      # ASHA stops a trial by ending its function here
        raise


def _prepare(paths: BeirPaths, run: RunFolder, cfg: Config, echo) -> tuple:
    from smec.pipelines.embed import embedded
    loaded, _ = embedded(paths, run, cfg, echo)   # once; every trial reuses it
    doc_ids, doc_vecs, query_ids, query_vecs = loaded.as_tuple()
    meta = loaded.meta
    from smec.config import check_stages
    for stages in (cfg.tune.space["stages"].choice if "stages" in cfg.tune.space else []):
        try:
            trial = cfg.train.model_copy(update={"stages": list(stages)})
        except ValidationError as exc:
            raise SmecError(f"tune.space.stages: {list(stages)}: "
                            f"{exc.errors()[0]['msg']}") from None
        check_stages(trial, doc_vecs.shape[1])
    check_stages(cfg.train, doc_vecs.shape[1])
    data = prepare_data(doc_ids, doc_vecs, query_ids, query_vecs,
                        paths.read_train_qrels(), cfg.train)
    return data, meta


def _evaluate_in(paths: BeirPaths, folder: RunFolder, cfg: Config, compressor_dir: Path,
                 embeddings: RunFolder) -> dict:
    """``compressor_dir`` copied into ``folder`` (a run folder of its own) and scored there on
    the test qrels, against the embeddings of ``embeddings``."""
    from smec.pipelines.evaluate import run_evaluate
    folder.root.mkdir(parents=True, exist_ok=True)
    if folder.compressor.resolve() != compressor_dir.resolve():
        shutil.rmtree(folder.compressor, ignore_errors=True)
        shutil.copytree(compressor_dir, folder.compressor)
    return run_evaluate(paths, folder, cfg, embeddings=embeddings)


def _ndcg(results: dict, method: str, dims: int) -> float | None:
    return next((r["ndcg_at_10"] for r in scored_rows(results)
                 if r["method"] == method and r["dims"] == dims), None)


def run_tune(paths: BeirPaths, run: RunFolder, cfg: Config, num_samples: int | None = None,
             mlflow_uri: str | None = None, echo=console.echo) -> dict:
    from smec.pipelines.runtime import init_ray
    from smec.pipelines.tracking import log_results, tracking_uri

    if cfg.train.teacher != "self":   # its trials train on in-memory data without the store
        raise SmecError(f"train.teacher {cfg.train.teacher}: smec tune searches with the model "
                        "as its own teacher; set train.teacher: self (or tune by hand with "
                        "`smec bench compression --teachers`)")
    start = time.perf_counter()
    # the method's own defaults are the base every trial's sampled keys replace
    cfg = cfg.model_copy(update={"train": cfg.train.for_method(cfg.train.method)})
    tcfg = cfg.tune
    if num_samples is not None:
        if num_samples < 1:
            raise SmecError(f"--num-samples must be >= 1, got {num_samples}")
        tcfg = tcfg.model_copy(update={"num_samples": num_samples})
    init_ray()
    data, meta = _prepare(paths, run, cfg, echo)
    uri = tracking_uri(run, mlflow_uri)
    parent, trials = _search(run, cfg, tcfg, data, meta, paths, uri, echo)
    tune_seconds = round(time.perf_counter() - start, 2)
    done = [t for t in trials if t["completed"] and t["checkpoint"]]
    if not done:
        parent.end("FAILED")
        raise SmecError(f"no trial finished all its stages ({len(trials)} reported); see "
                        f"{run.tune / EXPERIMENT}")
    best = max(done, key=lambda t: t["val_score_target"])
    best_train = trial_train_config(cfg.train.model_dump(), best["config"])
    results = _best_on_test(paths, run, cfg.model_copy(update={"train": best_train}), best, echo)
    default_trial, default_results = _default_on_test(paths, run, cfg, tcfg, done, data, echo)
    target = min(best_train.stages)
    summary = {"dataset": paths.name, "trials": trials, "best": best,
               "best_config": str(run.best_config),
               "target_dim": target,
               "test_ndcg_at_10_at_target": {
                   "best": _ndcg(results, best_train.method, target),
                   "default": _ndcg(default_results, cfg.train.method, min(cfg.train.stages))},
               "default_trial_completed": default_trial is not None,
               "tune_seconds": tune_seconds,
               "seconds": round(time.perf_counter() - start, 2),
               "mlflow_uri": uri, "mlflow_parent_run_id": parent.run_id}
    run.tune_summary.write_text(json.dumps(summary, indent=2, default=str))
    parent.log_metrics({f"test_ndcg_at_10.d{target}.best":
                        summary["test_ndcg_at_10_at_target"]["best"] or 0.0,
                        f"test_ndcg_at_10.d{target}.default":
                        summary["test_ndcg_at_10_at_target"]["default"] or 0.0,
                        "best_val_score_target": best["val_score_target"],
                        "trials": len(trials), "trials_completed": len(done)}, 0)
    for artifact in (run.best_config, run.tune_summary):
        parent.log_artifact(artifact)
    parent.log_artifact(run.compressor, "compressor")
    log_results(uri, parent.run_id, run)      # results.json, table, plot; ends the run
    _close_stopped_runs(parent)
    return summary


def _search(run: RunFolder, cfg: Config, tcfg, data, meta: dict, paths: BeirPaths, uri: str,
            echo) -> tuple:
    """The Ray Tune experiment in ``run.tune`` (restored when one is there) under one parent
    MLflow run: (the parent run, every trial that reported)."""
    from ray import tune
    from smec.pipelines.runtime import root_cause
    from smec.pipelines.tracking import RunLogger, flat_params
    exp_dir = run.tune / EXPERIMENT
    restoring = tune.Tuner.can_restore(str(exp_dir))
    if restoring and run.tune_parent_run_id.is_file():
        parent = RunLogger(uri, EXPERIMENT, "", {},
                           run_id=run.tune_parent_run_id.read_text().strip())
    else:
        run.tune.mkdir(parents=True, exist_ok=True)
        parent = RunLogger(uri, EXPERIMENT, f"search-{paths.name}",
                           flat_params(cfg.train.model_dump(), "base.train.")
                           | {"tune.space": json.dumps(tcfg.model_dump(mode="json")["space"]),
                              "tune.num_samples": str(tcfg.num_samples), "dataset": paths.name,
                              "model": str(meta.get("model", "?"))},
                           tags={"smec.kind": "tune"})
        run.tune_parent_run_id.write_text(parent.run_id)
    fn = tune.with_resources(
        tune.with_parameters(trainable, data=data, base=cfg.train.model_dump(), uri=uri,
                             parent_run_id=parent.run_id, cpus=tcfg.cpus_per_trial),
        {"cpu": tcfg.cpus_per_trial})
    if restoring:
        echo(f"restoring the experiment in {exp_dir}")
        tuner = tune.Tuner.restore(str(exp_dir), trainable=fn, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = _new_tuner(fn, cfg, tcfg, run.tune)
    try:
        grid = tuner.fit()
    except Exception as exc:
        if os.environ.get("SMEC_DEBUG"):
            raise
        parent.end("FAILED")
        raise SmecError(f"tuning failed: {root_cause(exc)}") from None
    return parent, _trials(grid, tcfg)


def _best_on_test(paths: BeirPaths, run: RunFolder, best_cfg: Config, best: dict,
                  echo) -> dict:
    """The best trial's config written for `smec train --config`, its compressor copied into
    the run folder and scored once on test."""
    run.best_config.write_text(
        "# best config of `smec tune` (hold-out score at the final level "
        f"{best['val_score_target']:.4f}); `smec train --config` accepts it\n"
        + yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
    echo(f"best trial {best['trial_id']}: {best['config']}; evaluating it once on test")
    with tempfile.TemporaryDirectory() as tmp:
        local = Checkpoint(Path(tmp)).compressor
        shutil.copytree(Checkpoint(Path(best["checkpoint"])).compressor, local)
        return _evaluate_in(paths, run, best_cfg, local, run)


def _new_tuner(fn, cfg: Config, tcfg, storage: Path):
    """A Tuner: ASHA on the hold-out score at the final level, the default first."""
    from ray.tune.schedulers import ASHAScheduler
    points = [default_point(tcfg, cfg.train)] if tcfg.include_default else []
    # max_t one past the longest trial: ASHA must not stop a trial at its last epoch,
    # before the stage-end report that carries the final checkpoint.
    scheduler = ASHAScheduler(time_attr="epochs", max_t=max_epochs(tcfg, cfg.train) + 1,
                              grace_period=tcfg.grace_period,
                              reduction_factor=tcfg.reduction_factor)
    return new_tuner(fn, tcfg, points, scheduler, METRIC, EXPERIMENT, str(storage))


def _trials(grid, tcfg) -> list[dict]:
    """Every trial that reported: its config, whether it finished, its hold-out scores."""
    trials = []
    for result in grid:
        if result.metrics is None or METRIC not in (result.metrics or {}):
            continue
        frame = result.metrics_dataframe
        trials.append({"trial_id": result.metrics.get("trial_id"),
                       "config": {k: decode(result.config[k]) for k in tcfg.space},
                       "completed": bool(result.metrics.get("completed", 0)),
                       "epochs": int(result.metrics.get("epochs", 0)),
                       "val_score_target": float(result.metrics[METRIC]),
                       "best_val_score_target": float(frame[METRIC].max())
                       if frame is not None and METRIC in frame else None,
                       "checkpoint": result.checkpoint.path if result.checkpoint else None,
                       "error": str(result.error) if result.error else None})
    return trials


def _default_on_test(paths: BeirPaths, run: RunFolder, cfg: Config, tcfg, done: list[dict], data,
                     echo) -> tuple[dict | None, dict]:
    """The default train section's test results, for the comparison: its trial's compressor,
    or, where ASHA stopped it, one trained alone. (its trial or None, the results)"""
    point = {k: decode(v) for k, v in default_point(tcfg, cfg.train).items()}
    trial = next((t for t in done if _same(t["config"], point)), None)
    if trial is not None:
        return trial, _evaluate_in(paths, run.default_trial, cfg,
                                   Checkpoint(Path(trial["checkpoint"])).compressor, run)
    echo("the default trial did not finish (stopped by ASHA); training it once alone")
    compressor = train_method(data, cfg.train, cfg.train.method)
    with tempfile.TemporaryDirectory() as tmp:
        local = Checkpoint(Path(tmp)).compressor
        compressor.save(local)
        return None, _evaluate_in(paths, run.default_trial, cfg, local, run)


def _same(a: dict, b: dict) -> bool:
    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v
    return all(norm(a.get(k)) == norm(v) for k, v in b.items())


def _close_stopped_runs(parent) -> None:
    """Trials ASHA stopped never reached their own ``run.end``: mark their runs KILLED."""
    exp_id = parent.client.get_run(parent.run_id).info.experiment_id
    for run in parent.client.search_runs(
            [exp_id], f"tags.mlflow.parentRunId = '{parent.run_id}' and "
                      "attributes.status = 'RUNNING'"):
        parent.client.set_terminated(run.info.run_id, status="KILLED")
