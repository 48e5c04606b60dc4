"""The sentence-transformers module that ``smec export`` ships as ``smec_compressor.py``.

It runs one level of a trained smec compressor on the pooled, normalised sentence embedding:
``sentence_embedding [n, input_dim] -> [n, dim]``, L2-normalised. The level is stored as a
``torch.export`` program (``level.pt2``), so this file needs neither smec nor the adapter's
source, only torch and sentence-transformers. Loading it runs code from the model folder,
which sentence-transformers 6 allows only with ``trust_remote_code=True``.
"""
from __future__ import annotations

import os

import torch
from sentence_transformers.base.modules.module import Module

PROGRAM = "level.pt2"


class SmecCompressor(Module):
    config_keys: list[str] = ["input_dim", "dim"]

    def __init__(self, input_dim: int, dim: int, level: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.input_dim, self.dim = int(input_dim), int(dim)
        self.level = level

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        embedding = features["sentence_embedding"]
        features["sentence_embedding"] = self.level(embedding.float()).to(embedding.dtype)
        return features

    def train(self, mode: bool = True) -> SmecCompressor:
        # an exported program has no training mode (it refuses train()/eval()); it is frozen
        self.training = mode
        return self

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        example = torch.zeros(2, self.input_dim)
        program = torch.export.export(self.level, (example,),
                                      dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, os.path.join(output_path, PROGRAM))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None,
             local_files_only: bool = False, **kwargs) -> SmecCompressor:
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder,
               "revision": revision, "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path, **hub)
        folder = cls.load_dir_path(model_name_or_path, **hub)
        level = torch.export.load(os.path.join(folder, PROGRAM)).module()
        return cls(config["input_dim"], config["dim"], level)
