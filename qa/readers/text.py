"""Plain text: decode safely (UTF-8, else a declared or detected charset, with a caveat).

Also the decoder every text-based format shares (HTML, Markdown, JSONL).

Usage:
    >>> TextReader().read(Path("a.txt"), "Le traité fut signé à Moscou.".encode("utf-8"))[0].text
    'Le traité fut signé à Moscou.'
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from charset_normalizer import from_bytes
from charset_normalizer.constant import IANA_SUPPORTED

from qa.readers import Document, ReadError

DECLARED_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.IGNORECASE)
# Only character encodings may decode a file: Python also registers codecs such as
# `unicode_escape` or `punycode` that turn bytes into arbitrary code points (lone surrogates).
TEXT_CODECS = frozenset(codecs.lookup(name).name for name in IANA_SUPPORTED)


def _text_codec(name: str) -> str | None:
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    return codec if codec in TEXT_CODECS else None


def decode(raw: bytes) -> tuple[str, str | None]:
    """UTF-8 (or UTF-16 with a byte-order mark) first; otherwise a declared charset, then a
    detected one, with a caveat saying so. Raises ReadError for binary or undecodable bytes."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), None
        except UnicodeDecodeError as err:
            raise ReadError(f"starts as UTF-16 but is not valid UTF-16 ({err.reason} at byte {err.start})") from None
    if b"\x00" in raw:
        raise ReadError("binary file (contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    declared = DECLARED_CHARSET.search(raw[:4096])
    if declared:
        name = declared.group(1).decode("ascii")
        codec = _text_codec(name)
        if codec:
            try:
                return raw.decode(codec), f"not UTF-8; decoded with its declared charset {name}"
            except UnicodeDecodeError:
                pass
    best = from_bytes(raw).best()
    if best is None or best.encoding is None:
        raise ReadError("binary or undecodable file (not UTF-8, no charset detected)")
    return str(best), f"not UTF-8; decoded as {best.encoding} (detected)"


@dataclass(frozen=True)
class TextReader:
    extensions: tuple[str, ...] = (".txt", ".text")

    def read(self, path: Path, raw: bytes) -> list[Document]:
        text, caveat = decode(raw)
        return [Document(text=text, caveat=caveat)]
