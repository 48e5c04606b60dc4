"""The trainable network f_θ on frozen embeddings; the identity at step 0."""
from __future__ import annotations

import torch
from torch import nn

ADAPTERS = ("residual_mlp", "linear_identity")


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

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e + self.down(nn.functional.gelu(self.up(self.norm(e))))


class LinearIdentity(nn.Module):
    """A full ``D × D`` matrix initialised to the identity (the paper's plain "FC layer")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.linear(e)


def build_adapter(kind: str, dim: int, hidden: int = 512) -> nn.Module:
    if kind == "residual_mlp":
        return ResidualAdapter(dim, hidden)
    if kind == "linear_identity":
        return LinearIdentity(dim)
    raise ValueError(f"adapter must be one of {ADAPTERS}, got {kind!r}")
