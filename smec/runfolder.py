"""One run folder (``--out``) and the names of what every job writes into it, and the one
layout of a training checkpoint (:class:`Checkpoint`).

    embeddings/{corpus,queries}/   smec embed (Ray Data)        pseudo/     label-free queries
    compressor/ (+ history.json)   smec train                   compressors/ bench, concat
    results.json, .md, .png        smec evaluate, bench         ray.log     Ray's own output
    gradient_variance.png, mteb/   smec bench                   teacher/    train.teacher's stores
    ray_train/                     Ray Train's checkpoints      timings.json, mlflow.db
    tune/, tune_summary.json,      smec tune
    best_config.yaml, default/
    selection.json, selection.md  smec tune --cv (with tune/ and best_config.yaml)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smec.console import RAY_LOG
from smec.store import read_embeddings


@dataclass(frozen=True)
class Embeddings:
    doc_ids: list[str]
    doc_vecs: np.ndarray
    query_ids: list[str]
    query_vecs: np.ndarray
    meta: dict            # the corpus store's metadata: model, dim, prompt

    def as_tuple(self) -> tuple:
        return self.doc_ids, self.doc_vecs, self.query_ids, self.query_vecs


@dataclass(frozen=True)
class RunFolder:
    """``root`` is made absolute where the folder is named (the driver): every path handed from
    here to a Ray worker, task or actor must mean the same folder in its own working directory."""
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def corpus(self) -> Path:
        return self.embeddings / "corpus"

    @property
    def queries(self) -> Path:
        return self.embeddings / "queries"

    @property
    def compressor(self) -> Path:
        return self.root / "compressor"

    @property
    def history(self) -> Path:
        """The trained compressor's per-epoch training history."""
        return self.compressor / "history.json"

    @property
    def compressors(self) -> Path:
        return self.root / "compressors"

    def bench_compressor(self, label: str, seed: int) -> Path:
        """The compressor `smec bench compression` trained for ``label`` with ``seed``."""
        return self.compressors / label / f"seed{seed}"

    def bench_unit(self, label: str, seed: int) -> Path:
        """What a bench knows of a finished (label, seed): the key of its inputs, its train
        seconds and history; beside the compressor, so a re-run can skip it."""
        return self.compressors / label / f"seed{seed}.json"

    def bench_compressors(self) -> list[tuple[int, Path]]:
        """Every (seed, folder) a bench saved, in label then seed order."""
        found = [(int(path.name.removeprefix("seed")), path)
                 for path in self.compressors.glob("*/seed*")
                 if path.name.removeprefix("seed").isdigit()]
        return sorted(found, key=lambda item: (item[1].parent.name, item[0]))

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def plot(self) -> Path:
        return self.root / "ndcg_vs_bytes.png"

    @property
    def gradient_variance_plot(self) -> Path:
        """`smec bench compression`: MRL's adapter-gradient variance against SMRL's."""
        return self.root / "gradient_variance.png"

    @property
    def mteb(self) -> Path:
        """`smec bench compression --mteb`: MTEB's own result files."""
        return self.root / "mteb"

    @property
    def best_config(self) -> Path:
        """``smec tune``'s best train section, for ``smec train --config``."""
        return self.root / "best_config.yaml"

    @property
    def tune(self) -> Path:
        """``smec tune``'s Ray Tune experiment (restored from here)."""
        return self.root / "tune"

    @property
    def tune_parent_run_id(self) -> Path:
        return self.tune / "mlflow_parent_run_id"

    @property
    def tune_summary(self) -> Path:
        return self.root / "tune_summary.json"

    @property
    def selection(self) -> Path:
        """``smec tune --cv``'s record: every setting's cross-validated score, the pick."""
        return self.root / "selection.json"

    @property
    def selection_table(self) -> Path:
        return self.root / "selection.md"

    @property
    def select_parent_run_id(self) -> Path:
        return self.tune / "select_mlflow_parent_run_id"

    @property
    def default_trial(self) -> RunFolder:
        """``smec tune``: the default config's compressor and test results (its embeddings are
        the parent's)."""
        return RunFolder(self.root / "default")

    def teacher(self, slug: str) -> RunFolder:
        """One teacher's embeddings (``train.teacher``, named by ``smec.teacher.teacher_slug``):
        a run folder of its own, one column per model, which ``smec concat --out
        OUT/teacher/concat`` reuses."""
        return RunFolder(self.root / "teacher" / slug)

    @property
    def pseudo(self) -> Path:
        return self.root / "pseudo"

    def pseudo_set(self, seed: int) -> PseudoSet:
        """The pseudo queries mined with ``seed`` (label-free training, ``supervision:
        pseudo``)."""
        return PseudoSet(self.pseudo / f"seed{seed}")

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def results_table(self) -> Path:
        return self.root / "results.md"

    @property
    def concat_plot(self) -> Path:
        """``smec concat``'s nDCG@10 retained against the compression factor."""
        return self.root / "retained_vs_cf.png"

    @property
    def ray_train(self) -> Path:
        return self.root / "ray_train"

    @property
    def ray_log(self) -> Path:
        return self.root / RAY_LOG

    @property
    def train_progress(self) -> Path:
        return self.root / "train-progress.jsonl"

    @property
    def embed_summary(self) -> Path:
        """``smec embed``'s summary of both stores, written last."""
        return self.embeddings / "embed.json"

    def has_embeddings(self) -> bool:
        """``smec embed`` finished here (it writes ``embed.json`` last)."""
        return self.embed_summary.is_file()

    def load_embeddings(self) -> Embeddings:
        """Both stores, read whole (:func:`smec.store.read_embeddings` reads one, as a
        tuple)."""
        doc_ids, doc_vecs, meta = read_embeddings(self.corpus)
        query_ids, query_vecs, _ = read_embeddings(self.queries)
        return Embeddings(doc_ids, doc_vecs, query_ids, query_vecs, meta)


@dataclass(frozen=True)
class PseudoSet:
    """``pseudo/seedK/``: mined queries (``queries.jsonl``), their judgements (``qrels.tsv``),
    their embedding store (``embeddings/``), their documents with the query taken out
    (``documents.jsonl``) and those documents' store (``documents/``), and ``pseudo.json``,
    written last."""
    root: Path

    @property
    def queries(self) -> Path:
        return Path(self.root) / "queries.jsonl"

    @property
    def qrels(self) -> Path:
        return Path(self.root) / "qrels.tsv"

    @property
    def embeddings(self) -> Path:
        return Path(self.root) / "embeddings"

    @property
    def documents(self) -> Path:
        return Path(self.root) / "documents.jsonl"

    @property
    def document_embeddings(self) -> Path:
        return Path(self.root) / "documents"

    @property
    def info(self) -> Path:
        return Path(self.root) / "pseudo.json"

    def as_run_folder(self) -> RunFolder:
        """Embedded with several models (``smec concat``), a pseudo set is laid out as a run
        folder: ``embeddings/{corpus,queries}``, a column per model."""
        return RunFolder(self.root)


@dataclass(frozen=True)
class Checkpoint:
    """One training checkpoint folder (Ray Train's, a Ray Tune trial's), written and read here
    only: the finished stages (``compressor/``), the training history, the stage in progress
    (``partial.pt``, a :meth:`smec.training.engine.StageState.state_dict`) and a Tune trial's
    MLflow run id."""
    root: Path

    @property
    def compressor(self) -> Path:
        return Path(self.root) / "compressor"

    @property
    def history(self) -> Path:
        return Path(self.root) / "history.json"

    @property
    def partial(self) -> Path:
        return Path(self.root) / "partial.pt"

    @property
    def mlflow_run_id(self) -> Path:
        return Path(self.root) / "mlflow_run_id"

    def write(self, compressor, history: list, partial: dict | None = None,
              mlflow_run_id: str | None = None) -> None:
        if compressor is not None and compressor.stages:
            compressor.save(self.compressor)
        self.history.write_text(json.dumps(history))
        if partial is not None:
            import torch        # here, not at the top: the ETL driver imports this module
            torch.save(partial, self.partial)
        if mlflow_run_id is not None:
            self.mlflow_run_id.write_text(mlflow_run_id)

    def read(self) -> tuple:
        """(the finished stages or ``None``, the history, the stage in progress or ``None``),
        tensors on the CPU whatever device wrote them."""
        import torch

        from smec.compressors import load_compressor
        compressor = load_compressor(self.compressor) if self.compressor.is_dir() else None
        partial = torch.load(self.partial, map_location="cpu", weights_only=False) \
            if self.partial.is_file() else None
        return compressor, json.loads(self.history.read_text()), partial

    def read_mlflow_run_id(self) -> str | None:
        return self.mlflow_run_id.read_text().strip() if self.mlflow_run_id.is_file() else None

