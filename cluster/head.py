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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from smec.errors import SmecError
from smec.io import write_json

#: how long `smec cluster up` waits for the head's job agent to answer
AGENT_START_S = 120.0


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


def _processes_of(temp_dir: str, session: int | None = None) -> list[int]:
    """Every live process of the head: those whose command line names ``temp_dir``, those in
    the session ``ray start`` opened (the dashboard and runtime-env agents rename themselves
    ``ray::…`` and the Ray Client server names only the address, so neither matches the
    folder), and every descendant of either (workers, job drivers in their own sessions)."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            # stat: "pid (comm) state ppid pgrp session …"; comm may hold spaces
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(proc.name)] = (cmdline, int(fields[1]), int(fields[3]))
    head = {pid for pid, (cmdline, _, sid) in table.items()
            if cmdline and (temp_dir in cmdline or (session is not None and sid == session))}
    grew = True
    while grew:
        children = {pid for pid, (_, ppid, _) in table.items() if ppid in head} - head
        head |= children
        grew = bool(children)
    return sorted(head)


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _agent_log_tail(temp_dir: str) -> str:
    logs = sorted(Path(temp_dir).glob("session_*/logs/dashboard_agent.log"))
    lines = [l for l in logs[-1].read_text(errors="ignore").splitlines() if l.strip()] if logs else []
    errors = [l for l in lines if "ERROR" in l or "Error" in l]
    return (errors or lines or ["no dashboard_agent.log"])[-1][:300]


def wait_for_job_agent(temp_dir: str, agent_port: int, wait_s: float = AGENT_START_S) -> None:
    """Return once the head's job agent answers on ``agent_port``: the Jobs API refuses every
    submission ("No available agent") until it does, and for good when the agent could not
    bind its port (Ray leaves such an agent alive, without HTTP)."""
    deadline = time.monotonic() + wait_s
    url = f"http://127.0.0.1:{agent_port}/api/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise SmecError(f"the head's job agent did not answer on port {agent_port} within "
                            f"{wait_s:.0f} s, so no job can be submitted; last agent log line: "
                            f"{_agent_log_tail(temp_dir)}")
        time.sleep(1)


def up(num_cpus: int | None = None, object_store_gib: float = 2.0, port: int = 6379,
       dashboard_port: int = 8265) -> dict:
    state = read_state()
    if state and _processes_of(state["temp_dir"], state.get("session")):
        raise SmecError(f"a cluster started by smec is already running ({state['dashboard']}); "
                        "run `smec cluster down` first")
    ray_bin = shutil.which("ray", path=ray_env()["PATH"])
    if ray_bin is None:
        raise SmecError("the `ray` command is not installed; pip install 'ray[default]'")
    temp_dir = tempfile.mkdtemp(prefix="smec-ray-")
    # Ray's fixed defaults (agent 52365, client 10001) are held by any Ray still winding
    # down on this machine; an agent that cannot bind stays up without HTTP and every job
    # submission is refused. Free ports avoid that.
    agent_port, client_port = free_port(), free_port()
    cmd = [ray_bin, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard_port}", f"--num-cpus={num_cpus or os.cpu_count()}",
           f"--object-store-memory={int(object_store_gib * 1024**3)}",
           f"--dashboard-agent-listen-port={agent_port}",
           f"--ray-client-server-port={client_port}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    # its own session, so `down` finds every process of this head (and only those) by it
    starter = subprocess.Popen(cmd, env=ray_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    stdout, stderr = starter.communicate()
    state = {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard_port}",
             "temp_dir": temp_dir, "session": starter.pid, "agent_port": agent_port,
             "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if starter.returncode != 0:
        lines = [l for l in (stderr or stdout).splitlines() if l.strip()]
        _stop(temp_dir, starter.pid)
        raise SmecError(f"ray start failed: {lines[-1] if lines else starter.returncode}")
    write_json(state_path(), state)
    try:
        wait_for_job_agent(temp_dir, agent_port)
    except SmecError:
        down()
        raise
    return state


def _stop(temp_dir: str, session: int | None, timeout_s: float = 20.0) -> int:
    """SIGTERM every process of the head, SIGKILL what is left after ``timeout_s`` (the agents
    ignore SIGTERM); returns how many there were."""
    pids = _processes_of(temp_dir, session)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and set(_processes_of(temp_dir, session)) & set(pids):
        time.sleep(0.5)
    for pid in set(_processes_of(temp_dir, session)) | set(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(pids)


def down(timeout_s: float = 20.0) -> int:
    """Stop the head ``up`` started; returns how many processes were stopped."""
    state = read_state()
    if state is None:
        raise SmecError(f"no cluster started by smec ({state_path()} not found)")
    stopped = _stop(state["temp_dir"], state.get("session"), timeout_s)
    state_path().unlink(missing_ok=True)
    return stopped


def status() -> dict | None:
    state = read_state()
    if state is None:
        return None
    return {**state, "running": bool(_processes_of(state["temp_dir"], state.get("session")))}
