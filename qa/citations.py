"""Turn retrieval hits into citations a reader can verify: `source_text[start:end] == text`.

Usage:
    >>> citations = cite(index, answer)
    >>> citation_json(citations[0])["span"]
    {'start': 312, 'end': 871}
"""
from __future__ import annotations

from qa.data import Answer, Citation, Report, SourceMeta, Support
from qa.indexing import LoadedIndex


def cite(index: LoadedIndex, answer: Answer) -> list[Citation]:
    out = []
    for rank, hit in enumerate(answer.hits, start=1):
        source = index.sources[hit.chunk.source_id]
        start, end = hit.highlight
        out.append(
            Citation(
                rank=rank,
                score=round(hit.score, 6),
                relevance=round(hit.relevance, 4),
                text=source.text[hit.chunk.start : hit.chunk.end],
                source=source.meta,
                span=(hit.chunk.start, hit.chunk.end),
                highlight=(start, end),
                highlight_text=source.text[start:end],
                page=source.page_at(hit.chunk.start),
                highlight_page=source.page_at(start),
                corroborated_by=tuple(_report(index, s) for s in hit.corroborated_by),
                disputed_by=tuple(_report(index, s) for s in hit.disputed_by),
            )
        )
    return out


def _report(index: LoadedIndex, support: Support) -> Report:
    source = index.sources[support.source_id]
    start, end = support.span
    return Report(source.meta, support.span, source.text[start:end], support.similarity, source.page_at(start))


def report_json(r: Report) -> dict:
    return {"source": source_json(r.source), "span": {"start": r.span[0], "end": r.span[1], "page": r.page},
            "text": r.text, "similarity": r.similarity}


def source_json(meta: SourceMeta) -> dict:
    return {"id": meta.id, "title": meta.title, "outlet": meta.outlet, "author": meta.author,
            "published": meta.published, "url": meta.url, "language": meta.language}


def citation_json(c: Citation) -> dict:
    return {
        "rank": c.rank,
        "score": c.score,
        "relevance": c.relevance,
        "text": c.text,
        "source": source_json(c.source),
        "span": {"start": c.span[0], "end": c.span[1], "page": c.page},
        "highlight": {"start": c.highlight[0], "end": c.highlight[1], "page": c.highlight_page, "text": c.highlight_text},
        "sources_agreeing": c.sources_agreeing,
        "corroborated_by": [report_json(r) for r in c.corroborated_by],
        "disputed_by": [report_json(r) for r in c.disputed_by],
    }


def citation_parts(c: Citation) -> list[str]:
    """Who said it where: outlet, author, title, date, page, url (what is known), and the span."""
    meta = c.source
    parts = [p for p in (meta.outlet, meta.author if meta.author != meta.outlet else None, meta.title) if p]
    parts.append(meta.published or "n.d.")
    if c.highlight_page:
        parts.append(f"p. {c.highlight_page}")
    if meta.url:
        parts.append(meta.url)
    parts.append(f"[{meta.id}, chars {c.highlight[0]}–{c.highlight[1]}]")
    return parts


def plain_citation(c: Citation) -> str:
    """One line to paste into notes: the quote, then outlet, title, date and url where known."""
    *parts, span = citation_parts(c)
    return f"“{c.highlight_text}” — {', '.join(parts)} {span}"
