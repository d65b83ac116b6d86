"""BM25 over chunk texts (bm25s: scipy sparse scoring), with English stemming and stop words.

Usage:
    >>> bm25 = LexicalIndex.build(["the treaty was signed in May", "oil fields"])
    >>> bm25.search("when was it signed", n=1)
    ([0], [0.87...])
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

TOKEN_PATTERN = r"(?u)\b\w+\b"  # keep one-character tokens: "7" in "October 7" is the answer


@cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    """The analysis BM25 uses, exposed so highlighting can weigh the same terms."""
    return bm25s.tokenize(
        texts, token_pattern=TOKEN_PATTERN, stopwords="en_plus", stemmer=_stemmer(), return_ids=False, show_progress=False
    )


@dataclass
class LexicalIndex:
    retriever: bm25s.BM25
    size: int

    @classmethod
    def build(cls, texts: list[str]) -> "LexicalIndex":
        retriever = bm25s.BM25()
        # An empty vocabulary breaks bm25s; a placeholder document-free token keeps it valid.
        retriever.index(tokenize(texts) if texts else [[]], show_progress=False)
        return cls(retriever, len(texts))

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, size: int) -> "LexicalIndex":
        return cls(bm25s.BM25.load(str(folder), show_progress=False, mmap=False), size)

    def search(self, query: str, n: int) -> tuple[list[int], list[float]]:
        """Indices of the best `n` texts with positive score, best first."""
        terms = [t for t in tokenize([query])[0] if t in self.retriever.vocab_dict]
        if not terms or not self.size:
            return [], []
        docs, scores = self.retriever.retrieve([terms], k=min(n, self.size), show_progress=False)
        keep = scores[0] > 0
        return docs[0][keep].tolist(), scores[0][keep].tolist()

    def knows(self, term: str) -> bool:
        return term in self.retriever.vocab_dict

    def idf(self, terms: list[str]) -> np.ndarray:
        """Inverse document frequency of each term (0 for terms the corpus lacks), for highlight weighting."""
        vocab = self.retriever.vocab_dict
        ids = [vocab.get(t) for t in terms]
        # Column sums of the sparse score matrix would be costly; document frequency is stored per token.
        nonzero = np.diff(self.retriever.scores["indptr"])
        df = np.array([nonzero[i] if i is not None else 0 for i in ids], dtype=np.float64)
        return np.where(df > 0, np.log1p((self.size - df + 0.5) / (df + 0.5)), 0.0)

