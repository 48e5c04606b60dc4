"""ETL throughput: the Ray Data pipeline (`smec embed --corpus`) vs plain single-process
``SentenceTransformer.encode`` on the same documents, model and encode batch size.

    python benchmarks/etl.py --docs 5000 --model paraphrase-MiniLM-L3-v2

The corpus is SciFact's (``--data-dir``, default the full set under ../shared/data/scifact, else
the bundled mini set) repeated with fresh ids up to ``--docs``. The two arms run one after the
other in one invocation (never at the same time: each gets the whole machine), each in its own
child process; peak RSS is the peak of the summed RSS of that child and all its descendants
(Ray's GCS, raylet and workers included), sampled every 0.2 s. Docs/s is end to end after the
imports: the plain arm loads the model, reads the corpus and encodes it; the Ray arm starts Ray,
validates and shards the input, runs the actor pool and writes the Parquet parts.
Writes results.json, results.md and etl.png under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.process_tree import run_child


def default_data_dir() -> Path:
    full = REPO.parent / "shared" / "data" / "scifact"
    if (full / "corpus.jsonl").is_file():
        return full
    from smec.data import bundled_dataset_dir
    return bundled_dataset_dir()


def build_corpus(src: Path, docs: int, dest: Path) -> None:
    """SciFact's corpus repeated (ids suffixed #k) until ``docs`` lines, streamed to ``dest``."""
    lines = [line for line in src.read_text().splitlines() if line.strip()]
    with dest.open("w") as fh:
        for n in range(docs):
            record = json.loads(lines[n % len(lines)])
            record["_id"] = f"{record['_id']}#{n // len(lines)}"
            fh.write(json.dumps(record) + "\n")


def arm_plain(corpus: Path, model_name: str, batch_size: int, num_gpus: float,
              max_seq_length: int | None) -> dict:
    from smec.corpus import Source, plan_shards, read_shard
    from smec.encoders import encode, load_model, resolve_model
    start = time.perf_counter()
    model = load_model(resolve_model(model_name), device="cuda" if num_gpus else "cpu",
                       max_seq_length=max_seq_length)
    if num_gpus:
        model.half()    # as the Ray encoder actors do on a GPU
    source = Source(corpus)
    shards, _ = plan_shards(source, 1 << 30)
    _, texts = read_shard(source, shards[0])
    vectors = encode(model, texts, "", batch_size)
    seconds = time.perf_counter() - start
    return {"docs": len(vectors), "seconds": seconds, "dim": int(vectors.shape[1])}


def arm_ray(corpus: Path, model_name: str, batch_size: int, out: Path, cpus: float,
            num_gpus: float, batch_tokens: int | None, max_seq_length: int | None) -> dict:
    from smec.pipelines.embed import run_embed_corpus
    from smec.pipelines.runtime import init_ray

    from smec.config import Config
    from smec.corpus import Source
    cfg = Config()
    cfg.model.name, cfg.model.encode_batch_size = model_name, batch_size
    cfg.embed.num_cpus_per_actor = cpus
    cfg.embed.num_gpus_per_actor = num_gpus
    cfg.embed.batch_tokens, cfg.model.max_seq_length = batch_tokens, max_seq_length
    start = time.perf_counter()
    init_ray()
    summary = run_embed_corpus(Source(corpus), out, cfg, resume=False)
    seconds = time.perf_counter() - start
    return {"docs": summary["rows"], "seconds": seconds, "pipeline_seconds": summary["seconds"],
            "bytes_written": summary["bytes_written"],
            "worker_seconds": summary["worker_seconds"]}


def flops_per_doc(corpus: Path, model_name: str, max_seq_length: int | None) -> float | None:
    """Mean forward FLOPs per document of a BERT-like model (2 x non-embedding parameters per
    token, plus attention's 4 x layers x hidden x length^2), from the tokens it really sees."""
    from smec.corpus import Source, plan_shards, read_shard
    from smec.encoders import load_model, resolve_model
    from smec.tokens import TextTokenizer, tokenizer_spec
    path = resolve_model(model_name)
    spec = tokenizer_spec(path, max_seq_length)
    if spec is None or spec.kind != "transformer":
        return None
    source = Source(corpus)
    shards, _ = plan_shards(source, 1 << 30)
    _, lengths = TextTokenizer(spec)(read_shard(source, shards[0])[1])
    module = load_model(path)[0].auto_model
    params = sum(p.numel() for n, p in module.named_parameters() if "embeddings" not in n)
    cfg = module.config
    lengths = lengths.astype(np.float64)
    per_doc = 2 * params * lengths + 4 * cfg.num_hidden_layers * cfg.hidden_size * lengths ** 2
    return float(per_doc.mean())


def run_arm(args: argparse.Namespace, arm: str, work: Path) -> dict:
    """Run one arm in a child process; sample the RSS of its whole process tree."""
    cmd = [sys.executable, __file__, "--arm", arm, "--corpus", str(work / "corpus.jsonl"),
           "--model", args.model, "--batch-size", str(args.batch_size),
           "--cpus-per-actor", str(args.cpus_per_actor), "--num-gpus", str(args.num_gpus),
           "--out", str(work / "store")]
    if args.batch_tokens:
        cmd += ["--batch-tokens", str(args.batch_tokens)]
    if args.max_seq_length:
        cmd += ["--max-seq-length", str(args.max_seq_length)]
    result, peak = run_child(cmd, REPO, f"{arm} arm")
    result["docs_per_s"] = round(result["docs"] / result["seconds"], 2)
    result["seconds"] = round(result["seconds"], 2)
    result["peak_rss_mib"] = round(peak / 2**20)
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = ["plain", "ray"]
    labels = ["SentenceTransformer.encode\n(one process)", "Ray Data ETL\n(smec embed --corpus)"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.bar(labels, [results["arms"][k]["docs_per_s"] for k in arms], color=["#888", "#1f77b4"])
    a.set_ylabel("docs/s")
    a.set_title(f"throughput (ratio {results['ratio']:.2f})")
    b.bar(labels, [results["arms"][k]["peak_rss_mib"] for k in arms], color=["#888", "#1f77b4"])
    b.set_ylabel("peak RSS, MiB (process tree)")
    b.set_title("memory")
    fig.suptitle(f"{results['model']}, {results['docs']} docs, batch {results['batch_size']}, "
                 f"{results['machine']['cpus']} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--model", default="paraphrase-MiniLM-L3-v2")
    parser.add_argument("--batch-size", type=int, default=64, help="encode batch size, both arms")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="Ray arm: padded tokens per model call (embed.batch_tokens; "
                             "default: its own, 2048 on a CPU, 65536 on a GPU)")
    parser.add_argument("--max-seq-length", type=int, default=None,
                        help="both arms: truncate documents to this many tokens")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--num-gpus", type=float, default=0.0,
                        help="> 0: both arms encode on cuda in fp16 (GPUs per Ray actor)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/etl-<model>-<docs>")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for the corpus and the store (default: a temp dir)")
    parser.add_argument("--arm", choices=["plain", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    if args.arm == "plain":
        print(json.dumps(arm_plain(args.corpus, args.model, args.batch_size, args.num_gpus,
                                   args.max_seq_length)))
        return
    if args.arm == "ray":
        print(json.dumps(arm_ray(args.corpus, args.model, args.batch_size, args.out,
                                 args.cpus_per_actor, args.num_gpus, args.batch_tokens,
                                 args.max_seq_length)))
        return

    import tempfile
    data_dir = args.data_dir or default_data_dir()
    out = args.out or REPO / "benchmarks" / "results" / f"etl-{Path(args.model).name}-{args.docs}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        build_corpus(data_dir / "corpus.jsonl", args.docs, work / "corpus.jsonl")
        load_before = os.getloadavg()
        arms = {}
        for arm in ("plain", "ray"):
            print(f"[{arm}] {args.docs} docs ...", file=sys.stderr, flush=True)
            arms[arm] = run_arm(args, arm, work)
            print(f"[{arm}] {arms[arm]}", file=sys.stderr, flush=True)
        load_after = os.getloadavg()
        per_doc = flops_per_doc(work / "corpus.jsonl", args.model, args.max_seq_length) \
            if args.num_gpus else None
    results = {
        "benchmark": "etl", "model": args.model, "docs": args.docs,
        "corpus": f"{data_dir / 'corpus.jsonl'} repeated to {args.docs} docs",
        "batch_size": args.batch_size, "num_gpus": args.num_gpus,
        "batch_tokens": args.batch_tokens or "embed.batch_tokens' default", "arms": arms,
        "ratio": round(arms["ray"]["docs_per_s"] / arms["plain"]["docs_per_s"], 3),
        # fraction of a dense fp16 peak (H100/H200 SXM: 989 TFLOP/s) at each arm's docs/s
        "fp16_flop_fraction": None if per_doc is None else {
            arm: round(a["docs_per_s"] * per_doc / 989e12, 4) for arm, a in arms.items()},
        "command": "python benchmarks/etl.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [f"| {name} | {a['docs']} | {a['seconds']} | {a['docs_per_s']} | {a['peak_rss_mib']} |"
            for name, a in (("SentenceTransformer.encode, one process", arms["plain"]),
                            ("Ray Data ETL (smec embed --corpus)", arms["ray"]))]
    (out / "results.md").write_text(
        f"{results['model']}, {args.docs} docs, encode batch {args.batch_size}\n\n"
        "| arm | docs | seconds | docs/s | peak RSS MiB |\n|---|---|---|---|---|\n"
        + "\n".join(rows) + f"\n\nratio (Ray / plain): {results['ratio']}\n")
    plot(results, out / "etl.png")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
