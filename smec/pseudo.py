"""Pseudo queries mined from a corpus: training pairs with no judged query and no extra model.

Where the documents have their own titles, a title is the query of its document (title → body,
as in the title/abstract pairs of Contriever-style pre-training). Where titles are missing or
shared (ArguAna's titles are debate topics, one per hundred arguments), one sentence of the
document is its query: the inverse-cloze task of Lee et al., 2019 ("Latent Retrieval for Weakly
Supervised Open Domain Question Answering").

The query is taken out of the document it must find, or the pair is near-trivial: a title
embedded with its own body, or a sentence left inside its document, finds it at the top almost
always (a pseudo hold-out of 0.97 nDCG@10 before any training), and the rank loss has nothing
to learn. So each pair's target is the document *without* its query (the body alone; the text
minus the sentence), written to ``documents.jsonl`` and embedded once; training reads those
rows in place of the originals (:func:`with_rewritten`). Only the documents that gave a query
are embedded again. The pairs then train with the supervised rank loss and mined hard
negatives, like real queries.

Everything is a pure function of the corpus and the seed, so a run folder's pseudo set can be
rebuilt bit for bit.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smec.data import Qrels, _iter_jsonl
from smec.io import atomic_path

#: a title is a query when at least this share of documents have one, and this share of those
#: titles are distinct (else one title would be the query of many documents)
TITLE_COVERAGE = 0.8
TITLE_DISTINCT = 0.9
MIN_SENTENCE_WORDS = 5
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class PseudoQueries:
    source: str                  # "title" or "sentence" (inverse cloze)
    queries: dict[str, str]      # pseudo query id -> text
    qrels: Qrels                 # pseudo query id -> {its document: 1}
    documents: dict[str, dict[str, str]]   # its document, the query taken out: {title, text}

    def write(self, folder: Path) -> None:
        """``queries.jsonl``, ``qrels.tsv`` and ``pseudo.json`` (how they were made)."""
        from smec.runfolder import PseudoSet
        names = PseudoSet(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(names.queries) as tmp:
            tmp.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                   for q, t in self.queries.items()))
        with atomic_path(names.qrels) as tmp:
            tmp.write_text("query-id\tcorpus-id\tscore\n" + "".join(
                f"{q}\t{d}\t{g}\n" for q, docs in self.qrels.items() for d, g in docs.items()))
        with atomic_path(names.documents) as tmp:
            tmp.write_text("".join(json.dumps({"_id": d, **record}) + "\n"
                                   for d, record in self.documents.items()))
        with atomic_path(names.info) as tmp:
            tmp.write_text(json.dumps({"source": self.source, "queries": len(self.queries)}))


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` with at least :data:`MIN_SENTENCE_WORDS` words."""
    return [s.strip() for s in _SENTENCE_END.split(text)
            if len(s.split()) >= MIN_SENTENCE_WORDS]


def without(text: str, sentence: str) -> str:
    """``text`` with (the first occurrence of) ``sentence`` taken out."""
    return " ".join(text.replace(sentence, " ", 1).split())


def mine_pseudo_queries(corpus: Path, max_queries: int, seed: int = 0) -> PseudoQueries:
    """Up to ``max_queries`` (query, document) pairs from a BEIR ``corpus.jsonl``: titles when
    the corpus has its own distinct titles, else one sentence per document (inverse cloze);
    each document's text without its query goes with it.

    Documents are sampled by a hash of (seed, id), so the set does not depend on file order;
    a document with no usable title or sentence, or with too little text left once its query
    is taken out, is skipped."""
    records = [(str(r["_id"]), (r.get("title") or "").strip(), r["text"])
               for _, r in _iter_jsonl(Path(corpus))]
    titles = [t for _, t, _ in records if t]
    use_titles = (len(titles) >= TITLE_COVERAGE * len(records)
                  and len(set(titles)) >= TITLE_DISTINCT * len(titles))
    ranked = sorted(records, key=lambda r: zlib.crc32(f"pseudo:{seed}:{r[0]}".encode()))
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    documents: dict[str, dict[str, str]] = {}
    for doc_id, title, text in ranked:
        if len(queries) >= max_queries:
            break
        if use_titles:
            query, rest = title, {"title": "", "text": text}   # the body alone
        else:
            candidates = sentences(text)
            query = candidates[zlib.crc32(f"{seed}:{doc_id}".encode()) % len(candidates)] \
                if candidates else ""
            rest = {"title": title, "text": without(text, query)}
        if query and len(rest["text"].split()) >= (1 if use_titles else MIN_SENTENCE_WORDS):
            qid = f"pseudo:{doc_id}"
            queries[qid], qrels[qid], documents[doc_id] = query, {doc_id: 1}, rest
    return PseudoQueries("title" if use_titles else "sentence", queries, qrels, documents)


def with_rewritten(doc_ids: list[str], doc_vecs: np.ndarray, rewritten_ids: list[str],
                   rewritten: np.ndarray) -> np.ndarray:
    """``doc_vecs`` with the rows of ``rewritten_ids`` replaced by ``rewritten`` (the pseudo
    pairs' documents without their queries); the corpus itself is left as it is."""
    row = {d: i for i, d in enumerate(doc_ids)}
    out = np.array(doc_vecs, dtype=np.float32, copy=True)
    kept = [i for i, d in enumerate(rewritten_ids) if d in row]   # a document the store lacks
    out[[row[rewritten_ids[i]] for i in kept]] = np.asarray(rewritten)[kept]   # trains no pair
    return out
