"""Loss values on tiny cases computed by hand."""
import math

import pytest
import torch

from smec.losses import MatryoshkaLoss, RankLoss, SimilarityPreservationLoss


def sp(x):
    return math.log1p(math.exp(x))


def test_rank_loss_binary_by_hand():
    scores = torch.tensor([[0.9, 0.2, 0.5]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    # pairs (0 > 1) and (0 > 2), gap 1: softplus(0.2-0.9) + softplus(0.5-0.9)
    expected = sp(-0.7) + sp(-0.4)
    assert RankLoss(reduction="sum")(scores, labels).item() == pytest.approx(expected, rel=1e-6)
    # the default: a mean over the pairs, weighted by label gap (both weigh 1)
    assert RankLoss()(scores, labels).item() == pytest.approx(expected / 2, rel=1e-6)


def test_rank_loss_graded_weights_and_scale():
    scores = torch.tensor([[0.1, 0.3, 0.8]])
    labels = torch.tensor([[2.0, 1.0, 0.0]])
    # (0>1) gap 1, (0>2) gap 2, (1>2) gap 1; scale 5 multiplies s_ik - s_ij
    expected = 1 * sp(5 * (0.3 - 0.1)) + 2 * sp(5 * (0.8 - 0.1)) + 1 * sp(5 * (0.8 - 0.3))
    assert RankLoss(scale=5.0, reduction="sum")(scores, labels).item() == pytest.approx(
        expected, rel=1e-6)
    assert RankLoss(scale=5.0)(scores, labels).item() == pytest.approx(expected / 4, rel=1e-6)


def test_rank_loss_reductions():
    scores = torch.tensor([[0.9, 0.2], [0.1, 0.4]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    per_query = [sp(0.2 - 0.9), sp(0.4 - 0.1)]
    assert RankLoss(reduction="sum")(scores, labels).item() == pytest.approx(sum(per_query))
    assert RankLoss(reduction="mean_query")(scores, labels).item() == pytest.approx(
        sum(per_query) / 2)
    assert RankLoss(reduction="mean_pair")(scores, labels).item() == pytest.approx(
        sum(per_query) / 2)


def test_rank_loss_scale_does_not_grow_with_positives_or_candidates():
    """The default reduction: one query with 1 positive among 10 candidates and one with 200
    graded positives among 2,000 give losses of one size when every pair is equally wrong."""
    def case(n_pos, n_cand):
        labels = torch.zeros(1, n_cand)
        labels[0, :n_pos] = torch.tensor([1.0 + i % 3 for i in range(n_pos)])
        scores = torch.where(labels > 0, 0.2, 0.5)   # every positive below every negative
        return scores, labels
    small, large = case(1, 10), case(200, 2000)
    assert RankLoss()(*small).item() == pytest.approx(RankLoss()(*large).item(), rel=0.2)
    assert RankLoss(reduction="mean_query")(*large).item() > 100 * RankLoss(
        reduction="mean_query")(*small).item()


def test_rank_loss_no_positive_is_zero_with_grad():
    scores = torch.rand(2, 3, requires_grad=True)
    loss = RankLoss()(scores, torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0


def test_rank_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        RankLoss(reduction="avg")
    with pytest.raises(ValueError, match="scale"):
        RankLoss(scale=0)


def test_similarity_preservation_by_hand():
    teacher = torch.tensor([[0.9, 0.5], [0.7, 0.1]])
    student = torch.tensor([[0.8, 0.7], [0.7, 0.4]])
    # row 0: 0.1 + 0.2, row 1: 0 + 0.3 -> mean 0.3
    assert SimilarityPreservationLoss()(teacher, student).item() == pytest.approx(0.3)


def test_matryoshka_sums_levels():
    q = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0]])
    loss = MatryoshkaLoss(RankLoss(), dims=[2, 4], weights=[1.0, 0.5])(q, c, labels)
    # dim 2: cos = [1, 0] -> sp(-1); dim 4: cos = [0.5, 0.5] -> sp(0)
    assert loss.item() == pytest.approx(sp(-1.0) + 0.5 * sp(0.0), rel=1e-6)
    with pytest.raises(ValueError, match="one weight per dim"):
        MatryoshkaLoss(RankLoss(), dims=[2, 4], weights=[1.0])


def test_infonce_matches_cross_entropy_with_one_positive():
    import torch.nn.functional as F

    from smec.losses import InfoNCELoss
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    expected = F.cross_entropy(scores / 0.05, torch.tensor([0, 2]))
    assert torch.allclose(InfoNCELoss(0.05)(scores, labels), expected)


def test_infonce_pools_positives_and_skips_queries_without_one():
    from smec.losses import InfoNCELoss
    scores = torch.tensor([[0.5, 0.5, 0.0], [0.3, 0.2, 0.1]])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = math.log((2 * math.e + 1) / (2 * math.e))     # logits 1, 1, 0 at t = 0.5
    assert InfoNCELoss(0.5)(scores, labels).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)


def _objective_inputs(seed: int = 0):
    from smec.modules.heads import PrefixHead
    gen = torch.Generator().manual_seed(seed)
    queries, candidates = torch.randn(3, 6, generator=gen), torch.randn(5, 6, generator=gen)
    labels = torch.tensor([[1., 0, 0, 2, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])
    unlabelled, memory = torch.randn(2, 6, generator=gen), torch.randn(3, 6, generator=gen)
    inverse = torch.tensor([[2, 0], [1, 2]])   # item 0's neighbours: memory rows 2 and 0, ...
    teacher = torch.tensor([[0.9, 0.2], [0.5, -0.1]])
    return (torch.nn.Identity(), [PrefixHead(torch.arange(6), 4)], [None], queries, candidates,
            labels, unlabelled, (memory, inverse, teacher))


def test_compression_objective_weighs_the_unsupervised_term_by_alpha():
    from smec.losses.objective import CompressionObjective
    inputs = _objective_inputs()
    results = [CompressionObjective(RankLoss(20.0), "sxbm", alpha)(*inputs)
               for alpha in (0.0, 0.25, 2.0)]
    rank, unsup = results[0][1], results[0][2]
    head, queries, candidates, labels = inputs[1][0], inputs[3], inputs[4], inputs[5]
    assert float(rank) == pytest.approx(float(RankLoss(20.0)(head(queries) @ head(candidates).T,
                                                            labels)))
    assert float(unsup) > 0
    for (loss, _, _), alpha in zip(results, (0.0, 0.25, 2.0)):
        assert float(loss) == pytest.approx(float(rank) + alpha * float(unsup), rel=1e-6)


def test_compression_objective_compares_each_item_with_its_own_neighbours():
    """SMEC Eq. 7 by hand: |teacher − cos(z_i, z_j)| over item i's neighbours j, which
    ``inverse`` picks out of the memory's rows."""
    import torch.nn.functional as F

    from smec.losses.objective import CompressionObjective
    adapter, heads, samples, *_, unlabelled, (memory, inverse, teacher) = _objective_inputs()
    _, _, unsup = CompressionObjective(RankLoss(), "sxbm", 1.0)(
        adapter, heads, samples, None, None, None, unlabelled, (memory, inverse, teacher))
    z_items, z_memory = F.normalize(unlabelled[:, :4], dim=-1), F.normalize(memory[:, :4], dim=-1)
    by_hand = sum(abs(float(teacher[i, k]) - float(z_items[i] @ z_memory[inverse[i, k]]))
                  for i in range(2) for k in range(2)) / 2
    assert float(unsup) == pytest.approx(by_hand, rel=1e-6)


def test_smooth_preservation_is_huber_averaged_over_neighbours():
    teacher = torch.tensor([[0.5, 0.2, 0.9]])
    student = torch.tensor([[0.5, 0.21, 0.6]], requires_grad=True)
    loss = SimilarityPreservationLoss(huber_delta=0.02, reduction="mean")(teacher, student)
    by_hand = (0.0 + 0.01 ** 2 / (2 * 0.02) + (0.3 - 0.01)) / 3
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)
    loss.backward()
    assert float(student.grad[0, 0]) == 0.0            # agreement: no push (L1 pushes ±1)
    assert float(student.grad[0, 2]) == pytest.approx(-1 / 3)   # past delta: as L1, over K
    with pytest.raises(ValueError, match="reduction"):
        SimilarityPreservationLoss(reduction="max")


@pytest.mark.parametrize("neighbour_grad", [True, False])
@pytest.mark.parametrize("unsup_loss", ["preserve", "distill"])
def test_sxbm_reuses_the_rank_pass_for_rows_it_shares_with_the_same_loss_and_gradients(
        neighbour_grad, unsup_loss):
    """The S-XBM term reads the rank pass's outputs for the unlabelled documents and the
    neighbours that are candidates too (SMEC's `sxbm_batch: candidates`): one adapter pass per
    row, and the loss and every gradient those of two separate passes."""
    from smec.losses.objective import CompressionObjective
    from smec.modules import build_adapter
    from smec.modules.heads import PrefixHead
    from smec.training.prepare import positions_in
    gen = torch.Generator().manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=-1)
    queries = torch.randn(4, 16, generator=gen)
    candidate_rows = torch.tensor([3, 17, 5, 30, 22, 9, 11, 2])
    labels = (torch.rand(4, 8, generator=gen) > 0.7).float()
    unlabelled = torch.tensor([17, 22, 35])                      # 35 is no candidate
    neighbour_rows = torch.tensor([5, 38, 9, 1, 22])             # 5, 9, 22 are candidates
    inverse = torch.tensor([[0, 1], [2, 3], [4, 0]])
    teacher = torch.rand(3, 2, generator=gen)
    objective = CompressionObjective(RankLoss(20.0), "sxbm", 0.5, unsup_loss,
                                     neighbour_grad=neighbour_grad)
    heads = [PrefixHead(torch.arange(16), 8)]

    def loss_and_grads(shared):
        torch.manual_seed(0)
        adapter = build_adapter("residual_mlp", 16, hidden=32)
        with torch.no_grad():                    # off its identity start: every weight pushes
            for p in adapter.parameters():
                p.add_(0.1 * torch.randn(p.shape))
        passes = []
        adapter.register_forward_hook(lambda module, args, out: passes.append(len(args[0])))
        loss, rank, unsup = objective(adapter, heads, [None], queries, corpus[candidate_rows],
                                      labels, corpus[unlabelled],
                                      (corpus[neighbour_rows], inverse, teacher), None, shared)
        loss.backward()
        return (loss.item(), unsup.item(), [p.grad.clone() for p in adapter.parameters()],
                passes)

    shared = (positions_in(unlabelled, candidate_rows), positions_in(neighbour_rows, candidate_rows))
    assert shared[0].tolist() == [1, 4, -1] and shared[1].tolist() == [2, -1, 5, -1, 4]
    apart, together = loss_and_grads(None), loss_and_grads(shared)
    assert together[1] > 0
    assert together[0] == pytest.approx(apart[0], rel=1e-6)
    for a, b in zip(apart[2], together[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    passed = sum(together[3]) - 4 - 8                       # rows past queries and candidates
    assert passed == 3                                      # only rows 35, 38, 1 are new
    assert sum(apart[3]) - 4 - 8 == 3 + 5
