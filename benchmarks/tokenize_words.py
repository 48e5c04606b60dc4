"""Tokenising with the word cache vs the tokenizer on whole texts, on real corpora, per core.

    python benchmarks/tokenize_words.py --out benchmarks/results/tokenize-words

Texts: the SciFact and ArguAna corpora (../shared/data; else the bundled mini set), title and
text joined as `smec embed` joins them. For each model whose tokenizer the word cache takes,
three arms on the same texts, each in its own process with one tokenizer thread
(``RAYON_NUM_THREADS=1``: a Ray read task has one CPU, and so the figures are per core):
``whole``, the tokenizer's ``encode_batch_fast`` on whole texts (what `smec embed` did before);
``cold``, a fresh word cache's first pass (every word new to it: the worst case, which is a
corpus's first shard in each worker); ``warm``, the same cache's second pass (every word seen:
the best case). The ids of every arm are compared, and must be equal. A real 100M-document
corpus sits between cold and warm: most of its words are in the cache after a few shards.
Writes results.json and tokenize_words.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.etl_scale import real_corpora

MODELS = ["all-MiniLM-L6-v2", "tokenlearn-static-64d"]


def texts() -> tuple[list[str], list[str]]:
    files = real_corpora()
    found = []
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                found.append(f"{row.get('title', '')} {row['text']}".strip())
    return found, [str(f.relative_to(REPO.parent)) for f in files]


def arm(model: str) -> dict:
    """In a child with one tokenizer thread: seconds of each arm, and whether the ids agree."""
    import hashlib
    from dataclasses import replace

    import numpy as np

    from smec.encoders import resolve_model
    from smec.tokens import TextTokenizer, tokenizer_spec
    docs, _ = texts()
    spec = tokenizer_spec(resolve_model(model))
    whole, cached = TextTokenizer(replace(spec, word_cache=False)), TextTokenizer(spec)
    if cached.cache is None:
        return {"model": model, "word_cache": False}
    seconds, digests = {}, {}
    for name, tokenizer in (("whole", whole), ("cold", cached), ("warm", cached)):
        start = time.perf_counter()
        flat, lengths = tokenizer(docs)
        seconds[name] = time.perf_counter() - start
        digests[name] = hashlib.sha1(flat.tobytes() + lengths.tobytes()).hexdigest()
    return {"model": model, "word_cache": True, "docs": len(docs),
            "tokens": int(np.asarray(lengths).sum()), "raw_words": cached.cache.raw,
            "distinct_words": len(cached.cache.index),
            "docs_per_s": {k: round(len(docs) / v, 1) for k, v in seconds.items()},
            "speedup_vs_whole": {k: round(seconds["whole"] / seconds[k], 2)
                                 for k in ("cold", "warm")},
            "ids_equal": len(set(digests.values())) == 1}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r.get("word_cache")]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.26
    for k, name in enumerate(("whole", "cold", "warm")):
        ax.bar([i + (k - 1) * width for i in range(len(rows))],
               [r["docs_per_s"][name] for r in rows], width,
               label={"whole": "tokenizer on whole texts", "cold": "word cache, first pass",
                      "warm": "word cache, second pass"}[name])
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
    ax.set_ylabel("documents/s on one core")
    ax.legend(fontsize=8)
    ax.set_title(f"tokenising {rows[0]['docs']:,} SciFact + ArguAna documents", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "tokenize-words", help="folder for results.json and the plot")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        print(json.dumps(arm(args.model)))
        return
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for model in MODELS:
        done = subprocess.run([sys.executable, __file__, "--model", model], env=env, cwd=REPO,
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({
        "command": "python benchmarks/tokenize_words.py", "texts": texts()[1],
        "threads": 1, "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    plot(rows, args.out / "tokenize_words.png")


if __name__ == "__main__":
    main()
