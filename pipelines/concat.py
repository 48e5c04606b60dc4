"""Concat → encode → quantize (METHOD.md §5): ETL with N models, decoder, quantisation, rows.

``run_concat`` is the whole job behind ``smec concat``: embed the BEIR folder with every model
(one Ray Data pipeline, one actor pool per model; embeddings already in OUT are reused), score
each single model and the naive concatenation, train the decoder(s) on the train qrels with the
one training engine of :mod:`smec.training`, fit PCA of the concatenation as the baseline,
calibrate int8/binary quantisers on corpus vectors, and score every level × precision on the
test qrels. Every row states bytes/vector and the compression factor against the float32
concatenation and against the best single model.
"""
from __future__ import annotations

import time

import numpy as np

from smec import console
from smec.compare import compare, precisions_of, score_vectors
from smec.compressors import PCA, ConcatCompressor
from smec.config import Config, TrainConfig
from smec.data import BeirPaths, load_qrels
from smec.errors import SmecError
from smec.pseudo import with_rewritten
from smec.quantize import compression_factor
from smec.report import concat_table, plot_retained_vs_cf, publish
from smec.results import ResultRow
from smec.runfolder import RunFolder
from smec.store import has_columns, is_complete, read_columns
from smec.teacher import column
from smec.training.engine import Reporter, train_method
from smec.training.prepare import TrainingData, prepare_data, prepare_unlabelled_data

SCHEDULE_METHOD = {"mrl": "mrl+sxbm", "smec": "smec"}   # the engine's name for each schedule


def embed_models(paths: BeirPaths, run: RunFolder, cfg: Config, models: list[str],
                 echo=console.echo) -> None:
    """``run.embeddings/{corpus,queries}`` with a column per model, embedded (Ray Data) unless
    a store there already has them all."""
    emb = run.embeddings
    wanted = [column(m) for m in models]
    if all(has_columns(emb / kind, wanted) and is_complete(emb / kind)
           for kind in ("corpus", "queries")):
        echo(f"      reusing the embeddings in {emb} (delete it to re-embed)")
        return
    from smec.pipelines.embed import run_embed_models
    summary = run_embed_models(paths, run, cfg, models, progress=True)
    echo(f"      corpus {summary['corpus']['rows']} docs at "
         f"{summary['corpus']['rows_per_s']} docs/s with {len(models)} models")


def load_or_embed(paths: BeirPaths, run: RunFolder, cfg: Config, models: list[str],
                  echo=console.echo) -> dict[str, tuple[list[str], dict[str, np.ndarray]]]:
    """``{"corpus"|"queries": (ids, {model: vectors})}``, embedding only what is missing."""
    embed_models(paths, run, cfg, models, echo)
    emb, wanted = run.embeddings, [column(m) for m in models]
    loaded = {}
    for kind in ("corpus", "queries"):
        ids, columns, _ = read_columns(emb / kind, wanted)
        loaded[kind] = (ids, {m: columns[column(m)] for m in models})
    return loaded


def decoder_data(paths: BeirPaths, run: RunFolder, cfg: Config, tcfg: TrainConfig,
                 concatenation: ConcatCompressor, doc_ids: list[str], cat_docs: np.ndarray,
                 query_ids: list[str], cat_queries: np.ndarray, echo) -> TrainingData:
    """The decoder's training data under ``concat.supervision``: the training qrels; pseudo
    pairs (mined as `smec train` mines them, into the run folder's pseudo/seedK, each query and its
    document without it embedded with every model); or the concatenation alone."""
    supervision = cfg.concat.supervision
    if supervision == "qrels":
        return prepare_data(doc_ids, cat_docs, query_ids, cat_queries, paths.read_train_qrels(),
                            tcfg)
    if supervision == "none":
        return prepare_unlabelled_data(doc_ids, cat_docs, tcfg)
    from smec.pipelines.supervision import pseudo_queries
    models = [m["name"] for m in concatenation.models]
    echo(f"      mining pseudo queries from {paths.corpus}, embedding them with every model")
    pseudo = pseudo_queries(paths, run, cfg, models=models)
    loaded = {}
    for kind in ("corpus", "queries"):
        ids, columns, _ = read_columns(pseudo.as_run_folder().embeddings / kind,
                                       [column(m) for m in models])
        loaded[kind] = (ids, concatenation.concatenate(
            {m: columns[column(m)] for m in models}))
    return prepare_data(doc_ids, with_rewritten(doc_ids, cat_docs, *loaded["corpus"]),
                        *loaded["queries"], load_qrels(pseudo.qrels), tcfg)


class EpochEcho(Reporter):
    """One line per epoch of the decoder: schedule, stage, dims and hold-out nDCG@10."""

    def __init__(self, schedule: str, echo) -> None:
        super().__init__()
        self.schedule, self.echo = schedule, echo

    def log(self, m: dict) -> None:
        super().log(m)
        self.echo(f"      {self.schedule} stage {m['stage']} {m['dims']} epoch {m['epoch']}: "
                  f"hold-out nDCG@10 {m['val_score']:.4f}")


def run_concat(paths: BeirPaths, run: RunFolder, cfg: Config, echo=console.echo) -> dict:
    """The whole concat job; writes OUT/results.json, results.md, retained_vs_cf.png and the
    trained compressors under OUT/compressors/."""
    ccfg = cfg.concat
    timings: dict[str, float] = {}
    models = list(dict.fromkeys([*ccfg.models, *ccfg.single_models]))
    start = time.perf_counter()
    echo(f"[1/4] embed {paths.root} with {len(models)} models (Ray Data): {', '.join(models)}")
    data = load_or_embed(paths, run, cfg, models, echo)
    timings["embed"] = time.perf_counter() - start
    doc_ids, doc_cols = data["corpus"]
    query_ids, query_cols = data["queries"]
    test_qrels = paths.read_test_qrels()
    quant_options = {"ranges": ccfg.int8_ranges}
    grid = precisions_of(ccfg.precisions, ccfg.rescore_multiplier)

    def score(method: str, queries: np.ndarray, docs: np.ndarray, precision) -> None:
        rows.append(score_vectors(method, queries, query_ids, docs, doc_ids, test_qrels,
                                  precision, **quant_options))

    echo("[2/4] single models and the naive concatenation")
    rows: list[ResultRow] = []
    for name in models:
        score(f"single:{name}", query_cols[name], doc_cols[name], ("float32", 0))
    floor = ccfg.models[0]   # the off-the-shelf floor: binary + float-query rescoring
    for precision in grid[1:]:
        score(f"single:{floor}", query_cols[floor], doc_cols[floor], precision)
    dims_of = {m: doc_cols[m].shape[1] for m in ccfg.models}
    specs = [{"name": m, "dim": dims_of[m]} for m in ccfg.models]
    concatenation = ConcatCompressor(sum(dims_of.values()), [], specs)
    cat_docs = concatenation.concatenate(doc_cols)
    cat_queries = concatenation.concatenate(query_cols)
    d_cat = cat_docs.shape[1]
    for precision in grid:
        score("concat", cat_queries, cat_docs, precision)

    levels = [ccfg.d_max, *ccfg.levels]
    if ccfg.d_max > d_cat:
        raise SmecError(f"concat.d_max: {ccfg.d_max} exceeds the concatenation's {d_cat} dims")
    start = time.perf_counter()
    compressors: dict[str, ConcatCompressor] = {
        "concat_pca": ConcatCompressor(d_cat, levels, specs, PCA(d_cat, levels)).fit(cat_docs)}
    timings["fit_concat_pca"] = time.perf_counter() - start
    echo(f"[3/4] train the decoder {d_cat} -> {levels} ({ccfg.decoder}, "
         f"{', '.join(ccfg.schedules)}; {cfg.train.max_epochs_per_stage} epochs per level)")
    tcfg = cfg.train.model_copy(update={
        "adapter": ccfg.decoder, "output_dim": ccfg.d_max, "stages": list(ccfg.levels),
        "full_dim_stage": True, "loss": ccfg.loss, "alpha": ccfg.alpha,
        "adapter_hidden": ccfg.hidden or 2 * ccfg.d_max, "supervision": ccfg.supervision})
    training = decoder_data(paths, run, cfg, tcfg, concatenation, doc_ids, cat_docs, query_ids,
                            cat_queries, echo)
    for schedule in ccfg.schedules:
        start = time.perf_counter()
        decoder = train_method(training, tcfg, SCHEDULE_METHOD[schedule],
                               EpochEcho(schedule, echo))
        name = "concat_decoder" if schedule == "mrl" else f"concat_decoder_{schedule}"
        if ccfg.supervision != "qrels":   # rows say what the decoder learnt from
            name += f":{ccfg.supervision}"
        compressors[name] = ConcatCompressor(d_cat, levels, specs, decoder)
        timings[f"train_{name}"] = time.perf_counter() - start
        echo(f"      {name}: {timings[f'train_{name}']:.0f} s")

    echo("[4/4] quantise (calibrated on corpus vectors) and score every level x precision")
    rows += compare(doc_ids, cat_docs, query_ids, cat_queries, test_qrels, compressors,
                    include_raw=False, precisions=grid, **quant_options)
    for name, compressor in compressors.items():   # with their calibrated quantisers
        compressor.save(run.compressors / name)

    return _write(run, paths, cfg, rows, timings, d_cat, models)


def _annotate(rows: list[ResultRow], d_cat: int, models: list[str]) -> tuple[dict, dict]:
    """Add CF (vs the float32 concat and vs the best single model) and retained % to rows."""
    concat = next(r for r in rows if r.method == "concat" and r.precision == "float32")
    singles = [r for r in rows if r.method.startswith("single:") and r.precision == "float32"]
    best_single = max(singles, key=lambda r: r.ndcg_at_10)
    for r in rows:
        r.extra["cf_vs_concat"] = round(compression_factor(d_cat, r.dims, r.precision), 2)
        r.extra["cf_vs_best_single"] = round(
            compression_factor(best_single.dims, r.dims, r.precision), 2)
        r.extra["retained"] = round(r.ndcg_at_10 / concat.ndcg_at_10, 4)
    refs = {"concat": {"dims": d_cat, "bytes_per_vector": concat.bytes_per_vector,
                       "ndcg_at_10": concat.ndcg_at_10},
            "best_single": {"method": best_single.method, "dims": best_single.dims,
                            "bytes_per_vector": best_single.bytes_per_vector,
                            "ndcg_at_10": best_single.ndcg_at_10}}
    return refs, _targets(rows, concat, models)


def _targets(rows: list[ResultRow], concat: ResultRow, models: list[str]) -> dict:
    """Issue 5's targets, measured (each with its figure)."""
    def best(pred) -> ResultRow | None:
        picked = [r for r in rows if pred(r)]
        return max(picked, key=lambda r: r.ndcg_at_10) if picked else None

    trained = [r for r in rows if r.method.startswith("concat_decoder")]
    small_single = best(lambda r: r.method.startswith("single:") and r.precision == "float32"
                        and r.method[len("single:"):] in models)
    out: dict = {"concat_vs_best_small_single": {
        "concat": round(concat.ndcg_at_10, 4), "best_small_single": small_single.method,
        "single": round(small_single.ndcg_at_10, 4),
        "holds": concat.ndcg_at_10 >= small_single.ndcg_at_10}}
    for cf, goal in ((48, 0.92), (96, 0.85)):
        row = best(lambda r, cf=cf: r in trained and r.extra["cf_vs_concat"] >= cf)
        out[f"retained_at_cf{cf}"] = None if row is None else {
            "method": row.method, "dims": row.dims, "precision": row.precision,
            "rescore": row.extra.get("rescore", 0), "cf": row.extra["cf_vs_concat"],
            "retained": row.extra["retained"], "goal": goal,
            "holds": row.extra["retained"] >= goal}
    pca = {(r.dims, r.precision, r.extra.get("rescore", 0)): r.ndcg_at_10
           for r in rows if r.method == "concat_pca"}
    losses = [f"{r.method} {r.dims} d {r.precision}: {r.ndcg_at_10:.4f} < PCA "
              f"{pca[(r.dims, r.precision, r.extra.get('rescore', 0))]:.4f}"
              for r in trained if pca.get((r.dims, r.precision, r.extra.get("rescore", 0)),
                                          -1) > r.ndcg_at_10]
    out["decoder_beats_pca_everywhere"] = {"holds": not losses, "misses": losses}
    floor = best(lambda r: r.method.startswith("single:") and r.bytes_per_vector == 48
                 and r.precision == "binary" and r.extra.get("rescore"))
    at48 = best(lambda r: r in trained and r.bytes_per_vector <= 48)
    if floor and at48:
        out["beats_binary_rescore_floor_at_48_bytes"] = {
            "floor": round(floor.ndcg_at_10, 4), "floor_method": floor.method,
            "ours": round(at48.ndcg_at_10, 4),
            "ours_row": f"{at48.method} {at48.dims} d {at48.precision}"
                        + (f" +rescore x{at48.extra['rescore']}" if at48.extra.get("rescore")
                           else ""),
            "holds": at48.ndcg_at_10 > floor.ndcg_at_10}
    return out


def _write(run: RunFolder, paths: BeirPaths, cfg: Config, rows: list[ResultRow],
           timings: dict[str, float], d_cat: int, models: list[str]) -> dict:
    refs, targets = _annotate(rows, d_cat, cfg.concat.models)
    return publish(run, paths.name, "+".join(cfg.concat.models), paths.split_label, rows,
                   timings, table=concat_table, plot=plot_retained_vs_cf,
                   plot_path=run.concat_plot, models=models,
                   concat_models=cfg.concat.models, references=refs, targets=targets,
                   config=cfg.concat.model_dump())
