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
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from smec.compressors import PCA
from smec.config import TrainConfig, updated
from smec.data import group_split, resolve_beir_dir
from smec.eval import exact_search, per_query_metrics
from smec.io import write_json
from smec.runfolder import RunFolder
from smec.store import read_embeddings
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data

LEVELS = [96, 48, 24]
STAGES = [192, 96, 48, 24]

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


def load_dataset(spec: str) -> dict:
    """``DATA_DIR:RUN_DIR[:TRAIN_SPLIT]`` -> embeddings, training qrels, two folds, the start."""
    data_dir, run, *split = spec.split(":")
    paths = resolve_beir_dir(data_dir, split[0] if split else "train")
    doc_ids, doc_vecs, meta = read_embeddings(RunFolder(run).corpus)
    query_ids, query_vecs, _ = read_embeddings(RunFolder(run).queries)
    qrels = paths.read_train_qrels()   # split-test: the training half only
    known = set(query_ids)
    qrels = {q: j for q, j in qrels.items() if q in known and any(g > 0 for g in j.values())}
    first, second = group_split(qrels, 0.5, salt="cv:0")
    folds = [{q: qrels[q] for q in first}, {q: qrels[q] for q in second}]
    start = PCA(doc_vecs.shape[1], LEVELS, centre=False).fit(doc_vecs)
    ds = {"name": paths.name, "model": meta.get("model"), "doc_ids": doc_ids,
          "doc_vecs": doc_vecs, "query_ids": query_ids, "query_vecs": query_vecs,
          "folds": folds}
    ds["start"] = {d: per_query_ndcg(ds, start.encode(doc_vecs, d),
                                     start.encode(query_vecs, d), qrels) for d in LEVELS}
    return ds


def per_query_ndcg(ds: dict, docs: np.ndarray, queries: np.ndarray, qrels: dict) -> dict:
    index = {q: i for i, q in enumerate(ds["query_ids"])}
    ids = sorted(qrels)
    run = exact_search(queries[[index[q] for q in ids]], ids, docs, ds["doc_ids"], k=10)
    return {q: round(m["ndcg_at_10"], 5) for q, m in per_query_metrics(run, qrels, 10, 10).items()}


def unit(job: tuple[str, str, dict, int]) -> dict:
    """Train ``method`` with ``setting`` on one fold of ``dataset``; score the other fold."""
    import torch
    torch.set_num_threads(1)
    method, name, setting, fold = job
    ds = DATASETS[name]
    train_qrels, scored = ds["folds"][1 - fold], ds["folds"][fold]
    cfg = updated(TrainConfig(), stages=STAGES, **setting)
    started = time.perf_counter()
    data = prepare_data(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"], ds["query_vecs"],
                        train_qrels, cfg)   # early stopping: a grouped hold-out of this fold
    reporter = Reporter()
    compressor = train_method(data, cfg, method, reporter)
    ndcg = {d: per_query_ndcg(ds, compressor.encode(ds["doc_vecs"], d),
                              compressor.encode(ds["query_vecs"], d), scored) for d in LEVELS}
    return {"method": method, "setting": setting, "dataset": name, "fold": fold,
            "ndcg": {str(d): v for d, v in ndcg.items()},
            "epochs": len(reporter.history), "seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------- scoring and the pick
def gains(records: list[dict], ds: dict) -> np.ndarray:
    """[queries, levels] per-query gain over the start, both folds pooled."""
    rows = []
    for record in sorted(records, key=lambda r: r["fold"]):
        for q in sorted(record["ndcg"][str(LEVELS[0])]):
            rows.append([record["ndcg"][str(d)][q] - ds["start"][d][q] for d in LEVELS])
    return np.asarray(rows)


def score(per_dataset: dict[str, np.ndarray]) -> float:
    return float(np.mean([g.mean() for g in per_dataset.values()]))


def bootstrap_se(a: dict[str, np.ndarray], b: dict[str, np.ndarray], resamples: int = 1000,
                 seed: int = 0) -> float:
    """Standard error of score(a) − score(b), resampling queries within each dataset (paired:
    the same queries for both settings)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        per = []
        for name in a:
            take = rng.integers(len(a[name]), size=len(a[name]))
            per.append(a[name][take].mean() - b[name][take].mean())
        diffs.append(np.mean(per))
    return float(np.std(diffs))


def pick(method: str, trials: list[dict], datasets: list[str]) -> dict:
    """Every complete trial scored; refused where it loses on a dataset; the simplest within one
    bootstrap SE of the best."""
    by_setting: dict[str, dict[str, list[dict]]] = {}
    for r in trials:
        if r["method"] == method:
            by_setting.setdefault(json.dumps(r["setting"], sort_keys=True), {}).setdefault(
                r["dataset"], []).append(r)
    table = []
    for key, per in by_setting.items():
        if set(per) != set(datasets) or any(len(v) != 2 for v in per.values()):
            continue   # unfinished
        g = {name: gains(per[name], DATASETS[name]) for name in datasets}
        table.append({"setting": json.loads(key), "gains": g, "score": score(g),
                      "per_dataset": {n: round(float(v.mean()), 4) for n, v in g.items()},
                      "per_level": {n: [round(float(x), 4) for x in v.mean(0)]
                                    for n, v in g.items()},
                      "epochs": {n: sum(r["epochs"] for r in per[n]) for n in datasets},
                      "seconds": round(sum(r["seconds"] for v in per.values() for r in v))})
    if not table:
        return {"method": method, "rows": []}
    allowed = [t for t in table if all(v >= 0 for v in t["per_dataset"].values())]
    best = max(allowed or table, key=lambda t: t["score"])
    for t in table:
        t["se_vs_best"] = 0.0 if t is best else bootstrap_se(best["gains"], t["gains"])
        t["refused"] = t not in allowed
    near = [t for t in allowed if best["score"] - t["score"] <= t["se_vs_best"]]
    chosen = min(near or [best], key=lambda t: (len(t["setting"]), -t["score"]))
    rows = [{k: v for k, v in t.items() if k != "gains"} | {"chosen": t is chosen,
                                                            "best": t is best}
            for t in sorted(table, key=lambda t: -t["score"])]
    return {"method": method, "chosen": chosen["setting"], "chosen_score": round(
        chosen["score"], 4), "best": best["setting"], "best_score": round(best["score"], 4),
        "rows": rows, "no_setting_beats_the_start_on_both": not allowed}


def report(out: Path, methods: list[str], trials: list[dict], args) -> dict:
    names = list(DATASETS)
    picks = {m: pick(m, trials, names) for m in methods}
    write_json(out / "selection.json", {
        "protocol": "grouped 2-fold CV on training queries; score = mean over datasets of the "
                    "per-query nDCG@10 gain over pca_uncentred at 96/48/24 d; refuse a loss on "
                    "either dataset; simplest within one paired-bootstrap SE of the best",
        "datasets": {n: {"scored_queries": sum(len(f) for f in DATASETS[n]["folds"])}
                     for n in names},
        "trials_per_method": args.trials, "test_qrels_read": 0, "where": args.where,
        "picks": picks})
    lines = []
    for m in methods:
        p = picks[m]
        lines += [f"### {m}", "", "| changes from current defaults | score | " +
                  " | ".join(f"{n} (96/48/24 d)" for n in names) + " | ± SE vs best | |",
                  "|---|---|" + "---|" * len(names) + "---|---|"]
        for r in p["rows"]:
            mark = ("**chosen**" + (" (no setting passes the refusal: the best is kept)"
                                    if r["refused"] else "")) if r["chosen"] \
                else ("refused" if r["refused"] else "")
            lines.append(f"| {r['setting'] or 'current defaults'} | {r['score']:+.4f} | " +
                         " | ".join(f"{r['per_dataset'][n]:+.4f} ("
                                    + "/".join(f"{x:+.3f}" for x in r["per_level"][n]) + ")"
                                    for n in names) + f" | {r['se_vs_best']:.4f} | {mark} |")
        lines.append("")
    (out / "selection.md").write_text("\n".join(lines))
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
