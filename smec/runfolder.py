"""One run folder (``--out``) and the names of what every job writes into it.

    embeddings/{corpus,queries}/   smec embed (Ray Data)        pseudo/     label-free queries
    compressor/                    smec train                   compressors/ bench, concat
    results.json, .md, .png        smec evaluate, bench         ray.log     Ray's own output
    ray_train/                     Ray Train's checkpoints      timings.json
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smec.console import RAY_LOG
from smec.store import read_embeddings


@dataclass(frozen=True)
class Embeddings:
    doc_ids: list[str]
    doc_vecs: np.ndarray
    query_ids: list[str]
    query_vecs: np.ndarray
    meta: dict            # the corpus store's metadata: model, dim, prompt

    def as_tuple(self) -> tuple:
        return self.doc_ids, self.doc_vecs, self.query_ids, self.query_vecs


@dataclass(frozen=True)
class RunFolder:
    """``root`` is made absolute where the folder is named (the driver): every path handed from
    here to a Ray worker, task or actor must mean the same folder in its own working directory."""
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def corpus(self) -> Path:
        return self.embeddings / "corpus"

    @property
    def queries(self) -> Path:
        return self.embeddings / "queries"

    @property
    def compressor(self) -> Path:
        return self.root / "compressor"

    @property
    def compressors(self) -> Path:
        return self.root / "compressors"

    @property
    def pseudo(self) -> Path:
        return self.root / "pseudo"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def ray_train(self) -> Path:
        return self.root / "ray_train"

    @property
    def ray_log(self) -> Path:
        return self.root / RAY_LOG

    @property
    def train_progress(self) -> Path:
        return self.root / "train-progress.jsonl"

    def has_embeddings(self) -> bool:
        """``smec embed`` finished here (it writes ``embed.json`` last)."""
        return (self.embeddings / "embed.json").is_file()

    def read_embeddings(self) -> Embeddings:
        doc_ids, doc_vecs, meta = read_embeddings(self.corpus)
        query_ids, query_vecs, _ = read_embeddings(self.queries)
        return Embeddings(doc_ids, doc_vecs, query_ids, query_vecs, meta)
