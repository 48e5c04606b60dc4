"""Embedding ETL with Ray Data: input shards -> read/tokenise tasks -> encoder actors -> parts.

The input (a BEIR corpus/queries file, any JSONL, or Parquet) is cut into shards
(:func:`smec.corpus.cut_shards`: byte ranges at line breaks, or Parquet row ranges) and every
shard is checked in parallel, in Ray tasks, before any output is touched
(:func:`parallel_plan`): a bad row stops the run with one ``file:line: reason`` line, or
(``on_bad_row="quarantine"``) goes to ``bad_rows.jsonl``. Ray Data then runs, one row per shard,

    from_items(shard descriptors) -> read task (seek, parse, tokenise for every model)
        -> EncoderActor pool per model, chained (token-budget batches; the last one writes the
           shard's part and marker) -> counts to the driver

so the driver holds neither texts nor vectors. ``resume`` skips shards that have a marker, so
after a crash or SIGKILL every id ends up exactly once; a run whose manifest says "complete" for
the same input, models and settings returns at once without reading the input.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from smec.pipelines.shards import (
    ShardJob,
    ShardWriter,
    actor_resources,
    finished,
    input_stat,
    run_jobs,
    stage_seconds,
)

from smec import console, store
from smec.config import Config
from smec.corpus import (
    OnBadRow,
    Shard,
    ShardCheck,
    Source,
    check_shard,
    cut_shards,
    read_shard,
    resolve_plan,
)
from smec.data import BeirPaths
from smec.encoders import model_spec, resolve_model
from smec.errors import SmecError
from smec.io import atomic_path, write_json
from smec.runfolder import Embeddings, RunFolder
from smec.tokens import TextTokenizer, TokenizerSpec, default_batch_tokens, tokenizer_spec

BAD_ROWS = "bad_rows.jsonl"
READ_CPUS = 0.25     # a read/check task; Ray's CPUs are logical, this lets several overlap


@dataclass(frozen=True)
class EncoderSpec:
    name: str      # registry name or local folder, as the user gave it
    path: str      # the resolved local sentence-transformers folder
    prompt: str    # prepended to every text of this kind (query or document prompt)
    column: str    # output column: "embedding", or "embedding:<name>" in a multi-model store


# --- one row per shard: ids, tokens and vectors travel packed as bytes ------------------------

def _pack_strings(values: list[str]) -> bytes:
    return json.dumps(values, ensure_ascii=False).encode()


def _unpack_strings(blob: bytes) -> list[str]:
    return json.loads(blob)


def pack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """Row dicts -> a numpy batch (bytes and strings as object columns)."""
    if not rows:
        return {}
    return {k: np.array([r[k] for r in rows],
                        dtype=object if isinstance(rows[0][k], (bytes, str)) else None)
            for k in rows[0]}


def unpack_rows(batch: dict[str, np.ndarray]) -> list[dict]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def unpack_vectors(row: dict, column: str) -> np.ndarray:
    """The float32 ``[n, dim]`` vectors an encoder actor added to a shard row."""
    dim = int(row[f"dim:{column}"])
    return np.frombuffer(row[f"vectors:{column}"], np.float32).reshape(-1, dim)


def with_seconds(row: dict, stage: str, seconds: float) -> dict:
    return {**row, f"t_{stage}": float(row.get(f"t_{stage}", 0.0)) + seconds}


@functools.lru_cache(maxsize=8)
def _tokenizer(spec: TokenizerSpec) -> TextTokenizer:
    return TextTokenizer(spec)      # one per worker process: its word cache outlives a task


def read_and_tokenize(batch: dict[str, np.ndarray], *, source: Source,
                      tokenizers: list[tuple[TokenizerSpec | None, str]]
                      ) -> dict[str, np.ndarray]:
    """Ray Data task: shard descriptors -> one row per shard with its ids and, per model k,
    ``tokens:k``/``lengths:k`` (int32 bytes), or ``texts`` for a model that tokenises itself."""
    rows = []
    for spec in batch["shard"]:
        start = time.perf_counter()
        shard = Shard.from_json(str(spec))
        ids, texts = read_shard(source, shard)
        read = time.perf_counter()
        row = {"shard": shard.index, "ids": _pack_strings(ids)}
        for k, (tok, prompt) in enumerate(tokenizers):
            if tok is None:
                row["texts"] = _pack_strings(texts)
                continue
            flat, lengths = _tokenizer(tok)(texts, prompt)
            row[f"tokens:{k}"], row[f"lengths:{k}"] = flat.tobytes(), lengths.tobytes()
        row["t_read"] = read - start
        row["t_tokenize"] = time.perf_counter() - read
        rows.append(row)
    return pack_rows(rows)


class EncoderActor:
    """Ray Data callable class: loads one model per actor and adds its vectors to each shard
    row; the last actor of the chain hands the shard to the ``writer`` instead."""

    def __init__(self, model_path: str, position: int, tokenizer: TokenizerSpec | None,
                 prompt: str, batch_tokens: int | None, encode_batch_size: int,
                 max_seq_length: int | None, threads: int, use_gpu: bool, column: str,
                 writer: ShardWriter | None = None, columns: tuple[str, ...] = ()) -> None:
        import torch

        from smec.encoders import load_model
        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_model(model_path, device=device, max_seq_length=max_seq_length)
        if device == "cuda":
            self.model.half()
        self.position, self.tokenizer, self.prompt = position, tokenizer, prompt
        self.batch_tokens = batch_tokens or default_batch_tokens(device)
        self.encode_batch_size = encode_batch_size
        self.column, self.writer, self.columns = column, writer, columns

    def _vectors(self, row: dict) -> np.ndarray:
        from smec.encoders import encode
        from smec.tokens import encode_tokens
        if self.tokenizer is None:
            return encode(self.model, _unpack_strings(row["texts"]), self.prompt,
                          self.encode_batch_size)
        k = self.position
        return encode_tokens(self.model, self.tokenizer,
                             np.frombuffer(row[f"tokens:{k}"], np.int32),
                             np.frombuffer(row[f"lengths:{k}"], np.int32), self.batch_tokens)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for row in unpack_rows(batch):
            start = time.perf_counter()
            vectors = self._vectors(row)
            row = with_seconds(row, "encode", time.perf_counter() - start)
            if self.writer is None:      # a later stage (another model, the compressor)
                row = {k: v for k, v in row.items() if k not in
                       (f"tokens:{self.position}", f"lengths:{self.position}")}
                row[f"vectors:{self.column}"] = vectors.tobytes()
                row[f"dim:{self.column}"] = vectors.shape[1]
                out.append(row)
                continue
            columns = {c: unpack_vectors(row, c) for c in self.columns if c != self.column}
            columns[self.column] = vectors
            out.append(self.writer(int(row["shard"]), _unpack_strings(row["ids"]), columns,
                                   stage_seconds(row)))
        return pack_rows(out)


def parallel_checks(source: Source, shards: list[Shard]) -> list[ShardCheck]:
    """:func:`check_shard` of every shard, in Ray tasks (here, for a single shard)."""
    if len(shards) <= 1:
        return [check_shard(source, s) for s in shards]
    import ray
    from smec.pipelines.runtime import init_ray, root_cause
    init_ray()
    task = ray.remote(num_cpus=READ_CPUS, max_retries=0)(check_shard)
    try:
        return ray.get([task.remote(source, s) for s in shards])
    except Exception as exc:  # noqa: BLE001 - a failure inside Ray: one line, no traceback
        raise SmecError(root_cause(exc)) from None


def parallel_plan(source: Source, shard_rows: int | None, on_bad_row: OnBadRow = "stop",
                  bad_rows=None) -> tuple[list[Shard], dict]:
    """Cut ``source``, check its shards in parallel, join the checks (see smec.corpus)."""
    shards = cut_shards(source, shard_rows)
    return resolve_plan(source, shards, parallel_checks(source, shards), on_bad_row, bad_rows)


def plan_job(source: Source, out_dir: Path, cfg: Config, encoders: list[EncoderSpec],
             metadata: dict, *, resume: bool, on_bad_row: OnBadRow, label: str) -> ShardJob:
    """Validate ``source`` (parallel checks) unless ``out_dir`` already holds its result."""
    identity, stat = source.identity(input_stat(out_dir) if resume else None)
    fingerprint = {**identity, "shard_rows": cfg.embed.shard_rows,
                   "max_seq_length": cfg.model.max_seq_length,
                   "encoders": [asdict(e) for e in encoders], "metadata": metadata}
    job = ShardJob(out_dir, fingerprint, label, [],
                   dataset=partial(embed_dataset, source=source, encoders=encoders, cfg=cfg),
                   table=partial(_store_table, encoders=encoders, metadata=metadata),
                   action=f"embedding {source.path}", input_stat=stat)
    if resume and (done := finished(out_dir, fingerprint, stat)):
        job.done = done
        return job
    if on_bad_row == "quarantine":
        with atomic_path(out_dir / BAD_ROWS) as tmp, tmp.open("w", encoding="utf-8") as fh:
            job.shards, counts = parallel_plan(source, cfg.embed.shard_rows, on_bad_row, fh)
        if counts["bad_rows"] == 0:
            (out_dir / BAD_ROWS).unlink(missing_ok=True)
    else:
        job.shards, counts = parallel_plan(source, cfg.embed.shard_rows, "stop")
    job.bad_rows = counts["bad_rows"]
    if counts["rows"] == 0:
        raise SmecError(f"{source.path}: no rows to embed")
    return job


def _store_table(ids: list[str], columns: dict[str, np.ndarray], *,
                 encoders: list[EncoderSpec], metadata: dict):
    if [e.column for e in encoders] == ["embedding"]:
        return store.embedding_table(ids, columns["embedding"], metadata)
    models = [{**m, "dim": int(columns[m["column"]].shape[1])} for m in metadata["models"]]
    return store.columns_table(ids, columns, {**metadata, "models": models})


def embed_dataset(todo: list[Shard], writer: ShardWriter | None, *, source: Source,
                  encoders: list[EncoderSpec], cfg: Config, extra_actors: int = 0):
    """Ray Data, one row per shard: read/tokenise tasks -> one encoder actor pool per model,
    chained; the last one writes through ``writer`` (None: it passes the vectors on).

    ``extra_actors``: actors a caller chains after these (``smec compress --corpus``), counted
    when CPUs are shared out."""
    import ray
    ecfg = cfg.embed
    cpus, threads = actor_resources(ecfg.num_actors * len(encoders) + extra_actors,
                                    ecfg.num_cpus_per_actor, ecfg.num_gpus_per_actor)
    specs = [tokenizer_spec(e.path, cfg.model.max_seq_length, ecfg.word_cache)
             for e in encoders]
    dataset = ray.data.from_items([{"shard": s.to_json()} for s in todo],
                                  override_num_blocks=len(todo))
    dataset = dataset.map_batches(
        read_and_tokenize, fn_kwargs={"source": source,
                                      "tokenizers": [(t, e.prompt) for t, e in zip(specs, encoders)]},
        batch_size=1, batch_format="numpy", num_cpus=READ_CPUS)
    for k, (enc, spec) in enumerate(zip(encoders, specs)):
        last = k == len(encoders) - 1
        dataset = dataset.map_batches(
            EncoderActor,
            fn_constructor_kwargs={"model_path": enc.path, "position": k, "tokenizer": spec,
                                   "prompt": enc.prompt, "batch_tokens": ecfg.batch_tokens,
                                   "encode_batch_size": cfg.model.encode_batch_size,
                                   "max_seq_length": cfg.model.max_seq_length,
                                   "threads": threads, "use_gpu": ecfg.num_gpus_per_actor > 0,
                                   "column": enc.column, "writer": writer if last else None,
                                   "columns": tuple(e.column for e in encoders)},
            batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=ecfg.num_actors),
            num_cpus=cpus, num_gpus=ecfg.num_gpus_per_actor or None)
    return dataset


def _prompts(cfg: Config) -> tuple[str, str]:
    """(document, query) prompt: the config's, else the model registry's."""
    spec = model_spec(cfg.model.name)
    return (cfg.model.document_prompt or spec.document_prompt,
            cfg.model.query_prompt or spec.query_prompt)


def embedded(paths: BeirPaths, run: RunFolder, cfg: Config,
             echo=console.echo) -> tuple[Embeddings, float | None]:
    """The run folder's embeddings, made first (Ray Data) where `smec embed` has not finished
    there: (embeddings, the seconds embedding took, or None when they were there)."""
    seconds = None
    if not run.has_embeddings():
        start = time.perf_counter()
        echo(f"embedding {paths.root} with {cfg.model.name} (Ray Data)")
        run_embed(paths, run, cfg)
        seconds = time.perf_counter() - start
    return run.load_embeddings(), seconds


def run_embed(paths: BeirPaths, run: RunFolder, cfg: Config, *, resume: bool = True,
              on_bad_row: OnBadRow = "stop", progress: bool = False) -> dict:
    """Embed the corpus and all queries of a BEIR folder into ``run.embeddings``."""
    model_path = str(resolve_model(cfg.model.name))
    doc_prompt, query_prompt = _prompts(cfg)
    emb_dir = run.embeddings
    metadata = {"model": cfg.model.name, "model_path": model_path,
                "dataset": paths.name, "data_dir": str(paths.root)}
    jobs = []   # both files are validated before anything is embedded or written
    for kind, source, prompt in (("corpus", Source(paths.corpus), doc_prompt),
                                 ("queries", Source(paths.queries, title_field=None),
                                  query_prompt)):
        jobs.append(plan_job(source, emb_dir / kind, cfg,
                             [EncoderSpec(cfg.model.name, model_path, prompt, "embedding")],
                             {**metadata, "kind": kind, "prompt": prompt},
                             resume=resume, on_bad_row=on_bad_row, label=kind))
    corpus, queries = run_jobs(jobs, resume=resume, progress=progress)
    summary = {"model": cfg.model.name, "data_dir": str(paths.root),
               "corpus": corpus, "queries": queries}
    write_json(run.embed_summary, summary)
    return summary


def run_embed_corpus(source: Source, store: Path, cfg: Config, *, resume: bool = True,
                     on_bad_row: OnBadRow = "stop", progress: bool = False,
                     kind: str = "corpus") -> dict:
    """Embed one JSONL/Parquet file into the store folder ``store``, with the documents' prompt
    (``kind="queries"``: the queries' prompt)."""
    model_path = str(resolve_model(cfg.model.name))
    doc_prompt, query_prompt = _prompts(cfg)
    prompt = query_prompt if kind == "queries" else doc_prompt
    job = plan_job(source, store, cfg,
                   [EncoderSpec(cfg.model.name, model_path, prompt, "embedding")],
                   {"model": cfg.model.name, "model_path": model_path, "kind": kind,
                    "input": str(source.path.resolve()), "prompt": prompt},
                   resume=resume, on_bad_row=on_bad_row, label=kind)
    return run_jobs([job], resume=resume, progress=progress)[0]


def run_embed_models(paths: BeirPaths, run: RunFolder, cfg: Config, models: list[str], *,
                     resume: bool = True, on_bad_row: OnBadRow = "stop",
                     progress: bool = False) -> dict:
    """Embed a BEIR folder with several models in one Ray Data pipeline (one actor pool per
    model, chained), into ``run.embeddings/{corpus,queries}`` with one column per model,
    ``embedding:<model>``, and the models (name, column, dim, prompts) in the schema metadata.
    """
    if not models:
        raise SmecError("no models given")
    if len(set(models)) != len(models):
        raise SmecError(f"models: each model once, got {models}")
    specs = [(name, model_spec(name), str(resolve_model(name))) for name in models]
    described = [{"name": name, "column": f"embedding:{name}", "dim": spec.dim,
                  "query_prompt": spec.query_prompt, "document_prompt": spec.document_prompt}
                 for name, spec, _ in specs]
    emb_dir = run.embeddings
    jobs = []
    for kind, source in (("corpus", Source(paths.corpus)),
                         ("queries", Source(paths.queries, title_field=None))):
        encoders = [EncoderSpec(name, path, spec.document_prompt if kind == "corpus"
                                else spec.query_prompt, f"embedding:{name}")
                    for name, spec, path in specs]
        jobs.append(plan_job(source, emb_dir / kind, cfg, encoders,
                             {"models": described, "dataset": paths.name,
                              "data_dir": str(paths.root), "kind": kind},
                             resume=resume, on_bad_row=on_bad_row, label=kind))
    corpus, queries = run_jobs(jobs, resume=resume, progress=progress)
    summary = {"models": models, "data_dir": str(paths.root), "corpus": corpus,
               "queries": queries}
    write_json(run.embed_summary, summary)
    return summary

