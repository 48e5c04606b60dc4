"""Evaluate raw, truncation, PCA and SMEC at every level; write results.json, table and plot."""
from __future__ import annotations

import json
import time
from pathlib import Path

from smec.pipelines.train import load_trained

from smec.compare import (
    baselines,
    compare,
    holdout_rows,
    precisions_of,
    recipe_check,
    recipe_summary,
)
from smec.config import Config
from smec.data import BeirPaths
from smec.errors import SmecError
from smec.io import atomic_path, write_json
from smec.report import markdown_table, plot_ndcg_vs_bytes
from smec.results import read_results, write_results
from smec.store import read_embeddings
from smec.train import holdout_qrels, stage_dims

TIMINGS = "timings.json"


def record_timing(out: Path, phase: str, seconds: float) -> dict:
    """Keep each phase's wall time in ``out/timings.json`` so results.json can report all."""
    path = out / TIMINGS
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[phase] = round(seconds, 2)
    write_json(path, timings)
    return timings


def run_evaluate(paths: BeirPaths, out: Path, cfg: Config) -> dict:
    start = time.perf_counter()
    emb = out / "embeddings"
    doc_ids, doc_vecs, meta = read_embeddings(emb / "corpus")
    query_ids, query_vecs, _ = read_embeddings(emb / "queries")
    qrels = paths.read_test_qrels()
    missing = [q for q in qrels if q not in set(query_ids)]
    if missing:
        raise SmecError(f"{paths.test_qrels}: query '{missing[0]}' has no embedding in {emb}; "
                        "re-run `smec embed` on this data folder")
    input_dim = doc_vecs.shape[1]
    methods = cfg.eval.methods
    trained = load_trained(out) if "trained" in methods else None
    dims = [d for d in (trained.dims if trained else stage_dims(cfg.train, input_dim))
            if d < input_dim]
    recipes = baselines(input_dim, dims, doc_vecs, ["truncation", "pca"])
    compressors = {name: c for name, c in recipes.items() if name in methods}
    if trained is not None:
        compressors[trained.method] = trained
    precisions = precisions_of(cfg.eval.precisions, cfg.eval.rescore_multiplier)
    rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, qrels, compressors,
                   include_raw="raw" in methods, seed=cfg.train.seed, precisions=precisions)
    extra = {}
    if trained is not None:
        holdout = holdout_qrels(paths.read_train_qrels(), doc_ids, query_ids, cfg.train)
        rows += holdout_rows(doc_ids, doc_vecs, query_ids, query_vecs, holdout,
                             {trained.method: trained}, recipes, seed=cfg.train.seed)
        extra["recipe_check"] = recipe_check(rows)
        extra["recipe_summary"] = recipe_summary(extra["recipe_check"])
    if trained is not None and trained.quantizers:   # keep the calibration with the model
        trained.save(out / "compressor")
    timings = record_timing(out, "evaluate", time.perf_counter() - start)
    write_results(out / "results.json", paths.name, meta.get("model", "?"),
                  paths.split_label, rows, timings, **extra)
    results = read_results(out / "results.json")
    table = markdown_table(results)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(table + "\n")
    plot_ndcg_vs_bytes(results, out / "ndcg_vs_bytes.png")
    return results
