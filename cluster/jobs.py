"""`smec submit` / `smec jobs`: any smec command as a Ray job, through the Jobs SDK."""
from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path

from smec.cluster.head import ray_env, read_state

from smec.errors import SmecError

#: how long `smec submit` waits for a starting head's job agent
AGENT_WAIT_S = 120.0


def dashboard_address(address: str | None) -> str:
    if address:
        return address
    state = read_state()
    if state is None:
        raise SmecError("no cluster address: start one with `smec cluster up` or pass --address "
                        "http://HOST:8265")
    return state["dashboard"]


def _client(address: str | None):
    # Ray reads RAY_AUTH_MODE when it is first imported: set it before any ray import.
    os.environ.update({k: v for k, v in ray_env().items() if k.startswith("RAY_")})
    from ray.job_submission import JobSubmissionClient
    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # connection refused, auth, …
        raise SmecError(f"cannot reach the Ray Jobs API at {url}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def project_root() -> Path | None:
    """The source checkout smec runs from (editable install), uploaded as the working dir."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def submit(entrypoint: list[str], address: str | None = None, wait: bool = True,
           working_dir: Path | None = None) -> int:
    """Submit ``entrypoint`` (e.g. ``["smec", "demo", "--out", "runs/demo"]``); stream its logs
    and return 0 only if the job SUCCEEDED. Relative paths in the command resolve against the
    submitter's folder (``SMEC_SUBMIT_CWD``), not the job's temporary copy of the code."""
    if not entrypoint:
        raise SmecError("nothing to submit: give the command after --, e.g. "
                        "`smec submit -- smec demo --out runs/demo`")
    client = _client(address)
    from ray.job_submission import JobStatus
    env_vars = {k: v for k, v in ray_env().items()
                if k.startswith(("HF_", "TRANSFORMERS_", "RAY_AUTH")) or k == "PATH"}
    env_vars["SMEC_SUBMIT_CWD"] = str(Path.cwd())
    runtime_env: dict = {"env_vars": env_vars}
    working_dir = working_dir or project_root()
    if working_dir is not None:
        runtime_env["working_dir"] = str(working_dir)
    job_id = _submit_when_ready(client, shlex.join(entrypoint), runtime_env)
    print(f"submitted job {job_id} to {dashboard_address(address)}", flush=True)
    if not wait:
        return 0

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    asyncio.run(stream())
    status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


def _submit_when_ready(client, entrypoint: str, runtime_env: dict,
                       wait_s: float = AGENT_WAIT_S) -> str:
    """``client.submit_job``, retried while the head's job agent is still starting: right
    after `smec cluster up` (or on a loaded head) the dashboard answers before its agent does,
    with "No available agent to submit job, please try again later"."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def list_jobs(address: str | None = None) -> list[dict]:
    jobs = _client(address).list_jobs()
    return [{"id": j.submission_id or j.job_id, "status": str(j.status.value if j.status else ""),
             "entrypoint": j.entrypoint} for j in jobs]
