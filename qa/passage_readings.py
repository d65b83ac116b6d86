"""What ranking reads in a candidate passage, kept across questions.

Each sentence's terms, figures, names and hedges, the passage's as a whole and its context
(`qa.readings`): decoded from the version's stored lines, or, for an index without them, read from
the text. None of it depends on the question, so it is kept, least recently used dropped first (a
few KB a passage: tens of MB per worker at most). Corroboration compares what ranking read
(`Answer.pool`), so a passage a question ranked is not decoded again to corroborate its results.

Usage:
    >>> readings = PassageReadings()
    >>> sentences, whole, context = readings.passages(index, positions)[0]   # those not kept, read together
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from qa.indexing import LoadedIndex
from qa.readings import SentenceFacts, context, read
from qa.signals import TextFacts


class PassageFacts(NamedTuple):
    sentences: list[SentenceFacts]  # one per sentence row of the passage, in order
    whole: SentenceFacts  # its sentences' terms, marks and answer types together (not names or hedges; not the context)
    context: SentenceFacts  # the source's title and the section heading above it


@dataclass
class PassageReadings:
    """Passage and sentence readings by (version, position) and (version, source, span)."""

    passages_kept: int = 5_000
    sentences_kept: int = 20_000  # read from text only: an index without stored readings
    _passages: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _sentences: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    def passages(self, index: LoadedIndex, positions: list[int]) -> list[PassageFacts]:
        """Each position's readings; those not kept are read together (`StoredReadings.passages`)."""
        found: dict[int, PassageFacts] = {}
        for p in positions:
            cached = self._passages.get((index.version, p))
            if cached is not None:
                _refresh(self._passages, (index.version, p))
                found[p] = cached
        missing = [p for p in dict.fromkeys(positions) if p not in found]
        if missing:
            if index.readings is not None:
                sentences, around = index.readings.passages(index.chunk_rows[missing].tolist(), missing)
            else:
                chunks = [index.chunks[p] for p in missing]
                sentences = [[self._sentence(index, c.source_id, s, e) for s, e in c.sentences] for c in chunks]
                around = [read(context(index.sources[c.source_id], c.start, c.sentences)) for c in chunks]
            for p, facts, near in zip(missing, sentences, around):
                found[p] = self._keep((index.version, p), PassageFacts(facts, _whole(facts), near))
        return [found[p] for p in positions]

    def _keep(self, key: tuple, facts: PassageFacts) -> PassageFacts:
        self._passages[key] = facts
        if len(self._passages) > self.passages_kept:
            self._passages.popitem(last=False)
        return facts

    def _sentence(self, index: LoadedIndex, source_id: str, start: int, end: int) -> SentenceFacts:
        key = (index.version, source_id, start, end)
        cached = self._sentences.get(key)
        if cached is not None:
            _refresh(self._sentences, key)
            return cached
        cached = read(index.sources[source_id].text[start:end])
        self._sentences[key] = cached
        if len(self._sentences) > self.sentences_kept:
            self._sentences.popitem(last=False)
        return cached


def _whole(sentences: list[SentenceFacts]) -> SentenceFacts:
    """A passage's terms, marks and answer types: its sentences' together."""
    types = 0
    for f in sentences:
        types |= f.facts.types
    return SentenceFacts(frozenset().union(*(f.terms for f in sentences)),
                         TextFacts(frozenset().union(*(f.facts.marks for f in sentences)), types))


def _refresh(cache: OrderedDict, key: tuple) -> None:
    """Mark `key` recently used; another request's thread may have just dropped it."""
    try:
        cache.move_to_end(key)
    except KeyError:
        pass
