"""`smec tune --cv`: choose a method's defaults by the cross-validated, several-dataset protocol
of :mod:`smec.selection`, as a Ray Tune search (ASHA, MLflow, restore).

1. Each ``--cv DATA_DIR:RUN_DIR[:TRAIN_SPLIT]`` dataset is loaded once in the driver (its
   embeddings, two grouped folds of its *training* queries, the untrained start's per-query
   nDCG@10) and shared with every trial (``tune.with_parameters``). Test qrels are never read.
2. A trial is one setting (the config's ``train`` section, the method's own defaults, with the
   trial's values of ``tune.space``). It runs its units one after the other, each dataset's
   two folds in turn: train on one fold, score the other. After each unit it reports
   ``cv_gain`` (the mean per-query gain over the start at 96/48/24 d so far, datasets weighted
   equally) with a checkpoint holding every finished unit, so ASHA (``time_attr: units``) can
   stop weak settings after their first datasets and a restored experiment resumes a trial at
   its next unit.
3. Every trial is an MLflow run (its changes, per-unit metrics) under one parent run.
4. The pick is :func:`smec.selection.pick` over the settings that finished every unit: refuse a
   loss to the start on any dataset, then the simplest setting within one paired-bootstrap
   standard error of the best. Written: ``OUT/selection.json`` (``test_qrels_read: 0``),
   ``OUT/selection.md`` and ``OUT/best_config.yaml`` (``smec train --config`` accepts it).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from smec.tune.search import decode, default_point, new_tuner, trial_train_config

from smec import console
from smec.config import Config
from smec.errors import SmecError
from smec.io import write_json
from smec.runfolder import RunFolder
from smec.selection import (
    FOLDS,
    LEVELS,
    STAGES,
    gains,
    load_dataset,
    pick,
    run_unit,
    selection_table,
)

EXPERIMENT = "smec-select"
METRIC = "cv_gain"
UNITS_FILE = "units.json"


def units_of(datasets: dict) -> list[tuple[str, int]]:
    """A trial's units in the order it runs them: each dataset's folds in turn."""
    return [(name, fold) for name in datasets for fold in FOLDS]


def running_gain(records: list[dict], datasets: dict) -> float:
    """Mean per-query gain over the start of the units done so far, datasets weighted equally."""
    per = {}
    for r in records:
        per.setdefault(r["dataset"], []).append(r)
    return float(np.mean([gains(v, datasets[name]).mean() for name, v in per.items()]))


def changes(base: dict, config: dict) -> dict:
    """The trial's values that differ from ``base`` (its place in "the simplest setting")."""
    return {k: decode(v) for k, v in config.items() if decode(v) != base.get(k)}


def cv_trial(config: dict, datasets: dict | None = None, base: dict | None = None,
             method: str = "smec", uri: str = "", parent_run_id: str | None = None,
             cpus: float = 1.0) -> None:
    """One setting: its units in turn, a report and a checkpoint after each."""
    import torch
    from ray import tune
    from smec.pipelines.tracking import RunLogger, flat_params

    torch.set_num_threads(max(1, int(cpus)))
    cfg = trial_train_config(base, config)
    setting = changes(base, config)
    records, run_id = [], None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            saved = json.loads((Path(ckpt_dir) / UNITS_FILE).read_text())
        records, run_id = saved["units"], saved["mlflow_run_id"]
    context = tune.get_context()
    run = RunLogger(uri, EXPERIMENT, context.get_trial_name(),
                    flat_params(setting, "change.") | {"method": method,
                                                       "trial_id": context.get_trial_id()},
                    parent_run_id=parent_run_id, run_id=run_id)
    plan = units_of(datasets)
    try:
        for name, fold in plan[len(records):]:
            record = run_unit(datasets[name], method, cfg, fold)
            records.append(record)
            level_gains = gains([record], datasets[name]).mean(0)
            metrics = {METRIC: running_gain(records, datasets), "units": len(records),
                       "completed": int(len(records) == len(plan)),
                       "unit_gain": float(level_gains.mean()), "unit_epochs": record["epochs"]}
            run.log_metrics(metrics | {f"unit_gain.{name}.fold{fold}": metrics["unit_gain"]},
                            len(records) - 1)
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / UNITS_FILE).write_text(json.dumps(
                    {"setting": setting, "units": records, "mlflow_run_id": run.run_id}))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
    except BaseException:
        run.end("KILLED")      # ASHA stops a trial by ending its function here
        raise
    run.end()


def progress(datasets: dict, echo):
    """A ``tune.Callback`` that prints one line per finished unit (the trial, its dataset and
    fold, the gain), so a search that runs for hours shows where it is."""
    from ray import tune
    plan = units_of(datasets)

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            n = int(result.get("units", 0))
            if 1 <= n <= len(plan):
                name, fold = plan[n - 1]
                echo(f"trial {trial.trial_id}: unit {n}/{len(plan)} ({name} fold {fold}) gain "
                     f"{result['unit_gain']:+.4f}, cv_gain {result[METRIC]:+.4f} "
                     f"({sum(t.status == 'TERMINATED' for t in trials)} of {len(trials)} "
                     "trials ended)")

    return Progress()


def run_selection(specs: list[str], run: RunFolder, cfg: Config,
                  num_samples: int | None = None, mlflow_uri: str | None = None,
                  echo=console.echo) -> dict:
    """The search, then the pick; returns what ``OUT/selection.json`` holds."""
    from smec.pipelines.runtime import init_ray
    from smec.pipelines.tracking import tracking_uri

    start = time.perf_counter()
    method = cfg.train.method
    if "stages" in cfg.tune.space:
        raise SmecError(f"tune.space.stages: --cv trains the stages {STAGES} and scores "
                        f"{LEVELS} d; leave stages out of the space")
    tcfg = cfg.tune
    if num_samples is not None:
        if num_samples < 1:
            raise SmecError(f"--num-samples must be >= 1, got {num_samples}")
        tcfg = tcfg.model_copy(update={"num_samples": num_samples})
    base_train = cfg.train.for_method(method).model_copy(update={"stages": STAGES})
    datasets = {}
    for spec in specs:
        ds = load_dataset(spec)
        if ds["name"] in datasets:
            raise SmecError(f"--cv {spec}: a second dataset named {ds['name']}")
        datasets[ds["name"]] = ds
        echo(f"{ds['name']}: folds of {[len(f) for f in ds['folds']]} training queries; start "
             "(pca_uncentred) " + " ".join(f"{d} d {np.mean(list(ds['start'][d].values())):.4f}"
                                            for d in LEVELS))
    init_ray()
    uri = tracking_uri(run, mlflow_uri)
    parent = _parent_run(run, uri, method, tcfg, datasets)
    grid = _fit(run, tcfg, base_train, datasets, method, uri, parent)
    units, trials = [], 0
    for result in grid:
        if result.checkpoint is None:
            continue
        with result.checkpoint.as_directory() as ckpt_dir:
            saved = json.loads((Path(ckpt_dir) / UNITS_FILE).read_text())
        trials += 1
        units += [{"method": method, "setting": saved["setting"]} | r for r in saved["units"]]
    picks = {method: pick(method, units, datasets)}
    if not picks[method]["rows"]:
        parent.end("FAILED")
        raise SmecError(f"no setting finished all {len(units_of(datasets))} units "
                        f"({trials} trials reported); see {run.tune / EXPERIMENT}")
    chosen = base_train.model_copy(update=picks[method]["chosen"])
    best = cfg.model_copy(update={"train": chosen})
    run.root.mkdir(parents=True, exist_ok=True)
    run.best_config.write_text(
        f"# `smec tune --cv` pick for {method} (cross-validated gain over the start "
        f"{picks[method]['chosen_score']:+.4f}); `smec train --config` accepts it\n"
        + yaml.safe_dump(best.model_dump(mode="json"), sort_keys=False))
    summary = {
        "protocol": "grouped 2-fold CV on training queries; score = mean over datasets of the "
                    "per-query nDCG@10 gain over pca_uncentred at "
                    + "/".join(map(str, LEVELS)) + " d; refuse a loss on any dataset; "
                    "simplest within one paired-bootstrap SE of the best; Ray Tune + ASHA "
                    "over units",
        "datasets": {n: {"scored_queries": sum(len(f) for f in ds["folds"])}
                     for n, ds in datasets.items()},
        "trials": trials, "units_per_trial": len(units_of(datasets)),
        "units_run": len(units), "test_qrels_read": 0, "picks": picks,
        "seconds": round(time.perf_counter() - start, 1),
        "mlflow_uri": uri, "mlflow_parent_run_id": parent.run_id}
    write_json(run.selection, summary)
    run.selection_table.write_text(selection_table(picks, list(datasets)))
    parent.log_metrics({"chosen_cv_gain": picks[method]["chosen_score"],
                        "best_cv_gain": picks[method]["best_score"], "trials": trials}, 0)
    for artifact in (run.selection, run.selection_table, run.best_config):
        parent.log_artifact(artifact)
    parent.end()
    return summary


def _parent_run(run: RunFolder, uri: str, method: str, tcfg, datasets: dict):
    from ray import tune
    from smec.pipelines.tracking import RunLogger
    id_file = run.select_parent_run_id
    if tune.Tuner.can_restore(str(run.tune / EXPERIMENT)) and id_file.is_file():
        return RunLogger(uri, EXPERIMENT, "", {}, run_id=id_file.read_text().strip())
    run.tune.mkdir(parents=True, exist_ok=True)
    parent = RunLogger(uri, EXPERIMENT, f"select-{method}",
                       {"method": method, "datasets": ",".join(datasets),
                        "tune.space": json.dumps(tcfg.model_dump(mode="json")["space"]),
                        "tune.num_samples": str(tcfg.num_samples)},
                       tags={"smec.kind": "select"})
    id_file.write_text(parent.run_id)
    return parent


def _fit(run: RunFolder, tcfg, base_train, datasets: dict, method: str, uri: str, parent):
    """The Ray Tune experiment in ``run.tune`` (restored when one is there)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from smec.pipelines.runtime import root_cause
    exp_dir = run.tune / EXPERIMENT
    fn = tune.with_resources(
        tune.with_parameters(cv_trial, datasets=datasets, base=base_train.model_dump(),
                             method=method, uri=uri, parent_run_id=parent.run_id,
                             cpus=tcfg.cpus_per_trial),
        {"cpu": tcfg.cpus_per_trial})
    if tune.Tuner.can_restore(str(exp_dir)):
        console.echo(f"restoring the experiment in {exp_dir}")
        tuner = tune.Tuner.restore(str(exp_dir), trainable=fn, resume_unfinished=True,
                                   resume_errored=True)
    else:
        points = [default_point(tcfg, base_train)] if tcfg.include_default else []
        scheduler = ASHAScheduler(time_attr="units", max_t=len(units_of(datasets)),
                                  grace_period=min(tcfg.grace_period, len(units_of(datasets))),
                                  reduction_factor=tcfg.reduction_factor)
        tuner = new_tuner(fn, tcfg, points, scheduler, METRIC, EXPERIMENT, str(run.tune),
                          [progress(datasets, console.echo)])
    try:
        return tuner.fit()
    except Exception as exc:
        if os.environ.get("SMEC_DEBUG"):
            raise
        parent.end("FAILED")
        raise SmecError(f"tuning failed: {root_cause(exc)}") from None
