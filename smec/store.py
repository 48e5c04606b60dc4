"""Parquet embedding store: ``id`` string + ``embedding`` fixed_size_list<float32>[dim].

A store is a folder of ``part-NNNNN.parquet`` files, each written atomically. The schema
metadata of every part names the model, its dim and its prompts, so a folder describes itself.
A multi-model store has one ``embedding:<model>`` column per model instead (:func:`read_columns`).

The ETL (``pipelines/embed.py``) writes part ``k`` for input shard ``k``, then a marker
``_done/shard-k.json``; ``manifest.json`` says which input/models the folder belongs to and
whether every shard is done. A folder whose manifest says "not complete" is refused by the
readers (a killed run; run `smec embed` again to resume it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smec.errors import SmecError
from smec.io import atomic_path

META_KEY = b"smec"
MANIFEST = "manifest.json"
DONE_DIR = "_done"


def embedding_table(ids: list[str] | np.ndarray, vectors: np.ndarray,
                    metadata: dict | None = None) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"need {len(ids)} vectors of shape [n, dim], got {vectors.shape}")
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({"id": pa.array([str(i) for i in ids], pa.string()), "embedding": column})
    meta = {"dim": int(vectors.shape[1]), **(metadata or {})}
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def part_width(shards: int) -> int:
    """Digits in part names for a job of ``shards`` shards: every name has the same width, so
    names sort in numeric order at any count."""
    return max(5, len(str(max(shards - 1, 0))))


def write_part(directory: Path | str, index: int, table: pa.Table, width: int = 5) -> Path:
    path = Path(directory) / f"part-{index:0{width}d}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def part_index(path: Path) -> int:
    return int(path.stem.split("-")[1])


def sorted_parts(directory: Path | str) -> list[Path]:
    """The ``part-*.parquet`` files of ``directory`` in numeric order of their index."""
    directory = Path(directory)
    return sorted(directory.glob("part-*.parquet"), key=part_index) if directory.is_dir() else []


def finish_shard(directory: Path, index: int, table: pa.Table, width: int) -> dict:
    """Write shard ``index``'s part, then its marker (both atomic; the marker last, so a marker
    always names a whole part). Returns the marker: ``{"rows", "bytes"}``."""
    size = write_part(directory, index, table, width).stat().st_size
    marker = {"rows": table.num_rows, "bytes": size}
    with atomic_path(Path(directory) / DONE_DIR / f"shard-{index:0{width}d}.json") as tmp:
        tmp.write_text(json.dumps(marker))
    return marker


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"need vectors of shape [n, dim], got {vectors.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def columns_table(ids: list[str], columns: dict[str, np.ndarray], metadata: dict) -> pa.Table:
    """``id`` + one fixed_size_list<float32> column per entry of ``columns``."""
    for name, vectors in columns.items():
        if len(vectors) != len(ids):
            raise ValueError(f"{name}: {len(vectors)} vectors for {len(ids)} ids")
    table = pa.table({"id": pa.array([str(i) for i in ids], pa.string()),
                      **{name: vector_column(v) for name, v in columns.items()}})
    return table.replace_schema_metadata({META_KEY: json.dumps(metadata).encode()})


def is_complete(directory: Path) -> bool:
    """Whether the run that wrote ``directory`` finished (a store without a manifest: yes)."""
    manifest = Path(directory) / MANIFEST
    return not manifest.is_file() or bool(json.loads(manifest.read_text()).get("complete"))


def check_complete(directory: Path, command: str = "smec embed") -> None:
    """Refuse a folder whose writing run (``command``) was interrupted (its manifest says so)."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return
    info = json.loads(manifest.read_text())
    if not info.get("complete"):
        done = len(list((directory / DONE_DIR).glob("shard-*.json")))
        raise SmecError(f"{directory}: the run that writes it has not finished "
                        f"({done} of {info.get('shards', '?')} shards); run the same "
                        f"`{command}` again to resume it")


def _parts(directory: Path) -> list[Path]:
    parts = sorted_parts(directory)
    if not parts:
        raise SmecError(f"{directory}: no embeddings found (part-*.parquet); run `smec embed` "
                        "first or point --out at the folder it wrote")
    check_complete(directory)
    return parts


def has_columns(directory: Path | str, columns: list[str]) -> bool:
    """Whether ``directory`` holds parts whose schema has every one of ``columns``."""
    parts = sorted_parts(directory)
    return bool(parts) and set(columns) <= set(pq.ParquetFile(parts[0]).schema_arrow.names)


def read_columns_of_part(part: Path, columns: list[str] | None = None
                         ) -> tuple[list[str], dict[str, np.ndarray]]:
    """One part: (ids, column -> float32 [n, dim]); ``columns`` default: every vector column."""
    pf = pq.ParquetFile(part)
    schema = pf.schema_arrow
    names = columns if columns is not None else \
        [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]
    missing = [c for c in names if c not in schema.names]
    if missing:
        raise SmecError(f"{part}: no column {missing[0]!r}; it has {schema.names}")
    table = pf.read(columns=["id", *names])
    vectors = {}
    for name in names:
        column = table.column(name).combine_chunks()
        vectors[name] = column.values.to_numpy(zero_copy_only=False).reshape(
            -1, column.type.list_size).astype(np.float32, copy=False)
    return table.column("id").to_pylist(), vectors


def read_columns(directory: Path | str, columns: list[str] | None = None
                 ) -> tuple[list[str], dict[str, np.ndarray], dict]:
    """Read a (multi-model) store: (ids, column -> float32 [n, dim], metadata).

    ``columns``: which vector columns (default: every fixed-size-list column).
    """
    directory = Path(directory)
    ids: list[str] = []
    chunks: dict[str, list[np.ndarray]] = {}
    meta: dict = {}
    for part in _parts(directory):
        meta = json.loads((pq.read_schema(part).metadata or {}).get(META_KEY, b"{}"))
        part_ids, vectors = read_columns_of_part(part, columns)
        ids.extend(part_ids)
        for name, v in vectors.items():
            chunks.setdefault(name, []).append(v)
    return ids, {name: np.concatenate(c) for name, c in chunks.items()}, meta


def read_embeddings(directory: Path | str) -> tuple[list[str], np.ndarray, dict]:
    """Read every part of a store: (ids, float32 [n, dim] vectors, metadata)."""
    directory = Path(directory)
    parts = _parts(directory)
    ids: list[str] = []
    chunks = []
    meta: dict = {}
    for part in parts:
        table = pq.read_table(part)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        if "embedding" not in table.column_names:
            raise SmecError(f"{part}: no 'embedding' column (a multi-model store has "
                            f"{table.column_names[1:]}); read it with read_columns")
        ids.extend(table.column("id").to_pylist())
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        chunks.append(column.values.to_numpy(zero_copy_only=False).reshape(-1, dim))
    return ids, np.concatenate(chunks).astype(np.float32, copy=False), meta
