"""Ray Train: 1 vs 2 workers and a local vs a shared-actor S-XBM memory (issue 7).

For each (workers, memory backend, seed) this trains SMEC through `pipelines.train.run_train`
(a real ``TorchTrainer``) on a run folder's cached embeddings, evaluates it on test, and records
the mean step time (rank 0's steps; queries/s = global batch / step time), the training wall
time and nDCG@10 at every level. ``train.batch_queries`` and ``batch_unlabelled`` are global
batch sizes split over the workers, so N workers take the same number of steps with the same
expected gradient as one.

    python benchmarks/distributed.py --data-dir /work/shared/data/scifact \\
        --run /work/runs/scifact-minilm --out benchmarks/results/distributed-scifact-minilm \\
        --configs 1:local 1:actor 2:local 2:actor --seeds 0 1

Writes OUT/results.json (rows per run, plus mean ± std per config) and OUT/distributed.png.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from smec.pipelines.evaluate import run_evaluate
from smec.pipelines.train import run_train

from smec.config import load_config
from smec.data import resolve_beir_dir
from smec.runfolder import RunFolder


def run_one(paths, run: Path, cfg, workers: int, backend: str, seed: int) -> dict:
    cfg = cfg.model_copy(deep=True)
    cfg.train.num_workers, cfg.train.memory_backend, cfg.train.seed = workers, backend, seed
    with tempfile.TemporaryDirectory() as tmp:
        out = RunFolder(tmp)
        out.embeddings.symlink_to(RunFolder(run).embeddings, target_is_directory=True)
        start = time.perf_counter()
        summary = run_train(paths, out, cfg, track=False)
        wall = time.perf_counter() - start
        history = json.loads(out.history.read_text())
        results = run_evaluate(paths, out, cfg)
    epochs = [h for h in history if "step_time_s" in h]
    steps = sum(1 for _ in epochs)
    step_time = float(np.mean([h["step_time_s"] for h in epochs]))
    return {"workers": workers, "memory_backend": backend, "seed": seed,
            "step_time_s": round(step_time, 4),
            # batch_queries is the global batch, split over the workers
            "queries_per_s": round(cfg.train.batch_queries / step_time, 1),
            "epochs": steps, "train_seconds": round(summary["seconds"], 1),
            "wall_seconds": round(wall, 1),
            "ndcg_at_10": {str(r["dims"]): r["ndcg_at_10"] for r in results["rows"]
                           if r["method"] == cfg.train.method}}


def memory_call_times(size: int = 5000, dim: int = 384, batch: int = 256, k: int = 10,
                      calls: int = 200) -> dict:
    """Seconds per step spent in the memory: local ring buffer vs the shared actor (one
    ``exchange`` round trip: query + enqueue), on random unit vectors of the real shapes."""
    import ray
    import torch
    from smec.pipelines.memory_actor import ActorMemory
    from smec.pipelines.runtime import init_ray

    from smec.modules import SXBM
    init_ray()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=-1),
                torch.randint(0, 5183, (batch,), generator=gen)) for _ in range(20)]
    out = {"memory_size": size, "dim": dim, "batch_unlabelled": batch, "neighbours": k,
           "calls": calls}
    for name, memory in (("local", SXBM(size, dim)), ("actor", ActorMemory.create(size, dim))):
        for i in range(size // batch + 1):                    # fill it first
            memory.exchange(*batches[i % 20], k)
        start = time.perf_counter()
        for i in range(calls):
            memory.exchange(*batches[i % 20], k)
        out[f"{name}_s_per_call"] = round((time.perf_counter() - start) / calls, 5)
        if name == "actor":
            ray.kill(memory.actor)
    return out


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for key in sorted({(r["workers"], r["memory_backend"]) for r in rows}):
        group = [r for r in rows if (r["workers"], r["memory_backend"]) == key]
        dims = sorted({d for r in group for d in r["ndcg_at_10"]}, key=int, reverse=True)
        out.append({"workers": key[0], "memory_backend": key[1], "runs": len(group),
                    "step_time_s_mean": round(float(np.mean([r["step_time_s"] for r in group])),
                                              4),
                    "queries_per_s_mean": round(float(np.mean([r["queries_per_s"]
                                                               for r in group])), 1),
                    "ndcg_at_10_mean": {d: round(float(np.mean(
                        [r["ndcg_at_10"][d] for r in group])), 4) for d in dims},
                    "ndcg_at_10_std": {d: round(float(np.std(
                        [r["ndcg_at_10"][d] for r in group])), 4) for d in dims}})
    return out


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{s['workers']}w {s['memory_backend']}" for s in summary]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.bar(labels, [s["step_time_s_mean"] * 1000 for s in summary], color="tab:blue")
    ax1.set(ylabel="ms per step (rank 0)", title="step time")
    dims = list(summary[0]["ndcg_at_10_mean"])
    width = 0.8 / len(dims)
    for i, d in enumerate(dims):
        ax2.bar(np.arange(len(summary)) + i * width,
                [s["ndcg_at_10_mean"][d] for s in summary], width,
                yerr=[s["ndcg_at_10_std"][d] for s in summary], label=f"{d} d")
    ax2.set_xticks(np.arange(len(summary)) + 0.4 - width / 2, labels)
    ax2.set(ylabel="test nDCG@10", title="quality (mean ± std over seeds)",
            ylim=(min(min(s["ndcg_at_10_mean"].values()) for s in summary) - 0.05, None))
    ax2.legend(fontsize=8, ncol=len(dims))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--run", type=Path, required=True, help="run folder with embeddings/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--configs", nargs="+", default=["1:local", "1:actor", "2:local",
                                                           "2:actor"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--memory-calls", action="store_true",
                        help="also time one memory call: local ring buffer vs actor")
    args = parser.parse_args()
    cfg = load_config(args.config)
    paths = resolve_beir_dir(args.data_dir, cfg.data.train_split, cfg.data.test_split)
    args.out.mkdir(parents=True, exist_ok=True)
    result_path = args.out / "results.json"
    rows = json.loads(result_path.read_text())["runs"] if result_path.is_file() else []
    for spec in args.configs:
        workers, backend = spec.split(":")
        for seed in args.seeds:
            if any((r["workers"], r["memory_backend"], r["seed"]) == (int(workers), backend, seed)
                   for r in rows):
                continue
            row = run_one(paths, args.run, cfg, int(workers), backend, seed)
            print(json.dumps(row), flush=True)
            rows.append(row)
            summary = summarise(rows)
            result_path.write_text(json.dumps(
                {"dataset": paths.name, "split": "test", "config": str(args.config or "default"),
                 "runs": rows, "summary": summary}, indent=2))
    report = json.loads(result_path.read_text())
    if args.memory_calls:
        report["memory_call"] = memory_call_times()
        print(json.dumps(report["memory_call"]))
        result_path.write_text(json.dumps(report, indent=2))
    plot(summarise(rows), args.out / "distributed.png")
    for s in summarise(rows):
        print(json.dumps(s))


if __name__ == "__main__":
    main()
