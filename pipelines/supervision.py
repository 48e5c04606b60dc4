"""What a training run learns from: judged queries, pseudo queries mined from the corpus, or
the corpus alone (``train.supervision``).

:func:`training_inputs` resolves the setting on the driver (``auto``: the folder's train or dev
qrels when it has them, else :data:`LABEL_FREE_DEFAULT`), mines and embeds the pseudo queries
when asked (Ray Data, into the run folder's ``pseudo/seedK``, once per seed: a later run reuses
them), and returns what every training worker reads; :func:`training_data` turns that into tensors.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from smec import console
from smec.config import Config, TrainConfig
from smec.corpus import Source
from smec.data import BeirPaths, Qrels, load_qrels
from smec.errors import SmecError
from smec.pseudo import PseudoQueries, mine_pseudo_queries, with_rewritten
from smec.runfolder import PseudoSet, RunFolder
from smec.store import read_embeddings
from smec.teacher import read_teacher, teacher_models, teacher_slug
from smec.training.prepare import TrainingData, prepare_data, prepare_unlabelled_data

#: What ``supervision: auto`` trains with on a folder without training qrels: the label-free
#: mode chosen on the train-query hold-outs of SciFact and ArguAna together
#: (benchmarks/results/label-free-selection-v2/protocol.md): `none` gains over the untrained
#: start on both (+1.0 / +2.3 points, mean of 96, 48, 24 d), `pseudo` loses on ArguAna's (-0.8),
#: and `none` needs no pseudo queries embedded.
LABEL_FREE_DEFAULT = "none"


@dataclass(frozen=True)
class TrainingInputs:
    supervision: str             # qrels | pseudo | none (resolved)
    corpus: Path                 # the corpus embedding store (paths absolute: RunFolder's)
    queries: Path | None         # the training queries' store (real or pseudo); None: none
    qrels: Qrels | None          # their judgements
    teacher: Path | None = None  # train.teacher's corpus store (None: the model itself)
    teacher_models: tuple[str, ...] = ()   # its columns, concatenated in this order
    rewritten: Path | None = None   # pseudo: the store of its documents without their queries


def teacher_store(paths: BeirPaths | None, run: RunFolder, cfg: Config,
                  echo=console.echo) -> tuple[Path, tuple[str, ...]] | None:
    """``train.teacher``'s corpus store and models, embedded (Ray Data, every model in one
    pipeline) into ``run.teacher(<teacher>)`` unless it is there already: once per corpus and
    teacher, then reused by every run, every bench seed and ``smec concat --out
    OUT/teacher/concat``. None for ``self`` (or the deployed model named as its own teacher)."""
    models = teacher_models(cfg.train.teacher, cfg.concat.models)
    if not models or models == [cfg.model.name]:
        return None
    if paths is None:
        raise SmecError(f"train.teacher {cfg.train.teacher} embeds the corpus texts: pass "
                        "--data-dir (an embedding store alone trains with teacher self)")
    from smec.pipelines.concat import embed_models
    teacher = run.teacher(teacher_slug(cfg.train.teacher))
    echo(f"teacher {cfg.train.teacher}: {', '.join(models)} on {paths.corpus}")
    embed_models(paths, teacher, cfg, models, echo)
    return teacher.corpus, tuple(models)


def resolve_supervision(cfg: TrainConfig, paths: BeirPaths | None) -> str:
    """``cfg.supervision`` with ``auto`` decided (an embedding store alone: ``none``, the only
    mode without texts); one line when it cannot be had."""
    if cfg.supervision == "auto":
        if paths is None:
            return "none"
        return "qrels" if paths.has_train_qrels else LABEL_FREE_DEFAULT
    if paths is None and cfg.supervision != "none":
        raise SmecError(f"train.supervision {cfg.supervision} needs the texts: pass --data-dir "
                        "(an embedding store alone trains with --supervision none)")
    if cfg.supervision == "qrels":
        paths.read_train_qrels()   # a folder without them: one line saying what to add
    return cfg.supervision


def label_free_notice(cfg: TrainConfig, paths: BeirPaths | None, supervision: str) -> str | None:
    """The one line saying a run trains label-free because no training qrels exist."""
    if cfg.supervision != "auto" or supervision == "qrels":
        return None
    where = f"{paths.root / 'qrels'} has no train.tsv or dev.tsv" if paths is not None \
        else "an embedding store has no queries"
    how = {"pseudo": "queries mined from the corpus", "none": "the corpus alone"}[supervision]
    return (f"{where}: training label-free (supervision {supervision}: {how}); "
            "set train.supervision to choose")


def mined_pseudo_queries(paths: BeirPaths, cfg: Config, seed: int) -> PseudoQueries:
    """The pseudo set of one seed: a seed draws its own documents (and sentences), so the seeds
    of a bench measure the spread over pseudo sets too, not one set's."""
    return mine_pseudo_queries(paths.corpus, cfg.train.pseudo_queries, seed)


def pseudo_queries(paths: BeirPaths, run: RunFolder, cfg: Config, seed: int | None = None,
                   models: list[str] | None = None) -> PseudoSet:
    """Mine and embed the pseudo queries of ``seed`` (default ``train.seed``) into
    ``run.pseudo_set(seed)`` (queries.jsonl, qrels.tsv, the store ``embeddings/``, their documents
    without them and those documents' store ``documents/``, and ``pseudo.json`` last, which
    marks the folder complete). With ``models`` (``smec concat``): both embedded with every
    model in one pipeline instead, into ``embeddings/{corpus,queries}`` (a column per model;
    corpus: the rewritten documents)."""
    from smec.pipelines.embed import run_embed_corpus
    seed = cfg.train.seed if seed is None else seed
    pseudo = run.pseudo_set(seed)
    made_from = {"corpus": str(paths.corpus), "max_queries": cfg.train.pseudo_queries,
                 "model": models or cfg.model.name, "seed": seed, "targets": "query taken out"}
    if pseudo.info.is_file() and json.loads(pseudo.info.read_text()).get("made_from") == made_from:
        return pseudo
    shutil.rmtree(pseudo.root, ignore_errors=True)
    mined = mined_pseudo_queries(paths, cfg, seed)
    if len(mined.queries) < 2:
        raise SmecError(f"{paths.corpus}: found {len(mined.queries)} usable titles or sentences "
                        "to mine pseudo queries from; use supervision none")
    mined.write(pseudo.root)
    if models:
        from smec.pipelines.concat import embed_models
        pairs = BeirPaths(Path(pseudo.root), pseudo.documents, pseudo.queries, pseudo.qrels,
                          pseudo.qrels)
        embed_models(pairs, pseudo.as_run_folder(), cfg, models, echo=lambda _: None)
    else:
        run_embed_corpus(Source(pseudo.queries, title_field=None), pseudo.embeddings, cfg,
                         kind="queries")
        run_embed_corpus(Source(pseudo.documents), pseudo.document_embeddings, cfg)
    pseudo.info.write_text(json.dumps({"source": mined.source, "queries": len(mined.queries),
                                       "made_from": made_from}, indent=1))
    return pseudo


def training_inputs(paths: BeirPaths | None, run: RunFolder, cfg: Config,
                    store: Path | None = None) -> TrainingInputs:
    """The resolved supervision and the stores and judgements it trains on (``store``: the
    corpus store when it is not ``run.corpus``), and the teacher's store."""
    supervision = resolve_supervision(cfg.train, paths)
    corpus = store or run.corpus
    teacher, teacher_of = teacher_store(paths, run, cfg) or (None, ())
    if supervision == "qrels":
        queries, qrels = run.queries, paths.read_train_qrels()
    elif supervision == "pseudo":
        pseudo = pseudo_queries(paths, run, cfg)
        return TrainingInputs(supervision, corpus, pseudo.embeddings, load_qrels(pseudo.qrels),
                              teacher, teacher_of, pseudo.document_embeddings.resolve())
    else:
        queries, qrels = None, None
    return TrainingInputs(supervision, corpus, queries, qrels, teacher, teacher_of)


def training_data(inputs: TrainingInputs, cfg: TrainConfig,
                  device: str | torch.device = "cpu") -> TrainingData:
    """The tensors of :mod:`smec.training` for ``inputs``, on ``device``."""
    doc_ids, doc_vecs, _ = read_embeddings(inputs.corpus)
    if inputs.rewritten is not None:
        doc_vecs = with_rewritten(doc_ids, doc_vecs, *read_embeddings(inputs.rewritten)[:2])
    teacher = None if inputs.teacher is None \
        else read_teacher(inputs.teacher, list(inputs.teacher_models), doc_ids)
    if inputs.queries is None:
        return prepare_unlabelled_data(doc_ids, doc_vecs, cfg, device, teacher)
    query_ids, query_vecs, _ = read_embeddings(inputs.queries)
    return prepare_data(doc_ids, doc_vecs, query_ids, query_vecs, inputs.qrels, cfg, device,
                        teacher)
