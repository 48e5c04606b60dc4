"""The one config schema, validated at the edge (CLI) and passed down as one object.

``smec config`` prints the bundled default (``smec/configs/default.yaml``); copy it, edit it and
pass it with ``--config``. Unknown keys are rejected, so a typo never silently falls back to a
default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from smec.errors import SmecError
from smec.results import check_precision, check_serve_precision
from smec.training.methods import METHODS

#: float32 | float16 | int8 | binary | pqM | opqM (a product quantiser of M bytes per vector)
PrecisionName = Annotated[str, AfterValidator(check_precision)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def model_copy(self, *, update: dict | None = None, deep: bool = False):
        """A copy; with ``update``, validated like a loaded config (pydantic's is not)."""
        if update:
            return type(self).model_validate({**self.model_dump(), **update})
        return super().model_copy(deep=deep)


class ModelConfig(_Section):
    name: str = Field("all-MiniLM-L6-v2", description="registry name or a local "
                      "sentence-transformers folder")
    query_prompt: str = ""
    document_prompt: str = ""
    max_seq_length: int | None = Field(None, gt=0)
    encode_batch_size: int = Field(64, gt=0)


class EmbedConfig(_Section):
    num_actors: int = Field(1, gt=0, description="encoder actors in the Ray Data actor pool")
    num_cpus_per_actor: float = Field(1.0, gt=0, description="fractional is fine; keep the sum "
                                      "below the cluster's CPUs so read/write tasks can run")
    num_gpus_per_actor: float = Field(0.0, ge=0)
    batch_tokens: int | None = Field(None, gt=0, description="padded tokens per model call: "
                                     "the encoder sorts a shard by length and cuts batches of "
                                     "this cost; null: 2048 on a CPU (small batches keep the "
                                     "attention in cache: 1.3x the throughput of 16384), 65536 "
                                     "on a GPU")
    word_cache: bool = Field(True, description="tokenise each distinct word once per worker "
                             "(the same ids as the tokenizer; on real text 1.8-2.2x less CPU "
                             "with a cold cache, 5-7x warm) where the model's tokenizer splits "
                             "on whitespace first; false: the tokenizer on whole texts")
    shard_rows: int | None = Field(None, gt=0, description="input rows per shard (about, for "
                                   "large JSONL: cut by bytes at line breaks); each shard is one "
                                   "output part, written atomically by a worker, and the unit of "
                                   "--resume; null: rows/64 within [1024, 65536]")


#: Each method's own settings over the shared train keys (``train.per_method``), chosen by
#: grouped 2-fold CV on training-query hold-outs of SciFact and ArguAna, scored by the gain
#: over the untrained start at 96/48/24 d, test never read: benchmarks/results/
#: defaults-selection-v2/ (16 settings per method), then `smec tune --cv` with 16 more per
#: method (select-*/; select-smec-rank-scale/: SMEC's pick at the rank_scale MRL chose), then
#: SMEC's S-XBM batch, ADS logit scale and rate, and neighbours as constants (select-smec-*/).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "smec": {"ads_init_scale": 100.0, "ads_lr_mult": 100.0, "alpha": 0.0039,
             "alpha_mode": "share", "batch_unlabelled": 128, "full_dim_stage": False,
             "lr": 0.000136, "max_epochs_per_stage": 10, "patience": 8, "rank_scale": 40.0,
             "sxbm_batch": "corpus", "sxbm_neighbour_grad": False, "sxbm_teacher": "previous",
             "unsup_loss": "smooth"},
    "mrl": {"lr": 0.00017, "max_epochs_per_stage": 15, "rank_scale": 40.0},
    "search_adaptor": {"lr": 0.000112, "max_epochs_per_stage": 15, "patience": 8,
                       "rank_scale": 40.0},
    "matryoshka_adaptor": {"alpha": 0.0079, "lr": 0.00042},
}

#: An ablation trains with the settings of the method it changes one component of (its own
#: ``per_method`` entry wins where it has one), so the rows compare that component alone and
#: not two tunings: ``smec-ads`` is SMEC without ADS; ``mrl+smrl``, ``mrl+ads`` and
#: ``mrl+sxbm`` are MRL with one of SMEC's parts, the last two with SMEC's settings of it.
ABLATION_BASE: dict[str, tuple[str, tuple[str, ...]]] = {
    "smec-ads": ("smec", ()),
    "mrl+smrl": ("mrl", ()),
    "mrl+ads": ("mrl", ("ads_init_scale", "ads_lr_mult")),
    "mrl+sxbm": ("mrl", ("alpha", "alpha_mode", "batch_unlabelled", "unsup_loss", "sxbm_teacher",
                         "sxbm_batch", "sxbm_neighbour_grad")),
}

METHOD_NAMES = tuple(METHODS)


def _compatible(settings: dict[str, Any], teacher: str) -> dict[str, Any]:
    """A method's own settings less those an explicit outside teacher overrides: the teacher
    the user named is what the unsupervised term distils, so a per-method
    ``sxbm_teacher: previous`` (the stage's own start) gives way to it."""
    if teacher == "self":
        return settings
    return {key: value for key, value in settings.items() if key != "sxbm_teacher"}


class TrainConfig(_Section):
    method: Literal[METHOD_NAMES] = Field("smec", description="what `smec train` trains")
    supervision: Literal["auto", "qrels", "pseudo", "none"] = Field(
        "auto", description="qrels: judged training queries; pseudo: (title or sentence -> "
        "document) pairs mined from the corpus; none: the corpus alone (the unsupervised term, "
        "early stopping on neighbour agreement); auto: qrels when the data folder has train "
        "or dev qrels, else label-free")
    pseudo_queries: int = Field(2000, gt=0, description="pseudo: the most pairs mined (a cost "
                                "bound: each epoch is one pass over them)")
    teacher: str = Field(
        "self", description="whose similarities the unsupervised term distils and whose "
        "neighbours the label-free probes must find again: self (the model being compressed), "
        "concat (the concatenation of concat.models, each L2-normalised and weighted 1/sqrt(n), "
        "as `smec concat` builds it) or a registry model name / local model folder. The data "
        "folder is embedded with the teacher once, into OUT/teacher/<teacher>; a deployed "
        "compressor's queries still cost model.name alone")
    probe_docs: int = Field(500, gt=1, description="none: held-out documents whose full-dim "
                            "top-10 neighbours the compressed levels must find again (the "
                            "early-stopping signal without labels)")
    stages: list[int] = Field([192, 96, 48], min_length=1)
    full_dim_stage: bool = True
    adapter: Literal["residual_mlp", "pca_residual", "linear_identity", "mlp", "pca_mlp"] = Field(
        "pca_residual", description="residual_mlp/linear_identity keep the width and start at "
        "the identity; pca_residual keeps the width and starts at the corpus's PCA rotation "
        "(raw cosines at full dim, every prefix a principal-axis projection); pca_mlp starts "
        "at centred PCA, at the input width or decoding to output_dim; mlp decodes to "
        "output_dim (the concat decoder)")
    adapter_hidden: int = Field(512, gt=0)
    output_dim: int | None = Field(None, gt=0, description="decoder width (default: the input "
                                   "dim); levels are prefixes/selections of it")
    loss: Literal["rank", "infonce"] = Field("rank", description="supervised loss: SMEC's "
                                            "pairwise rank loss or InfoNCE")
    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature")
    lr: float = Field(3e-4, gt=0)
    ads_lr_mult: float = Field(10.0, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    max_epochs_per_stage: int = Field(10, gt=0)
    patience: int = Field(4, gt=0)
    batch_queries: int = Field(64, gt=0)
    batch_unlabelled: int = Field(256, gt=1)
    rank_scale: float = Field(20.0, gt=0)
    rank_reduction: Literal["mean_weighted_pair", "sum", "mean_query", "mean_pair"] = Field(
        "mean_weighted_pair", description="mean_weighted_pair: a label-gap-weighted mean over "
        "each query's pairs, so the loss scale (and lr, rank_scale, alpha) does not depend on "
        "the dataset's candidates or positives per query")
    positives_per_query: int = Field(8, gt=0)
    hard_negatives: int = Field(8, ge=0)
    hard_pool: int = Field(100, gt=0)
    hard_neg_skip_top: int = Field(3, ge=0)
    random_negatives: int = Field(8, ge=0)
    ads_init: Literal["positional", "zeros"] = "positional"
    ads_init_scale: float = Field(10.0, ge=0)
    ads_carry_logits: bool = Field(True, description="each ADS stage starts from the previous "
                                   "stage's learned logits of the dims it kept (else from the "
                                   "positional init)")
    tau0: float = Field(1.0, gt=0)
    tau_min: float = Field(0.1, gt=0)
    alpha: float = Field(1.0, ge=0, description="weight of the S-XBM similarity loss (with "
                         "alpha_mode share: its gradient's size as a share of the rank loss's)")
    alpha_mode: Literal["weight", "share"] = Field(
        "weight", description="weight: L_rank + alpha L_unsup (the paper); share: alpha is "
        "rescaled at each epoch's first step so that |grad alpha L_unsup| = alpha |grad L_rank| "
        "(independent of K, the loss form and the data)")
    unsup_loss: Literal["auto", "preserve", "smooth", "distill"] = Field(
        "auto", description="the S-XBM term: preserve (SMEC Eq. 7, |teacher - student| "
        "cosine summed over the top-K neighbours), smooth (its Huber form, averaged over them: "
        "no push where the student agrees) or distill (KL of the softened similarity lists "
        "over the neighbours and the batch: keeps their order); auto: preserve with qrels, "
        "distill label-free (chosen on SciFact's train-query hold-out, "
        "benchmarks/results/label-free-selection)")
    huber_delta: float = Field(0.02, gt=0, description="unsup_loss smooth: where the Huber "
                               "function turns from quadratic to linear (cosine units)")
    sxbm_teacher: Literal["raw", "previous"] = Field(
        "raw", description="the S-XBM targets: the frozen raw cosines (the paper), or those of "
        "the stage's starting point, the previous SMRL stage's snapshot at its level (the "
        "geometry supervision moved to)")
    sxbm_batch: Literal["corpus", "candidates"] = Field(
        "corpus", description="the S-XBM term's documents of a step: random corpus documents "
        "(the paper), or the step's own candidates (the documents the rank loss moves)")
    distill_temperature: float = Field(0.05, gt=0, description="unsup_loss distill: softmax "
                                       "temperature")
    serve_precision: str = Field(
        "float32", description="precision-aware training: the rank loss and the hold-out "
        "score the float query against the documents as they will be served: float32, int8 "
        "(fake quantisation with ranges of the documents in hand, straight-through), binary "
        "(sign/sqrt(d), what the float query is rescored against; tanh relaxation), or pqM "
        "(an M-byte product quantiser fitted on the validation documents before every "
        "epoch; softmax codeword assignment annealed to the nearest; levels whose dims M "
        "does not divide train in float)")
    memory_size: int = Field(5000, gt=0)
    sxbm_neighbour_grad: bool = Field(True, description="S-XBM: train through the neighbours' "
                                      "adapter pass too (false: neighbours are constants, a "
                                      "cheaper step)")
    autocast_bf16: bool = Field(False, description="run the training forward passes in "
                                "bfloat16 autocast (CPUs with AVX512-BF16/AMX, GPUs)")
    neighbours: int = Field(10, gt=0)
    holdout_frac: float = Field(0.1, gt=0, lt=1, description="train queries held out for "
                                "early stopping (never test)")
    val_corpus_docs: int = Field(20000, gt=0, description="the hold-out is scored every epoch "
                                 "against a fixed corpus sample of this size (every hold-out "
                                 "positive, each hold-out query's frozen top 100, random rest); "
                                 "the whole corpus when smaller")
    seed: int = 0
    num_workers: int = Field(1, gt=0, description="Ray Train workers (DDP)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    memory_backend: Literal["local", "actor"] = Field(
        "local", description="S-XBM: a ring buffer per worker, or one Ray actor shared by all "
        "Ray Train workers")
    checkpoint_every_steps: int = Field(0, ge=0, description="also checkpoint every K steps "
                                        "inside a stage (0: only at stage ends)")
    max_failures: int = Field(1, ge=-1, description="worker-group restarts from the last "
                              "checkpoint before the run fails (-1: no limit)")
    per_method: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {m: dict(s) for m, s in METHOD_DEFAULTS.items()},
        description="each method's own defaults (chosen per method on judged training "
                    "queries' hold-outs, so no baseline inherits SMEC's): when that method "
                    "trains on qrels, they replace the shared keys the config leaves at their "
                    "defaults")

    @field_validator("serve_precision")
    @classmethod
    def _servable(cls, precision: str) -> str:
        return check_serve_precision(precision)

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, teacher: str) -> str:
        from smec.encoders import MODEL_SPECS
        if teacher not in ("self", "concat", *MODEL_SPECS) \
                and not Path(teacher).expanduser().is_dir():
            raise ValueError(f"{teacher!r} is not self, concat, a registry model "
                             f"({', '.join(MODEL_SPECS)}) or an existing folder")
        if teacher in ("self", "concat", *MODEL_SPECS):
            return teacher
        return str(Path(teacher).expanduser().resolve())   # the same folder in every worker

    def stage_dims(self, input_dim: int) -> list[int]:
        """The levels a method trains, largest first: ``input_dim`` too with
        ``full_dim_stage``."""
        return ([input_dim] if self.full_dim_stage else []) + list(self.stages)

    def own_settings(self, method: str) -> dict[str, Any]:
        """``method``'s ``per_method`` entry; for an ablation without one, the entry of the
        method it ablates (:data:`ABLATION_BASE`)."""
        if method in self.per_method or method not in ABLATION_BASE:
            return self.per_method.get(method, {})
        base, borrowed = ABLATION_BASE[method]
        return {**self.per_method.get(base, {}),
                **{k: v for k, v in self.per_method.get("smec", {}).items() if k in borrowed}}

    def for_method(self, method: str, supervision: str = "qrels") -> "TrainConfig":
        """The settings ``method`` trains with under ``supervision``: with judged queries its
        ``per_method`` entry replaces each shared key still at its default (a key the config
        or a flag changed wins; label-free training keeps the shared keys, chosen label-free);
        the entry is spent, so applying it twice changes nothing."""
        entry = self.own_settings(method) if supervision == "qrels" else {}
        own = {key: value for key, value in _compatible(entry, self.teacher).items()
               if getattr(self, key) == TrainConfig.model_fields[key].default}
        rest = {m: s for m, s in self.per_method.items() if m != method}
        return self.model_copy(update={**own, "per_method": rest})

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if any(d <= 0 for d in self.stages):
            raise ValueError(f"stages must be positive dims, got {self.stages}")
        if any(a <= b for a, b in zip(self.stages, self.stages[1:])):
            raise ValueError(f"stages must strictly decrease, got {self.stages}")
        if self.teacher != "self" and self.sxbm_teacher == "previous":
            raise ValueError("teacher: an outside teacher needs sxbm_teacher: raw (previous "
                             "distils the stage's own start, not the teacher)")
        if self.tau_min > self.tau0:
            raise ValueError(f"tau_min ({self.tau_min}) must be <= tau0 ({self.tau0})")
        for method, settings in self.per_method.items():
            if method not in METHOD_NAMES:
                raise ValueError(f"per_method: unknown method {method!r}; choose from "
                                 f"{', '.join(METHOD_NAMES)}")
            wrong = sorted(set(settings) - set(TrainConfig.model_fields) | (
                set(settings) & {"method", "per_method"}))
            if wrong:
                raise ValueError(f"per_method.{method}: {wrong[0]!r} is not a train setting")
            try:
                TrainConfig.model_validate({**self.model_dump(exclude={"per_method"}),
                                            **_compatible(settings, self.teacher),
                                            "per_method": {}})
            except ValidationError as exc:
                error = exc.errors()[0]
                raise ValueError(f"per_method.{method}.{_field_path(error['loc'])}: "
                                 f"{error['msg']}") from None
        return self


class EvalConfig(_Section):
    methods: list[Literal["raw", "truncation", "pca", "pca_uncentred", "trained"]] = Field(
        ["raw", "truncation", "pca", "pca_uncentred", "trained"],
        description="baselines to score, and 'trained' for the compressor `smec train` wrote")
    precisions: list[PrecisionName] = Field(
        ["float32"], description="score every level at these precisions too: int8, binary, "
        "pqM / opqM (faiss product quantisers of M bytes, on levels whose dims divide by M); "
        "quantisers calibrated on corpus vectors, saved with the trained compressor")
    rescore_multiplier: int = Field(4, ge=0, description="binary rows are also scored with "
                                    "float-query rescoring of the top 100·r (0: not)")
    recipe_products: list[PrecisionName] = Field(
        ["pq24", "pq48", "pq96"], description="faiss product quantisers the raw vectors are "
        "also scored at on the hold-out, beside the recipe rows, for the recipe check and "
        "`smec plan` (opqM adds OPQ: its rotation search takes ~1 min per fit on 2 cores)")


class DataConfig(_Section):
    train_split: str = Field("train", description="qrels/<name>.tsv to train on (dev.tsv when "
                             "train.tsv is absent), or split-test: a hashed part of the test "
                             "queries trains, the rest is scored")
    test_split: str = "test"
    split_test_frac: float = Field(0.5, gt=0, lt=1, description="split-test: the share of "
                                   "test queries kept for scoring")


TUNABLE = ("tau0", "tau_min", "memory_size", "neighbours", "stages", "max_epochs_per_stage",
           "lr", "ads_lr_mult", "ads_init_scale", "alpha", "batch_queries", "batch_unlabelled",
           "rank_scale", "patience", "weight_decay", "serve_precision", "unsup_loss",
           "alpha_mode", "sxbm_teacher", "sxbm_batch", "sxbm_neighbour_grad", "full_dim_stage")


class SearchDim(_Section):
    """One searched setting: exactly one of ``choice`` / ``uniform`` / ``loguniform``."""

    choice: list | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one(self) -> "SearchDim":
        given = [k for k in ("choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, loguniform (got {given})")
        if self.loguniform is not None and min(self.loguniform) <= 0:
            raise ValueError(f"loguniform bounds must be > 0, got {list(self.loguniform)}")
        return self


class TuneConfig(_Section):
    """``smec tune``: Ray Tune over ``train`` settings, ASHA on the train-query hold-out."""

    space: dict[str, SearchDim] = Field(default_factory=lambda: {
        "tau0": SearchDim(choice=[0.5, 1.0, 2.0]),
        "tau_min": SearchDim(choice=[0.05, 0.1, 0.2]),
        "memory_size": SearchDim(choice=[1000, 5000]),
        "neighbours": SearchDim(choice=[5, 10, 20]),
        "stages": SearchDim(choice=[[192, 96, 48], [96, 48], [192, 48]]),
        "max_epochs_per_stage": SearchDim(choice=[4, 8]),
        "lr": SearchDim(loguniform=(3e-4, 3e-3)),
        "alpha": SearchDim(uniform=(0.25, 2.0))})
    num_samples: int = Field(8, gt=0, description="trials (the first is the train section "
                             "itself when include_default)")
    include_default: bool = Field(True, description="run the `train` section as one trial")
    max_concurrent_trials: int = Field(2, gt=0)
    cpus_per_trial: float = Field(1.0, gt=0)
    grace_period: int = Field(2, gt=0, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: int = Field(2, gt=1)
    seed: int = Field(0, description="search-algorithm seed")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting/running trials "
                                        "after this many seconds (null: no limit)")

    @model_validator(mode="after")
    def _check(self) -> "TuneConfig":
        unknown = sorted(set(self.space) - set(TUNABLE))
        if unknown:
            raise ValueError(f"space: cannot search {unknown}; tunable: {list(TUNABLE)}")
        return self


CONCAT_MODELS = ["all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2", "multilingual-e5-small-q4",
                 "tokenlearn-static-64d"]


class ConcatConfig(_Section):
    """`smec concat`: several small models -> one decoder -> int8 / binary (METHOD.md §5)."""
    models: list[str] = Field(CONCAT_MODELS, min_length=1, description="models to concatenate "
                              "(registry names or local folders); the first is also scored "
                              "as the off-the-shelf binary+rescore floor")
    single_models: list[str] = Field(["all-mpnet-base-v2"], description="extra models scored "
                                     "alone only (the single larger baseline)")
    decoder: Literal["mlp", "pca_mlp"] = Field("pca_mlp", description="mlp: the §5.2 MLP; "
                                              "pca_mlp: the same MLP as a zero-initialised "
                                              "residual on a PCA-initialised projection")
    d_max: int = Field(768, gt=0, description="decoder output width (the largest level)")
    levels: list[int] = Field([384, 192, 96, 48], description="smaller Matryoshka levels")
    hidden: int | None = Field(None, gt=0, description="decoder hidden width (default 2·d_max)")
    schedules: list[Literal["mrl", "smec"]] = Field(["mrl", "smec"], min_length=1,
                                                   description="mrl: parallel MRL loss over "
                                                   "the levels; smec: SMEC's sequential stages")
    loss: Literal["infonce", "rank"] = "infonce"
    alpha: float = Field(1.0, ge=0, description="weight of the S-XBM similarity term "
                         "(train.alpha of the decoder's training)")
    supervision: Literal["qrels", "pseudo", "none"] = Field(
        "qrels", description="what the decoder trains on: the training qrels; pseudo pairs "
        "mined from the corpus (each query and its document without it embedded with every "
        "model); or none, the concatenation's own similarities alone (distilled over the "
        "S-XBM memory's neighbours and the batch)")
    precisions: list[PrecisionName] = ["float32", "int8", "binary"]
    rescore_multiplier: int = Field(4, ge=0, description="binary: rescore the top k·r with "
                                    "the float query (0: no rescored rows)")
    int8_ranges: Literal["percentile", "minmax"] = "percentile"

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "beta" in data:
            raise ValueError("beta was renamed alpha (the weight of the S-XBM term, as "
                             "train.alpha); write alpha instead")
        if isinstance(data, dict) and "binary_threshold" in data:
            raise ValueError("binary_threshold was removed: list binary-median (or "
                             "binary-itq, binary-rotated) in precisions instead")
        return data

    @model_validator(mode="after")
    def _check(self) -> ConcatConfig:
        if any(a <= b for a, b in zip([self.d_max, *self.levels], self.levels)):
            raise ValueError(f"levels must strictly decrease below d_max ({self.d_max}), got "
                             f"{self.levels}")
        if "float32" not in self.precisions:
            raise ValueError("precisions must include float32 (the reference of each level)")
        return self


class CompressConfig(_Section):
    """`smec compress`: compressor actors over a store (or after the encoders, --corpus)."""
    num_actors: int = Field(1, gt=0, description="compressor actors in the Ray Data actor pool")
    num_cpus_per_actor: float = Field(1.0, gt=0)
    num_gpus_per_actor: float = Field(0.0, ge=0, description="> 0 runs the compressor on cuda")
    batch_size: int = Field(8192, gt=0, description="vectors per compressor call")
    calibration_rows: int = Field(10000, gt=0, description="int8, pqM, binary-<fit>: corpus "
                                  "vectors sampled to calibrate (queries never enter)")
    seed: int = Field(0, description="which calibration rows are sampled")


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    embed: EmbedConfig = EmbedConfig()
    compress: CompressConfig = CompressConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    concat: ConcatConfig = ConcatConfig()
    tune: TuneConfig = TuneConfig()


def updated(section: BaseModel, **changes):
    """A copy of a config section with ``changes``, validated."""
    return section.model_copy(update=changes)


def default_config_path() -> Path:
    return Path(__file__).resolve().parent / "configs" / "default.yaml"


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def load_config(path: Path | str | None = None) -> Config:
    """Load and validate a YAML config; any problem becomes one SmecError line."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SmecError(f"{path}: config file not found; `smec config > my.yaml` writes the "
                        "default to start from") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SmecError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise SmecError(f"{path}: the config must be a YAML mapping of sections")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(err["loc"]) or "(top level)"
        got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else ""
        msg = "unknown key; check the spelling against `smec config`" \
            if err["type"] == "extra_forbidden" else err["msg"]
        raise SmecError(f"{path}: {field}: {msg}{got}") from None


def check_stages(cfg: TrainConfig, input_dim: int) -> None:
    """Stages can only be checked once the embedding dim is known."""
    if cfg.stages[0] >= input_dim:
        raise SmecError(f"train.stages: first stage {cfg.stages[0]} must be below the embedding "
                        f"dim {input_dim}")
