"""Choose the label-free training settings on a hold-out of *training* queries (never test).

Trains SMEC with ``supervision: none`` (and ``pseudo``) under a few settings on one dataset with
training qrels, and scores every level on the hold-out of its train queries that
`smec bench compression` also uses (``smec.training.prepare.holdout_qrels``), next to PCA. The queries'
labels are used only here, to choose; the label-free runs never see them. Appends one JSON line
per setting to OUT/results.jsonl (resumable: a setting already there is skipped).

    python benchmarks/label_free_selection.py --run runs/scifact --data-dir ../shared/data/scifact
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from smec.compare import baselines, compare
from smec.config import Config, TrainConfig
from smec.data import resolve_beir_dir
from smec.store import read_embeddings
from smec.training.engine import Reporter, train_method
from smec.training.prepare import holdout_qrels

SETTINGS = {
    "none/preserve": {"supervision": "none", "unsup_loss": "preserve"},
    "none/distill": {"supervision": "none", "unsup_loss": "distill"},
    "none/distill-lr1e-4": {"supervision": "none", "unsup_loss": "distill", "lr": 1e-4},
    "none/distill-prefix": {"supervision": "none", "unsup_loss": "distill",
                            "method": "smec-ads"},
    "pseudo/preserve": {"supervision": "pseudo", "unsup_loss": "preserve"},
    "pseudo/distill": {"supervision": "pseudo", "unsup_loss": "distill"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with embeddings/")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/"
                                                         "label-free-selection"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--dims", type=int, nargs="+", default=[192, 96, 48, 24])
    args = parser.parse_args()
    from smec.pipelines.bench import bench_data
    paths = resolve_beir_dir(args.data_dir)
    doc_ids, doc_vecs, _ = read_embeddings(args.run / "embeddings" / "corpus")
    query_ids, query_vecs, _ = read_embeddings(args.run / "embeddings" / "queries")
    embeddings = (doc_ids, doc_vecs, query_ids, query_vecs)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    done = {json.loads(line)["setting"] for line in log.open()} if log.is_file() else set()
    base = TrainConfig(stages=args.dims)
    holdout = holdout_qrels(paths.read_train_qrels(), doc_ids, query_ids, base)
    if "pca" not in done:
        rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout,
                       baselines(doc_vecs.shape[1], args.dims, doc_vecs, ["pca"]))
        with log.open("a") as f:
            f.write(json.dumps({"setting": "pca", "dataset": paths.name, "holdout_ndcg_at_10":
                                {r.dims: round(r.ndcg_at_10, 4) for r in rows}}) + "\n")
    for name in args.settings:
        if name in done:
            continue
        update = dict(SETTINGS[name])
        method = update.pop("method", "smec")
        cfg = TrainConfig(stages=args.dims, **update)
        data = bench_data(cfg.supervision, paths, args.run, Config(train=cfg), cfg, embeddings)
        start = time.perf_counter()
        reporter = Reporter()
        compressor = train_method(data, cfg, method, reporter)
        history = reporter.history
        rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout, {method: compressor},
                       include_raw=False)
        entry = {"setting": name, "dataset": paths.name, "method": method, "update": update,
                 "seconds": round(time.perf_counter() - start, 1),
                 "best_epochs": {str(h["dims"][0]): h["best_epoch"] for h in history},
                 "holdout_ndcg_at_10": {r.dims: round(r.ndcg_at_10, 4) for r in rows}}
        print(json.dumps(entry), flush=True)
        with log.open("a") as f:
            f.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    main()
