"""BM25 over chunk texts (bm25s: scipy sparse scoring), with English stemming and stop words and
character bigrams for Chinese and Japanese.

A build keeps each chunk's term counts (`TermCounts`) beside the index, so the next build
analyses only the chunks it adds; the scores (whose IDF and average length are collection-wide)
are then computed from the counts in a few array operations with bm25s's own formulas.

Usage:
    >>> bm25 = LexicalIndex.build(["the treaty was signed in May", "oil fields"])
    >>> bm25.search("when was it signed", n=1)
    ([0], [0.87...])
    >>> counts = TermCounts.of(texts, vocabulary)  # adds new terms to `vocabulary`
    >>> bm25, counts = LexicalIndex.from_counts(TermCounts.concat(parts, vocabulary))
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import bm25s
import numpy as np
import scipy.sparse as sp
import Stemmer
from bm25s.scoring import _build_idf_array, _select_idf_scorer, _select_tfc_scorer
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
    """What the stored term counts depend on: this module (tokens, stop words, stemming, scoring) and
    its libraries' versions. Counts kept from a build of another analysis would not match new ones."""
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


@dataclass
class LexicalIndex:
    retriever: bm25s.BM25
    size: int

    @classmethod
    def build(cls, texts: list[str]) -> "LexicalIndex":
        return cls.from_counts(TermCounts.of(texts, {}))[0]

    @classmethod
    def from_counts(cls, counts: TermCounts) -> tuple["LexicalIndex", TermCounts]:
        """BM25 over the counted texts, scored as bm25s scores them, in array operations rather than
        bm25s's loop over texts; and the counts as stored (compacted)."""
        counts = counts.compact()
        size = len(counts.rows) - 1
        # An empty corpus breaks bm25s; a placeholder document holding a token no query can
        # produce (terms are words) keeps it valid, and `size` 0 keeps it out of every search.
        scored = counts if size else TermCounts([" "], np.array([0, 1]), np.zeros(1, np.int32), np.ones(1, np.int32))
        retriever = bm25s.BM25()
        n_docs, n_terms = len(scored.rows) - 1, len(scored.vocabulary)
        # Each text's length in terms: differences of the running total at its row bounds (a text
        # without a term, such as "To be or not to be." or an emoji, has length 0 wherever it sits).
        running = np.concatenate([[0], np.cumsum(scored.counts, dtype=np.int64)])
        lengths = running[scored.rows[1:]] - running[scored.rows[:-1]]
        frequencies = np.bincount(scored.ids, minlength=n_terms)
        idf = _build_idf_array(dict(enumerate(frequencies.tolist())), n_docs, _select_idf_scorer(retriever.idf_method), retriever.dtype)
        tfc = _select_tfc_scorer(retriever.method)(
            tf_array=scored.counts.astype(retriever.dtype), l_d=np.repeat(lengths, np.diff(scored.rows)),
            l_avg=lengths.mean(), k1=retriever.k1, b=retriever.b, delta=retriever.delta)
        matrix = sp.csr_matrix(((idf[scored.ids] * tfc).astype(retriever.dtype), scored.ids, scored.rows),
                               shape=(n_docs, n_terms)).tocsc()
        matrix.sort_indices()
        retriever.scores = {"data": matrix.data, "indices": matrix.indices.astype(retriever.int_dtype),
                            "indptr": matrix.indptr.astype(np.int64), "num_docs": n_docs}
        retriever.nonoccurrence_array = None  # what bm25s sets for its default method, which needs none
        # As bm25s.BM25.index leaves it: the empty token last, for a query without any known token.
        retriever.vocab_dict = {**{t: i for i, t in enumerate(scored.vocabulary)}, "": n_terms}
        retriever.unique_token_ids_set = set(retriever.vocab_dict.values())
        return cls(retriever, size), counts

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, size: int) -> "LexicalIndex":
        # Memory-mapped: every worker reads the score matrix from the one page cache. As plain ndarray
        # views of the maps: np.memmap's bookkeeping on every slice costs more than the slice.
        retriever = bm25s.BM25.load(str(folder), show_progress=False, mmap=True)
        retriever.scores = {k: np.asarray(v) if isinstance(v, np.memmap) else v for k, v in retriever.scores.items()}
        return cls(retriever, size)

    def search(self, query: str, n: int, mask: np.ndarray | None = None) -> tuple[list[int], list[float]]:
        """Indices of the best `n` texts with positive score, best first; with `mask` (one weight per
        text), only among the texts it weighs above 0."""
        # Each term once: a question of one word repeated 500 times scans its posting list once.
        known = [t for t in dict.fromkeys(terms(query)) if t in self.retriever.vocab_dict]
        if not known or not self.size:
            return [], []
        docs, scores = self.retriever.retrieve([known], k=min(n, self.size), show_progress=False, weight_mask=mask)
        keep = scores[0] > 0
        return docs[0][keep].tolist(), scores[0][keep].tolist()

    def knows(self, term: str) -> bool:
        return term in self.retriever.vocab_dict

    def idf(self, words: list[str]) -> np.ndarray:
        """Inverse document frequency of each term, for weighting a question's terms. A term the corpus
        lacks gets the highest weight (document frequency 0): a question about something the sources
        never mention is not answered by covering its common words."""
        vocab = self.retriever.vocab_dict
        ids = np.array([vocab.get(t, -1) for t in words], dtype=np.int64)
        # A term's document frequency is the length of its posting list: two reads of `indptr` each.
        indptr = self.retriever.scores["indptr"]
        known = ids >= 0
        df = np.zeros(len(ids))
        df[known] = indptr[ids[known] + 1] - indptr[ids[known]]
        return np.log1p((self.size - df + 0.5) / (df + 0.5))

