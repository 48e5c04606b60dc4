"""The trainable network f_θ on frozen embeddings.

Adapters (``residual_mlp``, ``pca_residual``, ``linear_identity``) keep the input width and
preserve every cosine at step 0 (``pca_residual`` in the corpus's principal-axis basis). Decoders (``mlp``, ``pca_mlp``) map a wide input, e.g. a concatenation of several
models (METHOD.md §5.2), to ``out_dim`` dims.
"""
from __future__ import annotations

import torch
from torch import nn

from smec.principal import principal_axes

ADAPTERS = ("residual_mlp", "pca_residual", "linear_identity", "mlp", "pca_mlp")


class ResidualAdapter(nn.Module):
    """``f(e) = e + W2 · GELU(W1 · LN(e))`` with ``W2`` zero-initialised (METHOD.md §1.4).

    Starting at exactly the identity means an untrained adapter reproduces the original
    embedding, and the rank loss acts on embedding + correction, never the correction alone.
    """

    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        if dim <= 0 or hidden <= 0:
            raise ValueError(f"dim and hidden must be positive, got dim={dim}, hidden={hidden}")
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def correction(self, e: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(self.norm(e))))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.correction(e)


class PCAResidualAdapter(ResidualAdapter):
    """``f(e) = R e + W2 · GELU(W1 · LN(e))``: the residual adapter in the principal-axis basis.

    ``R`` holds all ``D`` PCA axes of the corpus (orthogonal, no centering) and ``W2`` starts at
    zero, so at step 0 every cosine is exactly the raw model's (the full-dim level *is* raw),
    while every prefix is the projection on the top principal axes: each Matryoshka level
    starts at a PCA-quality truncation instead of an arbitrary one. ``R`` trains with the rest.
    """

    def __init__(self, dim: int, hidden: int = 512, init_data: torch.Tensor | None = None
                 ) -> None:
        super().__init__(dim, hidden)
        self.rotate = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.rotate.weight)
        if init_data is not None:
            with torch.no_grad():
                self.rotate.weight.copy_(torch.from_numpy(principal_axes(init_data.cpu().numpy())[0]))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.rotate(e) + self.correction(e)


class LinearIdentity(nn.Module):
    """A full ``D × D`` matrix initialised to the identity (the paper's plain "FC layer")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.linear(e)


class MLPDecoder(nn.Module):
    """``g(x) = W2 · GELU(W1 · x)``: the METHOD.md §5.2 decoder, ``D → hidden → out_dim``."""

    def __init__(self, dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(x)))


class PCAResidualDecoder(nn.Module):
    """``g(x) = P (x − μ) + W2 · GELU(W1 · LN(x))``, ``P`` the top PCA axes, ``W2`` zero.

    At step 0 this is PCA of the input, whose prefixes are already ordered by variance, so
    every Matryoshka level starts at the PCA baseline and training can only move it from
    there (the same reason the residual adapter starts at the identity, METHOD.md §1.4).
    """

    def __init__(self, dim: int, out_dim: int, hidden: int,
                 init_data: torch.Tensor | None = None) -> None:
        super().__init__()
        if out_dim > dim:
            raise ValueError(f"pca_mlp: out_dim {out_dim} must be <= the input dim {dim}")
        self.project = nn.Linear(dim, out_dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        if init_data is not None:
            weight, mean = principal_axes(init_data.cpu().numpy(), out_dim)
            with torch.no_grad():
                self.project.weight.copy_(torch.from_numpy(weight))
                self.project.bias.copy_(torch.from_numpy(-weight @ mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) + self.down(nn.functional.gelu(self.up(self.norm(x))))


def build_adapter(kind: str, dim: int, hidden: int = 512, out_dim: int | None = None,
                  init_data: torch.Tensor | None = None) -> nn.Module:
    """The network ``kind`` from ``dim`` to ``out_dim`` (default ``dim``); ``init_data``
    (corpus vectors) initialises ``pca_mlp``'s projection."""
    out_dim = out_dim or dim
    if kind in ("residual_mlp", "pca_residual", "linear_identity") and out_dim != dim:
        raise ValueError(f"adapter {kind} keeps the width ({dim}); use mlp or pca_mlp to "
                         f"decode to {out_dim} dims")
    if kind == "residual_mlp":
        return ResidualAdapter(dim, hidden)
    if kind == "pca_residual":
        return PCAResidualAdapter(dim, hidden, init_data)
    if kind == "linear_identity":
        return LinearIdentity(dim)
    if kind == "mlp":
        return MLPDecoder(dim, out_dim, hidden)
    if kind == "pca_mlp":
        return PCAResidualDecoder(dim, out_dim, hidden, init_data)
    raise ValueError(f"adapter must be one of {ADAPTERS}, got {kind!r}")
