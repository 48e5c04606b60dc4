"""The cross-validated pick (smec.selection.pick) on hand-made unit records: no training."""
import pytest

from smec.selection import FOLDS, LEVELS, pick

QUERIES = {0: ["a", "b"], 1: ["c", "d"]}


def _dataset(name: str) -> dict:
    return {"name": name, "start": {d: {q: 0.5 for f in FOLDS for q in QUERIES[f]}
                                    for d in LEVELS}}


def _unit(name: str, fold: int, setting: dict, ndcg: float) -> dict:
    return {"method": "smec", "setting": setting, "dataset": name, "fold": fold,
            "ndcg": {str(d): {q: ndcg for q in QUERIES[fold]} for d in LEVELS},
            "epochs": 3, "seconds": 1.0}


def test_a_setting_drawn_twice_is_scored_once_and_not_dropped():
    """A choice space can draw one setting in several trials; their units repeat the same
    deterministic run. The setting is still a candidate, scored once per (dataset, fold)."""
    datasets = {n: _dataset(n) for n in ("arguana", "scifact")}
    units = [_unit(n, f, {}, 0.55) for n in datasets for f in FOLDS]
    for _ in range(3):   # drawn in three trials
        units += [_unit(n, f, {"batch_unlabelled": 128}, 0.60) for n in datasets for f in FOLDS]
    result = pick("smec", units, datasets)
    assert [r["setting"] for r in result["rows"]] == [{"batch_unlabelled": 128}, {}]
    assert result["best"] == {"batch_unlabelled": 128}
    assert result["rows"][0]["score"] == pytest.approx(0.1)
    assert result["rows"][0]["epochs"] == {"arguana": 6, "scifact": 6}   # not 3 x 6


def test_an_unfinished_setting_is_left_out():
    datasets = {n: _dataset(n) for n in ("arguana", "scifact")}
    units = [_unit(n, f, {}, 0.55) for n in datasets for f in FOLDS]
    units += [_unit("arguana", f, {"lr": 1e-3}, 0.9) for f in FOLDS]   # ASHA stopped it
    assert [r["setting"] for r in pick("smec", units, datasets)["rows"]] == [{}]
