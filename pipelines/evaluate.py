"""Evaluate raw, truncation, PCA and SMEC at every level; write results.json, table and plot."""
from __future__ import annotations

import json
import time
from pathlib import Path

from smec.pipelines.train import load_trained

from smec.compare import (
    RECIPES,
    baselines,
    compare,
    holdout_rows,
    precisions_of,
    recipe_report,
)
from smec.config import Config
from smec.data import BeirPaths
from smec.errors import SmecError
from smec.io import write_json
from smec.report import publish
from smec.runfolder import RunFolder
from smec.training.prepare import holdout_qrels


def record_timing(run: RunFolder, phase: str, seconds: float) -> dict:
    """Keep each phase's wall time in ``run.timings`` so results.json can report all."""
    path = run.timings
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[phase] = round(seconds, 2)
    write_json(path, timings)
    return timings


def method_label(method: str, supervision: str = "qrels", teacher: str = "self") -> str:
    """A trained row's label: ``smec``, ``smec:none`` label-free, ``smec:none+concat`` with
    another teacher than the model itself (``train.teacher``, by its slug)."""
    from smec.teacher import teacher_slug
    label = method if supervision == "qrels" else f"{method}:{supervision}"
    return label if teacher == "self" else f"{label}+{teacher_slug(teacher)}"


def trained_label(compressor, evaluated_on: str) -> tuple[str, dict]:
    """A trained compressor's row label and the provenance every one of its rows records:
    ``smec`` in its own domain, ``smec:pseudo`` label-free, ``smec:none+concat`` distilled from
    the concat teacher, ``smec:from-scifact`` elsewhere."""
    trained_on = compressor.trained_on or {}
    dataset, supervision = trained_on.get("dataset"), trained_on.get("supervision", "qrels")
    label = method_label(compressor.method, supervision, trained_on.get("teacher", "self"))
    if dataset is not None and dataset != evaluated_on:
        label += f":from-{dataset}"
    return label, {"trained_on": dataset, "supervision": supervision,
                   "evaluated_on": evaluated_on}


def load_transferred(path: Path, store: Path):
    """A compressor trained elsewhere, refused in one line unless it was trained on the
    embeddings of the model that made ``store``."""
    from smec.codes import compressor_models, store_models
    from smec.compressors import load_compressor
    compressor = load_compressor(path)
    theirs = [m["name"] for m in compressor_models(path)]
    ours = [m["name"] for m in store_models(store)]
    if theirs != ours:
        raise SmecError(f"{path}: trained on {', '.join(theirs)} embeddings, but "
                        f"{store} holds {', '.join(ours)}; a compressor applies only to the "
                        "model it was trained on")
    return compressor


def run_evaluate(paths: BeirPaths, run: RunFolder, cfg: Config,
                 compressor_dir: Path | None = None,
                 embeddings: RunFolder | None = None) -> dict:
    """Score raw, the untrained baselines and the trained compressor (``compressor_dir``: one
    trained on another dataset, scored on this one's embeddings) on the test qrels, into
    ``run``; the embeddings are ``run``'s, or those of the run folder ``embeddings``."""
    start = time.perf_counter()
    source = embeddings or run
    loaded = source.load_embeddings()
    doc_ids, doc_vecs, query_ids, query_vecs = loaded.as_tuple()
    meta = loaded.meta
    qrels = paths.read_test_qrels()
    missing = [q for q in qrels if q not in set(query_ids)]
    if missing:
        raise SmecError(f"{paths.test_qrels}: query '{missing[0]}' has no embedding in "
                        f"{source.embeddings}; re-run `smec embed` on this data folder")
    input_dim = doc_vecs.shape[1]
    methods = cfg.eval.methods
    if compressor_dir is not None:
        trained = load_transferred(compressor_dir, source.corpus)
    else:
        trained = load_trained(run) if "trained" in methods else None
    dims = [d for d in (trained.dims if trained else cfg.train.stage_dims(input_dim))
            if d < input_dim]
    recipes = baselines(input_dim, dims, doc_vecs, RECIPES)
    compressors = {name: c for name, c in recipes.items() if name in methods}
    label, provenance = trained_label(trained, paths.name) if trained is not None else ("", {})
    if trained is not None:
        compressors[label] = trained
    precisions = precisions_of(cfg.eval.precisions, cfg.eval.rescore_multiplier)
    rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, qrels, compressors,
                   include_raw="raw" in methods, seed=cfg.train.seed, precisions=precisions)
    extra = {}
    if trained is not None and paths.has_train_qrels:
        holdout = holdout_qrels(paths.read_train_qrels(), doc_ids, query_ids, cfg.train)
        rows += holdout_rows(doc_ids, doc_vecs, query_ids, query_vecs, holdout,
                             {label: trained}, recipes, seed=cfg.train.seed,
                             precisions=precisions,
                             raw_products=cfg.eval.recipe_products)
        extra |= recipe_report(rows)
    for row in rows:
        if row.method == label:
            row.extra.update(provenance)
    if trained is not None and trained.quantizers and compressor_dir is None:
        trained.save(run.compressor)   # keep the calibration with the model
    timings = record_timing(run, "evaluate", time.perf_counter() - start)
    return publish(run, paths.name, meta.get("model", "?"), paths.split_label, rows, timings,
                   **extra)
