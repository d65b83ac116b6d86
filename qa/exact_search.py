"""A small version's dense candidates by exact scan of its chunk vectors, instead of a Chroma query.

A Chroma query costs at least about 1.1 ms of CPU, even on 57 vectors (in its Rust bindings),
which was a fifth of a small collection's ranking step. Up to `EXACT_MAX` chunks, one matrix
product with the version's chunk vectors (held in float32: 15 MB at the limit for 384
dimensions) costs less (README, Performance: "Small versions scanned exactly") and returns the
exact nearest chunks, where HNSW's are approximate. Larger versions query Chroma, whose cost grows
far slower than N; until their store has opened (Chroma loads an HNSW graph of 1M chunks in about
3 s) they are scanned from the file in blocks (`ExactSearch.reading`: about 1.1 s a question at 1M).

Usage:
    >>> search = ExactSearch.of(index.chunk_vectors)  # None above EXACT_MAX chunks
    >>> positions = search.run(question_vector, n=40)
    >>> ExactSearch.reading(index.chunk_vectors).run(question_vector, n=40)  # any size, from the file
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qa.file_reads import NpyRows

EXACT_MAX = 10_000
SCAN_ROWS = 16_384  # rows of a file scan's block: 24 MB in float32 at 384 dimensions


@dataclass(frozen=True)
class ExactSearch:
    """Chunk vectors as rows of a float32 matrix, row i the chunk at position i; or the version's
    file of them, read a block at a time for each question (`reading`)."""

    matrix: np.ndarray | NpyRows

    @classmethod
    def of(cls, chunk_vectors: NpyRows) -> "ExactSearch | None":
        """Read a version's chunk vectors into memory, if it has at most EXACT_MAX chunks."""
        if len(chunk_vectors) > EXACT_MAX:
            return None
        matrix = np.ascontiguousarray(chunk_vectors[:], dtype=np.float32)
        matrix.flags.writeable = False  # shared by every request on the version
        return cls(matrix)

    @classmethod
    def reading(cls, chunk_vectors: NpyRows) -> "ExactSearch":
        """A scan of the file itself, of any size: nothing held between questions."""
        return cls(chunk_vectors)

    def run(self, query: np.ndarray, n: int, mask: np.ndarray | None = None) -> list[int]:
        """Positions of the `n` chunks most similar to `query` (among those where `mask`, the BM25
        weight mask of a filter, is non-zero), best first, ties in position order. A chunk whose
        score is not a number is never returned."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if isinstance(self.matrix, np.ndarray):
            scores = self.matrix @ query
        else:
            scores = np.empty(len(self.matrix), np.float32)
            for start in range(0, len(scores), SCAN_ROWS):
                scores[start : start + SCAN_ROWS] = self.matrix[start : start + SCAN_ROWS].astype(np.float32) @ query
        keep = np.isfinite(scores)
        if mask is not None:
            if mask.shape != scores.shape:
                raise ValueError(f"a mask of {mask.shape} for {len(scores)} chunks")
            keep &= mask != 0
        n = min(n, int(np.count_nonzero(keep)))
        if n <= 0:
            return []
        scores = np.where(keep, scores, -np.inf)
        # The n-th best score, then of the chunks tied at it the first positions (a partition's
        # choice among ties is arbitrary). It is finite, so no excluded chunk reaches it.
        kth = np.partition(scores, len(scores) - n)[len(scores) - n]
        above = np.flatnonzero(scores > kth)
        top = np.concatenate([above, np.flatnonzero(scores == kth)[: n - len(above)]])
        return top[np.lexsort((top, -scores[top]))].tolist()
