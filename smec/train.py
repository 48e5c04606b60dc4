"""SMEC training: sequential SMRL stages with ADS and the S-XBM loss (METHOD.md §2).

Read top to bottom: :func:`prepare_data` turns cached embeddings and qrels into tensors,
:func:`sample_batch` forms one labelled batch, :func:`train_stage` is the loop of one stage,
and :func:`train_smec` runs the stages in a row, each warm-started from the previous snapshot.
Runs in a plain process; when a ``torch.distributed`` process group exists (Ray Train's
``TorchTrainer``), gradients are averaged over the workers and each worker takes its own
share of the queries.
"""
from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from smec.compressors.smec import SMECCompressor, Stage
from smec.config import TrainConfig
from smec.data import Qrels
from smec.eval import evaluate_vectors
from smec.losses import RankLoss, SimilarityPreservationLoss
from smec.modules import SXBM, AdaptiveDimensionSelection, anneal_tau, build_adapter

Logger = Callable[[dict], None]


@dataclass
class TrainingData:
    corpus: torch.Tensor                 # [Nc, D] L2-normalised original embeddings
    doc_ids: list[str]
    queries: torch.Tensor                # [Nq, D] training queries (hold-out removed)
    positives: list[list[tuple[int, int]]]   # per training query: (doc row, grade > 0)
    hard_pool: torch.Tensor              # [Nq, H] doc rows ranked by original cosine, no qrels
    val_queries: np.ndarray              # hold-out of *train* queries for early stopping
    val_query_ids: list[str]
    val_qrels: Qrels


def split_holdout(query_ids: list[str], frac: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split by hashed id: (train, hold-out)."""
    ranked = sorted(query_ids, key=lambda q: zlib.crc32(f"{seed}:{q}".encode()))
    n_val = max(1, round(frac * len(ranked)))
    return ranked[n_val:], ranked[:n_val]


def prepare_data(doc_ids: list[str], doc_vecs: np.ndarray, query_ids: list[str],
                 query_vecs: np.ndarray, qrels: Qrels, cfg: TrainConfig) -> TrainingData:
    """Tensors for training: positives, mined hard negatives, and the validation hold-out."""
    doc_row = {d: i for i, d in enumerate(doc_ids)}
    query_row = {q: i for i, q in enumerate(query_ids)}
    judged = [q for q, docs in qrels.items()
              if q in query_row and any(g > 0 and d in doc_row for d, g in docs.items())]
    if len(judged) < 2:
        raise ValueError(f"need at least 2 training queries with positive judgements, "
                         f"found {len(judged)}")
    train_ids, val_ids = split_holdout(judged, cfg.holdout_frac, cfg.seed)
    corpus = F.normalize(torch.from_numpy(np.asarray(doc_vecs, np.float32)), dim=-1)
    queries = F.normalize(torch.from_numpy(
        np.asarray(query_vecs, np.float32)[[query_row[q] for q in train_ids]]), dim=-1)
    positives = [[(doc_row[d], g) for d, g in qrels[q].items() if g > 0 and d in doc_row]
                 for q in train_ids]
    # Hard negatives: top of the frozen ranking, minus judged docs, minus the top few (which
    # are often unjudged positives), METHOD.md §1.2.
    depth = min(len(doc_ids), cfg.hard_pool + cfg.hard_neg_skip_top + cfg.positives_per_query)
    top = (queries @ corpus.T).topk(depth, dim=1).indices
    pools = []
    for row, q in enumerate(train_ids):
        judged_rows = {doc_row[d] for d in qrels[q] if d in doc_row}
        ranked = [i for i in top[row].tolist() if i not in judged_rows]
        pool = ranked[cfg.hard_neg_skip_top:cfg.hard_neg_skip_top + cfg.hard_pool] or ranked
        pools.append(pool + [pool[-1]] * (cfg.hard_pool - len(pool)))
    val_rows = [query_row[q] for q in val_ids]
    return TrainingData(corpus, list(doc_ids), queries, positives, torch.tensor(pools),
                        np.asarray(query_vecs, np.float32)[val_rows], val_ids,
                        {q: qrels[q] for q in val_ids})


def sample_batch(data: TrainingData, rows: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates of a query batch, shared in-batch: (doc rows [N], labels [B, N])."""
    n_docs = len(data.corpus)
    picked = []
    for row in rows.tolist():
        pos = data.positives[row]
        take = torch.randperm(len(pos), generator=gen)[:cfg.positives_per_query]
        picked.append(torch.tensor([pos[i][0] for i in take.tolist()]))
        pool = data.hard_pool[row]
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


def lr_at(step: int, total: int, base_lr: float, warmup_frac: float) -> float:
    """Linear warm-up, then cosine decay to zero; restarted every stage."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sync_params(params: list[torch.Tensor]) -> None:
    if _world()[1] > 1:
        for p in params:
            dist.broadcast(p.data, src=0)


def _average_grads(params: list[torch.Tensor]) -> None:
    rank, world = _world()
    if world > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world


@torch.no_grad()
def validate(data: TrainingData, adapter: torch.nn.Module, index: torch.Tensor) -> float:
    """nDCG@10 of the hold-out queries at the level given by ``index`` (no noise)."""
    was_training = adapter.training
    adapter.eval()
    docs = F.normalize(adapter(data.corpus)[:, index], dim=-1).numpy()
    queries = F.normalize(adapter(torch.from_numpy(data.val_queries))[:, index], dim=-1).numpy()
    adapter.train(was_training)
    return evaluate_vectors(queries, data.val_query_ids, docs, data.doc_ids, data.val_qrels,
                            k=10)["ndcg_at_10"]


def train_stage(data: TrainingData, cfg: TrainConfig, adapter: torch.nn.Module,
                in_index: torch.Tensor, dim: int, stage_no: int,
                memory: SXBM | None, log: Logger) -> Stage:
    """One SMRL stage: train ``adapter`` (a copy of the previous snapshot) at level ``dim``.

    The loss is ``L_rank^(dim) + α · L_unsup^(dim)`` only — no other level (SMEC Eq. 5). ADS
    learns which ``dim`` of the previous level's dims to keep. Early stopping on the hold-out
    keeps the best epoch; the returned stage is that snapshot.
    """
    rank, world = _world()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + stage_no * 100 + rank)
    ads = None
    if dim < len(in_index) and cfg.use_ads:
        ads = AdaptiveDimensionSelection(len(in_index), dim, cfg.ads_init, cfg.ads_init_scale)
    groups = [{"params": list(adapter.parameters()), "lr_mult": 1.0}]
    if ads is not None:
        groups.append({"params": [ads.logits], "lr_mult": cfg.ads_lr_mult, "weight_decay": 0.0})
    params = [p for g in groups for p in g["params"]]
    _sync_params(params)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rank_loss = RankLoss(cfg.rank_scale, cfg.rank_reduction)
    unsup_loss = SimilarityPreservationLoss()

    def level_index() -> torch.Tensor:     # noiseless selection into f(e)'s dims
        if ads is not None:
            return in_index[ads.selected()]
        return in_index[:dim]

    def embed(e: torch.Tensor, sample: tuple | None) -> torch.Tensor:
        h = adapter(e)[:, in_index]
        if sample is not None:
            h = h[:, sample[0]] * sample[1]
        elif ads is None:
            h = h[:, :dim]
        return F.normalize(h, dim=-1)

    n_train = len(data.queries)
    per_rank = math.ceil(n_train / world)
    steps_per_epoch = math.ceil(per_rank / cfg.batch_queries)
    total = steps_per_epoch * cfg.max_epochs_per_stage
    best = (-1.0, None, None)
    bad_epochs, step = 0, 0
    for epoch in range(cfg.max_epochs_per_stage):
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(
            cfg.seed * 7919 + stage_no * 131 + epoch))[rank::world]
        for start in range(0, len(perm), cfg.batch_queries):
            rows = perm[start:start + cfg.batch_queries]
            lr = lr_at(step, total, cfg.lr, cfg.warmup_frac)
            tau = anneal_tau(step, total, cfg.tau0, cfg.tau_min)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_mult"]
            sample = ads.sample(tau, gen) if ads is not None else None

            candidates, labels = sample_batch(data, rows, cfg, gen)
            zq = embed(data.queries[rows], sample)
            zc = embed(data.corpus[candidates], sample)
            loss_rank = rank_loss(zq @ zc.T, labels)
            loss_unsup = torch.zeros(())
            unlabelled = torch.randint(len(data.corpus), (cfg.batch_unlabelled,), generator=gen)
            if memory is not None and memory.filled >= cfg.neighbours:
                pool, nbr, teacher = memory.neighbours(data.corpus[unlabelled], unlabelled,
                                                       cfg.neighbours)
                used, inverse = torch.unique(nbr, return_inverse=True)
                z_self = embed(data.corpus[unlabelled], sample)
                z_nbr = embed(pool[used], sample)[inverse]              # [B_u, K, d]
                student = (z_self[:, None, :] * z_nbr).sum(-1)
                loss_unsup = unsup_loss(teacher, student)
            loss = loss_rank + cfg.alpha * loss_unsup

            opt.zero_grad(set_to_none=True)
            loss.backward()
            _average_grads(params)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if memory is not None:
                memory.enqueue(data.corpus[unlabelled], unlabelled)
            step += 1

        index = level_index()
        val = validate(data, adapter, index)
        overlap = len(set(index.tolist()) & set(in_index[:dim].tolist())) / dim
        log({"stage": stage_no, "dim": dim, "epoch": epoch, "step": step,
             "loss_rank": loss_rank.item(), "loss_unsup": loss_unsup.item(), "tau": tau,
             "lr": lr, "val_ndcg_at_10": val, "ads_overlap_truncation": overlap,
             "memory_fill": memory.filled if memory is not None else 0})
        if val > best[0]:
            best = (val, copy.deepcopy(adapter.state_dict()), index.clone())
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    return Stage(dim, best[2], best[1])


def stage_dims(cfg: TrainConfig, input_dim: int) -> list[int]:
    return ([input_dim] if cfg.full_dim_stage else []) + list(cfg.stages)


def train_smec(data: TrainingData, cfg: TrainConfig,
               log: Logger = lambda metrics: None,
               on_stage_end: Callable[[SMECCompressor], None] = lambda compressor: None,
               resume: SMECCompressor | None = None) -> SMECCompressor:
    """Run the SMRL stages in order; finished stages (from ``resume``) are kept as they are."""
    torch.manual_seed(cfg.seed)
    input_dim = data.corpus.shape[1]
    dims = stage_dims(cfg, input_dim)
    compressor = resume or SMECCompressor(input_dim, [], cfg.adapter, cfg.adapter_hidden)
    adapter = build_adapter(cfg.adapter, input_dim, cfg.adapter_hidden)
    in_index = torch.arange(input_dim)
    if compressor.stages:
        last = compressor.stages[-1]
        adapter.load_state_dict(last.adapter_state)
        in_index = last.indices
    memory = SXBM(cfg.memory_size, input_dim) if cfg.use_sxbm and cfg.alpha > 0 else None
    for stage_no, dim in enumerate(dims):
        if stage_no < len(compressor.stages) or (compressor.stages and
                                                 dim >= compressor.stages[-1].dim):
            continue
        stage = train_stage(data, cfg, adapter, in_index, dim, stage_no, memory, log)
        compressor.add_stage(stage)
        adapter.load_state_dict(stage.adapter_state)   # next stage warm-starts from the best
        in_index = stage.indices
        on_stage_end(compressor)
    return compressor
