import pytest
import torch

from smec.modules import SXBM, AdaptiveDimensionSelection, ResidualAdapter, anneal_tau


def test_sxbm_wraps_around_fifo():
    memory = SXBM(size=5, dim=2)
    memory.enqueue(torch.ones(3, 2), torch.tensor([0, 1, 2]))
    assert memory.filled == 3 and memory.ptr == 3
    memory.enqueue(2 * torch.ones(4, 2), torch.tensor([3, 4, 5, 6]))
    feats, ids = memory.get()
    assert memory.filled == 5 and memory.ptr == 2
    # slots 0,1 were overwritten by the two newest (5, 6); oldest surviving is id 2
    assert ids.tolist() == [5, 6, 2, 3, 4]
    assert feats[0].tolist() == [2.0, 2.0] and feats[2].tolist() == [1.0, 1.0]


def test_sxbm_batch_larger_than_memory_keeps_newest():
    memory = SXBM(size=3, dim=1)
    memory.enqueue(torch.arange(7.0)[:, None], torch.arange(7))
    assert sorted(memory.get()[1].tolist()) == [4, 5, 6]


def test_sxbm_neighbours_exclude_self_and_same_id_duplicates():
    memory = SXBM(size=10, dim=2)
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    memory.enqueue(e, torch.tensor([0, 1, 2]))           # the batch items are also in memory
    pool, pool_ids, index, teacher = memory.neighbours(e[:2], torch.tensor([0, 1]), k=2)
    assert sorted(pool_ids.tolist()) == [0, 1, 2] and len(pool) == 3   # each id once
    assert (pool_ids[index[0]] != 0).all() and (pool_ids[index[1]] != 1).all()
    assert pool_ids[index[0, 0]].item() == 1          # nearest other item of 0 is 1
    assert teacher[0, 0].item() == pytest.approx((e[0] @ e[1]).item())


def test_ads_hard_selection_has_k_distinct_dims_and_grad_reaches_logits():
    torch.manual_seed(0)
    ads = AdaptiveDimensionSelection(in_dim=16, k=5)
    index, gate = ads.sample(tau=0.5)
    assert len(set(index.tolist())) == 5 and index.tolist() == sorted(index.tolist())
    assert torch.allclose(gate, torch.ones(5))         # forward value exactly 1
    x = torch.randn(3, 16)
    (x[:, index] * gate).sum().backward()
    assert ads.logits.grad is not None and ads.logits.grad.abs().sum() > 0


def test_ads_inference_is_truncation_at_init():
    ads = AdaptiveDimensionSelection(in_dim=8, k=3)
    assert ads.selected().tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="k must be"):
        AdaptiveDimensionSelection(4, 5)


def test_anneal_tau():
    assert anneal_tau(0, 100, 1.0, 0.1) == 1.0
    assert anneal_tau(100, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert anneal_tau(50, 100, 1.0, 0.1) == pytest.approx(0.1 ** 0.5)


def test_residual_adapter_starts_as_identity():
    adapter = ResidualAdapter(8, hidden=4)
    x = torch.randn(5, 8)
    assert torch.equal(adapter(x), x)


def test_memory_holds_each_id_once_and_never_returns_a_neighbour_twice():
    """Unlabelled draws repeat documents; S-XBM keeps one slot per id (features are frozen)."""
    from smec.modules import SXBM
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    memory = SXBM(size=100, dim=8)
    for _ in range(20):   # 20 draws of 16 from 30 documents: many repeats
        ids = torch.randint(30, (16,))
        found = memory.exchange(feats[ids], ids, k=5)
        if found is not None:
            nbr_ids, index, _ = found
            for row, query_id in zip(index, ids):
                neighbours = nbr_ids[row]
                assert len(set(neighbours.tolist())) == 5   # five distinct docs
                assert query_id not in neighbours.tolist()
    stored = memory.ids[:memory.filled].tolist()
    assert len(stored) == len(set(stored)) == memory.filled <= 30


def test_pca_residual_adapter_keeps_raw_cosines_and_starts_every_prefix_on_principal_axes():
    from smec.modules.networks import build_adapter
    from smec.principal import principal_axes
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(400, 16) * torch.linspace(3, 0.1, 16) + 0.4,
                                      dim=1)
    h = build_adapter("pca_residual", 16, 8, init_data=x)(x).detach()
    unit = torch.nn.functional.normalize(h, dim=1)
    torch.testing.assert_close(unit @ unit.T, x @ x.T, atol=1e-5, rtol=0)   # full dim = raw
    axes, _ = principal_axes(x.numpy(), 4)
    torch.testing.assert_close(h[:, :4], x @ torch.from_numpy(axes).float().T, atol=1e-5,
                               rtol=0)


def test_pca_residual_adapter_on_fewer_documents_than_dims():
    """A small corpus (N < D): the rotation is completed to a full orthonormal basis."""
    from smec.modules.networks import build_adapter
    x = torch.nn.functional.normalize(torch.randn(10, 16), dim=1)
    h = build_adapter("pca_residual", 16, 8, init_data=x)(x).detach()
    unit = torch.nn.functional.normalize(h, dim=1)
    torch.testing.assert_close(unit @ unit.T, x @ x.T, atol=1e-5, rtol=0)


# --- precision-aware training: the served documents -------------------------------------

def _unit_rows(n=300, d=32, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=-1)


def test_served_int8_is_the_int8_quantiser_and_passes_the_gradient_straight_through():
    import numpy as np

    from smec.modules.serving import ServedDocuments
    from smec.quantize import Quantizer
    x = _unit_rows().requires_grad_()
    served = ServedDocuments("int8")(x)
    q = Quantizer.fit("int8", x.detach().numpy())
    want = q.decode(q.encode(x.detach().numpy()))
    np.testing.assert_allclose(served.detach().numpy(), want, atol=1e-5)
    served.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_served_binary_scores_with_the_sign_and_trains_through_an_annealed_tanh():
    from smec.modules.serving import ServedDocuments
    x = _unit_rows().requires_grad_()
    module = ServedDocuments("binary")
    with torch.no_grad():      # scoring: the ±1 vector, unit norm
        hard = module(x)
    torch.testing.assert_close(hard * 32 ** 0.5, torch.where(x > 0, 1.0, -1.0))
    module.progress = 0.0
    soft = module(x)
    soft.sum().backward()
    assert 0 < (soft - hard).abs().max() and x.grad.abs().sum() > 0   # relaxed, gradient flows
    module.progress = 1.0
    assert (module(x) - hard).abs().max() < (soft - hard).abs().max()  # annealed to the sign
    from smec.config import TrainConfig
    for unknown in ("opq8", "pq", "binary-itq", "pq96x4"):   # training serves 8-bit PQ only
        with pytest.raises(ValueError, match="serve_precision must be one of"):
            ServedDocuments(unknown)
        with pytest.raises(ValueError, match="serve_precision must be one of"):
            TrainConfig(serve_precision=unknown)
    assert TrainConfig(serve_precision="pq48").serve_precision == "pq48"


def test_served_pq_scores_with_the_fitted_codewords_and_trains_through_an_annealed_softmax():
    import numpy as np

    from smec.modules.serving import ServedDocuments
    from smec.quantize import Quantizer
    x = _unit_rows(n=600).requires_grad_()
    module = ServedDocuments("pq8")
    with pytest.raises(RuntimeError, match="no codebooks for 32 dims"):
        module(x)               # training before any scoring has fitted them
    with torch.no_grad():       # scoring: fit on the documents in hand, the nearest codewords
        hard = module(x)
    q = Quantizer.fit("pq8", x.detach().numpy())
    np.testing.assert_allclose(hard.numpy(), q.decode(q.encode(x.detach().numpy())), atol=1e-5)
    assert module.codebooks[32].shape == (8, 256, 4)
    module.progress = 0.0
    soft = module(x)
    soft.sum().backward()
    assert 0 < (soft - hard).abs().max() and x.grad.abs().sum() > 0   # relaxed, gradient flows
    module.progress = 1.0
    annealed = module(x)
    assert (annealed - hard).abs().max() < 0.5 * (soft - hard).abs().max()
    assert (annealed - hard).abs().mean() < 1e-3                       # hardened to the codes
    moved = torch.nn.functional.normalize(x.detach() + 0.3 * _unit_rows(n=600, seed=1), dim=-1)
    stale = module.codebooks[32]
    with torch.no_grad():       # re-fitted on the moved documents, from the last codebooks
        refit = module(moved)
    assert not torch.equal(module.codebooks[32], stale)
    stale_nearest = Quantizer("pq8", 32, {"codebooks": stale.numpy()})
    stale_error = ((stale_nearest.decode(stale_nearest.encode(moved.numpy())) - moved.numpy())
                   ** 2).sum()
    assert ((refit - moved) ** 2).sum() < 0.9 * stale_error
    narrow = torch.randn(5, 12)   # 12 dims do not divide by 8: that level is served float
    assert torch.equal(module(narrow), narrow)
