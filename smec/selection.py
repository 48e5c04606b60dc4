"""Choosing training settings on training queries only: grouped 2-fold cross-validation on
several datasets, scored by the gain over the untrained start (issue 21).

Development data is each dataset's *training* queries (under ``split-test``, the training
half; the scored half and every test file stay unread). They are cut into two folds of whole
groups (queries sharing a positive stay together). A unit trains on one fold, early-stops on a
grouped hold-out *inside* that fold, and scores the other fold, so every training query is
scored once by a model that never saw it or its group.

A setting's score is its per-query gain in nDCG@10 over the untrained start (the principal
axes without centring, ``pca_uncentred``, where the ``pca_residual`` adapter starts) at the
scored levels, averaged over the levels and then over the datasets with equal weight. A
setting that loses to the start on any dataset is refused. The pick is the simplest setting
(fewest changes from the method's defaults) within one paired-bootstrap standard error (over
queries) of the best.

Used by ``smec tune --cv`` (Ray Tune, one trial per setting) and by
``benchmarks/defaults_selection_v2.py`` (a process pool).
"""
from __future__ import annotations

import json
import time

import numpy as np

from smec.compressors import PCA
from smec.config import TrainConfig
from smec.data import group_split, resolve_beir_dir
from smec.errors import SmecError
from smec.eval import exact_search, per_query_metrics
from smec.runfolder import RunFolder
from smec.store import read_embeddings
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data

#: the levels a setting is scored at, and the stages that train them
LEVELS = [96, 48, 24]
STAGES = [192, 96, 48, 24]
FOLDS = (0, 1)


def load_dataset(spec: str) -> dict:
    """``DATA_DIR:RUN_DIR[:TRAIN_SPLIT]`` -> its embeddings (``RUN_DIR/embeddings``), training
    qrels cut into two grouped folds, and the start's per-query nDCG@10 at each level."""
    data_dir, run, *split = spec.split(":")
    if not data_dir or not run:
        raise SmecError(f"--cv {spec}: give DATA_DIR:RUN_DIR[:TRAIN_SPLIT], the run folder "
                        "holding that dataset's embeddings (`smec embed`)")
    paths = resolve_beir_dir(data_dir, split[0] if split else "train")
    folder = RunFolder(run)
    if not folder.corpus.exists() or not folder.queries.exists():
        raise SmecError(f"--cv {spec}: {folder.root} has no embeddings; run `smec embed "
                        f"--data-dir {data_dir} --out {run}` first")
    doc_ids, doc_vecs, meta = read_embeddings(folder.corpus)
    query_ids, query_vecs, _ = read_embeddings(folder.queries)
    qrels = paths.read_train_qrels()   # split-test: the training half only
    known = set(query_ids)
    qrels = {q: j for q, j in qrels.items() if q in known and any(g > 0 for g in j.values())}
    first, second = group_split(qrels, 0.5, salt="cv:0")
    folds = [{q: qrels[q] for q in first}, {q: qrels[q] for q in second}]
    if not all(folds):
        raise SmecError(f"--cv {spec}: {len(qrels)} training queries with a positive cannot "
                        "be cut into two folds")
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


def run_unit(ds: dict, method: str, cfg: TrainConfig, fold: int) -> dict:
    """Train ``method`` with ``cfg`` on the other fold of ``ds``; score ``fold``, per query."""
    train_qrels, scored = ds["folds"][1 - fold], ds["folds"][fold]
    started = time.perf_counter()
    data = prepare_data(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"], ds["query_vecs"],
                        train_qrels, cfg)   # early stopping: a grouped hold-out of this fold
    reporter = Reporter()
    compressor = train_method(data, cfg, method, reporter)
    ndcg = {d: per_query_ndcg(ds, compressor.encode(ds["doc_vecs"], d),
                              compressor.encode(ds["query_vecs"], d), scored) for d in LEVELS}
    return {"dataset": ds["name"], "fold": fold, "ndcg": {str(d): v for d, v in ndcg.items()},
            "epochs": len(reporter.history), "seconds": round(time.perf_counter() - started, 1)}


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
        for name, ours in a.items():
            take = rng.integers(len(ours), size=len(ours))
            per.append(ours[take].mean() - b[name][take].mean())
        diffs.append(np.mean(per))
    return float(np.std(diffs))


def pick(method: str, units: list[dict], datasets: dict[str, dict]) -> dict:
    """Every setting with all its units scored; refused where it loses on a dataset; the
    simplest within one bootstrap SE of the best. ``units``: records of :func:`run_unit`
    with ``method`` and ``setting`` (the changes from the method's defaults) added."""
    by_setting: dict[str, dict[str, dict[int, dict]]] = {}
    for r in units:   # a setting drawn twice (a choice space) scores each unit once: the first
        if r["method"] == method:
            by_setting.setdefault(json.dumps(r["setting"], sort_keys=True), {}).setdefault(
                r["dataset"], {}).setdefault(r["fold"], r)
    table = []
    for key, by_fold in by_setting.items():
        if set(by_fold) != set(datasets) or any(set(v) != set(FOLDS) for v in by_fold.values()):
            continue   # unfinished
        per = {name: list(v.values()) for name, v in by_fold.items()}
        g = {name: gains(per[name], datasets[name]) for name in datasets}
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


def selection_table(picks: dict[str, dict], names: list[str]) -> str:
    """Markdown: one table per method, its settings by score, the chosen one marked."""
    lines = []
    for m, p in picks.items():
        lines += [f"### {m}", "", "| changes from current defaults | score | " +
                  " | ".join(f"{n} (" + "/".join(map(str, LEVELS)) + " d)" for n in names) +
                  " | ± SE vs best | |", "|---|---|" + "---|" * len(names) + "---|---|"]
        for r in p["rows"]:
            mark = ("**chosen**" + (" (no setting passes the refusal: the best is kept)"
                                    if r["refused"] else "")) if r["chosen"] \
                else ("refused" if r["refused"] else "")
            lines.append(f"| {r['setting'] or 'current defaults'} | {r['score']:+.4f} | " +
                         " | ".join(f"{r['per_dataset'][n]:+.4f} ("
                                    + "/".join(f"{x:+.3f}" for x in r["per_level"][n]) + ")"
                                    for n in names) + f" | {r['se_vs_best']:.4f} | {mark} |")
        lines.append("")
    return "\n".join(lines)
