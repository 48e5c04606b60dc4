"""Principal axes by one SVD: what PCA, Search-Adaptor's projection head and the PCA-initialised
adapters all start from."""
from __future__ import annotations

import numpy as np


def principal_axes(x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(top-``k`` axes ``[k, D]`` ordered by explained variance, mean ``[D]``) of the rows of
    ``x``, computed in float64; all ``D`` axes when ``k`` is None. With fewer rows than dims the
    axes past the data's rank complete an orthonormal basis (zero variance, arbitrary order)."""
    data = np.asarray(x, dtype=np.float64)
    mean = data.mean(axis=0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=len(data) < data.shape[1])
    return vt[:k], mean
