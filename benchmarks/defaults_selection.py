"""Choose the training defaults on hold-outs of *training* queries only (issue 14, item 4).

Test qrels are never read here. For each candidate setting, the method (SMEC by default) is
trained on each dataset's training queries, with the same grouped hold-out that early stopping
uses, and scored by the hold-out nDCG@10 averaged over its levels; the score of a setting is the
mean over datasets and seeds (each seed holds out other queries). The sweep is coordinate
descent from a base (the previous defaults): one key at a time, in the order of ``SWEEP``, each
keeping the best value found so far; the result is checked against the base.

    python benchmarks/defaults_selection.py \\
        --dataset ../shared/data/scifact:runs/scifact \\
        --dataset ../shared/data/arguana:runs/arguana:split-test \\
        --out benchmarks/results/defaults-selection

Each finished trial is appended to OUT/trials.jsonl (a re-run skips what is there); OUT/
selection.json names the chosen setting, OUT/selection.md is the table. Also measures the rank
loss magnitude at the start of training under the old (sum over pairs, mean over queries) and
the new (label-gap-weighted mean over pairs) reduction on every dataset (OUT/loss_scale.json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from smec.compare import compare
from smec.config import TrainConfig, updated
from smec.data import resolve_beir_dir
from smec.io import write_json
from smec.losses import RankLoss
from smec.modules import build_adapter
from smec.runfolder import RunFolder
from smec.store import read_embeddings
from smec.training.engine import Reporter, train_method
from smec.training.prepare import prepare_data, sample_batch

#: One-at-a-time values around the base; the base value of each key is always included.
SWEEP: dict[str, list] = {
    "adapter": ["residual_mlp", "pca_mlp", "pca_residual"],
    "alpha": [0.1, 1.0, 4.0],
    "lr": [1e-4, 3e-4, 1e-3, 3e-3],
    "rank_scale": [5.0, 20.0, 50.0],
    "ads_init_scale": [1.0, 10.0, 30.0],
    "ads_lr_mult": [1.0, 10.0, 100.0],
    "ads_carry_logits": [True, False],
    "patience": [2, 4],
}
#: The defaults before this selection (chosen in earlier sessions on SciFact *test* scores).
BASE = {"adapter": "residual_mlp", "lr": 1e-3, "rank_scale": 20.0, "alpha": 1.0,
        "ads_init_scale": 10.0, "ads_lr_mult": 10.0, "ads_carry_logits": True, "patience": 4}


def load_dataset(spec: str) -> dict:
    """``DATA_DIR:RUN_DIR[:TRAIN_SPLIT]`` -> embeddings and *training* qrels only."""
    data_dir, run, *split = spec.split(":")
    paths = resolve_beir_dir(data_dir, split[0] if split else "train")
    doc_ids, doc_vecs, meta = read_embeddings(RunFolder(run).corpus)
    query_ids, query_vecs, _ = read_embeddings(RunFolder(run).queries)
    return {"name": paths.name, "model": meta.get("model"), "doc_ids": doc_ids,
            "doc_vecs": doc_vecs, "query_ids": query_ids, "query_vecs": query_vecs,
            "train_qrels": paths.read_train_qrels()}


def trial(ds: dict, cfg: TrainConfig, method: str) -> dict:
    data = prepare_data(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"], ds["query_vecs"],
                        ds["train_qrels"], cfg)
    start = time.perf_counter()
    reporter = Reporter()
    compressor = train_method(data, cfg, method, reporter)
    history = reporter.history
    seconds = time.perf_counter() - start
    rows = compare(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"], ds["query_vecs"],
                   data.val_qrels, {method: compressor}, include_raw=False, seed=cfg.seed)
    return {"holdout_ndcg_at_10": {r.dims: round(r.ndcg_at_10, 4) for r in rows},
            "holdout_mean": round(float(np.mean([r.ndcg_at_10 for r in rows])), 4),
            "epochs": len(history), "seconds": round(seconds, 1)}


def loss_scale(ds: dict, cfg: TrainConfig, batches: int = 10) -> dict:
    """Rank loss at the start of training (identity adapter), old vs new reduction."""
    data = prepare_data(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"], ds["query_vecs"],
                        ds["train_qrels"], cfg)
    adapter = build_adapter(cfg.adapter, data.corpus.shape[1], cfg.adapter_hidden)
    gen = torch.Generator().manual_seed(0)
    values: dict[str, list[float]] = {"mean_query": [], "mean_weighted_pair": []}
    with torch.no_grad():
        for _ in range(batches):
            rows = torch.randperm(len(data.queries), generator=gen)[:cfg.batch_queries]
            candidates, labels = sample_batch(data, rows, cfg, gen)
            scores = torch.nn.functional.normalize(adapter(data.queries[rows]), dim=-1) @ \
                torch.nn.functional.normalize(adapter(data.corpus[candidates]), dim=-1).T
            for reduction in values:
                values[reduction].append(float(RankLoss(cfg.rank_scale, reduction)(scores,
                                                                                  labels)))
    return {k: round(float(np.mean(v)), 3) for k, v in values.items()} | {
        "candidates_per_batch": len(candidates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", required=True,
                        help="DATA_DIR:RUN_DIR[:TRAIN_SPLIT] (repeat); RUN_DIR holds embeddings")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--loss-scale-dataset", action="append", default=[],
                        help="DATA_DIR:RUN_DIR[:TRAIN_SPLIT] whose loss scale is measured too, "
                             "not tuned on (repeat)")
    parser.add_argument("--loss-scale-only", action="store_true",
                        help="measure the loss scales, run no trial")
    parser.add_argument("--probe", nargs="+", metavar=("KEY", "VALUE"), default=None,
                        help="no selection: score KEY at each VALUE on top of the current "
                             "defaults (hold-out only), e.g. --probe alpha 1 0.1 0.01")
    parser.add_argument("--method", default="smec")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--keys", nargs="*", default=list(SWEEP), help="keys to sweep")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = [load_dataset(spec) for spec in args.dataset]
    if args.probe:
        key, *values = args.probe
        for value in values:
            cfg = updated(TrainConfig(), **{key: value})
            record = {"method": args.method, "probe": {key: getattr(cfg, key)},
                      "datasets": {f"{ds['name']}/{seed}": trial(
                          ds, updated(cfg, seed=seed), args.method)
                          for ds in datasets for seed in args.seeds}}
            with (args.out / "probe.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
        return
    base_cfg = updated(TrainConfig(), **BASE)
    write_json(args.out / "loss_scale.json",
               {ds["name"]: loss_scale(ds, base_cfg)
                for ds in datasets + [load_dataset(s) for s in args.loss_scale_dataset]})
    if args.loss_scale_only:
        return
    log_path = args.out / "trials.jsonl"
    done = {}
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            record = json.loads(line)
            done[(record["method"], json.dumps(record["setting"], sort_keys=True))] = record

    def run(setting: dict) -> float:
        key = (args.method, json.dumps(setting, sort_keys=True))
        if key not in done:
            per = {f"{ds['name']}/{seed}": trial(ds, updated(base_cfg, **setting, seed=seed),
                                                args.method)
                   for ds in datasets for seed in args.seeds}
            record = {"method": args.method, "setting": setting, "seeds": args.seeds,
                      "datasets": per,
                      "score": round(float(np.mean([p["holdout_mean"] for p in per.values()])),
                                     4)}
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            done[key] = record
            print(f"{setting}: hold-out {record['score']:.4f} " + "  ".join(
                f"{n} {p['holdout_mean']:.4f} ({p['seconds']:.0f} s)" for n, p in per.items()),
                flush=True)
        return done[key]["score"]

    base_score = run(dict(BASE))
    chosen = dict(BASE)
    for name in args.keys:
        scores = {value: run({**chosen, name: value}) for value in SWEEP[name]}
        chosen[name] = max(scores, key=lambda v: (scores[v], v == chosen[name]))
    combined = run(chosen)
    final = chosen if combined >= base_score else dict(BASE)
    trials = [r for r in done.values() if r["method"] == args.method]
    write_json(args.out / "selection.json", {
        "method": args.method, "seeds": args.seeds,
        "datasets": [d["name"] for d in datasets],
        "criterion": "mean over datasets and seeds of the hold-out nDCG@10 averaged over "
                     "levels",
        "base": BASE, "base_score": base_score, "combined": chosen,
        "combined_score": combined, "chosen": final, "trials": len(trials),
        "test_qrels_read": 0})
    columns = [f"{d['name']}/{seed}" for d in datasets for seed in args.seeds]
    lines = ["| setting (changes from base) | score | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for r in sorted(trials, key=lambda r: -r["score"]):
        diff = {k: v for k, v in r["setting"].items() if BASE.get(k) != v} or "base"
        lines.append(f"| {diff} | {r['score']:.4f} | " + " | ".join(
            f"{r['datasets'][c]['holdout_mean']:.4f}" for c in columns) + " |")
    (args.out / "selection.md").write_text("\n".join(lines) + "\n")
    print(f"chosen: {final} (combined {combined:.4f} vs base {base_score:.4f})")


if __name__ == "__main__":
    main()
