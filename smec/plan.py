"""``smec plan``: which compressor to deploy for a bytes-per-vector budget, from measured rows.

Every (method, dims, precision, rescore) of the given results.json files is one configuration,
scored by its mean **hold-out** nDCG@10 over seeds (train-query validation; ``split:
"holdout"`` rows). The Pareto front keeps each configuration that no smaller-or-equal one beats;
the recommendation under a budget is the best hold-out configuration that fits. Test scores
never choose: the recommendation's test nDCG@10 is shown beside it, for information.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from smec.errors import SmecError
from smec.results import read_results

MAKE_RESULTS = ("no hold-out rows to plan with; make them with `smec demo` (or `smec evaluate` "
                "after `smec train`), or `smec bench compression --data-dir DIR`, then pass "
                "the results.json it writes")


@dataclass(frozen=True)
class Choice:
    method: str
    dims: int
    precision: str
    rescore: int
    bytes_per_vector: int
    holdout_ndcg: float
    test_ndcg: float | None
    seeds: int
    source: str

    def label(self) -> str:
        rescore = f" + rescore×{self.rescore}" if self.rescore else ""
        return f"{self.method} {self.dims} d {self.precision}{rescore}"


def choices(paths: list[Path]) -> list[Choice]:
    """Every configuration of the results files, with its mean hold-out and test nDCG@10."""
    scores: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[tuple, tuple[int, str]] = {}
    for path in paths:
        results = read_results(path)
        for row in results["rows"]:
            key = (row["method"], int(row["dims"]), row.get("precision", "float32"),
                   int(row.get("rescore") or 0), str(path))
            split = "holdout" if row.get("split") == "holdout" else "test"
            scores[key][split].append(float(row["ndcg_at_10"]))
            meta[key] = (int(row["bytes_per_vector"]), str(path))
    found = []
    for key, by_split in scores.items():
        if not by_split["holdout"]:
            continue
        test = by_split["test"]
        found.append(Choice(*key[:4], meta[key][0],
                            sum(by_split["holdout"]) / len(by_split["holdout"]),
                            sum(test) / len(test) if test else None,
                            len(by_split["holdout"]), meta[key][1]))
    if not found:
        raise SmecError(f"{', '.join(map(str, paths))}: {MAKE_RESULTS}")
    return found


def pareto_front(found: list[Choice]) -> list[Choice]:
    """By bytes: each configuration better on hold-out than every one at fewer or equal bytes."""
    front: list[Choice] = []
    for choice in sorted(found, key=lambda c: (c.bytes_per_vector, -c.holdout_ndcg)):
        if not front or choice.holdout_ndcg > front[-1].holdout_ndcg:
            if front and front[-1].bytes_per_vector == choice.bytes_per_vector:
                front.pop()
            front.append(choice)
    return front


def recommend(found: list[Choice], budget: int) -> Choice | None:
    fits = [c for c in found if c.bytes_per_vector <= budget]
    return max(fits, key=lambda c: (c.holdout_ndcg, -c.bytes_per_vector)) if fits else None


def front_table(front: list[Choice], pick: Choice | None) -> str:
    lines = ["| bytes/vector | configuration | hold-out nDCG@10 | test nDCG@10 (info) | seeds |",
             "|---|---|---|---|---|"]
    for c in front:
        mark = " **← recommended**" if c == pick else ""
        test = f"{c.test_ndcg:.4f}" if c.test_ndcg is not None else "–"
        lines.append(f"| {c.bytes_per_vector} | {c.label()}{mark} | {c.holdout_ndcg:.4f} | "
                     f"{test} | {c.seeds} |")
    return "\n".join(lines)


def plot_front(found: list[Choice], front: list[Choice], pick: Choice | None, budget: int,
               path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smec.io import atomic_path
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter([c.bytes_per_vector for c in found], [c.holdout_ndcg for c in found], s=12,
               color="#bbb", label="every configuration")
    ax.step([c.bytes_per_vector for c in front], [c.holdout_ndcg for c in front], where="post",
            color="#1f77b4", label="Pareto front (hold-out)")
    ax.scatter([c.bytes_per_vector for c in front], [c.holdout_ndcg for c in front], s=18,
               color="#1f77b4")
    ax.axvline(budget, color="#d62728", ls="--", lw=1, label=f"budget {budget} B")
    if pick is not None:
        ax.scatter([pick.bytes_per_vector], [pick.holdout_ndcg], s=90, marker="*",
                   color="#d62728", zorder=5, label=pick.label())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector")
    ax.set_ylabel("hold-out nDCG@10")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
