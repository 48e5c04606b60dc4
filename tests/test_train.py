"""The training loop without Ray: train_func runs alone, and the data preparation is sound."""
import numpy as np
import pytest
import torch

from smec.compressors import load_compressor
from smec.config import TrainConfig
from smec.store import embedding_table, write_part
from smec.train import lr_at, prepare_data, sample_batch, split_holdout

TINY = dict(stages=[8, 4], max_epochs_per_stage=2, batch_queries=8, batch_unlabelled=16,
            memory_size=50, neighbours=3, hard_pool=10, adapter_hidden=8)


def synthetic(n_docs=120, n_queries=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(n_docs, dim)).astype(np.float32)
    queries = docs[:n_queries] + 0.3 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    doc_ids = [f"d{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels = {f"q{i}": {f"d{i}": 1 + i % 2} for i in range(n_queries)}
    return doc_ids, docs, query_ids, queries, qrels


def test_train_func_runs_alone_without_ray(tmp_path):
    from pipelines.train import train_func
    doc_ids, docs, query_ids, queries, qrels = synthetic()
    write_part(tmp_path / "emb" / "corpus", 0, embedding_table(doc_ids, docs))
    write_part(tmp_path / "emb" / "queries", 0, embedding_table(query_ids, queries))
    qrels_path = tmp_path / "train.tsv"
    qrels_path.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, docs_ in qrels.items() for d, g in docs_.items()))
    train_func({"train": TrainConfig(**TINY).model_dump(), "embeddings": str(tmp_path / "emb"),
                "train_qrels": str(qrels_path), "use_ray": False, "out": str(tmp_path)})
    compressor = load_compressor(tmp_path / "compressor")
    assert [s.dim for s in compressor.stages] == [16, 8, 4]
    assert compressor.encode(docs, 4).shape == (120, 4)


def test_holdout_is_deterministic_and_disjoint():
    ids = [f"q{i}" for i in range(100)]
    train, val = split_holdout(ids, 0.1, seed=0)
    assert len(val) == 10 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_holdout(list(reversed(ids)), 0.1, seed=0) == (train, val)


def test_batch_labels_follow_qrels_in_batch():
    doc_ids, docs, query_ids, queries, qrels = synthetic()
    cfg = TrainConfig(**TINY)
    data = prepare_data(doc_ids, docs, query_ids, queries, qrels, cfg)
    rows = torch.arange(8)
    candidates, labels = sample_batch(data, rows, cfg, torch.Generator().manual_seed(0))
    assert labels.shape == (8, len(candidates))
    for i, row in enumerate(rows.tolist()):
        (doc, grade), = data.positives[row]
        col = (candidates == doc).nonzero().item()
        assert labels[i, col] == grade
        assert labels[i].sum() == grade     # nobody else's positive is labelled for query i
    # hard negatives never contain a judged document of their query
    for row, pool in enumerate(data.hard_pool.tolist()):
        assert data.positives[row][0][0] not in pool


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 0.05) for s in range(100)]
    assert lrs[0] == pytest.approx(0.2) and max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
