"""The README's commands, run as a new user runs them: every ```bash block, verbatim and in
order, in one shell, from the root of a fresh copy of the checkout, starting with its fresh venv.

The run folder is the default relative ``runs/<dataset>`` and every path in the blocks is
relative, so a path that a Ray worker, task or actor resolves against its own working directory
fails here (it did: ``smec demo`` lost ``runs/scifact-mini`` inside the Ray Train worker).

Skipped: the test command only (``.ci/run`` runs that line itself). A README command that does
not run is a failing build.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(readme: str, ci_script: str) -> list[tuple[int, str]]:
    """(line number, text) of every ```bash block to run, in order."""
    ci_lines = {line.strip() for line in ci_script.splitlines()}
    blocks, lines, i = [], readme.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            is_test_command = all(line.strip() in ci_lines for line in body if line.strip())
            if not is_test_command:
                blocks.append((start + 1, "\n".join(body)))
        i += 1
    return blocks


def test_readme_blocks_are_found_and_the_test_command_is_left_to_ci():
    readme = (ROOT / "README.md").read_text()
    blocks = readme_blocks(readme, (ROOT / ".ci" / "run").read_text())
    assert blocks[0][1].endswith("smec demo")          # the main command comes first
    assert not any("pytest" in text for _, text in blocks)
    assert any("smec search" in text for _, text in blocks)


def fresh_copy(dest: Path) -> Path:
    """The checkout's files as a fresh clone has them (tracked + new, nothing ignored)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_readme_commands_run_verbatim_from_a_fresh_copy(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    clone = fresh_copy(tmp_path / "clone")
    blocks = readme_blocks((clone / "README.md").read_text(), (clone / ".ci" / "run").read_text())
    script = ["set -euo pipefail"]
    for line, text in blocks:
        script += [f"echo '::: README.md line {line}'", text]
    (tmp_path / "readme.sh").write_text("\n".join(script) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               SMEC_HOME=str(tmp_path / "smec-home"))
    done = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=3600)
    output = done.stdout + done.stderr
    where = re.findall(r"::: (README.md line \d+)", done.stdout)
    assert done.returncode == 0, f"failed in {where[-1] if where else '?'}:\n{output[-4000:]}"
    run = clone / "runs" / "scifact-mini"
    results = json.loads((run / "results.json").read_text())
    assert {r["method"] for r in results["rows"]} >= {"raw", "pca", "smec"}
    for made in ("codes-48-int8", "encoder-48", "index-48-int8", "run.tsv"):
        assert (run / made).exists(), made
    assert (clone / "runs" / "mine" / "compressor").is_dir()
