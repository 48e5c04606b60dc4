"""One interface for every compressor: ``fit`` where it learns, ``encode(vectors, dim)``.

``encode`` returns L2-normalised float32 vectors of width ``dim``. A compressor folder holds
``compressor.json`` (kind, input dim, levels, settings), the tensors its kind needs and the
calibrated quantisers of its levels (``quantizers/d<dim>-<precision>.npz``); it is written
atomically, and :func:`load_compressor` rebuilds any kind from it.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from smec.errors import SmecError
from smec.io import atomic_dir
from smec.quantize import Quantizer

REGISTRY: dict[str, type[Compressor]] = {}


class AffineLevel(torch.nn.Module):
    """``normalize(W x + b)``: a linear level as a torch module."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(np.asarray(weight, np.float32)))
        self.register_buffer("bias", torch.from_numpy(np.asarray(bias, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.nn.functional.linear(x, self.weight,
                                                                        self.bias), dim=-1)


class Compressor(ABC):
    kind: ClassVar[str]

    def __init__(self, input_dim: int, dims: list[int]) -> None:
        self.input_dim = int(input_dim)
        self.dims = sorted({int(d) for d in dims}, reverse=True)
        self.quantizers: dict[tuple[int, str], Quantizer] = {}
        self.inputs: list[dict] | None = None   # the base model(s) and prompts, when known
        self.trained_on: dict | None = None     # {"dataset", "supervision"} of a trained one

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.kind] = cls

    def fit(self, corpus: np.ndarray) -> Compressor:
        """Learn from corpus vectors; a no-op for compressors that learn nothing."""
        return self

    @abstractmethod
    def encode(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        """Compress ``vectors`` ``[n, input_dim]`` to ``[n, dim]``, L2-normalised float32."""

    def _check(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"{self.kind}: expected vectors [n, {self.input_dim}], "
                             f"got {vectors.shape}")
        if dim not in self.dims:
            raise ValueError(f"{self.kind}: no level {dim}; available {self.dims}")
        return vectors

    def affine(self, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(W [dim, input_dim], b [dim])`` when level ``dim`` is ``normalize(W x + b)``:
        then it exports as plain Dense + Normalize modules. ``None`` when it is not linear."""
        return None

    def torch_level(self, dim: int) -> torch.nn.Module:
        """Level ``dim`` as a torch module, ``[n, input_dim] -> [n, dim]`` L2-normalised,
        equal to :meth:`encode` (what ``smec export`` ships)."""
        affine = self.affine(dim)
        if affine is None:
            raise NotImplementedError(f"{self.kind}: no torch module for level {dim}")
        return AffineLevel(*affine)

    def quantize(self, precision: str, dim: int, calibration: np.ndarray,
                 **options) -> Quantizer:
        """Calibrate a ``precision`` quantiser of level ``dim`` on *corpus* vectors (input
        space, never test queries); it is kept, and saved, with the compressor."""
        quantizer = Quantizer.fit(precision, self.encode(calibration, dim), **options)
        self.quantizers[(dim, precision)] = quantizer
        return quantizer

    # --- persistence -------------------------------------------------------------------
    def settings(self) -> dict:
        """Constructor settings beyond input_dim/dims, stored in compressor.json."""
        return {}

    def write_tensors(self, directory: Path) -> None:
        """Write this kind's tensors into ``directory``."""

    @classmethod
    def read(cls, directory: Path, input_dim: int, dims: list[int], settings: dict
             ) -> Compressor:
        return cls(input_dim, dims, **settings)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.write_tensors(tmp)
            for (dim, precision), quantizer in self.quantizers.items():
                (tmp / "quantizers").mkdir(exist_ok=True)
                quantizer.save(tmp / "quantizers" / f"d{dim}-{precision}.npz")
            meta = {"kind": self.kind, "input_dim": self.input_dim, "dims": self.dims,
                    "settings": self.settings(),
                    **({"inputs": self.inputs} if self.inputs else {}),
                    **({"trained_on": self.trained_on} if self.trained_on else {})}
            (tmp / "compressor.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path


def load_compressor(path: Path | str) -> Compressor:
    path = Path(path)
    meta_path = path / "compressor.json"
    if not meta_path.is_file():
        raise SmecError(f"{meta_path}: not found; run `smec train` first or pass the folder "
                        "it wrote")
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind not in REGISTRY:
        raise SmecError(f"{meta_path}: unknown compressor kind {kind!r}; known: "
                        f"{sorted(REGISTRY)}")
    compressor = REGISTRY[kind].read(path, meta["input_dim"], meta["dims"],
                                     meta.get("settings", {}))
    compressor.inputs = meta.get("inputs")
    compressor.trained_on = meta.get("trained_on")
    for file in sorted((path / "quantizers").glob("d*-*.npz")):
        quantizer = Quantizer.load(file)
        compressor.quantizers[(int(file.stem.split("-")[0][1:]), quantizer.precision)] = quantizer
    return compressor
