"""PDF: the text layer page by page (pypdf), metadata from the document information.

Each page's text is kept apart (`Document.pages`), so every cited span can name its page. A
PDF without a text layer (a scan) is refused with that reason rather than indexed empty; an
encrypted one is read only when it opens with an empty password.

Usage:
    >>> doc = PdfReader().read(Path("report.pdf"), raw)[0]
    >>> doc.pages  # start offset of each page in doc.text
    (0, 1832, 3710)
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from qa.readers import Document, ReadError, clean_meta

PAGE_BREAK = "\n\n"


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
            texts = [page.extract_text() or "" for page in pdf.pages]
        except PdfReadError as err:
            raise ReadError(f"damaged PDF ({err})") from None
        if not any(t.strip() for t in texts):
            raise ReadError(f"no text layer in its {len(texts)} page(s) (a scanned PDF?); run OCR on it to index it")
        starts, at = [], 0
        for text in texts:
            starts.append(at)
            at += len(text) + len(PAGE_BREAK)
        return [Document(text=PAGE_BREAK.join(texts), meta=_metadata(pdf), pages=tuple(starts))]


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
