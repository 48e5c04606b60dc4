"""``train.teacher``: the unsupervised term and the label-free probes learn from another
model's geometry (the concatenation of several, or a larger one), embedded once per corpus."""
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from smec.config import TrainConfig
from smec.losses.objective import CompressionObjective
from smec.losses.rank import RankLoss
from smec.modules import SXBM
from smec.modules.heads import PrefixHead
from smec.training.engine import Reporter, train_method, validate
from smec.training.prepare import NEIGHBOURS_JUDGED, prepare_unlabelled_data

TINY = {"stages": [8, 4], "max_epochs_per_stage": 2, "batch_unlabelled": 32, "memory_size": 64,
        "neighbours": 4, "adapter_hidden": 16, "probe_docs": 20, "val_corpus_docs": 150}


def corpus_and_teacher(n: int = 300, dim: int = 16, teacher_dim: int = 24):
    """A student corpus and a teacher whose neighbourhoods differ from it (other clusters)."""
    rng = np.random.default_rng(0)

    def clustered(d: int) -> np.ndarray:
        x = rng.normal(size=(12, d))[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return [f"d{i}" for i in range(n)], clustered(dim), clustered(teacher_dim)


def top_ids(space: np.ndarray, probe: int, ids: list[str]) -> set[str]:
    scores = np.round(space @ space[probe], 5)   # the search's score grid, ties by id
    scores[probe] = -np.inf
    order = sorted(range(len(ids)), key=lambda j: (scores[j], ids[j]), reverse=True)
    return {ids[j] for j in order[:NEIGHBOURS_JUDGED]}


def test_label_free_probes_are_judged_by_the_teachers_neighbours():
    ids, docs, teacher = corpus_and_teacher()
    data = prepare_unlabelled_data(ids, docs, TrainConfig(**TINY), teacher=teacher)
    for probe_id, judged in data.val_qrels.items():
        assert set(judged) == top_ids(teacher, ids.index(probe_id), ids)
    # the model itself no longer finds every judged neighbour: a target it can be beaten on
    full = validate(data, torch.nn.Identity(), [PrefixHead(torch.arange(16), 16)])
    own = prepare_unlabelled_data(ids, docs, TrainConfig(**TINY))
    assert full < 0.5 and validate(own, torch.nn.Identity(),
                                   [PrefixHead(torch.arange(16), 16)]) == pytest.approx(1.0)


def test_the_memory_holds_the_teachers_vectors_and_serves_its_neighbours():
    ids, docs, teacher = corpus_and_teacher()
    cfg = TrainConfig(**TINY, supervision="none")
    data = prepare_unlabelled_data(ids, docs, cfg, teacher=teacher)
    memory = SXBM(cfg.memory_size, teacher.shape[1])
    train_method(data, cfg, "smec", Reporter(), memory=memory)
    stored = memory.ids[:memory.filled]
    assert memory.filled == cfg.memory_size
    assert torch.allclose(memory.feats[:memory.filled], data.teacher[stored])
    with pytest.raises(RuntimeError):   # a memory of the student's width cannot take them
        train_method(data, cfg, "smec", memory=SXBM(cfg.memory_size, docs.shape[1]))


def test_the_similarity_term_distils_the_teachers_cosines_within_the_batch_too():
    """Student = the model itself (identity, full width): nothing to learn from its own
    cosines; the batch's pairs under a teacher with other neighbours do push (the memory's
    neighbours come with the teacher's cosines already, see the test above)."""
    _, docs, teacher = corpus_and_teacher()
    e = torch.from_numpy(docs[:32])
    objective = CompressionObjective(RankLoss(), "sxbm", 1.0, "distill")
    head = PrefixHead(torch.arange(16), 16)
    memory = SXBM(64, 16)
    memory.enqueue(torch.from_numpy(docs[100:164]), torch.arange(100, 164))
    nbr_ids, index, cosines = memory.exchange(e, torch.arange(32), 4)
    found = (torch.from_numpy(docs)[nbr_ids], index, cosines)
    _, _, itself = objective(torch.nn.Identity(), [head], [None], None, None, None, e, found)
    _, _, taught = objective(torch.nn.Identity(), [head], [None], None, None, None, e, found,
                             torch.from_numpy(teacher[:32]))
    assert float(itself) == pytest.approx(0.0, abs=1e-5) and float(taught) > 0.1


def test_a_teacher_setting_names_what_it_accepts(tmp_path):
    assert TrainConfig(teacher="concat").teacher == "concat"
    assert TrainConfig(teacher=str(tmp_path)).teacher == str(tmp_path.resolve())   # a folder
    with pytest.raises(ValidationError, match="teacher\n.*'bert' is not self, concat, a registry"):
        TrainConfig(teacher="bert")
    with pytest.raises(ValidationError, match="needs sxbm_teacher: raw"):
        TrainConfig(teacher="concat", sxbm_teacher="previous")


def test_an_outside_teacher_overrides_a_methods_own_sxbm_teacher():
    """SMEC's own defaults distil the stage's start (sxbm_teacher: previous); a teacher the
    user names wins over them, under qrels too, instead of refusing the config."""
    assert TrainConfig().for_method("smec").sxbm_teacher == "previous"
    taught = TrainConfig(teacher="concat").for_method("smec")
    assert taught.sxbm_teacher == "raw" and taught.unsup_loss == "smooth"


def test_the_teacher_is_embedded_once_per_corpus_and_read_row_for_row(mini_cut, tmp_path,
                                                                      monkeypatch):
    """`train.teacher` on a run folder: the first run embeds the corpus with the teacher into
    OUT/teacher/<teacher> (Ray Data, the real model); every later run, seed or `smec concat
    --out OUT/teacher/<teacher>` reuses it. Counted at the embedding job itself."""
    from smec.pipelines import embed
    from smec.pipelines.concat import load_or_embed
    from smec.pipelines.supervision import teacher_store

    from smec.config import load_config
    from smec.data import resolve_beir_dir
    from smec.teacher import read_teacher
    calls = []
    real = embed.run_embed_models
    monkeypatch.setattr(embed, "run_embed_models",
                        lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    cfg = load_config(None)
    cfg.train.teacher = "tokenlearn-static-64d"
    paths = resolve_beir_dir(mini_cut)
    from smec.runfolder import RunFolder
    run = RunFolder(tmp_path / "run")
    store, models = teacher_store(paths, run, cfg, echo=lambda _: None)
    teacher_run = run.teacher("tokenlearn-static-64d")
    assert calls == [["tokenlearn-static-64d"]]
    assert store == (tmp_path / "run" / "teacher" / "tokenlearn-static-64d" / "embeddings"
                     / "corpus").resolve()
    again = teacher_store(paths, run, cfg, echo=lambda _: None)
    loaded = load_or_embed(paths, teacher_run, cfg, list(models), echo=lambda _: None)
    assert again == (store, models) and len(calls) == 1   # reused, by training and by concat
    doc_ids = loaded["corpus"][0][::-1]                     # any order: rows follow the ids
    vectors = read_teacher(store, list(models), doc_ids)
    assert vectors.shape == (len(doc_ids), 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    raw = loaded["corpus"][1]["tokenlearn-static-64d"][::-1]
    assert np.allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
