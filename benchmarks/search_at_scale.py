"""Search at >= 1M vectors: index bytes, build time, queries/s, recall@10 and nDCG@10 per index.

    python benchmarks/search_at_scale.py --run runs/scifact --data-dir ../shared/data/scifact \\
        --compressor runs/demo-mini/compressor --size 1000000

The corpus is the real corpus vectors of ``--run`` (its ``embeddings/``), padded to ``--size``
with synthetic vectors drawn from a Gaussian with the real corpus's mean and covariance
(L2-normalised, as the real ones are); the queries are the real test queries. Every index goes
through smec's own path: codes folder (as `smec compress` writes it) -> ``build_index`` ->
``Searcher.search_vectors`` (R·k candidates, rescored against the dequantised codes).

* recall@10: of the exact float32 top 10 of the *same* vectors (the raw ones for raw rows,
  the level's float vectors for SMEC rows), and of the raw float32 top 10 (``recall_vs_raw``);
* nDCG@10: test qrels, on the index's top 100 with the synthetic documents dropped, so over
  real documents only (a sanity row, not a result: the synthetic documents have no judgements,
  but they can push real ones out of the top 100);
* queries/s: one query per call, as a server answers them, at 1 and 2 faiss threads.
Binary indexes take R·k candidates by Hamming distance and rescore them against int8 codes of
the same vectors kept on disk (memory-mapped; `smec index --rescore-codes`): the index in
memory is the bits alone.
Writes results.json, results.md and search.png under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = [  # name, source, dims, precision, kind, rescore
    ("raw float32 flat", "raw", 384, "float32", "flat", 1),
    ("raw float32 HNSW", "raw", 384, "float32", "hnsw", 1),
    ("SMEC 48-d float32 flat", "smec", 48, "float32", "flat", 1),
    ("SMEC 48-d int8 flat", "smec", 48, "int8", "flat", 4),
    ("SMEC 384-d binary + rescore", "smec", 384, "binary", "flat", 40),
    ("raw binary + rescore", "raw", 384, "binary", "flat", 40),
]
RESCORE_WITH = {"binary": "int8"}   # binary indexes rescore against int8 codes kept on disk


def padded_corpus(real: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """The real vectors, then Gaussian ones of the same mean and covariance, L2-normalised."""
    mean = real.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1]))
    rng = np.random.default_rng(seed)
    out = np.empty((size, real.shape[1]), np.float32)
    out[:len(real)] = real
    for start in range(len(real), size, 100_000):
        n = min(100_000, size - start)
        draw = rng.standard_normal((n, len(mean))) @ chol.T + mean
        out[start:start + n] = draw / np.linalg.norm(draw, axis=1, keepdims=True)
    return out


def write_codes(vectors: np.ndarray, ids: list[str], precision: str, out: Path) -> None:
    """A codes folder as `smec compress` writes it (int8 calibrated on a corpus sample)."""
    from smec.codes import codes_table
    from smec.io import write_json
    from smec.quantize import Quantizer
    from smec.store import write_part
    if precision == "int8":
        sample = vectors[np.random.default_rng(0).choice(len(vectors), 10_000, replace=False)]
        quantizer = Quantizer.fit("int8", sample)
        quantizer.save(out / "quantizer.npz")
    else:
        quantizer = Quantizer.uncalibrated(precision, vectors.shape[1])
    meta = {"precision": precision, "dim": vectors.shape[1], "compressor": "benchmark",
            "compressor_path": "", "models": []}
    parts = 0
    for parts, start in enumerate(range(0, len(vectors), 100_000)):
        chunk = slice(start, start + 100_000)
        write_part(out, parts, codes_table(ids[chunk], quantizer.encode(vectors[chunk]), meta))
    write_json(out / "manifest.json", {"complete": True, "shards": parts + 1})


def exact_top(queries: np.ndarray, docs: np.ndarray, k: int = 10) -> np.ndarray:
    import faiss
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    return index.search(queries, k)[1]


def recall(got: list[list[str]], truth: np.ndarray, ids: list[str]) -> float:
    """Mean share of each query's exact top 10 (rows of ``truth``) that ``got`` found."""
    return round(float(np.mean([len(set(g) & {ids[j] for j in t}) / len(t)
                                for g, t in zip(got, truth)])), 4)


def timed_qps(searcher, queries: np.ndarray, rescore: int, threads: int,
              budget_s: float = 8.0) -> float:
    import faiss
    faiss.omp_set_num_threads(threads)
    searcher.search_vectors(queries[:2], 10, rescore)          # warm caches
    start, done = time.perf_counter(), 0
    for q in queries:
        searcher.search_vectors(q[None], 10, rescore)
        done += 1
        if time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run folder with embeddings/")
    parser.add_argument("--data-dir", type=Path, required=True, help="its BEIR folder (qrels)")
    parser.add_argument("--compressor", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 256],
                        help="HNSW: measure each efSearch on the one built index")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "search-scifact-minilm")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from smec.compressors.base import load_compressor
    from smec.config import Config
    from smec.data import resolve_beir_dir
    from smec.eval import evaluate_run
    from smec.index import Searcher, build_index
    from smec.store import read_embeddings

    doc_ids, real, _ = read_embeddings(args.run / "embeddings" / "corpus")
    query_ids, query_vecs, _ = read_embeddings(args.run / "embeddings" / "queries")
    data = Config().data
    qrels = resolve_beir_dir(args.data_dir, data.train_split, data.test_split,
                             data.split_test_frac).read_test_qrels()
    judged = [i for i, q in enumerate(query_ids) if q in qrels]
    qids, queries = [query_ids[i] for i in judged], query_vecs[judged]
    corpus = padded_corpus(real, args.size)
    ids = doc_ids + [f"synthetic-{i}" for i in range(len(doc_ids), args.size)]
    compressor = load_compressor(args.compressor)
    levels = {("raw", 384): (corpus, queries)}
    for dims in sorted({c[2] for c in CONFIGS if c[1] == "smec"}):
        levels[("smec", dims)] = (compressor.encode(corpus, dims), compressor.encode(queries, dims))
    exact = {key: exact_top(q, d) for key, (d, q) in levels.items()}
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for name, source, dims, precision, kind, rescore in CONFIGS:
            docs, qv = levels[(source, dims)]
            work = Path(tmp)
            write_codes(docs, ids, precision, work / "codes")
            rescore_codes = None
            if precision in RESCORE_WITH:
                rescore_codes = work / "rescore-codes"
                write_codes(docs, ids, RESCORE_WITH[precision], rescore_codes)
            start = time.perf_counter()
            manifest = build_index(work / "codes", work / "index", kind, args.hnsw_m,
                                   rescore_codes=rescore_codes)
            build_s = time.perf_counter() - start
            searcher = Searcher(work / "index")   # vector queries: its text encoder never loads
            for ef in args.ef_search if kind == "hnsw" else [None]:   # one build, each ef
                if ef is not None:
                    searcher.index.hnsw.efSearch = ef
                hits = searcher.search_vectors(qv, 10, rescore)
                got = [[d for d, _ in h] for h in hits]
                run = {q: {d: s for d, s in h if not d.startswith("synthetic-")}
                       for q, h in zip(qids, searcher.search_vectors(qv, 100, rescore))}
                row = {"config": name + (f" (efSearch {ef})" if ef else ""),
                       "vectors": args.size, "dims": dims, "precision": precision,
                       "kind": kind, "rescore": rescore, "ef_search": ef,
                       "index_bytes": manifest["index_bytes"],
                       "rescore_codes": manifest["rescore_precision"],
                       "rescore_bytes_on_disk": manifest["rescore_bytes"],
                       "bytes_per_vector": round(manifest["index_bytes"] / args.size, 1),
                       "build_s": round(build_s, 1),
                       "qps_1_thread": round(timed_qps(searcher, qv, rescore, 1), 1),
                       "qps_2_threads": round(timed_qps(searcher, qv, rescore, 2), 1),
                       "recall_at_10": recall(got, exact[(source, dims)], ids),
                       "recall_vs_raw": recall(got, exact[("raw", 384)], ids),
                       "ndcg_at_10_real_docs": round(evaluate_run(run, qrels)["ndcg_at_10"],
                                                     4)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            for folder in ("codes", "rescore-codes", "index"):
                shutil.rmtree(work / folder, ignore_errors=True)
    load_after = os.getloadavg()
    report(rows, args, load_before, load_after)


def report(rows: list[dict], args: argparse.Namespace, load_before, load_after) -> None:
    by = {r["config"]: r for r in rows}
    flat, binary = by["raw float32 flat"], by["raw binary + rescore"]
    smec_binary = by["SMEC 384-d binary + rescore"]
    targets = {
        "binary + rescore index >= 32x smaller than raw float32 flat": {
            "ratio": round(flat["index_bytes"] / binary["index_bytes"], 2),   # faiss headers:
            "holds": round(flat["index_bytes"] / binary["index_bytes"], 2) >= 32},  # 45 vs 33 B
        "recall@10 >= 0.95 against exact (binary + rescore)": {
            "raw": binary["recall_at_10"], "smec": smec_binary["recall_at_10"],
            "holds": min(binary["recall_at_10"], smec_binary["recall_at_10"]) >= 0.95},
        ">= 5x the queries/s of float32 flat (binary + rescore, 2 threads)": {
            "ratio": round(binary["qps_2_threads"] / flat["qps_2_threads"], 1),
            "holds": binary["qps_2_threads"] / flat["qps_2_threads"] >= 5}}
    results = {"benchmark": "search", "rows": rows, "targets": targets,
               "corpus": (f"the real corpus vectors of {args.run}, padded to {args.size} with "
                          "Gaussian vectors of its mean and covariance (L2-normalised)"),
               "queries": "the real test queries", "compressor": str(args.compressor),
               "command": "python benchmarks/search_at_scale.py " + " ".join(sys.argv[1:]),
               "test_looked_at": "once, here: nDCG@10 is a sanity row; nothing was chosen on it",
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "loadavg_before": [round(x, 2) for x in load_before],
                           "loadavg_after": [round(x, 2) for x in load_after]}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    cols = ["config", "bytes_per_vector", "index_bytes", "rescore_codes", "build_s", "qps_1_thread",
            "qps_2_threads", "recall_at_10", "recall_vs_raw", "ndcg_at_10_real_docs"]
    lines = [f"{args.size} vectors ({results['corpus']}); {os.cpu_count()} CPUs", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    for name, target in targets.items():
        detail = {k: v for k, v in target.items() if k != "holds"}
        lines.append(f"\ntarget {name}: {'holds' if target['holds'] else 'MISSED'} ({detail})")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / "search.png")
    print((args.out / "results.md").read_text())


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        a.scatter(r["bytes_per_vector"], r["recall_at_10"], s=30)
        a.annotate(r["config"], (r["bytes_per_vector"], r["recall_at_10"]), fontsize=7)
        b.scatter(r["bytes_per_vector"], r["qps_2_threads"], s=30)
        b.annotate(r["config"], (r["bytes_per_vector"], r["qps_2_threads"]), fontsize=7)
    for ax, label in ((a, "recall@10 vs exact float32"), (b, "queries/s (2 threads)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("index bytes per vector")
        ax.set_ylabel(label)
    b.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
