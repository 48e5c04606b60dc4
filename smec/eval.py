"""Exact cosine search and the BEIR metrics, with trec_eval's semantics.

nDCG@k follows trec_eval's ``ndcg_cut``: gain is the qrel grade itself (linear), discount
``log2(rank + 1)``, the ideal DCG comes from all of the query's judged-relevant documents, and
documents with equal scores are ranked by document id, descending (trec_eval's tie-break).
Recall@k counts documents with grade >= 1. ``tests/test_eval.py`` checks both against
``pytrec_eval`` to 1e-6.
"""
from __future__ import annotations

import math

import numpy as np

from smec.data import Qrels

Run = dict[str, dict[str, float]]  # query id -> doc id -> score


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def mask_identical_ids(scores: np.ndarray, query_ids: list[str],
                       doc_index: dict[str, int]) -> None:
    """Score −inf where the document id equals the query id, in place: BEIR's
    ``ignore_identical_ids`` (ArguAna, Quora). ``doc_index`` maps doc id → column."""
    for row, qid in enumerate(query_ids):
        if qid in doc_index:
            scores[row, doc_index[qid]] = -np.inf


SCORE_DECIMALS = 5


def exact_search(query_vecs: np.ndarray, query_ids: list[str], doc_vecs: np.ndarray,
                 doc_ids: list[str], k: int = 100, ignore_identical_ids: bool = True,
                 batch_size: int = 512) -> Run:
    """Brute-force cosine top-k for every query (vectors are re-normalised here)."""
    q = l2_normalize(query_vecs)
    d = l2_normalize(doc_vecs)
    k = min(k, len(doc_ids))
    doc_index = {doc_id: i for i, doc_id in enumerate(doc_ids)} if ignore_identical_ids else {}
    run: Run = {}
    for start in range(0, len(query_ids), batch_size):
        # Cosines on a 1e-5 grid: documents that are the same to float noise (ArguAna has 40
        # pairs of identical texts) tie exactly and are ordered by id, so a model's score does
        # not hang on rounding (a rotation of the same vectors moved nDCG@10 by 0.004).
        scores = np.round(q[start:start + batch_size] @ d.T, SCORE_DECIMALS)
        mask_identical_ids(scores, query_ids[start:start + batch_size], doc_index)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, qid in enumerate(query_ids[start:start + batch_size]):
            run[qid] = {doc_ids[j]: float(scores[row, j]) for j in top[row]
                        if np.isfinite(scores[row, j])}
    return run


def trec_order(docs: dict[str, float]) -> list[str]:
    # score descending, then doc id descending: trec_eval's order.
    return [doc_id for doc_id, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]),
                                           reverse=True)]


def ndcg_at_k(ranking: list[str], judgements: dict[str, int], k: int) -> float:
    dcg = sum(max(judgements.get(doc_id, 0), 0) / math.log2(rank + 2)
              for rank, doc_id in enumerate(ranking[:k]))
    ideal = sorted((g for g in judgements.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: list[str], judgements: dict[str, int], k: int) -> float:
    relevant = {doc_id for doc_id, g in judgements.items() if g >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def per_query_metrics(run: Run, qrels: Qrels, ndcg_k: int = 10,
                      recall_k: int = 100) -> dict[str, dict[str, float]]:
    """Metrics for every query that is both judged (with a positive) and in the run."""
    out = {}
    for qid, docs in run.items():
        judgements = qrels.get(qid)
        if not judgements or not any(g > 0 for g in judgements.values()):
            continue
        ranking = trec_order(docs)
        out[qid] = {f"ndcg_at_{ndcg_k}": ndcg_at_k(ranking, judgements, ndcg_k),
                    f"recall_at_{recall_k}": recall_at_k(ranking, judgements, recall_k)}
    return out


def evaluate_run(run: Run, qrels: Qrels, ndcg_k: int = 10, recall_k: int = 100) -> dict[str, float]:
    """Mean nDCG@ndcg_k and recall@recall_k over the evaluated queries."""
    per_query = per_query_metrics(run, qrels, ndcg_k, recall_k)
    if not per_query:
        raise ValueError("no query of the run has a positive judgement in the qrels")
    keys = next(iter(per_query.values())).keys()
    return {key: float(np.mean([m[key] for m in per_query.values()])) for key in keys}


def evaluate_vectors(query_vecs: np.ndarray, query_ids: list[str], doc_vecs: np.ndarray,
                     doc_ids: list[str], qrels: Qrels, k: int = 100) -> dict[str, float]:
    """Search then score; the one call every method's evaluation goes through."""
    judged = [i for i, qid in enumerate(query_ids) if qid in qrels]
    run = exact_search(query_vecs[judged], [query_ids[i] for i in judged], doc_vecs, doc_ids, k=k)
    return evaluate_run(run, qrels, ndcg_k=10, recall_k=k)
