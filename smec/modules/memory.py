"""S-XBM: a FIFO memory of frozen embeddings that serves top-K neighbours (SMEC §3.4)."""
from __future__ import annotations

import torch


class SXBM:
    """Ring buffer of *original* (frozen, L2-normalised) embeddings and their integer ids.

    Like XBM's ``enqueue_dequeue``/``get`` (Wang et al., CVPR 2020) but storing the backbone
    output, so stored features never go stale, and used only to find each batch item's top-K
    neighbours for :class:`smec.losses.SimilarityPreservationLoss`.
    """

    def __init__(self, size: int, dim: int) -> None:
        if size <= 0 or dim <= 0:
            raise ValueError(f"size and dim must be positive, got size={size}, dim={dim}")
        self.feats = torch.zeros(size, dim)
        self.ids = torch.full((size,), -1, dtype=torch.long)
        self.size, self.ptr, self.filled = size, 0, 0

    def enqueue(self, feats: torch.Tensor, ids: torch.Tensor) -> None:
        """Overwrite the oldest rows (FIFO, wrapping around)."""
        feats, ids = feats.detach()[-self.size:], ids[-self.size:]
        slots = (self.ptr + torch.arange(len(ids))) % self.size
        self.feats[slots] = feats.to(self.feats.dtype)
        self.ids[slots] = ids
        self.ptr = (self.ptr + len(ids)) % self.size
        self.filled = min(self.filled + len(ids), self.size)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feats[:self.filled], self.ids[:self.filled]

    @torch.no_grad()
    def neighbours(self, feats: torch.Tensor, ids: torch.Tensor, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-``k`` neighbours of each row among memory ∪ batch, excluding the same id.

        Returns ``(pool [P, D], index [B, k] into pool, teacher cosine [B, k])``.
        """
        mem_feats, mem_ids = self.get()
        pool = torch.cat([mem_feats, feats.detach().to(mem_feats.dtype)])
        pool_ids = torch.cat([mem_ids, ids])
        sim = feats.detach().to(pool.dtype) @ pool.T
        sim.masked_fill_(ids[:, None] == pool_ids[None, :], float("-inf"))
        teacher, index = sim.topk(k, dim=1)
        return pool, index, teacher
