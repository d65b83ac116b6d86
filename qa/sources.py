"""Read the sources folder: walk it, let each format's reader turn files into documents, clean them,
attach metadata.

The folder is walked recursively; hidden files and folders are skipped, links are followed only
to files inside the folder. A source's id is its path relative to the folder, made URL-safe
(`news/2025/a.html`); a `.txt` extension is dropped, so a top-level `a.txt` keeps the id `a`. A
JSONL record's id is the record's own `id`. Metadata: `sources.toml` (keyed by id or relative
path) over what the document states about itself, and nothing guessed.

Anything wrong with one file (unreadable, binary, a broken PDF, a bad charset, a link leading
outside) is reported once as a `Problem` with its reason and the rest of the build goes on.

A build passes what it remembers of each file it read before (`FileRecord`): a file whose size,
mtime and ctime are unchanged is not read again, its sources come back as `Kept` (metadata
recomputed, as sources.toml may have changed). ctime moves on every write, even one that restores
the mtime afterwards (`touch -d`), so restored timestamps do not hide an edit.

Usage:
    >>> sources, problems = SourceReader().run(Path("seeds"))
    >>> scan = SourceReader().scan(Path("seeds"), known=previous_files)  # Source or Kept, in walk order
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from qa.cleaning import TextCleaner
from qa.data import FileRecord, Kept, Problem, Source, SourceMeta, Stamp
from qa.readers import Document, ReadError, clean_meta, reader_for

METADATA_FILE = "sources.toml"
UNSAFE_ID_CHARS = re.compile(r"[^\w .\-]+")  # kept: letters (any script), digits, space, '.', '-', '_'
MAX_ID_CHARS = 200
SURROGATE = re.compile("[\ud800-\udfff]")
# What reading depends on besides the files: a change to any of these makes a build read every file again.
READING_CODE = ("sources.py", "cleaning.py", "readers")
READING_LIBRARIES = ("ftfy", "charset-normalizer", "trafilatura", "justext", "htmldate", "courlan", "lxml", "lxml_html_clean",
                     "python-frontmatter", "markdown-it-py", "pypdf", "PyYAML", "python-docx")
CLEANER_PROBE = "Caf\u00c3\u00a9 \u201cquoted\u201d\u00a0text \r\n\r\n\r\n  next\u200b line \ufb01ne -\nhyphen"


class SourceError(Exception):
    """The sources folder itself cannot be read; the message says why."""


def source_id(relative: str, drop_txt: bool = True) -> str:
    """A URL-safe, stable id for a relative path (or a record's id): each part keeps letters,
    digits, space, '.', '-' and '_', anything else becomes '-'.

    >>> source_id("news/2025/a b?.html"), source_id("000_e482.txt")
    ('news/2025/a b-.html', '000_e482')
    """
    path = PurePosixPath(relative)
    if drop_txt and path.suffix.lower() == ".txt":
        path = path.with_suffix("")
    parts = [UNSAFE_ID_CHARS.sub("-", part).strip() for part in path.parts if part not in ("/", ".", "..")]
    sid = "/".join(part for part in parts if part)
    if not sid or len(sid) > MAX_ID_CHARS:
        raise ReadError(f"cannot be made a source id (1 to {MAX_ID_CHARS} characters)")
    return sid


def _reason(err: Exception) -> str:
    """A ReadError says why in its own words; anything else is a parser's own failure on a damaged file."""
    return str(err) if isinstance(err, ReadError) else f"cannot be read ({type(err).__name__}: {err})"


def stamp(path: Path) -> Stamp | None:
    """The file's stamp (a link's target's), or None when it cannot be seen."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass
class Scan:
    """The sources folder as one build sees it: sources read or kept, in walk order; the problems;
    a record of every file whose sources a later build may keep."""

    sources: list[Source | Kept]
    problems: list[Problem]
    files: dict[str, FileRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceReader:
    """One step: a folder in, cleaned `Source`s and the `Problem`s met on the way out."""

    max_bytes: int = 5 * 1024 * 1024  # per document: a file, or a record of a bulk file
    max_bulk_bytes: int = 1024 * 1024 * 1024  # per bulk file (JSONL)
    cleaner: TextCleaner = TextCleaner()

    def run(self, folder: Path) -> tuple[list[Source], list[Problem]]:
        """Read and clean every file."""
        scan = self.scan(folder)
        return scan.sources, scan.problems  # type: ignore[return-value]  (nothing known: every source is read)

    def scan(self, folder: Path, known: dict[str, FileRecord] | None = None) -> Scan:
        """Read every file but those `known` with their current stamp, whose sources come back as `Kept`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"sources folder {folder} does not exist or is not a folder")
        known = known or {}
        problems: list[Problem] = []
        metadata = self._read_metadata(folder, problems)
        scan = Scan([], problems)
        seen: dict[str, str] = {}
        named: set[str] = set()

        def accept(source: Source | Kept, label: str, relative: str) -> bool:
            if source.id in seen:
                problems.append(Problem(label, f"id {source.id!r} is already used by {seen[source.id]}"))
                return False
            seen[source.id] = label
            named.update((source.id, relative))
            scan.sources.append(source)
            return True

        for relative in self._walk(folder, problems):
            now = stamp(folder / relative)
            record = known.get(relative)
            if record is not None and now == record.stamp:
                problems.extend(record.problems)
                labels = [f"{relative}#{sid}" if len(record.sources) > 1 else relative for sid, _ in record.sources]
                kept = [accept(Kept(self._meta(relative, sid, stated, metadata), relative), label, relative)
                        for (sid, stated), label in zip(record.sources, labels)]
                if all(kept):
                    scan.files[relative] = record
                continue
            try:
                raw, documents = self._read_file(folder, relative)
            except Exception as err:  # whatever fails on one file is reported, and the rest builds
                problems.append(Problem(relative, _reason(err)))
                continue
            first_problem, given, remember = len(problems), [], now is not None
            for doc in documents:
                label = f"{relative}#{doc.key}" if doc.key is not None else relative
                if doc.error:
                    problems.append(Problem(label, doc.error))
                    continue
                try:
                    source, caveats = self._source(relative, raw, doc, metadata)
                except Exception as err:
                    problems.append(Problem(label, _reason(err)))
                    continue
                # A document dropped for a taken id would be missing from what a later build keeps.
                remember = accept(source, label, relative) and remember
                given.append((source.id, doc.meta))
                problems.extend(Problem(label, caveat, skipped=False) for caveat in caveats)
            if remember and given:
                scan.files[relative] = FileRecord(now, tuple(given), tuple(problems[first_problem:]))
        for unknown in sorted(set(metadata) - named):
            problems.append(Problem(METADATA_FILE, f"metadata for {unknown!r} names no source file", skipped=False))
        return scan

    def fingerprint(self) -> str:
        """What reading depends on besides the files: this code, its libraries' versions, the limits
        and what the cleaner makes of a probe text. Files a build of another fingerprint read are read again."""
        # Python's version too: its Unicode tables decide what the cleaner and the sentence splitter see.
        digest = hashlib.sha256(repr((self.max_bytes, self.max_bulk_bytes, self.cleaner, self.cleaner.run(CLEANER_PROBE),
                                      sys.version)).encode())
        here = Path(__file__).parent
        for name in READING_CODE:
            for path in sorted((here / name).rglob("*.py")) if (here / name).is_dir() else [here / name]:
                digest.update(path.read_bytes())
        for library in READING_LIBRARIES:
            try:
                digest.update(f"{library} {importlib.metadata.version(library)}".encode())
            except importlib.metadata.PackageNotFoundError:
                digest.update(f"{library} absent".encode())
        return digest.hexdigest()

    @staticmethod
    def _walk(folder: Path, problems: list[Problem]) -> list[str]:
        """Relative paths of the candidate files, sorted; hidden entries skipped, linked folders reported."""

        def report(err: OSError) -> None:
            problems.append(Problem(Path(err.filename).relative_to(folder).as_posix(), f"unreadable folder: {err.strerror}"))

        found: list[str] = []
        for root, dirs, files in os.walk(folder, onerror=report):
            base = Path(root).relative_to(folder)
            visible = sorted(d for d in dirs if not d.startswith("."))
            linked = [d for d in visible if (Path(root) / d).is_symlink()]
            # Linked folders are not followed (os.walk's default): they can lead outside or loop back.
            problems.extend(Problem((base / d).as_posix(), "symbolic link to a folder; not followed") for d in linked)
            dirs[:] = [d for d in visible if d not in linked]
            found.extend((base / name).as_posix() for name in files
                         if not name.startswith(".") and not (base == Path(".") and name == METADATA_FILE))
        return sorted(found)

    def _read_file(self, folder: Path, relative: str) -> tuple[bytes, list[Document]]:
        path = folder / relative
        try:
            if path.is_symlink():
                # Links are followed only inside the folder: nothing outside it is ever read or served.
                target = path.resolve(strict=True)
                if not target.is_relative_to(folder.resolve()):
                    raise ReadError("symbolic link to a file outside the sources folder; not followed")
            if not path.is_file():
                raise ReadError("not a regular file")
            reader = reader_for(path)
            size, limit = path.stat().st_size, self.max_bulk_bytes if getattr(reader, "bulk", False) else self.max_bytes
            if size > limit:
                raise ReadError(f"file is {size:,} bytes, over the {limit:,}-byte limit")
            raw = path.read_bytes()
        except RuntimeError:  # how Python 3.11 reports a symbolic link loop
            raise ReadError("symbolic link loop; not followed") from None
        except OSError as err:
            raise ReadError(f"unreadable: {err.strerror or err}") from None
        if not raw.strip():
            raise ReadError("empty file")
        return raw, reader.read(path, raw)

    def _source(self, relative: str, raw: bytes, doc: Document, metadata: dict[str, dict[str, str]]) -> tuple[Source, list[str]]:
        sid = source_id(doc.key, drop_txt=False) if doc.key is not None else source_id(relative)
        if doc.record is not None and len(doc.record) > self.max_bytes:
            raise ReadError(f"record is {len(doc.record):,} bytes, over the {self.max_bytes:,}-byte limit")
        caveats = [doc.caveat] if doc.caveat else []
        text = doc.text
        if SURROGATE.search(text):
            # A lone surrogate cannot be stored as UTF-8; it carries no character, so it is marked, not kept.
            text = SURROGATE.sub("\ufffd", text)
            caveats.append("lone surrogate code points replaced by U+FFFD")
        cleaned, pages = self._clean(text, doc.pages)
        if not cleaned.strip():
            raise ReadError("empty after cleaning")
        digest = hashlib.sha256(doc.record if doc.record is not None else raw).hexdigest()
        source = Source(meta=self._meta(relative, sid, doc.meta, metadata), text=cleaned, sha256=digest, file_name=relative, pages=pages)
        return source, caveats

    @staticmethod
    def _meta(relative: str, sid: str, stated: dict[str, str], metadata: dict[str, dict[str, str]]) -> SourceMeta:
        # Precedence: sources.toml over the document's own metadata; nothing is guessed.
        return SourceMeta(id=sid, **{**stated, **metadata.get(relative, {}), **metadata.get(sid, {})})

    def _clean(self, text: str, pages: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        """Clean the text; a paged document page by page, so each page's start is known in the cleaned text."""
        if not pages:
            return self.cleaner.run(text), ()
        bounds = [*pages, len(text)]
        parts = [self.cleaner.run(text[a:b]) for a, b in zip(bounds, bounds[1:])]
        starts, at = [], 0
        for part in parts:
            starts.append(at)
            at += len(part) + 2  # the blank line that joins pages
        return "\n\n".join(parts), tuple(starts)

    @staticmethod
    def _read_metadata(folder: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
        path = folder / METADATA_FILE
        if not path.is_file():
            return {}
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            problems.append(Problem(METADATA_FILE, f"ignored, cannot be parsed: {err}", skipped=False))
            return {}
        out: dict[str, dict[str, str]] = {}
        for key, entry in table.items():
            if not isinstance(entry, dict):
                problems.append(Problem(METADATA_FILE, f"[{key}] is not a table; ignored", skipped=False))
                continue
            out[key] = clean_meta(entry)
        return out
