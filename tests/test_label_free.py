"""Training without labels: pseudo queries, the corpus-only data, the distillation term, and
how ``train.supervision`` resolves (no Ray, no model)."""
import json

import numpy as np
import pytest
import torch

from smec.config import TrainConfig
from smec.data import resolve_beir_dir
from smec.errors import SmecError
from smec.losses import SimilarityDistillationLoss
from smec.pseudo import mine_pseudo_queries, sentences
from smec.training.engine import Reporter, train_method, validate
from smec.training.prepare import NEIGHBOURS_JUDGED, prepare_unlabelled_data

TINY = {"stages": [8, 4], "max_epochs_per_stage": 2, "batch_unlabelled": 32, "memory_size": 64,
        "neighbours": 4, "adapter_hidden": 16, "probe_docs": 20, "val_corpus_docs": 150}


def write_corpus(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_titles_become_queries_when_the_corpus_has_its_own(tmp_path):
    docs = [{"_id": f"d{i}", "title": f"title number {i}", "text": f"Body {i}. More text."}
            for i in range(50)]
    mined = mine_pseudo_queries(write_corpus(tmp_path / "c.jsonl", docs), 30)
    assert mined.source == "title" and len(mined.queries) == 30
    for qid, query in mined.queries.items():
        (doc,) = mined.qrels[qid]
        assert query == f"title number {doc[1:]}" and mined.qrels[qid][doc] == 1
        # the target is the body alone: a title is not embedded with its own document
        assert mined.documents[doc] == {"title": "", "text": f"Body {doc[1:]}. More text."}
    again = mine_pseudo_queries(write_corpus(tmp_path / "shuffled.jsonl", docs[::-1]), 30)
    assert again.queries == mined.queries   # hashed by id: the file order does not matter


def test_shared_titles_fall_back_to_a_sentence_of_the_document(tmp_path):
    """ArguAna-like: one debate topic titles many arguments, so titles would be ambiguous."""
    docs = [{"_id": f"d{i}", "title": "one shared topic",
             "text": f"Argument {i} opens with this first sentence here. It then says a "
                     f"second thing about case {i}. Short."} for i in range(40)]
    docs.append({"_id": "tiny", "title": "one shared topic", "text": "Too short."})
    mined = mine_pseudo_queries(write_corpus(tmp_path / "c.jsonl", docs), 100)
    assert mined.source == "sentence" and len(mined.queries) == 40   # "tiny" has none
    for qid, query in mined.queries.items():
        (doc,) = mined.qrels[qid]
        text = next(d["text"] for d in docs if d["_id"] == doc)
        assert query in sentences(text) and len(query.split()) >= 5
        # inverse cloze: the sentence is taken out of the document it must find, the rest kept
        target = mined.documents[doc]
        assert query not in target["text"] and target["title"] == "one shared topic"
        assert set(target["text"].split()) == set(text.split()) - set(query.split())


def synthetic_corpus(n: int = 300, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    docs = centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, dim))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    return [f"d{i}" for i in range(n)], docs.astype(np.float32)


def test_corpus_only_data_holds_probes_out_and_judges_them_by_their_neighbours():
    ids, docs = synthetic_corpus()
    data = prepare_unlabelled_data(ids, docs, TrainConfig(**TINY))
    probes = [ids.index(p) for p in data.val_query_ids]
    assert data.label_free and len(probes) == 20
    assert not set(probes) & set(data.train_docs.tolist())
    assert len(probes) + len(data.train_docs) == len(ids)
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    for probe, judged in zip(probes, data.val_qrels.values()):
        scores = np.round(unit @ unit[probe], 5)   # the search's score grid, ties by id
        scores[probe] = -np.inf   # a probe is not its own neighbour
        order = sorted(range(len(ids)), key=lambda j: (scores[j], ids[j]), reverse=True)
        assert set(judged) == {ids[j] for j in order[:NEIGHBOURS_JUDGED]}
    adapter = torch.nn.Identity()   # full-dim, untouched: finds every neighbour again
    from smec.modules.heads import PrefixHead
    assert validate(data, adapter, [PrefixHead(torch.arange(16), 16)]) == pytest.approx(1.0)


@pytest.mark.parametrize("loss", ["preserve", "distill"])
def test_smec_trains_on_the_corpus_alone(loss):
    ids, docs = synthetic_corpus()
    cfg = TrainConfig(**TINY, unsup_loss=loss)
    reporter = Reporter()
    compressor = train_method(prepare_unlabelled_data(ids, docs, cfg), cfg, "smec", reporter)
    history = reporter.history
    assert compressor.dims == [16, 8, 4] and compressor.encode(docs, 4).shape == (300, 4)
    assert {h["val_metric"] for h in history} == {"recall_at_10"}
    assert all(h["loss_rank"] == 0 for h in history)


def test_methods_without_an_unsupervised_term_are_refused_without_labels():
    ids, docs = synthetic_corpus()
    data = prepare_unlabelled_data(ids, docs, TrainConfig(**TINY))
    with pytest.raises(ValueError, match="method mrl has no unsupervised term.*supervision: pseudo"):
        train_method(data, TrainConfig(**TINY), "mrl")
    with pytest.raises(ValueError, match=r"\(alpha is 0\)"):
        train_method(data, TrainConfig(**TINY, alpha=0.0), "smec")


def test_distillation_is_zero_where_the_student_agrees_and_ranks_otherwise():
    loss = SimilarityDistillationLoss(0.05)
    teacher = torch.tensor([[0.9, 0.5, 0.1, float("-inf")]])
    student = teacher.clone().requires_grad_(True)
    value = loss(teacher, student)
    value.backward()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-6)
    assert torch.all(student.grad[torch.isfinite(teacher)].abs() < 1e-6)
    swapped = torch.tensor([[0.1, 0.5, 0.9, 0.0]])   # the order reversed
    assert float(loss(teacher, swapped)) > 1.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SimilarityDistillationLoss(0)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        loss(teacher, teacher[0])


def test_a_folder_without_training_qrels_resolves_label_free(tiny_beir):
    from smec.pipelines.supervision import (
        LABEL_FREE_DEFAULT,
        label_free_notice,
        resolve_supervision,
    )
    (tiny_beir / "qrels" / "train.tsv").unlink()
    paths = resolve_beir_dir(tiny_beir)
    assert not paths.has_train_qrels
    auto = TrainConfig()
    assert resolve_supervision(auto, paths) == LABEL_FREE_DEFAULT
    assert "training label-free" in label_free_notice(auto, paths, LABEL_FREE_DEFAULT)
    assert resolve_supervision(TrainConfig(supervision="none"), paths) == "none"
    with pytest.raises(SmecError, match="train.tsv: training qrels not found.*supervision"):
        resolve_supervision(TrainConfig(supervision="qrels"), paths)
    with pytest.raises(SmecError, match="pass --data-dir"):
        resolve_supervision(TrainConfig(supervision="pseudo"), None)
    assert resolve_supervision(auto, None) == "none"   # a store alone has no texts to mine


def test_qrels_stay_the_default_where_they_exist(tiny_beir):
    from smec.pipelines.supervision import label_free_notice, resolve_supervision
    paths = resolve_beir_dir(tiny_beir)
    assert resolve_supervision(TrainConfig(), paths) == "qrels"
    assert label_free_notice(TrainConfig(), paths, "qrels") is None


def test_the_similarity_term_is_chosen_by_supervision_unless_set():
    from smec.training.engine import resolved_unsup_loss
    ids, docs = synthetic_corpus()
    corpus_only = prepare_unlabelled_data(ids, docs, TrainConfig(**TINY))
    assert resolved_unsup_loss(TrainConfig(), corpus_only) == "distill"
    labelled = type("Labelled", (), {"label_free": False})()
    assert resolved_unsup_loss(TrainConfig(supervision="qrels"), labelled) == "preserve"
    assert resolved_unsup_loss(TrainConfig(supervision="pseudo"), labelled) == "distill"
    assert resolved_unsup_loss(TrainConfig(supervision="pseudo", unsup_loss="preserve"),
                           labelled) == "preserve"


def test_every_seed_draws_its_own_pseudo_set(tmp_path):
    """A bench's seeds must measure the spread over pseudo sets, not reuse seed 0's."""
    from conftest import write_beir
    from smec.pipelines.supervision import mined_pseudo_queries

    from smec.config import load_config
    from smec.data import resolve_beir_dir
    docs = [{"_id": f"d{i}", "title": f"title number {i}", "text": f"Body {i}."}
            for i in range(200)]
    root = write_beir(tmp_path / "beir", docs, [{"_id": "q", "text": "q"}],
                      {"test": [("q", "d0", 1)]})
    cfg = load_config(None)
    cfg.train.pseudo_queries = 50
    paths = resolve_beir_dir(root)
    first, again = (mined_pseudo_queries(paths, cfg, 0) for _ in range(2))
    other = mined_pseudo_queries(paths, cfg, 1)
    assert first.queries == again.queries and len(first.queries) == 50
    assert set(first.queries) != set(other.queries)


def test_label_free_training_finds_more_neighbours_than_its_start_at_the_smallest_level():
    """Early stopping ships the start unless an epoch beats it strictly: a best epoch >= 0 at
    4 d means training without labels raised the probes' recall@10 there."""
    ids, docs = synthetic_corpus()
    cfg = TrainConfig(**{**TINY, "max_epochs_per_stage": 6, "lr": 1e-3})
    reporter = Reporter()
    train_method(prepare_unlabelled_data(ids, docs, cfg), cfg, "smec", reporter)
    smallest = [h for h in reporter.history if h["dims"] == [4]]
    assert smallest and smallest[-1]["best_epoch"] >= 0, smallest


def test_training_reads_a_pseudo_targets_rewritten_row_and_leaves_the_others():
    from smec.pseudo import with_rewritten
    ids, docs = synthetic_corpus(n=10)
    new = np.full((2, docs.shape[1]), 0.25, np.float32)
    out = with_rewritten(ids, docs, ["d7", "d2"], new)
    assert np.array_equal(out[[7, 2]], new) and np.array_equal(np.delete(out, [2, 7], 0),
                                                                np.delete(docs, [2, 7], 0))
    assert not np.array_equal(docs[[7, 2]], new)   # the corpus itself is not touched
