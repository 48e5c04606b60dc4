"""Our nDCG@10 / recall@100 against pytrec_eval (the oracle BEIR and MTEB use)."""
import numpy as np
import pytest
import pytrec_eval

from smec.eval import evaluate_run, exact_search, per_query_metrics


def oracle(run, qrels):
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    return evaluator.evaluate(run)


def random_case(seed):
    rng = np.random.default_rng(seed)
    docs = [f"doc{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(25):
        qid = f"q{q}"
        judged = rng.choice(docs, size=rng.integers(1, 12), replace=False)
        qrels[qid] = {d: int(rng.integers(0, 4)) for d in judged}   # graded, with zeros
        qrels[qid][judged[0]] = max(1, qrels[qid][judged[0]])        # at least one positive
        retrieved = rng.choice(docs, size=rng.integers(5, 60), replace=False)
        # scores drawn from few values: many ties, broken by doc id as trec_eval does
        run[qid] = {d: float(rng.integers(0, 5)) / 4 for d in retrieved}
    return run, qrels


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_pytrec_eval_with_ties_and_grades(seed):
    run, qrels = random_case(seed)
    ours = per_query_metrics(run, qrels)
    theirs = oracle(run, qrels)
    assert set(ours) == set(theirs)
    for qid in ours:
        assert ours[qid]["ndcg_at_10"] == pytest.approx(theirs[qid]["ndcg_cut_10"], abs=1e-6)
        assert ours[qid]["recall_at_100"] == pytest.approx(theirs[qid]["recall_100"], abs=1e-6)


def test_tie_break_is_doc_id_descending():
    qrels = {"q": {"a": 1}}
    run = {"q": {f"{c}": 0.5 for c in "abcdefghijkl"}}   # all tied: "a" ranks last (12th)
    assert per_query_metrics(run, qrels)["q"]["ndcg_at_10"] == 0.0
    assert oracle(run, qrels)["q"]["ndcg_cut_10"] == 0.0


def test_exact_search_finds_itself_and_ignores_identical_ids():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(50, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(50)]
    run = exact_search(docs[:5], ["x0", "x1", "d2", "x3", "x4"], docs, ids, k=3)
    assert max(run["x0"], key=run["x0"].get) == "d0"
    assert "d2" not in run["d2"]
    metrics = evaluate_run(run, {"x0": {"d0": 1}, "x1": {"d1": 1}})
    assert metrics["ndcg_at_10"] == pytest.approx(1.0)


def test_a_models_score_does_not_hang_on_float_noise_between_duplicate_documents():
    """Duplicate documents (ArguAna has 40 pairs) are equal to float noise; a rotation of the
    same vectors, or float64, must score the same: cosines on a 1e-5 grid tie exactly and go by
    doc id (without the grid: 0.815 / 0.834 / 0.815 here)."""
    from smec.eval import evaluate_vectors, l2_normalize
    from smec.principal import principal_axes
    rng = np.random.default_rng(0)
    docs = l2_normalize(rng.normal(size=(60, 16))).astype(np.float32)
    docs[1::2] = docs[0::2] + 1e-7 * rng.normal(size=(30, 16)).astype(np.float32)
    ids = [f"d{i:02d}" for i in range(60)]
    queries = (docs[0::2][:20] + 0.1 * rng.normal(size=(20, 16))).astype(np.float32)
    qids = [f"q{i}" for i in range(20)]
    qrels = {f"q{i}": {f"d{2 * i + 1:02d}": 1} for i in range(20)}   # the second copy is judged
    rotation = principal_axes(rng.normal(size=(200, 16)))[0].astype(np.float32)
    scores = {evaluate_vectors(q, qids, d, ids, qrels, k=10)["ndcg_at_10"]
              for q, d in [(queries, docs), (queries @ rotation.T, docs @ rotation.T),
                           (queries.astype(np.float64), docs.astype(np.float64))]}
    assert scores == {1.0}
