"""BM25 over chunk texts (bm25s: scipy sparse scoring) of the terms `qa.analysis` reads.

A build keeps each chunk's term counts (`TermCounts`) beside the index, so the next build
analyses only the chunks it adds; the scores (whose IDF and average length are collection-wide)
are then computed from the counts in a few array operations with bm25s's own formulas.

Usage:
    >>> bm25 = LexicalIndex.build(["the treaty was signed in May", "oil fields"])
    >>> bm25.search("when was it signed", n=1)
    ([0], [0.25...])
    >>> bm25, counts = LexicalIndex.from_counts(TermCounts.concat(parts, vocabulary))
"""
from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import bm25s
import numpy as np
import scipy.sparse as sp
from bm25s.scoring import _build_idf_array, _select_idf_scorer, _select_tfc_scorer

from qa.analysis import TermCounts, terms
from qa.file_reads import NpyRows
from qa.versions import FULL_REBUILD_HINT

POSTINGS = ("data", "indices")  # bm25s's score matrix (CSC): each term's scores and their texts


class DamagedPostings(ValueError):
    """A version's BM25 postings are not what its index says (a file cut short or overwritten under
    a worker that loaded it); the message names the fix."""


@cache
def scoring_fingerprint() -> str:
    """What a version's stored score matrix (`bm25/`) depends on beyond its counts: this module and
    bm25s's version. A build whose base was scored otherwise scores it again (no text is read)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"bm25s {importlib.metadata.version('bm25s')}".encode())
    return digest.hexdigest()


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
        # A question's postings are read out of `data` and `indices` as it asks for them (`scores`,
        # `qa.file_reads`): every worker shares them in the page cache. `indptr` (a row per term) is held.
        retriever = bm25s.BM25.load(str(folder), show_progress=False, mmap=True)
        retriever.scores = {**retriever.scores, "indptr": np.array(retriever.scores["indptr"]),
                            **{k: NpyRows(folder / f"{k}.csc.index.npy") for k in POSTINGS}}
        return cls(retriever, size)

    def search(self, query: str, n: int, mask: np.ndarray | None = None) -> tuple[list[int], list[float]]:
        """Indices of the best `n` texts with positive score, best first; with `mask` (one weight per
        text), only among the texts it weighs above 0."""
        # Each term once: a question of one word repeated 500 times scans its posting list once.
        known = [t for t in dict.fromkeys(terms(query)) if t in self.retriever.vocab_dict]
        if not known or not self.size:
            return [], []
        docs, scores = best(self.scores(known, mask), n)
        return docs.tolist(), scores.tolist()

    def scores(self, known: list[str], mask: np.ndarray | None = None) -> np.ndarray:
        """Every text's score for these terms (each in the vocabulary, once), as bm25s's `get_scores`
        computes it: the terms' postings summed text by text, term after term, so the same float32
        sums. One sparse product over all the postings, read into one array, does it rather than
        `np.add.at` a term at a time: at 1M chunks (a median 400k postings a question), 1.31-1.55 → 1.00-1.24 ms
        a question on average. (bm25s's default method, the one built here, adds no score for absent terms.)
        Raises DamagedPostings when the postings read are not a valid matrix: scipy's product would
        write outside the array."""
        postings, dtype = self.retriever.scores, np.dtype(self.retriever.dtype)
        n_docs = postings["num_docs"]
        if not known:
            return np.zeros(n_docs, dtype)
        indptr = postings["indptr"]
        runs = [(int(indptr[i]), int(indptr[i + 1])) for i in map(self.retriever.vocab_dict.__getitem__, known)]
        if isinstance(postings["data"], NpyRows):  # read from the files (`load`)
            if len(runs) > 1:  # every run asked of the kernel before the first is read
                for name in POSTINGS:
                    postings[name].prefetch(runs)
            try:
                data, indices = (postings[name].runs(runs) for name in POSTINGS)
            except (ValueError, IndexError) as err:  # a file cut short, or an `indptr` past its end
                raise DamagedPostings(f"the BM25 postings of this index version cannot be read ({err}); {FULL_REBUILD_HINT}") from err
        else:
            data, indices = (np.concatenate([postings[name][a:b] for a, b in runs]) for name in POSTINGS)
        # One pass as unsigned: a negative text number reads as a huge one.
        if len(indices) and indices.view(indices.dtype.str.replace("i", "u")).max() >= n_docs:
            raise DamagedPostings(f"the BM25 postings of this index version name texts it does not hold; {FULL_REBUILD_HINT}")
        bounds = np.cumsum([0] + [b - a for a, b in runs], dtype=np.int64)
        if bounds[-1] <= np.iinfo(indices.dtype).max:  # the postings' own type: scipy then copies none of them
            bounds = bounds.astype(indices.dtype)
        summed = sp.csc_array((data, indices, bounds), shape=(n_docs, len(runs))) @ np.ones(len(runs), dtype)
        if mask is not None:
            summed *= mask
        return summed

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


def best(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the `n` highest positive scores, best first, ties in index order.

    bm25s partitions the whole array: 17 ms a question on average at 1M chunks (README, Performance).
    The `n`-th best positive score of an evenly spaced sample is no higher than the whole array's,
    so every text scoring below it is dropped in one pass first, and only the few left are
    partitioned: the same result, exactly."""
    if n <= 0:
        return np.zeros(0, np.intp), scores[:0]
    floor = 0.0
    stride = len(scores) // (64 * n)
    if stride > 1:
        sample = scores[::stride]
        sample = sample[sample > 0]
        if len(sample) >= n:
            floor = float(np.partition(sample, len(sample) - n)[len(sample) - n])
    docs = np.flatnonzero(scores >= floor if floor > 0 else scores > 0)
    values = scores[docs]
    if len(docs) > n:  # the n best, and every text tied with the last of them
        kept = values >= np.partition(values, len(values) - n)[len(values) - n]
        docs, values = docs[kept], values[kept]
    order = np.lexsort((docs, -values))[:n]
    return docs[order], values[order]
