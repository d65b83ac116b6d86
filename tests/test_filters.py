"""Filters (sources, outlets, publication dates) applied before ranking on both sides, and the
citation exports (CSV from the API, Markdown from the CLI), on real indexes."""
import csv
import io
import subprocess

import pytest

from tests.conftest import QA, on_chroma, small_collection

ENACTED = "When did Maduro enact the treaty law?"
TRIBUNE = "000_e482c1b658f3b19c"  # the best passage for ENACTED; the only seed from the Orinoco Tribune
LATIN_TIMES = {"001_fb017212c236a2a6", "003_897a613f67fec3ac"}


def test_an_outlet_filter_excludes_the_best_passage_and_still_returns_k(client):
    best = client.post("/api/ask", json={"question": ENACTED, "k": 3}).get_json()
    assert best["results"][0]["source"]["id"] == TRIBUNE and best["scope"] is None
    filtered = client.post("/api/ask", json={"question": ENACTED, "k": 4, "outlets": ["latin times"]}).get_json()
    assert filtered["scope"] == {"sources": 2, "undated_excluded": 0}
    assert len(filtered["results"]) == 4
    assert {r["source"]["id"] for r in filtered["results"]} <= LATIN_TIMES
    get = client.get(f"/api/ask?q={ENACTED}&k=4&outlets=Latin Times").get_json()
    assert [r["span"] for r in get["results"]] == [r["span"] for r in filtered["results"]]


def test_a_sources_filter_returns_k_passages_from_inside_it(client):
    response = client.get(f"/api/ask?q={ENACTED}&k=5&sources=002_38f1cabbecdb3beb&sources=004_6082af65154378b5").get_json()
    assert len(response["results"]) == 5
    assert {r["source"]["id"] for r in response["results"]} <= {"002_38f1cabbecdb3beb", "004_6082af65154378b5"}


def test_a_date_filter_leaves_out_undated_sources_and_says_how_many(client):
    response = client.post("/api/ask", json={"question": ENACTED, "published_after": "2025-11-01",
                                             "published_before": "2025-11-30"}).get_json()
    assert response["scope"] == {"sources": 1, "undated_excluded": 4}
    assert {r["source"]["id"] for r in response["results"]} == {TRIBUNE}
    outside = client.post("/api/ask", json={"question": ENACTED, "published_before": "2025-11-17"}).get_json()
    assert outside["scope"] == {"sources": 0, "undated_excluded": 4} and outside["results"] == []
    assert outside["answered"] is False


@pytest.fixture(scope="module")
def dated(tmp_path_factory, embedder):
    """Three outlets reporting one figure on different dates, and one undated report."""
    from qa.indexing import load_index

    reports = {
        "early": ("Harbour Post", "2024-02-01", "The Lindqvist bridge over the Arne river carried 41,000 vehicles a day in its first month."),
        "middle": ("Valley Courier", "2024-06-15", "Traffic on the Lindqvist bridge reached 43,500 vehicles a day by June, the city said."),
        "late": ("Coast Daily", "2025-01-20", "The Lindqvist bridge now carries 47,200 vehicles a day, a year after it opened."),
        "undated": ("Coast Daily", None, "Engineers inspected the Lindqvist bridge cables after a storm."),
    }
    settings = small_collection(tmp_path_factory.mktemp("dated"), reports, embedder)
    index = load_index(settings)
    yield settings, index
    index.close()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_candidate_side_applies_the_filter_before_ranking(dated, embedder, mode):
    from qa.filters import parse_scope
    from qa.retrieval import Retriever

    _, index = dated
    question = "How many vehicles a day cross the Lindqvist bridge?"
    selection = parse_scope(published_after="2024-03-01").select(index.sources.metas)
    assert selection.ids == {"middle", "late"} and selection.undated_excluded == 1
    for searched in (index, on_chroma(index)):  # the exact scan's chunk mask, and Chroma's `where`
        answer = Retriever(embedder, mode=mode).run(searched, question, k=4, scope=selection)
        assert {h.chunk.source_id for h in answer.hits} == {"middle", "late"}
        everything = Retriever(embedder, mode=mode).run(searched, question, k=4)
        assert {h.chunk.source_id for h in everything.hits} >= {"early", "middle", "late"}


BAD_FILTERS = [
    ({"sources": "000_e482c1b658f3b19c"}, "invalid_type"),
    ({"sources": [1]}, "invalid_type"),
    ({"sources": []}, "invalid_filter"),
    ({"outlets": ["  "]}, "invalid_filter"),
    ({"sources": ["no-such-source"]}, "unknown_source"),
    ({"outlets": ["Daily Nowhere"]}, "unknown_outlet"),
    ({"published_after": "2025-13-01"}, "invalid_date"),
    ({"published_after": "20250101"}, "invalid_date"),
    ({"published_before": 2025}, "invalid_type"),
    ({"published_after": "2025-10-02", "published_before": "2025-10-01"}, "invalid_date_range"),
]


@pytest.mark.parametrize("body,code", BAD_FILTERS)
def test_bad_filters_get_a_400_naming_the_problem(client, body, code):
    response = client.post("/api/ask", json={"question": ENACTED, **body})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


@pytest.mark.parametrize("query,code", [("outlets=Nowhere", "unknown_outlet"), ("published_after=yesterday", "invalid_date"),
                                        ("format=xml", "invalid_format"), ("sort=oldest", "invalid_sort"),
                                        ("order=newest", "unknown_parameter")])
def test_bad_filters_in_the_query_string_get_a_400(client, query, code):
    response = client.get(f"/api/ask?q={ENACTED}&{query}")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code


def test_csv_export_round_trips_to_the_json_answer_and_the_source_text(client):
    query = f"/api/ask?q={ENACTED}&k=5&outlets=Latin Times&outlets=Orinoco Tribune"
    as_json = client.get(query).get_json()["results"]
    exported = client.get(query + "&format=csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert "attachment" in exported.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True), newline="")))
    assert len(rows) == len(as_json) == 5
    for row, r in zip(rows, as_json):
        assert int(row["rank"]) == r["rank"] and row["source_id"] == r["source"]["id"]
        assert (row["outlet"], row["published"] or None) == (r["source"]["outlet"], r["source"]["published"])
        text = client.get(f"/api/sources/{row['source_id']}").get_json()["text"]
        assert text[int(row["start"]):int(row["end"])] == row["passage"] == r["text"]
        assert text[int(row["highlight_start"]):int(row["highlight_end"])] == row["highlight"] == r["highlight"]["text"]


def test_markdown_citations_from_the_cli(seed_index):
    out = subprocess.run([QA, "ask", ENACTED, "-k", "2", "--format", "markdown", "--index", str(seed_index.index_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"**{ENACTED}**"
    first = next(line for line in lines if line.startswith("1. “"))
    assert "October 7" in first and "Orinoco Tribune" in first and "2025-11-18" in first
    assert "000\\_e482c1b658f3b19c, chars" in first  # markdown-escaped id, then the marked sentence's span
    assert any(line.startswith("2. “") for line in lines)
