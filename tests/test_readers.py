"""Every supported format, read from real files in nested folders: plain text, the documents' own
metadata, PDF pages, hostile files reported, and citations that round-trip through a real index."""
import json
import re

import pytest

from qa.app import create_app
from qa.config import Settings
from qa.indexing import IndexBuilder
from qa.readers import reader_for
from qa.service import QAService
from qa.sources import SourceReader
from tests.collection import PDF_PAGES, make_collection, write_article_pdf

MARKUP = re.compile(r"<[a-z/!]|\*\*|`|\]\(|^#|^---|^\s*[-*] |&[a-z]+;", re.MULTILINE)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("collection")
    expected = make_collection(folder)
    sources, problems = SourceReader().run(folder)
    return folder, expected, {s.id: s for s in sources}, {p.file_name: p for p in problems}


def test_every_format_is_served_as_plain_text(collection):
    _, expected, sources, _ = collection
    assert set(expected) <= set(sources)
    for sid in expected:
        text = sources[sid].text
        assert not MARKUP.search(text.replace("- Length", "").replace("- Opened", "")), (sid, MARKUP.search(text))
    html = sources["news/2025/bridge.html"].text
    assert "fourteen months of repairs" in html and "tracker" not in html and "Home" not in html and "©" not in html
    md = sources["notes/cacao.md"].text
    assert md.splitlines()[0] == "Field notes" and "growers' union" in md and "union.example" not in md
    assert "2024\t5,450" in md and "title:" not in md
    memo = sources["memos/water.docx"].text
    assert memo.splitlines()[0] == "Memo on water rationing" and "north\t6-18" in memo
    assert sources["东京-报道"].text.startswith("东京大学")


def test_metadata_comes_from_the_documents_and_sources_toml_wins(collection):
    _, expected, sources, _ = collection
    for sid, stated in expected.items():
        meta = sources[sid].meta
        for name in ("title", "outlet", "author", "published", "url", "language"):
            assert getattr(meta, name) == stated.get(name), (sid, name)  # never guessed: unstated stays None


def test_pdf_lines_are_reflowed_into_sentences_and_headings(tmp_path):
    long = ("The Ennis Reach virus was isolated on 22 March 2004 at the Provincial Reference Laboratory in "
            "Calderport by a team led by the virologist Imre Kovač, and its full genome was published in May.")
    write_article_pdf(tmp_path / "a.pdf", "Corran fever", [("heading", "The pathogen"), ("text", long),
                                                           ("heading", "Spread"), ("text", "It spread by contact.")])
    sources, problems = SourceReader().run(tmp_path)
    assert not problems
    (pdf,) = sources
    text = pdf.text
    assert long in text  # one sentence, not three wrapped lines
    assert "\n\nThe pathogen\n\n" in text and "\n\nSpread\n\n" in text  # headings stand apart
    assert "  " not in text


def test_pdf_text_is_kept_page_by_page(collection):
    _, _, sources, _ = collection
    pdf = sources["reports/port/annual.pdf"]
    assert len(pdf.pages) == len(PDF_PAGES)
    for number, page in enumerate(PDF_PAGES, start=1):
        start = pdf.text.index(page.split()[0] + " " + page.split()[1])
        assert pdf.page_at(start) == number
        assert pdf.text[pdf.pages[number - 1]:].startswith(page[:20])


def test_each_hostile_file_is_reported_and_the_rest_builds(collection):
    _, _, _, problems = collection
    for name, reason in [("bad/scan.pdf", "no text layer"), ("bad/utf16.txt", "UTF-16"), ("bad/loop.txt", "loop"),
                         ("bad/fake.pdf", "not a PDF"), ("bad/fake.docx", "Word document"),
                         ("bulk/wire.jsonl#wire-003", "no text")]:
        assert reason in problems[name].reason and problems[name].skipped, (name, problems[name])
    assert not problems["bad/escape.html"].skipped and "detected" in problems["bad/escape.html"].reason
    assert len(problems) == 7


def test_json_records_and_lone_surrogates(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"id": 7, "text": "Seven.", "outlet": "O"}, "not an object"]), encoding="utf-8")
    (tmp_path / "s.jsonl").write_text('{"id": "s", "text": "A lone \\ud800 surrogate."}\n{broken\n', encoding="utf-8")
    sources, problems = SourceReader().run(tmp_path)
    by_id = {s.id: s for s in sources}
    assert by_id["7"].meta.outlet == "O" and by_id["s"].text == "A lone \ufffd surrogate."
    reasons = {p.file_name: p.reason for p in problems}
    assert "JSON object" in reasons["list.json#record 2"] and "not valid JSON" in reasons["s.jsonl#line 2"]
    assert "U+FFFD" in reasons["s.jsonl#s"]


def test_records_exported_by_other_tools_are_read(tmp_path):
    (tmp_path / "export.jsonl").write_text(
        json.dumps({"_id": "a1", "body": "The ferry carried 2,300 people.", "title": "Ferry"}) + "\n"
        + json.dumps({"content": "No id here, but words.", "outlet": "Wire"}) + "\n", encoding="utf-8")
    sources, problems = SourceReader().run(tmp_path)
    by_id = {s.id: s for s in sources}
    assert not problems and by_id["a1"].text == "The ferry carried 2,300 people." and by_id["a1"].meta.title == "Ferry"
    assert by_id["export-2"].text == "No id here, but words." and by_id["export-2"].meta.outlet == "Wire"


def test_unknown_extensions_are_read_as_text_and_binary_refused(tmp_path):
    assert reader_for(tmp_path / "a.TXT") is reader_for(tmp_path / "notes")
    (tmp_path / "notes").write_text("Plain words.", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    sources, problems = SourceReader().run(tmp_path)
    assert [s.id for s in sources] == ["notes"] and "binary" in problems[0].reason


@pytest.fixture(scope="module")
def collection_app(collection, tmp_path_factory, embedder):
    folder = collection[0]
    settings = Settings.from_env({"sources_dir": folder, "index_dir": tmp_path_factory.mktemp("collection-index")})
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.sources == 9 and len(report.problems) == 7  # bad/escape.html is read, with a caveat
    return create_app({"sources_dir": folder, "index_dir": settings.index_dir},
                      service=QAService(settings, embedder=embedder)).test_client()


@pytest.mark.parametrize("question, source_id, page", [
    ("How much did dredging the northern channel cost?", "reports/port/annual.pdf", 2),
    ("How many passengers did the ferries carry?", "reports/port/annual.pdf", 3),
    ("How many cables did engineers replace on the bridge?", "news/2025/bridge.html", None),
    ("When does water rationing in Maracaibo end?", "memos/water.docx", None),
    ("What premium did fermented cacao beans earn?", "notes/cacao.md", None),
    ("What did the central bank do with its reference rate?", "wire-001", None),
])
def test_citations_round_trip_in_every_format(collection_app, question, source_id, page):
    response = collection_app.post("/api/ask", json={"question": question, "k": 3})
    assert response.status_code == 200
    results = response.get_json()["results"]
    top = results[0]
    assert top["source"]["id"] == source_id
    assert top["highlight"]["page"] == page  # the best sentence's page; the passage starts on its own page
    assert page is None or 1 <= top["span"]["page"] <= page
    for r in results:
        text = collection_app.get(f"/api/sources/{r['source']['id']}").get_json()["text"]
        assert text[r["span"]["start"]:r["span"]["end"]] == r["text"]
        assert text[r["highlight"]["start"]:r["highlight"]["end"]] == r["highlight"]["text"]
    if page:
        html = collection_app.get(f"/?q={question}").get_data(as_text=True)
        assert f'<span class="page">p. {top["span"]["page"]}</span>' in html
