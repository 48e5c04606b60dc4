"""BEIR-format datasets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Every reader validates as it goes and raises :class:`SmecError` naming ``file:line`` and what is
wrong, so a malformed folder never reaches Ray. The corpus is read as a stream
(:func:`iter_corpus`), so callers that only need one pass never hold it in memory.
"""
from __future__ import annotations

import json
import zlib
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
                grade = int(score)
            except ValueError:
                raise SmecError(f"{path}:{lineno}: score '{score}' is not an integer grade "
                                "(BEIR qrels grade relevance 0, 1, 2, ...)") from None
            if not qid or not doc_id:
                raise SmecError(f"{path}:{lineno}: empty query-id or corpus-id")
            qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise SmecError(f"{path}: no judgements found")
    return qrels


#: ``data.train_split`` value for a dataset with only test qrels (ArguAna): its test queries
#: are split deterministically in two; one part trains (and early-stops), the other is scored.
SPLIT_TEST = "split-test"


@dataclass(frozen=True)
class BeirPaths:
    root: Path
    corpus: Path
    queries: Path
    train_qrels: Path | None     # None: the folder has no training qrels (label-free)
    test_qrels: Path
    #: with ``data.train_split: split-test``: the share of test queries kept for scoring
    split_test_frac: float | None = None

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def split_label(self) -> str:
        """What results rows scored on the test qrels are labelled: ``test`` or ``split-test``."""
        return SPLIT_TEST if self.split_test_frac is not None else self.test_qrels.stem

    @property
    def has_train_qrels(self) -> bool:
        return self.train_qrels is not None

    def read_train_qrels(self) -> Qrels:
        if self.train_qrels is None:
            raise SmecError(no_train_qrels(self.root / "qrels" / "train.tsv",
                                           self.test_qrels.stem))
        qrels = load_qrels(self.train_qrels)
        return qrels if self.split_test_frac is None \
            else split_test_qrels(qrels, self.split_test_frac)[0]

    def read_test_qrels(self) -> Qrels:
        qrels = load_qrels(self.test_qrels)
        return qrels if self.split_test_frac is None \
            else split_test_qrels(qrels, self.split_test_frac)[1]


def no_train_qrels(train: Path, test_split: str) -> str:
    return (f"{train}: training qrels not found; add qrels/train.tsv (or dev.tsv), train "
            f"label-free (train.supervision: pseudo or none), or set data.train_split: "
            f"{SPLIT_TEST} to train on a hashed part of the {test_split} queries and score "
            "the rest")


def resolve_beir_dir(data_dir: Path | str | None, train_split: str = "train",
                     test_split: str = "test", split_test_frac: float = 0.5) -> BeirPaths:
    """Check a BEIR folder's layout; fall back to dev qrels for training when train is absent.

    ``train_split: split-test`` trains on a hashed part of the test queries and scores the rest
    (:func:`split_test_qrels`); training on the very qrels that are scored is refused. A folder
    with neither train nor dev qrels resolves with ``train_qrels=None``: it trains label-free,
    and :meth:`BeirPaths.read_train_qrels` says what to add.
    """
    given = Path(data_dir) if data_dir is not None else bundled_dataset_dir()
    if not given.is_dir():
        raise SmecError(f"{given}: data folder not found; pass --data-dir with a BEIR folder "
                        "(corpus.jsonl, queries.jsonl, qrels/)")
    root = given.resolve()   # absolute: Ray workers run in other working directories
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise SmecError(f"{root / name}: file not found; a BEIR folder needs corpus.jsonl, "
                            "queries.jsonl and qrels/<split>.tsv")
    qrels_dir = root / "qrels"
    test = qrels_dir / f"{test_split}.tsv"
    if not test.is_file():
        raise SmecError(f"{test}: test qrels not found; evaluation needs qrels/{test_split}.tsv")
    if train_split == SPLIT_TEST:
        return BeirPaths(root, root / "corpus.jsonl", root / "queries.jsonl", test, test,
                         split_test_frac)
    train = qrels_dir / f"{train_split}.tsv"
    if not train.is_file() and train_split == "train" and (qrels_dir / "dev.tsv").is_file():
        train = qrels_dir / "dev.tsv"
    if not train.is_file() and train_split == "train":
        return BeirPaths(root, root / "corpus.jsonl", root / "queries.jsonl", None, test)
    if not train.is_file():
        raise SmecError(no_train_qrels(train, test_split))
    if train.resolve() == test.resolve():
        raise SmecError(f"{train} is also the test qrels {test}: training and early stopping "
                        f"would see the judgements that are scored; use data.train_split: "
                        f"{SPLIT_TEST} instead")
    return BeirPaths(root, root / "corpus.jsonl", root / "queries.jsonl", train, test)


def positive_groups(qrels: Qrels) -> list[list[str]]:
    """Queries joined when they share a judged-relevant document (connected components).

    Several phrasings of one information need share their positives; a split that keeps each
    group on one side cannot reward memorising documents across the split.
    """
    parent = {q: q for q in qrels}

    def root(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q
    owner: dict[str, str] = {}
    for q, docs in qrels.items():
        for d, g in docs.items():
            if g > 0:
                if d in owner:
                    parent[root(q)] = root(owner[d])
                else:
                    owner[d] = q
    groups: dict[str, list[str]] = {}
    for q in qrels:
        groups.setdefault(root(q), []).append(q)
    return [sorted(g) for g in groups.values()]


def group_split(qrels: Qrels, frac: float, salt: str) -> tuple[list[str], list[str]]:
    """Deterministic (rest, part) split of ``qrels``' queries, about ``frac`` in ``part``.

    Whole groups of queries that share positives (:func:`positive_groups`) go to one side, in
    an order hashed from ``salt`` and the group; a group larger than what ``part`` still needs
    stays in ``rest``, so ``part`` never shares a positive with ``rest``.
    """
    groups = sorted(positive_groups(qrels), key=lambda g: zlib.crc32(f"{salt}:{g[0]}".encode()))
    want = max(1, round(frac * len(qrels)))
    part: list[str] = []
    for group in groups:
        if len(part) + len(group) <= want:
            part += group
    chosen = set(part)
    return [q for q in qrels if q not in chosen], [q for q in qrels if q in chosen]


def split_test_qrels(qrels: Qrels, test_frac: float) -> tuple[Qrels, Qrels]:
    """``split-test``: (train part, scored part) of a test-only dataset, fixed for every seed."""
    train, test = group_split(qrels, test_frac, salt=SPLIT_TEST)
    return {q: qrels[q] for q in train}, {q: qrels[q] for q in test}


def positive_overlap(train: Qrels, holdout: Qrels) -> float:
    """Share of ``holdout``'s (query, positive) pairs whose document is also a ``train``
    positive: 0 means the hold-out cannot be won by memorising training documents."""
    seen = {d for docs in train.values() for d, g in docs.items() if g > 0}
    pairs = [d for docs in holdout.values() for d, g in docs.items() if g > 0]
    return sum(d in seen for d in pairs) / max(1, len(pairs))


def check_inputs(paths: BeirPaths) -> list[str]:
    """Read and cross-check every input of a job before anything expensive starts.

    One streaming pass over the corpus (ids and texts), the queries, the train and test qrels
    and their ids against each other; the first problem is a :class:`SmecError` naming the file
    (and line). Returns warnings (a few judgements naming unknown ids), one line each.
    """
    corpus_ids = {doc_id for doc_id, _ in iter_corpus(paths.corpus)}
    queries = load_queries(paths.queries)
    test = load_qrels(paths.test_qrels)   # split-test: both parts are in this one file
    warnings = check_qrels_ids(test, queries, corpus_ids, paths.test_qrels)
    if paths.split_test_frac is None and paths.has_train_qrels:
        train = load_qrels(paths.train_qrels)
        warnings += check_qrels_ids(train, queries, corpus_ids, paths.train_qrels)
        shared = sorted(set(train) & set(test))
        if shared:
            raise SmecError(f"{paths.train_qrels} and {paths.test_qrels} share query id "
                            f"'{shared[0]}' ({len(shared)} in all): a query must be either "
                            f"trained on or scored, not both")
    return warnings


#: Above this share of judgements naming unknown ids, qrels are refused (they belong to another
#: corpus); below it each one is reported (official BEIR ArguAna judges 5 documents of 1,406
#: that its corpus lacks: they count as never retrieved, as in BEIR and MTEB).
MAX_UNKNOWN_SHARE = 0.05


def check_qrels_ids(qrels: Qrels, queries: dict[str, str], corpus_ids: set[str],
                    qrels_path: Path) -> list[str]:
    """Judged queries and documents must exist: a few unknown ones come back as warnings
    (``file:line: ...``), more than :data:`MAX_UNKNOWN_SHARE` of the judgements is an error."""
    unknown = []
    for qid, docs in qrels.items():
        if qid not in queries:
            unknown.append((qid, None, f"query id '{qid}' is not in queries.jsonl"))
        for doc_id in docs:
            if doc_id not in corpus_ids:
                unknown.append((qid, doc_id, f"corpus id '{doc_id}' (query '{qid}') is not in "
                                "corpus.jsonl"))
    total = sum(len(docs) for docs in qrels.values())
    if unknown and len(unknown) > MAX_UNKNOWN_SHARE * total:
        qid, doc_id, what = unknown[0]
        raise SmecError(f"{_qrels_where(qrels_path, qid, doc_id)}: {what} ({len(unknown)} of "
                        f"{total} judgements name unknown ids: are these the qrels of this "
                        "corpus?)")
    return [f"{_qrels_where(qrels_path, qid, doc_id)}: {what}; it counts as never retrieved"
            for qid, doc_id, what in unknown]


def _qrels_where(path: Path, qid: str, doc_id: str | None = None) -> str:
    """``path:line`` of the first judgement of ``qid`` (on ``doc_id``); only read on error."""
    with Path(path).open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
            if fields[:1] == [qid] and (doc_id is None or fields[1:2] == [doc_id]):
                return f"{path}:{lineno}"
    return str(path)
