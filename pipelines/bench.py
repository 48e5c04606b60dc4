"""`smec bench compression`: every method at every level, several seeds, one results.json.

All methods train on the same cached embeddings, with the same adapter family and the same
epoch budget (``max_epochs_per_stage`` × number of levels), and pick their best epoch on a
hold-out of *train* queries; test qrels are only read for the final scores.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from smec import console
from smec.compare import (
    RECIPES,
    baselines,
    compare,
    holdout_rows,
    precisions_of,
    recipe_report,
)
from smec.compressors import Compressor, load_compressor
from smec.config import Config, TrainConfig, updated
from smec.data import BeirPaths, load_qrels
from smec.io import write_json
from smec.pseudo import with_rewritten
from smec.report import gradient_variance, publish
from smec.runfolder import RunFolder
from smec.store import read_embeddings
from smec.teacher import read_teacher
from smec.training.engine import Reporter, train_method
from smec.training.methods import METHODS
from smec.training.prepare import (
    TrainingData,
    holdout_overlap,
    holdout_qrels,
    prepare_data,
    prepare_unlabelled_data,
)

DEFAULT_METHODS = ["search_adaptor", "matryoshka_adaptor", "mrl", "mrl+smrl", "mrl+ads",
                   "mrl+sxbm", "smec-ads", "smec"]


def continued_training_check(data, cfg: TrainConfig, dims: list[int]) -> dict:
    """Train SMEC down to ``dims[-2]``, save it, add ``dims[-1]``, save again; then compare
    every kept level of the two saved compressors, each reloaded from disk (a fresh network per
    level, so nothing cached in memory can hide a change)."""
    short = updated(cfg, stages=dims[:-1])
    compressor = train_method(data, short, "smec")
    docs = data.corpus.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        compressor.save(Path(tmp) / "before")
        train_method(data, updated(cfg, stages=dims),
                     "smec", resume=compressor)
        compressor.save(Path(tmp) / "after")
        before, after = load_compressor(Path(tmp) / "before"), load_compressor(Path(tmp) / "after")
        change = {dim: float(np.abs(after.encode(docs, dim) - before.encode(docs, dim)).max())
                  for dim in before.dims}
    return {"kept_level": dims[-2], "added_level": dims[-1], "kept_levels": sorted(change),
            "max_abs_change_of_kept_level": max(change.values())}


def mteb_crosscheck(paths: BeirPaths, run: RunFolder, embeddings: tuple, rows: list,
                    compressors: dict) -> dict:
    """MTEB's nDCG@10 for raw and every seed-0 level, next to ours; MTEB's JSON under
    ``run.mteb``."""
    from smec.pipelines.mteb_check import mteb_scores
    encoders = [("raw", None, embeddings[1].shape[1])]
    encoders += [(name, c, dim) for name, c in compressors.items() for dim in c.dims]
    scores = mteb_scores(paths, *embeddings, encoders, run.mteb)
    ours = {f"{r.method}@{r.dims}": r.ndcg_at_10 for r in rows
            if r.seed == 0 and r.precision == "float32" and "split" not in r.extra}
    table = {key: {"mteb": value, "ours": round(ours[key], 6),
                   "abs_diff": round(abs(value - ours[key]), 6)} for key, value in scores.items()}
    return {"levels": table, "max_abs_diff": max(v["abs_diff"] for v in table.values())}


#: Cheaper S-XBM steps tried against the step-time target (issue 14, item 9), at the default M.
SXBM_VARIANTS = {"neighbours as constants": {"sxbm_neighbour_grad": False},
                 "bf16 autocast": {"autocast_bf16": True}}


def memory_sizes(data, cfg, sizes: list[int], doc_ids, doc_vecs, query_ids, query_vecs,
                 test_qrels, echo) -> dict:
    """SMEC with S-XBM memories of several sizes (SMEC Table 3), and the cheaper-step variants:
    step time against SMEC without the S-XBM term, hold-out and test nDCG@10."""
    def run(update: dict) -> tuple[dict, dict, float]:
        reporter = Reporter()
        compressor = train_method(data, updated(cfg, **update), "smec", reporter)
        history = reporter.history
        scores = {}
        for split, qrels in (("holdout", data.val_qrels), ("test", test_qrels)):
            rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, qrels,
                           {"smec": compressor}, include_raw=False)
            scores[split] = {r.dims: round(r.ndcg_at_10, 4) for r in rows}
        return scores["holdout"], scores["test"], float(np.mean([h["step_time_s"]
                                                                 for h in history]))

    _, _, base_step = run({"alpha": 0.0})

    def entry(update: dict, **label) -> dict:
        holdout, test, step = run(update)
        echo(f"S-XBM {label}: step {step * 1000:.0f} ms ({step / base_step:.2f}x no memory), "
             "hold-out " + "  ".join(f"{d}d {v:.4f}" for d, v in holdout.items()))
        return {**label, "step_time_s": round(step, 4),
                "step_time_vs_no_memory": round(step / base_step, 3),
                "holdout_ndcg_at_10": holdout, "ndcg_at_10": test}

    table = [entry({"memory_size": size}, memory_size=size) for size in sizes]
    variants = [entry(update, variant=name, memory_size=cfg.memory_size)
                for name, update in SXBM_VARIANTS.items()]
    return {"no_memory_step_time_s": round(base_step, 4), "sizes": table,
            "variants": variants}


class Progress(Reporter):
    """The bench's reporter: each method's history, and one line per finished stage naming
    the seed, method and level, with the bench's time left (the elapsed time scaled by the
    share of stages done), so a bench writing to a log file shows where it is."""

    def __init__(self, units: int, stages_per_unit: int, echo) -> None:
        super().__init__()
        self.units, self.stages_per_unit, self.echo = units, stages_per_unit, echo
        self.done, self.stages, self.begun, self.name = 0, 0, time.perf_counter(), ""

    def start(self, name: str) -> None:
        self.name, self.stages, self.history = name, 0, []

    def stage_done(self, compressor) -> None:
        self.stages = min(len(compressor.dims), self.stages_per_unit)   # parallel: all at once
        elapsed = time.perf_counter() - self.begun
        share = (self.done + self.stages / self.stages_per_unit) / self.units
        left = elapsed * (1 - share) / share
        held = ""   # the hold-out at the stage's start and its best: a saturated one shows
        if self.history:
            last = self.history[-1]
            best = max([last["val_start"]] + [h["val_score"] for h in self.history
                                              if h["stage"] == last["stage"]])
            held = (f", hold-out {last['val_metric']} {last['val_start']:.4f} at the start "
                    f"-> {best:.4f}")
        self.echo(f"  {self.name}: level {compressor.dims[-1]} d trained "
                  f"({self.done + 1}/{self.units}){held}, {elapsed / 60:.1f} min in, "
                  f"~{left / 60:.0f} min left")

    def unit_done(self) -> None:
        self.done += 1


def bench_data(supervision: str, paths: BeirPaths, run: RunFolder, cfg: Config,
               tcfg: TrainConfig, embeddings: tuple,
               teacher: np.ndarray | None = None) -> TrainingData:
    """One seed's training data under ``supervision`` (qrels, pseudo or none), distilling
    ``teacher``'s similarities (``train.teacher``'s corpus vectors; None: the model's own)."""
    doc_ids, doc_vecs, query_ids, query_vecs = embeddings
    if supervision == "qrels":
        return prepare_data(doc_ids, doc_vecs, query_ids, query_vecs, paths.read_train_qrels(),
                            tcfg, teacher=teacher)
    if supervision == "none":
        return prepare_unlabelled_data(doc_ids, doc_vecs, tcfg, teacher=teacher)
    from smec.pipelines.supervision import pseudo_queries
    pseudo = pseudo_queries(paths, run, cfg, tcfg.seed)
    pseudo_ids, pseudo_vecs, _ = read_embeddings(pseudo.embeddings)   # pseudo's own store
    rewritten = with_rewritten(doc_ids, doc_vecs, *read_embeddings(pseudo.document_embeddings)[:2])
    return prepare_data(doc_ids, rewritten, pseudo_ids, pseudo_vecs, load_qrels(pseudo.qrels),
                        tcfg, teacher=teacher)


def trainable(methods: list[str], supervision: str) -> list[str]:
    """The methods that can train under ``supervision`` (none: those with an unsupervised
    term)."""
    return [m for m in methods if supervision != "none" or METHODS[m].unsup is not None]


def transferred_rows(source: RunFolder, paths: BeirPaths, run: RunFolder, embeddings: tuple,
                     qrels, precisions, echo) -> list:
    """Every compressor a bench on another dataset saved (``source.bench_compressors()``),
    scored here; rows labelled ``LABEL:from-DATASET`` with both datasets recorded."""
    from smec.pipelines.evaluate import load_transferred, trained_label
    doc_ids, doc_vecs, query_ids, query_vecs = embeddings
    rows = []
    for seed, folder in source.bench_compressors():
        compressor = load_transferred(folder, run.corpus)
        label, provenance = trained_label(compressor, paths.name)
        new = compare(doc_ids, doc_vecs, query_ids, query_vecs, qrels, {label: compressor},
                      include_raw=False, seed=seed, precisions=precisions)
        for row in new:
            row.extra.update(provenance)
        rows += new
        echo(f"{label} seed {seed}: " + "  ".join(
            f"{r.dims}d {r.ndcg_at_10:.4f}" for r in new if r.precision == "float32"))
    return rows


def history_checks(histories: dict[str, list[dict]], run: RunFolder, echo) -> dict:
    """From seed 0's training histories: how far ADS moved from truncation (the last epoch of
    each SMEC stage), the adapter-gradient variance of MRL against SMRL (with its plot), and
    how hard each term of the objective pushes at the start of every stage (‖∇L_rank‖,
    α‖∇L_unsup‖ of its first epoch)."""
    extra: dict = {"gradient_balance": stage_start_balance(histories)}
    if "smec" in extra["gradient_balance"]:
        echo("gradient balance at each smec stage's start (|grad rank|, alpha |grad unsup|): "
             + ", ".join(f"{dims} d {r:.3g} / {u:.3g}"
                         for dims, (r, u) in extra["gradient_balance"]["smec"].items()))
    if "smec" in histories:   # later epochs of a stage overwrite earlier ones
        extra["ads_overlap_truncation"] = {
            str(h["dims"][0]): round(h["ads_overlap_truncation"], 4) for h in histories["smec"]}
    compared = {m: h for m, h in histories.items() if m in ("mrl", "mrl+smrl")}
    if compared:
        extra["gradient_variance"] = gradient_variance(compared, run.gradient_variance_plot)
        echo("gradient variance: " + ", ".join(
            f"{k} {v:.4g}" for k, v in extra["gradient_variance"].items() if k != "per_epoch"))
    return extra


def stage_start_balance(histories: dict[str, list[dict]]) -> dict[str, dict[str, list]]:
    """method -> the dims of each stage -> [‖∇L_rank‖, α‖∇L_unsup‖] of its first epoch."""
    balance: dict[str, dict[str, list]] = {}
    for method, history in histories.items():
        for h in history:
            if "grad_norm_rank" in h and h.get("epoch") == 0:
                dims = "/".join(str(d) for d in h["dims"])
                balance.setdefault(method, {})[dims] = [
                    None if math.isnan(v) else round(v, 6)
                    for v in (h["grad_norm_rank"], h["grad_norm_unsup"])]
    return balance


def training_costs(train_s: dict[str, list[float]],
                   epochs: dict[str, list[int]]) -> tuple[dict, dict]:
    """(timings: mean train seconds and seconds per epoch per method, extra: epochs trained).

    Early stopping ends methods after different numbers of epochs, so the fair cost figure is
    seconds per epoch (every epoch is the same number of steps for every method)."""
    timings = {f"train:{m}": float(np.mean(v)) for m, v in train_s.items()}
    per_epoch = {m: float(np.sum(train_s[m]) / np.sum(epochs[m])) for m in train_s}
    timings |= {f"epoch:{m}": v for m, v in per_epoch.items()}
    extra = {"epochs_trained": {m: float(np.mean(v)) for m, v in epochs.items()}}
    if "smec" in per_epoch and "matryoshka_adaptor" in per_epoch:
        extra["smec_over_matryoshka_adaptor_s_per_epoch"] = round(
            per_epoch["smec"] / per_epoch["matryoshka_adaptor"], 3)
    return timings, extra


def trained_unit(run: RunFolder, label: str, seed: int, data: TrainingData,
                 mcfg: TrainConfig, method: str, clock: Progress, trained_on: dict,
                 echo=console.echo) -> tuple[Compressor, list[dict], float]:
    """(compressor, history, train seconds) of ``method`` for (``label``, ``seed``): trained
    and saved, or loaded when an earlier run of the bench finished this unit on the same
    config and the same training data, so a stopped bench resumes at the unit it was in."""
    folder, record = run.bench_compressor(label, seed), run.bench_unit(label, seed)
    key = hashlib.sha256(f"{method}\n{mcfg.model_dump_json()}\n{data.fingerprint()}"
                         .encode()).hexdigest()[:16]
    if record.is_file() and folder.is_dir():
        done = json.loads(record.read_text())
        if done.get("key") == key:
            echo(f"seed {seed} {label}: finished by an earlier run, loaded from {folder}")
            return load_compressor(folder), done["history"], done["train_s"]
    record.unlink(missing_ok=True)   # the compressor about to be saved is not the recorded one
    start = time.perf_counter()
    compressor = train_method(data, mcfg, method, clock)
    seconds = time.perf_counter() - start
    compressor.trained_on = trained_on
    compressor.save(folder)
    write_json(record, {"key": key, "train_s": seconds, "history": clock.history})
    return compressor, clock.history, seconds


def run_compression_bench(paths: BeirPaths, run: RunFolder, cfg: Config, methods: list[str],
                          dims: list[int] | None, seeds: int, mteb: bool = False,
                          memory: list[int] | None = None, echo=console.echo,
                          supervision: list[str] = ("qrels",),
                          transfer_from: RunFolder | None = None,
                          teachers: list[str] | None = None) -> dict:
    """Train ``methods`` under each ``supervision`` for ``seeds`` seeds; score every level on
    test (and the untrained baselines, and raw); hold-out rows on the hold-out of the training
    qrels where the dataset has them (label-free runs never saw those queries either). Every
    trained compressor is kept as ``run.bench_compressor(LABEL, seed)`` for ``transfer_from``.
    ``teachers`` (default ``[train.teacher]``): each trains every method in turn, side by side,
    its rows labelled ``LABEL+TEACHER`` (self: unlabelled)."""
    from smec.pipelines.embed import embedded
    from smec.pipelines.evaluate import method_label
    from smec.pipelines.supervision import teacher_store
    loaded, embed_s = embedded(paths, run, cfg, echo)
    embeddings = loaded.as_tuple()
    doc_ids, doc_vecs, query_ids, query_vecs = embeddings
    meta = loaded.meta
    test_qrels = paths.read_test_qrels()
    input_dim = doc_vecs.shape[1]
    dims = dims or [input_dim // f for f in (2, 4, 8, 16)]
    base = updated(cfg.train, stages=dims, full_dim_stage=True)

    precisions = precisions_of(cfg.eval.precisions, cfg.eval.rescore_multiplier)
    fixed = baselines(input_dim, dims, doc_vecs, RECIPES)
    rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, test_qrels, fixed,
                   precisions=precisions)
    train_s: dict[str, list[float]] = {}
    epochs: dict[str, list[int]] = {}
    extra: dict = {}
    seed0: dict = {}
    histories: dict[str, list[dict]] = {}
    teachers = teachers or [cfg.train.teacher]
    units = seeds * len(teachers) * sum(len(trainable(methods, sup)) for sup in supervision)
    teacher_rows = {}   # each embedded once (run.teacher(T)), read once, shared by every seed
    for name in teachers:
        found = teacher_store(paths, run, updated(cfg, train=updated(cfg.train, teacher=name)),
                              echo)
        teacher_rows[name] = None if found is None else read_teacher(found[0], list(found[1]),
                                                                     doc_ids)
    clock = Progress(units, len(dims) + 1, echo)
    for seed in range(seeds):
        tcfg = updated(base, seed=seed)
        holdout = holdout_qrels(paths.read_train_qrels(), doc_ids, query_ids, tcfg) \
            if paths.has_train_qrels else None
        trained: dict = {}
        for sup, teacher in ((s, t) for s in supervision for t in teachers):
            scfg = updated(tcfg, supervision=sup, teacher=teacher)
            data = bench_data(sup, paths, run, cfg, scfg, embeddings, teacher_rows[teacher])
            if sup == "qrels" and teacher == "self":   # the data of the checks on "smec"
                qrels_data = data
                extra.setdefault("holdout_overlap", {})[seed] = holdout_overlap(
                    paths.read_train_qrels(), doc_ids, query_ids, tcfg)
            for method in trainable(methods, sup):
                label = method_label(method, sup, teacher)
                clock.start(f"seed {seed} {label}")
                compressor, history, seconds = trained_unit(
                    run, label, seed, data, scfg.for_method(method, sup), method, clock,
                    {"dataset": paths.name, "supervision": sup,
                     **({} if teacher == "self" else {"teacher": teacher})}, echo)
                clock.unit_done()
                train_s.setdefault(label, []).append(seconds)
                epochs.setdefault(label, []).append(len(history))
                if seed == 0:
                    histories[label], seed0[label] = history, compressor
                new = compare(doc_ids, doc_vecs, query_ids, query_vecs, test_qrels,
                              {label: compressor}, include_raw=False, seed=seed,
                              precisions=precisions)
                rows += new
                trained[label] = compressor
                echo(f"seed {seed} {label:>18}: " + "  ".join(
                    f"{r.dims}d {r.ndcg_at_10:.4f}" for r in new if r.precision == "float32") +
                    f"  ({train_s[label][-1]:.0f} s)")
        if holdout is not None:
            rows += holdout_rows(doc_ids, doc_vecs, query_ids, query_vecs, holdout, trained,
                                 fixed, seed, precisions, cfg.eval.recipe_products)
        if seed == 0 and "smec" in trained:
            extra["continued_training"] = continued_training_check(
                qrels_data, tcfg.for_method("smec"), dims)
            echo(f"continued training: {extra['continued_training']}")
        if seed == 0 and memory and "qrels" in supervision and "self" in teachers:
            extra["sxbm_memory"] = memory_sizes(qrels_data, tcfg.for_method("smec"), memory,
                                                doc_ids, doc_vecs,
                                                query_ids, query_vecs, test_qrels, echo)
    if transfer_from is not None:
        rows += transferred_rows(transfer_from, paths, run, embeddings, test_qrels, precisions,
                                 echo)
    extra |= history_checks(histories, run, echo)
    if mteb:
        start = time.perf_counter()
        extra["mteb_crosscheck"] = mteb_crosscheck(
            paths, run, (doc_ids, doc_vecs, query_ids, query_vecs), rows,
            {**{k: v for k, v in fixed.items() if k != "raw"}, **seed0})
        echo(f"MTEB cross-check: max |MTEB - ours| nDCG@10 = "
             f"{extra['mteb_crosscheck']['max_abs_diff']} "
             f"({time.perf_counter() - start:.0f} s)")
    extra |= recipe_report(rows)
    echo(extra["recipe_summary"])
    timings, costs = training_costs(train_s, epochs)
    if embed_s is not None:
        timings["embed"] = embed_s
    return publish(run, paths.name, meta.get("model", "?"), paths.split_label, rows, timings,
                   seeds=seeds, **extra, **costs)


def check_methods(methods: list[str]) -> list[str]:
    from smec.errors import SmecError
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SmecError(f"--methods: unknown method '{unknown[0]}'; choose from "
                        f"{', '.join(sorted(METHODS))}")
    return methods
