"""Level heads: how one compression level reads the adapter output ``h = f(e)``.

Every method in METHOD.md §3 is an adapter plus one head per level:

* :class:`PrefixHead` — the first ``d`` of the dims kept so far (MRL truncation);
* :class:`ADSHead` — ``d`` dims chosen by learned Gumbel-top-k selection (SMEC's ADS);
* :class:`ProjectionHead` — a linear ``D → d`` map initialised from PCA (Search-Adaptor).

A head samples once per training step (:meth:`sample`), so queries and documents of a step see
the same selection, and exports a fixed, noise-free form when the level is snapshotted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smec.modules.ads import AdaptiveDimensionSelection
from smec.principal import principal_axes


class PrefixHead(nn.Module):
    def __init__(self, in_index: torch.Tensor, dim: int) -> None:
        super().__init__()
        if not 0 < dim <= len(in_index):
            raise ValueError(f"dim must be in [1, {len(in_index)}], got {dim}")
        self.dim = dim
        self.register_buffer("index", in_index[:dim].clone())

    def sample(self, tau: float, generator: torch.Generator | None = None) -> None:
        return None

    def forward(self, h: torch.Tensor, sample=None) -> torch.Tensor:
        return F.normalize(h[:, self.index], dim=-1)

    def export(self) -> tuple[torch.Tensor, None]:
        return self.index.clone(), None


class ADSHead(nn.Module):
    """Select ``dim`` of the ``in_index`` dims with :class:`AdaptiveDimensionSelection`."""

    def __init__(self, in_index: torch.Tensor, dim: int, init: str = "positional",
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("in_index", in_index.clone())
        self.ads = AdaptiveDimensionSelection(len(in_index), dim, init, init_scale)

    def sample(self, tau: float, generator: torch.Generator | None = None):
        return self.ads.sample(tau, generator)

    def forward(self, h: torch.Tensor, sample=None) -> torch.Tensor:
        h = h[:, self.in_index]
        if sample is None:
            return F.normalize(h[:, self.ads.selected()], dim=-1)
        index, gate = sample
        return F.normalize(h[:, index] * gate, dim=-1)

    def export(self) -> tuple[torch.Tensor, None]:
        return self.in_index[self.ads.selected()].clone(), None


class ProjectionHead(nn.Module):
    """``z = W h + b`` with ``W`` the top-``dim`` PCA components of the corpus, ``b = −W μ``."""

    def __init__(self, corpus: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.dim = dim
        weight, mean = principal_axes(corpus.float().cpu().numpy(), dim)
        self.linear = nn.Linear(corpus.shape[1], dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight))
            self.linear.bias.copy_(torch.from_numpy(-weight @ mean))

    def sample(self, tau: float, generator: torch.Generator | None = None) -> None:
        return None

    def forward(self, h: torch.Tensor, sample=None) -> torch.Tensor:
        return F.normalize(self.linear(h), dim=-1)

    def export(self) -> tuple[None, dict[str, torch.Tensor]]:
        return None, {k: v.detach().clone() for k, v in self.linear.state_dict().items()}
