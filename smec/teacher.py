"""The teacher of the unsupervised term (``train.teacher``): whose similarities a compressor
distils, and whose neighbours the label-free probes must find again.

``self`` is the model being compressed: the student can at best keep its geometry. An outside
teacher, the concatenation of several small models (each L2-normalised and weighted 1/√n,
``cos = mean_m cos_m``: score averaging, which beats the best single model) or a larger model,
gives targets better than the student's own model, so a label-free compressor can beat the
model it compresses. Only the corpus needs the teacher's vectors: queries are still embedded by
the deployed model alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from smec.compressors.concatenation import concatenate
from smec.errors import SmecError
from smec.store import read_columns, sorted_parts


def teacher_models(teacher: str, concat_models: list[str]) -> list[str]:
    """The models whose vectors make ``teacher`` (none for ``self``)."""
    if teacher == "self":
        return []
    return list(concat_models) if teacher == "concat" else [teacher]


def teacher_slug(teacher: str) -> str:
    """A teacher's name in folders and row labels: ``concat``, a registry name, or a local
    model folder's own name."""
    return teacher if teacher in ("self", "concat") or "/" not in teacher else Path(teacher).name


def column(model: str) -> str:
    """A model's column in a multi-model store (``smec concat``'s naming)."""
    return f"embedding:{model}"


def read_teacher(store: Path, models: list[str], doc_ids: list[str]) -> np.ndarray:
    """The teacher's vectors of ``doc_ids``, row for row: each model's column of the corpus
    store ``store`` L2-normalised and weighted 1/√n, concatenated (one model: its unit vectors).

    One line naming the store when it lacks a model or a document."""
    ids, columns, _ = read_columns(store, [column(m) for m in models])
    vectors = concatenate([columns[column(m)] for m in models])
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    missing = [d for d in doc_ids if d not in row]
    if missing:
        raise SmecError(f"{store}: the teacher has no vector of document {missing[0]!r} "
                        f"({len(missing)} missing): delete the folder to embed the corpus again")
    return vectors[[row[d] for d in doc_ids]]


def teacher_dim(store: Path, models: list[str]) -> int:
    """The width of the teacher's concatenated vectors, from the store's schema alone."""
    schema = pq.read_schema(sorted_parts(store)[0])
    return sum(schema.field(column(m)).type.list_size for m in models)
