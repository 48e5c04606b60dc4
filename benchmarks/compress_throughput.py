"""Compress throughput: `smec compress` (Ray Data) against a plain in-process torch loop over the
same Parquet store, side by side in one run, at several corpus sizes up to >= 1M vectors.

    python benchmarks/compress_throughput.py --store runs/scifact/embeddings/corpus \\
        --compressor runs/demo-mini/compressor --sizes 250000 500000 1000000

The store of each size holds the real corpus vectors first, then synthetic ones drawn from a
Gaussian with the real corpus's mean and covariance (L2-normalised, as the real ones are): a
real corpus of a million documents cannot be embedded on this machine in a session. Both arms
compress the same level to the same precision with the same quantiser (fitted by the Ray arm
on a corpus sample, then reused by the plain arm), write the same Parquet codes, and their
codes are checked equal. Each arm runs alone in its own child process; peak RSS is the peak
summed RSS of that child and its descendants (Ray's processes included), sampled every 0.2 s.
Vectors/s is the pipeline alone (after Ray started and the calibration was fitted; those are
reported beside it). Writes results.json, results.md and compress.png under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.process_tree import run_child

PART_ROWS = 50_000


def synthetic_store(real: Path, size: int, dest: Path, seed: int = 0) -> dict:
    """``size`` vectors into ``dest``: the real ones, then Gaussian ones of the same mean and
    covariance; parts of PART_ROWS rows. Returns what was drawn."""
    from smec.io import write_json
    from smec.store import embedding_table, read_embeddings, write_part
    ids, vectors, meta = read_embeddings(real)
    mean = vectors.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(vectors, rowvar=False) + 1e-6 * np.eye(vectors.shape[1]))
    rng = np.random.default_rng(seed)
    meta = {k: v for k, v in meta.items() if k in ("model", "kind", "prompt", "model_path")}
    written, part = 0, 0
    while written < size:
        n = min(PART_ROWS, size - written)
        real_rows = vectors[written:written + n]
        fresh = n - len(real_rows)
        draw = (rng.standard_normal((fresh, len(mean))) @ chol.T + mean).astype(np.float32)
        draw /= np.linalg.norm(draw, axis=1, keepdims=True)
        chunk = np.concatenate([real_rows, draw])
        chunk_ids = ids[written:written + len(real_rows)] + \
            [f"synthetic-{written + len(real_rows) + i}" for i in range(fresh)]
        write_part(dest, part, embedding_table(chunk_ids, chunk, meta))
        written, part = written + n, part + 1
    write_json(dest / "manifest.json", {"complete": True, "shards": part})
    return {"real": min(size, len(ids)), "synthetic": max(0, size - len(ids)), "parts": part}


def arm_ray(store: Path, compressor: Path, dim: int, precision: str, out: Path,
            num_gpus: float, num_actors: int) -> dict:
    from smec.pipelines.compress import plan_store, run_compress
    from smec.pipelines.runtime import init_ray

    from smec.config import Config, updated
    cfg = Config()
    cfg.compress = updated(cfg.compress, num_gpus_per_actor=num_gpus, num_actors=num_actors)
    start = time.perf_counter()
    init_ray()
    started = time.perf_counter()
    job = plan_store(store, compressor, dim, precision, out, cfg, resume=False)
    planned = time.perf_counter()
    summary = run_compress(job, resume=False, progress=False)
    return {"vectors": summary["rows"], "seconds": summary["seconds"],
            "ray_start_s": round(started - start, 2),
            "plan_and_calibration_s": round(planned - started, 2),
            "bytes_written": summary["bytes_written"]}


def arm_plain(store: Path, compressor_path: Path, dim: int, precision: str, quantizer: Path,
              out: Path, device: str) -> dict:
    """The same work without Ray: read each part, encode, quantise, write its codes part."""
    import pyarrow.parquet as pq
    import torch

    from smec.codes import codes_table
    from smec.compressors.base import load_compressor
    from smec.quantize import Quantizer
    from smec.store import read_columns_of_part, write_part
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    compressor = load_compressor(compressor_path)
    if device != "cpu":
        compressor.to(device)
    q = Quantizer.load(quantizer) if quantizer.is_file() else \
        Quantizer.uncalibrated(precision, dim)
    meta = pq.read_schema(next(iter(sorted(out.parent.glob("ray/part-*.parquet"))))).metadata
    rows = 0
    out.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(sorted(store.glob("part-*.parquet"))):
        ids, vectors = read_columns_of_part(part, ["embedding"])
        codes = q.encode(compressor.encode(vectors["embedding"], dim))
        table = codes_table(ids, codes, {"precision": precision, "dim": dim})
        write_part(out, k, table.replace_schema_metadata(meta))
        rows += len(ids)
    return {"vectors": rows, "seconds": round(time.perf_counter() - start, 2)}


def codes_equal(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq
    parts_a, parts_b = sorted(a.glob("part-*.parquet")), sorted(b.glob("part-*.parquet"))
    return len(parts_a) == len(parts_b) and all(
        pq.read_table(x).equals(pq.read_table(y)) for x, y in zip(parts_a, parts_b))


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = [r["vectors"] for r in results["runs"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm, color in (("plain", "#888"), ("ray", "#1f77b4")):
        label = "plain torch loop" if arm == "plain" else "Ray Data (smec compress)"
        a.plot(sizes, [r[arm]["vectors_per_s"] for r in results["runs"]], "o-", color=color,
               label=label)
        b.plot(sizes, [r[arm]["peak_rss_mib"] for r in results["runs"]], "o-", color=color,
               label=label)
    a.set_xlabel("vectors")
    a.set_ylabel("vectors/s")
    a.set_title("throughput")
    b.set_xlabel("vectors")
    b.set_ylabel("peak RSS, MiB (process tree)")
    b.set_title("memory")
    b.set_ylim(bottom=0)
    a.legend(fontsize=8)
    fig.suptitle(f"{results['compressor_kind']} {results['dims']} d {results['precision']}, "
                 f"{results['machine']['cpus']} CPUs, device {results['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="the real corpus store")
    parser.add_argument("--compressor", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--dims", type=int, default=48)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--num-gpus", type=float, default=0.0,
                        help="> 0: the Ray actor and the plain loop run the compressor on cuda")
    parser.add_argument("--num-actors", type=int, default=1, help="compressor actors (Ray arm)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "compress-minilm")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--report", type=Path, default=None,
                        help="redo targets, table and plot of a results.json, measuring nothing")
    parser.add_argument("--arm", choices=["plain", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--codes", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report is not None:
        report(json.loads(args.report.read_text()), args.report.parent)
        return
    if args.store is None or args.compressor is None:
        parser.error("--store and --compressor are required")
    device = "cuda" if args.num_gpus > 0 else "cpu"
    if args.arm == "ray":
        print(json.dumps(arm_ray(args.store, args.compressor, args.dims, args.precision,
                                 args.codes, args.num_gpus, args.num_actors)))
        return
    if args.arm == "plain":
        print(json.dumps(arm_plain(args.store, args.compressor, args.dims, args.precision,
                                   args.codes.parent / "ray" / "quantizer.npz", args.codes,
                                   device)))
        return

    import tempfile

    from smec.compressors.base import load_compressor
    compressor = load_compressor(args.compressor)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for size in args.sizes:
            store = work / f"store-{size}"
            drawn = synthetic_store(args.store, size, store)
            run = {"vectors": size, **drawn}
            for arm in ("ray", "plain"):
                print(f"[{size}] {arm} ...", file=sys.stderr, flush=True)
                cmd = [sys.executable, __file__, "--arm", arm, "--store", str(store),
                       "--compressor", str(args.compressor), "--dims", str(args.dims),
                       "--precision", args.precision, "--num-gpus", str(args.num_gpus),
                       "--num-actors", str(args.num_actors),
                       "--codes", str(work / "codes" / arm)]
                result, peak = run_child(cmd, REPO, f"{arm} arm at {size}")
                result["vectors_per_s"] = round(result["vectors"] / result["seconds"], 1)
                result["peak_rss_mib"] = round(peak / 2**20)
                run[arm] = result
                print(f"[{size}] {arm}: {result}", file=sys.stderr, flush=True)
            run["codes_equal"] = codes_equal(work / "codes" / "ray", work / "codes" / "plain")
            run["ratio"] = round(run["ray"]["vectors_per_s"] / run["plain"]["vectors_per_s"], 3)
            runs.append(run)
            shutil.rmtree(store)
            shutil.rmtree(work / "codes")
    load_after = os.getloadavg()
    results = {
        "benchmark": "compress", "compressor": str(args.compressor),
        "compressor_kind": getattr(compressor, "method", compressor.kind), "dims": args.dims,
        "precision": args.precision, "device": device, "num_actors": args.num_actors,
        "runs": runs,
        "vectors": ("the real corpus vectors of --store, then Gaussian vectors with its mean "
                    "and covariance, L2-normalised, up to each size"),
        "command": "python benchmarks/compress_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
    }
    report(results, args.out)


def report(results: dict, out: Path) -> None:
    """Targets, results.json, results.md and compress.png from the measured runs."""
    runs = results["runs"]
    rss = [r["ray"]["peak_rss_mib"] for r in runs]
    largest = runs[-1]
    results["targets"] = {
        "ray >= 0.8x plain at the largest size": {
            "vectors": largest["vectors"], "ratio": largest["ratio"],
            "holds": largest["vectors"] >= 1_000_000 and largest["ratio"] >= 0.8},
        "peak RSS flat in corpus size": {
            "ray_peak_rss_mib": rss, "largest_over_smallest": round(rss[-1] / rss[0], 3),
            "holds": len(rss) > 1 and rss[-1] <= 1.25 * rss[0]}}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [(f"{results['compressor_kind']} at {results['dims']} d {results['precision']} on "
              f"{results['device']}, {results['num_actors']} compressor actor(s), "
              f"{results['machine']['cpus']} CPUs; vectors: {results['vectors']}"), "",
             "| vectors | arm | seconds | vectors/s | peak RSS MiB | Ray/plain | codes equal |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        for arm in ("plain", "ray"):
            lines.append(f"| {r['vectors']} | {arm} | {r[arm]['seconds']} | "
                         f"{r[arm]['vectors_per_s']} | {r[arm]['peak_rss_mib']} | "
                         f"{r['ratio'] if arm == 'ray' else ''} | "
                         f"{r['codes_equal'] if arm == 'ray' else ''} |")
    for name, target in results["targets"].items():
        detail = {k: v for k, v in target.items() if k != "holds"}
        lines.append(f"\ntarget {name}: {'holds' if target['holds'] else 'MISSED'} ({detail})")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "compress.png")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
