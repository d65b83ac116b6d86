"""Plain records passed between the pipeline steps."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from qa.readings import SentenceFacts


@dataclass(frozen=True)
class SourceMeta:
    """What a reader needs to cite a source; read from `sources.toml`, all optional but the id."""

    id: str
    title: str | None = None
    outlet: str | None = None
    author: str | None = None
    published: str | None = None  # ISO date
    url: str | None = None
    language: str | None = None  # ISO 639-1 code, when the document or sources.toml states it


@dataclass(frozen=True)
class Source:
    """A cleaned source document. `text` is what every citation offset points into."""

    meta: SourceMeta
    text: str
    sha256: str  # of the raw file bytes, so a rebuild can tell changed files from unchanged ones
    file_name: str  # path relative to the sources folder
    pages: tuple[int, ...] = ()  # start offset in `text` of each page (PDF); empty when the format has none

    @property
    def id(self) -> str:
        return self.meta.id

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding `text[offset]`, or None for a document without pages."""
        return bisect.bisect_right(self.pages, offset) if self.pages else None


@dataclass(frozen=True)
class Problem:
    """A source file (or a record in one) that was skipped or read with a caveat, and why."""

    file_name: str  # path relative to the sources folder, `#record-id` for a record
    reason: str
    skipped: bool = True


Stamp = tuple[int, int, int]  # size, mtime_ns, ctime_ns of a file


@dataclass(frozen=True)
class FileRecord:
    """What a build remembers of a file it read: its stamp then, the sources it gave (id and the
    document's own metadata, in order) and the problems met reading it."""

    stamp: Stamp
    sources: tuple[tuple[str, dict[str, str]], ...]
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Kept:
    """A source of a file unchanged since the build that read it: not read again. Its text, chunks
    and vectors are that build's; its metadata is computed anew."""

    meta: SourceMeta
    file_name: str

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(frozen=True)
class Chunk:
    """A verbatim span `source.text[start:end]` made of whole sentences.

    `sentences` holds the absolute (start, end) offsets of each sentence in the chunk.
    """

    id: str
    source_id: str
    start: int
    end: int
    text: str
    sentences: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Support:
    """A sentence of another source that states the same fact as a hit's highlight (or another figure for it)."""

    source_id: str
    span: tuple[int, int]  # absolute offsets of the sentence in its source text
    similarity: float  # cosine similarity of the two sentences


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score and the sentence that best supports the question."""

    chunk: Chunk
    score: float
    relevance: float  # cosine similarity of the best sentence to the question
    highlight: tuple[int, int]  # absolute offsets into the source text
    corroborated_by: tuple[Support, ...] = ()  # best sentence per other source stating the same fact
    disputed_by: tuple[Support, ...] = ()  # best sentence per other source stating another figure for it


@dataclass(frozen=True)
class Answer:
    """What retrieval returns for one question."""

    question: str
    answered: bool
    hits: list[Hit] = field(default_factory=list)
    index_version: str = ""
    confidence: float = 0.0  # what `answered` thresholds
    pool: PoolSentences | None = field(default=None, compare=False, repr=False)  # the candidates' sentences (where corroboration looks)


@dataclass(frozen=True)
class PoolSentences:
    """Every distinct sentence of a question's candidates as ranking read it: corroboration compares
    the results' sentences with these without reading a row again."""

    sources: list[str]  # each sentence's source id
    spans: list[tuple[int, int]]  # absolute offsets in that source
    facts: list[SentenceFacts]
    vectors: np.ndarray  # (sentences, dimension) float32, L2-normalised


@dataclass(frozen=True)
class Report:
    """Another source's sentence about a citation's fact, citable like the citation itself."""

    source: SourceMeta
    span: tuple[int, int]  # the sentence, absolute offsets in the source's text
    text: str
    similarity: float
    page: int | None = None


@dataclass(frozen=True)
class Citation:
    """A passage as shown to a reader: verbatim text, where it sits in the source, and what to cite."""

    rank: int
    score: float
    relevance: float
    text: str
    source: SourceMeta
    span: tuple[int, int]
    highlight: tuple[int, int]
    highlight_text: str
    page: int | None = None  # page holding the passage's start (paged formats: PDF)
    highlight_page: int | None = None
    corroborated_by: tuple[Report, ...] = ()  # other sources stating the marked sentence's fact
    disputed_by: tuple[Report, ...] = ()  # other sources stating another date or number for it

    @property
    def sources_agreeing(self) -> int:
        """This source and every other that states the same fact."""
        return 1 + len(self.corroborated_by)
