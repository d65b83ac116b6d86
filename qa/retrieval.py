"""Answer a question with ranked verbatim passages: pool, score, dedupe, highlight, abstain.

Dense (Chroma over chunk vectors; an exact scan for a small version, or a large one whose store
is still opening: `qa.exact_search`) and
lexical (BM25) candidates are pooled. Every sentence of
every pooled passage is then described by signals that hold for any collection:
- meaning: the passage's and the sentence's cosine similarity to the question, raw and as the
  gap to the best in the pool, and the dense rank;
- words: BM25 score and rank, and the IDF-weighted share of the question's terms present in the
  sentence (proximity: all in one sentence) and in the passage with its title and section heading;
- constraints: agreement of the question's years, dates, quarters, ordinals, numbers and quoted
  strings with the sentence and the passage, and conflict (another year than the one asked);
- answer type: the sentence holds a date for "when", a quantity for "how many", a name for "who",
  a place for "where".
A fitted linear model (`qa/ranker.json`, made by `qa fit`) scores each (passage, sentence) pair:
a passage ranks by its best sentence, and that sentence is the highlight. Overlapping or
near-identical passages are collapsed. A second fitted model turns question-level evidence
(best score, constraints no candidate states, terms the collection never mentions) into the
`confidence` that `answered` thresholds.

Usage:
    >>> retriever = Retriever(embedder)
    >>> answer = retriever.run(index, "When did Maduro enact the treaty law?", k=5)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from qa.data import Answer, Hit, PoolSentences
from qa.embedding import Embedder
from qa.exact_search import ExactSearch
from qa.filters import Selection
from qa.indexing import LoadedIndex
from qa.analysis import terms as analyze
from qa.ranker import MODEL_FILE, RankerError, RankerModel
from qa.passage_readings import PassageReadings
from qa.readings import SentenceFacts
from qa.signals import NAME, TextFacts, agreement, read_question

Mode = Literal["hybrid", "dense", "bm25"]

# Columns of the passage model, grouped by signal so `qa eval` can switch each group off.
SIGNALS: dict[str, tuple[str, ...]] = {
    "dense": ("chunk_cos", "chunk_cos_gap", "sentence_cos", "sentence_cos_gap", "dense_rank"),
    "bm25": ("bm25", "bm25_rank"),
    "coverage": ("chunk_coverage", "sentence_coverage", "sentence_context_coverage"),
    "constraints": ("constraints_chunk", "constraints_sentence", "constraints_sentence_context", "conflict_chunk",
                    "conflict_sentence"),
    "answer_type": ("type_sentence", "type_chunk", "short_sentence"),
}
FEATURES = tuple(f for group in SIGNALS.values() for f in group)
COLUMN = {f: i for i, f in enumerate(FEATURES)}
# Word, constraint and type signals: a passage's (each of its sentence rows repeats them) and a sentence's own.
PASSAGE_WORD_FEATURES = ("chunk_coverage", "constraints_chunk", "conflict_chunk", "type_chunk")
SENTENCE_WORD_FEATURES = ("sentence_coverage", "sentence_context_coverage", "constraints_sentence",
                          "constraints_sentence_context", "conflict_sentence", "type_sentence", "short_sentence")
# The abstention model's input: how the best (passage, sentence) row reads — does it meet what the
# question asks (its years and numbers, the kind of answer, its rare terms and names) — and what the pool
# as a whole holds.
TOP_FEATURES = ("top_score", "names_in_top", "top_constraints", "top_conflict", "top_typed", "top_coverage")
POOL_FEATURES = ("top_sentence_cos", "constraints_met", "typed_sentence", "unknown_terms", "best_coverage")
QUESTION_FEATURES = TOP_FEATURES + POOL_FEATURES


@dataclass
class Candidates:
    """A question's pooled passages and one feature row per (passage, sentence)."""

    positions: list[int]  # chunk positions in the index, pool order
    row_chunk: np.ndarray  # (rows,) index into `positions` for each sentence row
    row_span: list[tuple[int, int]]  # each row's sentence span
    features: np.ndarray  # (rows, len(FEATURES))
    question: np.ndarray  # (len(POOL_FEATURES),): see `question_row` for the rest
    asks: tuple[bool, bool]  # the question names constraints; it asks for a kind of answer
    dense_order: list[int]  # `positions` indices in dense rank order
    bm25_order: list[int]
    chunk_facts: list[SentenceFacts]  # each passage's terms and facts (its sentences', without context)
    name_coverage: np.ndarray  # per passage: share of the question's names in it or its title and heading
    sentences: PoolSentences | None  # the distinct sentences, for corroboration (None: dropped by `qa fit`)

    def question_row(self, row_scores: np.ndarray) -> np.ndarray:
        """The abstention model's input once rows are scored (QUESTION_FEATURES order): how the best
        row meets the question, then the pool's own evidence."""
        if not len(row_scores):
            return np.r_[np.zeros(len(TOP_FEATURES)), self.question]
        top = int(np.argmax(row_scores))
        f = self.features[top]
        constrained, typed = self.asks
        return np.r_[
            float(row_scores[top]),
            float(self.name_coverage[self.row_chunk[top]]),
            f[COLUMN["constraints_sentence_context"]] if constrained else 1.0,
            f[COLUMN["conflict_sentence"]],
            f[COLUMN["type_sentence"]] if typed else 1.0,
            f[COLUMN["sentence_context_coverage"]],
            self.question,
        ]


@dataclass
class Retriever:
    """One step: a question and a loaded index in, an `Answer` out."""

    embedder: Embedder
    mode: Mode = "hybrid"
    candidates: int = 40  # per candidate list; passages beyond this rarely reach the top k
    model: RankerModel | None = None  # default: the shipped `qa/ranker.json`, read on first use
    disabled: frozenset[str] = frozenset()  # signal groups held at their mean (ablations)
    duplicate_overlap: float = 0.5
    duplicate_jaccard: float = 0.8
    readings: PassageReadings = field(default_factory=PassageReadings)  # kept across questions

    def __post_init__(self) -> None:
        if unknown := set(self.disabled) - set(SIGNALS):
            raise ValueError(f"unknown signal group(s) {sorted(unknown)}; the groups are {', '.join(SIGNALS)}")

    def run(self, index: LoadedIndex, question: str, k: int = 5, query: np.ndarray | None = None,
            scope: Selection | None = None) -> Answer:
        """`query`: the question's vector when the caller has it already (benchmarks, batch evaluation);
        `scope`: the sources a filter admits, applied to both candidate lists before ranking."""
        if not index.chunks or scope is not None and not scope.ids:
            return Answer(question, answered=False, index_version=index.version)
        query = self.embedder.encode_question(question) if query is None else query
        pool = self.pool(index, question, query, max(self.candidates, 2 * k), scope)
        if not pool.positions:
            return Answer(question, answered=False, index_version=index.version)
        sentence_cos = pool.features[:, COLUMN["sentence_cos"]]
        logits = self.ranker.passage.score(pool.features, frozenset(f for g in self.disabled for f in SIGNALS[g]))
        best_row, chunk_scores = best_per_passage(pool, logits)
        confidence = self.confidence(pool, logits)
        if self.mode == "hybrid":
            order = list(np.argsort(-chunk_scores, kind="stable"))
        else:  # a single list's order; the sentence most similar to the question is marked
            best_row, chunk_scores = best_per_passage(pool, sentence_cos)
            order = pool.dense_order if self.mode == "dense" else pool.bm25_order

        hits: list[Hit] = []
        kept: list[int] = []
        first_row = np.searchsorted(pool.row_chunk, np.arange(len(pool.positions) + 1)).tolist()  # a passage's rows lie together
        for c in order:
            r = best_row[c]
            chunk = index.chunks.with_sentences(pool.positions[c], tuple(pool.row_span[first_row[c]:first_row[c + 1]]))
            hit = Hit(chunk=chunk, score=float(chunk_scores[c]),
                      relevance=float(sentence_cos[r]), highlight=pool.row_span[r])
            if any(self._duplicates(pool, hit, c, h, other) for h, other in zip(hits, kept)):
                continue
            hits.append(hit)
            kept.append(c)
            if len(hits) == k:
                break
        return Answer(question, answered=confidence >= self.ranker.threshold, hits=hits,
                      index_version=index.version, confidence=confidence, pool=pool.sentences)

    def pool(self, index: LoadedIndex, question: str, query: np.ndarray, n: int, scope: Selection | None = None) -> Candidates:
        """The pooled candidates of both lists with every signal computed (also what `qa fit` learns from)."""
        mask = scope.mask(index.chunks) if scope else None
        dense = self.nearest(index, query, n, scope, mask)
        lexical, lexical_scores = index.lexical.search(question, n, mask)
        positions = list(dict.fromkeys(dense + lexical))
        slot = {p: i for i, p in enumerate(positions)}
        asks = read_question(question)
        q_terms = list(dict.fromkeys(analyze(question)))  # each term once: "x x x … x" costs one lookup
        idf = index.lexical.idf(q_terms) if q_terms else np.zeros(0)
        idf_total = float(idf.sum())
        weights = list(zip(q_terms, (idf / idf_total if idf_total else idf).tolist()))
        q_set = frozenset(q_terms)
        names = frozenset(analyze(" ".join(NAME.findall(question))))

        def coverage(words: frozenset[str], more: frozenset[str] = frozenset()) -> float:
            """Weight of the question's terms in `words` or `more`, added in the question's order: in set
            order the last bit would depend on the process's hash seed, and two workers could differ."""
            return sum(w for t, w in weights if t in words or t in more)

        chunk_cos = index.chunk_vectors[positions] @ query if positions else np.zeros(0)
        row_chunk: list[int] = []
        row_vectors: list[int] = []
        for c, (lo, hi) in enumerate(index.chunk_rows[positions].tolist() if positions else []):
            row_vectors.extend(range(lo, hi))
            row_chunk.extend([c] * (hi - lo))
        row_span: list[tuple[int, int]] = list(map(tuple, index.sentence_spans[row_vectors].tolist()))
        # In float32: numpy multiplies float16 matrices without BLAS, element by element.
        row_matrix = index.sentence_vectors[row_vectors].astype(np.float32) if row_vectors else np.zeros((0, len(query)), np.float32)
        sentence_cos = row_matrix @ query

        bm25 = np.zeros(len(positions))
        bm25_rank = np.zeros(len(positions))
        top = max(lexical_scores, default=0.0) or 1.0
        for rank, (p, s) in enumerate(zip(lexical, lexical_scores)):
            bm25[slot[p]], bm25_rank[slot[p]] = s / top, 1.0 / (rank + 1)
        dense_rank = np.zeros(len(positions))
        for rank, p in enumerate(dense):
            dense_rank[slot[p]] = 1.0 / (rank + 1)

        # Built as flat lists of Python floats: numpy converts those much faster than a tuple a row.
        passage_words: list[float] = []  # PASSAGE_WORD_FEATURES, a passage after another
        sentence_words: list[float] = []  # SENTENCE_WORD_FEATURES, a sentence row after another
        row_facts: list[SentenceFacts] = []
        passages: list[SentenceFacts] = []
        name_coverage = np.ones(len(positions))
        type_bit = asks.type_bit
        asked = asks.constraints
        n_asked = len(asked) or 1
        for c, (facts, passage, context) in enumerate(self.readings.passages(index, positions)):
            passages.append(passage)
            met_c, conflict_c = agreement(asks, TextFacts(passage.facts.marks | context.facts.marks, passage.facts.types))
            passage_words += (coverage(passage.terms, context.terms), met_c, conflict_c, float(bool(passage.facts.types & type_bit)))
            if names:
                name_coverage[c] = len(names & (passage.terms | context.terms)) / len(names)
            heading_terms, heading_marks = context.terms & q_set, context.facts.marks & asked
            row_facts.extend(facts)
            for sentence in facts:  # the sentence read under its heading: "It carried 4 instruments" below "Mission II"
                met_s, conflict_s = agreement(asks, sentence.facts)
                sentence_words += (coverage(sentence.terms), coverage(sentence.terms, heading_terms), met_s,
                                   len((sentence.facts.marks & asked) | heading_marks) / n_asked, conflict_s,
                                   float(bool(sentence.facts.types & type_bit)), float(len(sentence.terms) < 4))
        rc = np.asarray(row_chunk, dtype=np.int64)
        features = np.zeros((len(rc), len(FEATURES)))
        if len(rc):
            features[:, [COLUMN[f] for f in PASSAGE_WORD_FEATURES]] = np.array(passage_words).reshape(-1, len(PASSAGE_WORD_FEATURES))[rc]
            features[:, [COLUMN[f] for f in SENTENCE_WORD_FEATURES]] = np.array(sentence_words).reshape(-1, len(SENTENCE_WORD_FEATURES))
            features[:, COLUMN["chunk_cos"]] = chunk_cos[rc]
            features[:, COLUMN["chunk_cos_gap"]] = chunk_cos[rc] - chunk_cos.max()
            features[:, COLUMN["sentence_cos"]] = sentence_cos
            features[:, COLUMN["sentence_cos_gap"]] = sentence_cos - sentence_cos.max()
            features[:, COLUMN["dense_rank"]] = dense_rank[rc]
            features[:, COLUMN["bm25"]] = bm25[rc]
            features[:, COLUMN["bm25_rank"]] = bm25_rank[rc]
        has = len(rc) > 0
        met_sentence = features[:, COLUMN["constraints_sentence"]] if has else np.zeros(1)
        # A sentence that meets every constraint (if any) and holds the wanted kind of answer.
        typed = (met_sentence >= 1.0 if asks.constraints else np.ones(len(met_sentence), bool)) & (
            features[:, COLUMN["type_sentence"]] > 0 if asks.type_bit and has else True)
        question_features = np.array([
            float(sentence_cos.max()) if has else 0.0,
            float(features[:, COLUMN["constraints_chunk"]].max()) if asks.constraints and has else 1.0,
            float(typed.any()) if has else 0.0,
            sum(not index.lexical.knows(t) for t in q_terms) / len(q_terms) if q_terms else 0.0,
            float(features[:, COLUMN["sentence_coverage"]].max()) if has else 0.0,
        ])
        first: dict[int, int] = {}  # sentence row -> its first pool row (overlapping passages share rows)
        for i, r in enumerate(row_vectors):
            first.setdefault(r, i)
        take = list(first.values())
        source_of = [index.chunks.source_ids[s] for s in index.chunks.source_of[positions].tolist()] if positions else []
        sentences = PoolSentences([source_of[row_chunk[i]] for i in take], [row_span[i] for i in take], [row_facts[i] for i in take],
                                  row_matrix if len(take) == len(row_vectors) else row_matrix[take])
        return Candidates(positions, rc, row_span, features, question_features, (bool(asked), bool(type_bit)),
                          [slot[p] for p in dense], [slot[p] for p in lexical], passages, name_coverage, sentences)

    @staticmethod
    def nearest(index: LoadedIndex, query: np.ndarray, n: int, scope: Selection | None = None,
                mask: np.ndarray | None = None) -> list[int]:
        """Positions of the `n` chunks nearest to `query` (in `scope`, whose chunk `mask` may be given):
        an exact scan of a small version, else Chroma's; of its file while the store opens."""
        exact = index.exact or (None if index.store_opened else ExactSearch.reading(index.chunk_vectors))
        if exact is not None:
            return exact.run(query, n, scope.mask(index.chunks) if scope and mask is None else mask)
        ids, _ = index.store.query(query, n, scope.where() if scope else None)
        return [index.position[i] for i in ids if i in index.position]

    @property
    def ranker(self) -> RankerModel:
        if self.model is None:
            model = RankerModel.load()
            if model.passage.features != FEATURES or model.abstention.features != QUESTION_FEATURES:
                raise RankerError(f"the ranking model {MODEL_FILE} was fitted on other signals than this program "
                                  "computes; run `qa fit` to refit it")
            self.model = model
        return self.model

    def confidence(self, pool: Candidates, row_scores: np.ndarray) -> float:
        """Probability that the best passage answers at all (the abstention model)."""
        return round(float(self.ranker.abstention.probability(pool.question_row(row_scores)[None, :])[0]), 4)

    def _duplicates(self, pool: Candidates, hit: Hit, slot: int, kept: Hit, kept_slot: int) -> bool:
        """Overlapping passages of one source, one whose highlight a kept passage already shows, or a
        near-copy in another source — only when it states the same numbers and dates: a copy that
        says 2018 where the other says 2019 is a different fact, never folded away."""
        a, b = hit.chunk, kept.chunk
        if a.source_id == b.source_id:
            inter = min(a.end, b.end) - max(a.start, b.start)
            if max(0, inter) / max(1, min(a.end - a.start, b.end - b.start)) > self.duplicate_overlap:
                return True
            return b.start <= hit.highlight[0] and hit.highlight[1] <= b.end
        x, y = pool.chunk_facts[slot], pool.chunk_facts[kept_slot]
        if x.facts.marks != y.facts.marks:  # the cheaper test first
            return False
        shared = len(x.terms & y.terms)
        return shared / max(1, len(x.terms) + len(y.terms) - shared) > self.duplicate_jaccard


def best_per_passage(pool: Candidates, row_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pooled passage, its best-scoring sentence row and that score."""
    order = np.lexsort((-row_scores, pool.row_chunk))  # by passage, best sentence first
    firsts = order[np.r_[True, pool.row_chunk[order][1:] != pool.row_chunk[order][:-1]]]
    return firsts, row_scores[firsts]
