"""Run a benchmark arm in a child process and measure the peak RSS of its whole tree.

Ray's GCS, raylet and workers are descendants of the driver that starts Ray, so the summed RSS
of a child and all its descendants, sampled every 0.2 s, is what the arm costs in memory.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path


def run_child(cmd: list[str], cwd: Path, what: str) -> tuple[dict, int]:
    """Run ``cmd``; (the JSON object on its last stdout line, peak tree RSS in bytes)."""
    result, tree, _ = run_child_peaks(cmd, cwd, what)
    return result, tree


def run_child_peaks(cmd: list[str], cwd: Path, what: str) -> tuple[dict, int, int]:
    """Run ``cmd``; (its last stdout line as JSON, peak tree RSS, peak RSS of the child itself:
    the driver, when the child starts Ray)."""
    import psutil
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    peak = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            total = 0
            try:
                peak[1] = max(peak[1], root.memory_info().rss)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            peak[0] = max(peak[0], total)
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1]), peak[0], peak[1]
