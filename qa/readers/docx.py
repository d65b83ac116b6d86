"""Word (.docx): paragraphs, headings and tables in document order (python-docx); core properties
(title, author, created, language) become metadata.

Usage:
    >>> doc = DocxReader().read(Path("memo.docx"), raw)[0]
    >>> doc.meta["author"]
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from qa.readers import Document, ReadError, clean_meta


def _table_rows(table) -> list[str]:
    return ["\t".join(cell.text.strip() for cell in row.cells) for row in table.rows]


@dataclass(frozen=True)
class DocxReader:
    extensions: tuple[str, ...] = (".docx",)

    def read(self, path: Path, raw: bytes) -> list[Document]:
        if not raw.startswith(b"PK\x03\x04"):
            raise ReadError("not a Word document (.docx files are zip packages)")
        import docx  # on first use: the server imports the readers but never reads a file
        from docx.opc.exceptions import PackageNotFoundError
        from docx.table import Table

        try:
            document = docx.Document(io.BytesIO(raw))
        except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as err:
            raise ReadError(f"not a readable Word document ({err})") from None
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                blocks.extend(_table_rows(item))
            elif item.text.strip():
                blocks.append(item.text.strip())  # a heading is a paragraph with a heading style: a line of its own
        props = document.core_properties
        meta = clean_meta({"title": props.title, "author": props.author,
                           "published": props.created.date().isoformat() if props.created else None,
                           "language": props.language})
        return [Document(text="\n\n".join(blocks), meta=meta)]
