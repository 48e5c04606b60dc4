"""S-XBM: a FIFO memory of frozen embeddings that serves top-K neighbours (SMEC §3.4)."""
from __future__ import annotations

from typing import Protocol

import torch

#: What :meth:`SXBM.exchange` returns once the memory holds at least ``k`` rows:
#: ``(neighbour ids [U], index [B, k] into them, teacher cosine [B, k])``. Ids, not features:
#: the stored features are the teacher's (``train.teacher``); the student reads its own input
#: rows of those ids.
Neighbours = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Memory(Protocol):
    """What the trainer needs from an S-XBM memory; :class:`SXBM` is the local one.

    One call per step (:meth:`exchange`: query, then enqueue) so a remote memory shared by
    several workers (``pipelines/memory_actor.py``) costs one round trip per step.
    """

    @property
    def filled(self) -> int: ...

    def exchange(self, feats: torch.Tensor, ids: torch.Tensor, k: int) -> Neighbours | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class SXBM:
    """Ring buffer of *frozen* L2-normalised embeddings (the teacher's: the original ones, or
    ``train.teacher``'s) and their integer ids.

    Like XBM's ``enqueue_dequeue``/``get`` (Wang et al., CVPR 2020) but storing the backbone
    output, so stored features never go stale, and used only to find each batch item's top-K
    neighbours for :class:`smec.losses.SimilarityPreservationLoss`. Lives on ``device`` (the
    training's: its top-K is a matrix product per step); ids may come from the CPU.
    """

    def __init__(self, size: int, dim: int, device: str | torch.device = "cpu") -> None:
        if size <= 0 or dim <= 0:
            raise ValueError(f"size and dim must be positive, got size={size}, dim={dim}")
        self.feats = torch.zeros(size, dim, device=device)
        self.ids = torch.full((size,), -1, dtype=torch.long, device=device)
        self.size, self.ptr, self.filled = size, 0, 0

    def _new(self, ids: torch.Tensor) -> torch.Tensor:
        """Mask of the rows whose id is neither stored nor repeated earlier in ``ids``."""
        fresh = ~torch.isin(ids, self.ids[:self.filled])
        unique, inverse = torch.unique(ids, return_inverse=True)
        first_row = torch.full((len(unique),), len(ids), device=ids.device).scatter_reduce(
            0, inverse, torch.arange(len(ids), device=ids.device), reduce="amin")
        first = torch.zeros_like(fresh)
        first[first_row] = True
        return fresh & first

    def enqueue(self, feats: torch.Tensor, ids: torch.Tensor) -> None:
        """Store the rows whose id is new, overwriting the oldest (FIFO, wrapping around).

        Features are frozen, so a document already stored is skipped: each id holds at most
        one slot, and top-K never counts the same neighbour twice.
        """
        ids = ids.to(self.ids.device)
        keep = self._new(ids)
        feats, ids = feats.detach()[keep][-self.size:], ids[keep][-self.size:]
        slots = (self.ptr + torch.arange(len(ids), device=ids.device)) % self.size
        self.feats[slots] = feats.to(self.feats.dtype)
        self.ids[slots] = ids
        self.ptr = (self.ptr + len(ids)) % self.size
        self.filled = min(self.filled + len(ids), self.size)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feats[:self.filled], self.ids[:self.filled]

    @torch.no_grad()
    def neighbours(self, feats: torch.Tensor, ids: torch.Tensor, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-``k`` neighbours of each row among memory ∪ batch, excluding the same id.

        Returns ``(pool [P, D], pool ids [P], index [B, k] into pool, teacher cosine [B, k])``;
        every id is in the pool once.
        """
        mem_feats, mem_ids = self.get()
        ids = ids.to(mem_ids.device)
        new = self._new(ids)
        pool = torch.cat([mem_feats, feats.detach()[new].to(mem_feats.dtype)])
        pool_ids = torch.cat([mem_ids, ids[new]])
        sim = feats.detach().to(pool.dtype) @ pool.T
        sim.masked_fill_(ids[:, None] == pool_ids[None, :], float("-inf"))
        teacher, index = sim.topk(k, dim=1)
        return pool, pool_ids, index, teacher

    def exchange(self, feats: torch.Tensor, ids: torch.Tensor, k: int) -> Neighbours | None:
        """Top-``k`` neighbours of the batch (``None`` while fewer than ``k`` rows are stored),
        then enqueue the batch: one step's whole use of the memory, in one call.

        Only the ids of the neighbours actually used are returned (``[U]``, ``U <= B·k``),
        which keeps the answer of a remote memory small.
        """
        out = None
        if self.filled >= k:
            _, pool_ids, index, teacher = self.neighbours(feats, ids, k)
            used, inverse = torch.unique(index, return_inverse=True)
            out = (pool_ids[used], inverse, teacher)
        self.enqueue(feats, ids)
        return out

    def state_dict(self) -> dict:
        return {"feats": self.feats.cpu().clone(), "ids": self.ids.cpu().clone(),
                "ptr": self.ptr, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["feats"].shape) != tuple(self.feats.shape):
            raise ValueError(f"memory state has shape {tuple(state['feats'].shape)}, "
                             f"expected {tuple(self.feats.shape)}")
        device = self.feats.device
        self.feats, self.ids = state["feats"].to(device, copy=True), \
            state["ids"].to(device, copy=True)
        self.ptr, self.filled = int(state["ptr"]), int(state["filled"])
