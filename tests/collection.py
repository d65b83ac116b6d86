"""A small mixed-format test collection in nested folders, made with the real libraries.

`make_collection(folder)` writes one file of each supported format (a few KB each) plus the
hostile files a build must survive, and returns what each document states, for the tests to
check against. `python -m tests.collection DIR N` writes N documents of mixed formats (the
build-time measurement in the README). `python -m tests.collection DIR --from COLLECTION` writes
an evaluation collection's plain-text documents again as HTML, Markdown, PDF and DOCX (with its
questions pointing at the new files), so the same questions measure what reading each format costs.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import os
import sys
from pathlib import Path

import docx
from fpdf import FPDF

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bridge reopens | Caribbean Courier</title>
<meta name="author" content="Ana Pérez"><meta property="og:site_name" content="Caribbean Courier">
<meta property="article:published_time" content="2025-05-07T10:00:00Z">
<link rel="canonical" href="https://courier.example/news/bridge"></head>
<body><nav><a href="/">Home</a> | <a href="/world">World</a></nav>
<article><h1>Bridge reopens</h1>
<p>The Angostura bridge over the Orinoco reopened on May 7 after <b>fourteen months</b> of repairs paid by the regional government.</p>
<p>Engineers replaced <i>all 212 cables</i> and the deck joints; heavy trucks may cross again from June.</p>
<ul><li>Length: 1,678 metres</li><li>Opened first in 1967</li></ul></article>
<footer>© 2025 Caribbean Courier</footer><script>var tracker = 1;</script></body></html>
"""

MARKDOWN = """---
title: Field notes on cacao harvests
author: Luis Ortega
date: 2024-11-02
outlet: Agronomy Letters
lang: en
---
# Field notes

The **cacao** harvest in Sucre state rose by a third in 2024, according to the [growers' union](https://union.example).

## Prices

- Dry beans sold for `3.10` dollars a kilo in October.
- Fermented beans earned a premium of 18 percent.

| year | tonnes |
|------|--------|
| 2023 | 4,100  |
| 2024 | 5,450  |
"""

PDF_PAGES = [
    "Annual report of the port authority. Page one covers the container terminal and its new cranes.",
    "The dredging of the northern channel finished in March and cost 41 million dollars.",
    "Passenger ferries carried 2.3 million travellers in the year, a record for the port.",
]

DOCX_PARAGRAPHS = [
    ("heading", "Memo on water rationing"),
    ("text", "Water rationing in Maracaibo ends on the first of August, the utility announced."),
    ("heading", "Schedule"),
    ("text", "Districts in the north receive water every day from six in the morning."),
]

JSONL_RECORDS = [
    {"id": "wire-001", "text": "The central bank cut its reference rate to 52 percent on Tuesday.",
     "title": "Rate cut", "outlet": "Wire Service", "published": "2025-02-04", "url": "https://wire.example/1"},
    {"id": "wire-002", "text": "Oil exports averaged 910,000 barrels a day in January.", "author": "M. Silva"},
    {"id": "wire-003", "title": "no text field"},
    {"id": "东京-报道", "text": "东京大学的研究人员开发了一种新的电池技术。该电池可以在十分钟内充满电。"},
]


def _pdf(title: str | None, author: str | None) -> FPDF:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if author:
        pdf.set_author(author)
    pdf.set_creation_date(dt.datetime(2025, 3, 15, tzinfo=dt.timezone.utc))
    pdf.set_lang("en")
    return pdf


def write_pdf(path: Path, pages: list[str], title: str | None = None, author: str | None = None) -> None:
    pdf = _pdf(title, author)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
        else:
            pdf.rect(20, 20, 120, 80, style="F")  # an image-like page with no text layer
    pdf.output(str(path))


def write_docx(path: Path, paragraphs: list[tuple[str, str]], title: str, author: str) -> None:
    document = docx.Document()
    for kind, text in paragraphs:
        document.add_heading(text, level=1) if kind == "heading" else document.add_paragraph(text)
    table = document.add_table(rows=2, cols=2)
    for row, values in zip(table.rows, [("district", "hours"), ("north", "6-18")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.core_properties.title = title
    document.core_properties.author = author
    document.core_properties.created = dt.datetime(2025, 7, 1)
    document.core_properties.language = "en"
    document.save(str(path))


def make_collection(folder: Path) -> dict[str, dict]:
    """Write the collection; return {source id: metadata each document states}."""
    (folder / "news" / "2025").mkdir(parents=True)
    (folder / "notes").mkdir()
    (folder / "reports" / "port").mkdir(parents=True)
    (folder / "memos").mkdir()
    (folder / "bulk").mkdir()
    (folder / "bad").mkdir()
    (folder / "news" / "2025" / "bridge.html").write_text(HTML, encoding="utf-8")
    (folder / "notes" / "cacao.md").write_text(MARKDOWN, encoding="utf-8")
    write_pdf(folder / "reports" / "port" / "annual.pdf", PDF_PAGES, title="Port authority annual report", author="Port Authority")
    write_docx(folder / "memos" / "water.docx", DOCX_PARAGRAPHS, title="Water rationing memo", author="Utility press office")
    (folder / "bulk" / "wire.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in JSONL_RECORDS) + "\n",
                                                encoding="utf-8")
    (folder / "plain.txt").write_text("A plain text note: the ferry timetable changes in winter.", encoding="utf-8")
    (folder / "sources.toml").write_text('["notes/cacao.md"]\noutlet = "Agronomy Letters (print)"\n', encoding="utf-8")
    # Hostile files: each must be reported, none may stop the build.
    write_pdf(folder / "bad" / "scan.pdf", ["", ""])
    (folder / "bad" / "utf16.txt").write_bytes(b"\xff\xfeA")
    os.symlink("loop.txt", folder / "bad" / "loop.txt")
    (folder / "bad" / "escape.html").write_bytes(b'<meta charset="unicode_escape"><p>caf\xe9 \\ud800</p>')
    (folder / "bad" / "fake.pdf").write_text("not really a PDF", encoding="utf-8")
    (folder / "bad" / "fake.docx").write_bytes(b"PK\x03\x04 broken zip")
    return {
        "news/2025/bridge.html": {"title": "Bridge reopens", "author": "Ana Pérez", "outlet": "Caribbean Courier",
                                  "published": "2025-05-07", "url": "https://courier.example/news/bridge", "language": "en"},
        "notes/cacao.md": {"title": "Field notes on cacao harvests", "author": "Luis Ortega", "published": "2024-11-02",
                           "outlet": "Agronomy Letters (print)", "language": "en"},
        "reports/port/annual.pdf": {"title": "Port authority annual report", "author": "Port Authority",
                                    "published": "2025-03-15", "language": "en"},
        "memos/water.docx": {"title": "Water rationing memo", "author": "Utility press office", "published": "2025-07-01",
                             "language": "en"},
        "wire-001": {"title": "Rate cut", "outlet": "Wire Service", "published": "2025-02-04", "url": "https://wire.example/1"},
        "wire-002": {"author": "M. Silva"},
        "东京-报道": {},
        "plain": {},
    }


def make_mixed(folder: Path, n: int) -> None:
    """`n` documents cycling through the formats (for timing builds), in nested folders."""
    sentences = [p for _, p in DOCX_PARAGRAPHS] + PDF_PAGES + [r["text"] for r in JSONL_RECORDS[:2]]  # Latin-1: PDF core fonts
    records = []
    for i in range(n):
        sub = folder / f"part{i % 4}" / f"batch{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        body = [f"Document {i}: " + sentences[(i + j) % len(sentences)] for j in range(12)]
        kind = i % 6
        if kind == 0:
            (sub / f"d{i}.html").write_text(HTML.replace("Bridge reopens", f"Bridge {i}").replace(
                "</article>", "".join(f"<p>{b}</p>" for b in body) + "</article>"), encoding="utf-8")
        elif kind == 1:
            (sub / f"d{i}.md").write_text(MARKDOWN + "\n\n".join(body), encoding="utf-8")
        elif kind == 2:
            write_pdf(sub / f"d{i}.pdf", [" ".join(body[:6]), " ".join(body[6:])], title=f"Report {i}")
        elif kind == 3:
            write_docx(sub / f"d{i}.docx", [("text", b) for b in body], title=f"Memo {i}", author="Office")
        elif kind == 4:
            records.append({"id": f"rec-{i}", "text": " ".join(body), "title": f"Record {i}"})
        else:
            (sub / f"d{i}.txt").write_text("\n".join(body), encoding="utf-8")
    (folder / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")


def _blocks(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A plain-text article read as its title (first line) and ("heading" | "text", block) pairs:
    a heading is a short single line without closing punctuation."""
    title, _, body = text.partition("\n")
    blocks = []
    for block in (b.strip() for b in body.split("\n\n")):
        if block:
            short = "\n" not in block and len(block.split()) <= 12 and block[-1] not in ".!?;:,\"”’)"
            blocks.append(("heading" if short else "text", block))
    return title.strip(), blocks


def write_article_pdf(path: Path, title: str, blocks: list[tuple[str, str]]) -> None:
    """An article typeset as a real PDF would be: headings in bold, paragraphs wrapped and justified."""
    import matplotlib  # ships DejaVu, a font with the articles' dashes, quotes and accents

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdf = _pdf(title, "Collection editors")
    pdf.add_font("dejavu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("dejavu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_page()
    for kind, text in [("heading", title), *blocks]:
        pdf.set_font("dejavu", "B" if kind == "heading" else "", 13 if kind == "heading" else 11)
        pdf.multi_cell(0, 6, text, align="L" if kind == "heading" else "J")
        pdf.ln(3)
    pdf.output(str(path))


def convert_collection(source: Path, folder: Path) -> None:
    """Write `source` (an evaluation collection of .txt articles) again into `folder`, its documents
    cycling through HTML, Markdown, PDF, DOCX and plain text, each carrying its title in the format's
    own metadata; questions.jsonl follows the documents to their new ids."""
    renamed = {}
    for i, path in enumerate(sorted((source / "sources").glob("*.txt"))):
        title, blocks = _blocks(path.read_text(encoding="utf-8"))
        kind = ("html", "md", "pdf", "docx", "txt")[i % 5]
        target = folder / "sources" / kind / f"{path.stem}.{kind}"
        target.parent.mkdir(parents=True, exist_ok=True)
        renamed[path.stem] = f"{kind}/{target.name}" if kind != "txt" else f"txt/{path.stem}"
        if kind == "html":
            body = "".join(f"<h2>{html.escape(t)}</h2>" if k == "heading" else f"<p>{html.escape(t)}</p>" for k, t in blocks)
            target.write_text(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
                              f"</title></head><body><nav><a href='/'>Home</a></nav><article><h1>{html.escape(title)}</h1>"
                              f"{body}</article><footer>Collection editors</footer></body></html>", encoding="utf-8")
        elif kind == "md":
            body = "\n\n".join(f"## {t}" if k == "heading" else t for k, t in blocks)
            target.write_text(f"---\ntitle: {json.dumps(title)}\n---\n# {title}\n\n{body}\n", encoding="utf-8")
        elif kind == "pdf":
            write_article_pdf(target, title, blocks)
        elif kind == "docx":
            document = docx.Document()
            document.core_properties.title = title
            for k, t in [("heading", title), *blocks]:
                document.add_heading(t, level=1) if k == "heading" else document.add_paragraph(t)
            document.save(str(target))
        else:
            target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    lines = []
    for line in (source / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            question = json.loads(line)
            question["sources"] = [renamed[s] for s in question["sources"]]
            lines.append(json.dumps(question, ensure_ascii=False))
    (folder / "questions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[2] == "--from":
        convert_collection(Path(sys.argv[3]), Path(sys.argv[1]))
    else:
        make_mixed(Path(sys.argv[1]), int(sys.argv[2]))
