"""A quiet console: Ray's output goes to the run folder's log, smec's own lines stay on screen."""
import json
import subprocess
import sys
import threading
import time

SCRIPT = """
import os, sys
from pathlib import Path
from smec import console
from smec.errors import SmecError
from smec.pipelines.runtime import ray_output
log = Path(sys.argv[1])
with ray_output(log):
    os.write(2, b"core_worker.cc:2465: E from C++\\n")
    print("a worker line the driver prints")
    console.echo("[1/3] smec's phase")
    print("corpus: shard 1/1 written", file=console.progress_stream())
try:
    with ray_output(log):
        raise SmecError("training failed: bad input")
except SmecError as exc:
    console.echo(f"caught: {exc}")
try:
    with ray_output(log.with_name("empty.log")):
        raise SmecError("--seeds must be >= 1")
except SmecError as exc:
    console.echo(f"caught: {exc}")   # Ray wrote nothing: no log to point at
with ray_output(log, verbose=True):
    print("verbose: shown live")
"""


def test_ray_output_goes_to_the_log_and_smec_lines_to_the_terminal(tmp_path):
    log = tmp_path / "run" / "ray.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[1/3] smec's phase", f"caught: training failed: bad input (Ray's log: {log})",
        "caught: --seeds must be >= 1", "verbose: shown live"]
    assert done.stderr.splitlines() == ["corpus: shard 1/1 written"]
    assert log.read_text().splitlines() == ["core_worker.cc:2465: E from C++",
                                            "a worker line the driver prints"]


def test_training_progress_follows_the_workers_metrics_file(tmp_path):
    """One line per finished stage (read while training runs), the time left bounded by the
    epoch budget; the epoch in progress only on a terminal."""
    from smec.pipelines.train import TrainingProgress, follow
    path = tmp_path / "train-progress.jsonl"
    lines: list[str] = []
    shown = TrainingProgress(budget=6, echo=lines.append)
    epochs = [(0, [384], 0, -1, 0.70), (0, [384], 1, 1, 0.72), (1, [192], 0, 0, 0.69)]

    def worker() -> None:
        for stage, dims, epoch, best, score in epochs:
            with path.open("a") as handle:   # as train_func's rank 0 does
                handle.write(json.dumps({"stage": stage, "dims": dims, "epoch": epoch,
                                         "best_epoch": best, "val_score": score,
                                         "val_metric": "ndcg_at_10"}) + "\n")
            time.sleep(0.3)

    with follow(path, shown):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        time.sleep(1.2)   # two polls: read while the block still runs
        assert lines and lines[0].startswith("      stage 1 (384 d): 2 epochs, best 2, "
                                             "hold-out nDCG@10 0.7200; at most ~")
    shown.close()
    assert len(lines) == 2 and lines[1].startswith("      stage 2 (192 d): 1 epochs, best 1")
