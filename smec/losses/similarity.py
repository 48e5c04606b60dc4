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
    """

    def forward(self, teacher_sim: torch.Tensor, student_sim: torch.Tensor) -> torch.Tensor:
        if teacher_sim.shape != student_sim.shape or teacher_sim.dim() != 2:
            raise ValueError(f"teacher_sim and student_sim must both be [B, K]; got "
                             f"{tuple(teacher_sim.shape)} and {tuple(student_sim.shape)}")
        return (teacher_sim.detach() - student_sim).abs().sum(dim=1).mean()
