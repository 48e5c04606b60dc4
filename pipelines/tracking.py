"""MLflow tracking for `smec train`, `smec demo` and `smec tune` runs.

The store defaults to SQLite inside the run folder (``sqlite:///<out>/mlflow.db``): MLflow 3's
file store (``./mlruns``) is in maintenance mode and refuses to start, and SQLite is the
database backend MLflow recommends for a local store. ``--mlflow-uri`` points anywhere else
(a server, another database). Read runs back with ``mlflow.tracking.MlflowClient`` or the UI:
``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``.

What one training run logs: every ``train`` setting as a param; per epoch (step = epoch count
over all stages) the rank and S-XBM losses, the hold-out score (``val_score``: nDCG@10, or the
probes' neighbour recall@10 label-free, as ``val_metric`` says) at the stage's dim and at the
target dim, τ, learning rate, ADS selection overlap with truncation, S-XBM fill and step time;
per stage its best hold-out score (``stage_val_score.d<dim>``); artifacts: the training
curves (PNG), ``history.json``, the compressor folder, and results.json + plot when evaluated.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from smec.runfolder import Checkpoint, RunFolder

EPOCH_METRICS = ("loss_rank", "loss_unsup", "val_score", "val_score_target", "val_start", "tau",
                 "lr", "ads_overlap_truncation", "memory_fill", "step_time_s", "grad_var",
                 "grad_norm_rank", "grad_norm_unsup", "stage", "epoch")


def tracking_uri(folder: RunFolder, uri: str | None = None) -> str:
    """``uri`` when given, else the run folder's SQLite store (an absolute path)."""
    return uri or f"sqlite:///{folder.mlflow_db}"


def _artifact_location(uri: str) -> str | None:
    """Artifacts in ``mlartifacts`` beside a local SQLite store; MLflow's default is ``./mlruns``
    in whatever folder the job happens to run from."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()


def flat_params(section: dict, prefix: str = "") -> dict[str, str]:
    return {f"{prefix}{k}": json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            for k, v in section.items()}


class RunLogger:
    """One MLflow run, written through ``MlflowClient`` (no global ``mlflow`` state, so several
    in one process — or Tune trials in parallel — never mix)."""

    def __init__(self, uri: str, experiment: str, run_name: str, params: dict[str, str],
                 tags: dict[str, str] | None = None, parent_run_id: str | None = None,
                 run_id: str | None = None) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        if run_id is not None:            # continue a run (a restored experiment)
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=_artifact_location(uri))
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name,
                                             tags=all_tags).info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_history(self, history: list[dict]) -> None:
        """Every epoch record of a training history, then the per-stage best scores."""
        epochs = [h for h in history if "val_score" in h]
        for step, h in enumerate(epochs):
            self.log_metrics({k: h[k] for k in EPOCH_METRICS if k in h}
                             | {"dim": min(h.get("dims", [0]))}, step)
        self.log_metrics(stage_summary(history), len(epochs))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path or path.name)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def stage_summary(history: list[dict]) -> dict[str, float]:
    """Best hold-out nDCG@10 per level (key ``stage_val_score.d<dim>``)."""
    best: dict[str, float] = {}
    for h in history:
        if "val_score" in h and len(h.get("dims", [])) == 1:
            key = f"stage_val_score.d{h['dims'][0]}"
            best[key] = max(best.get(key, -1.0), float(h["val_score"]))
    return best


def plot_history(history: list[dict], path: Path) -> Path | None:
    """Hold-out nDCG@10 and rank loss per epoch, one colour per stage."""
    epochs = [h for h in history if "val_score" in h]
    if not epochs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    stages = sorted({h["stage"] for h in epochs})
    x = 0
    for stage in stages:
        rows = [h for h in epochs if h["stage"] == stage]
        xs = list(range(x, x + len(rows)))
        label = "/".join(str(d) for d in rows[0].get("dims", [])) + " d"
        ax1.plot(xs, [h["val_score"] for h in rows], marker="o", label=label)
        ax2.plot(xs, [h["loss_rank"] for h in rows], marker="o", label=label)
        x += len(rows)
    ax1.set(xlabel="epoch", ylabel="hold-out nDCG@10", title="validation (train-query hold-out)")
    ax2.set(xlabel="epoch", ylabel="rank loss (last step)", title="training loss")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_training_run(uri: str, train_section: dict, history: list[dict], compressor_dir: Path,
                     run_name: str, experiment: str = "smec-train",
                     extra_params: dict[str, str] | None = None) -> str:
    """Log a finished training run (``history`` as written to the checkpoint); its run id."""
    run = RunLogger(uri, experiment, run_name,
                    flat_params(train_section, "train.") | (extra_params or {}))
    run.log_history(history)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Checkpoint(Path(tmp))
        checkpoint.write(None, history)
        run.log_artifact(checkpoint.history)
        if plot_history(history, Path(tmp) / "training_curves.png"):
            run.log_artifact(Path(tmp) / "training_curves.png")
    run.log_artifact(compressor_dir, "compressor")
    run.end()
    return run.run_id


def log_results(uri: str, run_id: str, folder: RunFolder) -> None:
    """Attach the run folder's results, their table and plot to an MLflow run, and its test
    scores."""
    run = RunLogger(uri, "", "", {}, run_id=run_id)
    results_path = folder.results
    if results_path.is_file():
        rows = json.loads(results_path.read_text())["rows"]
        run.log_metrics({f"{'holdout' if r.get('split') == 'holdout' else 'test'}_ndcg_at_10."
                         f"{r['method']}.d{r['dims']}": r["ndcg_at_10"]
                         for r in rows if r["precision"] == "float32" and not r.get("rescore")},
                        0)
    for path in (folder.results, folder.results_table, folder.plot):
        run.log_artifact(path)
    run.end()
