"""Cached embeddings and qrels turned into training tensors, and one step's batch.

:func:`prepare_data` (or :func:`prepare_unlabelled_data`, label-free) builds a
:class:`TrainingData` on one device: the normalised corpus and training queries, each query's
positives and mined hard negatives, and the grouped hold-out early stopping scores on.
:func:`draw_batch` forms one step's inputs on that device; sampling itself runs on the CPU,
with a CPU generator, so a seed gives the same batches on every device.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from smec.config import TrainConfig
from smec.data import Qrels, group_split, positive_overlap
from smec.eval import exact_search, trec_order


@dataclass
class TrainingData:
    corpus: torch.Tensor                 # [Nc, D] L2-normalised original embeddings
    doc_ids: list[str]
    queries: torch.Tensor                # [Nq, D] training queries (hold-out removed)
    positives: list[list[tuple[int, int]]]   # per training query: (doc row, grade > 0)
    hard_pools: list[torch.Tensor]       # per training query: doc rows by original cosine,
    #                                      judged ones removed (may be short, even empty)
    val_queries: np.ndarray              # hold-out of *train* queries for early stopping
    val_query_ids: list[str]
    val_qrels: Qrels
    val_doc_rows: torch.Tensor           # the fixed corpus sample the hold-out is scored on
    # Label-free (supervision: none): no queries; batches are drawn from ``train_docs`` (every
    # row but the probes), and the hold-out "queries" are probe documents judged by their
    # full-dim neighbours, scored by ``val_metric``.
    train_docs: torch.Tensor | None = None
    val_metric: str = "ndcg_at_10"
    # ``train.teacher`` other than self: its L2-normalised vectors of the same corpus rows
    # [Nc, Dt], whose similarities the unsupervised term distils (None: the corpus itself)
    teacher: torch.Tensor | None = None

    @property
    def teacher_corpus(self) -> torch.Tensor:
        """The rows the unsupervised term's targets and neighbours come from."""
        return self.corpus if self.teacher is None else self.teacher

    @property
    def label_free(self) -> bool:
        return len(self.queries) == 0

    @property
    def device(self) -> torch.device:
        return self.corpus.device

    def fingerprint(self) -> str:
        """A hash of every field: two sets with the same fingerprint train the same network
        under the same config and seed (a resumed bench keeps a unit only if it matches)."""
        digest = hashlib.sha256()

        def feed(value) -> None:
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            if isinstance(value, np.ndarray):
                digest.update(f"{value.dtype}{value.shape}".encode())
                digest.update(np.ascontiguousarray(value).tobytes())
            elif isinstance(value, (list, tuple)) and any(
                    isinstance(v, (torch.Tensor, np.ndarray)) for v in value):
                for v in value:
                    feed(v)
            else:
                digest.update(json.dumps(value, sort_keys=True, default=str).encode())

        for field in dataclasses.fields(self):
            digest.update(field.name.encode())
            feed(getattr(self, field.name))
        return digest.hexdigest()[:16]

    def to(self, device: str | torch.device) -> TrainingData:
        """The same data with its vectors on ``device``; row indices stay on the CPU, where
        batches are sampled."""
        return dataclasses.replace(
            self, corpus=self.corpus.to(device), queries=self.queries.to(device),
            teacher=None if self.teacher is None else self.teacher.to(device))


def holdout_split(qrels: Qrels, frac: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, hold-out) query ids: whole groups of queries sharing a positive on one side."""
    return group_split(qrels, frac, salt=f"holdout:{seed}")


def top_rows(queries: torch.Tensor, corpus: torch.Tensor, depths: list[int],
             max_cells: int = 1 << 26) -> list[list[int]]:
    """Each query's top ``depths[i]`` corpus rows by cosine, mined in query blocks.

    A block's score matrix holds at most ``max_cells`` floats (256 MB), so mining never builds
    the whole ``[Q, N]`` matrix (10 GB at 2,600 queries × 1M documents).
    """
    block = max(1, max_cells // max(1, len(corpus)))
    out: list[list[int]] = []
    for start in range(0, len(queries), block):
        wanted = depths[start:start + block]
        depth = min(len(corpus), max(wanted))
        top = (queries[start:start + block] @ corpus.T).topk(depth, dim=1).indices
        out += [row[:want] for row, want in zip(top.tolist(), wanted)]
    return out


def validation_rows(n_docs: int, val_queries: torch.Tensor, corpus: torch.Tensor,
                    positive_rows: set[int], size: int, seed: int, depth: int = 100
                    ) -> torch.Tensor:
    """The fixed corpus sample the hold-out is scored on every epoch (the whole corpus when it
    has at most ``size`` documents): every hold-out positive, each hold-out query's top
    ``depth`` documents under the frozen model (the competition a positive has to beat), and
    random documents up to ``size``. An epoch's validation cost then does not grow with the
    corpus."""
    if n_docs <= size:
        return torch.arange(n_docs)
    keep = set(positive_rows)
    for rows in top_rows(val_queries, corpus, [depth] * len(val_queries)):
        keep.update(rows)
    rng = np.random.default_rng(seed)
    for row in rng.permutation(n_docs).tolist():
        if len(keep) >= size:
            break
        keep.add(row)
    return torch.tensor(sorted(keep))


def usable_qrels(qrels: Qrels, doc_ids: list[str], query_ids: list[str]) -> Qrels:
    """The training queries that have an embedding and a judged-relevant embedded document."""
    docs, queries = set(doc_ids), set(query_ids)
    return {q: judged for q, judged in qrels.items()
            if q in queries and any(g > 0 and d in docs for d, g in judged.items())}


def holdout_qrels(qrels: Qrels, doc_ids: list[str], query_ids: list[str],
                  cfg: TrainConfig) -> Qrels:
    """The hold-out of training queries that early stopping (and every hold-out row) uses."""
    usable = usable_qrels(qrels, doc_ids, query_ids)
    return {q: usable[q] for q in holdout_split(usable, cfg.holdout_frac, cfg.seed)[1]}


def _unit(vectors: np.ndarray | None, device: str | torch.device) -> torch.Tensor | None:
    if vectors is None:
        return None
    return F.normalize(torch.from_numpy(np.asarray(vectors, np.float32)).to(device), dim=-1)


def prepare_data(doc_ids: list[str], doc_vecs: np.ndarray, query_ids: list[str],
                 query_vecs: np.ndarray, qrels: Qrels, cfg: TrainConfig,
                 device: str | torch.device = "cpu",
                 teacher: np.ndarray | None = None) -> TrainingData:
    """Tensors for training on ``device``: positives, hard negatives (mined there), and the
    validation hold-out. Row indices stay on the CPU, where batches are sampled. ``teacher``:
    ``train.teacher``'s vectors of the same documents, row for row (None: ``doc_vecs``)."""
    doc_row = {d: i for i, d in enumerate(doc_ids)}
    query_row = {q: i for i, q in enumerate(query_ids)}
    usable = usable_qrels(qrels, doc_ids, query_ids)
    if len(usable) < 2:
        raise ValueError(f"need at least 2 training queries with positive judgements, "
                         f"found {len(usable)}")
    train_ids, val_ids = holdout_split(usable, cfg.holdout_frac, cfg.seed)
    if not train_ids or not val_ids:
        raise ValueError(f"cannot hold out {cfg.holdout_frac:.0%} of {len(usable)} training "
                         "queries as whole groups sharing positives; add training queries")
    corpus = _unit(doc_vecs, device)
    queries = F.normalize(torch.from_numpy(
        np.asarray(query_vecs, np.float32)[[query_row[q] for q in train_ids]]).to(device), dim=-1)
    positives = [[(doc_row[d], g) for d, g in qrels[q].items() if g > 0 and d in doc_row]
                 for q in train_ids]
    # Hard negatives: top of the frozen ranking, minus judged docs, minus the top few (which
    # are often unjudged positives), METHOD.md §1.2. Mined deep enough that the pool stays
    # full after a query's judged documents (hundreds, on some sets) are removed.
    # A query's own document (ArguAna, Quora: same id) is ignored by the metric, so it is no
    # negative either.
    judged = [{doc_row[d] for d in [*qrels[q], q] if d in doc_row} for q in train_ids]
    depths = [cfg.hard_pool + cfg.hard_neg_skip_top + len(j) for j in judged]
    pools = []
    for ranked, judged_rows in zip(top_rows(queries, corpus, depths), judged):
        ranked = [i for i in ranked if i not in judged_rows]
        pools.append(torch.tensor(
            ranked[cfg.hard_neg_skip_top:cfg.hard_neg_skip_top + cfg.hard_pool], dtype=torch.long))
    val_vecs = np.asarray(query_vecs, np.float32)[[query_row[q] for q in val_ids]]
    val_positive_rows = {doc_row[d] for q in val_ids for d, g in qrels[q].items()
                         if g > 0 and d in doc_row}
    val_rows = validation_rows(len(doc_ids), F.normalize(torch.from_numpy(val_vecs).to(device),
                                                         dim=-1),
                               corpus, val_positive_rows, cfg.val_corpus_docs, cfg.seed)
    return TrainingData(corpus, list(doc_ids), queries, positives, pools, val_vecs, val_ids,
                        {q: qrels[q] for q in val_ids}, val_rows,
                        teacher=_unit(_check_rows(teacher, doc_vecs), device))


def _check_rows(teacher: np.ndarray | None, doc_vecs: np.ndarray) -> np.ndarray | None:
    if teacher is not None and len(teacher) != len(doc_vecs):
        raise ValueError(f"the teacher has {len(teacher)} rows for {len(doc_vecs)} documents")
    return teacher


def holdout_overlap(qrels: Qrels, doc_ids: list[str], query_ids: list[str],
                    cfg: TrainConfig) -> dict[str, float]:
    """The share of hold-out positives also trained on, under the grouped hold-out and under a
    random split by hashed query id (what the grouped split avoids; reported by the bench)."""
    usable = usable_qrels(qrels, doc_ids, query_ids)
    ranked = sorted(usable, key=lambda q: zlib.crc32(f"{cfg.seed}:{q}".encode()))
    n_val = max(1, round(cfg.holdout_frac * len(ranked)))
    train_ids, val_ids = holdout_split(usable, cfg.holdout_frac, cfg.seed)
    return {"random_split": positive_overlap({q: usable[q] for q in ranked[n_val:]},
                                             {q: usable[q] for q in ranked[:n_val]}),
            "grouped_split": positive_overlap({q: usable[q] for q in train_ids},
                                              {q: usable[q] for q in val_ids})}


NEIGHBOURS_JUDGED = 10


def prepare_unlabelled_data(doc_ids: list[str], doc_vecs: np.ndarray, cfg: TrainConfig,
                            device: str | torch.device = "cpu",
                            teacher: np.ndarray | None = None) -> TrainingData:
    """Tensors for training on the corpus alone (``supervision: none``).

    ``probe_docs`` documents (hashed by id, so the same for every run) are held out of
    training; each one's top-10 neighbours in the validation sample under the teacher (the
    full-dim model itself, or ``teacher``'s vectors of the same rows) are its "relevant
    documents", and early stopping keeps the epoch whose compressed levels find most of them
    again (recall@10; the probe itself is ignored, as a query's own id is). With the model as
    its own teacher the untouched full-dim level finds them all; an outside teacher's
    neighbours are a target the model itself can miss, and the student can beat."""
    n_docs = len(doc_ids)
    n_probes = min(cfg.probe_docs, max(2, n_docs // 10))
    if n_docs < 2 * NEIGHBOURS_JUDGED + n_probes:
        raise ValueError(f"need at least {2 * NEIGHBOURS_JUDGED + n_probes} documents to train "
                         f"without labels, found {n_docs}")
    corpus = _unit(doc_vecs, device)
    judge = _unit(_check_rows(teacher, doc_vecs), device)
    space = corpus if judge is None else judge
    by_hash = sorted(range(n_docs), key=lambda i: zlib.crc32(f"probe:{cfg.seed}:{doc_ids[i]}"
                                                              .encode()))
    probes = torch.tensor(sorted(by_hash[:n_probes]))
    train_docs = torch.tensor(sorted(by_hash[n_probes:]))
    val_rows = validation_rows(n_docs, space[probes], space, set(probes.tolist()),
                               cfg.val_corpus_docs, cfg.seed)
    probe_ids = [doc_ids[i] for i in probes.tolist()]
    # judged by the search that scores them (its score grid and tie order; a probe's own id is
    # ignored), so the untouched full-dim level finds every judged neighbour again
    nearest = exact_search(space[probes].cpu().numpy(), probe_ids, space[val_rows].cpu().numpy(),
                           [doc_ids[i] for i in val_rows.tolist()], k=NEIGHBOURS_JUDGED)
    val_qrels = {p: dict.fromkeys(trec_order(nearest[p])[:NEIGHBOURS_JUDGED], 1)
                 for p in probe_ids}
    dim = corpus.shape[1]
    return TrainingData(corpus, list(doc_ids), corpus.new_zeros(0, dim), [], [],
                        corpus[probes].cpu().numpy(), probe_ids, val_qrels, val_rows,
                        train_docs=train_docs, val_metric=f"recall_at_{NEIGHBOURS_JUDGED}",
                        teacher=judge)


def sample_batch(data: TrainingData, rows: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates of a query batch, shared in-batch: (doc rows [N], labels [B, N])."""
    n_docs = len(data.corpus)
    picked = []
    for row in rows.tolist():
        pos = data.positives[row]
        take = torch.randperm(len(pos), generator=gen)[:cfg.positives_per_query]
        picked.append(torch.tensor([pos[i][0] for i in take.tolist()]))
        pool = data.hard_pools[row]
        if len(pool) and cfg.hard_negatives:   # an empty pool leaves it to random negatives
            picked.append(pool[torch.randint(len(pool), (cfg.hard_negatives,), generator=gen)])
    picked.append(torch.randint(n_docs, (cfg.random_negatives * len(rows),), generator=gen))
    candidates = torch.unique(torch.cat(picked))
    labels = torch.zeros(len(rows), len(candidates))
    for i, row in enumerate(rows.tolist()):
        docs = torch.tensor([d for d, _ in data.positives[row]])
        grades = torch.tensor([float(g) for _, g in data.positives[row]])
        col = torch.searchsorted(candidates, docs).clamp(max=len(candidates) - 1)
        hit = candidates[col] == docs
        labels[i, col[hit]] = grades[hit]
    return candidates, labels


def sampling_seed(seed: int, stage_no: int, rank: int, resumed_at_step: int = 0) -> int:
    """The seed of a worker's sampling generator (candidates, negatives, Gumbel noise) in one
    stage: distinct per run seed, stage and rank; a worker other than rank 0 resumed at a step
    restarts from a seed of that step (only rank 0's generator state is checkpointed)."""
    return seed * 1000 + stage_no * 100 + rank + 7919 * resumed_at_step


def epoch_order_seed(seed: int, stage_no: int, epoch: int) -> int:
    """The seed of an epoch's order of training queries (documents, label-free), the same on
    every worker: each then takes its own ``rank::world`` share of one permutation."""
    return seed * 7919 + stage_no * 131 + epoch


@dataclass(frozen=True)
class EpochPlan:
    """How one worker walks an epoch.

    Every worker takes the same number of steps (all-reduce needs it): the remainder is
    dropped. The global batch is split over the workers, so N workers take the same steps,
    with the same expected gradient, as one (batch_queries and batch_unlabelled are global
    sizes). Label-free, an epoch is one pass over the training documents in unlabelled
    batches."""

    n_train: int            # training queries (label-free: documents)
    n_used: int             # of them, the ones the workers share evenly
    batch: int              # this worker's rows per step
    unlabelled: int         # this worker's unlabelled documents per step (with labels)
    steps_per_epoch: int

    @classmethod
    def of(cls, data: TrainingData, cfg: TrainConfig, world: int) -> EpochPlan:
        n_train = len(data.train_docs) if data.label_free else len(data.queries)
        n_used = n_train - n_train % world if n_train >= world else n_train
        batch = max(1, (cfg.batch_unlabelled if data.label_free else cfg.batch_queries)
                    // world)
        return cls(n_train, n_used, batch, max(2, cfg.batch_unlabelled // world),
                   math.ceil(math.ceil(n_used / world) / batch))


def draw_batch(data: TrainingData, rows: torch.Tensor, cfg: TrainConfig,
               gen: torch.Generator, n_unlabelled: int) -> tuple:
    """One step's inputs: (the queries of ``rows``, the corpus rows of their candidates,
    labels — ``None`` label-free —, and the rows of the unlabelled documents of the
    unsupervised term, which label-free are ``rows``' own documents)."""
    if data.label_free:
        return None, None, None, data.train_docs[rows]
    candidates, labels = sample_batch(data, rows, cfg, gen)
    if cfg.sxbm_batch == "candidates":   # the documents the rank loss moves
        picked = torch.randperm(len(candidates), generator=gen)[:n_unlabelled]
        unlabelled = candidates[picked.sort().values]
    else:
        unlabelled = torch.unique(torch.randint(len(data.corpus), (n_unlabelled,),
                                                generator=gen))
    return data.queries[rows], candidates, labels.to(data.device), unlabelled


def positions_in(rows: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
    """For each of ``rows``, its position in ``among`` (distinct rows), or −1 where absent."""
    order = torch.argsort(among)
    ordered = among[order]
    at = torch.searchsorted(ordered, rows).clamp(max=max(len(among) - 1, 0))
    hit = (ordered[at] == rows) if len(among) else torch.zeros_like(rows, dtype=torch.bool)
    return torch.where(hit, order[at], torch.full_like(rows, -1))
