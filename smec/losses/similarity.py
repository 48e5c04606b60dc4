"""Unsupervised similarity-preservation loss over top-K neighbours (SMEC Eq. 7)."""
from __future__ import annotations

import torch
from torch import nn


class SimilarityPreservationLoss(nn.Module):
    r"""Keep the compressed similarities of each item to its nearest neighbours.

    .. math::
        L_{unsup} = \frac{1}{B} \sum_i \sum_{j \in N_K(i)}
            \bigl|\,\mathrm{Sim}(e_i, e_j) - \mathrm{Sim}(f(e_i)_{[:d]}, f(e_j)_{[:d]})\,\bigr|

    ``N_K(i)`` are the ``K`` nearest neighbours of ``i`` under the *original, frozen* embeddings
    (the teacher), found in the S-XBM memory (:class:`smec.modules.memory.SXBM`); the right-hand
    side is the student at the current compression level.

    References: Zhang et al., SMEC (arXiv 2510.12474), Eq. 7 and §3.4; the neighbour-restricted
    unsupervised term of Yoon et al., "Matryoshka-Adaptor", EMNLP 2024 (arXiv 2407.20243).

    Inputs: ``teacher_sim`` and ``student_sim``, both ``[B, K]``: row ``i`` holds the
    similarities of item ``i`` to its ``K`` neighbours. Mean over items, sum over neighbours.

    ``huber_delta`` > 0 replaces ``|x|`` by the Huber function (``x² / 2δ`` below ``δ``,
    ``|x| − δ/2`` above), and ``reduction="mean"`` averages over the neighbours: the smooth
    variant (``unsup_loss: smooth``) whose gradient vanishes where the student agrees (``|x|``
    pushes with ±1 on float noise at an exact start) and whose size does not grow with ``K``.
    The defaults are the paper's term.
    """

    def __init__(self, huber_delta: float = 0.0, reduction: str = "sum") -> None:
        super().__init__()
        if huber_delta < 0:
            raise ValueError(f"huber_delta must be >= 0 (0: the paper's |x|), got {huber_delta}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum (paper) or mean, got {reduction!r}")
        self.huber_delta, self.reduction = huber_delta, reduction

    def forward(self, teacher_sim: torch.Tensor, student_sim: torch.Tensor) -> torch.Tensor:
        if teacher_sim.shape != student_sim.shape or teacher_sim.dim() != 2:
            raise ValueError(f"teacher_sim and student_sim must both be [B, K]; got "
                             f"{tuple(teacher_sim.shape)} and {tuple(student_sim.shape)}")
        gap = (teacher_sim.detach() - student_sim).abs()
        if self.huber_delta > 0:
            delta = self.huber_delta
            gap = torch.where(gap < delta, gap ** 2 / (2 * delta), gap - delta / 2)
        per_item = gap.sum(dim=1) if self.reduction == "sum" else gap.mean(dim=1)
        return per_item.mean()
