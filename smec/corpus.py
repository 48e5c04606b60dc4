"""Streaming input for the embedding ETL: shards, parallel validation, bad rows (no Ray here).

An input file (a BEIR ``corpus.jsonl``/``queries.jsonl``, any JSONL, or a Parquet file) is cut
into *shards* before anything is parsed (:func:`cut_shards`): JSONL by byte ranges that end at a
line break (a file of at most ``SAMPLE_BYTES`` is cut by exact line counts), Parquet by row
ranges. Each shard is then checked on its own (:func:`check_shard`, run in parallel by the
pipelines) and the checks are joined in one small step (:func:`resolve_plan`): absolute line
numbers, duplicate ids across shards, and the bad-row policy. :func:`read_shard` later re-reads
one shard and yields its good rows. The plan depends only on the file's bytes and the shard
size, so a resumed run cuts the file exactly as the killed one did.

Bad rows (invalid JSON, non-UTF-8, missing id, empty text, duplicate id): with
``on_bad_row="stop"`` the first one in file order raises a :class:`SmecError` naming
``file:line`` and the reason; with ``"quarantine"`` each is written to a ``bad_rows.jsonl``
(file, line, reason, raw text when decodable) and skipped.

Memory: duplicate ids are found from 8-byte BLAKE2b hashes of the ids (one ``uint64`` per row,
plus a sort); only the shards whose hashes collide are read again to compare the real ids, so a
hash collision is never reported as a duplicate. A Parquet shard reads only its row slice, in
batches of ``PARQUET_BATCH`` rows.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np

from smec.errors import SmecError

OnBadRow = Literal["stop", "quarantine"]
DEFAULT_ID_FIELDS = ("_id", "id")
SAMPLE_BYTES = 1 << 20       # the head read to estimate bytes per line (and cut small files)
PARQUET_BATCH = 4096         # rows materialised at a time when a Parquet shard is read
MIN_SHARD, MAX_SHARD = 1024, 65536


@dataclass(frozen=True)
class Source:
    """What to read: the file, its format and which fields hold the id and the text.

    ``title_field``: when the record has a non-empty title it is joined before the text with one
    space (BEIR's convention for dense retrievers); ``None`` for queries.
    """
    path: Path
    id_fields: tuple[str, ...] = DEFAULT_ID_FIELDS
    text_field: str = "text"
    title_field: str | None = "title"

    def __post_init__(self) -> None:
        # absolute where it is named: Ray's read tasks open it in working directories of their own
        object.__setattr__(self, "path", Path(self.path).absolute())

    @property
    def format(self) -> str:
        return "parquet" if self.path.suffix.lower() in (".parquet", ".pq") else "jsonl"

    def identity(self, known: dict | None = None) -> tuple[dict, dict]:
        """(what the input is: its path, format, size, the SHA-256 of its bytes and the fields
        read; its stat: size, mtime and that digest, for the next run).

        A store made from this input is reused while its bytes are the same: a copy or a touch
        that leaves them alone keeps the identity, an edit of the same length does not. The
        digest reads the whole file once per change of size or mtime only: ``known``, the
        stat an earlier run recorded, is trusted while both are unchanged."""
        stat = self.path.stat()
        if known and known.get("sha256") and (known.get("size"), known.get("mtime_ns")) == \
                (stat.st_size, stat.st_mtime_ns):
            digest = known["sha256"]
        else:
            with self.path.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return ({"input": str(self.path.resolve()), "format": self.format,
                 "size": stat.st_size, "sha256": digest, "id_fields": list(self.id_fields),
                 "text_field": self.text_field, "title_field": self.title_field},
                {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest})


@dataclass
class Shard:
    """One unit of work and of resume: ``start``/``stop`` are bytes (JSONL) or 0-based rows
    (Parquet); ``first_line`` (1-based, absolute) is known once every shard before it is checked;
    ``skip`` holds the shard-local 0-based line indices of its bad rows."""
    index: int
    start: int
    stop: int
    first_line: int = 0
    rows: int = 0
    skip: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        return cls(**json.loads(text))


@dataclass
class ShardCheck:
    """What checking one shard found: its physical lines, good rows, bad rows as
    (local line, reason, raw text or None), and the 8-byte hashes of its good ids in order."""
    index: int
    lines: int
    rows: int
    bad: list[tuple[int, str, str | None]]
    hashes: np.ndarray


class BadRow(Exception):
    """One row that cannot be embedded: ``reason`` is one line."""

    def __init__(self, reason: str, raw: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.raw = reason, raw


def _pick(record: dict, names: tuple[str, ...]):
    for name in names:
        if name in record:
            return record[name]
    return None


def row_from_record(record, source: Source) -> tuple[str, str]:
    """(id, text) of one decoded record, or :class:`BadRow` saying what is wrong."""
    if not isinstance(record, dict):
        raise BadRow(f"expected a JSON object, got {type(record).__name__}")
    doc_id = _pick(record, source.id_fields)
    if doc_id is None or isinstance(doc_id, (dict, list, bool)) or str(doc_id).strip() == "":
        raise BadRow("missing " + " or ".join(f"'{f}'" for f in source.id_fields) + " field")
    text = record.get(source.text_field)
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise BadRow(f"non-string '{source.text_field}' field")
    title = record.get(source.title_field) if source.title_field else None
    if isinstance(title, str) and title.strip():
        text = f"{title} {text}"
    text = text.strip()
    if not text:
        raise BadRow(f"empty text (no '{source.text_field}'"
                     + (f" or '{source.title_field}'" if source.title_field else "") + ")")
    return str(doc_id), text


def _decode_line(raw: bytes, source: Source) -> tuple[str, str]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRow("not valid UTF-8; re-encode the file as UTF-8") from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadRow(f"invalid JSON ({exc.msg}); each line must be one JSON object",
                     line.rstrip("\r\n")) from None
    try:
        return row_from_record(record, source)
    except BadRow as bad:
        raise BadRow(bad.reason, line.rstrip("\r\n")) from None


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise SmecError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SmecError(f"{path}: is a folder; pass a .jsonl or .parquet file") from None


# --- cutting -------------------------------------------------------------------------------

def shard_size(rows: int) -> int:
    """The automatic shard size for a corpus of about ``rows`` rows: 64 shards, within
    [1024, 65536] rows. Many shards fill the pipeline fast (the first part waits for one whole
    shard to be read and tokenised) and even out its tail; the cap keeps part and marker counts
    small at 100M rows (~1,500)."""
    return int(min(MAX_SHARD, max(MIN_SHARD, rows // 64)))


def _parquet_file(source: Source):
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(source.path)
    except FileNotFoundError:
        raise SmecError(f"{source.path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors: one line naming the file
        raise SmecError(f"{source.path}: not a readable Parquet file ({exc})") from None


def cut_shards(source: Source, shard_rows: int | None = None) -> list[Shard]:
    """Cut ``source`` into shards of about ``shard_rows`` rows (None: :func:`shard_size`)
    without parsing it: a Parquet file by row ranges, a JSONL file by byte ranges that end at a
    line break (exact line counts when the file is at most ``SAMPLE_BYTES``)."""
    if shard_rows is not None and shard_rows <= 0:
        raise SmecError(f"shard rows must be > 0, got {shard_rows}")
    if source.format == "parquet":
        total = _parquet_file(source).metadata.num_rows
        size = shard_rows or shard_size(total)
        return [Shard(k, start, min(start + size, total))
                for k, start in enumerate(range(0, total, size))]
    with _open(source.path) as handle:
        head = handle.read(SAMPLE_BYTES)
        end = handle.seek(0, io.SEEK_END)
        if end <= SAMPLE_BYTES:      # small: every line offset is known, cut by line counts
            offsets = np.cumsum([0] + [len(x) for x in io.BytesIO(head)])
            size = shard_rows or shard_size(len(offsets) - 1)
            bounds = [int(b) for b in offsets[::size]] + [end]
        else:
            mean = len(head) / max(1, head.count(b"\n"))
            size = shard_rows or shard_size(int(end / mean))
            bounds = [0]
            for k in range(1, int(end / (size * mean)) + 1):
                target = max(int(k * size * mean), bounds[-1] + 1)
                if target >= end:
                    break
                handle.seek(target - 1)
                handle.readline()        # to the end of the line holding byte target-1
                if handle.tell() > bounds[-1]:
                    bounds.append(handle.tell())
            bounds.append(end)
    bounds = sorted(set(bounds))
    return [Shard(k, a, b) for k, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]


# --- reading -------------------------------------------------------------------------------

def _parquet_columns(source: Source, names: list[str]) -> list[str]:
    id_col = next((n for n in source.id_fields if n in names), None)
    if id_col is None:
        raise SmecError(f"{source.path}: no id column ({' or '.join(source.id_fields)}); "
                        f"columns are {names}; pass --id-field")
    if source.text_field not in names:
        raise SmecError(f"{source.path}: no text column '{source.text_field}'; columns are "
                        f"{names}; pass --text-field")
    cols = [id_col, source.text_field]
    if source.title_field and source.title_field in names:
        cols.append(source.title_field)
    return cols


def _records(table) -> list[dict]:
    """The only place Parquet rows become Python objects (a test counts them)."""
    return table.to_pylist()


def _parquet_slice(source: Source, start: int, stop: int) -> Iterator[dict]:
    """The records of rows ``start <= i < stop``: the covering row groups are streamed in
    batches of ``PARQUET_BATCH`` rows and only the slice is turned into Python objects."""
    pf = _parquet_file(source)
    cols = _parquet_columns(source, pf.schema_arrow.names)
    meta = pf.metadata
    groups, first, offset = [], None, 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if offset + n > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return
    row = first
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH, row_groups=groups, columns=cols):
        lo, hi = max(start, row), min(stop, row + batch.num_rows)
        if hi > lo:
            yield from _records(batch.slice(lo - row, hi - lo))
        row += batch.num_rows
        if row >= stop:
            break


def _shard_rows(source: Source, shard: Shard) -> Iterator[tuple[str, str] | BadRow | None]:
    """Every physical line (Parquet: row) of ``shard`` in order: a row, a BadRow, or None for a
    blank line."""
    if source.format == "parquet":
        for record in _parquet_slice(source, shard.start, shard.stop):
            try:
                yield row_from_record(record, source)
            except BadRow as bad:
                yield BadRow(bad.reason, json.dumps(record, default=str))
        return
    with _open(source.path) as handle:
        handle.seek(shard.start)
        data = handle.read(shard.stop - shard.start)
    for raw in io.BytesIO(data):         # splits on b"\n" only, as cut_shards does
        if not raw.strip():
            yield None
            continue
        try:
            yield _decode_line(raw, source)
        except BadRow as bad:
            yield bad


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """8-byte BLAKE2b hashes of ``ids`` as uint64 (equal ids, equal hashes; the converse is
    checked on the real ids)."""
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)


def check_shard(source: Source, shard: Shard) -> ShardCheck:
    """Parse and validate one shard (in any process): counts, bad rows, hashes of good ids."""
    bad: list[tuple[int, str, str | None]] = []
    ids: list[str] = []
    lines = 0
    for local, row in enumerate(_shard_rows(source, shard)):
        lines = local + 1
        if isinstance(row, BadRow):
            bad.append((local, row.reason, row.raw))
        elif row is not None:
            ids.append(row[0])
    return ShardCheck(shard.index, lines, len(ids), bad, id_hashes(ids))


def _good_ids(source: Source, shard: Shard) -> Iterator[tuple[int, str]]:
    for local, row in enumerate(_shard_rows(source, shard)):
        if row is not None and not isinstance(row, BadRow):
            yield local, row[0]


def _duplicates(source: Source, shards: list[Shard], checks: list[ShardCheck]
                ) -> dict[int, list[tuple[int, str, str | None]]]:
    """Duplicate ids, as bad rows per shard index: every occurrence after the first in file
    order. One sorted copy of the hashes finds the values that repeat; only the shards holding
    one are read again, to compare the real ids."""
    ranked = np.concatenate([c.hashes for c in checks] or [np.zeros(0, np.uint64)])
    ranked.sort()
    suspects = np.unique(ranked[1:][ranked[1:] == ranked[:-1]])
    del ranked
    if not len(suspects):
        return {}
    first_seen: set[str] = set()
    found: dict[int, list[tuple[int, str, str | None]]] = {}
    for shard, check in zip(shards, checks):     # file order: the first occurrence is kept
        hit = np.isin(check.hashes, suspects)
        if not hit.any():
            continue
        for (local, doc_id), suspect in zip(_good_ids(source, shard), hit):
            if not suspect:
                continue
            if doc_id in first_seen:
                found.setdefault(shard.index, []).append((local, f"duplicate id '{doc_id}'",
                                                          None))
            else:
                first_seen.add(doc_id)
    return found


def resolve_plan(source: Source, shards: list[Shard], checks: list[ShardCheck],
                 on_bad_row: OnBadRow = "stop", bad_rows: IO[str] | None = None
                 ) -> tuple[list[Shard], dict]:
    """Join the per-shard checks (in shard order) into the plan: absolute line numbers, rows,
    duplicate ids; raise on the first bad row (``"stop"``) or write every bad row to
    ``bad_rows`` in file order and list it in its shard's ``skip`` (``"quarantine"``).
    Returns (shards, counts ``{"rows", "bad_rows", "lines"}``)."""
    checks = sorted(checks, key=lambda c: c.index)
    if [c.index for c in checks] != [s.index for s in shards]:
        raise ValueError("one check per shard is needed")
    duplicates = _duplicates(source, shards, checks)
    line = 1
    for shard, check in zip(shards, checks):
        shard.first_line = shard.start + 1 if source.format == "parquet" else line
        line += check.lines
        dups = duplicates.get(shard.index, [])
        bad = sorted(check.bad + dups) if dups else check.bad
        if bad and on_bad_row == "stop":
            local, reason, _ = bad[0]
            raise SmecError(f"{source.path}:{shard.first_line + local}: {reason} "
                            "(--on-bad-row quarantine skips bad rows)")
        shard.rows = check.rows - len(dups)
        shard.skip = [local for local, _, _ in bad]
        for local, reason, raw in bad:
            if bad_rows is not None:
                entry = {"file": str(source.path), "line": shard.first_line + local,
                         "reason": reason}
                if raw is not None:
                    entry["raw"] = raw
                bad_rows.write(json.dumps(entry, ensure_ascii=False) + "\n")
    counts = {"rows": sum(s.rows for s in shards),
              "bad_rows": sum(len(s.skip) for s in shards),
              "lines": sum(c.lines for c in checks)}
    return shards, counts


def plan_shards(source: Source, shard_rows: int | None = None, on_bad_row: OnBadRow = "stop",
                bad_rows: IO[str] | None = None,
                check: Callable[[Source, list[Shard]], list[ShardCheck]] | None = None
                ) -> tuple[list[Shard], dict]:
    """Cut, check and resolve ``source``: its shards and counts ``{"rows", "bad_rows",
    "lines"}``. ``check`` runs :func:`check_shard` over the shards (default: here, one after
    another; the pipelines pass a parallel one). ``bad_rows``: an open text file that receives
    one JSON line per quarantined row."""
    shards = cut_shards(source, shard_rows)
    checks = check(source, shards) if check else [check_shard(source, s) for s in shards]
    return resolve_plan(source, shards, checks, on_bad_row, bad_rows)


def read_shard(source: Source, shard: Shard) -> tuple[list[str], list[str]]:
    """The good rows of one planned shard, as (ids, texts), in file order."""
    skip = set(shard.skip)
    ids: list[str] = []
    texts: list[str] = []
    for local, row in enumerate(_shard_rows(source, shard)):
        if row is None or local in skip:
            continue
        if isinstance(row, BadRow):
            raise SmecError(f"{source.path}:{shard.first_line + local}: {row.reason} (the file "
                            "changed after it was checked)")
        ids.append(row[0])
        texts.append(row[1])
    if len(ids) != shard.rows:
        raise SmecError(f"{source.path}: the shard from line {shard.first_line} holds "
                        f"{len(ids)} rows, {shard.rows} when checked; the file changed while "
                        "it was being embedded")
    return ids, texts
