"""Evaluate several compressors side by side at every level (and precision), into result rows."""
from __future__ import annotations

import numpy as np

from smec.compressors import PCA, Compressor, Truncation
from smec.data import Qrels
from smec.eval import evaluate_run, exact_search
from smec.quantize import Quantizer, quantized_search
from smec.results import ResultRow

DEPTH = 100   # retrieval depth: recall@100, and the rescoring pool is DEPTH × multiplier

Precision = tuple[str, int]   # (float32 | int8 | binary, rescore multiplier; 0 = none)


def baselines(input_dim: int, dims: list[int], corpus: np.ndarray,
              methods: list[str]) -> dict[str, Compressor]:
    """The untrained compressors named in ``methods``, fitted on the corpus where they learn."""
    out: dict[str, Compressor] = {}
    if "truncation" in methods:
        out["truncation"] = Truncation(input_dim, dims)
    if "pca" in methods:
        out["pca"] = PCA(input_dim, dims).fit(corpus)
    return out


def score_vectors(method: str, query_vecs: np.ndarray, query_ids: list[str],
                  doc_vecs: np.ndarray, doc_ids: list[str], qrels: Qrels,
                  precision: Precision = ("float32", 0), quantizer: Quantizer | None = None,
                  seed: int = 0, **quantizer_options) -> ResultRow:
    """One row: search at ``precision`` (a quantiser is calibrated on ``doc_vecs`` when none
    is given), then nDCG@10 and recall@100 on the judged queries."""
    judged = [i for i, q in enumerate(query_ids) if q in qrels]
    q_ids, q_vecs = [query_ids[i] for i in judged], query_vecs[judged]
    kind, rescore = precision
    if kind == "float32":
        run = exact_search(q_vecs, q_ids, doc_vecs, doc_ids, k=DEPTH)
    else:
        quantizer = quantizer or Quantizer.fit(kind, doc_vecs, **quantizer_options)
        run = quantized_search(quantizer, q_vecs, q_ids, quantizer.encode(doc_vecs), doc_ids,
                               k=DEPTH, rescore_multiplier=rescore)
    metrics = evaluate_run(run, qrels, ndcg_k=10, recall_k=DEPTH)
    return ResultRow(method, doc_vecs.shape[1], metrics["ndcg_at_10"],
                     metrics[f"recall_at_{DEPTH}"], kind, seed,
                     extra={"rescore": rescore} if rescore else {})


def compare(doc_ids: list[str], doc_vecs: np.ndarray, query_ids: list[str],
            query_vecs: np.ndarray, qrels: Qrels, compressors: dict[str, Compressor],
            include_raw: bool = True, seed: int = 0,
            precisions: list[Precision] = (("float32", 0),),
            **quantizer_options) -> list[ResultRow]:
    """One row per (method, level, precision) on ``qrels``' queries. Quantisers of a
    compressor's level are calibrated on its corpus vectors and kept in the compressor."""
    rows = []
    if include_raw:
        rows += [score_vectors("raw", query_vecs, query_ids, doc_vecs, doc_ids, qrels, p,
                               seed=seed, **quantizer_options) for p in precisions]
    for method, compressor in compressors.items():
        for dim in compressor.dims:
            docs, queries = compressor.encode(doc_vecs, dim), compressor.encode(query_vecs, dim)
            for p in precisions:
                quantizer = None
                if p[0] != "float32":
                    quantizer = compressor.quantizers.get((dim, p[0])) or \
                        compressor.quantize(p[0], dim, doc_vecs, **quantizer_options)
                rows.append(score_vectors(method, queries, query_ids, docs, doc_ids, qrels, p,
                                          quantizer, seed))
    return rows
