"""A loaded version's chunks as a few arrays, each `Chunk` made only when a request asks for it.

A list of `Chunk` objects, each with its own copy of its text and a tuple per sentence, costs
about 1.5 KB a chunk in every worker; here a chunk is a row of integers (source, start, end, its
sentence rows) and its text a slice of the source text taken when the chunk is read. Chunk ids
are `<source id>#<n>` (n counts the source's chunks from 0, as `SentenceChunker` names them), so the
id of a row and the row of an id are computed, not stored.

Usage:
    >>> table = ChunkTable.from_records(records, sources, sentence_spans, chunk_rows)
    >>> table[0].text == sources[table[0].source_id].text[table[0].start:table[0].end]
    True
    >>> table.positions["a#0"]
    0
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from qa.data import Chunk, Source


class ChunkTableError(ValueError):
    """The chunk records do not match the naming and order this table relies on."""


class ChunkTable(Sequence[Chunk]):
    """A version's chunks, in index order; `positions` maps a chunk id to its position."""

    def __init__(self, sources: Mapping[str, Source], source_ids: list[str], source_of: np.ndarray,
                 bounds: np.ndarray, sentence_spans: np.ndarray, chunk_rows: np.ndarray):
        self.sources = sources
        self.source_ids = source_ids  # distinct, in index order
        self.source_of = source_of  # (chunks,) index into source_ids
        self.bounds = bounds  # (chunks, 2) start, end in the source text
        self.sentence_spans = sentence_spans
        self.chunk_rows = chunk_rows
        self.counts = np.bincount(source_of, minlength=len(source_ids)).astype(np.int64)
        self.first = np.cumsum(self.counts) - self.counts  # position of each source's first chunk
        self.positions = _Positions(self)

    @classmethod
    def from_records(cls, records: Iterable[dict], sources: Mapping[str, Source],
                     sentence_spans: np.ndarray, chunk_rows: np.ndarray) -> "ChunkTable":
        """From chunks.jsonl's records (id, source_id, start, end), in index order: a source's
        chunks together and numbered from 0. Raises ChunkTableError for records that are not."""
        number: dict[str, int] = {}
        source_ids: list[str] = []
        source_of, bounds, seen = [], [], 0
        for record in records:
            sid = record["source_id"]
            if sid not in number:
                number[sid], seen = len(source_ids), 0
                source_ids.append(sid)
            elif number[sid] != len(source_ids) - 1:
                raise ChunkTableError(f"the chunks of source {sid} are not contiguous")
            if record["id"] != f"{sid}#{seen}":
                raise ChunkTableError(f"chunk {record['id']} is not named {sid}#{seen}")
            seen += 1
            source_of.append(number[sid])
            bounds.append((record["start"], record["end"]))
        return cls(sources, source_ids, np.asarray(source_of, np.int32),
                   np.asarray(bounds, np.int64).reshape(-1, 2), sentence_spans, chunk_rows)

    def __len__(self) -> int:
        return len(self.source_of)

    def chunk_id(self, position: int) -> str:
        s = int(self.source_of[position])
        return f"{self.source_ids[s]}#{position - int(self.first[s])}"

    def __getitem__(self, position: int) -> Chunk:  # type: ignore[override]  (no slices: nothing asks for them)
        if not -len(self) <= position < len(self):
            raise IndexError(position)
        position %= len(self)
        sid = self.source_ids[int(self.source_of[position])]
        start, end = self.bounds[position].tolist()
        lo, hi = self.chunk_rows[position].tolist()
        return Chunk(id=self.chunk_id(position), source_id=sid, start=start, end=end,
                     text=self.sources[sid].text[start:end],
                     sentences=tuple(map(tuple, self.sentence_spans[lo:hi].tolist())))

    def __iter__(self) -> Iterator[Chunk]:
        return (self[i] for i in range(len(self)))

    def of_source(self, source_id: str) -> range:
        """Positions of one source's chunks (contiguous); empty for a source without chunks."""
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
