"""Put the rows of the methods one `smec bench compression` re-ran into an earlier bench's file.

    python benchmarks/merge_rows.py EARLIER/results.json NEW/results.json --out FOLDER

When one method's defaults change, only that method needs training again: run the bench with
`--methods smec` into NEW, then merge. Every method trained in NEW replaces that method's
rows, timings and per-method records in EARLIER; the untrained recipes (raw, PCA, ...) stay
EARLIER's, and at float32 they must agree with NEW's to 1e-3, so both files scored the same
data the same way (the largest difference of any recipe row is recorded). Cross-method
figures of EARLIER that are not per-method records (a ratio of two methods' epoch times) are
kept as they were: drop them when their methods now come from different runs. FOLDER gets
results.json, results.md, ndcg_vs_bytes.png and targets.md; results.json says which methods
came from which file. Nothing is trained or scored here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from smec.errors import SmecError
from smec.io import write_json
from smec.report import markdown_table, plot_ndcg_vs_bytes
from smec.results import read_results
from smec.training.methods import METHODS

from targets import targets_table   # benchmarks/targets.py, beside this script


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("method", "dims", "precision", "rescore", "split", "seed"))


def _trained(row: dict) -> bool:
    """A trained method's row (``smec``, ``mrl``, ``smec:none``...), not a recipe's."""
    return row["method"].split(":")[0] in METHODS


def merge(earlier: dict, new: dict) -> dict:
    """``earlier`` with the methods trained in ``new`` replaced by ``new``'s."""
    for key in ("dataset", "model", "split"):
        if earlier[key] != new[key]:
            raise SmecError(f"the two files differ in {key}: {earlier[key]!r} vs {new[key]!r}")
    retrained = sorted({r["method"] for r in new["rows"] if _trained(r)})
    fixed_new = {_key(r): r["ndcg_at_10"] for r in new["rows"] if not _trained(r)}
    # Re-embedding moves vectors by float noise, which can swap near-tied documents at a low
    # level (~1e-4), and quantised recipes refit their codebooks (faiss k-means) per run; a
    # different dataset, split or model moves float32 scores by far more than 1e-3.
    drift = 0.0
    for row in earlier["rows"]:
        if _trained(row) or _key(row) not in fixed_new:
            continue
        gap = abs(fixed_new[_key(row)] - row["ndcg_at_10"])
        if row["precision"] == "float32" and gap > 1e-3:
            raise SmecError(f"{row['method']} {row['dims']} d {row['precision']} scores "
                            f"{row['ndcg_at_10']:.6f} in one file and "
                            f"{fixed_new[_key(row)]:.6f} in the other: not the same data")
        drift = max(drift, gap)
    rows = [r for r in earlier["rows"] if r["method"] not in retrained] \
        + [r for r in new["rows"] if r["method"] in retrained]
    merged = {**earlier, "rows": rows,
              "timings_s": {**earlier["timings_s"], **new["timings_s"]}}
    for key, value in new.items():   # per-method records (epochs_trained, gradient_balance...)
        if isinstance(value, dict) and isinstance(earlier.get(key), dict) and key != "timings_s":
            merged[key] = {**earlier[key], **value}
    merged["merged_from"] = {"retrained": retrained, "kept": sorted(
        {r["method"] for r in earlier["rows"] if _trained(r)} - set(retrained)),
        "recipes_max_abs_difference": round(drift, 6)}
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("earlier", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = merge(read_results(args.earlier), read_results(args.new))
    merged["merged_from"] |= {"earlier": str(args.earlier), "new": str(args.new)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", merged)
    (args.out / "results.md").write_text(markdown_table(merged) + "\n")
    plot_ndcg_vs_bytes(merged, args.out / "ndcg_vs_bytes.png")
    (args.out / "targets.md").write_text(targets_table(merged) + "\n")
    print(f"{', '.join(merged['merged_from']['retrained'])} from {args.new}; the rest from "
          f"{args.earlier} -> {args.out}")


if __name__ == "__main__":
    main()
