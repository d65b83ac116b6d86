"""Add or remove one source over HTTP (`POST /api/sources`, `DELETE /api/sources/<id>`).

An upload is checked before it touches the folder: a plain file name (no folders, not hidden),
a supported format, within the size limit, readable by its format's reader with some text, and
an id not already used. It is written to a hidden temporary file and renamed into place, so a
build (or the watcher) never sees half a file. Removal deletes the file behind an indexed source;
a record of a bulk file (JSONL) is refused, since deleting the file would remove its other records.
The caller (`qa.api`, which imports this module when a request needs it) then starts an
incremental rebuild.

Usage:
    >>> sid, name = store_upload(settings, "report.pdf", raw, known_ids=set(index.sources))
    >>> name = remove_source(settings, index.sources["report.pdf"])
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path, PurePosixPath

from qa.api import ApiError
from qa.cleaning import TextCleaner
from qa.config import Settings
from qa.data import Source
from qa.readers import SUPPORTED, ReadError, reader_for
from qa.sources import source_id


def _check_name(name: str) -> str:
    plain = PurePosixPath(name.replace("\\", "/")).name
    if not name or plain != name or name.startswith("."):
        raise ApiError(400, "invalid_file_name", f"{name[:100]!r} is not a plain, visible file name (no folders)")
    if PurePosixPath(name).suffix.lower() not in SUPPORTED:
        raise ApiError(415, "unsupported_format", f"{name[:100]!r}: supported formats are {', '.join(SUPPORTED)}")
    try:
        return source_id(name)
    except ReadError as err:
        raise ApiError(400, "invalid_file_name", f"{name[:100]!r} {err}") from None


def store_upload(settings: Settings, name: str, raw: bytes, known_ids: set[str]) -> tuple[str, str]:
    """Validate and store one file in the sources folder; return its source id and file name."""
    sid = _check_name(name)
    if len(raw) > settings.max_source_bytes:
        raise ApiError(413, "file_too_large", f"the file is {len(raw):,} bytes, over the {settings.max_source_bytes:,}-byte limit")
    folder = settings.sources_dir
    if (folder / name).exists() or (folder / name).is_symlink() or sid in known_ids:
        raise ApiError(409, "source_exists", f"a source {sid!r} ({name}) already exists; DELETE /api/sources/{sid} first")
    try:
        documents = reader_for(Path(name)).read(Path(name), raw)
    except ReadError as err:
        raise ApiError(400, "unreadable_file", f"{name}: {err}") from None
    except Exception as err:  # a parser's own failure on a damaged file
        raise ApiError(400, "unreadable_file", f"{name}: cannot be read ({type(err).__name__}: {err})") from None
    if not any(not d.error and TextCleaner().run(d.text).strip() for d in documents):
        raise ApiError(400, "unreadable_file", f"{name}: no text to index")
    tmp = folder / f".upload-{secrets.token_hex(4)}.tmp"  # hidden: builds and the watcher skip it
    try:
        tmp.write_bytes(raw)
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return sid, name


def remove_source(settings: Settings, source: Source) -> str:
    """Delete the file behind an indexed source; return its name relative to the sources folder."""
    if getattr(reader_for(Path(source.file_name)), "bulk", False):
        raise ApiError(409, "bulk_record", f"{source.id!r} is a record of {source.file_name}; edit that file to remove it")
    path = settings.sources_dir / source.file_name
    try:
        path.unlink()  # a link is removed, never what it points to
    except FileNotFoundError:
        raise ApiError(404, "unknown_source", f"the file {source.file_name} of {source.id!r} is already gone") from None
    return source.file_name
