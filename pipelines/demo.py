"""The main job: embed -> train -> evaluate on one BEIR folder (bundled SciFact-mini default)."""
from __future__ import annotations

import time
from typing import TextIO

from smec.pipelines.embed import run_embed
from smec.pipelines.evaluate import record_timing, run_evaluate
from smec.pipelines.train import run_train

from smec import console
from smec.config import Config
from smec.data import BeirPaths
from smec.runfolder import RunFolder


def run_demo(paths: BeirPaths, run: RunFolder, cfg: Config, echo=console.echo,
             mlflow_uri: str | None = None, live: TextIO | None = None) -> dict:
    """Embed, train, evaluate; ``echo`` prints the phases, ``live`` (a terminal) shows the
    epoch in progress."""
    start = time.perf_counter()
    echo(f"[1/3] embed {paths.root} with {cfg.model.name} (Ray Data)")
    summary = run_embed(paths, run, cfg, progress=live is not None)
    record_timing(run, "embed", time.perf_counter() - start)
    echo(f"      corpus {summary['corpus']['rows']} docs at {summary['corpus']['rows_per_s']}"
         f" docs/s, {summary['queries']['rows']} queries")
    start = time.perf_counter()
    echo(f"[2/3] train {cfg.train.method}, stages {cfg.train.stages} (Ray Train)")
    trained = run_train(paths, run, cfg, mlflow_uri=mlflow_uri, echo=echo, live=live)
    record_timing(run, "train", time.perf_counter() - start)
    echo(f"      stages {trained['stages']}")
    echo("[3/3] evaluate")
    results = run_evaluate(paths, run, cfg)
    from smec.pipelines.tracking import log_results
    log_results(trained["mlflow_uri"], trained["mlflow_run_id"], run)
    return results
