"""A real single-node Ray head for smec jobs: start, stop (only what we started), status.

The head binds its dashboard / Jobs API to 127.0.0.1 and keeps Ray's token authentication on
(Ray's other ports cannot be held to loopback, so the token is the protection). Each head gets
its own ``--temp-dir``; ``down`` stops exactly the processes whose command line names it, so a
Ray that something else started on the machine is left alone.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smec.errors import SmecError
from smec.io import write_json


def state_path() -> Path:
    return Path(os.environ.get("SMEC_HOME", Path.home() / ".smec")) / "cluster.json"


def read_state() -> dict | None:
    path = state_path()
    return json.loads(path.read_text()) if path.is_file() else None


def ray_env() -> dict[str, str]:
    """Environment for Ray's CLI and the jobs it runs: token auth, no usage stats, the hub off,
    and this interpreter's bin first on PATH so jobs find the same `smec`."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _processes_of(temp_dir: str) -> list[int]:
    """PIDs whose command line mentions ``temp_dir`` (every process of that Ray session)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if temp_dir in cmdline:
            pids.append(int(proc.name))
    return pids


def up(num_cpus: int | None = None, object_store_gib: float = 2.0, port: int = 6379,
       dashboard_port: int = 8265) -> dict:
    state = read_state()
    if state and _processes_of(state["temp_dir"]):
        raise SmecError(f"a cluster started by smec is already running ({state['dashboard']}); "
                        "run `smec cluster down` first")
    ray_bin = shutil.which("ray", path=ray_env()["PATH"])
    if ray_bin is None:
        raise SmecError("the `ray` command is not installed; pip install 'ray[default]'")
    temp_dir = tempfile.mkdtemp(prefix="smec-ray-")
    cmd = [ray_bin, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard_port}", f"--num-cpus={num_cpus or os.cpu_count()}",
           f"--object-store-memory={int(object_store_gib * 1024**3)}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    result = subprocess.run(cmd, env=ray_env(), capture_output=True, text=True)
    if result.returncode != 0:
        lines = [l for l in (result.stderr or result.stdout).splitlines() if l.strip()]
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise SmecError(f"ray start failed: {lines[-1] if lines else result.returncode}")
    state = {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard_port}",
             "temp_dir": temp_dir, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(state_path(), state)
    return state


def down(timeout_s: float = 20.0) -> int:
    """Stop the head ``up`` started; returns how many processes were stopped."""
    state = read_state()
    if state is None:
        raise SmecError(f"no cluster started by smec ({state_path()} not found)")
    pids = _processes_of(state["temp_dir"])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _processes_of(state["temp_dir"]):
        time.sleep(0.5)
    for pid in _processes_of(state["temp_dir"]):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state_path().unlink(missing_ok=True)
    shutil.rmtree(state["temp_dir"], ignore_errors=True)
    return len(pids)


def status() -> dict | None:
    state = read_state()
    if state is None:
        return None
    return {**state, "running": bool(_processes_of(state["temp_dir"]))}
