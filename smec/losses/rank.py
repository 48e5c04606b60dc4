"""Pairwise rank loss of Search-Adaptor, used verbatim by SMEC (Eq. 8)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean_weighted_pair", "sum", "mean_query", "mean_pair")


class RankLoss(nn.Module):
    r"""Graded pairwise logistic rank loss.

    .. math::
        L = \sum_i \sum_j \sum_k \mathbb{1}[y_{ij} > y_{ik}]\,(y_{ij} - y_{ik})\,
            \log\bigl(1 + e^{\,\gamma (s_{ik} - s_{ij})}\bigr)

    where ``s_ij`` is the cosine similarity of query ``i`` and candidate ``j`` and ``γ`` is
    ``scale`` (1.0 in the paper). Every pair in which ``j`` is strictly more relevant than ``k``
    contributes, weighted by the label gap, so graded qrels matter.

    References: Yoon et al., "Search-Adaptor: Embedding Customization for Information
    Retrieval", ACL 2024 (arXiv 2310.08750); Zhang et al., "SMEC: Rethinking Matryoshka
    Representation Learning for Retrieval Embedding Compression", EMNLP 2025 (arXiv 2510.12474),
    Eq. 8.

    Inputs: ``scores`` ``[B, N]`` similarities and ``labels`` ``[B, N]`` grades (>= 0; 0 = not
    relevant). Since labels are non-negative, only candidates with a positive grade can be the
    better side of a pair, so the loss is computed on ``[B, P, N]`` with ``P`` the largest
    number of positives in a row instead of the full ``[B, N, N]``.

    ``reduction``: ``mean_weighted_pair`` (the default) divides each query's sum by its total
    label-gap weight ``Σ_jk 1[y_ij > y_ik](y_ij − y_ik)`` and averages over the queries that
    have a pair, so the loss is a weighted mean of softplus terms whose size does not depend on
    the number of candidates or of graded positives: ``lr``, ``rank_scale`` and ``alpha`` mean
    the same on SciFact (one positive per query) and on a set with hundreds. ``sum`` (paper),
    ``mean_query`` (sum over pairs, mean over queries) and ``mean_pair`` (over all pairs of the
    batch, unweighted count) grow with the candidate and positive counts.
    """

    def __init__(self, scale: float = 1.0, reduction: str = "mean_weighted_pair") -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.scale = scale
        self.reduction = reduction

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if scores.shape != labels.shape or scores.dim() != 2:
            raise ValueError(f"scores and labels must both be [B, N]; got {tuple(scores.shape)} "
                             f"and {tuple(labels.shape)}")
        labels = labels.to(scores.dtype).clamp(min=0)
        n_pos = int((labels > 0).sum(dim=1).max().item()) if labels.numel() else 0
        if n_pos == 0:
            return scores.sum() * 0.0
        pos_labels, pos_idx = labels.topk(n_pos, dim=1)                # [B, P]
        pos_scores = scores.gather(1, pos_idx)                         # [B, P]
        weight = F.relu(pos_labels[:, :, None] - labels[:, None, :])   # [B, P, N]
        delta = scores[:, None, :] - pos_scores[:, :, None]            # s_ik - s_ij
        per_query = (weight * F.softplus(self.scale * delta)).sum(dim=(1, 2))
        if self.reduction == "mean_weighted_pair":
            total_weight = weight.sum(dim=(1, 2))
            has_pair = total_weight > 0
            return (per_query[has_pair] / total_weight[has_pair]).mean()
        if self.reduction == "sum":
            return per_query.sum()
        if self.reduction == "mean_query":
            return per_query.mean()
        return per_query.sum() / (weight > 0).sum().clamp(min=1)
