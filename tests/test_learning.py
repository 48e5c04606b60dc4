"""Training must move: on a generated set where the start is blind, every method, with its
default objective, ends above where it started. A method pinned at its start (SMEC was: its
unsupervised term outweighed the rank loss) fails here, where shape and round-trip tests pass."""
import numpy as np
import pytest

from smec.compressors import PCA
from smec.config import TrainConfig
from smec.eval import evaluate_vectors
from smec.training.engine import train_method
from smec.training.methods import METHODS
from smec.training.prepare import prepare_data

#: sizes for a 16-d set; the objective (alpha, unsup_loss, teacher, …) stays each default
SMALL = dict(stages=[8, 4], max_epochs_per_stage=10, patience=10, batch_queries=16,
             batch_unlabelled=32, memory_size=200, hard_pool=10, adapter_hidden=16,
             holdout_frac=0.2, lr=3e-3)


def signal_below_noise(n_docs: int = 400, n_queries: int = 200, seed: int = 0):
    """Relevance lives in 8 low-variance dims; the 8 high-variance ones are noise that no query
    shares, so the raw model is poor and every principal-axis prefix starts near blind."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_docs, 8))
    docs = np.hstack([2.0 * rng.normal(size=(n_docs, 8)), signal]).astype(np.float32)
    queries = np.hstack([2.0 * rng.normal(size=(n_queries, 8)),
                         signal[:n_queries] + 0.3 * rng.normal(size=(n_queries, 8))])
    return ([f"d{i}" for i in range(n_docs)], docs, [f"q{i}" for i in range(n_queries)],
            queries.astype(np.float32), {f"q{i}": {f"d{i}": 1} for i in range(n_queries)})


@pytest.fixture(scope="module")
def blind_start():
    doc_ids, docs, query_ids, queries, qrels = signal_below_noise()
    data = prepare_data(doc_ids, docs, query_ids, queries, qrels, TrainConfig(**SMALL))
    rows = data.val_doc_rows.numpy()

    def holdout(encode) -> float:
        return evaluate_vectors(encode(data.val_queries), data.val_query_ids, encode(docs)[rows],
                                [doc_ids[i] for i in rows], data.val_qrels, k=10)["ndcg_at_10"]
    start = PCA(16, [8, 4], centre=False).fit(docs)
    starts = {16: holdout(lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))}
    starts |= {d: holdout(lambda x, d=d: start.encode(x, d)) for d in (8, 4)}
    return data, docs, holdout, starts


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_moves_above_its_start(method, blind_start):
    data, docs, holdout, starts = blind_start
    compressor = train_method(data, TrainConfig(**SMALL), method)
    gains = {d: holdout(lambda x, d=d: compressor.encode(x, d)) - starts[d] for d in starts}
    assert max(gains.values()) >= 0.05, gains
