"""Markdown: YAML front matter becomes metadata, the body is rendered to plain text.

python-frontmatter splits the front matter off; markdown-it-py parses the body (CommonMark plus
tables) and only the text of its tokens is kept: headings, paragraphs, list items, table rows
(cells joined by tabs), code and quotes each become lines; emphasis, link targets, images
(their alt text stays) and HTML tags go. So passages and citations quote what a reader sees.

Usage:
    >>> doc = MarkdownReader().read(Path("a.md"), b"---\\ntitle: T\\n---\\n# Head\\n\\nSome **bold** text.")[0]
    >>> doc.text, doc.meta
    ('Head\\n\\nSome bold text.', {'title': 'T'})
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import frontmatter
import lxml.html
import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from qa.readers import Document, ReadError, clean_meta
from qa.readers.text import decode

# Front-matter keys as blogs and static-site generators spell them, mapped to ours.
FRONT_MATTER_KEYS = {
    "title": "title", "author": "author", "authors": "author", "date": "published", "published": "published",
    "outlet": "outlet", "publisher": "outlet", "site": "outlet", "url": "url", "canonical_url": "url",
    "lang": "language", "language": "language",
}


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def _value(value: object) -> object:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def _inline(children: list[Token]) -> str:
    out = []
    for child in children:
        if child.type in ("text", "code_inline", "image"):  # an image's content is its alt text
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")  # the author's line breaks stay
    return "".join(out)


def render_plain(body: str) -> str:
    """The text of a Markdown body, one block per paragraph, heading, item, row or code block."""
    blocks: list[str] = []
    row: list[str] | None = None
    for token in _parser().parse(body):
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            blocks.append("\t".join(row))
            row = None
        elif token.type == "inline":
            (row if row is not None else blocks).append(_inline(token.children or []))
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
        elif token.type == "html_block":
            blocks.append(lxml.html.fragment_fromstring(token.content, create_parent="div").text_content().strip())
    return "\n\n".join(block for block in blocks if block.strip())


@dataclass(frozen=True)
class MarkdownReader:
    extensions: tuple[str, ...] = (".md", ".markdown")

    def read(self, path: Path, raw: bytes) -> list[Document]:
        text, caveat = decode(raw)
        try:
            post = frontmatter.loads(text)
        except yaml.YAMLError as err:
            raise ReadError(f"its front matter is not valid YAML ({' '.join(str(err).split())})") from None
        stated = {ours: _value(post.metadata[theirs]) for theirs, ours in FRONT_MATTER_KEYS.items() if theirs in post.metadata}
        return [Document(text=render_plain(post.content), meta=clean_meta(stated), caveat=caveat)]
