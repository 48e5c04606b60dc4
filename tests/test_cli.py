"""The CLI's contract on bad input: exit 1, one line on stderr naming what to fix, no output."""
import subprocess
import sys
from pathlib import Path


def smec(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "smec.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smec: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_every_command():
    result = smec("--help")
    assert result.returncode == 0
    for command in ("demo", "embed", "train", "evaluate", "config", "report"):
        assert command in result.stdout
    for command in ("demo", "embed", "train", "evaluate"):
        sub = smec(command, "--help")
        assert sub.returncode == 0 and "--data-dir" in sub.stdout and "--out" in sub.stdout


def test_missing_data_dir(tmp_path):
    result = smec("demo", "--data-dir", tmp_path / "nope", "--out", tmp_path / "out")
    assert_one_line_error(result, "nope", "data folder not found")
    assert not (tmp_path / "out").exists()


def test_malformed_corpus_stops_before_ray_and_writes_nothing(tiny_beir, tmp_path):
    corpus = tiny_beir / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + '{"_id": "bad", "text": \n')
    out = tmp_path / "out"
    result = smec("embed", "--data-dir", tiny_beir, "--out", out)
    assert_one_line_error(result, f"{corpus}:7", "invalid JSON")
    assert not (out / "embeddings").exists()


def test_unknown_model_path(tiny_beir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: {tmp_path / 'no-such-model'}\n")
    result = smec("embed", "--data-dir", tiny_beir, "--out", tmp_path / "out", "--config", config)
    assert_one_line_error(result, "model.name", "no-such-model")


def test_invalid_config_value(tiny_beir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  memory_size: 0\n")
    result = smec("demo", "--data-dir", tiny_beir, "--out", tmp_path / "out", "--config", config)
    assert_one_line_error(result, str(config), "train.memory_size", "greater than 0")


def test_train_without_embeddings(tiny_beir, tmp_path):
    result = smec("train", "--data-dir", tiny_beir, "--out", tmp_path / "out")
    assert_one_line_error(result, "no embeddings found", "smec embed")


def test_config_prints_a_valid_default(tmp_path):
    result = smec("config")
    assert result.returncode == 0
    path = tmp_path / "copy.yaml"
    path.write_text(result.stdout)
    from smec.config import Config, load_config
    assert load_config(path) == Config()


def test_a_bad_test_qrels_line_stops_demo_before_embedding(tiny_beir, tmp_path):
    """The test qrels used to be read only at evaluation, after embedding and training."""
    qrels = tiny_beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q3\td1\tmaybe\n")
    result = smec("demo", "--data-dir", tiny_beir, "--out", tmp_path / "out")
    assert_one_line_error(result, "test.tsv:4:", "score 'maybe' is not an integer grade")
    assert not (tmp_path / "out" / "embeddings").exists()


def test_every_path_option_is_absolute_against_the_callers_folder(tmp_path, monkeypatch):
    """Ray workers run in folders of their own: a relative path must not reach them."""
    from smec.cli import absolute_paths, build_parser
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMEC_SUBMIT_CWD", raising=False)
    args = absolute_paths(build_parser().parse_args(
        ["train", "--out", "runs/x", "--config", "c.yaml", "--mlflow-uri", "sqlite:///m.db"]))
    assert args.out == tmp_path / "runs/x" and args.config == tmp_path / "c.yaml"
    assert args.mlflow_uri == f"sqlite:///{tmp_path / 'm.db'}"
    args = absolute_paths(build_parser().parse_args(["plan", "--bytes-per-vector", "48",
                                                     "a/results.json", "/abs/results.json"]))
    assert args.results == [tmp_path / "a/results.json", Path("/abs/results.json")]
    monkeypatch.setenv("SMEC_SUBMIT_CWD", "/submitted/from")   # inside `smec submit`
    args = absolute_paths(build_parser().parse_args(["compress", "--store", "s", "--compressor",
                                                     "c", "--dims", "8", "--out", "o"]))
    assert (args.store, args.out) == (Path("/submitted/from/s"), Path("/submitted/from/o"))
