import numpy as np
import pytest
import torch

from smec.compressors import PCA, AdapterCompressor, Stage, Truncation, load_compressor
from smec.config import TrainConfig
from smec.errors import SmecError
from smec.training.engine import train_smec
from smec.training.prepare import prepare_data


def corpus(n=200, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_truncation_and_pca_roundtrip(tmp_path):
    x = corpus()
    for comp in (Truncation(16, [8, 4]), PCA(16, [8, 4]).fit(x)):
        comp.save(tmp_path / comp.kind)
        loaded = load_compressor(tmp_path / comp.kind)
        for dim in (8, 4):
            out = loaded.encode(x, dim)
            assert out.shape == (200, dim)
            np.testing.assert_array_equal(out, comp.encode(x, dim))
            np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_pca_first_component_has_most_variance():
    x = corpus()
    x[:, 3] *= 10
    pca = PCA(16, [1]).fit(x)
    assert abs(pca.components[0, 3]) > 0.99


def test_smec_saved_and_loaded_gives_identical_vectors(tmp_path):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(120, 16)).astype(np.float32)
    queries = docs[:30] + 0.3 * rng.normal(size=(30, 16)).astype(np.float32)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(30)}
    cfg = TrainConfig(stages=[8, 4], max_epochs_per_stage=2, batch_queries=8,
                      batch_unlabelled=16, memory_size=50, neighbours=3, hard_pool=10,
                      adapter_hidden=8, lr=1e-3)
    data = prepare_data([f"d{i}" for i in range(120)], docs, [f"q{i}" for i in range(30)],
                        queries, qrels, cfg)
    comp = train_smec(data, cfg)
    assert [s.dim for s in comp.stages] == [16, 8, 4]
    comp.save(tmp_path / "smec")
    loaded = load_compressor(tmp_path / "smec")
    assert isinstance(loaded, AdapterCompressor)
    for dim in (16, 8, 4):
        np.testing.assert_array_equal(loaded.encode(docs, dim), comp.encode(docs, dim))
        assert torch.equal(loaded.stage_for(dim).indices, comp.stage_for(dim).indices)


def test_smec_levels_are_independent_snapshots():
    adapter_state = {"w": torch.zeros(1)}
    comp = AdapterCompressor(8, [], adapter="residual_mlp", adapter_hidden=4)
    comp.add_stage(Stage(4, torch.arange(4), adapter_state))
    with pytest.raises(ValueError, match="must decrease"):
        comp.add_stage(Stage(6, torch.arange(6), adapter_state))


def test_load_missing_compressor_is_one_line(tmp_path):
    with pytest.raises(SmecError, match="compressor.json: not found"):
        load_compressor(tmp_path)


def test_concatenation_is_score_averaging():
    from smec.compressors import concatenate
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 3))
    x = concatenate([a, b])
    assert x.shape == (5, 11)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    cos = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)) @ \
        (m / np.linalg.norm(m, axis=1, keepdims=True)).T
    np.testing.assert_allclose(x @ x.T, (cos(a) + cos(b)) / 2, atol=1e-6)


def test_concat_compressor_with_quantizers_roundtrips(tmp_path):
    from smec.compressors import PCA, ConcatCompressor, load_compressor
    rng = np.random.default_rng(1)
    columns = {"m1": rng.normal(size=(300, 8)).astype(np.float32),
               "m2": rng.normal(size=(300, 4)).astype(np.float32)}
    models = [{"name": "m1", "dim": 8}, {"name": "m2", "dim": 4}]
    comp = ConcatCompressor(12, [6, 3], models, PCA(12, [6, 3]))
    x = comp.concatenate(columns)
    comp.fit(x)
    comp.quantize("int8", 6, x)
    comp.quantize("binary-median", 3, x)
    comp.save(tmp_path / "c")
    back = load_compressor(tmp_path / "c")
    assert isinstance(back, ConcatCompressor) and back.models == models
    np.testing.assert_array_equal(back.encode(x, 6), comp.encode(x, 6))
    assert set(back.quantizers) == {(6, "int8"), (3, "binary-median")}
    for key, quantizer in comp.quantizers.items():
        codes = quantizer.encode(comp.encode(x, key[0]))
        np.testing.assert_array_equal(back.quantizers[key].encode(back.encode(x, key[0])), codes)
    with pytest.raises(ValueError, match="missing vectors"):
        comp.concatenate({"m1": columns["m1"]})


def test_uncentred_pca_is_where_the_pca_residual_adapter_starts(tmp_path):
    """The recipe that credits training only with what it adds: every prefix of the untrained
    adapter equals PCA without centring, and differs from centred PCA."""
    from smec.modules.networks import build_adapter
    rng = np.random.default_rng(0)
    corpus = (rng.normal(size=(200, 12)) + 2.0).astype(np.float32)   # far from centred
    adapter = build_adapter("pca_residual", 12, 8, init_data=torch.from_numpy(corpus))
    uncentred = PCA(12, [6, 3], centre=False).fit(corpus)
    with torch.no_grad():
        start = adapter(torch.from_numpy(corpus)).numpy()
    for dim in (6, 3):
        prefix = start[:, :dim] / np.linalg.norm(start[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(uncentred.encode(corpus, dim), prefix, atol=1e-5)
    assert not np.allclose(PCA(12, [3]).fit(corpus).encode(corpus, 3), prefix, atol=1e-2)
    uncentred.save(tmp_path / "u")
    np.testing.assert_array_equal(load_compressor(tmp_path / "u").encode(corpus, 3),
                                  uncentred.encode(corpus, 3))
