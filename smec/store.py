"""Parquet embedding store: ``id`` string + ``embedding`` fixed_size_list<float32>[dim].

A store is a folder of ``part-NNNNN.parquet`` files, each written atomically. The schema
metadata of every part names the model, its dim and its prompts, so a folder describes itself.
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


def embedding_table(ids: list[str] | np.ndarray, vectors: np.ndarray,
                    metadata: dict | None = None) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"need {len(ids)} vectors of shape [n, dim], got {vectors.shape}")
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({"id": pa.array([str(i) for i in ids], pa.string()), "embedding": column})
    meta = {"dim": int(vectors.shape[1]), **(metadata or {})}
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def write_part(directory: Path | str, index: int, table: pa.Table) -> Path:
    path = Path(directory) / f"part-{index:05d}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_embeddings(directory: Path | str) -> tuple[list[str], np.ndarray, dict]:
    """Read every part of a store: (ids, float32 [n, dim] vectors, metadata)."""
    directory = Path(directory)
    parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
    if not parts:
        raise SmecError(f"{directory}: no embeddings found (part-*.parquet); run `smec embed` "
                        "first or point --out at the folder it wrote")
    ids: list[str] = []
    chunks = []
    meta: dict = {}
    for part in parts:
        table = pq.read_table(part)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        ids.extend(table.column("id").to_pylist())
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        chunks.append(column.values.to_numpy(zero_copy_only=False).reshape(-1, dim))
    return ids, np.concatenate(chunks).astype(np.float32, copy=False), meta
