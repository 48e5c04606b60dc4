"""A real Ray head on loopback: submit the demo as a job, wait for SUCCEEDED, stop the head."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def smec(*args, env=None, timeout=900, cwd=None):
    return subprocess.run([sys.executable, "-m", "smec.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def live(*pgrep_args):
    """PIDs pgrep finds, zombies left out (they have exited; init reaps them)."""
    out = subprocess.run(["pgrep", *pgrep_args], capture_output=True, text=True).stdout
    return [p for p in out.split()
            if Path(f"/proc/{p}/stat").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


@pytest.fixture
def ray_agent_port_held():
    """Ray's default agent port (52365) held, as a Ray still winding down on the machine
    holds it."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("", 52365))
            holder.listen()
        except OSError:
            pass                                    # held already: the same situation
        yield


def test_cluster_up_submit_demo_jobs_down(mini_cut, tmp_path, ray_agent_port_held):
    """CI's README run failed on a held agent port: an agent that cannot bind stays up without
    HTTP and every submission is refused. And `down` must leave no process of the head
    behind, the renamed agents and the Ray Client server included."""
    env = {**os.environ, "SMEC_HOME": str(tmp_path / "home")}
    up = smec("cluster", "up", "--port", "6391", "--dashboard-port", "8291", env=env)
    assert up.returncode == 0, up.stderr[-2000:]
    state = json.loads((tmp_path / "home" / "cluster.json").read_text())
    assert state["dashboard"] == "http://127.0.0.1:8291"
    try:
        again = smec("cluster", "up", "--port", "6392", "--dashboard-port", "8292", env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        config = tmp_path / "small.yaml"
        config.write_text("train:\n  max_epochs_per_stage: 1\n  memory_size: 300\n"
                          "  batch_unlabelled: 64\n")
        out = tmp_path / "job-out"
        # relative paths mean the submitter's folder, not the job's copy of the code
        job = smec("submit", "--", "smec", "demo", "--data-dir", mini_cut, "--out", "job-out",
                   "--config", "small.yaml", env=env, cwd=tmp_path)
        assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-2000:])
        assert "submitted job" in job.stdout and "SUCCEEDED" in job.stdout
        results = json.loads((out / "results.json").read_text())
        assert {r["method"] for r in results["rows"]} == {"raw", "truncation", "pca",
                                                          "pca_uncentred", "smec"}
        listed = smec("jobs", env=env)
        assert listed.returncode == 0 and "SUCCEEDED" in listed.stdout
        failing = smec("submit", "--", "smec", "train", "--data-dir", tmp_path / "nope",
                       env=env)
        assert failing.returncode == 1 and "FAILED" in failing.stdout
    finally:
        down = smec("cluster", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert live("-f", state["temp_dir"]) == []
    deadline = time.monotonic() + 10
    while live("-s", str(state["session"])) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert live("-s", str(state["session"])) == []
    assert not (tmp_path / "home" / "cluster.json").exists()


def test_submit_waits_for_a_head_whose_job_agent_is_still_starting():
    """Right after `smec cluster up`, or on a loaded head, the Jobs API answers 500 "No
    available agent to submit job, please try again later": submit retries that, and only
    that, until its deadline."""
    from smec.cluster.jobs import _submit_when_ready

    class StartingHead:
        def __init__(self, refusals: int, error: str) -> None:
            self.refusals, self.error, self.calls = refusals, error, 0

        def submit_job(self, entrypoint: str, runtime_env: dict) -> str:
            self.calls += 1
            if self.calls <= self.refusals:
                raise RuntimeError(self.error)
            return "raysubmit_1"

    busy = ("Request failed with status code 500: No available agent to submit job, please "
            "try again later.")
    head = StartingHead(2, busy)
    assert _submit_when_ready(head, "smec demo", {}, wait_s=30) == "raysubmit_1"
    assert head.calls == 3
    other = StartingHead(1, "Request failed with status code 400: bad runtime_env")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        _submit_when_ready(other, "smec demo", {}, wait_s=30)
    assert other.calls == 1
    with pytest.raises(RuntimeError, match="No available agent"):
        _submit_when_ready(StartingHead(99, busy), "smec demo", {}, wait_s=0)


def test_cluster_up_names_the_agent_log_when_the_job_agent_never_answers(tmp_path):
    from smec.cluster.head import free_port, wait_for_job_agent
    from smec.errors import SmecError
    logs = tmp_path / "session_2026" / "logs"
    logs.mkdir(parents=True)
    (logs / "dashboard_agent.log").write_text(
        "INFO agent.py:1 -- starting\nERROR agent.py:2 -- Failed to start HTTP server: "
        "[Errno 98] address already in use\nINFO agent.py:3 -- still alive\n")
    with pytest.raises(SmecError, match=r"did not answer on port \d+ within 2 s.*Errno 98"):
        wait_for_job_agent(str(tmp_path), free_port(), wait_s=2)
