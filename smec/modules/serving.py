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

* ``pqM``: faiss's M-byte product quantiser. Scoring (no gradient) fits the codebooks
  ``C [M, 256, d/M]`` on the documents in hand (the validation sample: corpus documents, as
  serving fits them) and keeps them for the level's dims, then replaces each sub-vector by its
  nearest codeword. Validation runs before every epoch of a stage, so the codebooks are
  re-fitted between epochs on the geometry training has moved to (faiss's k-means the first
  time, then Lloyd rounds warm-started from the last codebooks). While training, the
  assignment is relaxed (Chen et al., 2020, differentiable PQ): sub-vector ``x_m`` becomes
  ``Σ_k softmax_k(−‖x_m − C_mk‖² / T) C_mk`` with ``T = t · mean min_k ‖x_m − C_mk‖²``
  (the batch's mean quantisation error per sub-vector, detached), ``t`` annealed geometrically from
  :data:`PQ_T_START` to :data:`PQ_T_END` over the stage: the softmax hardens to the nearest
  codeword, which is what is served. Levels whose dims M does not divide are served float.

int8 passes the gradient straight through (Bengio et al., 2013): the forward pass sees the
quantised document, the backward pass treats the quantiser as the identity.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from smec.results import check_serve_precision, product_quantizer

PERCENTILE = 0.1
BETA_START, BETA_END = 1.0, 30.0
PQ_T_START, PQ_T_END = 1.0, 0.01
PQ_REFIT_ITERATIONS = 5


def _subvectors(x: torch.Tensor, m: int) -> torch.Tensor:
    """``[n, d]`` -> ``[M, n, d/M]``: sub-vector-major, so every codebook op is one bmm."""
    return x.reshape(len(x), m, -1).transpose(0, 1)


def _codeword_scores(sub: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``[M, n, 256]``: ``‖C_mk‖² − 2⟨x_m, C_mk⟩``, the squared distance of sub-vector ``x_m``
    to codeword ``C_mk`` less ``‖x_m‖²`` (the same for every codeword, so the nearest codeword
    and the softmax over codewords are unchanged), in one fused batched product."""
    return torch.baddbmm((codebooks * codebooks).sum(-1)[:, None, :], sub,
                         codebooks.transpose(1, 2), alpha=-2)


def _nearest(sub: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``[M, n]`` index of each sub-vector's nearest codeword."""
    return _codeword_scores(sub, codebooks).argmin(-1)


class ServedDocuments(nn.Module):
    """``[n, d]`` document vectors → what they score as when served at ``precision``."""

    def __init__(self, precision: str = "float32") -> None:
        super().__init__()
        self.precision = check_serve_precision(precision)
        product = product_quantizer(precision)
        self.pq_bytes = product.m if product else None
        self.codebooks: dict[int, torch.Tensor] = {}   # pqM: per level dims, fitted when scoring
        self.progress = 0.0   # share of the stage's steps done: anneals the relaxation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "float32":
            return x
        if self.pq_bytes is not None:
            return self._product(x)
        if self.precision == "binary" and self.training and torch.is_grad_enabled():
            beta = BETA_START * (BETA_END / BETA_START) ** min(max(self.progress, 0.0), 1.0)
            scale = math.sqrt(x.shape[-1])
            return torch.tanh(beta * scale * x) / scale
        with torch.no_grad():
            served = self._quantised(x.detach().float()).to(x.dtype)
        return x + (served - x).detach()   # straight-through: identity gradient

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        dim, n = x.shape[-1], len(x)
        if dim % self.pq_bytes:
            return x                  # not served by this PQ: the level trains in float
        if not (self.training and torch.is_grad_enabled()):
            with torch.no_grad():
                sub = _subvectors(x.detach().float(), self.pq_bytes)
                codebooks = self.codebooks[dim] = self._fitted(sub)
                rows = torch.arange(self.pq_bytes, device=x.device)[:, None]
                picked = codebooks[rows, _nearest(sub, codebooks)]            # [M, n, d/M]
            return picked.transpose(0, 1).reshape(n, dim).to(x.dtype)
        if dim not in self.codebooks:
            raise RuntimeError(f"serve_precision {self.precision}: no codebooks for {dim} dims "
                               "yet; score the documents once without gradient (validation "
                               "does) before training on them")
        codebooks = self.codebooks[dim]
        sub = _subvectors(x.float(), self.pq_bytes)
        scores = _codeword_scores(sub, codebooks)                              # [M, n, 256]
        t = PQ_T_START * (PQ_T_END / PQ_T_START) ** min(max(self.progress, 0.0), 1.0)
        with torch.no_grad():         # the batch's mean quantisation error: T's unit
            error = (scores.min(-1).values + (sub * sub).sum(-1)).mean().clamp_min(1e-12)
        weights = torch.softmax(-scores / (t * error), dim=-1)
        soft = torch.bmm(weights, codebooks)                                   # [M, n, d/M]
        return soft.transpose(0, 1).reshape(n, dim).to(x.dtype)

    def _fitted(self, sub: torch.Tensor) -> torch.Tensor:
        """Codebooks for sub-vectors ``sub [M, n, d/M]``: faiss's the first time a level is
        scored, then :data:`PQ_REFIT_ITERATIONS` Lloyd rounds from the last ones (the geometry
        moved by one epoch; a full k-means per epoch would cost more than the epoch)."""
        m, n, width = sub.shape
        codebooks = self.codebooks.get(m * width)
        if codebooks is None:
            from smec.quantize import Quantizer
            fitted = Quantizer.fit(self.precision,
                                   sub.transpose(0, 1).reshape(n, m * width).cpu().numpy())
            return torch.from_numpy(fitted.params["codebooks"]).to(sub.device)
        k = codebooks.shape[1]
        cell = torch.arange(m, device=sub.device)[:, None] * k   # codeword (m, j) -> m·k + j
        flat = sub.reshape(m * n, width)
        for _ in range(PQ_REFIT_ITERATIONS):
            nearest = (_nearest(sub, codebooks) + cell).reshape(-1)
            sums = sub.new_zeros(m * k, width).index_add_(0, nearest, flat)
            counts = sub.new_zeros(m * k).index_add_(0, nearest, sub.new_ones(m * n))
            means = sums / counts.clamp_min(1)[:, None]
            codebooks = torch.where(counts[:, None] > 0, means,   # an empty cell keeps its word
                                    codebooks.reshape(m * k, width)).reshape(m, k, width)
        return codebooks

    def _quantised(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "binary":
            return torch.where(x > 0, 1.0, -1.0) / math.sqrt(x.shape[-1])
        q = torch.tensor([PERCENTILE / 100, 1 - PERCENTILE / 100], dtype=x.dtype, device=x.device)
        lo, hi = torch.quantile(x, q, dim=0)
        hi = torch.maximum(hi, lo + 1e-6)
        step = (hi - lo) / 255
        return lo + torch.round((x.clamp(lo, hi) - lo) / step) * step
