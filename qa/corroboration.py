"""Corroboration: which other sources state the fact a result's marked sentence states, and which
report it with another figure; results that only repeat a fact already shown are folded under it.

Two sentences from different sources state *the same fact* when they state the same dates and
numbers (`qa.signals` reads them, normalised: "Oct. 7" = "7 October"), no other year, quarter or
ordinal (that is another event: "the 2019 race" vs "the 2022 race"), neither is a forecast or claim
unless both are, and their stored sentence vectors are close: `FIGURE_SIMILARITY` when they share a
date, `WEAK_SIMILARITY` (a near-paraphrase) when they share only quantities, or, stating no figure,
only a rare name ("Roy Daza", not "Venezuela") or a quoted phrase. A near-paraphrase about the same
subject with another date or number of a kind both state is *reported differently* (`disputed_by`).

Other sources' sentences are searched among the question's pooled candidates (`Answer.pool`): a
sentence stating the same fact answers the same question, so the pool holds it, and no request
pays for a pass over every sentence of the index. A filter therefore applies here too. Their names,
figures, hedges and vectors are what ranking read already (`Answer.pool`): nothing is read again.

Usage:
    >>> answer = Corroborator().run(index, retriever.run(index, question, 2 * k), k)
    >>> answer.hits[0].corroborated_by
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from qa.data import Answer, Support
from qa.indexing import LoadedIndex
from qa.readings import SentenceFacts, read as read_sentence

# Calibrated on the hand-labelled pairs of eval/corroboration_pairs.jsonl (every cross-source pair
# a draft of this rule listed, at similarity >= 0.3, for the top-5 results of every seeds and
# news-snippets question; each labelled by reading both sentences): the thresholds under which
# no pair labelled "different" is listed (`qa eval` prints the precision as `pair_precision`).
# A shared date pins one event: the seeds' true pairs share one at 0.45-0.64. A shared bare quantity
# or name does not (news-snippets: "$1.5 million" of insurance in a trial and in a lawsuit, 0.70;
# one deal's "completed" and "shareholders vote", 0.76), so those need a near-paraphrase.
FIGURE_SIMILARITY = 0.44
WEAK_SIMILARITY = 0.8
# Sentences about one subject state other figures all the time (last year's result, a rival offer):
# only a near-paraphrase with another figure is a report of the same fact that disagrees.
DISPUTE_SIMILARITY = 0.85
# A name is an anchor only when few passages use it: idf >= 1.9 is fewer than about one passage
# in seven ("Maduro" in the seeds, at 1.71, is everywhere; "Daza", at 2.56, is one story's).
RARE_NAME_IDF = 1.9
FIGURES = ("date", "number")  # what a fact states: the same ones agree, other ones dispute
ANCHORS = ("quote",)  # shared, they tie two sentences to one subject; one side quoting more is no disagreement
EVENTS = ("year", "quarter", "ordinal")  # another value names another event, not a disagreement
Relation = Literal["agrees", "disputes"]


@dataclass(frozen=True)
class Reading:
    """What a sentence states that another report of the same fact must repeat."""

    figures: dict[str, frozenset[str]]  # kind -> marks, for FIGURES
    events: dict[str, frozenset[str]]  # kind -> marks, for EVENTS
    anchors: frozenset[str]  # quoted phrases, and analysed capitalised words after the first (months left out)
    hedged: bool  # states a forecast, hope, plan or claim rather than what happened

    @classmethod
    def of(cls, facts: SentenceFacts) -> "Reading":
        """A sentence's figures, event markers and anchors, from what `qa.readings` read in it."""
        return cls.stating(facts.facts.marks, facts.names, facts.hedged)

    @classmethod
    def stating(cls, marks: frozenset[str], names: frozenset[str], hedged: bool) -> "Reading":
        """The reading of a sentence with these marks (`qa.signals`), names and hedge."""
        if not marks:  # many sentences state no figure, and a question compares a hundred or more
            return cls({}, {}, names, hedged)
        by_kind: dict[str, set[str]] = {}
        for mark in marks:
            by_kind.setdefault(mark.split(":", 1)[0], set()).add(mark)
        return cls({k: frozenset(by_kind[k]) for k in FIGURES if k in by_kind},
                   {k: frozenset(by_kind[k]) for k in EVENTS if k in by_kind},
                   names.union(*(by_kind.get(k, ()) for k in ANCHORS)), hedged)


def read(text: str) -> Reading:
    """A sentence's reading from its text (a labelled pair: `qa eval`)."""
    return Reading.of(read_sentence(text))


def _differ(a: dict[str, frozenset[str]], b: dict[str, frozenset[str]]) -> bool:
    """Some kind both state with values neither side contains (one saying more is not a disagreement)."""
    return bool(a and b) and any(not (a[k] <= b[k] or b[k] <= a[k]) for k in a.keys() & b.keys())


def relation(marked: Reading, other: Reading, similarity: float, rare: frozenset[str]) -> Relation | None:
    """How `other` relates to the fact `marked` states; `rare`: the names rare enough to anchor a fact
    (quotes always do)."""
    if similarity < FIGURE_SIMILARITY or _differ(marked.events, other.events) or marked.hedged != other.hedged:
        return None
    shared = {a for a in marked.anchors & other.anchors if a in rare or a.startswith("quote:")}
    if marked.figures and marked.figures == other.figures:
        return "agrees" if "date" in marked.figures or similarity >= WEAK_SIMILARITY else None
    if _differ(marked.figures, other.figures):  # the same subject (a shared name or figure), another date or number
        same_subject = shared or any(marked.figures[k] & other.figures[k] for k in marked.figures.keys() & other.figures.keys())
        return "disputes" if same_subject and similarity >= DISPUTE_SIMILARITY else None
    if not marked.figures and not other.figures and shared and similarity >= WEAK_SIMILARITY:
        return "agrees"
    return None  # one states a figure the other does not: no telling


@dataclass
class Corroborator:
    """One step after retrieval: hits in, hits with their corroborating and disputing sentences out,
    those that repeat an earlier hit's fact folded under it."""

    readings_kept: int = 20_000  # a question compares a few hundred sentences; popular passages come back

    def __post_init__(self) -> None:
        # Readings by what they are read from, kept across questions and shared by them: read only.
        self._reading = functools.lru_cache(maxsize=self.readings_kept)(Reading.stating)

    def run(self, index: LoadedIndex, answer: Answer, k: int) -> Answer:
        """The first `k` hits that state distinct facts, each with its corroborating and disputing
        sentences; `answer` is `Retriever.run`'s (its pool holds the sentences compared)."""
        if not answer.hits:
            return answer
        pool = answer.pool
        if pool is None:
            raise ValueError("corroboration compares the sentences of the answer's pool: pass the Answer Retriever.run returned")
        owners, spans, facts = pool.sources, pool.spans, pool.facts
        where = {(s, span): c for c, (s, span) in enumerate(zip(owners, spans))}
        marked = [where[(h.chunk.source_id, h.highlight)] for h in answer.hits]  # a hit's sentence is a candidate's
        similarity = pool.vectors @ pool.vectors[marked].T  # (candidates, hits)
        # Only sentences close enough to some hit are compared, and each hit's own sentence.
        near = np.union1d(np.flatnonzero(similarity.max(axis=1) >= FIGURE_SIMILARITY), marked)
        reading = {int(c): self._reading(facts[c].facts.marks, facts[c].names, facts[c].hedged) for c in near}
        names = sorted({n for r in reading.values() for n in r.anchors if not n.startswith("quote:")})
        rare = frozenset(n for n, idf in zip(names, index.lexical.idf(names)) if idf >= RARE_NAME_IDF) if names else frozenset()

        kept: list[int] = []
        for j, hit in enumerate(answer.hits):
            if any(answer.hits[i].chunk.source_id != hit.chunk.source_id
                   and relation(reading[marked[i]], reading[marked[j]], float(similarity[marked[j], i]), rare) == "agrees"
                   for i in kept):
                continue  # the same fact as a result already shown, from another source: folded under it
            kept.append(j)
            if len(kept) == k:
                break

        hits = []
        for j in kept:
            hit = answer.hits[j]
            best: dict[tuple[str, Relation], Support] = {}
            column, own = similarity[:, j], reading[marked[j]]
            close = near[column[near] >= FIGURE_SIMILARITY]
            for c, close_similarity in zip(close.tolist(), column[close].tolist()):  # Python numbers: a few hundred a question
                if owners[c] == hit.chunk.source_id:
                    continue
                found = relation(own, reading[c], close_similarity, rare)
                key = (owners[c], found)
                # Compared in float32, as the similarities are (a stored one is rounded to 4 places).
                if found and (key not in best or float(np.float32(best[key].similarity)) < close_similarity):
                    best[key] = Support(owners[c], spans[c], round(close_similarity, 4))
            agreeing = {s for s, r in best if r == "agrees"}
            hits.append(replace(
                hit,
                corroborated_by=tuple(sorted((v for (s, r), v in best.items() if r == "agrees"), key=_strongest)),
                disputed_by=tuple(sorted((v for (s, r), v in best.items() if r == "disputes" and s not in agreeing),
                                         key=_strongest)),
            ))
        return replace(answer, hits=hits)


def _strongest(support: Support) -> tuple[float, str]:
    return -support.similarity, support.source_id
