"""Adapter compressors: per level, an adapter snapshot plus the dims it keeps (or a projection).

Every trained method (SMEC, MRL and its ablations, Matryoshka-Adaptor, Search-Adaptor) is
served the same way: level ``d`` is ``normalize(f_d(e)[I_d])``, or ``normalize(W_d f_d(e) + b_d)``
for a projection head. In SMEC (METHOD.md §2.2, R-snap) each level has its own snapshot, so
training a later stage never touches an earlier one and adding a level (continued training)
leaves the existing levels unchanged; parallel methods store the same adapter for every level.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from smec.compressors.base import Compressor
from smec.modules.networks import build_adapter


@dataclass
class Stage:
    """A finished SMRL stage: its level, the kept dims of f(e), and the adapter weights."""

    dim: int
    indices: torch.Tensor | None   # long [dim], into the input_dim outputs of f; or None and
    adapter_state: dict[str, torch.Tensor]
    projection: dict[str, torch.Tensor] | None = None   # {"weight" [dim, D], "bias" [dim]}
    ads_logits: torch.Tensor | None = None   # learned ADS logits of the kept dims (SMEC): the
    #                                          next stage's selection starts from them


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor view of ``x``, also of a read-only array (Arrow and Ray hand those out): the
    adapter only reads its input, so the copy that would silence torch's warning is waste."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x)


class AdapterLevel(torch.nn.Module):
    """One served level: ``normalize(f(e)[I])``, or ``normalize(W f(e) + b)`` with a projection."""

    def __init__(self, adapter: torch.nn.Module, indices: torch.Tensor | None,
                 projection: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.adapter = adapter
        self.project = projection is not None
        if projection is not None:
            self.register_buffer("weight", projection["weight"].float())
            self.register_buffer("bias", projection["bias"].float())
        else:
            self.register_buffer("indices", indices.long())

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        h = self.adapter(e)
        h = F.linear(h, self.weight, self.bias) if self.project else h[:, self.indices]
        return F.normalize(h, dim=-1)


class AdapterCompressor(Compressor):
    kind = "adapter"

    def __init__(self, input_dim: int, dims: list[int], adapter: str = "residual_mlp",
                 adapter_hidden: int = 512, method: str = "smec",
                 stages: list[Stage] | None = None, output_dim: int | None = None) -> None:
        super().__init__(input_dim, dims)
        self.adapter, self.adapter_hidden, self.method = adapter, adapter_hidden, method
        self.output_dim = int(output_dim or input_dim)   # a decoder's width
        self.stages: list[Stage] = list(stages or [])
        self._nets: dict[int, torch.nn.Module] = {}
        self.device = "cpu"

    def add_stage(self, stage: Stage) -> None:
        if self.stages and stage.dim >= self.stages[-1].dim:
            raise ValueError(f"stage dims must decrease: {stage.dim} after {self.stages[-1].dim}")
        self.stages.append(stage)
        self.dims = sorted({*self.dims, stage.dim}, reverse=True)

    def stage_for(self, dim: int) -> Stage:
        for stage in self.stages:
            if stage.dim == dim:
                return stage
        raise ValueError(f"{self.method}: no trained level {dim}; available {[s.dim for s in self.stages]}")

    def network(self, dim: int) -> torch.nn.Module:
        """Level ``dim`` as one module: adapter, kept dims (or projection), L2 norm."""
        if dim not in self._nets:
            net = build_adapter(self.adapter, self.input_dim, self.adapter_hidden,
                                self.output_dim)
            stage = self.stage_for(dim)
            net.load_state_dict(stage.adapter_state)
            self._nets[dim] = AdapterLevel(net, stage.indices, stage.projection).eval().to(
                self.device)
        return self._nets[dim]

    def to(self, device: str) -> AdapterCompressor:
        """Run ``encode`` on ``device`` (``cuda`` in a GPU compress actor)."""
        self.device = device
        self._nets = {dim: net.to(device) for dim, net in self._nets.items()}
        return self

    def torch_level(self, dim: int) -> torch.nn.Module:
        return self.network(dim)

    @torch.no_grad()
    def encode(self, vectors: np.ndarray, dim: int, batch_size: int = 8192) -> np.ndarray:
        vectors = self._check(vectors, dim)
        net = self.network(dim)
        out = [net(_tensor(vectors[start:start + batch_size]).to(self.device)).cpu()
               for start in range(0, len(vectors), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, dim), np.float32)

    def settings(self) -> dict:
        return {"adapter": self.adapter, "adapter_hidden": self.adapter_hidden,
                "method": self.method, "output_dim": self.output_dim}

    def write_tensors(self, directory: Path) -> None:
        for i, stage in enumerate(self.stages):
            torch.save({"dim": stage.dim, "indices": stage.indices, "adapter": stage.adapter_state,
                        "projection": stage.projection, "ads_logits": stage.ads_logits},
                       directory / f"stage_{i}_{stage.dim}.pt")

    @classmethod
    def read(cls, directory: Path, input_dim: int, dims: list[int], settings: dict
             ) -> AdapterCompressor:
        files = sorted(directory.glob("stage_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        stages = []
        for path in files:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            stages.append(Stage(int(blob["dim"]), blob["indices"], blob["adapter"],
                                blob.get("projection"), blob.get("ads_logits")))
        return cls(input_dim, dims, stages=stages, **settings)
