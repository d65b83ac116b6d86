"""Corroboration on real indexes: the seeds, and a collection made here whose outlets disagree on a number."""
import pytest

from qa.evaluation import PAIRS_FILE, build_collection_index, discover_collections, load_pairs, pair_precision
from tests.conftest import ROOT, app_client, small_collection


def _check_report(client, report: dict, needle: str) -> None:
    text = client.get(f"/api/sources/{report['source']['id']}").get_json()["text"]
    assert text[report["span"]["start"]:report["span"]["end"]] == report["text"]
    assert needle in report["text"]


def test_three_seed_outlets_corroborate_where_the_treaty_was_signed(client):
    response = client.post("/api/ask", json={"question": "In which city was the treaty originally signed?"}).get_json()
    top = response["results"][0]
    assert top["source"]["id"] == "000_e482c1b658f3b19c" and "Moscow on May 7" in top["highlight"]["text"]
    assert {r["source"]["id"] for r in top["corroborated_by"]} == {"001_fb017212c236a2a6", "003_897a613f67fec3ac"}
    assert top["sources_agreeing"] == 3 and top["disputed_by"] == []
    for report in top["corroborated_by"]:
        _check_report(client, report, "May 7")
        assert report["source"]["outlet"] == "Latin Times"


def test_a_seed_fact_from_one_source_stands_alone(client):
    response = client.post("/api/ask", json={"question": "Who presented the treaty bill in Venezuela's National Assembly?"}).get_json()
    for r in response["results"]:
        assert r["sources_agreeing"] == 1 + len(r["corroborated_by"])
        assert all(c["source"]["id"] != r["source"]["id"] for c in r["corroborated_by"] + r["disputed_by"])


BRIDGE = {
    "harbour": ("Harbour Post", None, "The Lindqvist bridge, opened on 12 March 2024, now carries 41,000 vehicles a day, the city's transport office said."),
    "valley": ("Valley Courier", None, "According to the city's transport office, the Lindqvist bridge, opened on 12 March 2024, now carries 41,000 vehicles a day."),
    "coast": ("Coast Daily", None, "The Lindqvist bridge, opened on 12 March 2024, now carries 47,000 vehicles a day, the city's transport office said."),
    "planners": ("Planning Weekly", None, "Planners expect the Lindqvist bridge to carry 41,000 vehicles a day once the ring road opens."),
    "old": ("Harbour Post", None, "In 2023 the old Lindqvist ferry carried 9,000 vehicles a day across the Arne river."),
    "tolls": ("Valley Courier", None, "Tolls on the Lindqvist bridge were scrapped in June after a council vote."),
}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory, embedder):
    """A test client over six short reports: two agree on a figure, one states another, one forecasts it."""
    return app_client(small_collection(tmp_path_factory.mktemp("bridge"), BRIDGE, embedder), embedder)


def test_outlets_that_disagree_on_a_number_are_listed_as_disputing(bridge):
    response = bridge.post("/api/ask", json={"question": "How many vehicles a day cross the Lindqvist bridge?", "k": 4}).get_json()
    results = response["results"]
    by_source = {r["source"]["id"]: r for r in results}
    first = results[0]["source"]["id"]
    assert first in {"harbour", "valley", "coast"}
    agreeing = {"harbour", "valley"} - {first} if first != "coast" else set()
    top = results[0]
    assert {r["source"]["id"] for r in top["corroborated_by"]} == agreeing
    assert {r["source"]["id"] for r in top["disputed_by"]} == ({"harbour", "valley"} if first == "coast" else {"coast"})
    for report in top["corroborated_by"] + top["disputed_by"]:
        _check_report(bridge, report, "vehicles a day")
    # The repeat is folded under the first report; the other figure, the forecast and the older
    # ferry figure stay results of their own, never listed as agreeing.
    assert not ({"harbour", "valley"} <= by_source.keys())
    assert "coast" in by_source if first != "coast" else True
    listed = {r["source"]["id"] for result in results for r in result["corroborated_by"]}
    assert not listed & {"planners", "old", "tolls"}
    disputing = {r["source"]["id"] for result in results for r in result["disputed_by"]}
    assert not disputing & {"planners", "old", "tolls"}


def test_folding_keeps_k_distinct_results(bridge):
    results = bridge.post("/api/ask", json={"question": "How many vehicles a day cross the Lindqvist bridge?", "k": 5}).get_json()["results"]
    assert len(results) == 5  # six sources, one repeat folded


def test_csv_and_page_show_the_corroboration(bridge):
    question = "How many vehicles a day cross the Lindqvist bridge?"
    top = bridge.get(f"/api/ask?q={question}&k=3").get_json()["results"][0]
    csv_text = bridge.get(f"/api/ask?q={question}&k=3&format=csv").get_data(as_text=True)
    for report in top["corroborated_by"] + top["disputed_by"]:
        assert f"{report['source']['id']} chars {report['span']['start']}-{report['span']['end']}" in csv_text
    page = bridge.get(f"/?q={question}&k=3").get_data(as_text=True)
    assert "Reported differently by" in page
    assert f"/sources/{top['disputed_by'][0]['source']['id']}?s={top['disputed_by'][0]['span']['start']}" in page


@pytest.mark.parametrize("name", ["seeds", "news-snippets"])
def test_listed_pairs_hold_the_same_fact_in_the_hand_labelled_sample(name, tmp_path_factory, embedder):
    from qa.indexing import load_index

    pairs = load_pairs(ROOT / PAIRS_FILE, name)
    assert len(pairs) >= 20
    collection = next(c for c in discover_collections(ROOT) if c.name == name)
    settings = build_collection_index(collection, tmp_path_factory.mktemp("pairs"), embedder)
    index = load_index(settings)
    try:
        measured = pair_precision(pairs, index, embedder)
    finally:
        index.close()
    assert measured["pairs"] == len(pairs)
    if measured["pairs_listed"]:
        assert measured["pair_precision"] >= 0.9, measured
    if name == "seeds":
        assert measured["pairs_listed"] >= 4 and measured["pair_recall"] >= 0.6, measured


def test_a_sentence_is_anchored_on_its_names_and_quotes_not_on_months_or_days():
    from qa.analysis import terms
    from qa.corroboration import read

    reading = read('On Monday the envoy Roy Daza said the pact "opens a new era", signed in May in Moscow.')
    names = {a for a in reading.anchors if not a.startswith("quote:")}
    assert names == set(terms("Roy Daza Moscow"))  # "Monday" and the month "May" are not names
    assert any(a.startswith("quote:") for a in reading.anchors)
    assert reading.figures == {} and not reading.hedged  # a capitalised May is the month, not a hedge
    assert read("Analysts said that sales may reach $412 million.").hedged
