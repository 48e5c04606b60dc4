import json
from pathlib import Path

import pytest

from smec.data import bundled_dataset_dir


def write_beir(root: Path, corpus: list[dict], queries: list[dict],
               qrels: dict[str, list[tuple[str, str, int]]]) -> Path:
    """Write a BEIR folder: qrels maps split -> [(query id, doc id, grade)]."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    corpus = [{"_id": f"d{i}", "title": f"title {i}", "text": f"text of document {i}"}
              for i in range(6)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(4)]
    qrels = {"train": [("q0", "d0", 1), ("q1", "d1", 2)],
             "test": [("q2", "d2", 1), ("q3", "d3", 1)]}
    return write_beir(tmp_path / "tiny", corpus, queries, qrels)


@pytest.fixture(scope="session")
def mini_cut(tmp_path_factory) -> Path:
    """A cut of the bundled SciFact-mini: 60 train + 30 test queries, their docs + 240 others."""
    import random
    src = bundled_dataset_dir()
    root = tmp_path_factory.mktemp("data") / "scifact-cut"

    def read_qrels(split):
        lines = (src / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
        return [tuple(line.split("\t")) for line in lines]

    train, test = read_qrels("train"), read_qrels("test")
    train_q = sorted({q for q, _, _ in train})[:60]
    test_q = sorted({q for q, _, _ in test})[:30]
    train = [r for r in train if r[0] in train_q]
    test = [r for r in test if r[0] in test_q]
    corpus = [json.loads(l) for l in (src / "corpus.jsonl").read_text().splitlines()]
    needed = {d for _, d, _ in train + test}
    others = [d["_id"] for d in corpus if d["_id"] not in needed]
    keep = needed | set(random.Random(0).sample(others, 240))
    queries = [json.loads(l) for l in (src / "queries.jsonl").read_text().splitlines()]
    return write_beir(root, [d for d in corpus if d["_id"] in keep],
                      [q for q in queries if q["_id"] in set(train_q) | set(test_q)],
                      {"train": [(q, d, int(g)) for q, d, g in train],
                       "test": [(q, d, int(g)) for q, d, g in test]})


@pytest.fixture(scope="session")
def mini_cut_embeddings(mini_cut, tmp_path_factory) -> Path:
    """``mini_cut`` embedded once per session with the real model (`smec embed`): a run folder
    whose ``embeddings/`` later tests copy or link instead of embedding again."""
    import subprocess
    import sys
    out = tmp_path_factory.mktemp("mini-cut-run")
    result = subprocess.run([sys.executable, "-m", "smec.cli", "embed", "--data-dir",
                             str(mini_cut), "--out", str(out)],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
