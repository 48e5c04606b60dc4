"""`smec` is the only top-level import name, and the library never imports Ray."""
import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = ("smec.pipelines", "smec.tune", "smec.cluster")   # the Ray jobs, not the library


def test_installed_distribution_has_one_top_level_name():
    names = importlib.metadata.distribution("smec").read_text("top_level.txt").split()
    assert names == ["smec"]


@pytest.mark.slow
def test_wheel_holds_only_smec(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, timeout=600,
                   capture_output=True)
    wheel = next(tmp_path.glob("smec-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"smec", wheel.name.split("-py")[0] + ".dist-info"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    assert "smec/pipelines/compress.py" in names and "smec/tune/run.py" in names


def test_importing_the_library_leaves_ray_out():
    code = f"""
import pkgutil, sys, smec
for module in pkgutil.walk_packages(smec.__path__[:1], "smec."):
    if not module.name.startswith({JOBS!r}):
        __import__(module.name)
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(len([m for m in sys.modules if m.startswith("smec.")]), loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) >= 20 and loaded.strip() == "[]", result.stdout


def test_run_folder_names_are_spelled_only_in_runfolder():
    """Every file and folder a job writes into a run folder is named once, in
    smec/runfolder.py: no job joins one of those names onto a path by hand (BEIR's own
    corpus.jsonl/queries.jsonl, in smec/data.py, are the input folder's, not the run's)."""
    import re
    source = (REPO / "smec" / "runfolder.py").read_text()
    names = {n for n in re.findall(r'"([A-Za-z_][\w.-]*)"', source)} - {"cpu"}
    assert {"results.json", "compressor", "embeddings", "mlflow.db", "teacher"} <= names
    spelled = []
    for folder in ("smec", "pipelines", "tune", "cluster"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "runfolder.py" or path.relative_to(REPO).as_posix() == "smec/data.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for name in names:
                    if re.search(rf"""/\s*["']{re.escape(name)}["']""", line):
                        spelled.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not spelled, spelled


def test_the_etl_driver_does_not_import_torch():
    """The embed job's driver plans shards and counts rows: torch (~200 MB of RSS) belongs in
    the encoder actors only (it crept in once through smec.runfolder)."""
    code = "import sys, smec.pipelines.embed; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
