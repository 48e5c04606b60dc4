"""The training loop: sequential SMRL stages with ADS and the S-XBM loss (METHOD.md §2).

Read top to bottom: :func:`validate` scores the hold-out, :func:`train_stage` is the loop of
one stage (its state a :class:`StageState`, its objective
:class:`smec.losses.CompressionObjective`), and :func:`train_method` runs a method's stages in
a row, each warm-started from the previous snapshot. Everything runs on the device of the
:class:`~smec.training.prepare.TrainingData` (CPU or CUDA): the adapter, the heads, the S-XBM
memory and the objective move there; what leaves the loop (snapshots, exports, checkpoints)
is on the CPU. Runs in a plain process; when a ``torch.distributed`` process group exists
(Ray Train's ``TorchTrainer``: gloo on CPU, nccl on CUDA), gradients are averaged over the
workers and each worker takes its own share of the queries. The S-XBM memory is injected
(:class:`smec.modules.memory.Memory`: the local ring buffer by default, a Ray actor shared by
all workers from ``pipelines/``), and a :class:`Reporter` hears every epoch, step (with a
snapshot for mid-stage checkpoints) and finished stage.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from smec.compressors.adapter import AdapterCompressor, Stage
from smec.config import TrainConfig
from smec.eval import evaluate_vectors
from smec.losses import CompressionObjective, InfoNCELoss, RankLoss
from smec.modules import SXBM, anneal_tau, build_adapter
from smec.modules.heads import ADSHead, PrefixHead, ProjectionHead
from smec.modules.memory import Memory
from smec.modules.serving import ServedDocuments
from smec.training.methods import METHODS
from smec.training.prepare import (
    EpochPlan,
    TrainingData,
    draw_batch,
    epoch_order_seed,
    positions_in,
    sampling_seed,
)


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict: what a snapshot, an export or a checkpoint holds,
    whatever device trained it."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class Reporter:
    """What training tells the world: every epoch's metrics (:meth:`log`), every optimiser
    step (:meth:`step_done`, with ``snapshot()`` building the stage's whole state, which
    ``train_method(..., resume_partial=...)`` continues from) and every finished stage
    (:meth:`stage_done`, with the compressor so far).

    This one keeps the history and nothing else: a plain process. Ray Train's
    (``smec.pipelines.train``) and Ray Tune's (``smec.tune.run``) report and checkpoint too.
    """

    def __init__(self) -> None:
        self.history: list[dict] = []

    def log(self, metrics: dict) -> None:
        self.history.append(metrics)

    def step_done(self, step: int, snapshot: Callable[[], dict]) -> None:
        pass

    def stage_done(self, compressor: AdapterCompressor) -> None:
        pass


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
    _, world = _world()
    if world > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world


@torch.no_grad()
def validate(data: TrainingData, adapter: torch.nn.Module, heads: list[torch.nn.Module],
             target_dim: int | None = None, served: torch.nn.Module | None = None
             ) -> float | tuple[float, float]:
    """Mean over ``heads`` of the hold-out queries' nDCG@10 (no noise); label-free, of the
    probe documents' recall@10 of their full-dim neighbours (``data.val_metric``).

    With ``target_dim``, also the hold-out nDCG@10 of the smallest head cut to ``target_dim``
    dims (its top ADS logits, or its prefix): one number every stage of every schedule can be
    compared on (what Ray Tune's scheduler ranks trials by); ``nan`` for projection heads.
    ``served``: the documents are scored as served (``train.serve_precision``).
    """
    served = served if served is not None else torch.nn.Identity()
    was_training = adapter.training
    adapter.eval()
    h_docs = adapter(data.corpus[data.val_doc_rows])
    h_queries = adapter(torch.from_numpy(data.val_queries).to(data.device))
    adapter.train(was_training)
    doc_ids = [data.doc_ids[i] for i in data.val_doc_rows.tolist()]

    def score(index_or_head) -> float:
        if isinstance(index_or_head, torch.Tensor):
            q = F.normalize(h_queries[:, index_or_head], dim=-1)
            d = F.normalize(h_docs[:, index_or_head], dim=-1)
        else:
            q, d = index_or_head(h_queries), index_or_head(h_docs)
        return evaluate_vectors(q.float().cpu().numpy(), data.val_query_ids,
                                served(d).float().cpu().numpy(), doc_ids,
                                data.val_qrels, k=10)[data.val_metric]

    mean = float(np.mean([score(head) for head in heads]))
    if target_dim is None:
        return mean
    view = _target_view(min(heads, key=lambda h: h.dim), target_dim)
    return mean, (float("nan") if view is None else score(view))


def _target_view(head: torch.nn.Module, target_dim: int) -> torch.Tensor | None:
    """Indices into f(e) of ``head`` cut to ``target_dim`` dims (None: not a dim selection)."""
    if isinstance(head, ADSHead):
        keep = head.ads.logits.detach().topk(min(target_dim, head.dim)).indices.sort().values
        return head.in_index[keep]
    if isinstance(head, PrefixHead):
        return head.index[:target_dim]
    return None


@dataclass
class StageResult:
    """The best epoch of a stage: what becomes its snapshot (and warm-starts the next)."""

    score: float                          # hold-out nDCG@10 (mean over the stage's heads)
    epoch: int                            # -1: the starting point beat every trained epoch
    adapter_state: dict[str, torch.Tensor]
    exports: list[tuple]                  # per head: (kept indices, projection)
    head_states: list[dict[str, torch.Tensor]]

    @classmethod
    def of(cls, score: float, epoch: int, adapter: torch.nn.Module,
           heads: list[torch.nn.Module]) -> StageResult:
        exports = [(None if index is None else index.cpu(), None if proj is None
                    else cpu_copy(proj)) for index, proj in (head.export() for head in heads)]
        return cls(score, epoch, cpu_copy(adapter.state_dict()), exports,
                   [cpu_copy(head.state_dict()) for head in heads])


@dataclass
class StageState:
    """One stage in progress. :meth:`state_dict` is its whole checkpoint (weights, optimiser,
    sampling RNG, position, best epoch so far, gradient statistics, S-XBM memory), and
    ``train_stage(..., partial=...)`` continues from it."""

    stage_no: int
    adapter: torch.nn.Module
    heads: list[torch.nn.Module]
    opt: torch.optim.Optimizer
    gen: torch.Generator
    memory: Memory | None
    best: StageResult | None = None
    epoch: int = 0
    batch: int = 0                        # the next batch of ``epoch``
    step: int = 0
    bad_epochs: int = 0
    grad_sum: list[torch.Tensor] = field(default_factory=list)
    grad_sq: list[torch.Tensor] = field(default_factory=list)
    epoch_steps: int = 0
    epoch_time: float = 0.0
    balance: tuple[float, float] = (float("nan"), float("nan"))   # gradient_balance, per epoch
    alpha: float | None = None            # alpha_mode share: the weight calibrated last
    start_score: float = float("nan")     # the hold-out score before any step (a saturated
    #                                       hold-out, e.g. trivial pseudo pairs, shows there)
    # sxbm_teacher previous: the stage start's unit vectors of every corpus row, the S-XBM
    # targets (derived from the start, so not in the checkpoint)
    teacher_vectors: torch.Tensor | None = None

    def start_epoch(self, epoch: int) -> None:
        """Position at ``epoch``'s first batch, its gradient statistics zeroed (SMEC Fig. 6a/7:
        the adapter-gradient variance per epoch, SMRL vs MRL)."""
        self.epoch, self.batch, self.epoch_steps, self.epoch_time = epoch, 0, 0, 0.0
        self.balance = (float("nan"), float("nan"))
        self.grad_sum = [torch.zeros_like(p) for p in self.adapter.parameters()]
        self.grad_sq = [torch.zeros_like(p) for p in self.adapter.parameters()]

    def count_gradients(self) -> None:
        for p, g_sum, g_sq in zip(self.adapter.parameters(), self.grad_sum, self.grad_sq):
            if p.grad is not None:
                g_sum += p.grad
                g_sq += p.grad ** 2

    def gradient_variance(self) -> float:
        n = max(self.epoch_steps, 1)
        total = sum(((sq / n) - (sm / n) ** 2).sum() for sm, sq in zip(self.grad_sum,
                                                                       self.grad_sq))
        return float(total / sum(p.numel() for p in self.adapter.parameters()))

    def state_dict(self) -> dict:
        return copy.deepcopy({
            "stage_no": self.stage_no, "epoch": self.epoch, "batch": self.batch,
            "step": self.step, "best": self.best, "bad_epochs": self.bad_epochs,
            "grad_sum": self.grad_sum, "grad_sq": self.grad_sq,
            "epoch_steps": self.epoch_steps, "epoch_time": self.epoch_time,
            "balance": self.balance, "alpha": self.alpha, "start_score": self.start_score,
            "adapter": self.adapter.state_dict(),
            "heads": [h.state_dict() for h in self.heads], "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "memory": self.memory.state_dict() if self.memory is not None else None})

    def load_state_dict(self, state: dict, resumed_seed: int | None = None) -> None:
        """``resumed_seed``: restart the sampling RNG from it instead of the saved state (the
        workers other than rank 0, whose generators are not saved)."""
        self.adapter.load_state_dict(state["adapter"])
        for head, head_state in zip(self.heads, state["heads"]):
            head.load_state_dict(head_state)
        self.opt.load_state_dict(state["opt"])
        for key in ("best", "epoch", "batch", "step", "bad_epochs", "grad_sum", "grad_sq",
                    "epoch_steps", "epoch_time"):
            setattr(self, key, state[key])
        # a checkpoint is read onto the CPU; the gradient statistics live with the weights
        devices = [p.device for p in self.adapter.parameters()]
        self.grad_sum = [g.to(d) for g, d in zip(self.grad_sum, devices)]
        self.grad_sq = [g.to(d) for g, d in zip(self.grad_sq, devices)]
        self.balance = state.get("balance", self.balance)
        self.alpha = state.get("alpha")
        self.start_score = state.get("start_score", self.start_score)
        if resumed_seed is None:
            self.gen.set_state(state["gen"])
        else:
            self.gen.manual_seed(resumed_seed)
        if self.memory is not None and state.get("memory") is not None:
            self.memory.load_state_dict(state["memory"])


def gradient_balance(loss_rank: torch.Tensor, weighted_unsup: torch.Tensor,
                     params: list[torch.Tensor]) -> tuple[float, float]:
    """(‖∇ L_rank‖, ‖∇ α·L_unsup‖) over ``params``: how much each term of the objective pushes
    (``nan`` for a term that does not depend on them). The objective's balance is a share of
    the step only where both are of one order."""
    def norm(loss: torch.Tensor) -> float:
        if not loss.requires_grad:
            return float("nan")
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
    return norm(loss_rank), norm(weighted_unsup)


def _optimizer_step(state: StageState, loss: torch.Tensor, params: list[torch.Tensor],
                    grad_clip: float) -> None:
    """Backward, the gradients averaged over the workers and counted, clipped, one step."""
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    _average_grads(params)
    state.count_gradients()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    state.opt.step()


def _optimizer(cfg: TrainConfig, adapter: torch.nn.Module,
               heads: list[torch.nn.Module]) -> torch.optim.Optimizer:
    """AdamW over the adapter and the heads; ADS logits at ``ads_lr_mult`` × lr, no decay."""
    groups = [{"params": list(adapter.parameters()), "lr_mult": 1.0}]
    for head in heads:
        if isinstance(head, ADSHead):
            groups.append({"params": list(head.parameters()), "lr_mult": cfg.ads_lr_mult,
                           "weight_decay": 0.0})
        elif any(True for _ in head.parameters()):
            groups.append({"params": list(head.parameters()), "lr_mult": 1.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def level_vectors(adapter: torch.nn.Module, index: torch.Tensor, corpus: torch.Tensor,
                  chunk: int = 65536) -> torch.Tensor:
    """``unit(adapter(e)[:, index])`` of every corpus row ``[N, len(index)]``: the S-XBM
    teacher of ``sxbm_teacher: previous`` (the stage's starting point at the level it had).
    The snapshot is frozen for the stage, so its vectors are computed once, not per step."""
    return torch.cat([F.normalize(adapter(corpus[i:i + chunk])[:, index], dim=-1)
                      for i in range(0, len(corpus), chunk)])


def _objective(cfg: TrainConfig, data: TrainingData, unsup: str | None) -> CompressionObjective:
    rank_loss = InfoNCELoss(cfg.temperature) if cfg.loss == "infonce" \
        else RankLoss(cfg.rank_scale, cfg.rank_reduction)
    return CompressionObjective(rank_loss, unsup, cfg.alpha, resolved_unsup_loss(cfg, data),
                                cfg.distill_temperature, cfg.neighbours,
                                cfg.sxbm_neighbour_grad, cfg.huber_delta,
                                ServedDocuments(cfg.serve_precision))


def train_step(state: StageState, objective: CompressionObjective, data: TrainingData,
               rows: torch.Tensor, cfg: TrainConfig, unsup: str | None, n_unlabelled: int,
               lr: float, tau: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimiser step on the batch of training ``rows`` (queries; label-free, documents),
    on ``data.device``: sample the heads and the batch, ask the memory, the objective forward,
    its gradient balance at the epoch's first step where each term pushes, backward, step.
    Returns ``(rank loss, unsupervised loss, whether a step was taken)``."""
    params = [p for group in state.opt.param_groups for p in group["params"]]
    for group in state.opt.param_groups:
        group["lr"] = lr * group["lr_mult"]
    samples = [head.sample(tau, state.gen) for head in state.heads]
    queries, candidate_rows, labels, unlabelled = draw_batch(data, rows, cfg, state.gen,
                                                             n_unlabelled)
    candidates = None if candidate_rows is None else data.corpus[candidate_rows]
    e_u = data.corpus[unlabelled]
    t_u = None if data.teacher is None else data.teacher[unlabelled]
    found = shared = None
    if unsup == "sxbm" and state.memory is not None:   # query, then enqueue (the teacher's
        found = state.memory.exchange(e_u if t_u is None else t_u, unlabelled,   # vectors)
                                      cfg.neighbours)
        if found is not None:   # the student reads its own inputs of the neighbours
            ids, inverse, target = found
            # rows the rank loss passes already; the plan needs the ids' values, which meta
            # tensors (the device tests) do not hold: there, two passes
            if candidate_rows is not None and ids.device.type != "meta":
                shared = tuple(positions_in(r.to(candidate_rows.device), candidate_rows)
                               .to(data.device) for r in (unlabelled, ids))
            if state.teacher_vectors is not None:   # the neighbours found by the memory,
                t_u = state.teacher_vectors[unlabelled]      # their targets the stage start's
                target = (t_u[:, None, :] * state.teacher_vectors[ids][inverse]).sum(-1)
            found = (data.corpus[ids], inverse, target)
    # bf16 autocast (train.autocast_bf16): the network passes and losses in bfloat16; the
    # memory's teacher cosines above and AdamW stay in float32
    with torch.autocast(data.device.type, torch.bfloat16) if cfg.autocast_bf16 \
            else contextlib.nullcontext():
        loss, loss_rank, loss_unsup = objective(state.adapter, state.heads, samples, queries,
                                                candidates, labels, e_u, found, t_u, shared)
    if not loss.requires_grad:
        return loss_rank, loss_unsup, False
    if any(math.isnan(norm) and term.requires_grad
           for norm, term in zip(state.balance, (loss_rank, loss_unsup))):
        # the epoch's first step at which each term pushes (the memory fills first)
        pushes = gradient_balance(loss_rank, loss_unsup, params)
        if cfg.alpha_mode == "share" and pushes[1] > 0 and not math.isnan(pushes[0]):
            objective.alpha = state.alpha = cfg.alpha * pushes[0] / pushes[1]
            loss = loss_rank + objective.alpha * loss_unsup
        state.balance = (pushes[0], objective.alpha * pushes[1])
    _optimizer_step(state, loss, params, cfg.grad_clip)
    return loss_rank, loss_unsup, True


def train_stage(data: TrainingData, cfg: TrainConfig, adapter: torch.nn.Module,
                heads: list[torch.nn.Module], unsup: str | None, memory: Memory | None,
                stage_no: int, max_epochs: int, reporter: Reporter,
                partial: dict | None = None, level: torch.Tensor | None = None) -> StageResult:
    """Train ``adapter`` and ``heads`` jointly on :class:`CompressionObjective`.

    One head is one SMRL stage, several heads the parallel Matryoshka schedule. Early stopping
    on the hold-out keeps the best epoch, and the starting point (the identity of a
    zero-initialised adapter, or the previous stage's snapshot) is a candidate too: a stage
    never ships below where it started. The LR restarts its warm-up and cosine decay every
    ``max_epochs_per_stage`` epochs, so a parallel method that early-stops after one cycle
    ended it at a low LR, as every sequential stage does. ``partial`` (a
    :meth:`StageState.state_dict` from ``reporter.step_done``) continues a stage where it
    stopped. ``level``: the dims of ``adapter``'s output the starting point was read at (the
    previous stage's; default all), for ``sxbm_teacher: previous``.
    """
    rank, world = _world()
    objective = _objective(cfg, data, unsup)
    state = StageState(stage_no, adapter, heads, _optimizer(cfg, adapter, heads),
                       torch.Generator().manual_seed(sampling_seed(cfg.seed, stage_no, rank)),
                       memory)
    if unsup == "sxbm" and cfg.sxbm_teacher == "previous":   # the start, before any step
        width = data.corpus.shape[1] if cfg.output_dim is None else cfg.output_dim
        level = torch.arange(width) if level is None else level
        state.teacher_vectors = level_vectors(adapter, level.to(data.device), data.corpus)
    params = [p for group in state.opt.param_groups for p in group["params"]]
    target_dim = min(cfg.stage_dims(cfg.output_dim or data.corpus.shape[1]))

    plan = EpochPlan.of(data, cfg, world)
    total, cycle = plan.steps_per_epoch * max_epochs, plan.steps_per_epoch * min(
        max_epochs, cfg.max_epochs_per_stage)
    state.start_epoch(0)
    if partial is not None:   # the memory is loaded before the broadcast below: in sync
        state.load_state_dict(partial, None if rank == 0 else
                              sampling_seed(cfg.seed, stage_no, rank, partial["step"]))
        objective.alpha = state.alpha if state.alpha is not None else objective.alpha
    _sync_params(params)
    if partial is None:
        state.best = StageResult.of(validate(data, adapter, heads, served=objective.served), -1,
                                    adapter, heads)
        state.start_score = state.best.score
    elif objective.served.pq_bytes:   # resumed: fit the codebooks scoring fits (pqM)
        validate(data, adapter, heads, served=objective.served)
    loss_rank = loss_unsup = data.corpus.new_zeros(())
    lr, tau = lr_at(state.step % cycle, cycle, cfg.lr, cfg.warmup_frac), \
        anneal_tau(state.step, total, cfg.tau0, cfg.tau_min)
    for epoch in range(state.epoch, max_epochs):
        if epoch != state.epoch or partial is None:
            state.start_epoch(epoch)
        partial = None
        epoch_start = time.perf_counter() - state.epoch_time
        perm = torch.randperm(plan.n_train, generator=torch.Generator().manual_seed(
            epoch_order_seed(cfg.seed, stage_no, epoch)))[:plan.n_used][rank::world]
        for batch_no in range(state.batch, math.ceil(len(perm) / plan.batch)):
            rows = perm[batch_no * plan.batch:(batch_no + 1) * plan.batch]
            lr = lr_at(state.step % cycle, cycle, cfg.lr, cfg.warmup_frac)
            tau = anneal_tau(state.step, total, cfg.tau0, cfg.tau_min)
            objective.served.progress = state.step / max(total, 1)
            loss_rank, loss_unsup, stepped = train_step(state, objective, data, rows, cfg, unsup,
                                                        plan.unlabelled, lr, tau)
            if not stepped:   # label-free, while the S-XBM memory is still empty
                continue
            state.step, state.epoch_steps, state.batch = state.step + 1, state.epoch_steps + 1, \
                batch_no + 1
            state.epoch_time = time.perf_counter() - epoch_start
            reporter.step_done(state.step, state.state_dict)
        state.epoch_time = time.perf_counter() - epoch_start

        val, val_target = validate(data, adapter, heads, target_dim, objective.served)
        if val > state.best.score:
            state.best, state.bad_epochs = StageResult.of(val, epoch, adapter, heads), 0
        else:
            state.bad_epochs += 1
        reporter.log({"stage": stage_no, "dims": [h.dim for h in heads], "epoch": epoch,
                      "step": state.step, "loss_rank": float(loss_rank.detach()),
                      "loss_unsup": float(loss_unsup.detach()), "tau": tau, "lr": lr,
                      "val_score": val, "val_score_target": val_target,
                      "val_start": state.start_score,
                      "val_metric": data.val_metric, "target_dim": target_dim,
                      "grad_var": state.gradient_variance(),
                      "grad_norm_rank": state.balance[0], "grad_norm_unsup": state.balance[1],
                      "step_time_s": state.epoch_time / max(state.epoch_steps, 1),
                      "best_epoch": state.best.epoch,
                      "ads_overlap_truncation": _overlap_with_truncation(heads),
                      "memory_fill": memory.filled if memory is not None else 0})
        if state.bad_epochs >= cfg.patience:
            break
    return state.best


def resolved_unsup_loss(cfg: TrainConfig, data: TrainingData) -> str:
    """``cfg.unsup_loss`` with ``auto`` decided: ``preserve`` with judged queries, ``distill``
    label-free (the pipelines resolve pseudo supervision to ``distill`` before training)."""
    if cfg.unsup_loss != "auto":
        return cfg.unsup_loss
    return "distill" if data.label_free or cfg.supervision in ("pseudo", "none") else "preserve"


def _overlap_with_truncation(heads: list[torch.nn.Module]) -> float:
    """Share of ADS-selected dims that plain truncation would also keep (1.0 without ADS)."""
    overlaps = [len(set(h.export()[0].tolist()) & set(h.in_index[:h.dim].tolist())) / h.dim
                for h in heads if isinstance(h, ADSHead)]
    return float(np.mean(overlaps)) if overlaps else 1.0


def _head(kind: str, in_index: torch.Tensor, dim: int, data: TrainingData,
          cfg: TrainConfig, adapter: torch.nn.Module,
          logits: torch.Tensor | None = None) -> torch.nn.Module:
    """A level head; an ADS head starts from ``logits`` (the previous stage's learned ones, for
    the dims it kept) when given, else from the positional init; a projection head from the
    PCA of the adapter's output (what it reads). On ``data.device``."""
    if dim == len(in_index) or kind == "prefix":
        head = PrefixHead(in_index, dim)
    elif kind == "ads":
        head = ADSHead(in_index, dim, cfg.ads_init, cfg.ads_init_scale)
        if logits is not None and cfg.ads_carry_logits:
            with torch.no_grad():
                head.ads.logits.copy_(logits)
    else:
        with torch.no_grad():
            head = ProjectionHead(adapter(data.corpus), dim)
    return head.to(data.device)


def _kept_logits(result: StageResult) -> torch.Tensor | None:
    """The best epoch's ADS logits of the dims it selected, in the order of its export."""
    logits = result.head_states[0].get("ads.logits")
    if logits is None:
        return None
    return logits[logits.topk(result.exports[0][0].numel()).indices.sort().values].clone()


def train_method(data: TrainingData, cfg: TrainConfig, method: str = "smec",
                 reporter: Reporter | None = None, resume: AdapterCompressor | None = None,
                 memory: Memory | None = None,
                 resume_partial: dict | None = None) -> AdapterCompressor:
    """Train one method at the levels ``cfg.stage_dims``, under one epoch budget, on
    ``data.device``.

    Every method gets the same total budget: ``max_epochs_per_stage`` × number of levels.
    Sequential methods spend it stage by stage, each warm-started from the previous snapshot,
    which stays fixed; parallel methods spend it in one stage over all levels; per-level
    methods train one model per level. Finished stages in ``resume`` are kept as they are;
    ``resume_partial`` (a ``reporter.step_done`` snapshot) continues the unfinished stage it
    came from. ``memory`` replaces the local S-XBM ring buffer (e.g. one shared by several
    workers).
    """
    reporter = reporter or Reporter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    spec = METHODS[method]
    if data.label_free and (spec.unsup is None or cfg.alpha <= 0):
        unsupervised = sorted(m for m, s in METHODS.items() if s.unsup is not None)
        raise ValueError(f"method {method} has no unsupervised term to train on without labels"
                         f"{' (alpha is 0)' if spec.unsup is not None else ''}; use one of "
                         f"{', '.join(unsupervised)} with alpha > 0, or supervision: pseudo")
    torch.manual_seed(cfg.seed)
    input_dim = data.corpus.shape[1]
    out_dim = cfg.output_dim or input_dim     # a decoder's width; an adapter keeps input_dim
    dims = cfg.stage_dims(out_dim)
    budget = cfg.max_epochs_per_stage * len(dims)
    compressor = resume or AdapterCompressor(input_dim, [], cfg.adapter, cfg.adapter_hidden,
                                             method, output_dim=out_dim)
    if spec.unsup != "sxbm" or cfg.alpha <= 0:
        memory = None
    elif memory is None:
        memory = SXBM(cfg.memory_size, data.teacher_corpus.shape[1], data.device)

    def partial_for(stage_no: int) -> dict | None:
        return resume_partial if resume_partial is not None \
            and resume_partial["stage_no"] == stage_no else None
    unsup = spec.unsup if cfg.alpha > 0 else None

    def fresh_adapter() -> torch.nn.Module:
        return build_adapter(cfg.adapter, input_dim, cfg.adapter_hidden, out_dim,
                             data.corpus).to(data.device)

    if spec.schedule == "parallel":
        adapter, full = fresh_adapter(), torch.arange(out_dim)
        heads = [_head(spec.head, full, d, data, cfg, adapter) for d in dims]
        result = train_stage(data, cfg, adapter, heads, unsup, memory, 0, budget, reporter,
                             partial_for(0))
        for dim, (index, proj) in zip(dims, result.exports):
            compressor.add_stage(Stage(dim, index, result.adapter_state, proj))
        reporter.stage_done(compressor)
        return compressor

    adapter, in_index, logits = fresh_adapter(), torch.arange(out_dim), None
    if compressor.stages and spec.schedule == "sequential":
        adapter.load_state_dict(compressor.stages[-1].adapter_state)
        in_index, logits = compressor.stages[-1].indices, compressor.stages[-1].ads_logits
    for stage_no, dim in enumerate(dims):
        if compressor.stages and dim >= compressor.stages[-1].dim:
            continue
        if spec.schedule == "per_level":
            adapter, in_index = fresh_adapter(), torch.arange(out_dim)
        head = _head(spec.head, in_index, dim, data, cfg, adapter, logits)
        result = train_stage(data, cfg, adapter, [head], unsup, memory, stage_no,
                             cfg.max_epochs_per_stage, reporter, partial_for(stage_no),
                             level=in_index)
        (index, proj), logits = result.exports[0], _kept_logits(result)
        compressor.add_stage(Stage(dim, index, result.adapter_state, proj, logits))
        adapter.load_state_dict(result.adapter_state)   # the next stage warm-starts from it
        in_index = index if index is not None else torch.arange(out_dim)
        reporter.stage_done(compressor)
    return compressor


def train_smec(data: TrainingData, cfg: TrainConfig, reporter: Reporter | None = None,
               **kwargs) -> AdapterCompressor:
    """SMEC: sequential SMRL stages with ADS and the S-XBM loss (METHOD.md §2)."""
    return train_method(data, cfg, "smec", reporter, **kwargs)
