"""The sentence-transformers modules that ``smec export`` ships as ``smec_compressor.py``.

* :class:`SmecCompressor` runs one level of a trained smec compressor on the sentence
  embedding: ``[n, input_dim] -> [n, dim]``, L2-normalised. The level is stored as a
  ``torch.export`` program (``level.pt2``), so this file needs neither smec nor the adapter's
  source, only torch and sentence-transformers.
* :class:`SmecConcat` is the input module of a concat compressor's export: it runs every base
  model (each with its own query or document prompt), L2-normalises each embedding, weights it
  ``1/sqrt(n)`` and concatenates them, as ``smec.compressors.concatenation.concatenate`` does.

Loading either runs code from the model folder, which sentence-transformers 6 allows only with
``trust_remote_code=True``.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from sentence_transformers.base.modules.input_module import InputModule
from sentence_transformers.base.modules.module import Module

PROGRAM = "level.pt2"


def _config_and_folder(cls, model_name_or_path: str, subfolder: str, token, cache_folder,
                       revision, local_files_only: bool) -> tuple[dict, str]:
    """A module's saved config and its folder (local, or fetched like any module's)."""
    hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder,
           "revision": revision, "local_files_only": local_files_only}
    return cls.load_config(model_name_or_path, **hub), cls.load_dir_path(model_name_or_path,
                                                                          **hub)


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
        config, folder = _config_and_folder(cls, model_name_or_path, subfolder, token,
                                            cache_folder, revision, local_files_only)
        level = torch.export.load(os.path.join(folder, PROGRAM)).module()
        return cls(config["input_dim"], config["dim"], level)


class SmecConcat(InputModule):
    """Several base models -> one concatenated, unit-norm ``sentence_embedding``.

    ``prompts`` maps a prompt name of the exported model (``query``, ``document``) to each base
    model's own prompt for it; any other prompt string is prepended for every model."""

    config_file_name = "smec_concat.json"
    config_keys: list[str] = ["models", "prompts"]
    save_in_root = False

    def __init__(self, models: list[str], prompts: dict[str, list[str]],
                 encoders: list[torch.nn.Module] | None = None) -> None:
        super().__init__()
        self.models, self.prompts = list(models), dict(prompts)
        self.encoders = torch.nn.ModuleList(encoders or [])

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs) -> dict:
        features = {}
        for i, encoder in enumerate(self.encoders):
            own = self.prompts[prompt][i] if prompt in self.prompts else (prompt or "")
            tokens = encoder.preprocess([own + text for text in inputs])
            features.update({f"{i}.{key}": value for key, value in tokens.items()})
        return features

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = []
        for i, encoder in enumerate(self.encoders):
            own = {key.split(".", 1)[1]: value for key, value in features.items()
                   if key.startswith(f"{i}.")}
            embedding = encoder(own)["sentence_embedding"].float()
            parts.append(F.normalize(embedding, dim=-1) / math.sqrt(len(self.encoders)))
        features["sentence_embedding"] = torch.cat(parts, dim=-1)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return sum(e.get_sentence_embedding_dimension() for e in self.encoders)

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        for i, encoder in enumerate(self.encoders):
            encoder.save(os.path.join(output_path, f"encoder_{i}"),
                         safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None,
             local_files_only: bool = False, **kwargs) -> SmecConcat:
        from sentence_transformers import SentenceTransformer
        config, folder = _config_and_folder(cls, model_name_or_path, subfolder, token,
                                            cache_folder, revision, local_files_only)
        encoders = [SentenceTransformer(os.path.join(folder, f"encoder_{i}"), device="cpu",
                                        local_files_only=True)
                    for i in range(len(config["models"]))]
        return cls(config["models"], config["prompts"], encoders)
