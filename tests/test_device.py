"""The engine trains on the device of its data. PyTorch's ``meta`` device checks devices as
CUDA does (an op mixing a meta tensor with a CPU one fails) but holds no values, so a training
step run there fails for any tensor the step leaves on the CPU, on a machine without a GPU.

The steps use the InfoNCE loss, which needs no values on the host; the rank loss reads its
positive count with one ``.item()`` per step (fine on CUDA, impossible on meta) and creates no
tensor of its own, so it cannot leave one on the wrong device."""
import pytest
import torch
from test_train import TINY, synthetic

from smec.config import TrainConfig
from smec.modules import build_adapter
from smec.modules.memory import SXBM
from smec.training.engine import (
    StageState,
    _head,
    _objective,
    _optimizer,
    train_step,
)
from smec.training.methods import METHODS
from smec.training.prepare import prepare_data, prepare_unlabelled_data

META = torch.device("meta")


class MetaMemory:
    """The S-XBM memory protocol answered on the device it is asked from (the ring buffer's
    own search needs values; it is checked on its own below)."""

    filled = 0

    def exchange(self, feats: torch.Tensor, ids: torch.Tensor, k: int):
        return (ids.to(feats.device),
                torch.zeros(len(feats), k, dtype=torch.long, device=feats.device),
                feats.new_empty(len(feats), k))


def step_on_meta(data, cfg: TrainConfig, method: str) -> StageState:
    spec = METHODS[method]
    adapter = build_adapter(cfg.adapter, 16, cfg.adapter_hidden, 16, data.corpus)
    head = _head(spec.head, torch.arange(16), 8, data, cfg, adapter)   # built from CPU values
    adapter, head, meta = adapter.to(META), head.to(META), data.to(META)
    teacher = torch.empty(len(meta.corpus), 16, device=META) \
        if spec.unsup == "sxbm" and cfg.sxbm_teacher == "previous" else None
    state = StageState(0, adapter, [head], _optimizer(cfg, adapter, [head]),
                       torch.Generator().manual_seed(0), MetaMemory(), teacher_vectors=teacher)
    state.start_epoch(0)
    state.balance = (0.0, 0.0)   # the balance is read as floats once per epoch: not on meta
    rows = torch.arange(len(meta.train_docs) if meta.label_free else len(meta.queries))[:8]
    _, _, stepped = train_step(state, _objective(cfg, meta, spec.unsup), meta, rows,
                               cfg, spec.unsup, 8, 1e-3, 1.0)
    assert stepped
    return state


@pytest.fixture(scope="module")
def labelled():
    doc_ids, docs, query_ids, queries, qrels = synthetic()
    return prepare_data(doc_ids, docs, query_ids, queries, qrels, TrainConfig(**TINY))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_step_of_every_method_stays_on_the_data_device(method, labelled):
    state = step_on_meta(labelled, TrainConfig(**TINY, loss="infonce").for_method(method), method)
    for tensor in [*state.adapter.parameters(), *state.heads[0].parameters(),
                   *state.grad_sum, *(v for s in state.opt.state.values() for v in s.values()
                                      if isinstance(v, torch.Tensor) and v.dim() > 0)]:
        assert tensor.device == META


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_precision_aware_step_stays_on_the_data_device(precision, labelled):
    step_on_meta(labelled, TrainConfig(**TINY, loss="infonce", serve_precision=precision), "mrl")


def test_label_free_step_stays_on_the_data_device():
    doc_ids, docs, *_ = synthetic()
    data = prepare_unlabelled_data(doc_ids, docs, TrainConfig(**TINY, probe_docs=20))
    step_on_meta(data, TrainConfig(**TINY, supervision="none"), "smec")


def test_memory_lives_on_its_device_and_takes_cpu_ids():
    memory = SXBM(8, 4, device=META)
    assert memory.feats.device == META and memory.ids.device == META
    cpu = SXBM(8, 4)
    cpu.exchange(torch.nn.functional.normalize(torch.randn(5, 4), dim=-1), torch.arange(5), 2)
    restored = SXBM(8, 4, device=META)
    restored.load_state_dict(cpu.state_dict())   # a checkpoint read on the CPU
    assert restored.feats.device == META and restored.filled == 5
