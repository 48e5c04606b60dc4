"""Embedding ETL with Ray Data: BEIR texts -> encoder actor pool -> Parquet store.

The corpus is validated and staged to Parquet in fixed-size chunks while it streams (no
whole-corpus list in memory); Ray Data reads the staged chunks, an actor pool of
:class:`EncoderActor` embeds them, and the driver writes the store parts. Everything goes to
a temporary folder that replaces ``OUT/embeddings/<name>`` only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smec.config import Config
from smec.data import BeirPaths, iter_corpus, load_queries
from smec.encoders import resolve_model
from smec.errors import SmecError
from smec.io import atomic_dir, write_json
from smec.store import embedding_table, write_part

STAGE_ROWS = 1024  # rows per staged input file: small enough that several actors get work


class EncoderActor:
    """Ray Data callable class: loads the model once per actor, embeds each batch."""

    def __init__(self, model_path: str, prompt: str, batch_size: int,
                 max_seq_length: int | None, threads: int, use_gpu: bool) -> None:
        import torch
        from smec.encoders import load_model
        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_model(model_path, device=device, max_seq_length=max_seq_length)
        if device == "cuda":
            self.model.half()
        self.prompt, self.batch_size = prompt, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from smec.encoders import encode
        vectors = encode(self.model, [str(t) for t in batch["text"]], self.prompt,
                         self.batch_size)
        return {"id": batch["id"], "embedding": vectors}


def _stage(rows: Iterable[tuple[str, str]], directory: Path) -> int:
    """Write (id, text) rows into Parquet chunks; returns the row count."""
    directory.mkdir(parents=True, exist_ok=True)
    it: Iterator[tuple[str, str]] = iter(rows)
    total, index = 0, 0
    while chunk := list(islice(it, STAGE_ROWS)):
        ids, texts = zip(*chunk)
        pq.write_table(pa.table({"id": list(ids), "text": list(texts)}),
                       directory / f"chunk-{index:06d}.parquet")
        total, index = total + len(chunk), index + 1
    return total


def _read_chunks(batch: pa.Table) -> pa.Table:
    """Ray Data task: a batch of staged chunk paths -> their (id, text) rows."""
    return pa.concat_tables([pq.read_table(path) for path in batch.column("path").to_pylist()])


def embed_texts(rows: Iterable[tuple[str, str]], out_dir: Path, cfg: Config, model_path: Path,
                prompt: str, metadata: dict) -> dict:
    """Embed (id, text) rows into the store ``out_dir``; returns a summary."""
    import ray

    start = time.perf_counter()
    ecfg = cfg.embed
    with atomic_dir(out_dir) as tmp:
        staging = tmp / "staging"
        n_rows = _stage(rows, staging)
        if n_rows == 0:
            raise SmecError(f"{out_dir.name}: no rows to embed")
        threads = ecfg.num_cpus_per_actor if ecfg.num_gpus_per_actor else \
            max(1, (os.cpu_count() or 1) // ecfg.num_actors)
        chunks = sorted(str(p) for p in staging.glob("chunk-*.parquet"))
        # One block per staged chunk: actors share the work, results stream back as they come.
        dataset = ray.data.from_items([{"path": p} for p in chunks],
                                      override_num_blocks=len(chunks))
        dataset = dataset.map_batches(_read_chunks, batch_size=1, batch_format="pyarrow",
                                      num_cpus=0.25).map_batches(
            EncoderActor,
            fn_constructor_kwargs={"model_path": str(model_path), "prompt": prompt,
                                   "batch_size": cfg.model.encode_batch_size,
                                   "max_seq_length": cfg.model.max_seq_length,
                                   "threads": int(threads),
                                   "use_gpu": ecfg.num_gpus_per_actor > 0},
            batch_size=ecfg.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=ecfg.num_actors),
            num_cpus=ecfg.num_cpus_per_actor, num_gpus=ecfg.num_gpus_per_actor or None)
        part, buffered_ids, buffered_vecs, buffered, written = 0, [], [], 0, 0
        meta = {**metadata, "prompt": prompt}
        for batch in dataset.iter_batches(batch_size=ecfg.batch_size, batch_format="numpy"):
            vecs = batch["embedding"]
            vecs = np.stack(vecs) if vecs.dtype == object else vecs
            buffered_ids.extend(batch["id"].tolist())
            buffered_vecs.append(vecs.astype(np.float32, copy=False))
            buffered += len(vecs)
            if buffered >= ecfg.rows_per_part:
                write_part(tmp, part, embedding_table(buffered_ids, np.concatenate(buffered_vecs),
                                                      meta))
                part, written = part + 1, written + buffered
                buffered_ids, buffered_vecs, buffered = [], [], 0
        if buffered:
            write_part(tmp, part, embedding_table(buffered_ids, np.concatenate(buffered_vecs),
                                                  meta))
            written += buffered
        if written != n_rows:
            raise SmecError(f"{out_dir.name}: embedded {written} rows but staged {n_rows}")
        shutil.rmtree(staging)
    seconds = time.perf_counter() - start
    return {"rows": n_rows, "seconds": round(seconds, 2), "rows_per_s": round(n_rows / seconds, 1)}


def run_embed(paths: BeirPaths, out: Path, cfg: Config) -> dict:
    """Embed the corpus and all queries of a BEIR folder into ``out/embeddings``."""
    from pipelines.runtime import init_ray, root_cause

    model_path = resolve_model(cfg.model.name)
    # Validate the whole folder before Ray starts: a bad line fails in seconds, in one line.
    queries = load_queries(paths.queries)
    for _ in iter_corpus(paths.corpus):
        pass
    init_ray()
    emb_dir = out / "embeddings"
    metadata = {"model": cfg.model.name, "model_path": str(model_path),
                "dataset": paths.name, "data_dir": str(paths.root)}
    summary = {"model": cfg.model.name, "data_dir": str(paths.root)}
    try:
        summary["corpus"] = embed_texts(iter_corpus(paths.corpus), emb_dir / "corpus", cfg,
                                        model_path, cfg.model.document_prompt,
                                        {**metadata, "kind": "corpus"})
        summary["queries"] = embed_texts(queries.items(), emb_dir / "queries", cfg, model_path,
                                         cfg.model.query_prompt, {**metadata, "kind": "queries"})
    except SmecError:
        raise
    except Exception as exc:  # a failure inside a Ray actor or task
        raise SmecError(f"embedding failed: {root_cause(exc)}") from None
    write_json(emb_dir / "embed.json", summary)
    return summary


def embeddings_info(out: Path) -> dict:
    path = out / "embeddings" / "embed.json"
    if not path.is_file():
        raise SmecError(f"{path}: not found; run `smec embed --out {out}` first")
    return json.loads(path.read_text())
