"""Equal bytes: every trained level and every untrained recipe at 24, 48 and 96 B per vector,
faiss's product quantisers included, chosen on the hold-out and scored once on test (issue 23).

It re-scores the compressors a ``smec bench compression`` run saved (``RUN/compressors/LABEL/
seedK``), so the trained levels are exactly those of the compression tables. Every compressor
— raw, truncation, PCA centred and not, each trained level — is scored at every precision of
:data:`GRID` that its level can take: float32, int8, binary (thresholds at zero, at the
median, and centred + ITQ or random rotation), each also + rescore ×4, and faiss ``PQ M``
for M in 24, 48, 96 and their 4-bit twins ``PQ 2M x4`` (the same bytes; M must divide the
dims); raw also at ``OPQ M,PQ M`` (4-bit too). Quantisers and
codebooks are fitted on the corpus vectors only, once per (compressor, level, precision), and
the same fitted quantiser scores the hold-out and test.

Choosing: for each byte budget, each family's configuration with the best mean nDCG@10 over
seeds on the **hold-out of training queries** (the one the bench early-stopped on; ArguAna:
its training half under split-test) is picked; its test score is then read. Test is scored
once per configuration and seed and never compared before the picks are made
(``test_qrels_read: 1``). Units (compressor × seed) append to ``OUT/rows.jsonl`` as they
finish, so an interrupted run continues.

``--precisions`` scores only some of the grid, and ``--rows-from`` adds an earlier run's rows
to the picks (a configuration scored here replaces its earlier row): new precisions join a
table without re-scoring the old ones. Only join rows of the same compressors: a compressor
retrained since makes its earlier rows stale (raw, truncation and PCA are refitted the same).
Each configuration's test score is still read once.

    python benchmarks/bytes.py --run runs/arguana --data-dir ../shared/data/arguana \\
        --config examples/arguana-split-test.yaml --out benchmarks/results/bytes-arguana-minilm
    python benchmarks/bytes.py --run runs/scifact --data-dir ../shared/data/scifact --methods \\
        --precisions binary-median binary-rotated binary-itq \\
        --rows-from benchmarks/results/bytes-scifact-minilm \\
        --out benchmarks/results/bytes-binary-scifact-minilm
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from smec.compare import (
    OPQ_PRODUCTS,
    PRODUCT_BYTES,
    RAW_PRODUCTS,
    RECIPE_PRECISIONS,
    RECIPES,
    UNTRAINED,
    baselines,
    compare,
)
from smec.compressors import load_compressor
from smec.config import load_config, updated
from smec.data import resolve_beir_dir
from smec.io import atomic_path, write_json
from smec.results import ResultRow, write_results
from smec.runfolder import RunFolder
from smec.training.prepare import holdout_qrels

#: Every compressor's levels at these; raw at :data:`RAW_PRECISIONS` (OPQ too). OPQ's rotation
#: search costs 50-90 s per fit on 2 cores at 192 d (faiss's 50 iterations), so the trained
#: levels and the PCA levels get PQ only.
#: The 4-bit PQs (faiss's fast scan) hold the same bytes with twice the sub-vectors.
FAST_SCAN = [f"pq{2 * m}x4" for m in PRODUCT_BYTES]
GRID = RECIPE_PRECISIONS + [(p, 0) for p in [f"pq{m}" for m in PRODUCT_BYTES] + FAST_SCAN]
RAW_PRECISIONS = RECIPE_PRECISIONS + [
    (p, 0) for p in RAW_PRODUCTS + OPQ_PRODUCTS + FAST_SCAN + [f"o{p}" for p in FAST_SCAN]]
BUDGETS = (24, 48, 96)
METHODS = ["smec", "mrl", "search_adaptor", "matryoshka_adaptor"]


def config_key(row: dict) -> tuple:
    return (row["method"], row["dims"], row["precision"], int(row.get("rescore") or 0),
            row["seed"], row["split"])


def label(row: dict) -> str:
    rescore = f"+rescore x{row['rescore']}" if row.get("rescore") else ""
    return f"{row['method']} {row['dims']} d {row['precision']}{rescore}"


def score_unit(name, compressor, seed, embeddings, holdout, test, keep=None) -> list[dict]:
    """Every row of one compressor and seed, on the hold-out and on test, at the grid's
    precisions (those named in ``keep`` when given)."""
    doc_ids, doc_vecs, query_ids, query_vecs = embeddings
    grid = [p for p in (RAW_PRECISIONS if name == "raw" else GRID) if keep is None
            or p[0] in keep or (name, p[0]) == ("raw", "float32")]   # the tables' 100 %
    rows: list[ResultRow] = []
    for split, qrels in (("holdout", holdout), ("test", test)):
        new = compare(doc_ids, doc_vecs, query_ids, query_vecs, qrels, {name: compressor},
                      include_raw=name == "raw", seed=seed, precisions=grid)
        for row in new:
            row.extra["split"] = split
        rows += new
    return [{"method": r.method, "dims": r.dims, "precision": r.precision,
             "bytes_per_vector": r.bytes_per_vector, "ndcg_at_10": r.ndcg_at_10,
             "recall_at_100": r.recall_at_100, "seed": r.seed, **r.extra} for r in rows]


def picks(rows: list[dict], families: dict[str, list[str]]) -> dict:
    """Per budget and family: the configuration with the best mean hold-out nDCG@10 within
    the budget, with its mean test nDCG@10 (read only after the pick)."""
    by_config: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r["method"], r["dims"], r["precision"], int(r.get("rescore") or 0),
               r["bytes_per_vector"])
        by_config[key][r["split"]].append(r["ndcg_at_10"])
    out: dict = {}
    for budget in BUDGETS:
        out[budget] = {}
        for family, methods in families.items():
            fits = [(k, v) for k, v in by_config.items()
                    if k[0] in methods and k[4] <= budget and v["holdout"]]
            if not fits:
                continue
            (method, dims, precision, rescore, size), scores = max(
                fits, key=lambda kv: (np.mean(kv[1]["holdout"]), -kv[0][4]))
            out[budget][family] = {
                "configuration": label({"method": method, "dims": dims,
                                        "precision": precision, "rescore": rescore}),
                "bytes_per_vector": size, "seeds": len(scores["test"]),
                "holdout_ndcg_at_10": round(float(np.mean(scores["holdout"])), 4),
                "ndcg_at_10": round(float(np.mean(scores["test"])), 4),
                "ndcg_at_10_per_seed": [round(v, 4) for v in scores["test"]]}
    return out


def table(chosen: dict, raw_float: float) -> str:
    families = sorted({f for per in chosen.values() for f in per},
                      key=lambda f: (f != "untrained", f != "trained", f))
    lines = ["| budget | family | picked on the hold-out | hold-out | test nDCG@10 | "
             "% of raw float32 |", "|---|---|---|---|---|---|"]
    for budget, per in chosen.items():
        for family in families:
            if family in per:
                p = per[family]
                lines.append(f"| {budget} B | {family} | {p['configuration']} "
                             f"({p['bytes_per_vector']} B) | {p['holdout_ndcg_at_10']:.4f} | "
                             f"{p['ndcg_at_10']:.4f} | {100 * p['ndcg_at_10'] / raw_float:.1f} |")
    return "\n".join(lines)


def plot(chosen: dict, raw_float: float, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    families = sorted({f for per in chosen.values() for f in per})
    for family in families:
        xs = [b for b in BUDGETS if family in chosen[b]]
        style = {"untrained": dict(color="black", lw=2.2), "trained": dict(color="#d62728",
                                                                          lw=2.2)}
        ax.plot(xs, [chosen[b][family]["ndcg_at_10"] for b in xs], marker="o", label=family,
                **style.get(family, dict(lw=1, alpha=0.7)))
    ax.axhline(raw_float, color="#888", ls="--", lw=1, label="raw float32 (1,536 B)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(BUDGETS), [f"{b} B" for b in BUDGETS])
    ax.set_xlabel("bytes per vector (best configuration within, picked on the hold-out)")
    ax.set_ylabel("test nDCG@10 (3 seeds)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="the out folder of `smec bench compression` (embeddings, "
                             "compressors/LABEL/seedK)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", nargs="*", default=METHODS,
                        help="trained compressors to score (none: the untrained ones only)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="score only these precisions of the grid")
    parser.add_argument("--rows-from", type=Path, nargs="*", default=[],
                        help="earlier outs whose rows.jsonl rows join the picks (only from "
                             "the same compressors: a retrained one makes them stale)")
    args = parser.parse_args()
    if args.precisions:
        unknown = set(args.precisions) - {p for p, _ in RAW_PRECISIONS + GRID}
        if unknown:
            parser.error(f"--precisions {sorted(unknown)}: not in the grid {RAW_PRECISIONS}")
    cfg = load_config(args.config)
    paths = resolve_beir_dir(args.data_dir, cfg.data.train_split, cfg.data.test_split,
                             cfg.data.split_test_frac)
    run = RunFolder(args.run)
    loaded = run.load_embeddings()
    embeddings = loaded.as_tuple()
    doc_ids, doc_vecs, query_ids, _ = embeddings
    test = paths.read_test_qrels()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"
    done = {(r["unit"]) for r in map(json.loads, log.read_text().splitlines())} \
        if log.is_file() else set()
    recipes = baselines(doc_vecs.shape[1], [doc_vecs.shape[1] // f for f in (2, 4, 8, 16)],
                        doc_vecs, RECIPES)
    started = time.perf_counter()
    for seed in range(args.seeds):
        holdout = holdout_qrels(paths.read_train_qrels(), doc_ids, query_ids,
                                updated(cfg.train, seed=seed))
        units = [(name, compressor) for name, compressor in recipes.items()]
        units += [(m, run.bench_compressor(m, seed)) for m in args.methods]
        for name, compressor in units:
            unit = f"{name}/seed{seed}" + (f"@{','.join(args.precisions)}"
                                           if args.precisions else "")   # resume: same grid
            if unit in done:
                continue
            if isinstance(compressor, Path):
                compressor = load_compressor(compressor)
            start = time.perf_counter()
            rows = score_unit(name, compressor, seed, embeddings, holdout, test,
                              args.precisions)
            with log.open("a") as f:
                f.write(json.dumps({"unit": unit, "seconds": time.perf_counter() - start,
                                    "rows": rows}) + "\n")
            print(f"{unit}: {len(rows)} rows in {time.perf_counter() - start:.0f} s "
                  f"({(time.perf_counter() - started) / 60:.1f} min in)", flush=True)
    units = [json.loads(line) for line in log.read_text().splitlines()]
    rows = [r for u in units for r in u["rows"]]
    earlier = [json.loads(line) for d in args.rows_from
               for line in (d / "rows.jsonl").read_text().splitlines()]
    joined = {config_key(r): r for u in earlier for r in u["rows"]}   # a later folder wins
    for r in rows:                               # a configuration scored here replaces the old
        joined.pop(config_key(r), None)
    rows += list(joined.values())
    trained = sorted({r["method"] for r in rows} - set(UNTRAINED))
    families = {"untrained": list(UNTRAINED), "trained": trained, **{m: [m] for m in trained}}
    chosen = picks(rows, families)
    raw_float = float(np.mean([r["ndcg_at_10"] for r in rows if r["method"] == "raw"
                               and r["precision"] == "float32" and r["split"] == "test"]))
    targets = {b: {"trained_minus_untrained": round(
        chosen[b]["trained"]["ndcg_at_10"] - chosen[b]["untrained"]["ndcg_at_10"], 4),
        "met_plus_1_point": chosen[b]["trained"]["ndcg_at_10"]
        >= chosen[b]["untrained"]["ndcg_at_10"] + 0.01} for b in BUDGETS
        if {"trained", "untrained"} <= set(chosen[b])}
    result_rows = [ResultRow(r["method"], r["dims"], r["ndcg_at_10"], r["recall_at_100"],
                             r["precision"], r["seed"], r["bytes_per_vector"],
                             {k: r[k] for k in ("rescore",) if r.get(k)} |
                             ({"split": "holdout"} if r["split"] == "holdout" else {}))
                   for r in rows]
    write_results(args.out / "results.json", paths.name, loaded.meta.get("model", "?"),
                  paths.split_label, result_rows,
                  {"score_s": sum(u["seconds"] for u in units),
                   "earlier_score_s": sum(u["seconds"] for u in earlier)},
                  picks={str(b): v for b, v in chosen.items()}, targets=targets,
                  raw_float32_ndcg_at_10=round(raw_float, 4), grid=[list(p) for p in GRID],
                  raw_grid=[list(p) for p in RAW_PRECISIONS],
                  source_run=str(args.run), test_qrels_read=1,
                  precisions_scored_here=args.precisions or "all",
                  rows_from=[str(d) for d in args.rows_from],
                  protocol="picked on the mean hold-out nDCG@10 over seeds; test read after")
    md = table(chosen, raw_float)
    scope = (f"precisions scored here: {', '.join(args.precisions or ['the whole grid'])}"
             + (f"; rows joined from {', '.join(map(str, args.rows_from))}"
                if args.rows_from else ""))
    (args.out / "results.md").write_text(
        f"# Equal bytes on {paths.name} ({paths.split_label}), {args.seeds} seeds\n\n"
        f"{scope}\n\n{md}\n")
    plot(chosen, raw_float, args.out / "ndcg_at_budget.png",
         f"{paths.name}: best configuration within each budget (hold-out pick)")
    print(md)
    write_json(args.out / "targets.json", targets)


if __name__ == "__main__":
    main()
