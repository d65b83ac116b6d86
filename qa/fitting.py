"""Fit the ranking and abstention weights on several collections, and say how well they transfer.

Only the `dev` split of each collection is read. The passage model scores (passage, sentence) rows
of each question's candidate pool; a row is an answer when its sentence states a gold answer in a
gold source, and the model is a logistic regression on differences between a question's answering
rows and its other rows (pairwise: it learns to order candidates). The abstention model is a logistic regression over one row
per question (best score, constraints no candidate states, unknown terms…): positive when the
question is answerable. Its threshold is the highest probability that wrongly abstains on at most
5% of every collection's answerable dev questions.

Leave-one-collection-out: for each collection, both models are fitted on the other collections'
dev splits and scored on the held-out collection's test split, which nothing else reads. That is
the figure to expect on a collection never seen.

Usage:
    >>> model, report = Fitter(work_dir, embedder).run(discover_collections())
    >>> model.save()
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from qa.embedding import Embedder
from qa.evaluation import (
    SPLITS, Collection, Question, build_collection_index, contains_answer, evaluate_collections, false_abstention_cut,
    load_questions,
)
from qa.indexing import load_index
from qa.ranker import LinearModel, RankerModel
from qa.retrieval import FEATURES, QUESTION_FEATURES, Candidates, Retriever

LOCO_CONFIGS = ("hybrid", "dense", "bm25", "naive")
REPORTED = ("answer@1", "mrr@10", "highlight@1", "abstention", "false_abstention")


class FitError(Exception):
    """The collections cannot be fitted on (no dev questions, no answering passage found…)."""


@dataclass
class Example:
    question: Question
    pool: Candidates
    labels: np.ndarray  # per row of pool.features


def _logistic(x: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> LinearModel:
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)  # a constant column carries no information
    fitted = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, y)
    return LinearModel(names, tuple(map(float, mean)), tuple(map(float, scale)), tuple(map(float, fitted.coef_[0])),
                       float(fitted.intercept_[0]))


def _pairwise(examples: list[Example], rounds: int = 2, hard: int = 20) -> LinearModel:
    """Logistic regression on differences: within each question, every answering row against other
    rows, so the weights learn to order a question's candidates, not to grade questions. A second
    round keeps only each question's `hard` best-scoring wrong rows — the ones that actually
    compete for rank 1. Each question weighs the same whatever its pool size."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([e.pool.features for e in examples])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    model = None
    for _ in range(rounds):
        diffs, weights = [], []
        for e in examples:
            z = (e.pool.features - mean) / scale
            positives, negatives = z[e.labels], z[~e.labels]
            if model is not None and len(negatives) > hard:
                negatives = negatives[np.argsort(-(negatives @ model))[:hard]]
            if not len(positives) or not len(negatives):
                continue
            d = (positives[:, None, :] - negatives[None, :, :]).reshape(-1, z.shape[1])
            diffs.append(d)
            weights.append(np.full(len(d), 1.0 / len(d)))
        d, w = np.vstack(diffs), np.concatenate(weights)
        fitted = LogisticRegression(C=1.0, max_iter=2000, fit_intercept=False).fit(
            np.vstack([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))], sample_weight=np.r_[w, w] * len(examples))
        model = fitted.coef_[0]
    return LinearModel(FEATURES, tuple(map(float, mean)), tuple(map(float, scale)), tuple(map(float, model)), 0.0)


@dataclass
class Fitter:
    work_dir: Path
    embedder: Embedder
    candidates: int = 40
    examples: dict[str, list[Example]] = field(default_factory=dict, init=False)

    def gather(self, collection: Collection) -> list[Example]:
        """Candidate pools and row labels of the collection's dev questions."""
        index = load_index(build_collection_index(collection, self.work_dir, self.embedder))
        retriever = Retriever(self.embedder, candidates=self.candidates)
        out = []
        for q in load_questions(collection.questions):
            if q.split != "dev":
                continue
            pool = retriever.pool(index, q.question, self.embedder.encode_question(q.question), self.candidates)
            labels = np.array([
                q.answerable and (not q.sources or index.chunks[pool.positions[c]].source_id in q.sources)
                and contains_answer(index.sources[index.chunks[pool.positions[c]].source_id].text[s:e], q.answers)
                for c, (s, e) in zip(pool.row_chunk, pool.row_span)
            ], dtype=bool)
            # Fitting reads the features: the sentences' vectors (about 0.5 MB a question) are not kept.
            out.append(Example(q, replace(pool, sentences=None), labels))
        return out

    def fit(self, names: list[str]) -> RankerModel:
        examples = [e for n in names for e in self.examples[n]]
        rows = [e for e in examples if e.labels.any() and not e.labels.all()]
        if not rows or len({e.question.answerable for e in examples}) < 2:
            raise FitError(f"nothing to fit on in {', '.join(names)}: the dev splits need answerable questions whose "
                           "answer a candidate passage states, and unanswerable ones")
        passage = _pairwise(rows)

        def question_row(e: Example) -> np.ndarray:
            return e.pool.question_row(passage.score(e.pool.features))

        qx = np.vstack([question_row(e) for e in examples])
        qy = np.array([e.question.answerable for e in examples])
        abstention = _logistic(qx, qy, QUESTION_FEATURES)
        # The highest cut that keeps false abstention ≤ 5% on every collection's answerable questions.
        cuts = [false_abstention_cut([float(abstention.probability(question_row(e)[None, :])[0])
                                      for e in self.examples[n] if e.question.answerable]) for n in names]
        cuts = [c for c in cuts if c is not None]
        threshold = round(min(cuts), 4) if cuts else 0.5
        counts = {n: len(self.examples[n]) for n in names}
        return RankerModel(passage, abstention, threshold, {"dev_questions": counts})

    def run(self, collections: list[Collection]) -> tuple[RankerModel, dict]:
        for c in collections:
            self.examples[c.name] = self.gather(c)
        names = [c.name for c in collections]
        loco: dict[str, dict] = {split: {} for split in SPLITS}
        for held_out in collections if len(collections) > 1 else []:
            model = self.fit([n for n in names if n != held_out.name])
            for split in SPLITS:
                report = evaluate_collections([held_out], self.work_dir, self.embedder, split=split, configs=LOCO_CONFIGS, model=model)
                configs = report["collections"][held_out.name]["configs"]
                loco[split][held_out.name] = {config: {m: configs[config][m] for m in REPORTED} for config in LOCO_CONFIGS}
        model = self.fit(names)
        # The held-out dev figures are for choosing between signal designs; test figures are for reporting only.
        fitted_on = {**model.fitted_on, "leave_one_collection_out_dev": loco["dev"], "leave_one_collection_out_test": loco["test"]}
        return RankerModel(model.passage, model.abstention, model.threshold, fitted_on), loco


def format_loco(loco: dict, split: str = "test") -> str:
    header = f"{'held out':<16}{'config':<9}" + "".join(f"{m:>17}" for m in REPORTED)
    lines = [f"leave-one-collection-out (fitted on the others' dev splits, scored on the held-out {split} split)", header]
    for name, configs in loco[split].items():
        for config, row in configs.items():
            cells = "".join(f"{'—' if row[m] is None else row[m]:>17}" for m in REPORTED)
            lines.append(f"{name:<16}{config:<9}{cells}")
    return "\n".join(lines)
