"""Compressed codes on disk, and what a compressor expects as input.

A codes folder (``smec compress``) is a store-like folder of ``part-NNNNN.parquet`` files with
``id`` and ``codes`` in the smallest faithful type:

* float32 / float16: ``fixed_size_list<float32|float16>[dim]``,
* int8: ``fixed_size_list<int8>[dim]``,
* binary: ``fixed_size_binary[dim/8]``, the bits packed as ``np.packbits`` packs them,
* pqM / opqM: ``fixed_size_binary[M]``, one codeword index per sub-vector.

The schema metadata (key ``smec``) says what made them: the compressor's fingerprint and
kind, the level, the precision, and the base model(s) with their prompts. The quantiser of
int8/binary/PQ codes, calibrated on a sample of the corpus (queries never enter it), lies beside
the parts as ``quantizer.npz``; quantise queries with it (:func:`load_codes_quantizer`) and
they match the corpus codes.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smec.errors import SmecError
from smec.quantize import Quantizer, code_layout
from smec.runfolder import RunFolder
from smec.store import MANIFEST, META_KEY, check_complete, sorted_parts

QUANTIZER = "quantizer.npz"
CODES = "codes"


def codes_array(codes: np.ndarray, precision: str, dim: int) -> pa.Array:
    """``[n, dim]`` float/int8 codes, or ``[n, width]`` bytes (packed bits, PQ codeword
    indices), as one Arrow column."""
    codes = np.ascontiguousarray(codes)
    dtype, width, opaque = code_layout(precision, dim)
    if codes.dtype != dtype or codes.ndim != 2 or codes.shape[1] != width:
        raise ValueError(f"{precision} codes of {dim} dims: expected {dtype} [n, {width}], "
                         f"got {codes.dtype} {codes.shape}")
    if opaque:
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(codes),
                                                    [None, pa.py_buffer(codes.tobytes())])
    return pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), dim)


def codes_table(ids: list[str], codes: np.ndarray, meta: dict) -> pa.Table:
    """The table of one codes part; ``meta`` holds at least ``precision`` and ``dim``."""
    column = codes_array(codes, meta["precision"], int(meta["dim"]))
    table = pa.table({"id": pa.array([str(i) for i in ids], pa.string()), CODES: column})
    return table.replace_schema_metadata({META_KEY: json.dumps({"codes": meta}).encode()})


def _column_codes(column: pa.ChunkedArray | pa.Array, precision: str, dim: int) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if code_layout(precision, dim)[2]:
        width = column.type.byte_width
        data = np.frombuffer(column.buffers()[1], np.uint8,
                             count=len(column) * width, offset=column.offset * width)
        return data.reshape(len(column), width)
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def code_parts(directory: Path | str) -> list[Path]:
    """The parts of a finished codes folder, or a SmecError that says what to run."""
    directory = Path(directory)
    parts = sorted_parts(directory)
    if not parts:
        raise SmecError(f"{directory}: no codes found (part-*.parquet); run `smec compress` "
                        "first or point at the folder it wrote")
    if not (directory / MANIFEST).is_file():
        raise SmecError(f"{directory}: no {MANIFEST}; not a folder `smec compress` wrote")
    check_complete(directory, "smec compress")
    return parts


def codes_meta(directory: Path | str) -> dict:
    """What made the codes of ``directory`` (precision, dim, compressor, models …)."""
    schema = pq.read_schema(code_parts(directory)[0])
    meta = json.loads((schema.metadata or {}).get(META_KEY, b"{}"))
    if "codes" not in meta:
        raise SmecError(f"{directory}: its parts hold no codes metadata; not a folder "
                        "`smec compress` wrote")
    return meta["codes"]


def iter_codes(directory: Path | str) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, codes) part by part: int8/float16/float32 ``[n, dim]``, binary uint8
    ``[n, dim/8]``, PQ uint8 ``[n, M]``."""
    meta = codes_meta(directory)
    for part in code_parts(directory):
        table = pq.read_table(part)
        yield (table.column("id").to_pylist(),
               _column_codes(table.column(CODES), meta["precision"], int(meta["dim"])))


def read_codes(directory: Path | str) -> tuple[list[str], np.ndarray, dict]:
    """Every part at once: (ids, codes, metadata)."""
    ids: list[str] = []
    chunks = []
    for part_ids, codes in iter_codes(directory):
        ids += part_ids
        chunks.append(codes)
    return ids, np.concatenate(chunks), codes_meta(directory)


def load_codes_quantizer(directory: Path | str) -> Quantizer:
    """The quantiser the codes of ``directory`` were made with (identity for float32)."""
    meta = codes_meta(directory)
    path = Path(directory) / QUANTIZER
    if path.is_file():
        return Quantizer.load(path)
    if meta["precision"] in ("float32", "float16", "binary"):   # binary: the zero threshold
        return Quantizer.uncalibrated(meta["precision"], int(meta["dim"]))
    raise SmecError(f"{path}: missing; the {meta['precision']} codes cannot be matched "
                    "without the calibration they were made with")


# --- what a compressor expects -----------------------------------------------------------

def compressor_fingerprint(path: Path | str) -> str:
    """A hash of the compressor's definition and tensors (not its quantisers or history)."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if rel.parts[0] == "quantizers" or rel == Path(RunFolder(path).history.name):
            continue
        digest.update(str(rel).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def store_models(directory: Path) -> list[dict]:
    """The models of an embedding store: name, column, dim and both prompts each."""
    from smec.encoders import model_spec
    parts = sorted_parts(directory)
    if not parts:
        raise SmecError(f"{directory}: no embeddings found (part-*.parquet)")
    schema = pq.read_schema(parts[0])
    meta = json.loads((schema.metadata or {}).get(META_KEY, b"{}"))
    if "models" in meta:
        return [{k: m.get(k, "") for k in ("name", "column", "dim", "query_prompt",
                                            "document_prompt")} for m in meta["models"]]
    if "model" not in meta:
        raise SmecError(f"{parts[0]}: its metadata names no model; embed it with `smec embed`")
    spec = model_spec(meta["model"])
    prompt = meta.get("prompt", "")
    kind = meta.get("kind", "corpus")
    return [{"name": meta["model"], "column": "embedding", "dim": int(meta["dim"]),
             "query_prompt": prompt if kind == "queries" else spec.query_prompt,
             "document_prompt": prompt if kind != "queries" else spec.document_prompt}]


def compressor_models(path: Path | str) -> list[dict]:
    """The base model(s) whose embeddings a compressor was trained on, with their prompts.

    A compressor folder records them (``inputs`` in compressor.json); one that does not is
    read from the embeddings of the run folder it sits in (``RUN/compressor``,
    ``RUN/compressors/NAME``, a bench's ``RUN/compressors/LABEL/seedK``)."""
    path = Path(path)
    meta = json.loads((path / "compressor.json").read_text())
    if meta.get("inputs"):
        return meta["inputs"]
    for run in map(RunFolder, path.parents[:3]):   # RUN/compressor, RUN/compressors/NAME(/seedK)
        if any(run.corpus.glob("part-*.parquet")):
            models = store_models(run.corpus)
            if len(models) == 1 and any(run.queries.glob("part-*.parquet")):
                models[0]["query_prompt"] = store_models(run.queries)[0]["query_prompt"]
            return models
    raise SmecError(f"{path}: cannot tell which model's embeddings this compressor takes (no "
                    "'inputs' in compressor.json and no embeddings in its run folder)")
