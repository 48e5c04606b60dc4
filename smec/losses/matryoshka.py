"""Matryoshka wrapper: one base loss summed over nested prefix dimensions (MRL)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MatryoshkaLoss(nn.Module):
    r"""Apply a similarity-based loss at every prefix length and sum with weights.

    .. math::
        L_{MRL} = \sum_{m \in \mathcal{M}} c_m \, L\bigl(\cos(q_{[:m]}, c_{[:m]}),\, Y\bigr)

    This is the *parallel* schedule that SMEC's sequential SMRL replaces: every level's loss is
    in every step. References: Kusupati et al., "Matryoshka Representation Learning", NeurIPS
    2022 (arXiv 2205.13147), Eq. 1; SMEC (arXiv 2510.12474), Eq. 4.

    Inputs: ``queries`` ``[B, D]`` and ``candidates`` ``[N, D]`` (adapted, not yet normalised),
    ``labels`` ``[B, N]``. ``loss`` is called as ``loss(scores [B, N], labels [B, N])``, e.g.
    :class:`smec.losses.rank.RankLoss`.
    """

    def __init__(self, loss: nn.Module, dims: Sequence[int],
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        dims = list(dims)
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive ints, got {dims}")
        weights = list(weights) if weights is not None else [1.0] * len(dims)
        if len(weights) != len(dims):
            raise ValueError(f"weights has {len(weights)} entries but dims has {len(dims)}; "
                             "give one weight per dim")
        self.loss, self.dims, self.weights = loss, dims, weights

    def forward(self, queries: torch.Tensor, candidates: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        if max(self.dims) > queries.shape[-1]:
            raise ValueError(f"largest dim {max(self.dims)} exceeds embedding size "
                             f"{queries.shape[-1]}")
        total = queries.new_zeros(())
        for dim, weight in zip(self.dims, self.weights):
            q = F.normalize(queries[:, :dim], dim=-1)
            c = F.normalize(candidates[:, :dim], dim=-1)
            total = total + weight * self.loss(q @ c.T, labels)
        return total
