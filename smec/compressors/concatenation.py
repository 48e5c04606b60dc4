"""Several models' embeddings, concatenated, then any compressor (METHOD.md §5.2).

Each model's vector is L2-normalised and weighted ``1/√n`` before concatenation, so the result
has unit norm and ``cos(x_q, x_d) = (1/n) Σ_m cos_m(q, d)``: the naive concatenation *is*
score averaging over the models. The compressor folder records which models, in which order,
so a saved concat compressor describes the inputs it needs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from smec.compressors.base import Compressor, load_compressor
from smec.eval import l2_normalize


def concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """``[n, Σ d_m]``: each part L2-normalised and scaled by ``1/√n``."""
    if not parts:
        raise ValueError("need at least one model's vectors to concatenate")
    rows = {len(p) for p in parts}
    if len(rows) != 1:
        raise ValueError(f"every model needs one vector per row; got row counts {sorted(rows)}")
    weight = 1.0 / np.sqrt(len(parts))
    return np.concatenate([l2_normalize(p) * weight for p in parts], axis=1).astype(np.float32)


class ConcatCompressor(Compressor):
    """``encode(concatenate(parts), dim)`` through ``inner`` (a decoder, PCA, truncation …)."""

    kind = "concat"

    def __init__(self, input_dim: int, dims: list[int], models: list[dict],
                 inner: Compressor | None = None) -> None:
        super().__init__(input_dim, dims)
        if sum(int(m["dim"]) for m in models) != self.input_dim:
            raise ValueError(f"the models' dims {[m['dim'] for m in models]} do not add up to "
                             f"the input dim {self.input_dim}")
        self.models = [{"name": str(m["name"]), "dim": int(m["dim"])} for m in models]
        self.inner = inner

    def concatenate(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Concatenate per-model vectors (keyed by model name) in this compressor's order."""
        missing = [m["name"] for m in self.models if m["name"] not in columns]
        if missing:
            raise ValueError(f"missing vectors of model(s) {missing}")
        for m in self.models:
            if columns[m["name"]].shape[1] != m["dim"]:
                raise ValueError(f"{m['name']}: expected {m['dim']}-d vectors, got "
                                 f"{columns[m['name']].shape[1]}")
        return concatenate([columns[m["name"]] for m in self.models])

    def fit(self, corpus: np.ndarray) -> ConcatCompressor:
        self.inner.fit(corpus)
        return self

    def encode(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        return self.inner.encode(self._check(vectors, dim), dim)

    def affine(self, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.inner.affine(dim)

    def torch_level(self, dim: int):
        return self.inner.torch_level(dim)

    def to(self, device: str) -> ConcatCompressor:
        if hasattr(self.inner, "to"):
            self.inner.to(device)
        return self

    def settings(self) -> dict:
        return {"models": self.models}

    def write_tensors(self, directory: Path) -> None:
        self.inner.save(directory / "inner")

    @classmethod
    def read(cls, directory: Path, input_dim: int, dims: list[int], settings: dict
             ) -> ConcatCompressor:
        return cls(input_dim, dims, settings["models"], load_compressor(directory / "inner"))
