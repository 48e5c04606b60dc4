"""SMEC training as a Ray Train job.

:func:`train_func` is the per-worker loop: it reads the embedding store, builds the training
data on the worker's device (its GPU with ``train.use_gpu``) and runs
:func:`smec.training.engine.train_method`, reporting metrics every epoch and a checkpoint at
the end of every stage and, with ``train.checkpoint_every_steps: K``, every K steps inside a
stage (the finished stages, the training history, and the stage in progress: weights,
optimiser, RNG, position, S-XBM memory), through a :class:`RayTrainReporter`. It runs alone
too (``train_func(config, FolderReporter(run))``) for debugging. :func:`run_train` wraps it in
a ``TorchTrainer`` with
``FailureConfig(max_failures=train.max_failures)`` — a dead worker restarts the group from the
last checkpoint — resumes from the last checkpoint of the run folder with ``resume``, shares
one S-XBM Ray actor between the workers with ``train.memory_backend: actor``, and logs the
run to MLflow.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import torch

from smec import console
from smec.compressors import AdapterCompressor, load_compressor
from smec.config import Config, TrainConfig, check_stages, updated
from smec.data import BeirPaths
from smec.errors import SmecError
from smec.runfolder import Checkpoint, RunFolder
from smec.store import read_embeddings
from smec.teacher import teacher_dim
from smec.training.engine import Reporter, train_method


class FolderReporter(Reporter):
    """A plain process: every finished stage saved to the run folder's ``compressor/`` with
    the history, every epoch's metrics printed as one JSON line."""

    def __init__(self, run: RunFolder) -> None:
        super().__init__()
        self.run = run

    def log(self, metrics: dict) -> None:
        super().log(metrics)
        print(json.dumps(metrics), flush=True)

    def stage_done(self, compressor: AdapterCompressor) -> None:
        compressor.save(self.run.compressor)
        self.run.history.write_text(json.dumps(self.history))


class RayTrainReporter(Reporter):
    """A Ray Train worker: metrics to ``ray.train.report`` every epoch (and, on rank 0, to the
    ``progress`` file the driver follows), a checkpoint at every finished stage and every
    ``checkpoint_every_steps`` steps. Only rank 0 writes a checkpoint; every rank reports."""

    def __init__(self, rank: int, every_steps: int, progress: str | None,
                 finished: AdapterCompressor | None = None, history: list | None = None
                 ) -> None:
        super().__init__()
        self.history = history or []
        self.rank, self.every_steps, self.progress = rank, every_steps, progress
        self.finished = finished

    def log(self, metrics: dict) -> None:
        import ray.train
        super().log(metrics)
        ray.train.report(metrics)
        if self.rank == 0 and self.progress:
            with open(self.progress, "a") as handle:
                handle.write(json.dumps(metrics) + "\n")

    def step_done(self, step: int, snapshot) -> None:
        if self.every_steps and step % self.every_steps == 0:
            self._checkpoint({"checkpoint_step": step}, snapshot() if self.rank == 0 else None)

    def stage_done(self, compressor: AdapterCompressor) -> None:
        self.finished = compressor
        self._checkpoint({"stage_done": compressor.stages[-1].dim}, None)

    def _checkpoint(self, metrics: dict, partial: dict | None) -> None:
        import ray.train
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                Checkpoint(Path(tmp)).write(self.finished, self.history, partial)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def train_func(config: dict, reporter: Reporter | None = None) -> None:
    """One worker's training loop; ``config`` = {"train", "inputs" (a
    :class:`~smec.pipelines.supervision.TrainingInputs`, resolved once on the driver), and for
    Ray Train "progress" (the file the driver follows), optional "memory_actor" (a
    :class:`MemoryActor` handle)}.

    Without ``reporter`` it runs as a Ray Train worker (resuming from the run's last
    checkpoint); ``train_func(config, FolderReporter(run))`` runs it alone, for debugging."""
    from smec.pipelines.supervision import training_data
    cfg = TrainConfig(**config["train"])
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    device = torch.device("cpu")
    if cfg.use_gpu and reporter is None:   # the GPU Ray Train gave this worker
        import ray.train.torch
        device = ray.train.torch.get_device()
    elif cfg.use_gpu and torch.cuda.is_available():
        device = torch.device("cuda")
    data = training_data(config["inputs"], cfg, device)
    resume, partial, memory = None, None, None
    if reporter is None:
        import ray.train
        history: list = []
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                resume, history, partial = Checkpoint(Path(ckpt_dir)).read()
        if config.get("memory_actor") is not None:
            from smec.pipelines.memory_actor import ActorMemory
            memory = ActorMemory(config["memory_actor"])
        reporter = RayTrainReporter(ray.train.get_context().get_world_rank(),
                                    cfg.checkpoint_every_steps, config.get("progress"),
                                    resume, history)
    train_method(data, cfg, cfg.method, reporter, resume=resume, memory=memory,
                 resume_partial=partial)


METRIC_NAMES = {"ndcg_at_10": "nDCG@10", "recall_at_10": "neighbour recall@10"}


class TrainingProgress:
    """Training progress from the metrics each epoch reports: one line per finished stage
    (its epochs, best epoch, hold-out score, and an upper bound on the time left: every method
    has ``budget`` epochs, early stopping only shortens it); on a terminal (``live``) the
    current epoch too, rewritten in place."""

    def __init__(self, budget: int, echo, live: TextIO | None = None) -> None:
        self.budget, self.echo, self.live = budget, echo, live
        self.epochs, self.start, self.last = 0, time.perf_counter(), None

    def __call__(self, line: str) -> None:
        metrics = json.loads(line)
        if "epoch" not in metrics:
            return
        if self.last is not None and metrics["stage"] != self.last["stage"]:
            self._stage_done()
        self.epochs += 1
        self.last = metrics
        if self.live is not None:
            self.live.write(f"\r\033[K      {self._describe(metrics)} epoch "
                            f"{metrics['epoch'] + 1}: {self._score(metrics)}; {self._left()}")
            self.live.flush()

    def close(self) -> None:
        if self.last is not None:
            self._stage_done()

    def _stage_done(self) -> None:
        if self.live is not None:
            self.live.write("\r\033[K")
        m = self.last
        self.echo(f"      {self._describe(m)}: {m['epoch'] + 1} epochs, best "
                  f"{m['best_epoch'] + 1 if m['best_epoch'] >= 0 else 'the start'}, "
                  f"{self._score(m)}; {self._left()}")

    def _describe(self, m: dict) -> str:
        return f"stage {m['stage'] + 1} ({'/'.join(str(d) for d in m['dims'])} d)"

    def _score(self, m: dict) -> str:
        name = METRIC_NAMES.get(m.get("val_metric", "ndcg_at_10"), "score")
        return f"hold-out {name} {m['val_score']:.4f}"

    def _left(self) -> str:
        left = (time.perf_counter() - self.start) / self.epochs \
            * max(0, self.budget - self.epochs)
        return f"at most ~{left:.0f} s left" if left < 90 else f"at most ~{left / 60:.0f} min left"


@contextmanager
def follow(path: Path, on_line) -> Iterator[None]:
    """Call ``on_line`` for every complete line appended to ``path`` while the block runs
    (a thread polls twice a second, and reads the rest once the block is done)."""
    stop = threading.Event()

    def run() -> None:
        offset = 0
        while True:
            done = stop.is_set()
            if path.is_file():
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                complete = chunk[:chunk.rfind(b"\n") + 1]
                offset += len(complete)
                for line in complete.decode().splitlines():
                    on_line(line)
            if done:
                return
            stop.wait(0.5)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_train(paths: BeirPaths | None, run: RunFolder, cfg: Config, resume: bool = False,
              mlflow_uri: str | None = None, track: bool = True,
              store: Path | None = None, echo=console.echo,
              live: TextIO | None = None) -> dict:
    """Train with ``TorchTrainer`` and write ``run.compressor`` (atomically).

    Ray Train resumes a run that has the same name and storage path from its last checkpoint;
    unless ``resume`` is set, the previous run's folder is cleared so a changed config starts
    over. With ``track``, the run is logged to MLflow (``mlflow_uri``, default
    ``sqlite:///<run>/mlflow.db``); the returned dict has its ``mlflow_run_id``.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from smec.pipelines.runtime import init_ray, root_cause
    from smec.pipelines.supervision import label_free_notice, training_inputs
    corpus = (store or run.corpus).resolve()
    _, _, meta = read_embeddings(corpus)   # fails early, in one line, if missing
    check_stages(cfg.train, int(meta["dim"]))
    init_ray()
    inputs = training_inputs(paths, run, cfg, corpus)   # qrels read, pseudo queries embedded
    # the method's own defaults, once the supervision is known
    cfg = cfg.model_copy(update={"train": cfg.train.for_method(cfg.train.method,
                                                                inputs.supervision)})
    # a store alone: its dataset, or the file `smec embed --corpus` read
    dataset = paths.name if paths is not None \
        else meta.get("dataset") or Path(meta.get("input", corpus)).stem
    notice = label_free_notice(cfg.train, paths, inputs.supervision)
    if notice:
        echo(notice)
    start = time.perf_counter()
    storage = run.ray_train.resolve()
    if not resume:
        shutil.rmtree(storage, ignore_errors=True)
    actor = None
    if cfg.train.memory_backend == "actor":
        from smec.pipelines.memory_actor import MemoryActor
        dim = int(meta["dim"]) if inputs.teacher is None \
            else teacher_dim(inputs.teacher, list(inputs.teacher_models))
        actor = MemoryActor.remote(cfg.train.memory_size, dim)
    progress = run.train_progress
    progress.unlink(missing_ok=True)
    # the resolved supervision written in: `unsup_loss: auto` reads it in every worker
    loop_config = {"train": updated(cfg.train, supervision=inputs.supervision).model_dump(),
                   "inputs": inputs, "progress": str(progress.resolve()),
                   "memory_actor": actor}
    trainer = TorchTrainer(
        train_func, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers,
                                     use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        run_config=RunConfig(name="smec", storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures)))
    budget = cfg.train.max_epochs_per_stage * len(cfg.train.stage_dims(int(meta["dim"])))
    shown = TrainingProgress(budget, echo, live)
    try:
        with follow(progress, shown):
            result = trainer.fit()
        shown.close()
    except Exception as exc:
        raise SmecError(f"training failed: {root_cause(exc)}") from None
    finally:
        if actor is not None:
            ray.kill(actor)
    if result.checkpoint is None:
        raise SmecError("training finished without a checkpoint; no stage completed")
    with result.checkpoint.as_directory() as ckpt_dir:
        compressor, history, _ = Checkpoint(Path(ckpt_dir)).read()
        compressor.trained_on = {"dataset": dataset, "supervision": inputs.supervision,
                                 **({} if inputs.teacher is None
                                    else {"teacher": cfg.train.teacher})}
        compressor.save(run.compressor)
        run.history.write_text(json.dumps(history))
    seconds = round(time.perf_counter() - start, 2)
    summary = {"stages": [s.dim for s in compressor.stages], "seconds": seconds,
               "supervision": inputs.supervision}
    if track:
        from smec.pipelines.tracking import log_training_run, tracking_uri
        summary["mlflow_uri"] = tracking_uri(run, mlflow_uri)
        summary["mlflow_run_id"] = log_training_run(
            summary["mlflow_uri"], cfg.train.model_dump(), history, run.compressor,
            run_name=f"{dataset}-{cfg.train.method}",
            extra_params={"dataset": dataset, "model": str(meta.get("model", "?")),
                          "supervision": inputs.supervision, "train_seconds": str(seconds)})
    return summary


def load_trained(run: RunFolder) -> AdapterCompressor:
    compressor = load_compressor(run.compressor)
    if not isinstance(compressor, AdapterCompressor):
        raise SmecError(f"{run.compressor}: expected a trained adapter compressor, got "
                        f"{compressor.kind}")
    return compressor
