"""Evaluate several compressors side by side at every level, into result rows."""
from __future__ import annotations

import numpy as np

from smec.compressors import PCA, Compressor, Truncation
from smec.data import Qrels
from smec.eval import evaluate_vectors
from smec.results import ResultRow


def baselines(input_dim: int, dims: list[int], corpus: np.ndarray,
              methods: list[str]) -> dict[str, Compressor]:
    """The untrained compressors named in ``methods``, fitted on the corpus where they learn."""
    out: dict[str, Compressor] = {}
    if "truncation" in methods:
        out["truncation"] = Truncation(input_dim, dims)
    if "pca" in methods:
        out["pca"] = PCA(input_dim, dims).fit(corpus)
    return out


def compare(doc_ids: list[str], doc_vecs: np.ndarray, query_ids: list[str],
            query_vecs: np.ndarray, qrels: Qrels, compressors: dict[str, Compressor],
            include_raw: bool = True, seed: int = 0) -> list[ResultRow]:
    """One row per (method, level): nDCG@10 and recall@100 on ``qrels``' queries."""
    judged = [i for i, q in enumerate(query_ids) if q in qrels]
    q_ids, q_vecs = [query_ids[i] for i in judged], query_vecs[judged]
    rows = []

    def score(method: str, dim: int, queries: np.ndarray, docs: np.ndarray) -> None:
        metrics = evaluate_vectors(queries, q_ids, docs, doc_ids, qrels, k=100)
        rows.append(ResultRow(method, dim, metrics["ndcg_at_10"], metrics["recall_at_100"],
                              seed=seed))

    if include_raw:
        score("raw", doc_vecs.shape[1], q_vecs, doc_vecs)
    for method, compressor in compressors.items():
        for dim in compressor.dims:
            score(method, dim, compressor.encode(q_vecs, dim), compressor.encode(doc_vecs, dim))
    return rows
