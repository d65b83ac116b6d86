"""A small version's dense candidates by exact scan of its chunk vectors, instead of a Chroma query.

A Chroma query costs about 1.1 ms of CPU even on 57 vectors (its Rust bindings: the segment and
its id mapping, whatever the size), which is a fifth of a small collection's ranking step. Up to
`EXACT_MAX` chunks, one matrix product with the version's chunk vectors (held in float32: 15 MB
at the limit) costs less than that (README, Performance) and returns the exact nearest chunks,
where HNSW's are approximate. Larger versions query Chroma, whose cost grows far slower than N.

Usage:
    >>> search = ExactSearch.of(index.chunk_vectors)  # None above EXACT_MAX chunks
    >>> positions = search.run(question_vector, n=40)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qa.file_reads import NpyRows

EXACT_MAX = 10_000


@dataclass(frozen=True)
class ExactSearch:
    """Chunk vectors as rows of a float32 matrix, row i the chunk at position i."""

    matrix: np.ndarray

    @classmethod
    def of(cls, chunk_vectors: NpyRows) -> "ExactSearch | None":
        """Read a version's chunk vectors into memory, if it has at most EXACT_MAX chunks."""
        if len(chunk_vectors) > EXACT_MAX:
            return None
        return cls(np.ascontiguousarray(chunk_vectors[:], dtype=np.float32))

    def run(self, query: np.ndarray, n: int, mask: np.ndarray | None = None) -> list[int]:
        """Positions of the `n` chunks most similar to `query` (among those where `mask` is non-zero,
        the BM25 weight mask of a filter), best first; ties in position order."""
        scores = self.matrix @ np.asarray(query, dtype=np.float32)
        candidates = np.flatnonzero(mask) if mask is not None else np.arange(len(scores))
        n = min(n, len(candidates))
        if n <= 0:
            return []
        if n < len(candidates):
            # The n-th best score; of the chunks tied at it, the first positions (argpartition's
            # choice among ties is arbitrary).
            kth = scores[candidates[np.argpartition(-scores[candidates], n - 1)[n - 1]]]
            above = candidates[scores[candidates] > kth]
            candidates = np.concatenate([above, candidates[scores[candidates] == kth][: n - len(above)]])
        return candidates[np.lexsort((candidates, -scores[candidates]))].tolist()
