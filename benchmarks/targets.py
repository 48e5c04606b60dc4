"""The targets of issues 4 and 14, read off one `smec bench compression` results.json.

    python benchmarks/targets.py runs/bench-arguana/results.json [--out targets.md]

Every figure is a mean over the seeds of the file (test rows of the file's split unless a line
says hold-out); a target holds when the inequality holds for those means. Nothing is trained or
scored here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from smec.results import read_results, scored_rows


def _mean(rows: list[dict], **match) -> float | None:
    values = [r["ndcg_at_10"] for r in rows
              if all(r.get(k, 0 if k == "rescore" else None) == v for k, v in match.items())]
    return float(np.mean(values)) if values else None


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, holds) for every target the file has the rows for."""
    test, holdout = scored_rows(results), scored_rows(results, "holdout")
    full = max(r["dims"] for r in test)
    d8, d16, d4 = full // 8, full // 16, full // 4

    def f32(method: str, dims: int, rows=test) -> float | None:
        return _mean(rows, method=method, dims=dims, precision="float32", rescore=0)

    out: list[tuple[str, str, bool | None]] = []

    def add(name: str, left: float | None, right: float | None, margin: float = 0.0,
            what: str = "") -> None:
        if left is None or right is None:
            return
        out.append((name, f"{left:.4f} vs {right:.4f}{what}", left >= right + margin))

    raw = _mean(test, method="raw", dims=full, precision="float32", rescore=0)
    add("SMEC at full dim ≥ raw", f32("smec", full), raw)
    levels = sorted({r["dims"] for r in test if r["method"] == "smec" and r["dims"] < full},
                    reverse=True)
    for dims in levels:
        add(f"SMEC {dims} d ≥ PCA {dims} d", f32("smec", dims), f32("pca", dims))
    at48 = [r for r in test if r["method"] == "smec" and r["bytes_per_vector"] == 48]
    if at48:
        cells: dict[tuple, list[float]] = {}
        for r in at48:
            cells.setdefault((r["dims"], r["precision"], r.get("rescore", 0)), []).append(
                r["ndcg_at_10"])
        (dims, precision, rescore), values = max(cells.items(), key=lambda kv: np.mean(kv[1]))
        recipe = _mean(test, method="raw", precision="binary", rescore=4)
        add("smec's best at 48 B ≥ raw binary + rescore (48 B) + 1 point", float(np.mean(values)),
            recipe, 0.01, f" (smec {dims} d {precision}{'+rescore' if rescore else ''})")
    add("SMEC ≥ Matryoshka-Adaptor + 1 point at D/8", f32("smec", d8),
        f32("matryoshka_adaptor", d8), 0.01)
    for dims, label in ((d8, "D/8"), (d16, "D/16")):
        sa, pca = f32("search_adaptor", dims), f32("pca", dims)
        if None not in (sa, pca, f32("smec", dims)):
            out.append((f"SMEC ≥ Search-Adaptor ≥ PCA at {label}",
                        f"{f32('smec', dims):.4f} / {sa:.4f} / {pca:.4f}",
                        f32("smec", dims) >= sa >= pca))
    add("SMEC at D/4 ≥ raw full dim", f32("smec", d4), raw)
    for dims in levels:
        mrl = f32("mrl", dims)
        parts = {m: f32(m, dims) for m in ("mrl+smrl", "mrl+ads", "mrl+sxbm")}
        if mrl is None or None in parts.values():
            continue
        holds = all(v > mrl for v in parts.values()) and all(
            f32("smec", dims) > v for v in parts.values())
        out.append((f"ablation at {dims} d: SMRL, ADS, S-XBM each > MRL; SMEC > each",
                    f"MRL {mrl:.4f}; " + ", ".join(f"{m} {v:.4f}" for m, v in parts.items())
                    + f"; SMEC {f32('smec', dims):.4f}", holds))
    for dims in levels:
        for rows, split in ((holdout, "hold-out"), (test, "test")):
            add(f"ADS ≥ truncation at {dims} d ({split}; smec vs smec-ads)",
                f32("smec", dims, rows), f32("smec-ads", dims, rows))
    grad = results.get("gradient_variance", {})
    if "median_epoch_ratio_mrl_over_smrl" in grad:
        ratio = grad["median_epoch_ratio_mrl_over_smrl"]
        out.append(("SMRL gradient variance ≥ 2× lower than MRL",
                    f"median epoch ratio {ratio:.0f}×", ratio >= 2))
    ratio = results.get("smec_over_matryoshka_adaptor_s_per_epoch")
    if ratio is not None:
        out.append(("SMEC time per epoch ≤ 1.5× Matryoshka-Adaptor's", f"{ratio:.2f}×",
                    ratio <= 1.5))
    mteb = results.get("mteb_crosscheck")
    if mteb is not None:
        out.append(("MTEB's nDCG@10 = ours to 1e-4", f"max abs diff {mteb['max_abs_diff']:.1g}",
                    mteb["max_abs_diff"] < 1e-4))
    memory = results.get("sxbm_memory", {})
    for entry in memory.get("sizes", []) + memory.get("variants", []):
        if entry["memory_size"] == 5000:
            name = entry.get("variant", "S-XBM")
            out.append((f"S-XBM step time ≤ 1.2× ({name}, M = 5000)",
                        f"{entry['step_time_vs_no_memory']:.2f}×",
                        entry["step_time_vs_no_memory"] <= 1.2))
    return out


def targets_table(results: dict) -> str:
    """The targets as a markdown table under a title naming the file's data and seeds."""
    lines = [f"Targets — {results['dataset']} ({results['split']}, {results.get('seeds', 1)} "
             "seeds, means)", "", "| target | measured | holds? |", "|---|---|---|"]
    lines += [f"| {name} | {measured} | {'yes' if ok else '**no**'} |"
              for name, measured, ok in targets(results)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    text = targets_table(read_results(args.results))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
