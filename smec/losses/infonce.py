"""InfoNCE / multiple-negatives ranking loss with several positives per query."""
from __future__ import annotations

import torch
from torch import nn


class InfoNCELoss(nn.Module):
    r"""Contrastive loss over a query's candidates, positives pooled (METHOD.md §5.2 (a)).

    .. math::
        L_i = -\log \frac{\sum_{j: y_{ij} > 0} e^{s_{ij}/t}}{\sum_{j} e^{s_{ij}/t}}

    averaged over the queries that have a positive. ``s_ij`` is the cosine similarity of query
    ``i`` and candidate ``j``; the candidates are the batch's shared pool (in-batch negatives,
    mined hard negatives and random documents), so with one positive per query this is
    sentence-transformers' ``MultipleNegativesRankingLoss`` (scale ``1/t`` = 20 at ``t`` = 0.05).

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive
    Coding" (arXiv 1807.03748); Henderson et al., "Efficient Natural Language Response
    Suggestion for Smart Reply" (arXiv 1705.00652).

    Inputs: ``scores`` ``[B, N]`` and ``labels`` ``[B, N]`` grades (> 0 marks a positive; the
    grade value itself is not used).
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if scores.shape != labels.shape or scores.dim() != 2:
            raise ValueError(f"scores and labels must both be [B, N]; got {tuple(scores.shape)} "
                             f"and {tuple(labels.shape)}")
        logits = scores / self.temperature
        positive = labels > 0
        has_pos = positive.any(dim=1, keepdim=True)
        # a query without a positive in the batch scores against itself (a zero term, no NaN
        # gradient) and is left out of the mean; no host sync, no data-dependent shape
        pos_logits = torch.where(has_pos, logits.masked_fill(~positive, float("-inf")), logits)
        per_query = torch.logsumexp(logits, dim=1) - torch.logsumexp(pos_logits, dim=1)
        has_pos = has_pos.squeeze(1)
        return (per_query * has_pos).sum() / has_pos.sum().clamp(min=1)
