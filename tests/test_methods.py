"""Every method of the benchmark trains through the one engine and saves/loads exactly."""
import numpy as np
import pytest
import torch
from test_train import TINY, synthetic

from smec.compressors import load_compressor
from smec.config import TrainConfig
from smec.losses import MatryoshkaAdaptorLoss
from smec.training.engine import Reporter, train_method
from smec.training.methods import METHODS
from smec.training.prepare import prepare_data


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
    from smec.pipelines.bench import continued_training_check
    check = continued_training_check(data, TrainConfig(**TINY), [8, 4])
    assert check["kept_levels"] == [8, 16] and check["max_abs_change_of_kept_level"] == 0.0


def test_continued_training_check_sees_a_stage_that_writes_into_an_earlier_snapshot(
        data, monkeypatch):
    """The check compares compressors reloaded from disk: a later stage that overwrites an
    earlier level's snapshot is caught even though that level's network is cached in memory."""
    from smec.pipelines.bench import continued_training_check

    from smec.compressors.adapter import AdapterCompressor
    add_stage = AdapterCompressor.add_stage

    def leaky_add_stage(self, stage):
        add_stage(self, stage)
        if len(self.stages) == 3:     # the added 4-d stage writes into the 8-d snapshot
            for value in self.stages[1].adapter_state.values():
                value.add_(0.01)
    monkeypatch.setattr(AdapterCompressor, "add_stage", leaky_add_stage)
    check = continued_training_check(data, TrainConfig(**TINY), [8, 4])
    assert check["max_abs_change_of_kept_level"] > 1e-4


def test_matryoshka_adaptor_terms_vanish_at_identity():
    e = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    assert MatryoshkaAdaptorLoss(k=2)(e, e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert MatryoshkaAdaptorLoss(k=2)(e, e + 1, e).item() == pytest.approx(1.0, abs=1e-6)


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        train_method(None, TrainConfig(**TINY), "magic")


def test_config_knows_every_method():
    from smec.config import METHOD_NAMES
    assert set(METHOD_NAMES) == set(METHODS)


@pytest.mark.parametrize("method", ["mrl+sxbm", "smec"])
def test_decoder_to_a_narrower_width_trains_with_infonce(method, data, tmp_path):
    """The concat decoder: input 16 d -> output 12 d, levels 12/8/4, InfoNCE, both schedules."""
    cfg = TrainConfig(**{**TINY, "adapter": "pca_mlp", "output_dim": 12, "stages": [8, 4],
                         "loss": "infonce"})
    compressor = train_method(data, cfg, method)
    assert [s.dim for s in compressor.stages] == [12, 8, 4]
    assert compressor.input_dim == 16 and compressor.output_dim == 12
    docs = data.corpus.numpy()
    compressor.save(tmp_path / method)
    loaded = load_compressor(tmp_path / method)
    for dim in (12, 8, 4):
        np.testing.assert_array_equal(loaded.encode(docs, dim), compressor.encode(docs, dim))


def test_pca_decoder_starts_at_pca():
    from smec.compressors.pca import PCA
    from smec.modules.networks import build_adapter
    x = torch.randn(300, 16)
    net = build_adapter("pca_mlp", 16, 32, out_dim=6, init_data=x)
    pca = PCA(16, [6]).fit(x.numpy())
    ours = torch.nn.functional.normalize(net(x), dim=-1).detach().numpy()
    # same subspace and order up to the sign of each axis
    np.testing.assert_allclose(np.abs(ours), np.abs(pca.encode(x.numpy(), 6)), atol=1e-4)
    with pytest.raises(ValueError, match="keeps the width"):
        build_adapter("residual_mlp", 16, 32, out_dim=6)


def test_a_stage_that_only_gets_worse_ships_its_starting_point(data):
    """With a learning rate that wrecks the adapter, no epoch beats the start on the hold-out,
    so the full-dim level keeps the raw model's cosines, never below them."""
    cfg = TrainConfig(**{**TINY, "lr": 50.0, "grad_clip": 1e9, "warmup_frac": 0.0})
    reporter = Reporter()
    compressor = train_method(data, cfg, "mrl+smrl", reporter)
    history = reporter.history
    docs = data.corpus.numpy()
    first_stage = [h for h in history if h["stage"] == 0]
    assert all(h["best_epoch"] == -1 for h in first_stage)
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    encoded = compressor.encode(docs, 16)      # the start: raw cosines (a rotation of raw)
    np.testing.assert_allclose(encoded @ encoded.T, unit @ unit.T, atol=1e-5)


def test_a_parallel_method_ends_each_budget_cycle_at_a_low_learning_rate(data):
    """Parallel methods train in cycles of max_epochs_per_stage epochs (warm-up, cosine to 0):
    where early stopping ends them after a cycle, the LR had decayed, as at the end of every
    sequential stage. One cosine over the whole budget left it near its peak there."""
    cfg = TrainConfig(**{**TINY, "max_epochs_per_stage": 2, "patience": 10})
    reporter = Reporter()
    train_method(data, cfg, "mrl", reporter)
    lrs = [h["lr"] for h in reporter.history]          # the LR of each epoch's last step
    assert len(lrs) == 2 * 3                  # budget: 2 epochs x 3 levels
    assert lrs[1] < 0.1 * cfg.lr and lrs[3] < 0.1 * cfg.lr and lrs[5] < 0.1 * cfg.lr


def test_ads_stages_start_from_the_previous_stage_logits(data, tmp_path):
    """Each ADS stage after the first starts from the learned logits of the dims it keeps."""
    from smec.training.engine import _head
    compressor = train_method(data, TrainConfig(**TINY), "smec")
    eight = compressor.stages[1]
    assert eight.ads_logits is not None and eight.ads_logits.shape == (8,)
    compressor.save(tmp_path / "c")
    reloaded = load_compressor(tmp_path / "c").stages[1]
    torch.testing.assert_close(reloaded.ads_logits, eight.ads_logits)
    head = _head("ads", eight.indices, 4, data, TrainConfig(**TINY), None, eight.ads_logits)
    torch.testing.assert_close(head.ads.logits.detach(), eight.ads_logits)
    positional = _head("ads", eight.indices, 4, data,
                       TrainConfig(**{**TINY, "ads_carry_logits": False}), None, eight.ads_logits)
    assert not torch.equal(positional.ads.logits.detach(), eight.ads_logits)


def test_gradient_balance_measures_each_term_alone():
    from smec.training.engine import gradient_balance
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    rank, unsup = (w ** 2).sum() / 2, 0.5 * w.sum()   # gradients w and (0.5, 0.5)
    assert gradient_balance(rank, unsup, [w]) == pytest.approx((5.0, 0.5 * 2 ** 0.5))
    assert np.isnan(gradient_balance(rank, torch.zeros(()), [w])[1])   # a term that is off


def test_every_epoch_records_how_hard_each_term_pushes(data):
    """SMEC's history carries ‖∇L_rank‖ and α‖∇L_unsup‖ per epoch, so the balance the
    objective trains with is measured, not argued."""
    cfg = TrainConfig(**TINY)
    reporter = Reporter()
    train_method(data, cfg, "smec", reporter)
    epochs = [h for h in reporter.history if "grad_norm_rank" in h]
    assert epochs and all(h["grad_norm_rank"] > 0 for h in epochs)
    assert all(h["grad_norm_unsup"] > 0 for h in epochs)   # the memory answers in every epoch
    halved = Reporter()
    train_method(data, TrainConfig(**{**TINY, "alpha": cfg.alpha / 2}), "smec", halved)
    assert halved.history[0]["grad_norm_unsup"] == pytest.approx(
        epochs[0]["grad_norm_unsup"] / 2, rel=1e-4)


def test_alpha_as_a_share_sets_the_unsupervised_push_to_that_share_of_the_rank_push(data):
    cfg = TrainConfig(**{**TINY, "alpha_mode": "share", "alpha": 0.3})
    reporter = Reporter()
    train_method(data, cfg, "smec", reporter)
    epochs = [h for h in reporter.history if "grad_norm_rank" in h]
    assert epochs and all(h["grad_norm_unsup"] == pytest.approx(0.3 * h["grad_norm_rank"],
                                                                rel=1e-4) for h in epochs)


def test_the_unsupervised_batch_can_be_the_steps_own_candidates(data):
    from smec.training.prepare import draw_batch, sample_batch
    cfg = TrainConfig(**{**TINY, "sxbm_batch": "candidates"})
    rows = torch.arange(8)
    _, candidates, _, unlabelled = draw_batch(data, rows, cfg, torch.Generator().manual_seed(0),
                                              16)
    picked, _ = sample_batch(data, rows, cfg, torch.Generator().manual_seed(0))
    assert len(unlabelled) == 16 and set(unlabelled.tolist()) <= set(picked.tolist())
    assert torch.equal(candidates, picked)


def test_the_previous_stage_teacher_is_the_stages_frozen_start(data):
    """sxbm_teacher previous trains, and its first stage's teacher is the raw geometry (the
    pca_residual start keeps every cosine)."""
    from smec.modules import build_adapter
    from smec.training.engine import level_vectors
    adapter = build_adapter("pca_residual", 16, 8, init_data=data.corpus)
    start = level_vectors(adapter, torch.arange(16), data.corpus, chunk=7)   # several chunks
    torch.testing.assert_close(start @ start.T, data.corpus @ data.corpus.T, atol=1e-5, rtol=0)
    assert not start.requires_grad
    compressor = train_method(data, TrainConfig(**{**TINY, "sxbm_teacher": "previous"}), "smec")
    assert [s.dim for s in compressor.stages] == [16, 8, 4]


def test_a_step_reads_the_previous_stage_targets_from_the_stage_start_table(data):
    """sxbm_teacher previous: the memory finds the neighbours, and the targets the step hands
    the objective are the cosines of the stage start's vectors (``state.teacher_vectors``) of each
    item and its neighbours, not the memory's raw ones."""
    from smec.modules import build_adapter
    from smec.modules.heads import PrefixHead
    from smec.modules.memory import SXBM
    from smec.training.engine import StageState, _objective, _optimizer, train_step
    cfg = TrainConfig(**{**TINY, "sxbm_teacher": "previous"})
    adapter = build_adapter("pca_residual", 16, 8, init_data=data.corpus)
    head = PrefixHead(torch.arange(16), 8)
    memory = SXBM(50, 16)
    memory.enqueue(data.corpus[60:110], torch.arange(60, 110))
    table = torch.nn.functional.normalize(torch.randn(len(data.corpus), 5), dim=-1)
    state = StageState(0, adapter, [head], _optimizer(cfg, adapter, [head]),
                       torch.Generator().manual_seed(0), memory, teacher_vectors=table)
    state.start_epoch(0)
    objective, seen, asked = _objective(cfg, data, "sxbm"), {}, {}
    forward, exchange = objective.forward, memory.exchange

    def spy_forward(*args):
        seen["unlabelled"], seen["neighbours"], seen["t_u"] = args[6], args[7], args[8]
        return forward(*args)

    def spy_exchange(feats, ids, k):
        asked["ids"], asked["feats"] = ids, feats
        asked["found"] = exchange(feats, ids, k)
        return asked["found"]

    objective.forward, memory.exchange = spy_forward, spy_exchange
    train_step(state, objective, data, torch.arange(8), cfg, "sxbm", 16, 1e-3, 1.0)
    torch.testing.assert_close(asked["feats"], data.corpus[asked["ids"]])   # searched raw
    ids, inverse, raw_cosines = asked["found"]
    feats, seen_inverse, targets = seen["neighbours"]
    torch.testing.assert_close(feats, data.corpus[ids])
    assert torch.equal(seen_inverse, inverse)
    by_hand = torch.stack([torch.stack([table[asked["ids"][i]] @ table[ids[inverse[i, k]]]
                                        for k in range(inverse.shape[1])])
                           for i in range(len(inverse))])
    torch.testing.assert_close(targets, by_hand)
    assert not torch.allclose(targets, raw_cosines)
    torch.testing.assert_close(seen["t_u"], table[asked["ids"]])   # the batch's own pairs
