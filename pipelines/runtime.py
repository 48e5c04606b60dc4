"""Starting or joining Ray, and turning failures inside Ray into one-line SmecErrors."""
from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smec import console
from smec.errors import SmecError


def init_ray(num_cpus: int | None = None, object_store_gib: float = 2.0) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set inside `ray job submit`), else start locally."""
    import ray
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
        return
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             object_store_memory=int(object_store_gib * 1024**3),
             logging_level=logging.WARNING, log_to_driver=True)


def root_cause(exc: BaseException) -> str:
    """The innermost error message of a (Ray-wrapped) exception chain, on one line."""
    outer = exc
    while True:
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    if isinstance(exc, SmecError):
        return str(exc)
    # Ray Data's UserCodeException keeps only its own advice; the worker's error is in the
    # traceback text of the RayTaskError around it, above "The above exception was ...".
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(outer))
    if _CHAINED in text:
        lines = [line for line in text.split(_CHAINED)[0].splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()


_CHAINED = "The above exception was the direct cause of the following exception"


@contextmanager
def ray_output(log: Path, verbose: bool = False) -> Iterator[None]:
    """Ray's output to ``log``, smec's own lines (:mod:`smec.console`) to the terminal.

    Ray writes from places Python cannot reroute (its C++ core worker writes to file descriptor
    2; the driver prints its workers' output to ``sys.stdout``), so descriptors 1 and 2 are
    pointed at ``log`` and the console gets duplicates of the originals. Ray is shut down
    before they are restored, so its exit messages land in the log too. An error raised inside
    names the log when Ray wrote to it; with ``verbose`` nothing is redirected.
    """
    if verbose:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = (os.fdopen(os.dup(saved[0]), "w", buffering=1),
                os.fdopen(os.dup(saved[1]), "w", buffering=1))
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    console.use(*terminal)
    try:
        yield
    except SmecError as exc:
        if log.stat().st_size == 0:   # Ray never started: nothing there to read
            raise
        raise SmecError(f"{exc} (Ray's log: {log})") from None
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        console.use(None, None)
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)
        for stream in terminal:
            stream.close()
