"""A loaded version's stored readings (`qa.readings`): lines read and decoded when a question asks.

Apart from `qa.readings` because that module's text is part of the fingerprint the lines are stored
under: changing how the files are read must not make every version's lines stale.

Usage:
    >>> stored = StoredReadings.open(version_dir, manifest)   # None: made by other code, read the text
    >>> sentences, contexts = stored.passages([[lo, hi], ...], [position, ...])  # chunks' sentence rows and contexts
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from qa.file_reads import FileBytes, NpyRows
from qa.readings import CONTEXTS, FILES, SENTENCES, SentenceFacts, decode, fingerprint

COPY_BYTES = 1 << 24  # a build copies kept lines this much at a time


class StoredReadings:
    """The lines of `sentence_readings.jsonl` (a row per sentence) and `context_readings.jsonl` (a row
    per chunk), found through their `_offsets.npy`."""

    def __init__(self, folder: Path):
        self._lines = {name: FileBytes(folder / f"{name}.jsonl") for name in (SENTENCES, CONTEXTS)}
        self._offsets = {name: NpyRows(folder / f"{name}_offsets.npy") for name in (SENTENCES, CONTEXTS)}

    @classmethod
    def open(cls, folder: Path, manifest: dict) -> "StoredReadings | None":
        """The version's stored readings when this code made them and the version holds their files
        (a copy sealed by a worker before readings were stored may carry the key without them)."""
        if manifest.get("readings") != fingerprint() or not set(FILES) <= manifest.get("files", {}).keys():
            return None
        return cls(folder)

    def passages(self, rows: list[list[int]], positions: list[int]) -> tuple[list[list[SentenceFacts]], list[SentenceFacts]]:
        """The sentence readings of several chunks (`rows`: each one's [lo, hi)) and the contexts of
        `positions`: each file's ranges read together (`FileBytes.read_many`), all lines in one
        parse a file. A question's ~80 candidates are mostly new to a worker at 1M chunks."""
        sentences = decode(b"".join(self._lines[SENTENCES].read_many(self._offsets[SENTENCES].ends(rows))))
        contexts = decode(b"".join(self._lines[CONTEXTS].read_many(self._offsets[CONTEXTS].ends([(p, p + 1) for p in positions]))))
        ends = np.cumsum([hi - lo for lo, hi in rows]).tolist()
        return [sentences[a:b] for a, b in zip([0, *ends], ends)], contexts

    def rows(self, name: str, lo: int, hi: int) -> bytes:
        """The lines of rows [lo, hi) of `name` as they lie (one source's: a payload holds them)."""
        (start, end), = self._offsets[name].ends([(lo, hi)])  # one read
        return self._lines[name][start:end]

    def copy(self, name: str, lo: int, hi: int, out: BinaryIO) -> np.ndarray:
        """Write the lines of rows [lo, hi) of `name` to `out`, COPY_BYTES at a time (a run of kept
        sources may be nearly the whole file); returns each line's length."""
        offsets = self._offsets[name][lo : hi + 1]
        start, end = offsets[[0, -1]].tolist()
        for at in range(start, end, COPY_BYTES):
            out.write(self._lines[name][at : min(end, at + COPY_BYTES)])
        return np.diff(offsets)
