"""Time: `sort=newest`, and the newest report first among equally relevant ones for "latest" questions."""
import pytest

from qa.evaluation import Evaluator, build_collection_index, discover_collections, load_questions
from tests.conftest import ROOT, app_client, small_collection

RACES = {
    "r2019": ("Sportsdesk Weekly", "2019-05-12", "Tomas Reiner won the 2019 Arden Hill Classic after a long solo attack on the final climb."),
    "r2021": ("Northvale Post", "2021-05-16", "Emil Varga won the 2021 Arden Hill Classic in a sprint from a group of four riders."),
    "r2023": ("Harbour Post", "2023-05-14", "Jonas Petrak won the 2023 Arden Hill Classic, the youngest winner in the race's history."),
    "preview": ("Harbour Post", None, "The Arden Hill Classic climbs the Brenn Pass twice this year; favourites include past winners."),
}


@pytest.fixture(scope="module")
def races(tmp_path_factory, embedder):
    return app_client(small_collection(tmp_path_factory.mktemp("races"), RACES, embedder), embedder)


def test_sort_newest_orders_the_same_results_by_date_with_undated_last(races):
    question = "Who won the Arden Hill Classic?"
    relevance = races.post("/api/ask", json={"question": question, "k": 4}).get_json()["results"]
    newest = races.get(f"/api/ask?q={question}&k=4&sort=newest").get_json()["results"]
    assert {r["source"]["id"] for r in newest} == {r["source"]["id"] for r in relevance}
    dates = [r["source"]["published"] for r in newest]
    assert dates == sorted((d for d in dates if d), reverse=True) + [None] * dates.count(None)
    assert [r["rank"] for r in newest] == [1, 2, 3, 4]
    assert newest[0]["source"]["id"] == "r2023" and newest[-1]["source"]["id"] == "preview"


@pytest.mark.parametrize("question", ["Who won the latest Arden Hill Classic?", "Who is the most recent winner of the Arden Hill Classic?"])
def test_a_latest_question_puts_the_newest_report_first(races, question):
    top = races.post("/api/ask", json={"question": question, "k": 3}).get_json()["results"][0]
    assert top["source"]["id"] == "r2023" and "Jonas Petrak" in top["highlight"]["text"]


def test_the_recency_gold_questions_are_answered_better_with_the_preference(tmp_path_factory, embedder):
    questions = load_questions(ROOT / "eval" / "recency_questions.jsonl")
    snippets = next(c for c in discover_collections(ROOT) if c.name == "news-snippets")
    settings = build_collection_index(snippets, tmp_path_factory.mktemp("recency"), embedder)
    report = Evaluator(settings, configs=("hybrid", "-recency"), embedder=embedder).run(questions)["configs"]
    assert report["hybrid"]["answer@1"] > report["-recency"]["answer@1"]
    assert report["hybrid"]["answer@1"] >= 0.8, report["hybrid"]
