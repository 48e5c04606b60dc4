"""Tables and plots of results (results.json files, training histories): no training code here;
:func:`publish` writes a results.json with its table and its plot."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smec.io import atomic_path

if TYPE_CHECKING:
    from smec.runfolder import RunFolder

METHOD_ORDER = ["raw", "truncation", "pca", "pca_uncentred", "smec"]


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _precision_label(row: dict) -> str:
    return row["precision"] + (f"+rescore x{row['rescore']}" if row.get("rescore") else "")


def markdown_table(results: dict, split: str | None = None) -> str:
    """Method × dims, each cell ``nDCG@10`` (mean ± std over seeds when there are several), on
    the file's split (test) or on ``split`` (``holdout``)."""
    from smec.results import scored_rows
    split = split or results["split"]
    cells: dict[tuple[str, str], dict[int, list[float]]] = {}
    dims_bytes: dict[int, int] = {}
    for row in scored_rows(results, split):
        key = (row["method"], _precision_label(row))
        cells.setdefault(key, {}).setdefault(row["dims"], []).append(row["ndcg_at_10"])
        dims_bytes.setdefault(row["dims"], row["bytes_per_vector"])
    dims = sorted(dims_bytes, reverse=True)
    header = "| method | precision | " + " | ".join(
        f"{d} d ({dims_bytes[d]} B)" for d in dims) + " |"
    lines = [f"nDCG@10 — {results['dataset']} / {results['model']} / {split}", "",
             header, "|" + "---|" * (len(dims) + 2)]
    for method, precision in sorted(cells, key=lambda k: (_method_key(k[0]), k[1])):
        values = cells[(method, precision)]
        row = []
        for d in dims:
            v = values.get(d)
            if not v:
                row.append("")
            elif len(v) == 1:
                row.append(f"{v[0]:.4f}")
            else:
                row.append(f"{np.mean(v):.4f} ± {np.std(v):.4f}")
        lines.append(f"| {method} | {precision} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_ndcg_vs_bytes(results: dict, path: Path | str) -> Path:
    """nDCG@10 against bytes per vector (log x), one line per method.

    With one precision a line is the method's levels; with several (int8, binary, + rescore)
    each point is the method's best row (mean over seeds) at that many bytes or fewer — the
    curve a user with that memory budget can reach — so the picture stays readable.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smec.results import scored_rows

    cells: dict[str, dict[int, dict[str, list[float]]]] = {}
    for row in scored_rows(results):
        by_bytes = cells.setdefault(row["method"], {}).setdefault(row["bytes_per_vector"], {})
        by_bytes.setdefault(f"{row['dims']}:{_precision_label(row)}", []).append(
            row["ndcg_at_10"])
    mixed = len({_precision_label(r) for r in scored_rows(results)}) > 1
    fig, ax = plt.subplots(figsize=(8.5 if mixed else 7, 4.5))
    for method in sorted(cells, key=_method_key):
        xs = sorted(cells[method])
        ys = [max(float(np.mean(v)) for v in cells[method][x].values()) for x in xs]
        if mixed:   # a budget of x bytes can hold any row of fewer bytes too
            ys = list(np.maximum.accumulate(ys))
        ax.plot(xs, ys, marker="o" if len(xs) > 1 else "*",
                markersize=6 if len(xs) > 1 else 12, label=method)
    ax.set_xscale("log", base=2)
    ticks = sorted({x for values in cells.values() for x in values})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("bytes per vector" + (" (best level and precision within the budget)"
                                        if mixed else ""))
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"{results['dataset']} — {results['model']} ({results['split']})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def concat_table(results: dict) -> str:
    """One line per row, sorted by CF: the numbers the issue asks to quote."""
    refs = results["references"]
    title = (f"concat-encode-quantize — {results['dataset']} ({results['split']}); CF vs the "
             f"float32 concat ({refs['concat']['bytes_per_vector']} B) and vs the best single "
             f"model ({refs['best_single']['method']}, {refs['best_single']['bytes_per_vector']} B)")
    header = ("| method | dims | precision | bytes | CF concat | CF single | nDCG@10 | retained "
              "| recall@100 |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["rows"], key=lambda r: (r["cf_vs_concat"], r["method"])):
        precision = r["precision"] + (f" +rescore x{r['rescore']}" if r.get("rescore") else "")
        lines.append(f"| {r['method']} | {r['dims']} | {precision} | {r['bytes_per_vector']} | "
                     f"{r['cf_vs_concat']:g}x | {r['cf_vs_best_single']:g}x | "
                     f"{r['ndcg_at_10']:.4f} | {100 * r['retained']:.1f} % | "
                     f"{r['recall_at_100']:.4f} |")
    return "\n".join(lines)


def plot_retained_vs_cf(results: dict, path: Path) -> Path:
    """Retained % of the float32 concat's nDCG@10 against CF (log x), one line per method and
    precision."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for r in results["rows"]:
        if r["method"].startswith("single:") and r["precision"] == "float32":
            label = r["method"]
        else:
            label = f"{r['method']} {r['precision']}" + (" +rescore" if r.get("rescore") else "")
        series.setdefault(label, []).append((r["cf_vs_concat"], 100 * r["retained"]))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label in sorted(series):
        pts = sorted(series[label])
        single = len(pts) == 1
        ax.plot(*zip(*pts), marker="*" if single else "o", markersize=11 if single else 5,
                linestyle="none" if single else "-", label=label)
    for cf, goal in ((48, 92), (96, 85)):
        ax.plot([cf], [goal], marker="v", color="black", markersize=9)
        ax.annotate(f"goal {goal} % at {cf}x", (cf, goal), textcoords="offset points",
                    xytext=(5, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("compression factor vs the float32 concatenation (log)")
    ax.set_ylabel("nDCG@10 retained, % of the float32 concatenation")
    ax.set_title(f"{results['dataset']} — concat of {len(results['models'])} models "
                 f"({results['split']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def gradient_variance(histories: dict[str, list[dict]], path: Path) -> dict:
    """Adapter-gradient variance per epoch, SMRL vs MRL (SMEC Fig. 6a/7), as a plot + means."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    means = {}
    for method, history in histories.items():
        values = [h["grad_var"] for h in history]
        means[method] = float(np.mean(values))
        ax.plot(range(1, len(values) + 1), values, marker=".", label=method)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (all stages in a row)")
    ax.set_ylabel("variance of the adapter gradient")
    ax.set_title("gradient variance: sequential (SMRL) vs parallel (MRL)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    result: dict = {f"mean_{m}": v for m, v in means.items()}
    result["per_epoch"] = {m: [h["grad_var"] for h in history]
                           for m, history in histories.items()}
    if "mrl" in means and "mrl+smrl" in means:
        result["mrl_over_smrl"] = means["mrl"] / means["mrl+smrl"]
        # The mean is dominated by the first epoch's large gradients; the median of the
        # epoch-by-epoch ratio over the epochs both ran is the robust figure.
        pairs = list(zip(result["per_epoch"]["mrl"], result["per_epoch"]["mrl+smrl"]))
        result["median_epoch_ratio_mrl_over_smrl"] = float(np.median([a / b for a, b in pairs]))
    return result


def publish(run: RunFolder, dataset: str, model: str, split: str, rows: list, timings_s: dict,
            table=markdown_table, plot=plot_ndcg_vs_bytes, plot_path: Path | None = None,
            **extra) -> dict:
    """Write the run folder's results (:func:`smec.results.write_results`), its table and
    its plot (default ``run.plot``); return the results as read
    back."""
    from smec.results import read_results, write_results
    write_results(run.results, dataset, model, split, rows, timings_s, **extra)
    results = read_results(run.results)
    with atomic_path(run.results_table) as tmp:
        tmp.write_text(table(results) + "\n")
    plot(results, plot_path or run.plot)
    return results
