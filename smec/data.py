"""BEIR-format datasets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Every reader validates as it goes and raises :class:`SmecError` naming ``file:line`` and what is
wrong, so a malformed folder never reaches Ray. The corpus is read as a stream
(:func:`iter_corpus`), so callers that only need one pass never hold it in memory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from smec.errors import SmecError

Qrels = dict[str, dict[str, int]]  # query id -> doc id -> graded relevance


def bundled_dataset_dir() -> Path:
    """The SciFact-mini folder shipped inside the package (demo and tests)."""
    return Path(__file__).resolve().parent / "datasets" / "scifact-mini"


def _iter_jsonl(path: Path, id_field: str = "_id") -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for each non-empty line; check id and text fields."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise SmecError(f"{path}: file not found; a BEIR folder needs corpus.jsonl, queries.jsonl "
                        "and qrels/<split>.tsv") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise SmecError(f"{where}: not valid UTF-8; re-encode the file as UTF-8") from None
            except json.JSONDecodeError as exc:
                raise SmecError(f"{where}: invalid JSON ({exc.msg}); each line must be one JSON "
                                "object") from None
            if not isinstance(record, dict):
                raise SmecError(f"{where}: expected a JSON object, got {type(record).__name__}")
            doc_id = record.get(id_field)
            if doc_id is None or str(doc_id).strip() == "":
                raise SmecError(f"{where}: missing '{id_field}' field")
            text = record.get("text")
            if not isinstance(text, str):
                raise SmecError(f"{where}: missing or non-string 'text' field")
            yield lineno, record


def document_text(record: dict) -> str:
    """BEIR's convention for dense retrievers: title and text joined by one space."""
    title = record.get("title") or ""
    return f"{title} {record['text']}".strip() if title else record["text"].strip()


def iter_corpus(path: Path) -> Iterator[tuple[str, str]]:
    """Stream (doc id, text) from a corpus.jsonl; rejects empty texts and duplicate ids."""
    seen: set[str] = set()
    for lineno, record in _iter_jsonl(Path(path)):
        doc_id = str(record["_id"])
        text = document_text(record)
        if not text:
            raise SmecError(f"{path}:{lineno}: document '{doc_id}' has empty title and text")
        if doc_id in seen:
            raise SmecError(f"{path}:{lineno}: duplicate document id '{doc_id}'")
        seen.add(doc_id)
        yield doc_id, text


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, record in _iter_jsonl(Path(path)):
        qid = str(record["_id"])
        if qid in queries:
            raise SmecError(f"{path}:{lineno}: duplicate query id '{qid}'")
        queries[qid] = record["text"]
    return queries


def load_qrels(path: Path) -> Qrels:
    """Read a BEIR qrels TSV (header line, then query-id, corpus-id, score); CRLF is accepted."""
    path = Path(path)
    if not path.is_file():
        raise SmecError(f"{path}: file not found")
    qrels: Qrels = {}
    with path.open("r", encoding="utf-8", newline="") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if lineno == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(fields) != 3:
                raise SmecError(f"{path}:{lineno}: expected 3 tab-separated fields "
                                f"(query-id, corpus-id, score), got {len(fields)}")
            qid, doc_id, score = (f.strip() for f in fields)
            try:
                grade = int(float(score))
            except ValueError:
                raise SmecError(f"{path}:{lineno}: score '{score}' is not a number") from None
            qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise SmecError(f"{path}: no judgements found")
    return qrels


@dataclass(frozen=True)
class BeirPaths:
    root: Path
    corpus: Path
    queries: Path
    train_qrels: Path
    test_qrels: Path

    @property
    def name(self) -> str:
        return self.root.name


def resolve_beir_dir(data_dir: Path | str | None, train_split: str = "train",
                     test_split: str = "test") -> BeirPaths:
    """Check a BEIR folder's layout; fall back to dev qrels for training when train is absent."""
    root = Path(data_dir) if data_dir is not None else bundled_dataset_dir()
    if not root.is_dir():
        raise SmecError(f"{root}: data folder not found; pass --data-dir with a BEIR folder "
                        "(corpus.jsonl, queries.jsonl, qrels/)")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise SmecError(f"{root / name}: file not found; a BEIR folder needs corpus.jsonl, "
                            "queries.jsonl and qrels/<split>.tsv")
    qrels_dir = root / "qrels"
    test = qrels_dir / f"{test_split}.tsv"
    if not test.is_file():
        raise SmecError(f"{test}: test qrels not found; evaluation needs qrels/{test_split}.tsv")
    train = qrels_dir / f"{train_split}.tsv"
    if not train.is_file() and train_split == "train" and (qrels_dir / "dev.tsv").is_file():
        train = qrels_dir / "dev.tsv"
    if not train.is_file():
        raise SmecError(f"{train}: training qrels not found; add qrels/train.tsv (or dev.tsv)")
    return BeirPaths(root.resolve(), root / "corpus.jsonl", root / "queries.jsonl", train, test)


def check_qrels_ids(qrels: Qrels, queries: dict[str, str], corpus_ids: set[str],
                    qrels_path: Path) -> None:
    """Every judged query and document must exist; say which one does not."""
    for qid, docs in qrels.items():
        if qid not in queries:
            raise SmecError(f"{qrels_path}: query id '{qid}' is not in queries.jsonl")
        for doc_id in docs:
            if doc_id not in corpus_ids:
                raise SmecError(f"{qrels_path}: corpus id '{doc_id}' (query '{qid}') is not in "
                                "corpus.jsonl")
