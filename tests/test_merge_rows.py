"""benchmarks/merge_rows.py: a re-run method's rows replace its old ones; the recipes must agree."""
import sys
from pathlib import Path

import pytest

from smec.errors import SmecError

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from merge_rows import merge  # noqa: E402


def _row(method, ndcg, seed=0, dims=48):
    return {"method": method, "dims": dims, "precision": "float32", "rescore": 0, "seed": seed,
            "split": "test", "ndcg_at_10": ndcg}


def _file(rows, **timings):
    return {"dataset": "d", "model": "m", "split": "test", "rows": rows, "timings_s": timings,
            "epochs_trained": {m: [1] for m in timings}}


def test_the_rerun_method_replaces_its_rows_and_the_others_stay():
    earlier = _file([_row("pca", 0.40), _row("smec", 0.42), _row("smec", 0.43, seed=1),
                     _row("mrl", 0.47)], smec=10.0, mrl=5.0)
    new = _file([_row("pca", 0.40), _row("smec", 0.45)], smec=20.0)
    merged = merge(earlier, new)
    assert sorted((r["method"], r["ndcg_at_10"]) for r in merged["rows"]) == \
        [("mrl", 0.47), ("pca", 0.40), ("smec", 0.45)]
    assert merged["timings_s"] == {"smec": 20.0, "mrl": 5.0}
    assert merged["merged_from"] == {"retrained": ["smec"], "kept": ["mrl"],
                                     "recipes_max_abs_difference": 0.0}


def test_files_that_scored_the_recipes_differently_are_refused():
    """At float32 a recipe's score is a function of the data alone; a PQ row may drift."""
    pq = {**_row("pca", 0.30), "precision": "pq48"}
    merged = merge(_file([_row("pca", 0.40), pq]),
                   _file([_row("pca", 0.40), {**pq, "ndcg_at_10": 0.31}, _row("smec", 0.5)]))
    assert merged["merged_from"]["recipes_max_abs_difference"] == 0.01
    with pytest.raises(SmecError, match="pca 48 d float32 scores 0.400000 in one file"):
        merge(_file([_row("pca", 0.40)]), _file([_row("pca", 0.41), _row("smec", 0.5)]))
    with pytest.raises(SmecError, match="differ in model"):
        merge(_file([]), {**_file([]), "model": "other"})
