"""Score compressed encoders through MTEB on a local BEIR folder, offline.

Each compressor level is wrapped as an MTEB model (with its ``ModelMeta``) that looks up the
cached frozen embedding of every text MTEB hands it and compresses it; the task is a local
``AbsTaskRetrieval`` whose ``load_data`` reads the BEIR files itself (no hub). MTEB's nDCG@10
must equal ours: a cross-check of :mod:`smec.eval`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from smec.compressors import Compressor
from smec.data import BeirPaths, iter_corpus, load_queries
from smec.errors import SmecError


def _text_table(paths: BeirPaths, doc_ids, doc_vecs, query_ids, query_vecs) -> dict:
    """text -> frozen embedding, for every corpus document and query."""
    by_doc = dict(zip(doc_ids, doc_vecs))
    by_query = dict(zip(query_ids, query_vecs))
    table = {text.strip(): by_doc[doc_id] for doc_id, text in iter_corpus(paths.corpus)}
    table.update({text.strip(): by_query[qid] for qid, text in load_queries(paths.queries).items()
                  if qid in by_query})
    return table


def _task(paths: BeirPaths):
    from datasets import Dataset
    from mteb import TaskMetadata
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    split = paths.split_label

    class LocalBEIRTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=f"SmecLocal-{paths.name}", type="Retrieval", main_score="ndcg_at_10",
            description=f"local BEIR folder {paths.root}",
            reference="https://github.com/beir-cellar/beir",
            dataset={"path": f"local/{paths.name}", "revision": "local"}, category="t2t",
            modalities=["text"], eval_splits=[split], eval_langs=["eng-Latn"],
            date=("2020-01-01", "2020-12-31"), domains=[], task_subtypes=[],
            license="not specified", annotations_creators="derived", dialect=[],
            sample_creation="found", bibtex_citation="")

        def load_data(self, num_proc=None, **kwargs) -> None:
            if self.data_loaded:
                return
            qrels = paths.read_test_qrels()
            queries = load_queries(paths.queries)
            corpus = Dataset.from_list([{"id": i, "title": "", "text": t}
                                        for i, t in iter_corpus(paths.corpus)])
            query_set = Dataset.from_list([{"id": q, "text": queries[q]} for q in qrels])
            self.dataset = {"default": {split: RetrievalSplitData(
                corpus=corpus, queries=query_set, relevant_docs=qrels, top_ranked=None)}}
            self.data_loaded = True

    return LocalBEIRTask()


class CompressedEncoder:
    """An MTEB model: cached frozen embedding of each text -> one compressor level."""

    def __init__(self, table: dict, compressor: Compressor | None, dim: int, name: str) -> None:
        from mteb.models.model_meta import ModelMeta
        self.table, self.compressor, self.dim = table, compressor, dim
        self.mteb_model_meta = ModelMeta.create_empty(overwrites={
            "name": f"smec/{name}-{dim}d", "revision": "0", "similarity_fn_name": "cosine",
            "embed_dim": dim})

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None,
               **kwargs) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        try:
            vectors = np.stack([self.table[t.strip()] for t in texts])
        except KeyError as exc:
            raise SmecError(f"MTEB asked for a text with no cached embedding: "
                            f"{str(exc)[:80]}") from None
        if self.compressor is not None:
            return self.compressor.encode(vectors, self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def similarity(self, a, b):
        return np.asarray(a) @ np.asarray(b).T

    def similarity_pairwise(self, a, b):
        return (np.asarray(a) * np.asarray(b)).sum(-1)


def mteb_scores(paths: BeirPaths, doc_ids, doc_vecs, query_ids, query_vecs,
                encoders: list[tuple[str, Compressor | None, int]], out_dir: Path) -> dict:
    """nDCG@10 of each ``(name, compressor, dim)`` through ``mteb.evaluate``, keyed
    ``"name@dim"``; MTEB's own result JSON for each goes to ``out_dir/<name>-<dim>d.json``.
    A ``None`` compressor means the raw embedding."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import mteb
    table = _text_table(paths, doc_ids, doc_vecs, query_ids, query_vecs)
    task = _task(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = {}
    for name, compressor, dim in encoders:
        result = mteb.evaluate(CompressedEncoder(table, compressor, dim, name), [task],
                               cache=None, overwrite_strategy="always",
                               show_progress_bar=False)
        task_result = result.task_results[0]
        task_result.to_disk(out_dir / f"{name.replace('+', '_')}-{dim}d.json")
        scores[f"{name}@{dim}"] = float(task_result.get_score())
    return scores
