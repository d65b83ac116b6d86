"""The JSON API: answers with verifiable spans, and a JSON error for every kind of bad input."""
import pytest
import requests

from qa.api import MAX_QUESTION_CHARS


def _verify_spans(get, response: dict) -> None:
    texts = {}
    for r in response["results"]:
        sid = r["source"]["id"]
        texts.setdefault(sid, get(f"/api/sources/{sid}")["text"])
        text = texts[sid]
        assert text[r["span"]["start"] : r["span"]["end"]] == r["text"]
        h = r["highlight"]
        assert text[h["start"] : h["end"]] == h["text"]
        assert r["span"]["start"] <= h["start"] < h["end"] <= r["span"]["end"]


def test_enactment_date_at_rank_one_over_a_real_server(live_server):
    base = live_server.base
    response = requests.post(base + "/api/ask", json={"question": "When did Maduro enact the treaty law?"}, timeout=30).json()
    assert response["answered"] is True
    assert "October 7" in response["results"][0]["text"]
    assert len(response["results"]) == 5 and [r["rank"] for r in response["results"]] == [1, 2, 3, 4, 5]
    assert response["index_version"] and response["took_ms"] >= 0
    _verify_spans(lambda path: requests.get(base + path, timeout=10).json(), response)


def test_get_and_post_agree(client):
    post = client.post("/api/ask", json={"question": "Who presented the bill?", "k": 3}).get_json()
    get = client.get("/api/ask?q=Who presented the bill?&k=3").get_json()
    assert [r["span"] for r in post["results"]] == [r["span"] for r in get["results"]]
    assert len(post["results"]) == 3


def test_spans_hold_for_many_questions(client):
    def get(path):
        return client.get(path).get_json()

    for q in ["How many agreements were signed?", "Igla-S missiles", "La Orchila", "regime change", "cancer vaccine"]:
        _verify_spans(get, client.post("/api/ask", json={"question": q, "k": 10}).get_json())


def test_no_duplicate_passages(client):
    results = client.post("/api/ask", json={"question": "When was the treaty signed in Moscow?", "k": 10}).get_json()["results"]
    highlights = [(r["source"]["id"], r["highlight"]["start"]) for r in results]
    assert len(highlights) == len(set(highlights))
    for a in results:
        for b in results:
            if a is not b and a["source"]["id"] == b["source"]["id"]:
                inter = min(a["span"]["end"], b["span"]["end"]) - max(a["span"]["start"], b["span"]["start"])
                assert inter <= 0.5 * min(a["span"]["end"] - a["span"]["start"], b["span"]["end"] - b["span"]["start"])


def test_off_topic_question_abstains_but_still_shows_passages(client):
    response = client.get("/api/ask?q=How tall is the Eiffel Tower?").get_json()
    assert response["answered"] is False
    assert response["results"]


def test_sources_and_health(client):
    sources = client.get("/api/sources").get_json()["sources"]
    assert len(sources) == 5
    one = client.get(f"/api/sources/{sources[0]['id']}").get_json()
    assert one["text"] and one["id"] == sources[0]["id"]
    health = client.get("/api/health").get_json()
    assert health == {"status": "ok", "sources": 5, "chunks": health["chunks"], "index_version": health["index_version"]}
    assert health["chunks"] > 5


BAD_REQUESTS = [
    ("post", "/api/ask", {"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
    ("post", "/api/ask", {"json": [1, 2]}, 400, "invalid_json"),
    ("post", "/api/ask", {"json": {}}, 400, "missing_question"),
    ("post", "/api/ask", {"json": {"question": ""}}, 400, "empty_question"),
    ("post", "/api/ask", {"json": {"question": "   \n "}}, 400, "empty_question"),
    ("post", "/api/ask", {"json": {"question": "x" * (MAX_QUESTION_CHARS + 1)}}, 400, "question_too_long"),
    ("post", "/api/ask", {"json": {"question": 42}}, 400, "invalid_type"),
    ("post", "/api/ask", {"json": {"question": "hi", "k": "5"}}, 400, "invalid_type"),
    ("post", "/api/ask", {"json": {"question": "hi", "k": 2.5}}, 400, "invalid_type"),
    ("post", "/api/ask", {"json": {"question": "hi", "k": True}}, 400, "invalid_type"),
    ("post", "/api/ask", {"json": {"question": "hi", "k": 0}}, 400, "k_out_of_range"),
    ("post", "/api/ask", {"json": {"question": "hi", "k": 51}}, 400, "k_out_of_range"),
    ("post", "/api/ask", {"json": {"question": "hi", "top": 3}}, 400, "unknown_field"),
    ("post", "/api/ask", {"data": "x" * (17 * 1024), "content_type": "application/json"}, 413, "payload_too_large"),
    ("get", "/api/ask", {}, 400, "missing_question"),
    ("get", "/api/ask?q=hi&k=-1", {}, 400, "invalid_type"),
    ("get", "/api/ask?q=hi&k=99", {}, 400, "k_out_of_range"),
    ("get", "/api/ask?q=hi&x=1", {}, 400, "unknown_parameter"),
    ("get", "/api/sources/nope", {}, 404, "unknown_source"),
    ("get", "/api/sources/../../etc/passwd", {}, 404, None),
    ("get", "/api/sources/..%2F..%2Fetc%2Fpasswd", {}, 404, None),
    ("get", "/api/nothing-here", {}, 404, "not_found"),
    ("delete", "/api/ask", {}, 405, "method_not_allowed"),
    ("put", "/api/sources", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("method,path,kwargs,status,code", BAD_REQUESTS)
def test_bad_input_gets_a_json_error(client, method, path, kwargs, status, code):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.is_json, response.data[:200]
    error = response.get_json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_missing_index_answers_503_and_health_says_how_to_fix(tmp_path, embedder):
    from qa.app import create_app
    from qa.config import Settings
    from qa.service import QAService

    settings = Settings.from_env({"index_dir": tmp_path / "none"})
    client = create_app({"index_dir": tmp_path / "none"}, service=QAService(settings, embedder=embedder)).test_client()
    response = client.post("/api/ask", json={"question": "anything"})
    assert response.status_code == 503 and "qa index" in response.get_json()["error"]["message"]
    health = client.get("/api/health")
    assert health.status_code == 503 and "qa index" in health.get_json()["error"]


def test_openapi_lists_every_route(client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/ask", "/api/sources", "/api/sources/{id}", "/api/health", "/api/index"}
