"""Measure retrieval on a gold question set, with ablations side by side in one run.

Configurations: the shipped hybrid, dense only, BM25 only (all on the built index, through the
same `Retriever` the API uses), and a naive baseline a user would otherwise build: fixed
1000-character chunks with 200 overlap, dense top-k, no abstention. With `url`, the shipped
configuration is measured through a running service's `/api/ask` instead.

Usage:
    >>> report = Evaluator(settings).run(load_questions(Path("eval/questions.jsonl")))
    >>> print(format_table(report))
"""
from __future__ import annotations

import json
import re
import statistics
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.embedding import Embedder
from qa.indexing import LoadedIndex, load_index
from qa.retrieval import Retriever

DEPTH = 10  # passages fetched per question: MRR@10 needs ten
CONFIGS = ("hybrid", "dense", "bm25", "naive")
NAIVE_CHARS, NAIVE_OVERLAP = 1000, 200
METRICS = ("answer@1", "answer@3", "answer@5", "mrr@10", "source@5", "highlight@1", "abstention", "false_abstention")


class QuestionsError(Exception):
    """The gold file is malformed; the message names the line."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]
    sources: list[str]
    answerable: bool
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Passage:
    text: str
    source_id: str
    highlight: str | None


@dataclass(frozen=True)
class Outcome:
    question: Question
    passages: list[Passage]
    answered: bool
    confidence: float | None
    seconds: float


def load_questions(path: Path) -> list[Question]:
    questions, seen = [], set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise QuestionsError(f"cannot read {path}: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            q = Question(
                id=str(raw["id"]), question=str(raw["question"]), answers=[str(a) for a in raw["answers"]],
                sources=[str(s) for s in raw.get("sources", [])], answerable=bool(raw["answerable"]),
                tags=[str(t) for t in raw.get("tags", [])],
            )
        except (ValueError, KeyError, TypeError) as err:
            raise QuestionsError(f"{path}:{number}: not a question object ({err})") from err
        if q.answerable and not q.answers:
            raise QuestionsError(f"{path}:{number}: answerable question {q.id} has no answer strings")
        if q.id in seen:
            raise QuestionsError(f"{path}:{number}: duplicate id {q.id}")
        seen.add(q.id)
        questions.append(q)
    if not questions:
        raise QuestionsError(f"{path} holds no questions")
    return questions


DASHES = re.compile(r"[\u2010-\u2015\u2212]")


def normalize(text: str) -> str:
    """Unicode-normalised, accent- and case-folded, dashes and quotes made plain, white space collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = DASHES.sub("-", text).replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return " ".join(text.casefold().split())


def contains_answer(text: str | None, answers: list[str]) -> bool:
    if not text:
        return False
    haystack = normalize(text)
    return any(normalize(a) in haystack for a in answers)


def score(outcomes: list[Outcome], has_highlight: bool = True) -> dict:
    answerable = [o for o in outcomes if o.question.answerable]
    unanswerable = [o for o in outcomes if not o.question.answerable]

    def first_hit(o: Outcome) -> int | None:
        return next((r for r, p in enumerate(o.passages[:DEPTH], 1) if contains_answer(p.text, o.question.answers)), None)

    def mean(values) -> float | None:
        values = list(values)
        return round(sum(values) / len(values), 4) if values else None

    ranks = [first_hit(o) for o in answerable]
    latencies = sorted(o.seconds * 1000 for o in outcomes)
    passages = [len(p.text) for o in outcomes for p in o.passages[:5]]
    return {
        "answer@1": mean(r is not None and r <= 1 for r in ranks),
        "answer@3": mean(r is not None and r <= 3 for r in ranks),
        "answer@5": mean(r is not None and r <= 5 for r in ranks),
        "mrr@10": mean(1 / r if r else 0.0 for r in ranks),
        "source@5": mean(any(p.source_id in o.question.sources for p in o.passages[:5]) for o in answerable),
        "highlight@1": mean(bool(o.passages) and contains_answer(o.passages[0].highlight, o.question.answers) for o in answerable)
        if has_highlight else None,
        "abstention": mean(not o.answered for o in unanswerable),
        "false_abstention": mean(not o.answered for o in answerable),
        "passage_chars": round(statistics.mean(passages), 1) if passages else None,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
        "questions": len(outcomes),
    }


MAX_FALSE_ABSTENTION = 0.05


def suggest_threshold(outcomes: list[Outcome]) -> float | None:
    """The highest confidence cut that wrongly abstains on at most 5% of answerable questions:
    abstain as often as possible on the unanswerable without hiding real answers."""
    scores = sorted(o.confidence for o in outcomes if o.question.answerable and o.confidence is not None)
    if not scores:
        return None
    allowed = int(MAX_FALSE_ABSTENTION * len(scores))
    return round(scores[allowed] - 0.0005, 3) if allowed < len(scores) else None


class NaiveBaseline:
    """What a user would build first: fixed 1000-character windows, 200 overlap, dense top-k."""

    def __init__(self, index: LoadedIndex, embedder: Embedder):
        self.windows: list[Passage] = []
        for source in index.sources.values():
            step = NAIVE_CHARS - NAIVE_OVERLAP
            for start in range(0, max(1, len(source.text) - NAIVE_OVERLAP), step):
                self.windows.append(Passage(source.text[start : start + NAIVE_CHARS], source.id, None))
        self.embedder = embedder
        self.vectors = embedder.encode([w.text for w in self.windows])

    def run(self, question: str, k: int) -> list[Passage]:
        scores = self.vectors @ self.embedder.encode([question])[0]
        return [self.windows[i] for i in np.argsort(-scores)[:k]]


@dataclass
class Evaluator:
    settings: Settings
    url: str | None = None
    configs: tuple[str, ...] = CONFIGS

    def run(self, questions: list[Question]) -> dict:
        if self.url:
            outcomes = {"hybrid": [self._ask_url(q) for q in questions]}
        else:
            index = load_index(self.settings)
            embedder = Embedder(self.settings.model_path)
            embedder.encode(["warm up"])  # the model load is not a question's latency
            outcomes = {}
            for config in self.configs:
                if config == "naive":
                    baseline = NaiveBaseline(index, embedder)
                    outcomes[config] = [self._timed(q, lambda q: (baseline.run(q.question, DEPTH), True, None)) for q in questions]
                else:
                    retriever = Retriever(embedder, mode=config)
                    outcomes[config] = [self._timed(q, lambda q: self._retrieve(retriever, index, q)) for q in questions]
        table = {name: score(out, has_highlight=name != "naive") for name, out in outcomes.items()}
        shipped = outcomes["hybrid"]
        return {
            "configs": table,
            "threshold": {"current": Retriever.min_confidence, "suggested": suggest_threshold(shipped)},
            "failures": [
                {
                    "id": o.question.id,
                    "question": o.question.question,
                    "gold": o.question.answers,
                    "rank1": o.passages[0].text[:300] if o.passages else None,
                    "rank1_source": o.passages[0].source_id if o.passages else None,
                }
                for o in shipped
                if o.question.answerable and not (o.passages and contains_answer(o.passages[0].text, o.question.answers))
            ],
            "questions": len(questions),
            "depth": DEPTH,
        }

    @staticmethod
    def _timed(question: Question, run) -> Outcome:
        started = time.perf_counter()
        passages, answered, relevance = run(question)
        return Outcome(question, passages, answered, relevance, time.perf_counter() - started)

    @staticmethod
    def _retrieve(retriever: Retriever, index: LoadedIndex, q: Question):
        answer = retriever.run(index, q.question, DEPTH)
        passages = [
            Passage(h.chunk.text, h.chunk.source_id, index.sources[h.chunk.source_id].text[h.highlight[0] : h.highlight[1]])
            for h in answer.hits
        ]
        return passages, answer.answered, answer.confidence

    def _ask_url(self, q: Question) -> Outcome:
        body = json.dumps({"question": q.question, "k": DEPTH}).encode()
        request = urllib.request.Request(
            urllib.parse.urljoin(self.url, "/api/ask"), data=body, headers={"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.load(response)
        seconds = time.perf_counter() - started
        passages = [Passage(r["text"], r["source"]["id"], r["highlight"]["text"]) for r in data["results"]]
        return Outcome(q, passages, data["answered"], data.get("confidence"), seconds)


def format_table(report: dict) -> str:
    columns = list(METRICS) + ["passage_chars", "p50_ms", "p95_ms"]
    header = f"{'config':<8}" + "".join(f"{c:>17}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, row in report["configs"].items():
        cells = "".join(f"{'—' if row[c] is None else row[c]:>17}" for c in columns)
        lines.append(f"{name + ('*' if name == 'hybrid' else ''):<8}{cells}")
    lines.append("* shipped configuration")
    t = report["threshold"]
    lines.append(f"abstain threshold: current {t['current']}; highest with ≤5% false abstention on this set: {t['suggested']}")
    if report["failures"]:
        lines.append(f"\nmisses at rank 1 ({len(report['failures'])}):")
        for f in report["failures"]:
            rank1 = (f["rank1"] or "").replace("\n", " ")[:140]
            lines.append(f"- {f['id']} {f['question']}\n    gold: {' | '.join(f['gold'])}\n    rank 1 [{f['rank1_source']}]: {rank1}")
    return "\n".join(lines)


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / "eval.json", folder / "eval.png"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    names = list(report["configs"])
    metrics = [m for m in METRICS if any(report["configs"][n][m] is not None for n in names)]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100)
    for i, name in enumerate(names):
        values = [report["configs"][name][m] or 0 for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, values, width, label=name + (" (shipped)" if name == "hybrid" else ""))
    ax.set_xticks(np.arange(len(metrics)) + width * (len(names) - 1) / 2, metrics)
    ax.set_ylim(0, 1.2)  # head room for the legend
    ax.set_ylabel("share of questions")
    ax.set_title(f"Retrieval quality on {report['questions']} gold questions")
    ax.legend(ncol=len(names), fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return json_path, png_path


