"""ETL input handling without Ray: shards, bad rows (stop / quarantine), Parquet input, store."""
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smec import corpus, store
from smec.corpus import Source, plan_shards, read_shard
from smec.errors import SmecError


def write_lines(path, lines):
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n"
                              for ln in lines))
    return path


def good(i, **extra):
    return json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i}", **extra})


BAD_ROWS = [
    ('{"_id": "x", "text": ', "invalid JSON"),
    (b'{"_id": "z", "text": "caf\xe9"}', "not valid UTF-8"),
    ('{"title": "t", "text": "no id"}', "missing '_id' or 'id' field"),
    ('{"_id": "e", "title": "", "text": "  "}', "empty text"),
    ('{"_id": "d1", "text": "again"}', "duplicate id 'd1'"),
    ('["not", "an", "object"]', "expected a JSON object"),
]


@pytest.mark.parametrize("bad, reason", BAD_ROWS)
def test_stop_names_file_line_and_reason(tmp_path, bad, reason):
    path = write_lines(tmp_path / "c.jsonl", [good(0), good(1), good(2), bad, good(3)])
    with pytest.raises(SmecError) as err:
        plan_shards(Source(path), 2, "stop")
    message = str(err.value)
    assert message.startswith(f"{path}:4: ") and reason in message
    assert "\n" not in message


def test_quarantine_writes_every_bad_row_and_keeps_the_rest(tmp_path):
    lines = [good(0), good(1)] + [bad for bad, _ in BAD_ROWS] + ["", good(3)]
    path = write_lines(tmp_path / "c.jsonl", lines)
    with (tmp_path / "bad.jsonl").open("w") as fh:
        shards, counts = plan_shards(Source(path), 3, "quarantine", fh)
    bad = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [b["line"] for b in bad] == [3, 4, 5, 6, 7, 8]
    for entry, (_, reason) in zip(bad, BAD_ROWS):
        assert entry["file"] == str(path) and reason in entry["reason"]
    assert "raw" not in bad[1]                                   # non-UTF-8: not decodable
    assert bad[0]["raw"] == '{"_id": "x", "text": '
    assert counts == {"rows": 3, "bad_rows": 6, "lines": 10}
    assert [s.rows for s in shards] == [2, 0, 0, 1]
    rows = [r for s in shards for r in zip(*read_shard(Source(path), s))]
    assert rows == [("d0", "t0 text 0"), ("d1", "t1 text 1"), ("d3", "t3 text 3")]


def test_shards_are_line_ranges_and_read_back_exactly(tmp_path):
    lines = [good(i) for i in range(10)]
    lines.insert(4, "   ")                                        # a blank line is no row
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"".join(ln.encode() + b"\r\n" for ln in lines))   # CRLF too
    shards, counts = plan_shards(Source(path), 4, "stop")
    assert [(s.first_line, s.rows) for s in shards] == [(1, 4), (5, 3), (9, 3)]
    ids = [i for s in shards for i in read_shard(Source(path), s)[0]]
    assert ids == [f"d{i}" for i in range(10)] and counts["rows"] == 10
    # a shard survives a JSON round trip (it travels to Ray tasks as a string)
    from smec.corpus import Shard
    assert Shard.from_json(shards[1].to_json()) == shards[1]


def test_changed_file_is_detected(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [good(i) for i in range(4)])
    shards, _ = plan_shards(Source(path), 2, "stop")
    write_lines(path, [good(0), "{broken", good(2), good(3)])
    with pytest.raises(SmecError, match="changed"):
        read_shard(Source(path), shards[0])


def test_identity_follows_the_bytes_not_the_mtime(tmp_path):
    """A store is reused while its input's bytes are the same (a copy or a touch keeps the
    identity; an edit of the same length does not), and the bytes are read only when the
    size or mtime moved since the stat a run recorded."""
    import os
    import shutil
    from smec.pipelines.shards import finished
    from smec.io import write_json
    path = write_lines(tmp_path / "c.jsonl", [good(i) for i in range(4)])
    first, stat = Source(path).identity()
    assert "mtime_ns" not in first and stat["sha256"] == first["sha256"]
    os.utime(path, ns=(stat["mtime_ns"] + 10**9, stat["mtime_ns"] + 10**9))   # touched
    assert Source(path).identity(stat)[0] == first
    copy = shutil.copy(path, tmp_path / "copy.jsonl")
    assert Source(copy).identity()[0]["sha256"] == first["sha256"]
    now = Source(path).identity()[1]
    assert Source(path).identity({**now, "sha256": "recorded"})[0]["sha256"] == "recorded"
    write_lines(path, [good(0), good(1), good(2), good(3).replace("text 3", "text 9")])
    assert Source(path).identity(now)[0]["sha256"] != first["sha256"]   # same size, new bytes
    # a complete store keeps its manifest, brought up to the input's new stat
    write_json(tmp_path / "store" / "manifest.json",
               {"fingerprint": first, "complete": True, "input_stat": stat})
    assert finished(tmp_path / "store", first, now)["input_stat"] == now
    assert json.loads((tmp_path / "store" / "manifest.json").read_text())["input_stat"] == now
    assert finished(tmp_path / "store", {**first, "sha256": "other"}, now) is None
    # a store from before digests (its fingerprint has the mtime) is kept while it is untouched
    edited = Source(path).identity()
    old = {**{k: v for k, v in edited[0].items() if k != "sha256"},
           "mtime_ns": edited[1]["mtime_ns"]}
    write_json(tmp_path / "old" / "manifest.json", {"fingerprint": old, "complete": True})
    assert finished(tmp_path / "old", *edited)["fingerprint"] == edited[0]
    write_json(tmp_path / "older" / "manifest.json",
               {"fingerprint": {**old, "mtime_ns": 1}, "complete": True})
    assert finished(tmp_path / "older", *edited) is None


def test_generic_fields(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"doc": 7, "body": "hello"}),
                                              json.dumps({"doc": 8, "body": "world"})])
    source = Source(path, ("doc",), "body", None)
    shards, _ = plan_shards(source, 10, "stop")
    assert read_shard(source, shards[0]) == (["7", "8"], ["hello", "world"])


def test_parquet_input_row_groups_and_bad_rows(tmp_path):
    path = tmp_path / "c.parquet"
    ids = [f"p{i}" for i in range(25)]
    texts = [f"text {i}" for i in range(25)]
    ids[6], texts[11], ids[20] = None, "", "p3"
    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=7)
    with pytest.raises(SmecError, match=rf"{path}:7: missing"):
        plan_shards(Source(path), 10, "stop")
    with (tmp_path / "bad.jsonl").open("w") as fh:
        shards, counts = plan_shards(Source(path), 10, "quarantine", fh)
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert counts["rows"] == 22 and len(reasons) == 3 and "duplicate id 'p3'" in reasons[2]
    got = [i for s in shards for i in read_shard(Source(path), s)[0]]
    assert got == [i for n, i in enumerate(ids) if n not in (6, 11, 20)]
    with pytest.raises(SmecError, match="no text column 'body'"):
        plan_shards(Source(path, text_field="body"), 10, "stop")


def test_large_jsonl_is_cut_by_byte_ranges_at_line_breaks(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "SAMPLE_BYTES", 256)     # "large": past the sampled head
    lines = [good(i, pad="x" * (i % 7)) for i in range(300)]
    path = write_lines(tmp_path / "c.jsonl", lines)
    shards, counts = plan_shards(Source(path), 25, "stop")
    data = path.read_bytes()
    assert len(shards) > 5 and shards[0].start == 0 and shards[-1].stop == len(data)
    for a, b in zip(shards, shards[1:]):
        assert a.stop == b.start and data[b.start - 1:b.start] == b"\n"      # at line breaks
        assert b.first_line == a.first_line + a.rows                      # absolute lines
    ids = [i for s in shards for i in read_shard(Source(path), s)[0]]
    assert ids == [f"d{i}" for i in range(300)] and counts["lines"] == 300


def test_bad_row_in_a_later_shard_is_named_by_its_absolute_line(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "SAMPLE_BYTES", 256)
    lines = [good(i) for i in range(200)]
    lines[150] = '{"_id": "d3", "text": "again"}'
    lines[170] = "{broken"
    path = write_lines(tmp_path / "c.jsonl", lines)
    with pytest.raises(SmecError, match=rf"^{path}:151: duplicate id 'd3'"):
        plan_shards(Source(path), 20, "stop")
    with (tmp_path / "bad.jsonl").open("w") as fh:
        shards, counts = plan_shards(Source(path), 20, "quarantine", fh)
    bad = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [b["line"] for b in bad] == [151, 171] and counts["rows"] == 198


def test_hash_collision_is_not_a_duplicate(tmp_path, monkeypatch):
    path = write_lines(tmp_path / "c.jsonl", [good(i) for i in range(50)] + [good(7)])
    monkeypatch.setattr(corpus, "id_hashes",
                        lambda ids: np.zeros(len(list(ids)), np.uint64))   # every hash equal
    with (tmp_path / "bad.jsonl").open("w") as fh:
        shards, counts = plan_shards(Source(path), 8, "quarantine", fh)
    bad = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [(b["line"], b["reason"]) for b in bad] == [(51, "duplicate id 'd7'")]
    assert counts["rows"] == 50


def test_ids_are_held_as_8_byte_hashes(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [good(i) for i in range(100)])
    shards = corpus.cut_shards(Source(path), 30)
    check = corpus.check_shard(Source(path), shards[0])
    assert check.hashes.dtype == np.uint64 and check.hashes.nbytes == 8 * check.rows


def test_parquet_shard_materialises_only_its_slice(tmp_path, monkeypatch):
    path = tmp_path / "c.parquet"
    n = 20_000
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(n)],
                             "text": [f"text {i}" for i in range(n)]}), path)   # 1 row group
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    shards = corpus.cut_shards(Source(path), 1000)
    seen = []
    real = corpus._records
    monkeypatch.setattr(corpus, "_records", lambda t: seen.append(t.num_rows) or real(t))
    shards[7].rows, shards[7].first_line = 1000, 7001
    ids, _ = read_shard(Source(path), shards[7])
    assert ids == [f"p{i}" for i in range(7000, 8000)] and sum(seen) == 1000


def test_part_names_sort_numerically_at_any_count(tmp_path):
    table = store.embedding_table(["a"], np.ones((1, 2), np.float32))
    width = store.part_width(123_456)
    for index in (9, 99_999, 100_000, 123_455):
        store.write_part(tmp_path, index, table, width)
    assert [store.part_index(p) for p in store.sorted_parts(tmp_path)] == \
        [9, 99_999, 100_000, 123_455]
    assert sorted(p.name for p in store.sorted_parts(tmp_path)) == \
        [p.name for p in store.sorted_parts(tmp_path)]


def test_read_columns_and_incomplete_store(tmp_path):
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    b = np.ones((3, 2), np.float32)
    meta = {"models": [{"name": "a", "column": "embedding:a", "dim": 4}]}
    store.write_part(tmp_path, 0, store.columns_table(["x", "y", "z"],
                                                      {"embedding:a": a, "embedding:b": b}, meta))
    ids, cols, got_meta = store.read_columns(tmp_path)
    assert ids == ["x", "y", "z"] and got_meta == meta
    np.testing.assert_array_equal(cols["embedding:a"], a)
    assert set(store.read_columns(tmp_path, ["embedding:b"])[1]) == {"embedding:b"}
    with pytest.raises(SmecError, match="read_columns"):
        store.read_embeddings(tmp_path)
    (tmp_path / store.MANIFEST).write_text(json.dumps({"complete": False, "shards": 3}))
    with pytest.raises(SmecError, match="has not finished"):
        store.read_columns(tmp_path)


def smec(*args):
    return subprocess.run([sys.executable, "-m", "smec.cli", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("bad, reason", BAD_ROWS[:3])
def test_cli_corpus_bad_row_stops_in_one_line_and_writes_nothing(tmp_path, bad, reason):
    path = write_lines(tmp_path / "c.jsonl", [good(0), good(1), bad])
    out = tmp_path / "out"
    result = smec("embed", "--corpus", path, "--out", out)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"smec: error: {path}:3: ") and reason in lines[0]
    assert not out.exists()


def test_cli_corpus_needs_out_and_an_existing_file(tmp_path):
    result = smec("embed", "--corpus", tmp_path / "none.jsonl", "--out", tmp_path / "o")
    assert result.returncode == 1 and "file not found" in result.stderr
    result = smec("embed", "--corpus", tmp_path / "none.jsonl")
    assert result.returncode == 1 and "--out" in result.stderr
