"""Choose the label-free training settings on hold-outs of *training* queries (never test).

Trains SMEC label-free (``supervision: none`` and ``pseudo``, with the model itself or the
concatenation as teacher) under a few settings on each dataset given, and scores every level on
the hold-out of its training queries that `smec bench compression` also uses
(``smec.training.prepare.holdout_qrels``; ArguAna: the hold-out of its split-test training
half), next to PCA and the uncentred-PCA start. The queries' labels are used only here, to
choose; the label-free runs never see them, and no test qrels are read. Appends one JSON line
per (setting, dataset) to OUT/results.jsonl (resumable: one already there is skipped) and
writes OUT/selection.md: each setting's mean gain over the untrained start across datasets,
and why each was kept or dropped.

    python benchmarks/label_free_selection.py --dataset ../shared/data/scifact:runs/scifact \
        --dataset ../shared/data/arguana:runs/arguana:split-test
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from smec.compare import baselines, compare
from smec.config import Config, TrainConfig
from smec.data import resolve_beir_dir
from smec.runfolder import RunFolder
from smec.training.engine import Reporter, train_method
from smec.training.prepare import holdout_qrels

SETTINGS = {
    "none/distill": {"supervision": "none", "unsup_loss": "distill"},
    "none/distill-prefix": {"supervision": "none", "unsup_loss": "distill",
                            "method": "smec-ads"},
    "pseudo/distill": {"supervision": "pseudo", "unsup_loss": "distill"},
    "none/distill+concat": {"supervision": "none", "unsup_loss": "distill",
                            "teacher": "concat"},
    "none/distill-prefix+concat": {"supervision": "none", "unsup_loss": "distill",
                                   "method": "smec-ads", "teacher": "concat"},
    "pseudo/distill+concat": {"supervision": "pseudo", "unsup_loss": "distill",
                              "teacher": "concat"},
}
UNTRAINED = ("pca", "pca_uncentred")


def run_dataset(spec: str, settings: list[str], dims: list[int], log: Path) -> None:
    from smec.pipelines.bench import bench_data
    from smec.pipelines.supervision import teacher_store

    from smec.teacher import read_teacher
    data_dir, run, *split = spec.split(":")
    paths = resolve_beir_dir(data_dir, split[0] if split else "train")
    run = RunFolder(run)
    embeddings = run.load_embeddings().as_tuple()
    doc_ids, doc_vecs, query_ids, query_vecs = embeddings
    done = {(e["setting"], e["dataset"]) for e in map(json.loads, log.open())} \
        if log.is_file() else set()
    holdout = holdout_qrels(paths.read_train_qrels(), doc_ids, query_ids, TrainConfig())
    for name in UNTRAINED:
        if (name, paths.name) not in done:
            rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout,
                           baselines(doc_vecs.shape[1], dims, doc_vecs, [name]))
            record(log, {"setting": name, "dataset": paths.name, "holdout_ndcg_at_10":
                         {r.dims: round(r.ndcg_at_10, 4) for r in rows}})
    for name in settings:
        if (name, paths.name) in done:
            continue
        update = dict(SETTINGS[name])
        method = update.pop("method", "smec")
        cfg = Config(train=TrainConfig(stages=dims, **update))
        found = teacher_store(paths, run, cfg)
        teacher = None if found is None else read_teacher(found[0], list(found[1]), doc_ids)
        data = bench_data(cfg.train.supervision, paths, run, cfg, cfg.train, embeddings, teacher)
        start = time.perf_counter()
        reporter = Reporter()
        compressor = train_method(data, cfg.train, method, reporter)
        history = reporter.history
        rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout, {method: compressor},
                       include_raw=False)
        stages = {str(h["dims"][0]): h for h in history}   # each stage's last epoch
        record(log, {"setting": name, "dataset": paths.name, "method": method,
                     "update": update, "seconds": round(time.perf_counter() - start, 1),
                     "best_epochs": {d: h["best_epoch"] for d, h in stages.items()},
                     "own_holdout_at_start": {d: round(h["val_start"], 4)
                                              for d, h in stages.items()},
                     "own_holdout_metric": history[-1]["val_metric"],
                     "holdout_ndcg_at_10": {r.dims: round(r.ndcg_at_10, 4) for r in rows}})


def record(log: Path, entry: dict) -> None:
    print(json.dumps(entry), flush=True)
    with log.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def summary(log: Path, dims: list[int]) -> list[str]:
    """Each setting's hold-out nDCG@10 and its mean gain over the uncentred-PCA start at the
    levels ≤ D/4, over the datasets that ran it; the pick is the largest mean gain."""
    entries = [json.loads(line) for line in log.open()]
    datasets = sorted({e["dataset"] for e in entries})
    start = {e["dataset"]: e["holdout_ndcg_at_10"] for e in entries
             if e["setting"] == "pca_uncentred"}
    small = [d for d in dims if d <= max(dims) // 2]
    lines = ["| setting | " + " | ".join(f"{ds} {d} d" for ds in datasets for d in small)
             + " | mean gain over the start | own hold-out at the start (384 d) |",
             "|---" * (len(datasets) * len(small) + 3) + "|"]
    gains = {}
    for name in dict.fromkeys(e["setting"] for e in entries):
        by = {e["dataset"]: e for e in entries if e["setting"] == name}
        cells, gain = [], []
        for ds in datasets:
            for d in small:
                score = by.get(ds, {}).get("holdout_ndcg_at_10", {}).get(str(d))
                cells.append("" if score is None else f"{score:.4f}")
                if score is not None and ds in start:
                    gain.append(score - start[ds][str(d)])
        complete = len(by) == len(datasets)
        gains[name] = float(np.mean(gain)) if gain and complete else float("nan")
        at_start = "; ".join(f"{ds} {e['own_holdout_at_start'].get(str(max(dims) * 2), '')}"
                             for ds, e in by.items() if "own_holdout_at_start" in e)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gains[name]:+.4f} | "
                     f"{at_start} |")
    trained = {k: v for k, v in gains.items() if k not in UNTRAINED and not np.isnan(v)}
    if trained:
        pick = max(trained, key=trained.get)
        lines += ["", (f"pick (largest mean gain over the uncentred-PCA start on every "
                       f"dataset's hold-out): **{pick}** ({trained[pick]:+.4f})")]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", action="append", required=True,
                        metavar="DATA_DIR:RUN[:split-test]",
                        help="a BEIR folder and the run folder with its embeddings "
                             "(and OUT/teacher for the concat teacher)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/"
                                                         "label-free-selection-v2"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS),
                        choices=list(SETTINGS))
    parser.add_argument("--dims", type=int, nargs="+", default=[192, 96, 48, 24])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    for spec in args.dataset:
        run_dataset(spec, args.settings, args.dims, log)
    lines = ["# Label-free selection v2 (hold-outs of training queries; test never read)", "",
             *summary(log, args.dims)]
    (args.out / "selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
