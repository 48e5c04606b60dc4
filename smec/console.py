"""Where smec's own lines go: the terminal, even while Ray's output goes to a log file.

:func:`smec.pipelines.runtime.ray_output` points the process's stdout and stderr (file
descriptors 1 and 2: Ray's C++ logs, its workers' output, its warnings) at the run folder's
``ray.log`` and hands the terminal to :func:`use`; phases, shard counts and training progress
print through :func:`echo` and :func:`progress_stream`, so they stay on screen.
"""
from __future__ import annotations

import sys
from typing import TextIO

#: where Ray's own output goes, in the run folder (beside a store or codes folder: NAME.ray.log)
RAY_LOG = "ray.log"

_out: TextIO | None = None
_err: TextIO | None = None


def use(out: TextIO | None, err: TextIO | None) -> None:
    """Send smec's lines to ``out`` / ``err`` (``None``: the process's stdout / stderr)."""
    global _out, _err
    _out, _err = out, err


def echo(*parts: object) -> None:
    """One line of smec's own output (phases, results)."""
    print(*parts, file=_out or sys.stdout, flush=True)


def progress_stream() -> TextIO:
    """Where progress bars and per-shard lines go."""
    return _err or sys.stderr
