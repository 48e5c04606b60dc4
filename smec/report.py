"""Tables and plots from results.json files only (no training code here)."""
from __future__ import annotations

from pathlib import Path

METHOD_ORDER = ["raw", "truncation", "pca", "smec"]


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _precision_label(row: dict) -> str:
    return row["precision"] + (f"+rescore x{row['rescore']}" if row.get("rescore") else "")


def markdown_table(results: dict, split: str | None = None) -> str:
    """Method × dims, each cell ``nDCG@10`` (mean ± std over seeds when there are several), on
    the file's split (test) or on ``split`` (``holdout``)."""
    import numpy as np

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
    import numpy as np

    from smec.io import atomic_path
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
