"""Clean raw article text before chunking: repair mojibake, drop boilerplate, collapse repeats.

The cleaned text is the canonical text of a source: every citation offset points into it, so
cleaning runs once, at index time, and its output is stored and served as is.

Usage:
    >>> TextCleaner().run("By MisiĂłn Verdad\\n© 2025 Example. All rights reserved.")
    'By Misión Verdad'
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

# Windows code pages that UTF-8 bytes are most often mis-decoded as. ftfy covers cp1252/latin-1
# but not the Central European cp1250 damage seen in the wild (`MisiĂłn` for `Misión`).
MOJIBAKE_CODECS = ("cp1252", "cp1250")


@cache
def _mojibake_pattern(codec: str) -> re.Pattern[str]:
    """Runs that look like UTF-8 multi-byte sequences decoded as `codec`: a lead byte then continuations."""

    def chars(lo: int, hi: int) -> str:
        out = []
        for b in range(lo, hi + 1):
            try:
                out.append(bytes([b]).decode(codec))
            except UnicodeDecodeError:
                continue
        return re.escape("".join(out))

    return re.compile(f"[{chars(0xC2, 0xF4)}][{chars(0x80, 0xBF)}]{{1,3}}")


def repair_mojibake(text: str) -> str:
    """Re-decode each run that round-trips `codec → UTF-8` exactly; leave everything else alone.

    Byte 0xAD decodes to an invisible soft hyphen that later tools often strip, so `í` (C3 AD)
    tends to survive as a lone lead character (`RodrĂguez`). Where the same code page already
    produced a proven repair in this text, a lone 0xC3 lead before a lowercase letter is read as `í`.
    """
    for codec in MOJIBAKE_CODECS:
        repaired = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal repaired
            try:
                fixed = m.group().encode(codec).decode("utf-8")
            except UnicodeError:
                return m.group()
            repaired += 1
            return fixed

        text = _mojibake_pattern(codec).sub(sub, text)
        if repaired:
            lone_lead = re.escape(bytes([0xC3]).decode(codec))
            text = re.sub(f"(?<=[a-z]){lone_lead}(?=[a-z])", "í", text)
    return text


# Lines that answer no question. Kept narrow and generic: they must hold for collections never seen.
BOILERPLATE_LINE = re.compile(
    r"""^(?:
        .*\ball\ rights\ reserved\b.*
      | ©.{0,120}
      | .*\bdo\ not\ (?:reproduce|republish|redistribute)\b.*
      | this\ (?:post|article|page)\ is\ (?:also\ )?available\ in\b.*
      | (?:share|tweet|print|e-?mail|paylaş|compartir|partager|teilen)(?:\ (?:this|on\ \w+))?\W*
      | (?:similar|related|recommended|popular)\ (?:posts|articles|stories)\W*
      | (?:read\ more|click\ here|subscribe)\b.{0,60}
    )$""",
    re.IGNORECASE | re.VERBOSE,
)

# A donation plea opens a footer block; everything from it to the end of the text is dropped,
# but only when it starts near the end, so a plea quoted mid-article is never cut.
DONATION_PLEA = re.compile(
    r"\b(?:donate|donation|support (?:[\w-]+ ){0,4}(?:journalism|media|us|our work)|become a (?:patron|member|subscriber))\b",
    re.IGNORECASE,
)
FOOTER_LINES = 12
MIN_DUPLICATE_CHARS = 12  # shorter repeated lines ("Yes.") may be content, not a repeated caption


@dataclass(frozen=True)
class TextCleaner:
    """One step: raw text in, cleaned text out."""

    drop_boilerplate: bool = True

    def run(self, raw: str) -> str:
        text = repair_mojibake(raw.replace("\r\n", "\n").replace("\r", "\n"))
        text = unicodedata.normalize("NFC", text)
        # No-break and zero-width characters are noise for readers and tokenizers alike.
        text = text.replace("\u00a0", " ").replace("\u200b", "").replace("\ufeff", "").replace("\u00ad", "")
        lines = [line.rstrip() for line in text.split("\n")]
        if self.drop_boilerplate:
            lines = self._drop_footer(lines)
            lines = [line for line in lines if not BOILERPLATE_LINE.match(line.strip())]
        lines = self._collapse_repeats(lines)
        return "\n".join(lines).strip()

    @staticmethod
    def _drop_footer(lines: list[str]) -> list[str]:
        content = [i for i, line in enumerate(lines) if line.strip()]
        for i in content[-FOOTER_LINES:]:
            if DONATION_PLEA.search(lines[i]):
                return lines[:i]
        return lines

    @staticmethod
    def _collapse_repeats(lines: list[str]) -> list[str]:
        """Keep the first of exact duplicate lines and at most one blank line in a row."""
        seen: set[str] = set()
        out: list[str] = []
        for line in lines:
            key = line.strip()
            if not key:
                if out and out[-1]:
                    out.append("")
                continue
            if len(key) >= MIN_DUPLICATE_CHARS:
                if key in seen:
                    continue
                seen.add(key)
            out.append(line)
        return out
