"""S-XBM step cost against a step without the term, side by side in one process (issue 21).

SMEC's defaults on ArguAna's training half (``split-test``; first development fold, as
``defaults_selection_v2.py`` cuts it), one epoch per stage, arms interleaved over ``--repeats``
rounds so that a shared box's load falls on all of them alike. The median step of each arm,
the first three steps of each run left out (warm-up). Arms:

* ``no S-XBM term``: α = 0 (the memory is not asked);
* ``S-XBM`` (the default): 128 documents a step, the neighbours' adapter pass without a graph
  (constants, as XBM), the rank pass's outputs reused for rows it passed, the previous
  stage's targets read from a table computed once per stage;
* ``S-XBM, neighbours trained through``: ``sxbm_neighbour_grad: true``;
* ``S-XBM, round 2``: session 17's defaults, 256 documents and neighbours trained through;
* ``S-XBM, round 2, two passes``: the same with the rows the rank loss passed passed again.

Only timings: no hold-out or test score is read. ::

    python benchmarks/sxbm_step.py --dataset ../shared/data/arguana:runs/arguana:split-test \\
        --out benchmarks/results/sxbm-step
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from smec.config import TrainConfig, updated
from smec.io import write_json
from smec.selection import STAGES, load_dataset
from smec.training import engine
from smec.training.prepare import positions_in, prepare_data

ROUND_2 = {"batch_unlabelled": 256, "sxbm_neighbour_grad": True}   # session 17's defaults
ARMS = {"no S-XBM term": ({"alpha": 0.0}, True),
        "S-XBM": ({}, True),
        "S-XBM, neighbours trained through": ({"sxbm_neighbour_grad": True}, True),
        "S-XBM, round 2 (256 documents, neighbours trained through)": (ROUND_2, True),
        "S-XBM, round 2, two passes": (ROUND_2, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="DATA_DIR:RUN_DIR[:TRAIN_SPLIT]")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ds = load_dataset(args.dataset)
    steps: dict[str, list[float]] = {name: [] for name in ARMS}
    timed, plain_step = [], engine.train_step

    def step(*a, **k):
        started = time.perf_counter()
        result = plain_step(*a, **k)
        timed.append(time.perf_counter() - started)
        return result

    engine.train_step = step
    for _ in range(args.repeats):
        for name, (update, shared) in ARMS.items():
            engine.positions_in = positions_in if shared else \
                (lambda rows, among: torch.full_like(rows, -1))
            cfg = updated(TrainConfig().for_method("smec"), stages=STAGES,
                          max_epochs_per_stage=1, **update)
            data = prepare_data(ds["doc_ids"], ds["doc_vecs"], ds["query_ids"],
                                ds["query_vecs"], ds["folds"][0], cfg)
            timed.clear()
            engine.train_method(data, cfg, "smec", engine.Reporter())
            steps[name] += timed[3:]
    base = float(np.median(steps["no S-XBM term"]))
    rows = [{"arm": name, "steps": len(v), "median_step_ms": round(1000 * float(np.median(v)), 1),
             "vs_no_sxbm": round(float(np.median(v)) / base, 3)} for name, v in steps.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"dataset": args.dataset, "repeats": args.repeats,
                                           "torch_threads": torch.get_num_threads(),
                                           "test_qrels_read": 0, "rows": rows})
    lines = ["| arm | steps | median step | vs no S-XBM term |", "|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['steps']} | {r['median_step_ms']} ms | {r['vs_no_sxbm']}× |"
              for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
