"""Resumable sharded output: a Ray Data pipeline whose workers write one part per shard.

Every job that turns an input into a folder of Parquet parts (``smec embed``, ``smec compress``)
runs through :func:`execute_job`. The input is cut into shards before anything runs; each row of
the pipeline is one whole shard, and the stage that finishes a shard writes its
``part-k.parquet`` atomically, then its marker ``_done/shard-k.json`` (a :class:`ShardWriter`,
see :func:`smec.store.finish_shard`), and returns only counts and timings to the driver, which
never holds vectors. ``manifest.json`` names what the folder is made from (the fingerprint) and
whether every shard is done, with the run's summary. A run with the same fingerprint skips the
shards that have a marker, so after a crash or SIGKILL every id lands exactly once; a complete
folder with the same fingerprint returns at once.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from smec import store
from smec.console import progress_stream
from smec.errors import SmecError
from smec.io import write_json

#: the stages whose seconds every counts row carries (summed over shards: ``worker_seconds``)
STAGES = ("read", "tokenize", "encode", "write")


class ShardWriter:
    """Runs on a worker: turns one finished shard into its part and marker; returns the counts
    row the driver sees (``shard``, ``rows``, ``bytes`` and ``t_<stage>`` seconds)."""

    def __init__(self, out_dir: Path, width: int,
                 table: Callable[[list[str], dict[str, np.ndarray]], pa.Table]) -> None:
        self.out_dir, self.width, self.table = Path(out_dir), width, table

    def __call__(self, index: int, ids: list[str], columns: dict[str, np.ndarray],
                 seconds: dict[str, float]) -> dict:
        start = time.perf_counter()
        marker = store.finish_shard(self.out_dir, index, self.table(ids, columns), self.width)
        seconds = {**seconds, "write": seconds.get("write", 0.0) + time.perf_counter() - start}
        return counts_row(index, marker, seconds)


def counts_row(index: int, marker: dict, seconds: dict[str, float]) -> dict:
    """What a finished shard tells the driver: its index, rows, bytes and seconds per stage."""
    return {"shard": int(index), "rows": int(marker["rows"]), "bytes": int(marker["bytes"]),
            **{f"t_{k}": float(seconds.get(k, 0.0)) for k in STAGES}}


def stage_seconds(row: dict) -> dict[str, float]:
    """The ``t_<stage>`` seconds a shard row has carried so far."""
    return {k: float(row.get(f"t_{k}", 0.0)) for k in STAGES}


@dataclass
class ShardJob:
    """One input -> one folder of parts, planned (validated) before anything runs.

    ``dataset(todo, writer)`` builds the Ray Data pipeline over the shards still to do, one row
    per shard; its last stage calls ``writer`` (a :class:`ShardWriter`) and yields counts rows.
    ``table(ids, columns)`` turns one finished shard into the Arrow table of its part; it runs on
    the workers, so it must pickle (a module-level function or a ``partial`` of one).
    """
    out_dir: Path
    fingerprint: dict
    label: str
    shards: list[Any]
    dataset: Callable[[list[Any], ShardWriter], Any] | None
    table: Callable[[list[str], dict[str, np.ndarray]], pa.Table]
    action: str = "the job"        # for errors: "<action> failed: …", e.g. "embedding corpus.jsonl"
    bad_rows: int = 0
    unit: str = "docs"
    done: dict | None = None       # the manifest of an already complete folder
    input_stat: dict | None = None  # the input's size, mtime and digest (Source.identity)


def load_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / store.MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def input_stat(out_dir: Path) -> dict | None:
    """The input's stat an earlier run recorded in ``out_dir`` (see ``Source.identity``)."""
    return (load_manifest(out_dir) or {}).get("input_stat")


def same_fingerprint(manifest: dict | None, fingerprint: dict, stat: dict | None) -> bool:
    """``manifest`` was written for ``fingerprint``. A store written before inputs were named
    by their digest recorded their mtime instead: it still matches while the input's size and
    mtime are the ones it recorded (then the bytes are those it read)."""
    if manifest is None:
        return False
    recorded = manifest.get("fingerprint")
    if isinstance(recorded, dict) and "mtime_ns" in recorded and "sha256" not in recorded \
            and stat is not None and (recorded.get("size"), recorded["mtime_ns"]) == \
            (stat["size"], stat["mtime_ns"]):
        recorded = {**{k: v for k, v in recorded.items() if k != "mtime_ns"},
                    "sha256": stat["sha256"]}
    return recorded == fingerprint


def finished(out_dir: Path, fingerprint: dict, stat: dict | None = None) -> dict | None:
    """The manifest of ``out_dir`` if it is complete for exactly ``fingerprint``; the
    fingerprint and the input's ``stat`` are brought up to date there, so the next run need
    not read the input again."""
    manifest = load_manifest(out_dir)
    if manifest and manifest.get("complete") and same_fingerprint(manifest, fingerprint, stat):
        if (manifest["fingerprint"], manifest.get("input_stat")) != (fingerprint, stat):
            manifest |= {"fingerprint": fingerprint, "input_stat": stat}
            write_json(out_dir / store.MANIFEST, manifest)
        return manifest
    return None


def clear(out_dir: Path) -> None:
    """Remove what an earlier run wrote into ``out_dir`` (only that)."""
    for part in out_dir.glob("part-*.parquet"):
        part.unlink()
    shutil.rmtree(out_dir / store.DONE_DIR, ignore_errors=True)
    (out_dir / store.MANIFEST).unlink(missing_ok=True)


def actor_resources(actors: int, cpus_per_actor: float, gpus_per_actor: float
                    ) -> tuple[float, int]:
    """(CPUs reserved per actor, torch threads per actor) for ``actors`` actors in all."""
    import ray
    if gpus_per_actor:
        return cpus_per_actor, max(1, int(cpus_per_actor))
    cpus = cpus_per_actor
    total = ray.cluster_resources().get("CPU", os.cpu_count() or 1)
    if actors * cpus > total - 0.5:
        # Leave CPU for the read tasks, or Ray Data deadlocks with every CPU held by actors
        # that wait for input (PLATFORM.md 2a); Ray's CPUs are logical, threads are set below.
        cpus = max(0.1, (total - 0.5) / actors)
    return cpus, max(1, (os.cpu_count() or 1) // actors)


def configure_ray_data() -> None:
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


def execute_job(job: ShardJob, *, resume: bool, progress: bool) -> dict:
    """Run the shards of ``job`` that are not done yet; returns the run's summary."""
    start = time.perf_counter()
    out_dir = job.out_dir
    if job.done is not None:
        return {**job.done["summary"], "new_rows": 0, "bytes_written": 0, "skipped": True}
    manifest = load_manifest(out_dir)
    if not resume or not same_fingerprint(manifest, job.fingerprint, job.input_stat):
        if manifest is not None and resume:
            print(f"smec: {out_dir}: written from another input, model or settings; "
                  "starting over", file=progress_stream())
        clear(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done_dir = out_dir / store.DONE_DIR
    done_dir.mkdir(exist_ok=True)
    for stale in [*out_dir.glob(".*.tmp"), *done_dir.glob(".*.tmp")]:
        stale.unlink()   # temp files of a killed run (their renames never happened)
    write_json(out_dir / store.MANIFEST, {"fingerprint": job.fingerprint, "complete": False,
                                           "shards": len(job.shards),
                                           "input_stat": job.input_stat})
    width = store.part_width(len(job.shards))
    # the markers of a resumed run, read once; this run's own come back as counts rows
    markers = {store.part_index(p): json.loads(p.read_text())
               for p in done_dir.glob("shard-*.json")}
    for shard in job.shards:
        if shard.rows == 0 and shard.index not in markers:      # every line bad or blank
            write_json(done_dir / f"shard-{shard.index:0{width}d}.json", {"rows": 0, "bytes": 0})
            markers[shard.index] = {"rows": 0, "bytes": 0}
    todo = [s for s in job.shards if s.index not in markers]
    resumed = len(job.shards) - len(todo)
    new_rows = sum(s.rows for s in todo)
    seconds = dict.fromkeys(STAGES, 0.0)
    written = 0
    rows: list[dict] = []
    if todo:
        rows = _run_pipeline(job, todo, ShardWriter(out_dir, width, job.table), progress)
        for row in rows:
            markers[row["shard"]] = {"rows": row["rows"], "bytes": row["bytes"]}
            written += row["bytes"]
            for k in STAGES:
                seconds[k] += row[f"t_{k}"]
    if len(markers) != len(job.shards):
        raise SmecError(f"{out_dir}: {len(markers)} of {len(job.shards)} shards finished")
    elapsed = time.perf_counter() - start
    summary = {"rows": sum(m["rows"] for m in markers.values()), "bad_rows": job.bad_rows,
               "shards": len(job.shards), "shards_resumed": resumed,
               "bytes": sum(m["bytes"] for m in markers.values()), "new_rows": new_rows,
               "bytes_written": written, "seconds": round(elapsed, 2),
               "rows_per_s": round(new_rows / elapsed, 1) if elapsed > 0 else 0.0,
               "worker_seconds": {k: round(v, 2) for k, v in seconds.items()},
               **_steady_state(rows, start)}
    write_json(out_dir / store.MANIFEST, {"fingerprint": job.fingerprint, "complete": True,
                                           "shards": len(job.shards), "summary": summary,
                                           "input_stat": job.input_stat})
    return summary


def _steady_state(rows: list[dict], start: float) -> dict:
    """When the first shard came back (start-up: Ray, planning, model loading, the first
    shard's work) and the rate after it, which is what a longer run converges to."""
    if not rows:
        return {}
    first = rows[0]["at"]
    out = {"first_shard_s": round(first - start, 2)}
    if len(rows) > 1 and rows[-1]["at"] > first:
        out["steady_rows_per_s"] = round(sum(r["rows"] for r in rows[1:])
                                         / (rows[-1]["at"] - first), 1)
    return out


def _run_pipeline(job: ShardJob, todo: list[Any], writer: ShardWriter, progress: bool
                  ) -> list[dict]:
    """Run the pipeline over ``todo``; the counts row of every shard the workers wrote."""
    from smec.pipelines.runtime import root_cause
    from tqdm import tqdm

    configure_ray_data()
    total = sum(s.rows for s in todo)
    bar = tqdm(total=total, unit=f" {job.unit}", desc=job.label, disable=not progress,
               file=progress_stream(), dynamic_ncols=True, smoothing=0.05)
    shard_log = None if progress else _ShardLog(job.label, len(todo), total, job.unit)
    rows: list[dict] = []
    try:
        for batch in job.dataset(todo, writer).iter_batches(batch_size=None,
                                                            batch_format="numpy"):
            for i in range(len(batch["shard"])):
                row = {k: v[i].item() for k, v in batch.items()}
                row["at"] = time.perf_counter()
                rows.append(row)
                bar.update(row["rows"])
                if shard_log is not None:
                    shard_log.shard_done(row["rows"])
    except SmecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failure inside Ray: one line, no traceback
        raise SmecError(f"{job.action} failed: {root_cause(exc)}") from None
    finally:
        bar.close()
    missing = {s.index for s in todo} - {r["shard"] for r in rows}
    if missing:
        raise SmecError(f"{job.out_dir}: shards {sorted(missing)} did not come back")
    return rows


class _ShardLog:
    """Without a progress bar (stderr is a log file, not a terminal): a line per shard."""

    def __init__(self, label: str, shards: int, rows: int, unit: str) -> None:
        self.label, self.shards, self.rows, self.unit = label, shards, rows, unit
        self.done_shards, self.done_rows, self.start = 0, 0, time.perf_counter()

    def shard_done(self, rows: int) -> None:
        self.done_shards += 1
        self.done_rows += rows
        rate = self.done_rows / max(time.perf_counter() - self.start, 1e-9)
        left = (self.rows - self.done_rows) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
        print(f"{self.label}: shard {self.done_shards}/{self.shards} written "
              f"({self.done_rows}/{self.rows} {self.unit}, {rate:.1f} {self.unit}/s, "
              f"~{eta} left)", file=progress_stream(), flush=True)


def run_jobs(jobs: list[ShardJob], *, resume: bool, progress: bool) -> list[dict]:
    if any(job.done is None for job in jobs):
        from smec.pipelines.runtime import init_ray
        init_ray()
    return [execute_job(job, resume=resume, progress=progress) for job in jobs]
