"""Measure retrieval on gold question sets, with baselines and ablations side by side in one run.

Configurations: the shipped hybrid, each of its signal groups switched off (`-constraints`,
`-coverage`, …), without the recency preference (`-recency`), dense only, BM25 only (all on the built index, through the same `Retriever` the
API uses), and a naive baseline a user would otherwise build: fixed 1000-character chunks with
200 overlap, dense top-k, no abstention. With `url`, the shipped configuration is measured
through a running service's `/api/ask` instead.

A *collection* is a folder `eval/collections/<name>/` with `sources/` and `questions.jsonl`;
the seeds (`seeds/` with `eval/questions.jsonl`) are one too. Each question belongs to the `dev`
split (what `qa fit` may read) or the `test` split (what no tuning reads).

Usage:
    >>> report = Evaluator(settings).run(load_questions(Path("eval/questions.jsonl")))
    >>> print(format_table(report))
    >>> reports = evaluate_collections(discover_collections(), work_dir, embedder)
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
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa import corroboration
from qa.config import Settings
from qa.corroboration import Corroborator
from qa.embedding import Embedder
from qa.indexing import IndexBuilder, LoadedIndex, load_index
from qa.ranker import RankerModel
from qa.recency import prefer_recent
from qa.retrieval import SIGNALS, Retriever

DEPTH = 10  # passages fetched per question: MRR@10 needs ten
ABLATIONS = tuple(f"-{group}" for group in SIGNALS)
CONFIGS = ("hybrid", *ABLATIONS, "-recency", "dense", "bm25", "naive")
SPLITS = ("dev", "test")
SEEDS_COLLECTION = "seeds"
NAIVE_CHARS, NAIVE_OVERLAP = 1000, 200
METRICS = ("answer@1", "answer@3", "answer@5", "mrr@10", "source@5", "highlight@1", "abstention", "false_abstention",
           "group@1", "pair_precision")
PAIRS_FILE = Path("eval/corroboration_pairs.jsonl")  # hand-labelled sentence pairs, by collection


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
    split: str = "test"  # unmarked questions are never fitted on


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
    group: frozenset[str] | None = None  # the top result's source and those corroborating it (shipped config)


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
                tags=[str(t) for t in raw.get("tags", [])], split=str(raw.get("split", "test")),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise QuestionsError(f"{path}:{number}: not a question object ({err})") from err
        if q.answerable and not q.answers:
            raise QuestionsError(f"{path}:{number}: answerable question {q.id} has no answer strings")
        if q.split not in SPLITS:
            raise QuestionsError(f"{path}:{number}: split must be one of {', '.join(SPLITS)}, not {q.split!r}")
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


def is_correct(question: Question, passage: Passage) -> bool:
    """The passage states a gold answer and, when the gold names its sources, comes from one of them:
    a passage that mentions the winner's name in a preview of another year does not count."""
    return contains_answer(passage.text, question.answers) and (not question.sources or passage.source_id in question.sources)


def first_hit(o: Outcome) -> int | None:
    """Rank (1-based) of the first correct passage within DEPTH, or None."""
    return next((r for r, p in enumerate(o.passages[:DEPTH], 1) if is_correct(o.question, p)), None)


def score(outcomes: list[Outcome], has_highlight: bool = True) -> dict:
    answerable = [o for o in outcomes if o.question.answerable]
    unanswerable = [o for o in outcomes if not o.question.answerable]

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
        "highlight@1": mean(bool(o.passages) and is_correct(o.question, o.passages[0])
                            and contains_answer(o.passages[0].highlight, o.question.answers) for o in answerable)
        if has_highlight else None,
        "abstention": mean(not o.answered for o in unanswerable),
        "false_abstention": mean(not o.answered for o in answerable),
        # Questions answered in two or more gold sources: every one of them in the top result's group.
        "group@1": mean(set(o.question.sources) <= o.group for o in answerable
                        if len(o.question.sources) >= 2 and o.group is not None),
        "pair_precision": None,  # per collection, not per question: see `pair_precision`
        "passage_chars": round(statistics.mean(passages), 1) if passages else None,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
        "questions": len(outcomes),
    }


MAX_FALSE_ABSTENTION = 0.05


@dataclass(frozen=True)
class LabelledPair:
    """Two sentences of different sources and whether the second states the same fact as the first."""

    id: str
    collection: str
    first: str
    second: str
    same: bool


def load_pairs(path: Path, collection: str) -> list[LabelledPair]:
    """The labelled pairs of one collection (none when the file is absent)."""
    if not Path(path).is_file():
        return []
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            raw = json.loads(line)
            if raw["collection"] == collection:
                pairs.append(LabelledPair(str(raw["id"]), collection, raw["a"]["text"], raw["b"]["text"],
                                          {"same": True, "different": False}[raw["label"]]))
        except (ValueError, KeyError, TypeError) as err:
            raise QuestionsError(f"{path}:{number}: not a labelled pair ({err})") from err
    return pairs


def pair_precision(pairs: list[LabelledPair], index: LoadedIndex, embedder: Embedder) -> dict:
    """Of the labelled pairs the shipped rule lists as corroborating, the share labelled the same fact
    (precision), and the share of same-fact pairs it lists (recall)."""
    if not pairs:
        return {"pair_precision": None, "pair_recall": None, "pairs": 0, "pairs_listed": 0}
    first = embedder.encode([p.first for p in pairs])
    second = embedder.encode([p.second for p in pairs])
    readings = [(corroboration.read(p.first), corroboration.read(p.second)) for p in pairs]
    names = sorted({n for a, b in readings for n in a.anchors | b.anchors if not n.startswith("quote:")})
    rare = frozenset(n for n, idf in zip(names, index.lexical.idf(names)) if idf >= corroboration.RARE_NAME_IDF)
    listed = [p.same for p, (a, b), sim in zip(pairs, readings, (first * second).sum(axis=1))
              if corroboration.relation(a, b, float(sim), rare) == "agrees"]
    same = sum(p.same for p in pairs)
    return {"pair_precision": round(sum(listed) / len(listed), 4) if listed else None,
            "pair_recall": round(sum(listed) / same, 4) if same else None, "pairs": len(pairs), "pairs_listed": len(listed)}


def false_abstention_cut(confidences: list[float]) -> float | None:
    """The highest confidence cut that wrongly abstains on at most 5% of these answerable questions'
    confidences: abstain as often as possible on the unanswerable without hiding real answers."""
    scores = sorted(confidences)
    return round(scores[int(MAX_FALSE_ABSTENTION * len(scores))] - 0.0005, 4) if scores else None


def suggest_threshold(outcomes: list[Outcome]) -> float | None:
    return false_abstention_cut([o.confidence for o in outcomes if o.question.answerable and o.confidence is not None])


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


@dataclass(frozen=True)
class Collection:
    """A folder of sources with gold questions about it."""

    name: str
    sources: Path
    questions: Path


COLLECTIONS_DIR = Path("eval/collections")


def seeds_collection(root: Path = Path(".")) -> Collection:
    return Collection(SEEDS_COLLECTION, root / "seeds", root / "eval" / "questions.jsonl")


def collection_at(folder: Path) -> Collection:
    """`folder/questions.jsonl` about the documents in `folder/sources/`."""
    folder = Path(folder)
    if not (folder / "questions.jsonl").is_file() or not (folder / "sources").is_dir():
        raise QuestionsError(f"{folder} is not a collection: it needs sources/ and questions.jsonl")
    return Collection(folder.name, folder / "sources", folder / "questions.jsonl")


def discover_collections(root: Path = Path(".")) -> list[Collection]:
    """The seeds and every collection under eval/collections/, by name."""
    folder = root / COLLECTIONS_DIR
    found = [collection_at(d) for d in sorted(folder.iterdir()) if (d / "questions.jsonl").is_file()] if folder.is_dir() else []
    return [seeds_collection(root), *found]


def build_collection_index(collection: Collection, work_dir: Path, embedder: Embedder) -> Settings:
    """An index of the collection in `work_dir/<name>` (incremental: a second run re-embeds nothing)."""
    settings = Settings.from_env({"sources_dir": collection.sources, "index_dir": Path(work_dir) / collection.name})
    IndexBuilder(settings, embedder=embedder).run(wait=600)
    return settings


@dataclass
class Evaluator:
    settings: Settings
    url: str | None = None
    configs: tuple[str, ...] = CONFIGS
    embedder: Embedder | None = None
    model: RankerModel | None = None  # default: the shipped one
    collection: str | None = None  # whose labelled corroboration pairs are scored (None: none)
    pairs_file: Path = PAIRS_FILE

    def run(self, questions: list[Question]) -> dict:
        corroboration_report = {}
        if self.url:
            outcomes = {"hybrid": [self._ask_url(q) for q in questions]}
        else:
            self.embedder = self.embedder or Embedder.for_settings(self.settings)
            with closing(load_index(self.settings)) as index:
                outcomes = self.outcomes(questions, index)
                pairs = load_pairs(self.pairs_file, self.collection) if self.collection else []
                corroboration_report = pair_precision(pairs, index, self.embedder)
        table = {name: score(out, has_highlight=name != "naive") for name, out in outcomes.items()}
        if corroboration_report:
            table["hybrid"]["pair_precision"] = corroboration_report["pair_precision"]
        shipped = outcomes["hybrid"]
        return {
            "configs": table,
            "corroboration": corroboration_report,
            "threshold": {"current": (self.model or RankerModel.load()).threshold, "suggested": suggest_threshold(shipped)},
            "failures": [
                {
                    "id": o.question.id,
                    "question": o.question.question,
                    "gold": o.question.answers,
                    "rank1": o.passages[0].text[:300] if o.passages else None,
                    "rank1_source": o.passages[0].source_id if o.passages else None,
                }
                for o in shipped
                if o.question.answerable and not (o.passages and is_correct(o.question, o.passages[0]))
            ],
            "per_question": [
                {
                    "id": o.question.id, "split": o.question.split, "answerable": o.question.answerable,
                    "answered": o.answered, "confidence": o.confidence,
                    "ranks": {name: first_hit(out[i]) for name, out in outcomes.items()} if o.question.answerable else {},
                }
                for i, o in enumerate(shipped)
            ],
            "questions": len(questions),
            "depth": DEPTH,
        }

    def outcomes(self, questions: list[Question], index: LoadedIndex) -> dict[str, list[Outcome]]:
        """Every configuration's outcome for every question, on one loaded index."""
        embedder = self.embedder or Embedder.for_settings(self.settings)
        embedder.encode_questions(["warm up"])  # the model load is not a question's latency
        model = self.model or RankerModel.load()
        outcomes = {}
        for config in self.configs:
            if config == "naive":
                baseline = NaiveBaseline(index, embedder)
                outcomes[config] = [self._timed(q, lambda q: (baseline.run(q.question, DEPTH), True, None)) for q in questions]
                continue
            if config in ("dense", "bm25"):
                retriever = Retriever(embedder, mode=config, model=model)
            else:
                retriever = Retriever(embedder, model=model, disabled=frozenset({config.removeprefix("-")}) - {"hybrid", "recency"})
            recency = config not in ("dense", "bm25", "-recency")  # the shipped order, its ablations included
            outcomes[config] = [self._timed(q, lambda q: self._retrieve(retriever, index, q, recency, config == "hybrid"))
                                for q in questions]
        return outcomes

    @staticmethod
    def _timed(question: Question, run) -> Outcome:
        started = time.perf_counter()
        passages, answered, relevance, *group = run(question)
        return Outcome(question, passages, answered, relevance, time.perf_counter() - started, *group)

    @staticmethod
    def _retrieve(retriever: Retriever, index: LoadedIndex, q: Question, recency: bool = False, corroborate: bool = False):
        """The ranked passages (newer first among equals when the question asks for the latest, with
        `recency`) before folding, which the ranking metrics score; with `corroborate`, the top
        result's group once repeats are folded and corroboration found (what the service shows)."""
        answer = retriever.run(index, q.question, DEPTH)
        answer = prefer_recent(index, answer) if recency else answer
        passages = [
            Passage(h.chunk.text, h.chunk.source_id, index.sources[h.chunk.source_id].text[h.highlight[0] : h.highlight[1]])
            for h in answer.hits
        ]
        if not corroborate:
            return passages, answer.answered, answer.confidence
        top = Corroborator().run(index, answer, 1).hits[:1]
        group = frozenset(h.chunk.source_id for h in top) | {s.source_id for h in top for s in h.corroborated_by}
        return passages, answer.answered, answer.confidence, group

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
        group = frozenset(data["results"][0]["source"]["id"] for _ in data["results"][:1]) | {
            s["source"]["id"] for r in data["results"][:1] for s in r.get("corroborated_by", ())}
        return Outcome(q, passages, data["answered"], data.get("confidence"), seconds, group)


def evaluate_collections(
    collections: list[Collection], work_dir: Path, embedder: Embedder, split: str | None = None,
    configs: tuple[str, ...] = CONFIGS, model: RankerModel | None = None,
) -> dict:
    """One report per collection (each on a fresh or updated index of its own) and their mean."""
    reports = {}
    for collection in collections:
        settings = build_collection_index(collection, work_dir, embedder)
        questions = [q for q in load_questions(collection.questions) if split in (None, q.split)]
        if not questions:
            raise QuestionsError(f"{collection.questions} has no questions in the {split} split")
        reports[collection.name] = Evaluator(settings, configs=configs, embedder=embedder, model=model,
                                             collection=collection.name).run(questions)
    names = list(next(iter(reports.values()))["configs"]) if reports else []
    mean = {
        name: {m: _mean_or_none([r["configs"][name][m] for r in reports.values()]) for m in (*METRICS, "passage_chars")}
        for name in names
    }
    return {"collections": reports, "mean": mean, "split": split or "all"}


def _mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def _table(configs: dict, columns: list[str]) -> list[str]:
    header = f"{'config':<14}" + "".join(f"{c:>{max(9, len(c) + 1)}}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, row in configs.items():
        cells = "".join(f"{'—' if row.get(c) is None else row[c]:>{max(9, len(c) + 1)}}" for c in columns)
        lines.append(f"{name + ('*' if name == 'hybrid' else ''):<14}{cells}")
    return lines


def format_table(report: dict, failures: bool = True) -> str:
    lines = _table(report["configs"], list(METRICS) + ["passage_chars", "p50_ms", "p95_ms"])
    lines.append("* shipped configuration; -x: shipped with signal group x switched off")
    t = report["threshold"]
    lines.append(f"abstain threshold: current {t['current']}; highest with ≤5% false abstention on this set: {t['suggested']}")
    if (c := report.get("corroboration")) and c["pairs"]:
        lines.append(f"corroboration: group@1 over questions answered in ≥2 gold sources; pair_precision over "
                     f"{c['pairs_listed']} listed of {c['pairs']} labelled pairs (recall {c['pair_recall']})")
    if failures and report["failures"]:
        lines.append(f"\nmisses at rank 1 ({len(report['failures'])}):")
        for f in report["failures"]:
            rank1 = (f["rank1"] or "").replace("\n", " ")[:140]
            lines.append(f"- {f['id']} {f['question']}\n    gold: {' | '.join(f['gold'])}\n    rank 1 [{f['rank1_source']}]: {rank1}")
    return "\n".join(lines)


def format_collections(report: dict, failures: bool = False) -> str:
    parts = []
    for name, single in report["collections"].items():
        parts.append(f"== {name} ({single['questions']} questions, split: {report['split']})")
        parts.append(format_table(single, failures))
    parts.append(f"== mean over {len(report['collections'])} collections (split: {report['split']})")
    parts.extend(_table(report["mean"], list(METRICS) + ["passage_chars"]))
    return "\n".join(parts)


def compare(old: dict, new: dict, config: str = "hybrid") -> list[dict]:
    """Questions whose first correct rank (or abstention) changed between two `qa eval --json` runs."""

    def ranks(report: dict) -> dict[tuple[str, str], dict]:
        if not isinstance(report, dict) or not ("collections" in report or "per_question" in report):
            raise QuestionsError("not a `qa eval --json` report")
        singles = report.get("collections") or {"": report}
        try:
            return {(name, q["id"]): {"answerable": bool(q["answerable"]), "answered": q["answered"], "ranks": dict(q["ranks"])}
                    for name, single in singles.items() for q in single["per_question"]}
        except (KeyError, TypeError, AttributeError) as err:
            raise QuestionsError(f"a `qa eval --json` report without per-question ranks ({err})") from err

    before, after = ranks(old), ranks(new)
    if not before.keys() & after.keys():
        raise QuestionsError("the two reports share no question (one from --all, one from a single question set?)")
    changes = []
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key], after[key]
        if a["answerable"]:
            ra, rb = a["ranks"].get(config), b["ranks"].get(config)
            worse = (rb or DEPTH + 1) > (ra or DEPTH + 1)
            if ra != rb:
                changes.append({"collection": key[0], "id": key[1], "change": "worse" if worse else "better", "old": ra, "new": rb})
        elif a["answered"] != b["answered"]:
            changes.append({"collection": key[0], "id": key[1], "change": "worse" if b["answered"] else "better",
                            "old": "answered" if a["answered"] else "abstained", "new": "answered" if b["answered"] else "abstained"})
    return changes


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / "eval.json", folder / "eval.png"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    configs = report.get("configs") or report["mean"]  # one question set, or the mean over collections
    names = list(configs)
    metrics = [m for m in METRICS if any(configs[n][m] is not None for n in names)]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=100)
    for i, name in enumerate(names):
        values = [configs[name][m] or 0 for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, values, width, label=name + (" (shipped)" if name == "hybrid" else ""))
    ax.set_xticks(np.arange(len(metrics)) + width * (len(names) - 1) / 2, metrics)
    ax.set_ylim(0, 1.2)  # head room for the legend
    ax.set_ylabel("share of questions")
    title = (f"{report['questions']} gold questions" if "questions" in report
             else f"mean over {len(report['collections'])} collections ({report['split']} split)")
    ax.set_title(f"Retrieval quality, {title}")
    ax.legend(ncol=5, fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return json_path, png_path


