"""PCA fitted on corpus vectors: mean-centre, project on the top-``d`` components (B2).

``centre=False`` projects the raw vectors on the same axes without subtracting the mean: the
prefixes a ``pca_residual`` adapter starts from, so a trained level can be credited with what
training added over its own starting point (recipe ``pca_uncentred``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from smec.compressors.base import Compressor
from smec.eval import l2_normalize
from smec.principal import principal_axes


class PCA(Compressor):
    kind = "pca"

    def __init__(self, input_dim: int, dims: list[int], max_fit_rows: int = 200_000,
                 seed: int = 0, centre: bool = True) -> None:
        super().__init__(input_dim, dims)
        self.max_fit_rows, self.seed, self.centre = max_fit_rows, seed, centre
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None  # [max(dims), input_dim], by variance

    def fit(self, corpus: np.ndarray) -> PCA:
        x = np.asarray(corpus, dtype=np.float64)
        if len(x) > self.max_fit_rows:
            x = x[np.random.default_rng(self.seed).choice(len(x), self.max_fit_rows, False)]
        axes, mean = principal_axes(x, max(self.dims))
        self.mean = mean if self.centre else np.zeros_like(mean)
        self.components = axes.astype(np.float32)
        return self

    def encode(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        vectors = self._check(vectors, dim)
        if self.components is None:
            raise RuntimeError("PCA.encode called before fit")
        return l2_normalize((vectors - self.mean.astype(np.float32)) @ self.components[:dim].T)

    def affine(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        if self.components is None:
            raise RuntimeError("PCA.affine called before fit")
        weight = self.components[:dim].astype(np.float32)
        return weight, -(weight @ self.mean.astype(np.float32))

    def settings(self) -> dict:
        return {"max_fit_rows": self.max_fit_rows, "seed": self.seed, "centre": self.centre}

    def write_tensors(self, directory: Path) -> None:
        np.savez(directory / "pca.npz", mean=self.mean, components=self.components)

    @classmethod
    def read(cls, directory: Path, input_dim: int, dims: list[int], settings: dict) -> PCA:
        pca = cls(input_dim, dims, **settings)
        with np.load(directory / "pca.npz") as arrays:
            pca.mean, pca.components = arrays["mean"], arrays["components"]
        return pca
