"""The objective of one training step: the rank loss over the level heads plus α times the
unsupervised term."""
from __future__ import annotations

import torch
from torch import nn

from smec.losses.distill import SimilarityDistillationLoss
from smec.losses.matryoshka_adaptor import MatryoshkaAdaptorLoss
from smec.losses.similarity import SimilarityPreservationLoss

UNSUPERVISED = ("sxbm", "matryoshka_adaptor")   # the unsupervised term; None: none
UNSUP_LOSSES = ("preserve", "smooth", "distill")   # the form of the sxbm term (train.unsup_loss)

#: the S-XBM neighbours of a batch: (the neighbours' input features [U, D], the index of each
#: item's K neighbours into them [B, K], the teacher's cosines to them [B, K])
Neighbours = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _off_diagonal(sim: torch.Tensor) -> torch.Tensor:
    """``sim`` with its diagonal (an item against itself) at ``-inf``."""
    return sim.masked_fill(torch.eye(len(sim), dtype=torch.bool, device=sim.device),
                           float("-inf"))


class CompressionObjective(nn.Module):
    r"""Rank loss over the level heads plus α times an unsupervised term.

    .. math::
        L = \sum_{h \in H} L_{rank}\bigl(h(f(q))\, h(f(c))^\top, Y\bigr)
            + \alpha \sum_{h \in H} L_{unsup}(h)

    One head is one SMRL stage (SMEC Eq. 5: no other level's loss), several heads the parallel
    Matryoshka schedule (MRL, Eq. 4). ``L_unsup`` is absent (``unsup=None``), ``sxbm`` (each
    unlabelled document against its top-K neighbours from the S-XBM memory, SMEC Eq. 7:
    |t − s| summed over the neighbours with ``unsup_loss="preserve"``, its Huber form averaged over them with
    ``"smooth"``, or :class:`SimilarityDistillationLoss` over the neighbours and the batch with
    ``"distill"``) or ``matryoshka_adaptor`` (:class:`MatryoshkaAdaptorLoss`). Without labels
    (``queries is None``) only the unsupervised term trains.

    ``served`` (:class:`smec.modules.serving.ServedDocuments`) turns the candidates of each
    head into what the index will hold (int8, binary) before the rank loss scores them against
    the float queries: precision-aware training. The unsupervised term stays in float.

    The teacher ``t`` is the frozen cosine in ``neighbours`` (the memory's: full-dim, or that
    of ``train.teacher``'s vectors; or the previous SMRL stage's snapshot at its level, the
    geometry supervision already moved to), ``unlabelled_teacher`` giving the batch's own pairs.

    References: Zhang et al., SMEC (arXiv 2510.12474), Eqs. 4, 5, 7; Kusupati et al., MRL
    (arXiv 2205.13147); Yoon et al., Matryoshka-Adaptor (arXiv 2407.20243).

    Inputs of :meth:`forward`: the ``adapter`` ``f`` and ``heads`` (each called as
    ``head(h, sample)`` with its Gumbel ``samples``), the frozen ``queries`` ``[B, D]``, their
    ``candidates`` ``[N, D]`` and graded ``labels`` ``[B, N]`` (all ``None`` label-free), the
    unlabelled documents ``unlabelled`` ``[B_u, D]`` and, for ``sxbm``, the memory's
    ``neighbours`` of them (``None`` while the memory fills), and optionally the teacher's
    vectors of the unlabelled documents ``unlabelled_teacher`` ``[B_u, D_t]`` (default: the
    documents themselves), and ``shared``: where the unlabelled documents ``[B_u]`` and the
    neighbours ``[U]`` sit among ``candidates`` (−1: not a candidate), so the adapter passes
    each row once. Returns ``(loss, rank, unsup)``.
    """

    def __init__(self, rank_loss: nn.Module, unsup: str | None = None, alpha: float = 1.0,
                 unsup_loss: str = "preserve", distill_temperature: float = 0.05,
                 neighbours: int = 10, neighbour_grad: bool = True, huber_delta: float = 0.02,
                 served: nn.Module | None = None) -> None:
        super().__init__()
        if unsup is not None and unsup not in UNSUPERVISED:
            raise ValueError(f"unsup must be None or one of {UNSUPERVISED}, got {unsup!r}")
        if unsup_loss not in UNSUP_LOSSES:
            raise ValueError(f"unsup_loss must be one of {UNSUP_LOSSES}, got {unsup_loss!r}")
        self.rank_loss, self.unsup, self.alpha = rank_loss, unsup, alpha
        self.distill = unsup_loss == "distill"
        self.sxbm_loss = SimilarityDistillationLoss(distill_temperature) if self.distill \
            else SimilarityPreservationLoss(huber_delta, "mean") if unsup_loss == "smooth" \
            else SimilarityPreservationLoss()
        self.matryoshka_adaptor = MatryoshkaAdaptorLoss(neighbours)
        self.neighbour_grad = neighbour_grad
        self.served = served if served is not None else nn.Identity()

    def forward(self, adapter: nn.Module, heads: list[nn.Module], samples: list,
                queries: torch.Tensor | None, candidates: torch.Tensor | None,
                labels: torch.Tensor | None, unlabelled: torch.Tensor,
                neighbours: Neighbours | None = None,
                unlabelled_teacher: torch.Tensor | None = None,
                shared: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss_rank = unlabelled.new_zeros(())
        hc = None
        if queries is not None:
            hq, hc = adapter(queries), adapter(candidates)
            loss_rank = sum(self.rank_loss(head(hq, s) @ self.served(head(hc, s)).T, labels)
                            for head, s in zip(heads, samples))
        loss_unsup = unlabelled.new_zeros(())
        if self.unsup == "sxbm" and neighbours is not None:
            known = (hc, *shared) if hc is not None and shared is not None else None
            loss_unsup = self._sxbm(adapter, heads, samples, unlabelled, neighbours,
                                    unlabelled_teacher, known)
        elif self.unsup == "matryoshka_adaptor":
            h_u = adapter(unlabelled)
            for head, s in zip(heads, samples):
                loss_unsup = loss_unsup + self.matryoshka_adaptor(unlabelled, h_u, head(h_u, s),
                                                                  unlabelled_teacher)
        return loss_rank + self.alpha * loss_unsup, loss_rank, loss_unsup

    def _passes(self, adapter: nn.Module, e_u: torch.Tensor, nbr_feats: torch.Tensor,
                known: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapter's outputs of the unlabelled documents and of their neighbours. Rows the
        rank loss already passed (``known``: its outputs ``hc`` and, per row, the position
        there or −1) are taken from that pass, graph included, so each row is passed once: the
        same values and gradients as a second pass, for the cost of the other rows only."""
        if known is None:         # nothing passed yet: every row, with no data-dependent shape
            if self.neighbour_grad:
                return adapter(torch.cat([e_u, nbr_feats])).split([len(e_u), len(nbr_feats)])
            with torch.no_grad():
                h_nbr = adapter(nbr_feats)
            return adapter(e_u), h_nbr
        hc, u_at, n_at = known
        u_new, n_new = u_at < 0, n_at < 0

        def rows_of(at: torch.Tensor, new: torch.Tensor, first: int) -> torch.Tensor:
            index = at.clone()
            index[new] = first + torch.arange(int(new.sum()), device=at.device)
            return index

        if self.neighbour_grad:   # one pass over the batch and its neighbours not yet passed
            fresh = adapter(torch.cat([e_u[u_new], nbr_feats[n_new]]))
            pool = torch.cat([hc, fresh])
            return (pool[rows_of(u_at, u_new, len(hc))],
                    pool[rows_of(n_at, n_new, len(hc) + int(u_new.sum()))])
        # neighbours as constants, as XBM treats them
        pool = torch.cat([hc, adapter(e_u[u_new])])
        with torch.no_grad():
            pool_nbr = torch.cat([hc.detach(), adapter(nbr_feats[n_new])])
        return pool[rows_of(u_at, u_new, len(hc))], pool_nbr[rows_of(n_at, n_new, len(hc))]

    def _sxbm(self, adapter: nn.Module, heads: list[nn.Module], samples: list,
              e_u: torch.Tensor, neighbours: Neighbours,
              t_u: torch.Tensor | None = None,
              known: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
              ) -> torch.Tensor:
        nbr_feats, inverse, teacher = neighbours
        batch_teacher = e_u @ e_u.T if t_u is None else t_u @ t_u.T
        h_self, h_nbr = self._passes(adapter, e_u, nbr_feats, known)
        loss = e_u.new_zeros(())
        for head, s in zip(heads, samples):
            z_self, z_nbr = head(h_self, s), head(h_nbr, s)[inverse]   # [B_u, K, d]
            student = (z_self[:, None, :] * z_nbr).sum(-1)
            if self.distill:   # the batch's other items compete too
                loss = loss + self.sxbm_loss(
                    torch.cat([teacher, _off_diagonal(batch_teacher)], 1),
                    torch.cat([student, _off_diagonal(z_self @ z_self.T)], 1))
            else:
                loss = loss + self.sxbm_loss(teacher, student)
        return loss
