"""What ranking reads in a sentence and in a passage's context, read once when the index is built.

A question reads every sentence of its ~80 candidate passages (BM25 terms and `qa.signals`' dates,
numbers and answer types, ~85 µs a sentence) and each passage's context: the source's title and
the section heading above the passage; corroboration reads the names and hedges of the sentences
close to a result. None of it depends on the question, so a build reads each sentence row and each
chunk's context once and stores them as lines (`[types, terms, marks, names, hedged]` in JSON)
beside the vectors: `sentence_readings.jsonl` (one line per sentence row) and
`context_readings.jsonl` (one per chunk), with their offsets in `.npy` files (read by
`qa.stored_readings`). A question then decodes its candidates' lines (a few µs each) instead of reading their
text, so its cost does not grow with the share of candidates new to a worker.

The lines hold for the code that read them: a version records `fingerprint()` (this module,
`qa.signals` and the BM25 analysis), a build on a version of another fingerprint reads its kept
sources again (without embedding them), and a worker whose code differs reads the text as before.

Usage:
    >>> facts = read("The treaty was signed on 7 May 2025.")
    >>> decode(encode(facts)) == [facts]
    True
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from qa.data import Source
from qa.analysis import analysis_fingerprint
from qa.analysis import terms as analyze
from qa.signals import HEDGE, TextFacts, names, read_text

SENTENCES, CONTEXTS = "sentence_readings", "context_readings"  # each: <name>.jsonl and <name>_offsets.npy
FILES = tuple(f"{name}{suffix}" for name in (SENTENCES, CONTEXTS) for suffix in (".jsonl", "_offsets.npy"))
HEADING_MAX_WORDS = 12
HEADING_LOOKBACK = 6000  # characters searched above a passage for its section heading

Span = tuple[int, int]


@dataclass(frozen=True)
class SentenceFacts:
    terms: frozenset[str]
    facts: TextFacts
    names: frozenset[str] = frozenset()  # the terms of its names (`signals.names`): what a fact is about
    hedged: bool = False  # states a forecast, hope, plan or claim (`signals.HEDGE`) rather than what happened


@functools.cache  # the code this process runs, not what a later deploy puts on disk
def fingerprint() -> str:
    """What the stored lines depend on: this module, `qa.signals`, the BM25 analysis, and the Python
    and Unicode versions their patterns and case rules follow."""
    digest = hashlib.sha256(f"{analysis_fingerprint()} {sys.version_info[:2]} {unicodedata.unidata_version}".encode())
    for module in ("readings.py", "signals.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()


def read(text: str) -> SentenceFacts:
    return SentenceFacts(frozenset(analyze(text)), read_text(text), frozenset(analyze(" ".join(names(text)))),
                         HEDGE.search(text) is not None)


def encode(facts: SentenceFacts) -> bytes:
    return (json.dumps([facts.facts.types, sorted(facts.terms), sorted(facts.facts.marks), sorted(facts.names),
                        int(facts.hedged)], ensure_ascii=False) + "\n").encode("utf-8")


def decode(lines: bytes) -> list[SentenceFacts]:
    """Consecutive lines, in one parse (JSON escapes a newline inside a string: each raw one ends a line)."""
    return [SentenceFacts(frozenset(terms), TextFacts(frozenset(marks), types), frozenset(names), bool(hedged))
            for types, terms, marks, names, hedged in json.loads(b"[" + lines.rstrip(b"\n").replace(b"\n", b",") + b"]")]


def context(source: Source, start: int, sentences: Sequence[Span]) -> str:
    """A passage's context (starting at `start`, of these sentence spans): the source's title and the
    section heading above it ("The 1998 season" over a paragraph that says only "that year")."""
    return "\n".join(t for t in (_title(source), _heading_above(source.text, start, sentences)) if t)


def read_source(source: Source, spans: Sequence[Span], chunks: Sequence[tuple[int, Sequence[Span]]]) -> tuple[list[bytes], list[bytes]]:
    """One source's lines: one per sentence row (`spans`) and one per chunk (its start and sentence
    spans). A context shared by the source's chunks (most are: same title, same heading) is read once."""
    contexts: dict[str, bytes] = {}
    lines = []
    for start, sentences in chunks:
        text = context(source, start, sentences)
        if text not in contexts:
            contexts[text] = encode(read(text))
        lines.append(contexts[text])
    return [encode(read(source.text[a:b])) for a, b in spans], lines


def _looks_like_heading(line: str) -> bool:
    words = line.split()
    return 0 < len(words) <= HEADING_MAX_WORDS and line.rstrip()[-1] not in ".!?;:,\"”’)" and line[0].isupper()


def _title(source: Source) -> str | None:
    """The title a passage is read under: the stated one, else a plain-text document's heading-like
    first line (for ranking only: a citation never shows a title the source does not state)."""
    if source.meta.title:
        return source.meta.title
    first = source.text.lstrip().split("\n", 1)[0].strip()
    return first if first and _looks_like_heading(first) else None


def _heading_above(text: str, start: int, sentences: Sequence[Span]) -> str | None:
    """The nearest heading-like line (short, capitalised, no closing punctuation, after a blank
    line) above the passage, unless the passage opens with its own heading."""
    if len(sentences) > 1:
        first, end = sentences[0]
        if "\n" not in text[first:end] and text[end:end + 1] == "\n" and _looks_like_heading(text[first:end]):
            return None
    lines = text[max(0, start - HEADING_LOOKBACK) : start].split("\n")
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if line and _looks_like_heading(line) and (i == 0 or not lines[i - 1].strip()):
            return line
    return None
