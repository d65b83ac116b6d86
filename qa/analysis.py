"""The terms BM25 indexes a text by, and a text's term counts: what a build stores and keeps.

Lower-cased words, English stop words dropped, Snowball-stemmed (PyStemmer), and Chinese and
Japanese runs as character bigrams. Highlighting, abstention and the stored readings
(`qa.readings`) read the same terms, so they weigh what BM25 matches. Stored counts and readings
are trusted only under the same `analysis_fingerprint()`: this module and its libraries' versions,
so that a change to how BM25 scores or searches (`qa.lexical`) leaves them valid.

Usage:
    >>> terms("The treaties 东京大学")
    ['treati', '东京', '京大', '大学']
    >>> counts = TermCounts.of(texts, vocabulary)  # adds new terms to `vocabulary`
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

TOKEN = re.compile(r"(?u)\b\w+\b")  # keep one-character tokens: "7" in "October 7" is the answer
STOPWORDS = frozenset(STOPWORDS_EN_PLUS)
# Chinese and Japanese write words without spaces: a run of Han or kana is one \w+ token, which no
# question ever repeats exactly. Overlapping character bigrams are the standard index terms there.
CJK_RUN = re.compile(r"[\u3005\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


@cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def terms(text: str) -> list[str]:
    """Lower-cased words, English stop words dropped, Snowball-stemmed, and each Chinese or
    Japanese run as character bigrams: the analysis BM25 indexes with, shared by highlighting and
    abstention so they weigh the same terms.

    >>> terms("The treaties 东京大学")
    ['treati', '东京', '京大', '大学']
    """
    lowered = text.lower()
    runs = CJK_RUN.findall(lowered)
    if runs:
        lowered = CJK_RUN.sub(" ", lowered)
    words = _stemmer().stemWords([w for w in TOKEN.findall(lowered) if w not in STOPWORDS])
    return words + [bigram for run in runs for bigram in _bigrams(run)]


@cache
def analysis_fingerprint() -> str:
    """What the stored term counts and readings depend on: this module (tokens, stop words, stemming,
    counting) and its libraries' versions. Counts kept from another analysis would not match new ones."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for library in ("bm25s", "PyStemmer"):
        digest.update(f"{library} {importlib.metadata.version(library)}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class TermCounts:
    """Texts as sparse rows of term counts (CSR: row i is `ids[rows[i]:rows[i+1]]`, each term once)."""

    vocabulary: list[str]  # term id -> term
    rows: np.ndarray  # (texts + 1,) int64
    ids: np.ndarray  # int32 term ids
    counts: np.ndarray  # int32, how often each term occurs in its text

    @classmethod
    def of(cls, texts: list[str], vocabulary: dict[str, int]) -> "TermCounts":
        """The texts' counts; a term not in `vocabulary` is added to it (ids are `vocabulary`'s)."""
        lengths, ids, counts = [], [], []
        for text in texts:
            row = Counter(vocabulary.setdefault(t, len(vocabulary)) for t in terms(text))
            lengths.append(len(row))
            ids.extend(row)
            counts.extend(row.values())
        return cls(list(vocabulary), np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
                   np.asarray(ids, np.int32), np.asarray(counts, np.int32))

    def slice(self, start: int, stop: int) -> "TermCounts":
        """Rows start to stop (the ids keep this vocabulary)."""
        lo, hi = int(self.rows[start]), int(self.rows[stop])
        return TermCounts(self.vocabulary, self.rows[start : stop + 1] - lo, self.ids[lo:hi], self.counts[lo:hi])

    @classmethod
    def concat(cls, parts: list["TermCounts"], vocabulary: list[str]) -> "TermCounts":
        """The parts' rows one after another; each part's ids must be ids of `vocabulary`."""
        lengths = [np.diff(p.rows) for p in parts]
        return cls(vocabulary, np.concatenate([[0], np.cumsum(np.concatenate(lengths or [[]]), dtype=np.int64)]),
                   np.concatenate([p.ids for p in parts] or [np.zeros(0, np.int32)]).astype(np.int32, copy=False),
                   np.concatenate([p.counts for p in parts] or [np.zeros(0, np.int32)]).astype(np.int32, copy=False))

    def compact(self) -> "TermCounts":
        """Without the terms no text holds any more (a removed source's), ids renumbered in order."""
        used = np.bincount(self.ids, minlength=len(self.vocabulary)) > 0
        if used.all():
            return self
        renumber = np.cumsum(used, dtype=np.int64) - 1
        return TermCounts([t for t, u in zip(self.vocabulary, used.tolist()) if u], self.rows,
                          renumber[self.ids].astype(np.int32), self.counts)
