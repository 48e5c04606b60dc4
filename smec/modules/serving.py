"""What a document vector becomes when it is served, as a differentiable module for training.

Precision-aware training (issue 23): the rank loss scores the float query against the
document *as the index will hold it*, so a level learns a geometry that survives its
quantiser instead of being quantised after the fact. The query side stays float, as it is
served (int8 dequantised scores, binary's float-query rescoring).

* ``float32``: the identity.
* ``int8``: fake quantisation (Jacob et al., 2018) with per-dimension ranges taken, like
  :meth:`smec.quantize.Quantizer.fit`, from the 0.1/99.9 percentiles of the documents in hand
  (the step's candidates; the validation sample when scoring), detached:
  ``x̂ = lo + round((x − lo)/(hi − lo)·255)/255·(hi − lo)``.
* ``binary``: ``sign(x)/√d``, the unit-norm ±1 vector the float query is rescored against.
  While training it is relaxed to ``tanh(β √d x)/√d``, with β annealed geometrically from
  :data:`BETA_START` to :data:`BETA_END` over the stage (``progress`` 0 → 1), so the gradient
  reaches the coordinates near the threshold, which the sign would flip; scoring (eval mode)
  uses the sign itself.

int8 passes the gradient straight through (Bengio et al., 2013): the forward pass sees the
quantised document, the backward pass treats the quantiser as the identity.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SERVE_PRECISIONS = ("float32", "int8", "binary")
PERCENTILE = 0.1
BETA_START, BETA_END = 1.0, 30.0


class ServedDocuments(nn.Module):
    """``[n, d]`` document vectors → what they score as when served at ``precision``."""

    def __init__(self, precision: str = "float32") -> None:
        super().__init__()
        if precision not in SERVE_PRECISIONS:
            raise ValueError(f"serve_precision must be one of {SERVE_PRECISIONS}, got "
                             f"{precision!r} (PQ is scored post hoc, not trained for yet)")
        self.precision = precision
        self.progress = 0.0   # share of the stage's steps done: anneals the binary relaxation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "float32":
            return x
        if self.precision == "binary" and self.training and torch.is_grad_enabled():
            beta = BETA_START * (BETA_END / BETA_START) ** min(max(self.progress, 0.0), 1.0)
            scale = math.sqrt(x.shape[-1])
            return torch.tanh(beta * scale * x) / scale
        with torch.no_grad():
            served = self._quantised(x.detach().float()).to(x.dtype)
        return x + (served - x).detach()   # straight-through: identity gradient

    def _quantised(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "binary":
            return torch.where(x > 0, 1.0, -1.0) / math.sqrt(x.shape[-1])
        q = torch.tensor([PERCENTILE / 100, 1 - PERCENTILE / 100], dtype=x.dtype, device=x.device)
        lo, hi = torch.quantile(x, q, dim=0)
        hi = torch.maximum(hi, lo + 1e-6)
        step = (hi - lo) / 255
        return lo + torch.round((x.clamp(lo, hi) - lo) / step) * step
