"""Choose each method's training defaults on training queries only: grouped 2-fold
cross-validation on two datasets, scored by the gain over the untrained start (issue 21).

Development data: SciFact's training queries and the training half of ArguAna under
``split-test``; ArguAna's scored half and every test split stay unread (``test_qrels_read: 0``).
Each dataset's training queries are cut into two folds of whole groups (queries sharing a
positive stay together). A trial trains on one fold, early-stops on a grouped hold-out *inside*
that fold, and scores the other fold, then the other way round, so every training query is
scored once (SciFact 809, ArguAna ~700) by a model that never saw it or its group.

A setting's score is its per-query gain in nDCG@10 over the untrained start — the principal
axes without centring (``pca_uncentred``), where the ``pca_residual`` adapter starts — at 96, 48
and 24 d, averaged over the levels and then over the two datasets with equal weight. A setting
that loses to the start on either dataset is refused. The pick is the simplest setting (fewest
changes from the method's current defaults) whose score is within one paired-bootstrap standard
error (over queries, 1,000 resamples) of the best.

Every method gets the same protocol and the same number of trials: its current defaults, then
random draws from its space (:data:`SPACES`). Each (trial, dataset, fold) unit is appended to
OUT/trials.jsonl as it finishes, so an interrupted run continues where it stopped.

    python benchmarks/defaults_selection_v2.py \\
        --dataset ../shared/data/scifact:runs/scifact \\
        --dataset ../shared/data/arguana:runs/arguana:split-test \\
        --methods smec mrl search_adaptor matryoshka_adaptor --trials 6 --workers 2 \\
        --out benchmarks/results/defaults-selection-v2
"""
from __future__ import annotations

import argparse
import json
import math
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from smec.config import TrainConfig, updated
from smec.io import write_json
from smec.selection import LEVELS, STAGES, load_dataset, pick, run_unit, selection_table

__all__ = ["LEVELS", "STAGES", "load_dataset"]   # the other benchmarks' development data

#: What each method's search draws from: (kind, values); "log" draws log-uniformly in [lo, hi].
SPACES: dict[str, dict[str, tuple]] = {
    "smec": {"alpha": ("log", 1e-3, 1.0), "lr": ("log", 1e-4, 3e-3),
             "max_epochs_per_stage": ("choice", 5, 10, 15),
             "unsup_loss": ("choice", "preserve", "smooth", "distill"),
             "alpha_mode": ("choice", "weight", "share"),
             "sxbm_teacher": ("choice", "raw", "previous"),
             "sxbm_batch": ("choice", "corpus", "candidates"),
             "full_dim_stage": ("choice", True, False), "patience": ("choice", 4, 8)},
    "mrl": {"lr": ("log", 1e-4, 3e-3), "max_epochs_per_stage": ("choice", 5, 10, 15),
            "rank_scale": ("choice", 10.0, 20.0, 40.0), "full_dim_stage": ("choice", True, False),
            "patience": ("choice", 4, 8)},
    "search_adaptor": {"lr": ("log", 1e-4, 3e-3), "max_epochs_per_stage": ("choice", 5, 10, 15),
                       "rank_scale": ("choice", 10.0, 20.0, 40.0), "patience": ("choice", 4, 8)},
    "matryoshka_adaptor": {"alpha": ("log", 1e-3, 1.0), "lr": ("log", 1e-4, 3e-3),
                           "max_epochs_per_stage": ("choice", 5, 10, 15),
                           "full_dim_stage": ("choice", True, False),
                           "patience": ("choice", 4, 8)},
}


def draw(space: dict[str, tuple], rng: np.random.Generator) -> dict:
    setting = {}
    for key, (kind, *values) in space.items():
        if kind == "log":
            lo, hi = values
            setting[key] = float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.2g}")
        else:
            setting[key] = values[int(rng.integers(len(values)))]
    return setting


def settings_of(method: str, trials: int, seed: int = 0) -> list[dict]:
    """The method's current defaults (as an empty change), then ``trials - 1`` random draws."""
    rng = np.random.default_rng([seed, sum(map(ord, method))])
    defaults = TrainConfig().model_dump()
    out = [{}]
    while len(out) < trials:
        drawn = {k: v for k, v in draw(SPACES[method], rng).items() if defaults[k] != v}
        if drawn not in out:
            out.append(drawn)
    return out


# ---------------------------------------------------------------- data (loaded once, forked)
DATASETS: dict[str, dict] = {}


def unit(job: tuple[str, str, dict, int]) -> dict:
    """Train ``method`` with ``setting`` on one fold of ``dataset``; score the other fold."""
    import torch
    torch.set_num_threads(1)
    method, name, setting, fold = job
    cfg = updated(TrainConfig(), stages=STAGES, **setting)
    return {"method": method, "setting": setting} | run_unit(DATASETS[name], method, cfg, fold)


def report(out: Path, methods: list[str], trials: list[dict], args) -> dict:
    names = list(DATASETS)
    picks = {m: pick(m, trials, DATASETS) for m in methods}
    write_json(out / "selection.json", {
        "protocol": "grouped 2-fold CV on training queries; score = mean over datasets of the "
                    "per-query nDCG@10 gain over pca_uncentred at 96/48/24 d; refuse a loss on "
                    "either dataset; simplest within one paired-bootstrap SE of the best",
        "datasets": {n: {"scored_queries": sum(len(f) for f in DATASETS[n]["folds"])}
                     for n in names},
        "trials_per_method": args.trials, "test_qrels_read": 0, "where": args.where,
        "picks": picks})
    (out / "selection.md").write_text(selection_table(picks, names))
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", required=True,
                        help="DATA_DIR:RUN_DIR[:TRAIN_SPLIT] (repeat); RUN_DIR holds embeddings")
    parser.add_argument("--methods", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--trials", type=int, default=6,
                        help="settings per method: its current defaults + random draws")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument("--where", default="2-core CPU box", help="recorded in selection.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.dataset:
        ds = load_dataset(spec)
        DATASETS[ds["name"]] = ds
        print(f"{ds['name']}: folds of {[len(f) for f in ds['folds']]} training queries; "
              f"start (pca_uncentred) " + " ".join(
                  f"{d} d {np.mean(list(ds['start'][d].values())):.4f}" for d in LEVELS),
              flush=True)
    log = args.out / "trials.jsonl"
    trials = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    done = {(r["method"], json.dumps(r["setting"], sort_keys=True), r["dataset"], r["fold"])
            for r in trials}
    jobs = [(m, name, s, fold) for m in args.methods for s in settings_of(m, args.trials)
            for name in DATASETS for fold in (0, 1)
            if (m, json.dumps(s, sort_keys=True), name, fold) not in done]
    if jobs and not args.report_only:
        print(f"{len(jobs)} units to run ({len(done)} done) on {args.workers} workers",
              flush=True)
        with get_context("fork").Pool(args.workers) as pool, log.open("a") as handle:
            for n, record in enumerate(pool.imap_unordered(unit, jobs), 1):
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                trials.append(record)
                print(f"[{n}/{len(jobs)}] {record['method']} {record['setting']} "
                      f"{record['dataset']} fold {record['fold']}: {record['epochs']} epochs, "
                      f"{record['seconds']} s", flush=True)
    picks = report(args.out, args.methods, trials, args)
    for m, p in picks.items():
        if p.get("rows"):
            print(f"{m}: chosen {p['chosen'] or 'current defaults'} ({p['chosen_score']:+.4f}); "
                  f"best {p['best'] or 'current defaults'} ({p['best_score']:+.4f})")


if __name__ == "__main__":
    main()
