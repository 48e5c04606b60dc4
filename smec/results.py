"""The one results schema shared by every job and benchmark (``OUT/results.json``).

``{"dataset", "model", "split", "rows": [{"method", "dims", "precision",
"bytes_per_vector", "ndcg_at_10", "recall_at_100", "seed", ...}], "timings_s": {phase: seconds}}``

Every row names its ``split``: the file's (``test``, or ``split-test`` for a test-only dataset
split in two) or ``holdout`` (the hold-out of *training* queries that early stopping and the
recipe check use; never test). A row may carry extra keys after the fixed ones (e.g.
``rescore``, ``cf_vs_concat``).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from smec.errors import SmecError
from smec.io import write_json

ROW_KEYS = ("method", "dims", "precision", "bytes_per_vector", "ndcg_at_10", "recall_at_100",
            "seed")
PRECISION_BITS = {"float32": 32, "float16": 16, "int8": 8, "binary": 1}
PRODUCT_KINDS = ("pq", "opq")
BINARY_FITS = ("median", "itq", "rotated")   # binary-<fit>: a fitted threshold / rotation
PRECISION_HELP = ("float32, float16, int8, binary (sign at 0), binary-median (threshold at "
                  "each dim's median), binary-itq or binary-rotated (centred, then an ITQ or "
                  "a seeded random rotation), or a product quantiser: pqM (faiss PQ, M "
                  "sub-vectors of 8 bits: M bytes), opqM (rotated first), or pqMx4 / opqMx4 "
                  "(M sub-vectors of 4 bits, M even: M/2 bytes, searched by faiss's fast scan)")


class ProductSpec(NamedTuple):
    """A product-quantiser precision: ``kind`` pq | opq, ``m`` sub-vectors of ``bits`` each."""
    kind: str
    m: int
    bits: int

    @property
    def codewords(self) -> int:
        return 2 ** self.bits

    @property
    def bytes(self) -> int:
        return self.m * self.bits // 8


def product_quantizer(precision: str) -> ProductSpec | None:
    """The :class:`ProductSpec` of a product-quantiser precision, else None: ``pq48`` and
    ``opq24`` are faiss's ``PQ48`` / ``OPQ24,PQ24`` (8 bits a sub-vector: M bytes per vector,
    whatever the dims); ``pq96x4`` is faiss's ``PQ96x4fs`` (4 bits: M/2 bytes, the layout
    faiss's SIMD fast scan reads). A 4-bit M must be even: two codes share a byte."""
    match = re.fullmatch(r"(o?pq)([1-9][0-9]*)(x4)?", precision)
    if not match or (match.group(3) and int(match.group(2)) % 2):
        return None
    return ProductSpec(match.group(1), int(match.group(2)), 4 if match.group(3) else 8)


SERVE_PRECISIONS = ("float32", "int8", "binary", "pqM")   # what training can serve


def check_serve_precision(precision: str) -> str:
    """``precision`` if training can serve it (``train.serve_precision``): float32, int8,
    binary or pqM."""
    product = product_quantizer(precision)
    if precision not in SERVE_PRECISIONS[:3] and (product is None or product.kind != "pq"
                                                  or product.bits != 8):
        raise ValueError(f"serve_precision must be one of {', '.join(SERVE_PRECISIONS)} (M: "
                         f"the bytes per vector, e.g. pq48), got {precision!r}")
    return precision


def binary_fit(precision: str) -> str | None:
    """How a binary precision places its threshold: ``zero`` (``binary``, the sign, as
    sentence-transformers does) or the fit of ``binary-median`` / ``binary-itq`` /
    ``binary-rotated``; None for a precision that is not binary."""
    if precision == "binary":
        return "zero"
    fit = precision.removeprefix("binary-")
    return fit if fit != precision and fit in BINARY_FITS else None


def is_binary(precision: str) -> bool:
    """One bit per dim, searched by Hamming distance (and rescored with the float query)."""
    return binary_fit(precision) is not None


def check_precision(precision: str) -> str:
    if precision not in PRECISION_BITS and product_quantizer(precision) is None \
            and not is_binary(precision):
        raise ValueError(f"precision must be {PRECISION_HELP}; got {precision!r}")
    return precision


def bytes_per_vector(dims: int, precision: str = "float32") -> int:
    product = product_quantizer(check_precision(precision))
    if product is not None:
        return product.bytes
    return math.ceil(dims * PRECISION_BITS["binary" if is_binary(precision) else precision] / 8)


@dataclass
class ResultRow:
    method: str
    dims: int
    ndcg_at_10: float
    recall_at_100: float
    precision: str = "float32"
    seed: int = 0
    bytes_per_vector: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bytes_per_vector:
            self.bytes_per_vector = bytes_per_vector(self.dims, self.precision)


def write_results(path: Path | str, dataset: str, model: str, split: str,
                  rows: list[ResultRow], timings_s: dict[str, float], **extra) -> None:
    """Write the schema; ``extra`` keys (e.g. a benchmark's checks) go beside the rows."""
    write_json(path, {"dataset": dataset, "model": model, "split": split,
                      "rows": [{**{key: asdict(r)[key] for key in ROW_KEYS},
                                "split": split, **r.extra} for r in rows],
                      "timings_s": {k: round(v, 2) for k, v in timings_s.items()}, **extra})


def read_results(path: Path | str) -> dict:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise SmecError(f"{path}: results file not found") from None
    except json.JSONDecodeError as exc:
        raise SmecError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    for key in ("dataset", "model", "split", "rows", "timings_s"):
        if key not in results:
            raise SmecError(f"{path}: missing key '{key}' of the results schema")
    return results


def scored_rows(results: dict, split: str | None = None) -> list[dict]:
    """The rows of one split: the file's own (test) by default, or ``holdout``."""
    split = split or results["split"]
    return [r for r in results["rows"] if r.get("split", results["split"]) == split]
