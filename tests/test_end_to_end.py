"""End to end on a cut of SciFact-mini: real Ray (Data + Train), the real MiniLM model."""
import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SMALL = """\
train:
  max_epochs_per_stage: 2
  memory_size: 500
  batch_unlabelled: 64
"""


def smec(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "smec.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=900, cwd=cwd)


@pytest.fixture(scope="module")
def demo_run(mini_cut, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    config = root / "small.yaml"
    config.write_text(SMALL)
    out = root / "run"
    result = smec("demo", "--data-dir", mini_cut, "--out", out, "--config", config)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, config, result


def test_demo_writes_results_table_and_plot(demo_run):
    out, _, result = demo_run
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "scifact-cut" and results["split"] == "test"
    assert results["model"] == "all-MiniLM-L6-v2"
    assert set(results["timings_s"]) == {"embed", "train", "evaluate"}
    test_rows = [r for r in results["rows"] if r["split"] == "test"]
    got = {(r["method"], r["dims"]) for r in test_rows}
    assert got == {("raw", 384)} | {(m, d) for m in ("truncation", "pca", "pca_uncentred")
                                  for d in (192, 96, 48)} \
        | {("smec", d) for d in (192, 96, 48)}   # SMEC's own defaults: no full-dim stage
    for row in test_rows:
        provenance = {"trained_on", "supervision", "evaluated_on"} if row["method"] == "smec" \
            else set()
        assert set(row) == {"method", "dims", "precision", "bytes_per_vector", "ndcg_at_10",
                            "recall_at_100", "seed", "split"} | provenance
        assert row["precision"] == "float32" and row["bytes_per_vector"] == 4 * row["dims"]
        assert 0.0 < row["ndcg_at_10"] <= 1.0 and 0.0 < row["recall_at_100"] <= 1.0
    # the hold-out of training queries: the trained levels beside every untrained recipe
    holdout = {(r["method"], r["precision"]) for r in results["rows"] if r["split"] == "holdout"}
    assert {("smec", "float32"), ("raw", "binary"), ("pca", "int8")} <= holdout
    assert "hold-out: " in result.stdout and len(results["recipe_check"]) == 3   # the levels
    raw = next(r for r in test_rows if r["method"] == "raw")
    # a cut with ~300 docs is easy; the frozen model must do clearly better than chance
    assert raw["ndcg_at_10"] > 0.4
    assert (out / "ndcg_vs_bytes.png").stat().st_size > 10_000
    assert "| smec | float32 |" in result.stdout and "output folder:" in result.stdout
    history = json.loads((out / "compressor" / "history.json").read_text())
    assert {d for h in history if "dims" in h for d in h["dims"]} == {192, 96, 48}


def test_demo_console_is_quiet_and_ray_logs_to_the_run_folder(demo_run):
    """Phases, shards, one line per trained stage and the table on screen; Ray's own output
    (token warning, core_worker lines, TrainingReport dumps, model-loading bars) in ray.log."""
    out, _, result = demo_run
    shown = (result.stdout + result.stderr).splitlines()
    assert len(shown) <= 40, "\n".join(shown)
    for noise in ("TrainingReport", "PlacementGroupCleaner", "core_worker", "Loading weights",
                  "WARNING"):
        assert noise not in result.stdout + result.stderr
    stages = [line for line in shown if line.lstrip().startswith("stage ")]
    assert [line.split("(")[1].split(")")[0] for line in stages] == \
        ["192 d", "96 d", "48 d"]
    assert all("hold-out nDCG@10" in line and "left" in line for line in stages)
    log = (out / "ray.log").read_text()
    assert "TrainingReport" in log and "core_worker" in log


def test_embeddings_schema(demo_run, mini_cut):
    import pyarrow as pa
    import pyarrow.parquet as pq
    out, _, _ = demo_run
    table = pq.read_table(next((out / "embeddings" / "corpus").glob("part-*.parquet")))
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    meta = json.loads(table.schema.metadata[b"smec"])
    assert meta["model"] == "all-MiniLM-L6-v2" and meta["dim"] == 384
    ids = table.column("id").to_pylist()
    n_docs = sum(1 for line in open(mini_cut / "corpus.jsonl") if line.strip())
    assert len(ids) == len(set(ids)) == n_docs


def test_two_ray_train_workers_run_the_same_code(demo_run, mini_cut, tmp_path):
    out, _, _ = demo_run
    config = tmp_path / "ddp.yaml"
    config.write_text(SMALL + "  num_workers: 2\n  stages: [96]\n")
    ddp = tmp_path / "ddp"
    shutil.copytree(out / "embeddings", ddp / "embeddings")
    trained = smec("train", "--data-dir", mini_cut, "--out", ddp, "--config", config)
    assert trained.returncode == 0, trained.stderr[-3000:]
    from smec.compressors import load_compressor
    assert [s.dim for s in load_compressor(ddp / "compressor").stages] == [96]


def test_train_and_evaluate_work_alone_on_written_files(demo_run, mini_cut, tmp_path):
    """Relative --out and --config, as a user types them: a Ray Train worker runs in a working
    directory of its own, where ``alone/`` names nothing."""
    out, config, _ = demo_run
    alone = tmp_path / "alone"
    shutil.copytree(out / "embeddings", alone / "embeddings")
    shutil.copy(config, tmp_path / "small.yaml")
    trained = smec("train", "--data-dir", mini_cut, "--out", "alone", "--config", "small.yaml",
                   cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = smec("evaluate", "--data-dir", mini_cut, "--out", "alone", "--config",
                     "small.yaml", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    a = json.loads((out / "results.json").read_text())["rows"]
    b = json.loads((alone / "results.json").read_text())["rows"]
    # same embeddings, same seed, one worker: the same numbers
    key = lambda r: (r["split"], r["method"], r["dims"], r["precision"], r.get("rescore", 0))
    for ra, rb in zip(sorted(a, key=key), sorted(b, key=key)):
        assert key(ra) == key(rb)
        assert ra["ndcg_at_10"] == pytest.approx(rb["ndcg_at_10"], abs=1e-6)


def make_test_only(mini_cut, tmp_path):
    """ArguAna-style copy of ``mini_cut``: only qrels/test.tsv (train judgements moved in)."""
    root = tmp_path / "test-only"
    shutil.copytree(mini_cut, root)
    train = (root / "qrels" / "train.tsv").read_text().splitlines()[1:]
    with (root / "qrels" / "test.tsv").open("a") as handle:
        handle.write("\n".join(train) + "\n")
    (root / "qrels" / "train.tsv").unlink()
    return root


def test_a_test_only_dataset_trains_on_split_test(mini_cut, mini_cut_embeddings, tmp_path):
    """Only qrels/test.tsv. Asked for qrels supervision it says which settings it needs; with
    data.train_split: split-test a hashed part of the test queries trains and the rest is
    scored, rows labelled split-test."""
    root = make_test_only(mini_cut, tmp_path)
    out = tmp_path / "run"
    shutil.copytree(mini_cut_embeddings / "embeddings", out / "embeddings")
    refused = smec("train", "--data-dir", root, "--out", out, "--supervision", "qrels")
    assert refused.returncode == 1 and "data.train_split: split-test" in refused.stderr
    assert "train.supervision: pseudo or none" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    config = tmp_path / "split.yaml"
    config.write_text("data:\n  train_split: split-test\n" + SMALL)
    for command in ("train", "evaluate"):
        done = smec(command, "--data-dir", root, "--out", out, "--config", config)
        assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["split"] == "split-test"
    assert {r["split"] for r in results["rows"]} == {"split-test", "holdout"}
    from smec.data import SPLIT_TEST, resolve_beir_dir
    paths = resolve_beir_dir(root, SPLIT_TEST)
    assert not set(paths.read_train_qrels()) & set(paths.read_test_qrels())


def test_a_folder_without_training_qrels_trains_label_free(mini_cut, mini_cut_embeddings,
                                                           tmp_path):
    """No train/dev qrels and no setting: `smec train` trains label-free in the default mode
    (with `pseudo`, on queries mined from the corpus: titles here), says so in one line, and
    the compressor records it; `smec evaluate` then labels its rows and records both
    datasets."""
    from smec.pipelines.supervision import LABEL_FREE_DEFAULT
    root = make_test_only(mini_cut, tmp_path)
    out = tmp_path / "run"
    shutil.copytree(mini_cut_embeddings / "embeddings", out / "embeddings")
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    done = smec("train", "--data-dir", root, "--out", out, "--config", config)
    assert done.returncode == 0, done.stderr[-3000:]
    notice = [line for line in (done.stdout + done.stderr).splitlines()
              if "training label-free" in line]
    assert len(notice) == 1 and f"supervision {LABEL_FREE_DEFAULT}" in notice[0]
    meta = json.loads((out / "compressor" / "compressor.json").read_text())
    assert meta["trained_on"] == {"dataset": "test-only", "supervision": LABEL_FREE_DEFAULT}
    if LABEL_FREE_DEFAULT == "pseudo":
        pseudo = json.loads((out / "pseudo" / "seed0" / "pseudo.json").read_text())
        assert pseudo["source"] == "title" and pseudo["queries"] > 100
        # each target embedded again without its title: a store of exactly those documents
        from smec.store import read_embeddings
        rewritten, _, _ = read_embeddings(out / "pseudo" / "seed0" / "documents")
        assert len(rewritten) == pseudo["queries"]
    done = smec("evaluate", "--data-dir", root, "--out", out, "--config", config)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    trained = [r for r in rows if r["method"] == f"smec:{LABEL_FREE_DEFAULT}"]
    assert trained and all(r["trained_on"] == r["evaluated_on"] == "test-only" for r in trained)


def test_a_corpus_store_alone_trains_with_supervision_none(mini_cut_embeddings, tmp_path):
    """`smec train --store STORE --supervision none`: no queries, no qrels, no data folder."""
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    out = tmp_path / "corpus-only"
    done = smec("train", "--store", mini_cut_embeddings / "embeddings" / "corpus", "--out", out,
                "--config", config, "--supervision", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "compressor" / "compressor.json").read_text())
    assert meta["trained_on"] == {"dataset": "scifact-cut", "supervision": "none"}
    assert meta["dims"] == [384, 192, 96, 48]
    refused = smec("train", "--store", mini_cut_embeddings / "embeddings" / "corpus", "--out",
                   out, "--supervision", "pseudo")
    assert refused.returncode == 1 and "pass --data-dir" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_label_free_run_learns_from_another_models_neighbours(mini_cut, mini_cut_embeddings,
                                                               tmp_path):
    """`smec train --supervision none --teacher MODEL` through Ray Train with the S-XBM memory
    in a Ray actor: the corpus is embedded with the teacher into OUT/teacher/T (the student's
    queries are not), the actor holds the teacher's width, and the probes are judged by the
    teacher's neighbours, so the untouched full-dim level no longer finds them all."""
    pytest.importorskip("model2vec")
    out = tmp_path / "run"
    shutil.copytree(mini_cut_embeddings / "embeddings", out / "embeddings")
    config = tmp_path / "small.yaml"
    config.write_text(SMALL + "  memory_backend: actor\n")
    done = smec("train", "--data-dir", mini_cut, "--out", out, "--config", config,
                "--supervision", "none", "--teacher", "tokenlearn-static-64d")
    assert done.returncode == 0, done.stderr[-3000:]
    from smec.store import read_columns, read_embeddings
    ids, columns, _ = read_columns(out / "teacher" / "tokenlearn-static-64d" / "embeddings"
                                   / "corpus")
    assert list(columns) == ["embedding:tokenlearn-static-64d"]
    assert sorted(ids) == sorted(read_embeddings(out / "embeddings" / "corpus")[0])
    history = json.loads((out / "compressor" / "history.json").read_text())
    start = [h["val_start"] for h in history if h["dims"] == [384]]
    assert start and start[0] < 0.9   # the model itself misses some of the teacher's neighbours


def test_a_compressor_scores_on_another_dataset(demo_run, mini_cut, tmp_path):
    """`smec evaluate --compressor OTHER_RUN/compressor`: rows say where it was trained and
    where scored; a compressor of another base model is refused in one line."""
    out, config, _ = demo_run
    root = tmp_path / "other-set"
    shutil.copytree(mini_cut, root)
    target = tmp_path / "target"
    shutil.copytree(out / "embeddings", target / "embeddings")
    done = smec("evaluate", "--data-dir", root, "--out", target, "--config", config,
                "--compressor", out / "compressor")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((target / "results.json").read_text())["rows"]
    moved = [r for r in rows if r["method"] == f"smec:from-{mini_cut.name}"]
    assert moved and all(r["trained_on"] == mini_cut.name and r["evaluated_on"] == "other-set"
                         for r in moved)
    ours = {(r["dims"], r["split"]): r["ndcg_at_10"] for r in moved}
    theirs = {(r["dims"], r["split"]): r["ndcg_at_10"]
              for r in json.loads((out / "results.json").read_text())["rows"]
              if r["method"] == "smec"}
    assert ours == pytest.approx({k: theirs[k] for k in ours})   # same vectors, same scores
    other = tmp_path / "other-model"
    shutil.copytree(out / "compressor", other)
    saved = json.loads((other / "compressor.json").read_text())
    saved["inputs"] = [{"name": "paraphrase-MiniLM-L3-v2", "dim": 384}]
    (other / "compressor.json").write_text(json.dumps(saved))
    refused = smec("evaluate", "--data-dir", root, "--out", target, "--compressor", other)
    assert refused.returncode == 1 and "applies only to the model" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
