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

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from smec import store
from smec.config import Config
from smec.corpus import OnBadRow, Shard, Source, plan_shards, read_shard
from smec.data import BeirPaths
from smec.encoders import model_spec, resolve_model
from smec.errors import SmecError
from smec.io import atomic_path, write_json

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


@dataclass
class EmbedJob:
    """One input file -> one store folder, planned (validated) before anything runs."""
    source: Source
    out_dir: Path
    encoders: list[EncoderSpec]
    metadata: dict
    fingerprint: dict
    label: str
    done: dict | None = None                  # the manifest of an already complete store
    shards: list[Shard] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def _load_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / store.MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def plan_job(source: Source, out_dir: Path, cfg: Config, encoders: list[EncoderSpec],
             metadata: dict, *, resume: bool, on_bad_row: OnBadRow, label: str) -> EmbedJob:
    """Validate ``source`` (one streaming pass) unless ``out_dir`` already holds its result."""
    fingerprint = {**source.describe(), "shard_rows": cfg.embed.shard_rows,
                   "max_seq_length": cfg.model.max_seq_length,
                   "encoders": [asdict(e) for e in encoders], "metadata": metadata}
    job = EmbedJob(source, out_dir, encoders, metadata, fingerprint, label)
    manifest = _load_manifest(out_dir)
    if resume and manifest and manifest.get("complete") \
            and manifest.get("fingerprint") == fingerprint:
        job.done = manifest
        return job
    if on_bad_row == "quarantine":
        with atomic_path(out_dir / BAD_ROWS) as tmp, tmp.open("w", encoding="utf-8") as fh:
            job.shards, job.counts = plan_shards(source, cfg.embed.shard_rows, on_bad_row, fh)
        if job.counts["bad_rows"] == 0:
            (out_dir / BAD_ROWS).unlink(missing_ok=True)
    else:
        job.shards, job.counts = plan_shards(source, cfg.embed.shard_rows, "stop")
    if job.counts["rows"] == 0:
        raise SmecError(f"{source.path}: no rows to embed")
    return job


def _clear(out_dir: Path) -> None:
    """Remove what an earlier ETL run wrote into ``out_dir`` (only that)."""
    for part in out_dir.glob("part-*.parquet"):
        part.unlink()
    shutil.rmtree(out_dir / store.DONE_DIR, ignore_errors=True)
    (out_dir / store.MANIFEST).unlink(missing_ok=True)


def _actor_resources(cfg: Config, n_models: int) -> tuple[float, int]:
    """(CPUs reserved per actor, torch threads per actor)."""
    import ray
    ecfg = cfg.embed
    actors = ecfg.num_actors * n_models
    cpus = ecfg.num_cpus_per_actor
    if ecfg.num_gpus_per_actor:
        return cpus, max(1, int(cpus))
    total = ray.cluster_resources().get("CPU", os.cpu_count() or 1)
    if actors * cpus > total - 0.5:
        # Leave CPU for the read tasks, or Ray Data deadlocks with every CPU held by actors
        # that wait for input (PLATFORM.md 2a); Ray's CPUs are logical, threads are set below.
        cpus = max(0.1, (total - 0.5) / actors)
    return cpus, max(1, (os.cpu_count() or 1) // actors)


def _configure_ray_data() -> None:
    """No stall timeout; our own progress bar replaces Ray Data's chatter on stderr."""
    from ray.data import DataContext
    ctx = DataContext.get_current()
    # Ray Data fails a pipeline after 30 min without an output; one batch of a 768-d model on
    # a busy 2-core CPU can legitimately take that long, and a killed run only resumes at the
    # last finished shard. A hung run is still visible on the progress bar.
    ctx.execution_no_progress_timeout_s = -1
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # its "Progress bars disabled. To enable, set ..." advice is for someone else's setup
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _as_matrix(values: np.ndarray) -> np.ndarray:
    return np.stack(values) if values.dtype == object else values


def _store_table(job: EmbedJob, ids: list[str], columns: dict[str, np.ndarray]):
    if [e.column for e in job.encoders] == ["embedding"]:
        return store.embedding_table(ids, columns["embedding"], job.metadata)
    models = [{**m, "dim": int(columns[m["column"]].shape[1])} for m in job.metadata["models"]]
    return store.columns_table(ids, columns, {**job.metadata, "models": models})


def execute_job(job: EmbedJob, cfg: Config, *, resume: bool, progress: bool) -> dict:
    """Embed the shards of ``job`` that are not done yet; returns the run's summary."""
    start = time.perf_counter()
    out_dir = job.out_dir
    if job.done is not None:
        return {**job.done["summary"], "new_rows": 0, "bytes_written": 0, "skipped": True}
    manifest = _load_manifest(out_dir)
    if not resume or manifest is None or manifest.get("fingerprint") != job.fingerprint:
        if manifest is not None and resume:
            print(f"smec: {out_dir}: written for another input, model or settings; "
                  "starting over", file=sys.stderr)
        _clear(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done_dir = out_dir / store.DONE_DIR
    done_dir.mkdir(exist_ok=True)
    for stale in [*out_dir.glob(".*.tmp"), *done_dir.glob(".*.tmp")]:
        stale.unlink()   # temp files of a killed run (their renames never happened)
    write_json(out_dir / store.MANIFEST, {"fingerprint": job.fingerprint, "complete": False,
                                           "shards": len(job.shards)})
    done = {int(p.stem.split("-")[1]) for p in done_dir.glob("shard-*.json")}
    for shard in job.shards:
        if shard.rows == 0 and shard.index not in done:      # every line bad or blank
            write_json(done_dir / f"shard-{shard.index:05d}.json", {"rows": 0, "bytes": 0})
            done.add(shard.index)
    todo = [s for s in job.shards if s.index not in done]
    new_rows = sum(s.rows for s in todo)
    written = 0
    if todo:
        written = _run_pipeline(job, todo, cfg, progress)
    markers = [json.loads(p.read_text()) for p in sorted(done_dir.glob("shard-*.json"))]
    if len(markers) != len(job.shards):
        raise SmecError(f"{out_dir}: {len(markers)} of {len(job.shards)} shards finished")
    seconds = time.perf_counter() - start
    summary = {"rows": sum(m["rows"] for m in markers), "bad_rows": job.counts["bad_rows"],
               "shards": len(job.shards), "shards_resumed": len(job.shards) - len(todo),
               "bytes": sum(m["bytes"] for m in markers), "new_rows": new_rows,
               "bytes_written": written, "seconds": round(seconds, 2),
               "rows_per_s": round(new_rows / seconds, 1) if seconds > 0 else 0.0}
    write_json(out_dir / store.MANIFEST, {"fingerprint": job.fingerprint, "complete": True,
                                           "shards": len(job.shards), "summary": summary})
    return summary


def _run_pipeline(job: EmbedJob, todo: list[Shard], cfg: Config, progress: bool) -> int:
    """Run the Ray Data pipeline over ``todo``; write each shard's part as it completes."""
    import ray
    from tqdm import tqdm

    from pipelines.runtime import root_cause

    _configure_ray_data()
    ecfg = cfg.embed
    cpus, threads = _actor_resources(cfg, len(job.encoders))
    dataset = ray.data.from_items([{"shard": s.to_json()} for s in todo],
                                  override_num_blocks=len(todo))
    dataset = dataset.map_batches(_read_shards, fn_kwargs={"source": job.source}, batch_size=1,
                                  batch_format="numpy", num_cpus=0.25)
    for i, enc in enumerate(job.encoders):
        dataset = dataset.map_batches(
            EncoderActor,
            fn_constructor_kwargs={"model_path": enc.path, "prompt": enc.prompt,
                                   "batch_size": cfg.model.encode_batch_size,
                                   "max_seq_length": cfg.model.max_seq_length,
                                   "threads": threads, "use_gpu": ecfg.num_gpus_per_actor > 0,
                                   "column": enc.column,
                                   "keep_text": i < len(job.encoders) - 1},
            batch_size=ecfg.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=ecfg.num_actors),
            num_cpus=cpus, num_gpus=ecfg.num_gpus_per_actor or None)
    expected = {s.index: s.rows for s in todo}
    columns = [e.column for e in job.encoders]
    pending: dict[int, dict[str, list]] = {}
    written = 0
    bar = tqdm(total=sum(expected.values()), unit=" docs", desc=job.label, disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
    shard_log = None if progress else _ShardLog(job.label, len(todo), sum(expected.values()))
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            shard_col = batch["shard"]
            vectors = {c: _as_matrix(batch[c]) for c in columns}
            for index in np.unique(shard_col):
                mask = shard_col == index
                got = pending.setdefault(int(index), {"id": [], "pos": [],
                                                      **{c: [] for c in columns}})
                got["id"].extend(batch["id"][mask].tolist())
                got["pos"].append(batch["pos"][mask])
                for c in columns:
                    got[c].append(vectors[c][mask])
                bar.update(int(mask.sum()))
                if len(got["id"]) == expected[int(index)]:
                    written += _finish_shard(job, int(index), pending.pop(int(index)), columns)
                    if shard_log is not None:
                        shard_log.shard_done(expected[int(index)])
    except SmecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failure inside Ray: one line, no traceback
        raise SmecError(f"embedding {job.source.path} failed: {root_cause(exc)}") from None
    finally:
        bar.close()
    if pending:
        raise SmecError(f"{job.out_dir}: shards {sorted(pending)} came back incomplete")
    return written


class _ShardLog:
    """Without a progress bar (stderr is a log file, not a terminal): a line per shard."""

    def __init__(self, label: str, shards: int, rows: int) -> None:
        self.label, self.shards, self.rows = label, shards, rows
        self.done_shards, self.done_rows, self.start = 0, 0, time.perf_counter()

    def shard_done(self, rows: int) -> None:
        self.done_shards += 1
        self.done_rows += rows
        rate = self.done_rows / max(time.perf_counter() - self.start, 1e-9)
        left = (self.rows - self.done_rows) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
        print(f"{self.label}: shard {self.done_shards}/{self.shards} written "
              f"({self.done_rows}/{self.rows} docs, {rate:.1f} docs/s, ~{eta} left)",
              file=sys.stderr, flush=True)


def _finish_shard(job: EmbedJob, index: int, got: dict[str, list], columns: list[str]) -> int:
    order = np.argsort(np.concatenate(got["pos"]), kind="stable")   # back to file order
    ids = [got["id"][i] for i in order]
    table = _store_table(job, ids, {c: np.concatenate(got[c])[order] for c in columns})
    path = store.write_part(job.out_dir, index, table)
    size = path.stat().st_size
    write_json(job.out_dir / store.DONE_DIR / f"shard-{index:05d}.json",
               {"rows": len(ids), "bytes": size})
    return size


def run_jobs(jobs: list[EmbedJob], cfg: Config, *, resume: bool, progress: bool) -> list[dict]:
    if any(job.done is None for job in jobs):
        from pipelines.runtime import init_ray
        init_ray()
    return [execute_job(job, cfg, resume=resume, progress=progress) for job in jobs]


def _prompts(cfg: Config) -> tuple[str, str]:
    """(document, query) prompt: the config's, else the model registry's."""
    spec = model_spec(cfg.model.name)
    return (cfg.model.document_prompt or spec.document_prompt,
            cfg.model.query_prompt or spec.query_prompt)


def run_embed(paths: BeirPaths, out: Path, cfg: Config, *, resume: bool = True,
              on_bad_row: OnBadRow = "stop", progress: bool = False) -> dict:
    """Embed the corpus and all queries of a BEIR folder into ``out/embeddings``."""
    model_path = str(resolve_model(cfg.model.name))
    doc_prompt, query_prompt = _prompts(cfg)
    emb_dir = out / "embeddings"
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
    corpus, queries = run_jobs(jobs, cfg, resume=resume, progress=progress)
    summary = {"model": cfg.model.name, "data_dir": str(paths.root),
               "corpus": corpus, "queries": queries}
    write_json(emb_dir / "embed.json", summary)
    return summary


def run_embed_corpus(source: Source, out: Path, cfg: Config, *, resume: bool = True,
                     on_bad_row: OnBadRow = "stop", progress: bool = False) -> dict:
    """Embed one JSONL/Parquet file into the store folder ``out`` (documents' prompt)."""
    model_path = str(resolve_model(cfg.model.name))
    doc_prompt, _ = _prompts(cfg)
    job = plan_job(source, out, cfg,
                   [EncoderSpec(cfg.model.name, model_path, doc_prompt, "embedding")],
                   {"model": cfg.model.name, "model_path": model_path, "kind": "corpus",
                    "input": str(source.path.resolve()), "prompt": doc_prompt},
                   resume=resume, on_bad_row=on_bad_row, label="corpus")
    return run_jobs([job], cfg, resume=resume, progress=progress)[0]


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
    emb_dir = out / "embeddings"
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
    corpus, queries = run_jobs(jobs, cfg, resume=resume, progress=progress)
    for part in (corpus, queries):
        part["docs_per_s"] = part["rows_per_s"]
    summary = {"models": models, "data_dir": str(paths.root), "corpus": corpus,
               "queries": queries}
    write_json(emb_dir / "embed.json", summary)
    return summary


def embeddings_info(out: Path) -> dict:
    path = out / "embeddings" / "embed.json"
    if not path.is_file():
        raise SmecError(f"{path}: not found; run `smec embed --out {out}` first")
    return json.loads(path.read_text())
