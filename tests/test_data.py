
import pytest

from smec.data import iter_corpus, load_qrels, load_queries, resolve_beir_dir
from smec.errors import SmecError


def test_loads_tiny_folder(tiny_beir):
    paths = resolve_beir_dir(tiny_beir)
    docs = dict(iter_corpus(paths.corpus))
    assert docs["d0"] == "title 0 text of document 0"
    assert load_queries(paths.queries)["q1"] == "query 1"
    assert load_qrels(paths.train_qrels) == {"q0": {"d0": 1}, "q1": {"d1": 2}}


@pytest.mark.parametrize("bad_line, reason", [
    ('{"_id": "x", "text": ', "invalid JSON"),
    ('{"title": "t", "text": "no id"}', "missing '_id'"),
    ('{"_id": "d0", "text": "dup"}', "duplicate document id 'd0'"),
    ('{"_id": "e", "title": "", "text": "  "}', "empty title and text"),
    ('["not", "an", "object"]', "expected a JSON object"),
])
def test_malformed_corpus_line_names_file_and_line(tiny_beir, bad_line, reason):
    corpus = tiny_beir / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines.insert(3, bad_line)                     # becomes line 4
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(SmecError) as err:
        list(iter_corpus(corpus))
    assert f"{corpus}:4:" in str(err.value)
    assert reason in str(err.value)


def test_non_utf8_line(tiny_beir):
    corpus = tiny_beir / "corpus.jsonl"
    corpus.write_bytes(corpus.read_bytes() + b'{"_id": "z", "text": "caf\xe9"}\n')
    with pytest.raises(SmecError, match=r"corpus.jsonl:7: not valid UTF-8"):
        list(iter_corpus(corpus))


def test_malformed_qrels_line(tiny_beir):
    qrels = tiny_beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q9\td9\n")
    with pytest.raises(SmecError, match=r"test.tsv:4: expected 3 tab-separated fields"):
        load_qrels(qrels)


def test_crlf_qrels_are_accepted(tiny_beir):
    qrels = tiny_beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("\n", "\r\n"))
    assert load_qrels(qrels) == {"q2": {"d2": 1}, "q3": {"d3": 1}}


def test_missing_folder_and_files(tmp_path, tiny_beir):
    with pytest.raises(SmecError, match="data folder not found"):
        resolve_beir_dir(tmp_path / "nope")
    (tiny_beir / "queries.jsonl").unlink()
    with pytest.raises(SmecError, match="queries.jsonl: file not found"):
        resolve_beir_dir(tiny_beir)


def test_dev_split_trains_when_no_train(tiny_beir):
    (tiny_beir / "qrels" / "train.tsv").rename(tiny_beir / "qrels" / "dev.tsv")
    assert resolve_beir_dir(tiny_beir).train_qrels.name == "dev.tsv"


def test_bundled_mini_set_is_complete():
    paths = resolve_beir_dir(None)
    assert paths.name == "scifact-mini"
    assert sum(1 for _ in iter_corpus(paths.corpus)) == 2167
    assert len(load_qrels(paths.test_qrels)) == 300
    assert (paths.root / "LICENSE.md").is_file()


def test_training_on_the_test_qrels_is_refused(tiny_beir):
    with pytest.raises(SmecError, match=r"test.tsv is also the test qrels .*split-test"):
        resolve_beir_dir(tiny_beir, train_split="test")


def test_qrels_sharing_query_ids_are_refused_before_anything_runs(tiny_beir):
    from smec.data import check_inputs
    train = tiny_beir / "qrels" / "train.tsv"
    train.write_text(train.read_text() + "q2\td0\t1\n")
    with pytest.raises(SmecError, match=r"train.tsv and .*test.tsv share query id 'q2'"):
        check_inputs(resolve_beir_dir(tiny_beir))


def test_a_folder_without_training_qrels_names_the_settings_when_they_are_read(tiny_beir):
    """It resolves (it can train label-free); reading its training qrels says what to add."""
    (tiny_beir / "qrels" / "train.tsv").unlink()
    paths = resolve_beir_dir(tiny_beir)
    assert paths.train_qrels is None
    with pytest.raises(SmecError, match="supervision: pseudo or none.*data.train_split: "
                                        "split-test"):
        paths.read_train_qrels()
    with pytest.raises(SmecError, match="train_split: split-test"):   # a named split is needed
        resolve_beir_dir(tiny_beir, train_split="dev")


def test_split_test_is_deterministic_disjoint_and_keeps_groups_together(tmp_path):
    """A test-only dataset: a hashed half of its queries trains, the other half is scored;
    queries that share a positive stay on one side."""
    from conftest import write_beir

    from smec.data import SPLIT_TEST, positive_overlap
    corpus = [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(40)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(60)]
    rows = [(f"q{i}", f"d{i // 2}", 1) for i in range(60)]        # pairs share a positive
    root = write_beir(tmp_path / "testonly", corpus, queries, {"test": rows})
    paths = resolve_beir_dir(root, train_split=SPLIT_TEST, split_test_frac=0.5)
    train, test = paths.read_train_qrels(), paths.read_test_qrels()
    assert paths.split_label == SPLIT_TEST
    assert not set(train) & set(test) and len(train) + len(test) == 60
    assert 26 <= len(test) <= 34
    assert positive_overlap(train, test) == 0.0
    again = resolve_beir_dir(root, train_split=SPLIT_TEST, split_test_frac=0.5)
    assert again.read_test_qrels() == test


@pytest.mark.parametrize("line, reason", [
    ("q2\td2\t1.5", "score '1.5' is not an integer grade"),
    ("q2\td2\thigh", "score 'high' is not an integer grade"),
    ("q2\td2", "expected 3 tab-separated fields"),
])
def test_a_bad_test_qrels_line_stops_the_job_before_it_starts(tiny_beir, line, reason):
    from smec.data import check_inputs
    qrels = tiny_beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + line + "\n")
    with pytest.raises(SmecError, match=rf"test.tsv:4: {reason}"):
        check_inputs(resolve_beir_dir(tiny_beir))


def test_unknown_ids_in_qrels_name_the_line(tiny_beir):
    from smec.data import check_inputs
    qrels = tiny_beir / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q0\tnope\t1\n")
    with pytest.raises(SmecError, match=r"train.tsv:4: corpus id 'nope' \(query 'q0'\)"):
        check_inputs(resolve_beir_dir(tiny_beir))


def test_a_few_unknown_documents_in_large_qrels_are_warnings(tmp_path):
    """Official BEIR ArguAna judges 5 of its 1,406 documents that its corpus lacks."""
    from conftest import write_beir

    from smec.data import check_inputs
    corpus = [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(100)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(100)]
    test = [(f"q{i}", f"d{i}", 1) for i in range(50)] + [("q50", "gone", 1)]
    train = [(f"q{i}", f"d{i}", 1) for i in range(60, 100)]
    root = write_beir(tmp_path / "b", corpus, queries, {"test": test, "train": train})
    warnings = check_inputs(resolve_beir_dir(root))
    assert len(warnings) == 1 and "test.tsv:52: corpus id 'gone'" in warnings[0]


def test_paths_are_absolute_for_workers_in_other_folders(tiny_beir, monkeypatch):
    monkeypatch.chdir(tiny_beir.parent)
    paths = resolve_beir_dir(tiny_beir.name)
    for path in (paths.root, paths.corpus, paths.queries, paths.train_qrels, paths.test_qrels):
        assert path.is_absolute() and path.exists()
