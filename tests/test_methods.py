"""Every method of the benchmark trains through the one engine and saves/loads exactly."""
import numpy as np
import pytest
import torch

from smec.compressors import load_compressor
from smec.config import TrainConfig
from smec.train import METHODS, matryoshka_adaptor_unsup, prepare_data, train_method

from test_train import TINY, synthetic


@pytest.fixture(scope="module")
def data():
    doc_ids, docs, query_ids, queries, qrels = synthetic()
    return prepare_data(doc_ids, docs, query_ids, queries, qrels, TrainConfig(**TINY))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_every_level_and_roundtrips(method, data, tmp_path):
    cfg = TrainConfig(**TINY)
    compressor = train_method(data, cfg, method)
    assert [s.dim for s in compressor.stages] == [16, 8, 4]
    assert compressor.method == method
    docs = data.corpus.numpy()
    compressor.save(tmp_path / method)
    loaded = load_compressor(tmp_path / method)
    for dim in (16, 8, 4):
        out = compressor.encode(docs, dim)
        assert out.shape == (len(docs), dim)
        np.testing.assert_array_equal(loaded.encode(docs, dim), out)
    stages = compressor.stages
    if METHODS[method].schedule == "parallel":   # one adapter serves every level
        assert all(s.adapter_state is stages[0].adapter_state for s in stages)
    if METHODS[method].head == "projection":
        assert stages[1].projection["weight"].shape == (8, 16)
    if METHODS[method].head == "prefix" and METHODS[method].schedule != "per_level":
        assert stages[-1].indices.tolist() == list(range(4))


def test_continued_training_leaves_finished_levels_unchanged(data):
    cfg = TrainConfig(**TINY)
    compressor = train_method(data, cfg.model_copy(update={"stages": [8]}), "smec")
    before = {d: compressor.encode(data.corpus.numpy(), d) for d in (16, 8)}
    train_method(data, cfg.model_copy(update={"stages": [8, 4]}), "smec", resume=compressor)
    assert [s.dim for s in compressor.stages] == [16, 8, 4]
    for dim, vectors in before.items():
        np.testing.assert_array_equal(compressor.encode(data.corpus.numpy(), dim), vectors)


def test_matryoshka_adaptor_terms_vanish_at_identity():
    e = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    assert matryoshka_adaptor_unsup(e, e, e, k=2).item() == pytest.approx(0.0, abs=1e-6)
    assert matryoshka_adaptor_unsup(e, e + 1, e, k=2).item() == pytest.approx(1.0, abs=1e-6)


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        train_method(None, TrainConfig(**TINY), "magic")


def test_config_knows_every_method():
    from smec.config import METHOD_NAMES
    assert set(METHOD_NAMES) == set(METHODS)
