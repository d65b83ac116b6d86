"""Citations for a report: CSV (`GET /api/ask?...&format=csv`, the page's "Download citations")
and Markdown (`qa ask --format markdown`).

Cells and quotes are the verbatim passages: `source_text[start:end]` is what the CSV holds, so a
reader can check each row against `/api/sources/<id>` (a spreadsheet should import the columns
as text). Markdown escapes its own syntax so that the rendered quote reads verbatim.

Usage:
    >>> citations_csv(asked.citations)
    >>> citations_markdown(question, asked.citations)
"""
from __future__ import annotations

import csv
import io
import re

from qa.citations import citation_parts
from qa.data import Citation, Report

CSV_COLUMNS = ("rank", "source_id", "outlet", "title", "author", "published", "url", "start", "end", "page",
               "highlight_start", "highlight_end", "highlight_page", "highlight", "passage", "score", "relevance",
               "sources_agreeing", "corroborated_by", "disputed_by")
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def _row(c: Citation) -> dict:
    meta = c.source
    return {
        "rank": c.rank, "source_id": meta.id, "outlet": meta.outlet, "title": meta.title, "author": meta.author,
        "published": meta.published, "url": meta.url, "start": c.span[0], "end": c.span[1], "page": c.page,
        "highlight_start": c.highlight[0], "highlight_end": c.highlight[1], "highlight_page": c.highlight_page,
        "highlight": c.highlight_text, "passage": c.text, "score": c.score, "relevance": c.relevance,
        "sources_agreeing": c.sources_agreeing,
        "corroborated_by": _spans(c.corroborated_by),
        "disputed_by": _spans(c.disputed_by),
    }


def _spans(reports: tuple[Report, ...]) -> str:
    """Where each other source says it: `<id> chars <start>-<end>`, separated by `; `."""
    return "; ".join(f"{r.source.id} chars {r.span[0]}-{r.span[1]}" for r in reports)


def citations_csv(citations: list[Citation]) -> str:
    """One row per passage with its full citation; empty cells for what a source does not state."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(_row(c) for c in citations)
    return out.getvalue()


def _md(text: str) -> str:
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def citations_markdown(question: str, citations: list[Citation]) -> str:
    """A numbered list to paste into a document: the marked sentence as a quote, then who said it where."""
    lines = [f"**{_md(question)}**", ""]
    for c in citations:
        lines.append(f"{c.rank}. “{_md(c.highlight_text)}” — {_md(', '.join(citation_parts(c)))}")
        lines.append(f"   > {_md(c.text)}")
        for label, reports in (("Also reported by", c.corroborated_by), ("Reported differently by", c.disputed_by)):
            if reports:
                lines.append(f"   {label}: " + "; ".join(f"{_md(r.source.outlet or r.source.id)} “{_md(r.text)}” "
                                                         f"{_md(f'[{r.source.id}, chars {r.span[0]}–{r.span[1]}]')}" for r in reports))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
