"""Keep the first ``d`` dims and re-normalise (baseline B1)."""
from __future__ import annotations

import numpy as np

from smec.compressors.base import Compressor
from smec.eval import l2_normalize


class Truncation(Compressor):
    kind = "truncation"

    def encode(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        return l2_normalize(self._check(vectors, dim)[:, :dim])

    def affine(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        return np.eye(dim, self.input_dim, dtype=np.float32), np.zeros(dim, np.float32)
