"""Matryoshka-Adaptor's unsupervised terms at one level."""
from __future__ import annotations

import torch
from torch import nn

from smec.losses.similarity import SimilarityPreservationLoss


class MatryoshkaAdaptorLoss(nn.Module):
    r"""All pairs, top-``k`` neighbours and reconstruction, on one in-batch set of documents.

    .. math::
        L = \operatorname{mean}_{i \ne j} |t_{ij} - s_{ij}|
            + \frac{1}{B}\sum_i \sum_{j \in N_k(i)} |t_{ij} - s_{ij}|
            + \operatorname{mean} |e - f(e)|

    with ``t = e eᵀ`` the frozen cosines (``t = u uᵀ`` given a teacher's vectors ``u`` of the same
    documents, ``train.teacher``), ``s = z zᵀ`` those of the compressed level, and
    ``N_k(i)`` item ``i``'s top-``k`` in-batch neighbours by ``t`` (METHOD.md §1.3 (a)(b)(c)).

    Reference: Yoon et al., "Matryoshka-Adaptor: Unsupervised and Supervised Tuning for Smaller
    Embedding Dimensions", EMNLP 2024 (arXiv 2407.20243), Eqs. 1–3.

    Inputs: ``e`` ``[B, D]`` frozen embeddings, ``h`` ``[B, D]`` the adapter's output ``f(e)``,
    ``z`` ``[B, d]`` the L2-normalised level, optionally ``u`` ``[B, D_t]`` the teacher's
    L2-normalised vectors of the same documents.
    """

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        if k <= 0:
            raise ValueError(f"k must be a positive number of neighbours, got {k}")
        self.k = k
        self.neighbours = SimilarityPreservationLoss()

    def forward(self, e: torch.Tensor, h: torch.Tensor, z: torch.Tensor,
                u: torch.Tensor | None = None) -> torch.Tensor:
        teacher = e @ e.T if u is None else u @ u.T
        student = z @ z.T
        off_diag = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
        n = len(e)
        pairwise = (teacher - student).abs().masked_fill(~off_diag, 0.0).sum() / max(1, n * (n - 1))
        nbr = teacher.masked_fill(~off_diag, float("-inf")).topk(
            min(self.k, len(e) - 1), dim=1).indices
        neighbours = self.neighbours(teacher.gather(1, nbr), student.gather(1, nbr))
        return pairwise + neighbours + (e - h).abs().mean()
