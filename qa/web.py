"""The web page: ask in the browser, read passages with their highlight, open the cited span.

Server-rendered (Jinja escapes every source text), a little plain JavaScript for the copy button,
no assets from outside the app.
"""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, render_template, request, url_for

from qa.api import DEFAULT_K, MAX_K, ApiError, validate_question, validate_sort
from qa.citations import plain_citation
from qa.data import Report
from qa.filters import FilterError, scope_from_query
from qa.recency import SORTS
from qa.service import QAService, ServiceUnavailable

web = Blueprint("web", __name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _service() -> QAService:
    return current_app.extensions["qa"]


def _parts(text: str, offset: int, start: int, end: int) -> tuple[str, str, str]:
    """Split `text` (which starts at `offset` in its source) around the absolute span [start, end)."""
    lo, hi = start - offset, end - offset
    return text[:lo], text[lo:hi], text[hi:]


def _choices(args) -> dict:
    """The filter's choices, built from the sources the index holds (what `/api/sources` lists), and
    what the URL has chosen, so a filtered page can be shared."""
    try:
        sources = _service().sources()
    except ServiceUnavailable:
        sources = []
    return {
        "outlets": sorted({s["outlet"] for s in sources if s["outlet"]}, key=str.casefold),
        "sources": sorted(((s["id"], " — ".join(x for x in (s["outlet"], s["title"] or s["id"], s["published"]) if x))
                           for s in sources), key=lambda pair: pair[1].casefold()),
        "chosen_outlets": set(args.getlist("outlets")),
        "chosen_sources": set(args.getlist("sources")),
        "published_after": args.get("published_after", ""),
        "published_before": args.get("published_before", ""),
        "sort": args.get("sort", "relevance"),
        "sorts": SORTS,
    }


def _report_link(r: Report) -> dict:
    """Another source's sentence about the same fact, linked to its marked span like any citation."""
    return {"r": r, "label": r.source.outlet or r.source.title or r.source.id,
            "href": url_for("web.source_page", source_id=r.source.id, s=r.span[0], e=r.span[1],
                            hs=r.span[0], he=r.span[1]) + "#cited"}


def _csv_href(question: str, k: int, args) -> str:
    """The same question and filter as a CSV download from the API."""
    pairs = [("q", question), ("k", k)] + [(f, v) for f in ("sources", "outlets", "published_after", "published_before", "sort")
                                           for v in args.getlist(f) if v.strip()]
    return url_for("api.ask_get") + "?" + urlencode(pairs + [("format", "csv")])


@web.get("/")
def home():
    raw = request.args.get("q")
    k = request.args.get("k", type=int, default=DEFAULT_K)
    k = min(max(k, 1), MAX_K)
    context = {"question": raw or "", "k": k, "results": None, "answered": None, "error": None,
               "filters": _choices(request.args), "scope": None, "csv_href": None}
    if raw is not None:
        try:
            asked = _service().answer(validate_question(raw), k, scope_from_query(request.args),
                                      validate_sort(request.args.get("sort")))
            context["answered"] = asked.answer.answered
            context["scope"] = asked.selection
            context["csv_href"] = _csv_href(raw.strip(), k, request.args)
            context["results"] = [
                {
                    "c": c,
                    "parts": _parts(c.text, c.span[0], *c.highlight),
                    "plain": plain_citation(c),
                    "href": url_for("web.source_page", source_id=c.source.id, s=c.span[0], e=c.span[1],
                                    hs=c.highlight[0], he=c.highlight[1]) + "#cited",
                    "also": [_report_link(r) for r in c.corroborated_by],
                    "differently": [_report_link(r) for r in c.disputed_by],
                }
                for c in asked.citations
            ]
        except (ApiError, FilterError) as err:
            context["error"] = err.message
        except ServiceUnavailable as err:
            context["error"] = str(err)
    return render_template("index.html", **context)


@web.get("/sources/<path:source_id>")
def source_page(source_id: str):
    try:
        source = _service().index().sources.get(source_id)
    except ServiceUnavailable as err:
        return render_template("index.html", question="", k=DEFAULT_K, results=None, answered=None, error=str(err)), 503
    if source is None:
        abort(404)
    text = source.text
    s, e = request.args.get("s", type=int), request.args.get("e", type=int)
    hs, he = request.args.get("hs", type=int), request.args.get("he", type=int)
    cited = None
    if s is not None and e is not None and 0 <= s < e <= len(text):
        if hs is None or he is None or not (s <= hs < he <= e):
            hs, he = s, s  # no valid sentence: mark the passage only
        cited = {"before": text[:s], "lead": text[s:hs], "sentence": text[hs:he], "tail": text[he:e], "after": text[e:],
                 "start": s, "end": e, "page": source.page_at(s)}
    return render_template("source.html", source=source, cited=cited)


@web.after_app_request
def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
