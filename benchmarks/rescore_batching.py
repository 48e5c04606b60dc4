"""Rescoring a batch of queries at once against one query at a time, side by side in one run.

`Searcher.search_vectors` takes R·k candidates per query from the index and ranks them by the
float query against their decoded rescoring codes, one query at a time in a Python loop (a
memory-mapped read, a decode and a product per query). The alternative measured here does it
per call: every candidate code of the call read and decoded once, one batched product. Both
run on the same index and the same queries, alternating, so the shared machine's noise falls
on both; their rankings are checked to be the same.

Index: ``--size`` unit vectors (a mixture of 1,000 Gaussian clusters, 384 d), ITQ binary codes
in a flat or IVF faiss index, int8 rescoring codes kept on disk (memory-mapped), as ``smec
index --rescore-codes`` builds it. Writes results.json under --out.

    python benchmarks/rescore_batching.py --size 200000 --out benchmarks/results/rescore-batching
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from smec.index import Searcher, build_index
from smec.io import write_json
from search_at_scale import write_codes


def batched(searcher: Searcher, queries: np.ndarray, k: int, rescore: int) -> list:
    """The alternative: the candidates of every query of the call rescored at once (each code
    read and decoded once, one batched product), ties to the lower row as in the loop."""
    first = min(len(searcher.ids), k * rescore)
    _, cand = searcher.index.search(np.ascontiguousarray(searcher.quantizer.encode(queries)),
                                    first)
    missing = np.iinfo(np.int64).max
    cand = np.sort(np.where(cand >= 0, cand, missing), axis=1)
    valid = cand != missing
    rows, where = np.unique(np.where(valid, cand, 0), return_inverse=True)
    decoded = searcher.rescorer.decode(np.asarray(searcher.codes[rows]))
    scores = (decoded[where.reshape(cand.shape)] @ queries[:, :, None])[..., 0]
    scores[~valid] = -np.inf
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[(searcher.ids[cand[q, i]], float(scores[q, i])) for i in best[q] if valid[q, i]]
            for q in range(len(cand))]


def corpus(size: int, dim: int = 384, clusters: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(clusters, size=size)] + 0.6 * rng.standard_normal(
        (size, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf"])
    parser.add_argument("--rescore", type=int, nargs="+", default=[4, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rescore-batching"))
    args = parser.parse_args()
    vectors = corpus(args.size + args.queries)
    docs, queries = vectors[:args.size], vectors[args.size:]
    ids = [f"d{i}" for i in range(args.size)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_codes(docs, ids, "binary-itq", work / "codes")
        write_codes(docs, ids, "int8", work / "int8")
        for kind in args.kinds:
            build_index(work / "codes", work / kind, kind, rescore_codes=work / "int8")
            searcher = Searcher(work / kind, nprobe=16)
            for rescore in args.rescore:
                for batch in (1, 16, args.queries):
                    q = queries[:batch] if batch > 1 else queries[:32]
                    if batch == 1:   # one query per call, 32 calls
                        def run_new():
                            return [batched(searcher, q[i:i + 1], 10, rescore)[0]
                                    for i in range(len(q))]

                        def run_old():
                            return [searcher.search_vectors(q[i:i + 1], 10, rescore)[0]
                                    for i in range(len(q))]
                    else:
                        def run_new():
                            return batched(searcher, q, 10, rescore)

                        def run_old():
                            return searcher.search_vectors(q, 10, rescore)
                    got, want = run_new(), run_old()   # also warms the page cache for both
                    same = [[d for d, _ in h] for h in got] == [[d for d, _ in h] for h in want]
                    old = new = float("inf")
                    for _ in range(args.repeats):      # alternating: the noise falls on both
                        new, old = min(new, timed(run_new, 1)), min(old, timed(run_old, 1))
                    row = {"kind": kind, "rescore": rescore, "queries_per_call": batch,
                           "qps_per_query_loop": round(len(q) / old, 1),
                           "qps_batched": round(len(q) / new, 1),
                           "speedup": round(old / new, 2), "same_ranking": bool(same)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {
        "benchmark": "rescoring a batch of queries at once (tried) vs one at a time "
                     "(Searcher.search_vectors, kept)",
        "vectors": args.size, "dim": 384, "index_codes": "binary-itq",
        "rescore_codes": "int8 (memory-mapped)", "repeats_best_of": args.repeats,
        "rows": rows, "command": "python benchmarks/rescore_batching.py "
        f"--size {args.size} --out {args.out}", "test_looked_at": 0,
        "machine": f"{platform.processor() or platform.machine()}, shared 2-core box"})


if __name__ == "__main__":
    main()
