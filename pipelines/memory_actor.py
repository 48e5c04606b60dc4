"""S-XBM as one Ray actor shared by every Ray Train worker (METHOD.md §2.4).

The actor holds the same FIFO ring buffer as the local memory (:class:`smec.modules.SXBM`:
frozen original embeddings with integer ids, size M, top-K neighbours excluding the same id),
so all workers see one queue. Each training step costs one round trip: :meth:`exchange` asks
for the batch's neighbours and enqueues the batch in the same call, and only the neighbour rows
actually used come back (their ids, ``U <= B·K``, not the whole memory).

:class:`ActorMemory` is the worker-side client; it satisfies :class:`smec.modules.memory.Memory`,
so ``smec/training/engine.py`` gets it injected and never imports Ray.
"""
from __future__ import annotations

import numpy as np
import ray
import torch

from smec.modules import SXBM


@ray.remote(num_cpus=0)
class MemoryActor:
    """The shared ring buffer. ``num_cpus=0``: it must not take a core from the trainers."""

    def __init__(self, size: int, dim: int) -> None:
        torch.set_num_threads(1)
        self.memory = SXBM(size, dim)

    def exchange(self, feats: np.ndarray, ids: np.ndarray, k: int):
        """Neighbours of the batch (or None while the memory holds < k rows), then enqueue.

        Returns ``(answer, filled)``; ``answer`` is ``(ids [U], index [B, k], teacher cosine
        [B, k])`` as numpy arrays.
        """
        found = self.memory.exchange(torch.from_numpy(feats), torch.from_numpy(ids), k)
        answer = None if found is None else tuple(t.numpy() for t in found)
        return answer, self.memory.filled

    def state_dict(self) -> dict:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state)


class ActorMemory:
    """A worker's handle on the shared memory, with the local memory's interface."""

    def __init__(self, actor) -> None:
        self.actor = actor
        self._filled = 0

    @classmethod
    def create(cls, size: int, dim: int) -> ActorMemory:
        return cls(MemoryActor.remote(size, dim))

    @property
    def filled(self) -> int:
        """The fill level seen at the last exchange (no extra round trip)."""
        return self._filled

    def exchange(self, feats: torch.Tensor, ids: torch.Tensor, k: int):
        answer, self._filled = ray.get(self.actor.exchange.remote(
            feats.detach().to(torch.float32).cpu().numpy(), ids.cpu().numpy(), k))
        if answer is None:
            return None
        # copies (writable), on the device the batch came from
        return tuple(torch.from_numpy(np.array(a)).to(feats.device) for a in answer)

    def state_dict(self) -> dict:
        return ray.get(self.actor.state_dict.remote())

    def load_state_dict(self, state: dict) -> None:
        ray.get(self.actor.load_state_dict.remote(state))
        self._filled = int(state["filled"])
