"""Readers turn one file's bytes into plain-text `Document`s; the registry picks one by extension.

Every format ends as plain text (no markup) plus the metadata the document states about itself;
`qa.sources` cleans that text and serves it, so citations point into what a reader sees. A reader
checks that the content is the format its extension claims and raises `ReadError` (a reason a
person can act on) for anything it cannot read; the build reports it and goes on.

Usage:
    >>> reader = reader_for(Path("notes/2025/a.md"))
    >>> docs = reader.read(Path("notes/2025/a.md"), raw)
    >>> docs[0].text, docs[0].meta.get("title")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# What a document may say about itself; the same names as `qa.data.SourceMeta` (minus the id).
META_FIELDS = ("title", "outlet", "author", "published", "url", "language")


class ReadError(Exception):
    """A file (or a record in it) that cannot become a document; the message says why."""


@dataclass(frozen=True)
class Document:
    """Plain text and what the document says about itself.

    `pages` holds the start offset in `text` of each page (PDF), empty for formats without
    pages. `key` is a record's own id inside a multi-document file (JSONL), `record` the bytes
    it came from (its change is what triggers its re-embedding). `caveat` is a warning that did
    not stop the read (a charset that had to be guessed); `error` marks a record that cannot be
    read while the file's other records can.
    """

    text: str
    meta: dict[str, str] = field(default_factory=dict)
    pages: tuple[int, ...] = ()
    key: str | None = None
    record: bytes | None = None
    caveat: str | None = None
    error: str | None = None


class Reader(Protocol):
    """One format. A reader of many documents per file (JSONL) also sets `bulk = True`: its
    files may exceed the per-document size limit, which then applies to each record."""

    extensions: tuple[str, ...]  # lower-case, with the dot

    def read(self, path: Path, raw: bytes) -> list[Document]:
        """The documents in `raw` (the bytes of `path`). Raises ReadError."""
        ...


def clean_meta(values: dict[str, object]) -> dict[str, str]:
    """Keep the known fields that hold a value, as stripped strings: a document's metadata is
    taken as stated, never guessed."""
    out = {}
    for name in META_FIELDS:
        value = values.get(name)
        if value is not None and str(value).strip():
            out[name] = str(value).strip()
    return out


def _registry() -> dict[str, Reader]:
    from qa.readers.docx import DocxReader
    from qa.readers.html import HtmlReader
    from qa.readers.jsonl import JsonlReader
    from qa.readers.markdown import MarkdownReader
    from qa.readers.pdf import PdfReader
    from qa.readers.text import TextReader

    readers: list[Reader] = [TextReader(), MarkdownReader(), HtmlReader(), PdfReader(), DocxReader(), JsonlReader()]
    return {ext: reader for reader in readers for ext in reader.extensions}


REGISTRY = _registry()
SUPPORTED = tuple(sorted(REGISTRY))


def reader_for(path: Path) -> Reader:
    """The reader for `path`'s extension; a file of another extension is tried as text
    (the text reader refuses binary content)."""
    return REGISTRY.get(path.suffix.lower(), REGISTRY[".txt"])
