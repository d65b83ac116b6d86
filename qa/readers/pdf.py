"""PDF: the text layer page by page (pypdf), metadata from the document information.

Each page's text is kept apart (`Document.pages`), so every cited span can name its page. A
PDF without a text layer (a scan) is refused with that reason rather than indexed empty; an
encrypted one is read only when it opens with an empty password.

A text layer holds the page's printed lines, not its paragraphs: a sentence wrapped over three
lines would be cut into three "sentences" (and highlighted by a fragment), and a section heading
would not stand apart. Each page is therefore reflowed: a line that fills most of the page's
width continues on the next, unless the next is heading-like; other line ends close a paragraph
and become a blank line; the runs of spaces that justified text leaves are collapsed. Citations
stay exact: they point into this reflowed text, which is what the service stores and shows.

Usage:
    >>> doc = PdfReader().read(Path("report.pdf"), raw)[0]
    >>> doc.pages  # start offset of each page in doc.text
    (0, 1832, 3710)
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from qa.readers import Document, ReadError, clean_meta

PAGE_BREAK = "\n\n"
FULL_LINE = 0.75  # a line at least this share of the page's usual line length was wrapped, not ended
SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True)
class PdfReader:
    extensions: tuple[str, ...] = (".pdf",)

    def read(self, path: Path, raw: bytes) -> list[Document]:
        if b"%PDF-" not in raw[:1024]:
            raise ReadError("not a PDF file (no %PDF- header)")
        import pypdf  # on first use: the server imports the readers but never reads a file
        from pypdf.errors import PdfReadError

        try:
            pdf = pypdf.PdfReader(io.BytesIO(raw))
            if pdf.is_encrypted and not pdf.decrypt(""):
                raise ReadError("encrypted PDF; it needs a password")
            texts = [reflow(page.extract_text() or "") for page in pdf.pages]
        except PdfReadError as err:
            raise ReadError(f"damaged PDF ({err})") from None
        if not any(t.strip() for t in texts):
            raise ReadError(f"no text layer in its {len(texts)} page(s) (a scanned PDF?); run OCR on it to index it")
        starts, at = [], 0
        for text in texts:
            starts.append(at)
            at += len(text) + len(PAGE_BREAK)
        return [Document(text=PAGE_BREAK.join(texts), meta=_metadata(pdf), pages=tuple(starts))]


def reflow(page: str) -> str:
    r"""A page's printed lines joined into paragraphs separated by blank lines (see the module's
    docstring).

    >>> reflow("The flood of 1968 was the\nlargest on record.\nAftermath\nThe town  was rebuilt.")
    'The flood of 1968 was the largest on record.\n\nAftermath\n\nThe town was rebuilt.'
    """
    lines = [SPACES.sub(" ", line).strip() for line in page.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    lengths = sorted(len(line) for line in lines)
    full = FULL_LINE * lengths[int(0.9 * (len(lengths) - 1))]
    out = [lines[0]]
    for previous, line in zip(lines, lines[1:]):
        wrapped = len(previous) >= full and not _heading_like(line, full)
        out.append((" " if wrapped else "\n\n") + line)
    return "".join(out)


def _heading_like(line: str, full: float) -> bool:
    return len(line) < full and line[0].isupper() and line[-1] not in ".!?;:,\"”’)"


def _metadata(pdf) -> dict[str, str]:
    info = pdf.metadata
    if info is None:
        return {}
    try:
        created = info.creation_date
    except ValueError:  # a malformed date is no date; the text is still worth reading
        created = None
    return clean_meta({
        "title": info.title, "author": info.author,
        "published": created.date().isoformat() if created else None,
        "language": pdf.trailer["/Root"].get("/Lang"),
    })
