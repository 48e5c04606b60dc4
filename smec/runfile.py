"""TREC run files (``qid Q0 docid rank score tag``) and corpus snippets for search output."""
from __future__ import annotations

import json
from pathlib import Path

from smec.errors import SmecError
from smec.eval import Run
from smec.io import atomic_path

TAG = "smec"
BATCH = 256


def write_trec_run(searcher, queries: Path, out: Path, k: int, rescore: int) -> int:
    """Search every query of a queries.jsonl; write the run atomically; the number searched."""
    from smec.corpus import Source, plan_shards, read_shard
    source = Source(Path(queries), title_field=None)
    shards, _ = plan_shards(source, 1 << 30)    # validates every line first: file:line: reason
    ids, texts = read_shard(source, shards[0]) if shards else ([], [])
    if not ids:
        raise SmecError(f"{queries}: no queries")
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for start in range(0, len(ids), BATCH):
            hits = searcher.search(texts[start:start + BATCH], k, rescore)
            for qid, ranked in zip(ids[start:start + BATCH], hits):
                fh.writelines(f"{qid} Q0 {doc} {rank} {score:.6f} {TAG}\n"
                              for rank, (doc, score) in enumerate(ranked, 1))
    return len(ids)


def read_trec_run(path: Path) -> Run:
    """A TREC run file as {query id: {doc id: score}}; a bad line is one error naming it."""
    if not path.is_file():
        raise SmecError(f"--run {path}: file not found")
    run: Run = {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise SmecError(f"{path}:{number}: expected 'qid Q0 docid rank score tag', got "
                                f"{len(fields)} fields")
            try:
                score = float(fields[4])
            except ValueError:
                raise SmecError(f"{path}:{number}: score {fields[4]!r} is not a number") from None
            run.setdefault(fields[0], {})[fields[2]] = score
    if not run:
        raise SmecError(f"--run {path}: empty")
    return run


def snippets(corpus: Path, doc_ids: list[str], width: int = 80) -> dict[str, str]:
    """Title, else the start of the text, of ``doc_ids``; one pass that stops when all found."""
    if not corpus.is_file():
        raise SmecError(f"--corpus {corpus}: file not found")
    wanted, found = set(doc_ids), {}
    with corpus.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            doc = str(record.get("_id", record.get("id", "")))
            if doc in wanted:
                text = (record.get("title") or record.get("text") or "").replace("\n", " ")
                found[doc] = text if len(text) <= width else text[:width - 1] + "…"
                if len(found) == len(wanted):
                    break
    return found
