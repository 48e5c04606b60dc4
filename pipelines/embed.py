"""Embedding ETL with Ray Data: input shards -> encoder actor pool(s) -> one Parquet part each.

The input (a BEIR corpus/queries file, any JSONL, or Parquet) is validated in one streaming pass
(:func:`smec.corpus.plan_shards`) before any output is touched: a bad row stops the run with one
``file:line: reason`` line, or (``on_bad_row="quarantine"``) goes to ``bad_rows.jsonl``. The
pass cuts the input into shards of ``embed.shard_rows`` lines; Ray Data then runs

    from_items(shard descriptors) -> read task per shard (seek to its byte range, parse)
        -> EncoderActor pool (one per model, chained; each adds its vector column) -> driver

and the driver writes part ``k`` of shard ``k`` atomically as soon as all its rows are back,
then a ``_done/shard-k.json`` marker (see :mod:`smec.store`). ``resume`` skips shards that have
a marker, so after a crash or SIGKILL every id ends up exactly once; a run whose manifest says
"complete" for the same input, models and settings returns at once without reading the input.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from smec.pipelines.shards import ShardJob, actor_resources, finished, run_jobs

from smec import console, store
from smec.config import Config
from smec.corpus import OnBadRow, Shard, Source, plan_shards, read_shard
from smec.data import BeirPaths
from smec.encoders import model_spec, resolve_model
from smec.errors import SmecError
from smec.io import atomic_path, write_json
from smec.runfolder import Embeddings, RunFolder

BAD_ROWS = "bad_rows.jsonl"


@dataclass(frozen=True)
class EncoderSpec:
    name: str      # registry name or local folder, as the user gave it
    path: str      # the resolved local sentence-transformers folder
    prompt: str    # prepended to every text of this kind (query or document prompt)
    column: str    # output column: "embedding", or "embedding:<name>" in a multi-model store


class EncoderActor:
    """Ray Data callable class: loads one model per actor, adds its vectors as ``column``."""

    def __init__(self, model_path: str, prompt: str, batch_size: int,
                 max_seq_length: int | None, threads: int, use_gpu: bool,
                 column: str = "embedding", keep_text: bool = False) -> None:
        import torch

        from smec.encoders import load_model
        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_model(model_path, device=device, max_seq_length=max_seq_length)
        if device == "cuda":
            self.model.half()
        self.prompt, self.batch_size = prompt, batch_size
        self.column, self.keep_text = column, keep_text

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from smec.encoders import encode
        vectors = encode(self.model, [str(t) for t in batch["text"]], self.prompt,
                         self.batch_size)
        out = {k: v for k, v in batch.items() if k != "text" or self.keep_text}
        out[self.column] = vectors
        return out


def _read_shards(batch: dict[str, np.ndarray], source: Source) -> dict[str, np.ndarray]:
    """Ray Data task: shard descriptors -> their good rows (id, text, shard, position)."""
    ids: list[str] = []
    texts: list[str] = []
    shards: list[int] = []
    for spec in batch["shard"]:
        shard = Shard.from_json(str(spec))
        got_ids, got_texts = read_shard(source, shard)
        ids += got_ids
        texts += got_texts
        shards += [shard.index] * len(got_ids)
    n = len(ids)
    return {"id": np.array(ids, dtype=object), "text": np.array(texts, dtype=object),
            "shard": np.array(shards, dtype=np.int64), "pos": np.arange(n, dtype=np.int64)}


def plan_job(source: Source, out_dir: Path, cfg: Config, encoders: list[EncoderSpec],
             metadata: dict, *, resume: bool, on_bad_row: OnBadRow, label: str) -> ShardJob:
    """Validate ``source`` (one streaming pass) unless ``out_dir`` already holds its result."""
    fingerprint = {**source.describe(), "shard_rows": cfg.embed.shard_rows,
                   "max_seq_length": cfg.model.max_seq_length,
                   "encoders": [asdict(e) for e in encoders], "metadata": metadata}
    job = ShardJob(out_dir, fingerprint, label, [], [e.column for e in encoders],
                   dataset=partial(embed_dataset, source=source, encoders=encoders, cfg=cfg),
                   table=partial(_store_table, encoders=encoders, metadata=metadata),
                   action=f"embedding {source.path}")
    if resume and (done := finished(out_dir, fingerprint)):
        job.done = done
        return job
    if on_bad_row == "quarantine":
        with atomic_path(out_dir / BAD_ROWS) as tmp, tmp.open("w", encoding="utf-8") as fh:
            job.shards, counts = plan_shards(source, cfg.embed.shard_rows, on_bad_row, fh)
        if counts["bad_rows"] == 0:
            (out_dir / BAD_ROWS).unlink(missing_ok=True)
    else:
        job.shards, counts = plan_shards(source, cfg.embed.shard_rows, "stop")
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


def embed_dataset(todo: list[Shard], *, source: Source, encoders: list[EncoderSpec],
                  cfg: Config, extra_actors: int = 0):
    """Ray Data: shard descriptors -> read tasks -> one encoder actor pool per model, chained.

    ``extra_actors``: actors a caller chains after these (``smec compress --corpus``), counted
    when CPUs are shared out."""
    import ray
    ecfg = cfg.embed
    cpus, threads = actor_resources(ecfg.num_actors * len(encoders) + extra_actors,
                                    ecfg.num_cpus_per_actor, ecfg.num_gpus_per_actor)
    dataset = ray.data.from_items([{"shard": s.to_json()} for s in todo],
                                  override_num_blocks=len(todo))
    dataset = dataset.map_batches(_read_shards, fn_kwargs={"source": source}, batch_size=1,
                                  batch_format="numpy", num_cpus=0.25)
    for i, enc in enumerate(encoders):
        dataset = dataset.map_batches(
            EncoderActor,
            fn_constructor_kwargs={"model_path": enc.path, "prompt": enc.prompt,
                                   "batch_size": cfg.model.encode_batch_size,
                                   "max_seq_length": cfg.model.max_seq_length,
                                   "threads": threads, "use_gpu": ecfg.num_gpus_per_actor > 0,
                                   "column": enc.column,
                                   "keep_text": i < len(encoders) - 1},
            batch_size=ecfg.batch_size, batch_format="numpy",
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
        run_embed(paths, run.root, cfg)
        seconds = time.perf_counter() - start
    return run.read_embeddings(), seconds


def run_embed(paths: BeirPaths, out: Path, cfg: Config, *, resume: bool = True,
              on_bad_row: OnBadRow = "stop", progress: bool = False) -> dict:
    """Embed the corpus and all queries of a BEIR folder into ``out/embeddings``."""
    model_path = str(resolve_model(cfg.model.name))
    doc_prompt, query_prompt = _prompts(cfg)
    emb_dir = RunFolder(out).embeddings
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
    write_json(emb_dir / "embed.json", summary)
    return summary


def run_embed_corpus(source: Source, out: Path, cfg: Config, *, resume: bool = True,
                     on_bad_row: OnBadRow = "stop", progress: bool = False,
                     kind: str = "corpus") -> dict:
    """Embed one JSONL/Parquet file into the store folder ``out``, with the documents' prompt
    (``kind="queries"``: the queries' prompt)."""
    model_path = str(resolve_model(cfg.model.name))
    doc_prompt, query_prompt = _prompts(cfg)
    prompt = query_prompt if kind == "queries" else doc_prompt
    job = plan_job(source, out, cfg,
                   [EncoderSpec(cfg.model.name, model_path, prompt, "embedding")],
                   {"model": cfg.model.name, "model_path": model_path, "kind": kind,
                    "input": str(source.path.resolve()), "prompt": prompt},
                   resume=resume, on_bad_row=on_bad_row, label=kind)
    return run_jobs([job], resume=resume, progress=progress)[0]


def run_embed_models(paths: BeirPaths, out: Path, cfg: Config, models: list[str], *,
                     resume: bool = True, on_bad_row: OnBadRow = "stop",
                     progress: bool = False) -> dict:
    """Embed a BEIR folder with several models in one Ray Data pipeline (one actor pool per
    model, chained), into ``out/embeddings/{corpus,queries}`` with one column per model,
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
    emb_dir = RunFolder(out).embeddings
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
    write_json(emb_dir / "embed.json", summary)
    return summary

