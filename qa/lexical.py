"""BM25 over chunk texts (bm25s: scipy sparse scoring), with English stemming and stop words and
character bigrams for Chinese and Japanese.

Usage:
    >>> bm25 = LexicalIndex.build(["the treaty was signed in May", "oil fields"])
    >>> bm25.search("when was it signed", n=1)
    ([0], [0.87...])
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import bm25s
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


@dataclass
class LexicalIndex:
    retriever: bm25s.BM25
    size: int

    @classmethod
    def build(cls, texts: list[str]) -> "LexicalIndex":
        retriever = bm25s.BM25()
        # An empty corpus breaks bm25s; a placeholder document holding a token no query can
        # produce (terms are words) keeps it valid, and `size` 0 keeps it out of every search.
        retriever.index([terms(t) for t in texts] if texts else [[" "]], show_progress=False)
        return cls(retriever, len(texts))

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

