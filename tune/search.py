"""The search space of `smec tune`, read from the config's ``tune.space`` section.

List-valued choices (stage schedules) travel through Tune as JSON strings such as
``"[192, 96, 48]"``: Tune reads lists inside ``points_to_evaluate`` as nested parameter paths.
"""
from __future__ import annotations

import json

from smec.config import TrainConfig, TuneConfig


def encode(value):
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def decode(value):
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def param_space(tune_cfg: TuneConfig) -> dict:
    """``tune.space`` as Ray Tune sampling objects (``choice`` / ``uniform`` / ``loguniform``)."""
    from ray import tune
    space = {}
    for name, dim in tune_cfg.space.items():
        if dim.choice is not None:
            space[name] = tune.choice([encode(v) for v in dim.choice])
        elif dim.uniform is not None:
            space[name] = tune.uniform(*sorted(dim.uniform))
        else:
            space[name] = tune.loguniform(*sorted(dim.loguniform))
    return space


def default_point(tune_cfg: TuneConfig, train: TrainConfig) -> dict:
    """The ``train`` section's own values of the searched settings (the default trial)."""
    return {name: encode(getattr(train, name)) for name in tune_cfg.space}


def trial_train_config(base: dict, overrides: dict) -> TrainConfig:
    """``base`` (a ``train`` section) with a trial's values; τ_min is capped at τ0 (a sampled
    pair may cross), and stage lists come back as lists."""
    merged = {**base, **{k: decode(v) for k, v in overrides.items()}}
    merged["tau_min"] = min(merged["tau_min"], merged["tau0"])
    return TrainConfig(**merged)


def max_epochs(tune_cfg: TuneConfig, train: TrainConfig) -> int:
    """The most epochs any trial can run: ASHA's ``max_t``."""
    stage_lists = tune_cfg.space["stages"].choice if "stages" in tune_cfg.space else None
    n_levels = max(len(s) for s in (stage_lists or [train.stages])) + int(train.full_dim_stage)
    per_stage = tune_cfg.space.get("max_epochs_per_stage")
    if per_stage is None:
        epochs = train.max_epochs_per_stage
    elif per_stage.choice is not None:
        epochs = max(int(e) for e in per_stage.choice)
    else:
        epochs = int(max(per_stage.uniform or per_stage.loguniform))
    return n_levels * epochs


def new_tuner(fn, tcfg: TuneConfig, points: list[dict], scheduler, metric: str, name: str,
              storage: str, callbacks: list | None = None):
    """A Tuner over ``tune.space`` maximising ``metric``: ``points`` first (the default
    trial), then random draws (seeded), ``tcfg.max_concurrent_trials`` at a time."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator
    return tune.Tuner(
        fn, param_space=param_space(tcfg),
        tune_config=tune.TuneConfig(
            metric=metric, mode="max", scheduler=scheduler, num_samples=tcfg.num_samples,
            time_budget_s=tcfg.time_budget_s,
            search_alg=BasicVariantGenerator(points_to_evaluate=points,
                                             max_concurrent=tcfg.max_concurrent_trials,
                                             random_state=tcfg.seed)),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  callbacks=callbacks))
