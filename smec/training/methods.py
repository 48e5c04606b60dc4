"""The method registry: a method is a schedule × a level head × an unsupervised term
(METHOD.md §3). ``train.method`` is validated against :data:`METHODS`' keys."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    """A method = schedule × level head × unsupervised term."""

    schedule: str   # sequential (SMRL) | parallel (MRL) | per_level (one model per level)
    head: str       # prefix | ads | projection
    unsup: str | None   # the unsupervised term: sxbm | matryoshka_adaptor | None (none)


METHODS: dict[str, MethodSpec] = {
    "smec": MethodSpec("sequential", "ads", "sxbm"),
    "mrl": MethodSpec("parallel", "prefix", None),
    "mrl+smrl": MethodSpec("sequential", "prefix", None),
    "mrl+ads": MethodSpec("parallel", "ads", None),
    "mrl+sxbm": MethodSpec("parallel", "prefix", "sxbm"),
    # SMEC with plain truncation in place of ADS: the same adapter, schedule and memory, so
    # smec vs this is ADS vs truncation alone
    "smec-ads": MethodSpec("sequential", "prefix", "sxbm"),
    "matryoshka_adaptor": MethodSpec("parallel", "prefix", "matryoshka_adaptor"),
    "search_adaptor": MethodSpec("per_level", "projection", None),
}

