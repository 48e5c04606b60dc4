"""ADS: learned dimension selection by straight-through Gumbel-top-k (SMEC §3.3, Eq. 6)."""
from __future__ import annotations

import torch
from torch import nn

LOGIT_INITS = ("positional", "zeros")


class AdaptiveDimensionSelection(nn.Module):
    r"""Select ``k`` of ``in_dim`` dimensions with learnable importance logits ``ℓ``.

    Training (one sample per step, shared by queries and documents):

    1. ``g ~ Gumbel(0, 1)``; hard set ``T = topk(ℓ + g, k)`` — sampling ``k`` dims without
       replacement with probabilities ``softmax(ℓ)``;
    2. relaxed inclusion ``p̃ = min(1, k · softmax((ℓ + g) / τ))``;
    3. gate ``m_T = 1 + p̃_T − stopgrad(p̃_T)``: exactly 1 in the forward pass, while the gradient
       ``∂L/∂ℓ`` flows through ``p̃`` (straight-through).

    Inference: ``T = topk(ℓ, k)``, no noise, gate 1. Indices are kept sorted ascending.

    ``init="positional"`` sets ``ℓ_i = −scale · i / in_dim`` so that the noiseless selection
    starts as plain truncation to the first ``k`` dims.
    Reference: Zhang et al., SMEC (arXiv 2510.12474), §3.3; the hard/soft bridge is METHOD.md's
    choice (AMBIGUITY A2).
    """

    def __init__(self, in_dim: int, k: int, init: str = "positional",
                 init_scale: float = 1.0) -> None:
        super().__init__()
        if not 0 < k <= in_dim:
            raise ValueError(f"k must be in [1, in_dim={in_dim}], got {k}")
        if init not in LOGIT_INITS:
            raise ValueError(f"init must be one of {LOGIT_INITS}, got {init!r}")
        self.in_dim, self.k = in_dim, k
        start = -init_scale * torch.arange(in_dim, dtype=torch.float32) / in_dim
        self.logits = nn.Parameter(start if init == "positional" else torch.zeros(in_dim))

    def sample(self, tau: float, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (indices ``[k]``, gate ``[k]``) for one training step."""
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        # drawn on the CPU (the sampling generator's device), so a seed gives the same noise
        # on every device
        u = torch.rand(self.in_dim, generator=generator).to(self.logits.device)
        gumbel = -torch.log(-torch.log(u + 1e-10) + 1e-10)
        noisy = self.logits + gumbel
        index = noisy.detach().topk(self.k).indices.sort().values
        relaxed = (self.k * torch.softmax(noisy / tau, dim=0)).clamp(max=1.0)[index]
        return index, 1.0 + relaxed - relaxed.detach()

    def selected(self) -> torch.Tensor:
        """The noiseless top-k indices, sorted ascending."""
        return self.logits.detach().topk(self.k).indices.sort().values


def anneal_tau(step: int, total_steps: int, tau0: float, tau_min: float) -> float:
    """Exponential decay from ``tau0`` to ``tau_min`` over a stage (METHOD.md A3)."""
    frac = min(step / max(total_steps, 1), 1.0)
    return max(tau_min, tau0 * (tau_min / tau0) ** frac)
