"""Clean raw article text before chunking: repair mojibake, drop boilerplate, collapse repeats.

The cleaned text is the canonical text of a source: every citation offset points into it, so
cleaning runs once, at index time, and its output is stored and served as is. Correct text must
come out as it went in: repairs happen only where the document as a whole shows the damage, and
boilerplate rules touch only short lines (a paragraph that quotes a footer phrase is content).

Usage:
    >>> TextCleaner().run("By MisiĂłn Verdad\\n© 2025 Example. All rights reserved.")
    'By Misión Verdad'
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cache

import ftfy
import ftfy.badness

# ftfy repairs cp1252/latin-1 mojibake when its badness measure shows the text damaged, but its
# measure does not see the Central European cp1250 damage met in the wild (`MisiĂłn` for
# `Misión`): that one is repaired here, with its own document-level evidence.
CP1250 = "cp1250"
# Share of damage among the accented letters from which a document counts as cp1250-damaged:
# one odd spot in a long, correctly accented text is not proof.
MIN_DAMAGE_SHARE = 0.1


@cache
def _codec_chars(codec: str, lo: int, hi: int) -> str:
    out = []
    for b in range(lo, hi + 1):
        try:
            out.append(bytes([b]).decode(codec))
        except UnicodeDecodeError:
            continue
    return "".join(out)


@cache
def _mojibake_pattern(codec: str) -> re.Pattern[str]:
    """Runs that look like UTF-8 multi-byte sequences decoded as `codec`: a lead byte then continuations."""
    lead, cont = re.escape(_codec_chars(codec, 0xC2, 0xF4)), re.escape(_codec_chars(codec, 0x80, 0xBF))
    return re.compile(f"[{lead}][{cont}]{{1,3}}")


def _round_trips(run: str, codec: str) -> str | None:
    try:
        return run.encode(codec).decode("utf-8")
    except UnicodeError:
        return None


def _shows_damage(text: str, codec: str) -> bool:
    """Whether `text` as a whole is mis-decoded UTF-8 read as `codec`.

    The evidence is a lead character that is an upper-case letter right after a lower-case one
    (`MisiĂłn`, `RodrĂguez`): UTF-8 of a lower-case accented letter read in a Windows code page
    starts with an upper-case letter, which correct text in no language puts mid-word. All-caps
    words (`ZESPÓŁ`, `DÜŞÜNCE`) and accents before quotes (`“JOSÉ”`, `Fuß“`) never count. The
    damage must also be a fair share of the document's accented letters.
    """
    leads = set(_codec_chars(codec, 0xC2, 0xF4))
    breaks = sum(1 for prev, ch in zip(text, text[1:]) if ch in leads and ch.isupper() and prev.islower())
    if not breaks:
        return False
    accented = sum(1 for ch in text if ord(ch) > 127 and ch.isalpha())
    return breaks / accented >= MIN_DAMAGE_SHARE


def repair_mojibake(text: str) -> str:
    """Repair UTF-8 read as a Windows code page, only in a document shown damaged as a whole.

    ftfy handles the cp1252 family (with its own whole-text badness test); the cp1250 pass
    re-decodes each run that round-trips `cp1250 → UTF-8` exactly. Byte 0xAD decodes to an
    invisible soft hyphen that later tools often strip, so `í` (C3 AD) tends to survive as a lone
    lead character (`RodrĂguez`); where a proven repair happened, a lone 0xC3 lead between
    lower-case letters is read as `í`.
    """
    if ftfy.badness.is_bad(text):
        text = ftfy.fix_encoding(text)
    if not _shows_damage(text, CP1250):
        return text
    repaired = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal repaired
        fixed = _round_trips(m.group(), CP1250)
        if fixed is None:
            return m.group()
        repaired += 1
        return fixed

    text = _mojibake_pattern(CP1250).sub(sub, text)
    if repaired:
        lone_lead = re.escape(bytes([0xC3]).decode(CP1250))
        text = re.sub(f"(?<=[a-z]){lone_lead}(?=[a-z])", "í", text)
    return text


# Lines that answer no question, wherever they sit. Whole-line forms, kept narrow and generic:
# they must hold for collections never seen.
BOILERPLATE_LINE = re.compile(
    r"""^(?:
        this\ (?:post|article|page)\ is\ (?:also\ )?available\ in\b.{0,80}
      | (?:share|tweet|print|e-?mail|paylaş|compartir|partager|teilen)(?:\ (?:this|on\ \w+))?\W*
      | (?:similar|related|recommended|popular)\ (?:posts|articles|stories)\W*
      | (?:read\ more|click\ here|subscribe)\b.{0,60}
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# Footer lines: dropped only inside the trailing block, where a site's footer sits.
FOOTER_LINE = re.compile(
    r"^(?:.*\ball rights reserved\b.*|©.{0,120}|.*\bdo not (?:reproduce|republish|redistribute)\b.*)$",
    re.IGNORECASE,
)
# A donation plea in the trailing block opens the footer: it and everything after it are dropped.
DONATION_PLEA = re.compile(
    r"\b(?:donate|donation|support (?:[\w-]+ ){0,4}(?:journalism|media|us|our work)|become a (?:patron|member|subscriber))\b",
    re.IGNORECASE,
)
FOOTER_LINES = 12  # the trailing block is at most this many non-blank lines...
SHORT_LINE = 200  # ...each at most this long: a footer, caption, headline or byline, not a paragraph
TABLE_ROW = re.compile(r"\||\t")  # a repeated table row is data, not a repeated caption
MIN_DUPLICATE_CHARS = 12  # shorter repeated lines ("Yes.") may be content, not a repeated caption


@dataclass(frozen=True)
class TextCleaner:
    """One step: raw text in, cleaned text out. Format-agnostic: every reader's text goes through it."""

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
        """Inside the trailing block of short lines: cut at a donation plea, drop footer lines."""
        block: list[int] = []
        for i in reversed(range(len(lines))):
            if not lines[i].strip():
                continue
            if len(lines[i].strip()) > SHORT_LINE or len(block) == FOOTER_LINES:
                break
            block.append(i)
        plea = min((i for i in block if DONATION_PLEA.search(lines[i])), default=len(lines))
        dropped = {i for i in block if FOOTER_LINE.match(lines[i].strip())}
        return [line for j, line in enumerate(lines[:plea]) if j not in dropped]

    @staticmethod
    def _collapse_repeats(lines: list[str]) -> list[str]:
        """Drop the second copy of a short line that appears exactly twice (a headline, caption or
        byline a page shows twice) and keep at most one blank line in a row. Lines seen three or
        more times (refrains), long lines (paragraphs) and table rows are content and stay."""
        counts = Counter(line.strip() for line in lines)
        seen: set[str] = set()
        out: list[str] = []
        for line in lines:
            key = line.strip()
            if not key:
                if out and out[-1]:
                    out.append("")
                continue
            if counts[key] == 2 and MIN_DUPLICATE_CHARS <= len(key) <= SHORT_LINE and not TABLE_ROW.search(key):
                if key in seen:
                    continue
                seen.add(key)
            out.append(line)
        return out

