"""ETL at scale: `smec embed --corpus` (Ray Data) vs a plain single-process loop, 1M and 10M docs.

    python benchmarks/etl_scale.py --part build            # the corpora, in --work (not committed)
    python benchmarks/etl_scale.py --part 1m               # plain loop vs Ray on 1M documents
    python benchmarks/etl_scale.py --part 10m              # Ray on 10M, SIGKILLed, resumed, checked

Corpora are built from real text, never committed: the sentences of the SciFact and ArguAna
corpora (../shared/data, else the bundled mini set) recombined with a seeded generator into
1M documents of 3-12 sentences (realistic length) and 10M documents of 1-2 sentences (for the
memory and resume checks). The model is the registry's 64-d static model
(tokenlearn-static-64d), so the pipeline, not the model, is what is measured.

Each arm runs in its own child process, one after the other, on the same file. Peak RSS is
sampled every 0.2 s, of the driver (the child) and of its whole process tree (Ray's GCS,
raylet and workers included). The plain arm is what a user writes without smec: read the JSONL
line by line, join title and text, ``SentenceTransformer.encode`` 4096 documents at a time,
append them to one Parquet file. The Ray arm is ``run_embed_corpus``, the function behind
`smec embed --corpus`, with the default config (each distinct word tokenised once per worker:
``embed.word_cache``); its summary splits worker time into read+check, tokenise, encode and
write. The third arm is the same with ``embed.word_cache: false`` (the tokenizer on whole
texts), so the word cache's share is measured in the same run. The corpus recombines a finite
pool of sentences, so its vocabulary stops growing sooner than real text's would: the cache's
gain here is an upper bound (tests/test_tokens.py and the README give its cold-cache figure). The 10M part SIGKILLs the whole run (process group) once a third of
its shards are written, resumes it, and checks that every id is in the store exactly once.
Results append to ``benchmarks/results/etl-scale/results.json`` (+ results.md, etl_scale.png).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.process_tree import run_child_peaks

MODEL = "tokenlearn-static-64d"
OUT = REPO / "benchmarks" / "results" / "etl-scale"
CORPORA = {"1m": (1_000_000, 3, 12), "10m": (10_000_000, 1, 2)}
PLAIN_BATCH = 4096


def real_corpora() -> list[Path]:
    """SciFact's and ArguAna's corpus.jsonl (../shared/data), else the bundled mini set's."""
    shared = REPO.parent / "shared" / "data"
    files = [shared / name / "corpus.jsonl" for name in ("scifact", "arguana")]
    if not all(f.is_file() for f in files):
        from smec.data import bundled_dataset_dir
        files = [bundled_dataset_dir() / "corpus.jsonl"]
    return files


def sentences() -> list[str]:
    found = []
    for path in real_corpora():
        for line in path.read_text().splitlines():
            if line.strip():
                text = json.loads(line).get("text", "")
                found += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20]
    return found


def build(work: Path, part: str) -> Path:
    """The corpus of ``part``, written once (seeded) and reused."""
    import numpy as np
    docs, low, high = CORPORA[part]
    path = work / f"corpus-{part}.jsonl"
    if path.is_file():
        return path
    work.mkdir(parents=True, exist_ok=True)
    pool = sentences()
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for start in range(0, docs, 100_000):
            n = min(100_000, docs - start)
            counts = rng.integers(low, high + 1, n)
            picks = rng.integers(0, len(pool), int(counts.sum()))
            at = 0
            lines = []
            for i, c in enumerate(counts):
                text = " ".join(pool[j] for j in picks[at:at + c])
                at += c
                lines.append(json.dumps({"_id": f"doc{start + i}", "title": "", "text": text}))
            fh.write("\n".join(lines) + "\n")
    tmp.rename(path)
    return path


def arm_plain(corpus: Path, out: Path) -> dict:
    """What a user writes without smec: one process, read -> encode -> one Parquet file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smec.encoders import load_model, resolve_model
    start = time.perf_counter()
    model = load_model(resolve_model(MODEL))
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    docs = 0
    ids: list[str] = []
    texts: list[str] = []

    def flush() -> None:
        nonlocal writer
        vectors = np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True),
                             np.float32)
        table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1)), vectors.shape[1])})
        writer = writer or pq.ParquetWriter(out / "embeddings.parquet", table.schema)
        writer.write_table(table)
        ids.clear()
        texts.clear()

    with corpus.open() as fh:
        for line in fh:
            record = json.loads(line)
            ids.append(record["_id"])
            texts.append(f"{record['title']} {record['text']}".strip())
            docs += 1
            if len(ids) == PLAIN_BATCH:
                flush()
    if ids:
        flush()
    writer.close()
    return {"docs": docs, "seconds": time.perf_counter() - start}


def arm_ray(corpus: Path, out: Path, word_cache: bool = True) -> dict:
    from smec.pipelines.embed import run_embed_corpus
    from smec.pipelines.runtime import init_ray

    from smec.config import Config
    from smec.corpus import Source
    cfg = Config()
    cfg.model.name = MODEL
    cfg.embed.word_cache = word_cache
    start = time.perf_counter()
    init_ray()
    summary = run_embed_corpus(Source(corpus), out, cfg, resume=True)
    return {"docs": summary["new_rows"], "seconds": time.perf_counter() - start,
            "summary": summary}


ARMS = {"plain": arm_plain, "ray": arm_ray,
        "ray-whole-texts": lambda corpus, out: arm_ray(corpus, out, word_cache=False)}


def child(arm: str, corpus: Path, out: Path) -> list[str]:
    return [sys.executable, __file__, "--arm", arm, "--corpus", str(corpus), "--store", str(out)]


def measured(arm: str, corpus: Path, out: Path) -> dict:
    result, tree, driver = run_child_peaks(child(arm, corpus, out), REPO, f"{arm} arm")
    result["docs_per_s"] = round(result["docs"] / result["seconds"], 1)
    result["seconds"] = round(result["seconds"], 1)
    result["driver_peak_rss_mib"] = round(driver / 2**20)
    result["tree_peak_rss_mib"] = round(tree / 2**20)
    print(f"[{arm}] {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def kill_after(cmd: list[str], out: Path, fraction: float) -> int:
    """Run ``cmd`` in its own process group; SIGKILL the group once ``fraction`` of the shards
    have markers. Returns the markers there at the kill."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
    done = out / "_done"
    while proc.poll() is None:
        manifest = out / "manifest.json"
        if manifest.is_file() and done.is_dir():
            shards = json.loads(manifest.read_text()).get("shards", 0)
            markers = len(list(done.glob("shard-*.json")))
            if shards and markers >= fraction * shards:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return markers
        time.sleep(0.5)
    raise SystemExit("the run ended before it could be killed")


def exactly_once(out: Path, docs: int) -> dict:
    """Every id of the store counted: rows, distinct ids, and whether both equal ``docs``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from smec.store import sorted_parts
    ids = pa.concat_tables([pq.read_table(p, columns=["id"]) for p in sorted_parts(out)]
                           ).column("id")
    distinct = pc.count_distinct(ids).as_py()
    return {"rows": len(ids), "distinct_ids": distinct, "expected": docs,
            "exactly_once": len(ids) == distinct == docs}


def append(result: dict) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    results["runs"][result["part"]] = result
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def report(results: dict) -> None:
    runs = results["runs"]
    lines = [f"# ETL at scale ({MODEL}, 2-CPU box)", "",
             "| corpus | arm | docs | seconds | docs/s | driver peak RSS MiB | tree peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for part, run in runs.items():
        for arm, a in run["arms"].items():
            lines.append(f"| {part} | {arm} | {a['docs']} | {a['seconds']} | {a['docs_per_s']} "
                         f"| {a['driver_peak_rss_mib']} | {a['tree_peak_rss_mib']} |")
    lines.append("")
    for part, run in runs.items():
        for arm, a in run["arms"].items():
            if "summary" in a:
                lines.append(f"- {part} {arm}: worker seconds {a['summary']['worker_seconds']}, "
                             f"{a['summary']['shards']} shards")
        if "ratio" in run:
            lines.append(f"- {part}: Ray / plain = {run['ratio']}")
        if "resume" in run:
            lines.append(f"- {part}: killed at {run['resume']['markers_at_kill']} of "
                         f"{run['resume']['shards']} shards, resumed; {run['resume']['check']}")
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    plot(runs, OUT / "etl_scale.png")


def plot(runs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = [(f"{part}\n{arm}", a) for part, run in runs.items() for arm, a in run["arms"].items()]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [n for n, _ in bars]
    a.bar(names, [x["docs_per_s"] for _, x in bars], color="#1f77b4")
    a.set_ylabel("docs/s (whole process)")
    a.set_title("throughput")
    b.bar(names, [x["driver_peak_rss_mib"] for _, x in bars], color="#ff7f0e", label="driver")
    b.bar(names, [x["tree_peak_rss_mib"] for _, x in bars], color="#ff7f0e", alpha=0.3,
          label="process tree")
    b.axhline(2048, color="k", lw=0.8, ls="--", label="2 GB target (driver)")
    b.set_ylabel("peak RSS, MiB")
    b.legend(fontsize=8)
    b.set_title("memory")
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"smec embed --corpus vs a plain loop, {MODEL}, {os.cpu_count()} CPUs",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["build", "1m", "10m", "report"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/smec-etl-scale"),
                        help="where the corpora and stores go (GBs; never committed)")
    parser.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(ARMS[args.arm](args.corpus, args.store)))
        return
    if args.part == "build":
        for part in CORPORA:
            print(build(args.work, part), file=sys.stderr)
        return
    if args.part == "report":
        report(json.loads((OUT / "results.json").read_text()))
        return
    import shutil
    corpus = build(args.work, args.part)
    docs = CORPORA[args.part][0]
    load_before = os.getloadavg()
    run: dict = {"part": args.part, "docs": docs, "model": MODEL,
                 "corpus": f"{corpus.name}: {docs} docs of {CORPORA[args.part][1]}-"
                           f"{CORPORA[args.part][2]} sentences, {corpus.stat().st_size} bytes",
                 "command": "python benchmarks/etl_scale.py " + " ".join(sys.argv[1:]),
                 "arms": {}}
    if args.part == "1m":
        for arm in ARMS:
            store = args.work / f"store-{args.part}-{arm}"
            shutil.rmtree(store, ignore_errors=True)
            run["arms"][arm] = measured(arm, corpus, store)
        run["ratio"] = round(run["arms"]["ray"]["docs_per_s"] / run["arms"]["plain"]["docs_per_s"],
                             3)
    else:
        store = args.work / f"store-{args.part}-ray"
        shutil.rmtree(store, ignore_errors=True)
        start = time.perf_counter()
        markers = kill_after(child("ray", corpus, store), store, 1 / 3)
        killed_after = time.perf_counter() - start
        run["arms"]["ray (resumed)"] = measured("ray", corpus, store)
        shards = json.loads((store / "manifest.json").read_text())["shards"]
        run["resume"] = {"markers_at_kill": markers, "shards": shards,
                         "killed_after_s": round(killed_after, 1),
                         "check": exactly_once(store, docs)}
        shutil.rmtree(store, ignore_errors=True)
    run["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                      "loadavg_before": [round(x, 2) for x in load_before],
                      "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    report(append(run))
    print((OUT / "results.md").read_text())


if __name__ == "__main__":
    main()
