
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
