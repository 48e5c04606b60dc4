"""Streaming input for the embedding ETL: validation, bad rows and input shards (no Ray here).

An input file (a BEIR ``corpus.jsonl``/``queries.jsonl``, any JSONL, or a Parquet file) is cut
into *shards* of a fixed number of physical lines (Parquet: rows): shard ``k`` covers lines
``k*S+1 .. (k+1)*S``. :func:`plan_shards` streams the file once, validates every row and returns
one small :class:`Shard` per shard (byte range, good-row count, the line numbers of the bad rows
it holds); :func:`read_shard` later re-reads just one shard (from its byte offset) and yields its
good rows. The plan depends only on the file's bytes and ``S``, so a resumed run cuts the file
exactly as the killed one did.

Bad rows (invalid JSON, non-UTF-8, missing id, empty text, duplicate id): with
``on_bad_row="stop"`` the first one raises a :class:`SmecError` naming ``file:line`` and the
reason; with ``"quarantine"`` each is written to a ``bad_rows.jsonl`` (file, line, reason, raw
text when decodable) and skipped.

Memory: the only state that grows with the input is the set of ids seen so far (needed to
detect duplicate ids in one pass; an exact on-disk alternative would cost a sort) plus one
small record per shard and the line numbers of quarantined rows.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal

from smec.errors import SmecError

OnBadRow = Literal["stop", "quarantine"]
DEFAULT_ID_FIELDS = ("_id", "id")


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

    def describe(self) -> dict:
        stat = self.path.stat()
        return {"input": str(self.path.resolve()), "format": self.format, "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "id_fields": list(self.id_fields),
                "text_field": self.text_field, "title_field": self.title_field}


@dataclass
class Shard:
    index: int
    first_line: int                 # 1-based line (Parquet: row) number of the shard's first line
    last_line: int                  # inclusive
    byte_start: int = 0             # JSONL only: byte range of the shard's lines
    byte_end: int = 0
    rows: int = 0                   # good rows in the shard
    skip: list[int] = field(default_factory=list)   # line numbers of bad rows to leave out

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        return cls(**json.loads(text))


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


def _iter_lines(source: Source) -> Iterator[tuple[int, int, int, tuple[str, str] | BadRow | None]]:
    """(line number, byte offset, byte length, row | BadRow | None for a blank line)."""
    offset = 0
    with _open(source.path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                row = None
            else:
                try:
                    row = _decode_line(raw, source)
                except BadRow as bad:
                    row = bad
            yield lineno, offset, len(raw), row
            offset += len(raw)


def _parquet_columns(source: Source) -> tuple[str, list[str]]:
    import pyarrow.parquet as pq
    names = pq.ParquetFile(source.path).schema_arrow.names
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
    return id_col, cols


def _parquet_rows(source: Source, start: int = 0, stop: int | None = None
                  ) -> Iterator[tuple[int, tuple[str, str] | BadRow]]:
    """(1-based row number, row | BadRow) for rows ``start <= i < stop``; reads only the row
    groups that cover the range."""
    import pyarrow.parquet as pq
    _, cols = _parquet_columns(source)
    pf = pq.ParquetFile(source.path)
    meta = pf.metadata
    stop = meta.num_rows if stop is None else min(stop, meta.num_rows)
    first = 0
    for group in range(meta.num_row_groups):
        n = meta.row_group(group).num_rows
        if first + n > start and first < stop:
            table = pf.read_row_group(group, columns=cols)
            records = table.to_pylist()
            for i in range(max(start, first), min(stop, first + n)):
                record = records[i - first]
                try:
                    yield i + 1, row_from_record(record, source)
                except BadRow as bad:
                    yield i + 1, BadRow(bad.reason, json.dumps(record, default=str))
        first += n
        if first >= stop:
            break


def plan_shards(source: Source, shard_rows: int, on_bad_row: OnBadRow = "stop",
                bad_rows: IO[str] | None = None) -> tuple[list[Shard], dict]:
    """Stream ``source`` once; return its shards and counts ``{"rows", "bad_rows", "lines"}``.

    ``bad_rows``: an open text file that receives one JSON line per quarantined row.
    """
    if shard_rows <= 0:
        raise SmecError(f"shard rows must be > 0, got {shard_rows}")
    if source.format == "parquet":
        items = ((n, 0, 0, row) for n, row in _parquet_rows(source))
    else:
        items = _iter_lines(source)
    seen: set[str] = set()   # the one structure that grows with the corpus (duplicate ids)
    shards: list[Shard] = []
    good = bad = lines = 0
    for lineno, offset, length, row in items:
        lines = lineno
        index = (lineno - 1) // shard_rows
        if index == len(shards):
            if shards:
                shards[-1].byte_end = offset
            shards.append(Shard(index, lineno, min(lineno + shard_rows - 1, lineno),
                                byte_start=offset))
        shard = shards[-1]
        shard.last_line, shard.byte_end = lineno, offset + length
        if row is None:
            continue
        if not isinstance(row, BadRow) and row[0] in seen:
            row = BadRow(f"duplicate id '{row[0]}'")
        if isinstance(row, BadRow):
            if on_bad_row == "stop":
                raise SmecError(f"{source.path}:{lineno}: {row.reason} "
                                "(--on-bad-row quarantine skips bad rows)")
            bad += 1
            shard.skip.append(lineno)
            if bad_rows is not None:
                entry = {"file": str(source.path), "line": lineno, "reason": row.reason}
                if row.raw is not None:
                    entry["raw"] = row.raw
                bad_rows.write(json.dumps(entry, ensure_ascii=False) + "\n")
            continue
        seen.add(row[0])
        shard.rows += 1
        good += 1
    return shards, {"rows": good, "bad_rows": bad, "lines": lines}


def read_shard(source: Source, shard: Shard) -> tuple[list[str], list[str]]:
    """The good rows of one shard, as (ids, texts), in file order."""
    skip = set(shard.skip)
    ids: list[str] = []
    texts: list[str] = []
    if source.format == "parquet":
        rows = _parquet_rows(source, shard.first_line - 1, shard.last_line)
    else:
        rows = _shard_lines(source, shard)
    for lineno, row in rows:
        if row is None or lineno in skip:
            continue
        if isinstance(row, BadRow):
            raise SmecError(f"{source.path}:{lineno}: {row.reason} (the file changed after it "
                            "was checked)")
        ids.append(row[0])
        texts.append(row[1])
    if len(ids) != shard.rows:
        raise SmecError(f"{source.path}: lines {shard.first_line}-{shard.last_line} hold "
                        f"{len(ids)} rows, {shard.rows} when checked; the file changed while "
                        "it was being embedded")
    return ids, texts


def _shard_lines(source: Source, shard: Shard
                 ) -> Iterator[tuple[int, tuple[str, str] | BadRow | None]]:
    with _open(source.path) as handle:
        handle.seek(shard.byte_start)
        data = handle.read(shard.byte_end - shard.byte_start)
    # BytesIO splits lines exactly as iterating the file did in plan_shards (on b"\n" only)
    for lineno, raw in enumerate(io.BytesIO(data), start=shard.first_line):
        if not raw.strip():
            yield lineno, None
            continue
        try:
            yield lineno, _decode_line(raw, source)
        except BadRow as bad:
            yield lineno, bad
