"""SMEC training as a Ray Train job.

:func:`train_func` is the per-worker loop: it reads the embedding store, builds the training
data and runs :func:`smec.train.train_smec`, reporting metrics every epoch and a checkpoint
(the compressor so far) at the end of every stage. It runs alone too
(``train_func({... , "use_ray": False})``) for debugging; :func:`run_train` wraps it in a
``TorchTrainer`` and resumes from the last finished stage when the run folder already has one.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from smec.compressors import AdapterCompressor, load_compressor
from smec.config import Config, TrainConfig, check_stages
from smec.data import BeirPaths, load_qrels
from smec.errors import SmecError
from smec.store import read_embeddings
from smec.train import prepare_data, train_method


def train_func(config: dict) -> None:
    """One worker's training loop; ``config`` = {"train", "embeddings", "train_qrels",
    "use_ray", "out"}."""
    import torch

    cfg = TrainConfig(**config["train"])
    use_ray = config.get("use_ray", True)
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    emb = Path(config["embeddings"])
    doc_ids, doc_vecs, _ = read_embeddings(emb / "corpus")
    query_ids, query_vecs, _ = read_embeddings(emb / "queries")
    data = prepare_data(doc_ids, doc_vecs, query_ids, query_vecs,
                        load_qrels(config["train_qrels"]), cfg)
    history: list[dict] = []
    resume = None
    if use_ray:
        import ray.train
        rank = ray.train.get_context().get_world_rank()
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                resume = load_compressor(Path(ckpt_dir) / "compressor")
                history = json.loads((Path(ckpt_dir) / "history.json").read_text())
    else:
        rank = 0

    def log(metrics: dict) -> None:
        history.append(metrics)
        if use_ray:
            import ray.train
            ray.train.report(metrics)
        elif rank == 0:
            print(json.dumps(metrics), flush=True)

    def on_stage_end(compressor: AdapterCompressor) -> None:
        if not use_ray:
            compressor.save(Path(config["out"]) / "compressor")
            return
        import ray.train
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:   # only rank 0 writes; every rank reports
                compressor.save(Path(tmp) / "compressor")
                (Path(tmp) / "history.json").write_text(json.dumps(history))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"stage_done": compressor.stages[-1].dim}, checkpoint=ckpt)

    train_method(data, cfg, cfg.method, log=log, on_stage_end=on_stage_end, resume=resume)


def run_train(paths: BeirPaths, out: Path, cfg: Config, resume: bool = False) -> dict:
    """Train with ``TorchTrainer`` and write ``out/compressor`` (atomically).

    Ray Train resumes a run that has the same name and storage path from its last checkpoint;
    unless ``resume`` is set, the previous run's folder is cleared so a changed config starts
    over.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.runtime import init_ray, root_cause

    emb = out / "embeddings"
    _, _, meta = read_embeddings(emb / "corpus")   # fails early, in one line, if missing
    check_stages(cfg.train, int(meta["dim"]))
    load_qrels(paths.train_qrels)
    init_ray()
    start = time.perf_counter()
    storage = (out / "ray_train").resolve()
    if not resume:
        shutil.rmtree(storage, ignore_errors=True)
    loop_config = {"train": cfg.train.model_dump(), "embeddings": str(emb.resolve()),
                   "train_qrels": str(paths.train_qrels), "use_ray": True}
    trainer = TorchTrainer(
        train_func, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers,
                                     use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        run_config=RunConfig(name="smec", storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=1)))
    try:
        result = trainer.fit()
    except Exception as exc:
        raise SmecError(f"training failed: {root_cause(exc)}") from None
    if result.checkpoint is None:
        raise SmecError("training finished without a checkpoint; no stage completed")
    with result.checkpoint.as_directory() as ckpt_dir:
        compressor = load_compressor(Path(ckpt_dir) / "compressor")
        compressor.save(out / "compressor")
        shutil.copy(Path(ckpt_dir) / "history.json", out / "compressor" / "history.json")
    return {"stages": [s.dim for s in compressor.stages],
            "seconds": round(time.perf_counter() - start, 2)}


def load_trained(out: Path) -> AdapterCompressor:
    compressor = load_compressor(out / "compressor")
    if not isinstance(compressor, AdapterCompressor):
        raise SmecError(f"{out / 'compressor'}: expected a trained adapter compressor, got "
                        f"{compressor.kind}")
    return compressor
