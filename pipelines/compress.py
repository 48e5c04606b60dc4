"""``smec compress``: a trained compressor over a whole corpus, as a resumable Ray Data job.

    store parts -> CompressActor pool (read the part, encode, quantise, write) -> counts
    (or, with --corpus: input shards -> read/tokenise tasks -> encoder actors -> CompressActor)

The compressor actors write one codes part per input part (or shard) through
:mod:`pipelines.shards`, the machinery ``smec embed`` runs on, so a killed run resumes and every
id lands once; the driver sees counts only. The
int8 calibration is fitted on a sample of the corpus (never queries) before the pipeline
starts and saved beside the parts (``quantizer.npz``); a resumed run reuses it.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from smec.pipelines.embed import (
    EncoderSpec,
    embed_dataset,
    pack_rows,
    parallel_plan,
    unpack_rows,
    unpack_vectors,
)
from smec.pipelines.shards import (
    ShardJob,
    ShardWriter,
    actor_resources,
    finished,
    input_stat,
    load_manifest,
    run_jobs,
    stage_seconds,
)

from smec.codes import (
    QUANTIZER,
    codes_table,
    compressor_fingerprint,
    compressor_models,
    store_models,
)
from smec.compressors.base import Compressor, load_compressor
from smec.compressors.concatenation import ConcatCompressor
from smec.config import Config
from smec.corpus import Source, read_shard
from smec.encoders import resolve_model
from smec.errors import SmecError
from smec.quantize import Quantizer, level_problem
from smec.results import PRECISION_HELP, is_binary
from smec.store import check_complete, part_index, sorted_parts


def _inputs(compressor: Compressor, columns: dict[str, np.ndarray]) -> np.ndarray:
    """The compressor's input matrix from a batch's vector columns."""
    if isinstance(compressor, ConcatCompressor):
        return compressor.concatenate({m["name"]: columns[f"embedding:{m['name']}"]
                                       for m in compressor.models})
    return columns["embedding"]


class CompressActor:
    """Ray Data callable class: vectors -> ``codes`` (compressed, then quantised) -> the shard's
    codes part, written by this actor (``writer``); it returns counts only.

    The vectors come either packed in a shard row (after the encoder actors, ``--corpus``)
    or, for a store, as a part file the actor reads itself (a ``path``/``index`` row): then
    nothing but counts passes through Ray's object store."""

    def __init__(self, compressor_path: str, dim: int, quantizer_path: str | None,
                 precision: str, input_columns: list[str], threads: int, use_gpu: bool,
                 writer: ShardWriter, batch_size: int) -> None:
        import torch
        torch.set_num_threads(max(1, threads))
        self.compressor = load_compressor(compressor_path)
        if use_gpu and torch.cuda.is_available() and hasattr(self.compressor, "to"):
            self.compressor.to("cuda")
        self.dim, self.input_columns, self.writer = dim, input_columns, writer
        self.batch_size = batch_size
        self.quantizer = Quantizer.load(quantizer_path) if quantizer_path else \
            Quantizer.uncalibrated(precision, dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from smec.store import read_columns_of_part
        out = []
        for row in unpack_rows(batch):
            start = time.perf_counter()
            if "path" in row:      # a store part: read it here
                index = int(row["index"])
                ids, vectors = read_columns_of_part(Path(str(row["path"])), self.input_columns)
            else:                  # a shard row from the encoder actors
                index, ids = int(row["shard"]), json.loads(row["ids"])
                vectors = {c: unpack_vectors(row, c) for c in self.input_columns}
            seconds = stage_seconds(row)
            seconds["read"] += time.perf_counter() - start
            start = time.perf_counter()
            codes = self._codes(vectors)
            seconds["encode"] += time.perf_counter() - start
            out.append(self.writer(index, ids, {"codes": codes}, seconds))
        return pack_rows(out)

    def _codes(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        inputs = _inputs(self.compressor, columns)
        return np.concatenate([   # compress.batch_size vectors per call bounds (GPU) memory
            self.quantizer.encode(self.compressor.encode(inputs[i:i + self.batch_size], self.dim))
            for i in range(0, max(len(inputs), 1), self.batch_size)])


@dataclass(frozen=True)
class Part:
    """A store part as a shard of the compress job."""
    index: int
    rows: int
    path: str


def _check_level(compressor: Compressor, path: Path, dim: int, precision: str) -> None:
    if dim not in compressor.dims:
        raise SmecError(f"--dims {dim}: {path} has no level {dim}; its levels are "
                        f"{compressor.dims}")
    try:
        problem = level_problem(precision, dim)
    except ValueError:
        raise SmecError(f"--precision {precision}: choose {PRECISION_HELP}") from None
    if problem:
        raise SmecError(f"--precision {precision} --dims {dim}: {problem}; pick an M that "
                        "divides the dims")
    if is_binary(precision) and dim % 8:
        raise SmecError(f"--dims {dim}: binary codes need a multiple of 8 dims")


def _check_models(store_dir: Path, have: list[dict], want: list[dict], input_dim: int) -> None:
    """Refuse a store from another model, or with another dim, than the compressor's."""
    by_name = {m["name"]: m for m in have}
    for model in want:
        got = by_name.get(model["name"])
        if got is None:
            raise SmecError(f"{store_dir}: embedded with {sorted(by_name)}, but the compressor "
                            f"was trained on {model['name']} embeddings; embed the corpus with "
                            "that model")
        if int(got["dim"]) != int(model["dim"]):
            raise SmecError(f"{store_dir}: {model['name']} vectors of {got['dim']} dims, the "
                            f"compressor expects {model['dim']}")
    if len(want) == 1 and int(have[0]["dim"]) != input_dim:
        raise SmecError(f"{store_dir}: {have[0]['dim']}-d vectors, the compressor expects "
                        f"{input_dim}")


def _sample_store(parts: list[Part], columns: list[str], rows: int, seed: int
                  ) -> dict[str, np.ndarray]:
    """About ``rows`` vectors drawn evenly from every part, one part in memory at a time."""
    from smec.store import read_columns_of_part
    total = sum(p.rows for p in parts)
    rng = np.random.default_rng(seed)
    keep: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for part in parts:
        take = min(part.rows, int(np.ceil(rows * part.rows / total)))
        _, vectors = read_columns_of_part(Path(part.path), columns)
        chosen = np.sort(rng.choice(part.rows, take, replace=False))
        for c in columns:
            keep[c].append(vectors[c][chosen])
    return {c: np.concatenate(v) for c, v in keep.items()}


def _quantizer(out: Path, fingerprint: dict, precision: str, dim: int, resume: bool,
               sample: Callable[[], np.ndarray]) -> Path | None:
    """The job's quantiser file: reused when resuming the same job, else fitted on ``sample()``
    (compressed corpus vectors) and written before any part."""
    if precision in ("float32", "float16", "binary"):   # binary: the zero threshold
        return None
    path = out / QUANTIZER
    manifest = load_manifest(out)
    if resume and path.is_file() and manifest and manifest.get("fingerprint") == fingerprint:
        return path
    Quantizer.fit(precision, sample()).save(path)
    return path


def _load_checked(path: Path, dim: int, precision: str, cfg: Config
                  ) -> tuple[Compressor, list[dict], dict]:
    """The compressor, its base models, and what identifies the job's codes (fingerprint part:
    compressor hash, level, precision, calibration); refuses a level it lacks."""
    compressor = load_compressor(path)
    _check_level(compressor, path, dim, precision)
    identity = {"compressor": compressor_fingerprint(path), "dim": dim, "precision": precision,
                "calibration_rows": cfg.compress.calibration_rows, "seed": cfg.compress.seed}
    return compressor, compressor_models(path), identity


def _codes_meta(compressor: Compressor, path: Path, identity: dict, models: list[dict]) -> dict:
    return {"precision": identity["precision"], "dim": identity["dim"],
            "compressor": identity["compressor"],
            "compressor_path": str(path.resolve()), "compressor_kind":
            getattr(compressor, "method", compressor.kind), "input_dim": compressor.input_dim,
            "models": [{k: m.get(k, "") for k in ("name", "dim", "query_prompt",
                                                   "document_prompt")} for m in models]}


def _codes_table(ids: list[str], columns: dict[str, np.ndarray], *, meta: dict):
    return codes_table(ids, columns["codes"], meta)


def _compress_stage(dataset, writer: ShardWriter, *, compressor_path: Path, dim: int,
                    quantizer: Path | None, precision: str, columns: list[str], cfg: Config,
                    actors_before: int = 0):
    import ray
    ccfg = cfg.compress
    cpus, threads = actor_resources(ccfg.num_actors + actors_before, ccfg.num_cpus_per_actor,
                                    ccfg.num_gpus_per_actor)
    return dataset.map_batches(
        CompressActor,
        fn_constructor_kwargs={"compressor_path": str(compressor_path), "dim": dim,
                               "quantizer_path": str(quantizer) if quantizer else None,
                               "precision": precision, "input_columns": columns,
                               "threads": threads, "use_gpu": ccfg.num_gpus_per_actor > 0,
                               "writer": writer, "batch_size": ccfg.batch_size},
        batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ccfg.num_actors),
        num_cpus=cpus, num_gpus=ccfg.num_gpus_per_actor or None)


def _store_dataset(todo: list[Part], writer: ShardWriter, *, stage: partial):
    """Part descriptors, one per batch, straight to the compressor actors (they read them)."""
    import ray
    return stage(ray.data.from_items([{"path": p.path, "index": p.index} for p in todo],
                                     override_num_blocks=len(todo)), writer)


def plan_store(store_dir: Path, compressor_path: Path, dim: int, precision: str, out: Path,
               cfg: Config, *, resume: bool) -> ShardJob:
    """Validate everything, calibrate int8 if needed; the job over the store's parts."""
    # absolute: the compressor actors open them in working directories of their own
    store_dir, compressor_path = Path(store_dir).absolute(), Path(compressor_path).absolute()
    compressor, want, identity = _load_checked(compressor_path, dim, precision, cfg)
    paths = sorted_parts(store_dir)
    if not paths:
        raise SmecError(f"--store {store_dir}: no embeddings found (part-*.parquet); run "
                        "`smec embed` first")
    check_complete(store_dir)
    have = store_models(store_dir)
    _check_models(store_dir, have, want, compressor.input_dim)
    by_name = {m["name"]: m for m in have}
    columns = [by_name[m["name"]]["column"] for m in want]
    if out.resolve() == store_dir.resolve():
        raise SmecError(f"--out {out}: is the store itself; write the codes elsewhere")
    parts = [Part(part_index(p), pq.ParquetFile(p).metadata.num_rows,
                  str(p.resolve())) for p in paths]
    stats = [p.stat() for p in paths]
    fingerprint = {"store": str(store_dir.resolve()),
                   "parts": [[p.name, st.st_size, st.st_mtime_ns] for p, st in zip(paths, stats)],
                   **identity}
    meta = _codes_meta(compressor, compressor_path, identity,
                       [{**by_name[m["name"]], **m} for m in want])

    def sample() -> np.ndarray:
        vectors = _sample_store(parts, columns, cfg.compress.calibration_rows, cfg.compress.seed)
        return compressor.encode(_inputs(compressor, vectors), dim)

    job = ShardJob(out, fingerprint, "compress", parts, dataset=None,
                   table=partial(_codes_table, meta=meta),
                   action=f"compressing {store_dir}", unit="vectors")
    if resume and (done := finished(out, fingerprint)):
        job.done = done
        return job
    quantizer = _quantizer(out, fingerprint, precision, dim, resume, sample)
    stage = partial(_compress_stage, compressor_path=compressor_path, dim=dim,
                    quantizer=quantizer, precision=precision, columns=columns, cfg=cfg)
    job.dataset = partial(_store_dataset, stage=stage)
    return job


def plan_corpus(source: Source, compressor_path: Path, dim: int, precision: str, out: Path,
                cfg: Config, *, model: str | None, resume: bool) -> ShardJob:
    """Embed and compress in one pass: the float vectors are never stored."""
    from smec.encoders import encode, load_model
    compressor_path = Path(compressor_path).absolute()   # opened by the actors
    compressor, want, identity = _load_checked(compressor_path, dim, precision, cfg)
    if model is not None and [m["name"] for m in want] != [model]:
        raise SmecError(f"--model {model}: the compressor was trained on "
                        f"{[m['name'] for m in want]} embeddings; leave --model out or pass "
                        "that model")
    single = not isinstance(compressor, ConcatCompressor)
    encoders = [EncoderSpec(m["name"], str(resolve_model(m["name"])), m["document_prompt"],
                            "embedding" if single else f"embedding:{m['name']}") for m in want]
    columns = [e.column for e in encoders]
    read, stat = source.identity(input_stat(out) if resume else None)
    fingerprint = {**read, "shard_rows": cfg.embed.shard_rows,
                   "max_seq_length": cfg.model.max_seq_length,
                   "encoders": [e.__dict__ for e in encoders], **identity}
    meta = _codes_meta(compressor, compressor_path, identity, want)
    job = ShardJob(out, fingerprint, "compress", [], dataset=None,
                   table=partial(_codes_table, meta=meta),
                   action=f"compressing {source.path}", input_stat=stat)
    if resume and (done := finished(out, fingerprint, stat)):
        job.done = done
        return job
    job.shards, counts = parallel_plan(source, cfg.embed.shard_rows, "stop")
    if counts["rows"] == 0:
        raise SmecError(f"{source.path}: no rows to compress")

    def sample() -> np.ndarray:   # embedded here: the store that would hold them does not exist
        rng = np.random.default_rng(cfg.compress.seed)
        texts: list[str] = []
        for index in rng.permutation(len(job.shards)):
            texts += read_shard(source, job.shards[index])[1]
            if len(texts) >= cfg.compress.calibration_rows:
                break
        texts = texts[:cfg.compress.calibration_rows]
        print(f"smec: embedding {len(texts)} documents to calibrate {precision}",
              file=sys.stderr)
        vectors = {e.column: encode(load_model(e.path, max_seq_length=cfg.model.max_seq_length),
                                    texts, e.prompt, cfg.model.encode_batch_size)
                   for e in encoders}
        return compressor.encode(_inputs(compressor, vectors), dim)

    quantizer = _quantizer(out, fingerprint, precision, dim, resume, sample)
    stage = partial(_compress_stage, compressor_path=compressor_path, dim=dim,
                    quantizer=quantizer, precision=precision, columns=columns, cfg=cfg,
                    actors_before=cfg.embed.num_actors * len(encoders))

    def dataset(todo, writer):
        return stage(embed_dataset(todo, None, source=source, encoders=encoders, cfg=cfg,
                                   extra_actors=cfg.compress.num_actors), writer)
    job.dataset = dataset
    return job


def run_compress(job: ShardJob, *, resume: bool, progress: bool) -> dict:
    return run_jobs([job], resume=resume, progress=progress)[0]
