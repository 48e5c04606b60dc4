"""Listwise similarity distillation: the compressed level ranks each item's neighbours as the
full-dim embeddings do."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimilarityDistillationLoss(nn.Module):
    r"""KL divergence between the teacher's and the student's softened similarity lists.

    .. math::
        L = \frac{1}{B} \sum_i \mathrm{KL}\Bigl(\mathrm{softmax}\bigl(\tfrac{t_i}{T}\bigr)
            \,\Big\|\, \mathrm{softmax}\bigl(\tfrac{s_i}{T}\bigr)\Bigr)

    ``t_i`` are the frozen full-dim cosines of item ``i`` to its candidates (its top-K S-XBM
    neighbours and the other items of the batch), ``s_i`` the same cosines at the compressed
    level. Unlike :class:`SimilarityPreservationLoss` (|t − s| on the neighbours only) it
    rewards the *order* of the candidates, neighbours above non-neighbours, which is what
    retrieval reads, and it has zero gradient where the student already agrees (the L1 term's
    sign gradient makes Adam walk away from an exact start, such as the PCA rotation).

    References: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015), the
    softened-softmax KL; applied to similarity lists as in listwise ranking distillation.

    Inputs: ``teacher_sim`` and ``student_sim``, both ``[B, N]``; ``-inf`` entries (an item
    against itself) are left out of both softmaxes.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; try 0.05")
        self.temperature = temperature

    def forward(self, teacher_sim: torch.Tensor, student_sim: torch.Tensor) -> torch.Tensor:
        if teacher_sim.shape != student_sim.shape or teacher_sim.dim() != 2:
            raise ValueError(f"teacher_sim and student_sim must both be [B, N]; got "
                             f"{tuple(teacher_sim.shape)} and {tuple(student_sim.shape)}")
        keep = torch.isfinite(teacher_sim)
        target = F.softmax(teacher_sim.detach() / self.temperature, dim=1)
        log_student = F.log_softmax(student_sim.masked_fill(~keep, float("-inf"))
                                    / self.temperature, dim=1)
        terms = target * (torch.log(target.clamp_min(1e-12)) - log_student)
        return terms.masked_fill(~keep, 0.0).sum(dim=1).mean()
