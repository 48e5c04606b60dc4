"""Precision-aware training against post-hoc quantisation, on training queries only (issue 23).

``train.serve_precision`` makes the rank loss (and early stopping) score the float query
against the documents as the index will hold them: int8 (fake quantisation, straight-through),
binary (tanh relaxation annealed to the sign; the float query is rescored against ±1) or pq48
(faiss PQ48 codebooks fitted on the validation documents before every epoch, a softmax over
the codewords annealed to the nearest one). Post hoc means: train in float32 (the default),
quantise afterwards.

Protocol: the development data and folds of ``defaults_selection_v2.py`` (SciFact's training
queries, ArguAna's training half under split-test; two grouped folds each). Each arm trains on
one fold (early stopping on a grouped hold-out inside it) and is scored on the other, at the
precisions it is served at: binary + rescore ×4 at the levels where binary is 48 or 24 B
(384 and 192 d), int8 at 96, 48 and 24 d, PQ48 (48 B at any level it divides: 384, 192, 96
and 48 d; its codebooks fitted on the whole corpus, never on queries), and float32 beside
them. Test is never read
(``test_qrels_read: 0``). Units append to ``OUT/units.jsonl``; an interrupted run continues.

    python benchmarks/serve_precision.py \\
        --dataset ../shared/data/scifact:runs/scifact \\
        --dataset ../shared/data/arguana:runs/arguana:split-test \\
        --methods mrl smec --out benchmarks/results/serve-precision

PQ-aware training against post hoc PQ48 (``--arms float32 pq48``) went to
``benchmarks/results/serve-precision-pq``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from smec.compare import score_vectors
from smec.config import TrainConfig, updated
from smec.io import atomic_path, write_json
from smec.selection import STAGES, load_dataset
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data

#: (precision, rescore multiplier, level) scored for every arm: what each costs 24-96 B
SERVED = [("binary", 4, 384), ("binary", 4, 192), ("int8", 0, 96), ("int8", 0, 48),
          ("int8", 0, 24), ("pq48", 0, 384), ("pq48", 0, 192), ("pq48", 0, 96), ("pq48", 0, 48)]
ARMS = ("float32", "int8", "binary", "pq48")


def run_unit(ds: dict, method: str, serve: str, fold: int) -> dict:
    train_qrels, scored = ds["folds"][1 - fold], ds["folds"][fold]
    cfg = updated(TrainConfig().for_method(method), stages=STAGES, serve_precision=serve)
    started = time.perf_counter()
    data = prepare_data(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"], ds["query_vecs"],
                        train_qrels, cfg)
    reporter = Reporter()
    compressor = train_method(data, cfg, method, reporter)
    scores = {}
    for precision, rescore, dim in SERVED:
        if dim not in compressor.dims:
            continue
        docs = compressor.encode(ds["doc_vecs"], dim)
        queries = compressor.encode(ds["query_vecs"], dim)
        for p in {(precision, rescore), ("float32", 0)}:
            row = score_vectors(method, queries, ds["query_ids"], docs, ds["doc_ids"], scored,
                                p, compressor.quantizers.get((dim, p[0])))
            scores[f"{dim} d {p[0]}" + (f"+rescore x{p[1]}" if p[1] else "")] = \
                round(row.ndcg_at_10, 5)
    return {"method": method, "serve": serve, "dataset": ds["name"], "fold": fold,
            "queries": len(scored), "scores": scores, "epochs": len(reporter.history),
            "seconds": round(time.perf_counter() - started, 1)}


def summary(units: list[dict], arms: list[str]) -> dict:
    """method -> configuration -> arm -> mean over datasets of the query-weighted fold mean."""
    out: dict = {}
    for method in sorted({u["method"] for u in units}):
        out[method] = {}
        configs = sorted({c for u in units if u["method"] == method for c in u["scores"]})
        for config in configs:
            scored = {}
            for arm in arms:
                per_dataset = []
                for name in sorted({u["dataset"] for u in units}):
                    mine = [u for u in units if (u["method"], u["serve"], u["dataset"]) ==
                            (method, arm, name) and config in u["scores"]]
                    if len(mine) == 2:
                        per_dataset.append(sum(u["scores"][config] * u["queries"] for u in mine)
                                           / sum(u["queries"] for u in mine))
                if per_dataset:
                    scored[arm] = round(float(np.mean(per_dataset)), 4)
            out[method][config] = scored
    return out


def table(result: dict, arms: list[str]) -> str:
    names = [f"{a}-aware" if a != "float32" else "post hoc (float32-trained)" for a in arms]
    lines = ["| method | configuration | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(arms)]
    for method, configs in result.items():
        for config, scored in configs.items():
            lines.append(f"| {method} | {config} | " + " | ".join(
                f"{scored[a]:.4f}" if a in scored else "–" for a in arms) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True,
                        help="DATA_DIR:RUN_DIR[:TRAIN_SPLIT] (as defaults_selection_v2.py)")
    parser.add_argument("--methods", nargs="+", default=["mrl", "smec"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS,
                        help="the serve_precision each arm trains with (float32: post hoc)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "units.jsonl"
    units = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    done = {(u["method"], u["serve"], u["dataset"], u["fold"]) for u in units}
    for spec in args.dataset:
        ds = load_dataset(spec)
        for method in args.methods:
            for serve in args.arms:
                for fold in (0, 1):
                    if (method, serve, ds["name"], fold) in done:
                        continue
                    unit = run_unit(ds, method, serve, fold)
                    units.append(unit)
                    with log.open("a") as f:
                        f.write(json.dumps(unit) + "\n")
                    print(f"{ds['name']} {method} serve={serve} fold {fold}: "
                          f"{unit['seconds']:.0f} s, " + ", ".join(
                              f"{k} {v:.4f}" for k, v in unit["scores"].items()), flush=True)
    result = summary(units, args.arms)
    write_json(args.out / "summary.json", {"mean_over_datasets": result, "test_qrels_read": 0,
                                           "datasets": [s.split(":")[0] for s in args.dataset],
                                           "seconds": round(sum(u["seconds"] for u in units))})
    md = table(result, args.arms)
    with atomic_path(args.out / "summary.md") as tmp:
        tmp.write_text("# Precision-aware training vs post-hoc quantisation (cross-validated "
                       "on training queries, mean nDCG@10 over datasets)\n\n" + md + "\n")
    print(md)


if __name__ == "__main__":
    main()
