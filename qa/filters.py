"""Which sources a question may be answered from: `sources`, `outlets`, `published_after`, `published_before`.

A filter is parsed and checked once (`parse_scope`, clear errors for bad input), then resolved
against the loaded index into the set of source ids it admits (`Scope.select`). Retrieval applies
that one set on both sides before ranking — Chroma's `where` on the chunk's `source_id` (a small
version's exact scan takes the chunk mask instead) and a BM25 weight mask — so the dense and the
lexical candidates can never disagree on what is inside, and k results come back from inside the
filter. Source metadata lives in the index's sources, not
in Chroma, so no index format change is needed and a `sources.toml` edit applies on the next build.

Dates are inclusive ISO dates (`YYYY-MM-DD`); a source whose `published` does not start with one
is undated: a date filter excludes it, and the selection counts how many it excluded.

Usage:
    >>> scope = parse_scope(outlets=["Latin Times"], published_after="2025-10-01")
    >>> selection = scope.select(index.sources.metas)
    >>> retriever.run(index, question, k, scope=selection)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np

from qa.chunk_table import ChunkTable
from qa.data import SourceMeta

MAX_VALUES = 200  # ids or outlets in one filter: more is a mistake, not a question
MAX_VALUE_CHARS = 300


class FilterError(ValueError):
    """A filter that cannot be applied; `code` is the API's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def published_date(meta: SourceMeta) -> date | None:
    """The source's publication date, or None when it states none (or not as an ISO date)."""
    text = (meta.published or "")[:10]
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _names(field: str, value) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FilterError("invalid_type", f"'{field}' must be a list of strings")
    cleaned = [v.strip() for v in value]
    if not cleaned or not all(cleaned):
        raise FilterError("invalid_filter", f"'{field}' must name at least one value and no empty one")
    if len(cleaned) > MAX_VALUES or any(len(v) > MAX_VALUE_CHARS for v in cleaned):
        raise FilterError("invalid_filter", f"'{field}' takes at most {MAX_VALUES} values of at most {MAX_VALUE_CHARS} characters")
    return frozenset(cleaned)


def _date(field: str, value) -> date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FilterError("invalid_type", f"'{field}' must be an ISO date string such as 2025-10-01")
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError("invalid_date", f"'{field}' must be an ISO date YYYY-MM-DD, not {value[:40]!r}") from None


@dataclass(frozen=True)
class Selection:
    """The source ids a filter admits in one index version, and what the date filter left out."""

    ids: frozenset[str]
    undated_excluded: int  # sources dropped only because they state no date

    def where(self) -> dict:
        """Chroma's metadata filter for these sources."""
        return {"source_id": {"$in": sorted(self.ids)}}

    def mask(self, chunks: ChunkTable) -> np.ndarray:
        """Weight mask over chunks (1.0 inside the filter), for BM25 and the exact scan: masked chunks are never returned.
        Read per source, not per chunk: no chunk is built to be filtered."""
        inside = np.fromiter((sid in self.ids for sid in chunks.source_ids), dtype=np.float32, count=len(chunks.source_ids))
        return inside[chunks.source_of]


@dataclass(frozen=True)
class Scope:
    """A parsed filter; None means the field was not given. An empty Scope admits everything."""

    sources: frozenset[str] | None = None
    outlets: frozenset[str] | None = None
    published_after: date | None = None
    published_before: date | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.sources, self.outlets, self.published_after, self.published_before))

    def select(self, sources: Mapping[str, SourceMeta]) -> Selection:
        """Resolve against an index's sources' metadata. Raises FilterError for ids or outlets it does not hold."""
        if self.sources is not None and (unknown := self.sources - sources.keys()):
            raise FilterError("unknown_source", f"no source with id(s) {', '.join(map(repr, sorted(unknown)[:5]))}; "
                                                "GET /api/sources lists them")
        outlets = None
        if self.outlets is not None:
            known = {meta.outlet.casefold() for meta in sources.values() if meta.outlet}
            outlets = {o.casefold() for o in self.outlets}
            if unknown := {o for o in self.outlets if o.casefold() not in known}:
                raise FilterError("unknown_outlet", f"no source from outlet(s) {', '.join(map(repr, sorted(unknown)[:5]))}; "
                                                    "GET /api/sources lists the outlets")
        dated = self.published_after is not None or self.published_before is not None
        ids, undated = set(), 0
        for sid, meta in sources.items():
            if self.sources is not None and sid not in self.sources:
                continue
            if outlets is not None and (meta.outlet or "").casefold() not in outlets:
                continue
            if dated:
                published = published_date(meta)
                if published is None:
                    undated += 1
                    continue
                if (self.published_after and published < self.published_after
                        or self.published_before and published > self.published_before):
                    continue
            ids.add(sid)
        return Selection(frozenset(ids), undated)


def parse_scope(sources=None, outlets=None, published_after=None, published_before=None) -> Scope:
    """Check the filter fields of a request (JSON values or query-string lists). Raises FilterError."""
    scope = Scope(_names("sources", sources), _names("outlets", outlets),
                  _date("published_after", published_after), _date("published_before", published_before))
    if scope.published_after and scope.published_before and scope.published_after > scope.published_before:
        raise FilterError("invalid_date_range", f"'published_after' ({scope.published_after}) is later than "
                                                f"'published_before' ({scope.published_before})")
    return scope


def scope_from_query(args) -> Scope:
    """The filter of a query string (a werkzeug MultiDict): `sources` and `outlets` repeated, each
    date once. An empty value means "not set", which is what an HTML form sends for an empty field."""
    lists = {f: [v for v in args.getlist(f) if v.strip()] or None for f in ("sources", "outlets")}
    return parse_scope(**lists, published_after=args.get("published_after") or None,
                       published_before=args.get("published_before") or None)
