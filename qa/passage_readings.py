"""What ranking and corroboration read in a candidate passage, kept across questions.

Each sentence's terms, figures, names and hedges, the passage's as a whole and its context
(`qa.readings`): decoded from the version's stored lines, or, for an index without them, read from
the text. None of it depends on the question, so it is kept, least recently used dropped first (a
few KB a passage: tens of MB per worker at most). Ranking and corroboration share one, so a
passage a question ranked is not decoded again to corroborate its results.

Usage:
    >>> readings = PassageReadings()
    >>> sentences, whole, context = readings.passage(index, position)
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

    def passage(self, index: LoadedIndex, position: int) -> PassageFacts:
        key = (index.version, position)
        cached = self._passages.get(key)
        if cached is not None:
            _refresh(self._passages, key)
            return cached
        if index.readings is not None:
            sentences = index.readings.sentences(*index.chunk_rows[position].tolist())
            around = index.readings.context(position)
        else:
            chunk = index.chunks[position]
            sentences = [self._sentence(index, chunk.source_id, s, e) for s, e in chunk.sentences]
            around = read(context(index.sources[chunk.source_id], chunk.start, chunk.sentences))
        types = 0
        for f in sentences:
            types |= f.facts.types
        whole = SentenceFacts(frozenset().union(*(f.terms for f in sentences)),
                              TextFacts(frozenset().union(*(f.facts.marks for f in sentences)), types))
        cached = PassageFacts(sentences, whole, around)
        self._passages[key] = cached
        if len(self._passages) > self.passages_kept:
            self._passages.popitem(last=False)
        return cached

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


def _refresh(cache: OrderedDict, key: tuple) -> None:
    """Mark `key` recently used; another request's thread may have just dropped it."""
    try:
        cache.move_to_end(key)
    except KeyError:
        pass
