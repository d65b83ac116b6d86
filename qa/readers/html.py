"""HTML: the page's main content as plain text (trafilatura), metadata from the page's markup.

trafilatura drops navigation, scripts, comments and footers and keeps the article with its
paragraphs, headings, lists and tables as lines. Title, author, date, site name (the outlet) and
canonical url come from the page's own metadata (meta tags, JSON-LD, `<link rel=canonical>`);
the date is only taken from markup, never searched for in the text. A page too small for
trafilatura to find a main part is read whole, so nothing is lost.

Usage:
    >>> doc = HtmlReader().read(Path("a.html"), raw)[0]
    >>> doc.meta["outlet"], doc.text.splitlines()[0]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qa.readers import Document, ReadError, clean_meta
from qa.readers.text import decode

# htmldate's "extensive search" would read dates out of the article's text: that is guessing.
DATE_PARAMS = {"extensive_search": False, "original_date": True}
PAGE_META = {"title": "title", "author": "author", "published": "date", "outlet": "sitename", "url": "url"}


@dataclass(frozen=True)
class HtmlReader:
    extensions: tuple[str, ...] = (".html", ".htm", ".xhtml")

    def read(self, path: Path, raw: bytes) -> list[Document]:
        import trafilatura  # on first use: the server imports the readers but never reads a file

        text, caveat = decode(raw)
        tree = trafilatura.load_html(text)
        if tree is None:
            raise ReadError("not an HTML page (no markup could be parsed)")
        language = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
        found = trafilatura.bare_extraction(tree, with_metadata=True, include_comments=False, include_tables=True,
                                            date_extraction_params=DATE_PARAMS)
        stated = {name: getattr(found, attr, None) for name, attr in PAGE_META.items()}
        body = (found.text if found is not None else None) or trafilatura.html2txt(text) or ""
        return [Document(text=body, meta=clean_meta({**stated, "language": language}), caveat=caveat)]
