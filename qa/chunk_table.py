"""A loaded version's chunks as a few arrays, each `Chunk` made only when a request asks for it.

A list of `Chunk` objects, each with its own copy of its text and a tuple per sentence, costs
about 1.5 KB a chunk in every worker; here a chunk is its source's number and its sentence rows,
and its text a slice of the source text (from its first sentence's start to its last one's end, as
`SentenceChunker` cuts it) taken when the chunk is read. Chunk ids are `<source id>#<n>` (n counts
the source's chunks from 0, as `SentenceChunker` names them), so the id of a row and the row of an id
are computed, not stored; the table is made from each source's chunk count (the manifest's), without
reading `chunks.jsonl`: 6.9 of a 15.4 s load at 1M chunks.

Usage:
    >>> table = ChunkTable.from_counts(sources, {"a": 2, "b": 1}, sentence_spans, chunk_rows)
    >>> table[0].text == sources[table[0].source_id].text[table[0].start:table[0].end]
    True
    >>> table.positions["a#0"]
    0
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from qa.data import Chunk, Source


class ChunkTable(Sequence[Chunk]):
    """A version's chunks, in index order; `positions` maps a chunk id to its position."""

    def __init__(self, sources: Mapping[str, Source], source_ids: list[str], counts: np.ndarray,
                 sentence_spans: Sequence, chunk_rows: Sequence):
        self.sources = sources
        self.source_ids = source_ids  # in index order
        self.counts = np.asarray(counts, np.int64)  # chunks per source
        self.source_of = np.repeat(np.arange(len(source_ids), dtype=np.int32), self.counts)  # (chunks,) into source_ids
        self.sentence_spans = sentence_spans  # (sentences, 2) rows
        self.chunk_rows = chunk_rows  # (chunks, 2): each chunk's [first, last) sentence rows
        self.first = np.cumsum(self.counts) - self.counts  # position of each source's first chunk
        self.positions = _Positions(self)

    @classmethod
    def from_counts(cls, sources: Mapping[str, Source], counts: Mapping[str, int],
                    sentence_spans: Sequence, chunk_rows: Sequence) -> "ChunkTable":
        """From each source's chunk count, in index order (a source's chunks lie together)."""
        return cls(sources, list(counts), np.fromiter(counts.values(), np.int64, len(counts)), sentence_spans, chunk_rows)

    def __len__(self) -> int:
        return len(self.source_of)

    def chunk_id(self, position: int) -> str:
        s = int(self.source_of[position])
        return f"{self.source_ids[s]}#{position - int(self.first[s])}"

    def __getitem__(self, position: int) -> Chunk:  # type: ignore[override]  (no slices: nothing asks for them)
        if not -len(self) <= position < len(self):
            raise IndexError(position)
        position %= len(self)
        lo, hi = self.chunk_rows[position].tolist()
        return self.with_sentences(position, tuple(map(tuple, self.sentence_spans[lo:hi].tolist())))

    def with_sentences(self, position: int, sentences: tuple[tuple[int, int], ...]) -> Chunk:
        """The chunk at `position` (0 ≤ position < len) from its sentence spans, which the caller has
        read already (ranking has): its rows are not read again."""
        sid = self.source_ids[int(self.source_of[position])]
        start, end = sentences[0][0], sentences[-1][1]
        return Chunk(id=self.chunk_id(position), source_id=sid, start=start, end=end,
                     text=self.sources[sid].text[start:end], sentences=sentences)

    def __iter__(self) -> Iterator[Chunk]:
        return (self[i] for i in range(len(self)))

    def of_source(self, source_id: str) -> range:
        """Positions of one source's chunks (contiguous); empty for a source without any."""
        s = self.positions.number.get(source_id)
        return range(0) if s is None else range(int(self.first[s]), int(self.first[s] + self.counts[s]))


class _Positions(Mapping[str, int]):
    """Chunk id → position, computed from the id (`<source id>#<n>`)."""

    def __init__(self, table: ChunkTable):
        self.table = table
        self.number = {sid: i for i, sid in enumerate(table.source_ids)}

    def __getitem__(self, chunk_id: str) -> int:
        sid, _, n = chunk_id.rpartition("#")
        s = self.number.get(sid)
        if s is None or not n.isdigit() or int(n) >= self.table.counts[s]:
            raise KeyError(chunk_id)
        return int(self.table.first[s]) + int(n)

    def __iter__(self) -> Iterator[str]:
        return (self.table.chunk_id(i) for i in range(len(self.table)))

    def __len__(self) -> int:
        return len(self.table)
