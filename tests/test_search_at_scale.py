"""benchmarks/search_at_scale.py: the streamed ground truth is exact, and --configs / --nlist
pick what they name."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from search_at_scale import CONFIGS, chosen_configs, exact_top, targets_of  # noqa: E402


def test_the_streamed_exact_top_equals_a_whole_corpus_ranking_across_block_edges():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(1003, 16)).astype(np.float32)
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    want = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    for block in (7, 100, 1003, 5000):      # a block edge inside every top 10, and none
        np.testing.assert_array_equal(exact_top(queries, docs, 10, block=block), want)


def test_configs_are_picked_by_prefix_with_the_float_reference_first_and_nlist_applied():
    picked = chosen_configs(["PQ48 IVF", "int8"], 4096)
    assert [c[0] for c in picked] == ["float32 flat (exact)", "PQ48 IVF + rescore", "int8 IVF"]
    assert [c[4] for c in picked] == [None, 4096, 4096]
    assert chosen_configs(None, None) == [tuple(c) for c in CONFIGS]
    with pytest.raises(SystemExit, match="no such configuration"):
        chosen_configs(["PQ7"], None)


def _row(config, kind, qps, recall, size, vectors=10_000_000):
    return {"config": config, "precision": "float32" if "float" in config else "pq32",
            "kind": kind, "qps_batch_1_best": qps, "recall_at_10": recall,
            "bytes_per_vector_in_memory": size, "vectors": vectors}


def test_the_targets_take_the_fastest_small_row_at_the_recall_and_judge_an_ivf_apart():
    rows = [_row("float", "flat", 10.0, 1.0, 1536.0) | {"scan_fraction_of_bound": 0.9},
            _row("slow small", "flat", 50.0, 0.96, 48.0) | {"scan_fraction_of_bound": 0.3},
            _row("fast small", "ivf", 300.0, 0.955, 47.3),
            _row("faster, too few", "ivf", 2000.0, 0.94, 40.0),
            _row("fast, too big", "ivf", 900.0, 0.97, 58.0)]
    targets = targets_of(rows)
    assert targets["best_small_config"] == "fast small"
    assert targets[">= 20x float32 flat queries/s (1 query per call, best thread count each)"] \
        == {"ratio": 30.0, "holds": True}
    assert not targets["flat scans >= 50% of the bandwidth bound (the faiss scan, 1 query per "
                       "call)"]["holds"]
    ten_million = "an IVF at recall@10 >= 0.9 and >= 100x float32 flat queries/s (10M)"
    inverted = targets[ten_million]
    assert inverted["config"] == "faster, too few" and inverted["holds"]
    assert ten_million not in targets_of([r | {"vectors": 1_000_000} for r in rows])
