"""The regression gate: `qa eval` on the gold set against a freshly built index.

Floors sit a little under the measured values (README, "Evaluation"): a drop of more than one
or two questions fails the build, normal noise does not.
"""
import json
import subprocess

import pytest

from qa.evaluation import QuestionsError, contains_answer, load_questions
from tests.conftest import QA, ROOT

GOLD = ROOT / "eval" / "questions.jsonl"
FLOORS = {"answer@1": 0.76, "answer@5": 0.88, "mrr@10": 0.80, "source@5": 0.96, "highlight@1": 0.62, "abstention": 0.5}
CEILINGS = {"false_abstention": 0.06}


@pytest.fixture(scope="module")
def report(seed_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = subprocess.run(
        [QA, "eval", "--questions", str(GOLD), "--index", str(seed_index.index_dir), "--json", "--report", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "eval.json").is_file() and (out / "eval.png").stat().st_size > 10_000
    return json.loads(result.stdout)


def test_shipped_pipeline_meets_its_floors(report):
    shipped = report["configs"]["hybrid"]
    for metric, floor in FLOORS.items():
        assert shipped[metric] >= floor, f"{metric} fell to {shipped[metric]} (floor {floor})"
    for metric, ceiling in CEILINGS.items():
        assert shipped[metric] <= ceiling, f"{metric} rose to {shipped[metric]} (ceiling {ceiling})"


def test_hybrid_beats_the_naive_baseline_and_each_half(report):
    configs = report["configs"]
    assert set(configs) == {"hybrid", "dense", "bm25", "naive"}
    for metric in ("answer@1", "mrr@10"):
        assert configs["hybrid"][metric] >= configs["naive"][metric]
        assert configs["hybrid"][metric] >= max(configs["dense"][metric], configs["bm25"][metric])


def test_failures_are_listed_with_what_came_back(report):
    shipped = report["configs"]["hybrid"]
    answerable = sum(1 for q in load_questions(GOLD) if q.answerable)
    assert len(report["failures"]) == round(answerable * (1 - shipped["answer@1"]))
    for failure in report["failures"]:
        assert failure["gold"] and not contains_answer(failure["rank1"], failure["gold"])


def test_gold_set_has_the_promised_shape():
    questions = load_questions(GOLD)
    assert len(questions) >= 50
    assert sum(not q.answerable for q in questions) >= 10
    assert sum("paraphrase" in q.tags for q in questions) >= 12
    assert sum(len(q.sources) >= 2 for q in questions) >= 6
    covered = {s for q in questions for s in q.sources}
    assert covered == {p.stem for p in (ROOT / "seeds").glob("*.txt")}


def test_answer_matching_folds_case_accents_and_dashes():
    assert contains_answer("Jorge RODRIGUEZ said", ["Jorge Rodríguez"])
    assert contains_answer("oil‑and‑gas projects", ["oil-and-gas"])
    assert not contains_answer("October 17", ["October 7"])


def test_malformed_gold_file_names_the_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "question": "q", "answers": ["x"], "answerable": true}\n{oops\n', encoding="utf-8")
    with pytest.raises(QuestionsError, match=":2:"):
        load_questions(bad)
