"""A loaded version's sources, each text read from `sources.jsonl` (`qa.file_reads`) when asked for.

Held as `Source` objects, the cleaned texts were the largest part of a worker's own memory that grows
with the index (47 MB at 100k chunks, so about 470 MB at 1M, in every worker). Here only each source's
metadata stays in memory, for filters and listings; a source's text is decoded from its line when a
request reads it (a chunk's text, a citation, corroboration), and the most recently read are kept.

Usage:
    >>> sources = SourceTable(version_dir / "sources.jsonl", manifest["sources"])
    >>> sources.metas["a"].outlet          # no text decoded
    >>> sources["a"].text[0:40]            # its line decoded (then cached)
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from qa.data import Source, SourceMeta
from qa.file_reads import FileBytes

CACHED_SOURCES = 512  # decoded sources kept per loaded version (a question reads a few dozen)
META_FIRST = b'{"meta": '
_DECODER = json.JSONDecoder()


class DamagedSource(ValueError):
    """A source's line cannot be read where the index says it is; the message names the fix."""


def source_from_line(line: str | bytes) -> Source:
    """A source from its sources.jsonl line."""
    s = json.loads(line)
    return Source(meta=SourceMeta(**s["meta"]), text=s["text"], sha256=s["sha256"], file_name=s["file_name"],
                  pages=tuple(s.get("pages", ())))


def _meta(line: bytes) -> dict:
    """A sources.jsonl line's metadata. The build writes it first (`{"meta": {...}, "text": ...`), so
    only it is parsed, not the text (for a manifest without line lengths: parsing every line whole
    took 1.5 s of a load at 1M chunks)."""
    if line.startswith(META_FIRST):
        return _DECODER.raw_decode(line.decode("utf-8"), len(META_FIRST))[0]
    return json.loads(line)["meta"]


class SourceTable(Mapping[str, Source]):
    """Source id → `Source`, in index order; `metas` holds every source's metadata in memory.

    `entries`: the manifest's, when they give each source's metadata and line length (`bytes`, written
    since builds record it): then the file is not read at load (0.7 s at 1M chunks). Else each line's
    metadata is parsed."""

    def __init__(self, path: Path, entries: Mapping[str, dict] | None = None):
        self.metas: dict[str, SourceMeta] = {}
        self._lines: dict[str, tuple[int, int]] = {}  # id -> its line's [start, end) in the file
        self._data = FileBytes(path)
        at = 0
        if entries and all("bytes" in entry for entry in entries.values()):
            for source_id, entry in entries.items():
                self.metas[source_id] = SourceMeta(**entry["meta"])
                self._lines[source_id] = (at, at + entry["bytes"])
                at += entry["bytes"]
            if at != self._data.size:
                raise ValueError(f"{path.name} holds {self._data.size} bytes, its manifest says {at}")
        else:
            with path.open("rb") as f:
                for line in f:
                    meta = SourceMeta(**_meta(line))
                    self.metas[meta.id] = meta
                    self._lines[meta.id] = (at, at + len(line))
                    at += len(line)
        self._read = functools.lru_cache(maxsize=CACHED_SOURCES)(self._decode)  # thread-safe

    def _decode(self, source_id: str) -> Source:
        start, end = self._lines[source_id]
        try:
            source = source_from_line(self._data[start:end])
        except ValueError:
            source = None
        if source is None or source.meta.id != source_id:  # the manifest's line lengths are not the file's
            raise DamagedSource(f"the line of source {source_id} in {self._data.name} is not where the index "
                                f"says; run `qa index --full` to rebuild it")
        return source

    def __getitem__(self, source_id: str) -> Source:
        if source_id not in self._lines:
            raise KeyError(source_id)
        return self._read(source_id)

    def __contains__(self, source_id: object) -> bool:
        return source_id in self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

