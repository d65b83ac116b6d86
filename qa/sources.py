"""Read source files from a folder: decode safely, clean, attach metadata from `sources.toml`.

A source's id is its file name without extension, so ids stay stable across rebuilds. A file
that cannot be used (binary, empty, too large, a link leading outside the folder, unreadable)
is reported once with its reason and the rest of the build goes on.

Usage:
    >>> sources, problems = SourceReader().run(Path("seeds"))
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from charset_normalizer import from_bytes

from qa.cleaning import TextCleaner
from qa.data import Problem, Source, SourceMeta

METADATA_FILE = "sources.toml"
SOURCE_ID = re.compile(r"^[\w][\w .\-]{0,199}$")  # letters (any script), digits, space, dot, dash
DECLARED_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.IGNORECASE)


class SourceError(Exception):
    """A file that cannot become a source; the message says why."""


@dataclass(frozen=True)
class SourceReader:
    """One step: a folder in, cleaned `Source`s and the `Problem`s met on the way out."""

    max_bytes: int = 5 * 1024 * 1024
    cleaner: TextCleaner = TextCleaner()

    def run(self, folder: Path) -> tuple[list[Source], list[Problem]]:
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"sources folder {folder} does not exist or is not a folder")
        problems: list[Problem] = []
        metadata = self._read_metadata(folder, problems)
        sources: list[Source] = []
        seen: dict[str, str] = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.name == METADATA_FILE:
                continue
            try:
                source, caveat = self._read_one(folder, path, metadata)
            except SourceError as err:
                problems.append(Problem(path.name, str(err)))
                continue
            if source.id in seen:
                problems.append(Problem(path.name, f"id {source.id!r} is already used by {seen[source.id]}"))
                continue
            seen[source.id] = path.name
            sources.append(source)
            if caveat:
                problems.append(Problem(path.name, caveat, skipped=False))
        for unknown in sorted(set(metadata) - set(seen)):
            problems.append(Problem(METADATA_FILE, f"metadata for {unknown!r} names no source file", skipped=False))
        return sources, problems

    def _read_one(self, folder: Path, path: Path, metadata: dict[str, SourceMeta]) -> tuple[Source, str | None]:
        if path.is_symlink():
            # Links are followed only inside the folder: nothing outside it is ever read or served.
            target = path.resolve()
            if not target.is_relative_to(folder.resolve()):
                raise SourceError("symbolic link to a file outside the sources folder; not followed")
        if not path.is_file():
            raise SourceError("not a regular file")
        source_id = path.stem
        if not SOURCE_ID.match(source_id):
            raise SourceError("file name cannot be used as a source id (letters, digits, space, '.', '-', '_')")
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise SourceError(f"file is {size:,} bytes, over the {self.max_bytes:,}-byte limit")
            raw = path.read_bytes()
        except OSError as err:
            raise SourceError(f"unreadable: {err.strerror or err}") from err
        text, caveat = self._decode(raw)
        cleaned = self.cleaner.run(text)
        if not cleaned.strip():
            raise SourceError("empty after cleaning" if raw.strip() else "empty file")
        meta = metadata.get(source_id, SourceMeta(id=source_id))
        return Source(meta=meta, text=cleaned, sha256=hashlib.sha256(raw).hexdigest(), file_name=path.name), caveat

    @staticmethod
    def _decode(raw: bytes) -> tuple[str, str | None]:
        """UTF-8 first; otherwise a declared charset, then a detected one, with a caveat saying so."""
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16"), None
        if b"\x00" in raw:
            raise SourceError("binary file (contains NUL bytes)")
        try:
            return raw.decode("utf-8-sig"), None
        except UnicodeDecodeError:
            pass
        declared = DECLARED_CHARSET.search(raw[:4096])
        if declared:
            try:
                charset = declared.group(1).decode("ascii")
                return raw.decode(charset), f"not UTF-8; decoded with its declared charset {charset}"
            except (LookupError, UnicodeDecodeError):
                pass
        best = from_bytes(raw).best()
        if best is None or best.encoding is None:
            raise SourceError("binary or undecodable file (not UTF-8, no charset detected)")
        return str(best), f"not UTF-8; decoded as {best.encoding} (detected)"

    @staticmethod
    def _read_metadata(folder: Path, problems: list[Problem]) -> dict[str, SourceMeta]:
        path = folder / METADATA_FILE
        if not path.is_file():
            return {}
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            problems.append(Problem(METADATA_FILE, f"ignored, cannot be parsed: {err}", skipped=False))
            return {}
        allowed = {f.name for f in fields(SourceMeta)} - {"id"}
        out: dict[str, SourceMeta] = {}
        for source_id, entry in table.items():
            if not isinstance(entry, dict):
                problems.append(Problem(METADATA_FILE, f"[{source_id}] is not a table; ignored", skipped=False))
                continue
            values = {k: str(v) for k, v in entry.items() if k in allowed and v not in (None, "")}
            out[source_id] = SourceMeta(id=source_id, **values)
        return out
