"""Training step time on a device against the same run on the CPU of the same machine.

    python benchmarks/train_device.py --run runs/scifact-mini --out DIR [--devices cpu cuda]
        [--epochs 3] [--ray]

One SMEC run per device with SMEC's own defaults (``train.per_method.smec``) on the run
folder's cached embeddings and the BEIR folder's training qrels (default: the bundled
SciFact-mini, where `smec demo` put them), ``--epochs`` per stage. The steady-state step time
is the median of the epochs' ``step_time_s`` after each stage's first epoch (warm-up, CUDA
kernels loading); validation is not in it. ``--ray`` adds one `smec train` run through Ray
Train with one worker on the GPU (``train.use_gpu``; on the CPU when ``cuda`` is not among
``--devices``), timed end to end and by its steps.
Writes DIR/results.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from smec.config import TrainConfig
from smec.data import resolve_beir_dir
from smec.io import write_json
from smec.runfolder import RunFolder
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data

BUNDLED = Path(__file__).resolve().parents[1] / "smec" / "datasets" / "scifact-mini"


def steady_step_time(history: list[dict]) -> float:
    """The median step time over every epoch but each stage's first."""
    firsts = {h["stage"]: h["epoch"] for h in reversed(history)}
    rest = [h["step_time_s"] for h in history if h["epoch"] != firsts[h["stage"]]]
    return statistics.median(rest or [h["step_time_s"] for h in history])


def one_device(run: RunFolder, qrels, device: str, epochs: int) -> dict:
    # keys set here win over SMEC's own defaults (for_method fills only keys left at default)
    cfg = TrainConfig(max_epochs_per_stage=epochs, patience=epochs + 1).for_method("smec")
    emb = run.load_embeddings()
    start = time.perf_counter()
    data = prepare_data(emb.doc_ids, emb.doc_vecs, emb.query_ids, emb.query_vecs, qrels, cfg,
                        device)
    prepared = time.perf_counter() - start
    reporter = Reporter()
    train_method(data, cfg, "smec", reporter)
    steps = reporter.history[-1]["step"]
    return {"device": str(data.device), "prepare_s": round(prepared, 3),
            "seconds": round(time.perf_counter() - start, 2),
            "steady_step_time_s": steady_step_time(reporter.history),
            "epochs": len(reporter.history), "last_stage_steps": steps,
            "batch_queries": cfg.batch_queries,
            "last_epoch_holdout_ndcg_at_10": reporter.history[-1]["val_score"]}


def ray_arm(run_dir: Path, data_dir: Path, epochs: int, out: Path, gpu: bool) -> dict:
    """`smec train` with one Ray Train worker (on the GPU with ``gpu``), in a copy of the run's
    embeddings."""
    folder = out / "ray-run"
    config = out / "ray.yaml"
    config.write_text(f"train:\n  use_gpu: {str(gpu).lower()}\n  max_epochs_per_stage: {epochs}\n"
                      f"  patience: {epochs + 1}\n")
    if not (folder / "embeddings").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(run_dir / "embeddings"), str(folder)], check=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "smec.cli", "train", "--data-dir", str(data_dir),
                    "--out", str(folder), "--config", str(config)], check=True)
    history = json.loads((RunFolder(folder).compressor / "history.json").read_text())
    return {"seconds": round(time.perf_counter() - start, 2),
            "steady_step_time_s": steady_step_time(history), "epochs": len(history)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/scifact-mini"),
                        help="run folder with embeddings/ (default: runs/scifact-mini)")
    parser.add_argument("--data-dir", type=Path, default=BUNDLED,
                        help="BEIR folder with the training qrels (default: bundled)")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage")
    parser.add_argument("--ray", action="store_true", help="also one Ray Train run on the GPU")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run, qrels = RunFolder(args.run), resolve_beir_dir(args.data_dir).read_train_qrels()
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "devices": {}}
    for device in args.devices:
        results["devices"][device] = one_device(run, qrels, device, args.epochs)
        print(device, json.dumps(results["devices"][device]), flush=True)
    times = {d: r["steady_step_time_s"] for d, r in results["devices"].items()}
    if "cpu" in times and "cuda" in times:
        results["cuda_speedup_over_cpu"] = round(times["cpu"] / times["cuda"], 2)
    if args.ray:
        gpu = "cuda" in args.devices
        results["ray_train_gpu" if gpu else "ray_train_cpu"] = ray_arm(
            args.run, args.data_dir, args.epochs, args.out, gpu)
    write_json(args.out / "results.json", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
