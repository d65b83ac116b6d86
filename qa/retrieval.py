"""Answer a question with ranked verbatim passages: fuse, dedupe, highlight, abstain.

Dense (Chroma over chunk vectors) and lexical (BM25) candidates are pooled, and two rankings of
the pool are fused by reciprocal rank fusion: BM25's, and a meaning ranking that averages a
passage's similarity with its best single sentence's, which rewards a passage holding one
sentence that answers over one that is vaguely on topic.
Near-duplicate passages are collapsed, the best-supporting sentence of each is marked, and when
even the best sentence is too far from the question the answer says so (`answered=False`).

Usage:
    >>> retriever = Retriever(embedder)
    >>> answer = retriever.run(index, "When did Maduro enact the treaty law?", k=5)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from qa.data import Answer, Hit
from qa.embedding import Embedder
from qa.indexing import LoadedIndex
from qa.lexical import terms as analyze

Mode = Literal["hybrid", "dense", "bm25"]

RRF_K = 60  # the constant of Cormack et al.; damps the weight of any single list's top ranks


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank + 1)
    return scores


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class Retriever:
    """One step: a question and a loaded index in, an `Answer` out."""

    embedder: Embedder
    mode: Mode = "hybrid"
    candidates: int = 40  # per ranking; fused candidates beyond this rarely reach the top k
    min_confidence: float = 0.30  # abstain below this; calibrated with `qa eval` (see README)
    unknown_term_penalty: float = 0.5  # confidence lost when every question term is absent from the collection
    duplicate_overlap: float = 0.5
    duplicate_jaccard: float = 0.8
    lexical_weight: float = 0.3  # share of the highlight score given to question terms present

    def run(self, index: LoadedIndex, question: str, k: int = 5) -> Answer:
        if not index.chunks:
            return Answer(question, answered=False, index_version=index.version)
        query = self.embedder.encode_question(question)
        n = max(self.candidates, 2 * k)
        rankings: list[list[int]] = []
        pool: set[int] = set()
        if self.mode in ("hybrid", "dense"):
            ids, _ = index.store.query(query, n)
            dense = [index.position[i] for i in ids if i in index.position]
            pool.update(dense)
            if self.mode == "dense":
                rankings.append(dense)
        if self.mode in ("hybrid", "bm25"):
            lexical = index.lexical.search(question, n)[0]
            pool.update(lexical)
            rankings.append(lexical)
        best_sentence = {i: self._sentence_scores(index, i, query) for i in pool}
        if self.mode == "hybrid":
            # Meaning, scored on the union of both candidate lists: the whole passage's similarity
            # averaged with its best sentence's, so one sentence that answers can lift a passage.
            meaning = {i: float(index.chunk_vectors[i] @ query) + float(best_sentence[i].max()) for i in pool}
            rankings.append(sorted(pool, key=lambda i: -meaning[i]))
        fused = reciprocal_rank_fusion(rankings)
        ordered = sorted(fused, key=lambda i: -fused[i])

        terms = analyze(question)
        hits: list[Hit] = []
        kept_terms: list[set[str]] = []
        for i in ordered:
            hit = self._hit(index, i, fused[i], best_sentence[i], terms)
            chunk_terms = set(analyze(hit.chunk.text))
            if any(self._duplicates(hit, h) for h in hits) or any(
                _jaccard(chunk_terms, t) > self.duplicate_jaccard for t in kept_terms
            ):
                continue
            hits.append(hit)
            kept_terms.append(chunk_terms)
            if len(hits) == k:
                break
        confidence = self.confidence(index, terms, hits)
        return Answer(question, answered=confidence >= self.min_confidence, hits=hits,
                      index_version=index.version, confidence=confidence)

    def confidence(self, index: LoadedIndex, terms: list[str], hits: list[Hit]) -> float:
        """How sure we are that a passage answers: the best sentence's similarity, lowered by the share
        of the question's terms that occur nowhere in the collection (a passage cannot state what the
        collection never mentions: "Rosneft", "Eiffel")."""
        if not hits:
            return 0.0
        unknown = sum(not index.lexical.knows(t) for t in terms) / len(terms) if terms else 0.0
        return round(max(h.relevance for h in hits) - self.unknown_term_penalty * unknown, 4)

    def _duplicates(self, hit: Hit, kept: Hit) -> bool:
        """Overlapping passages of one source, or one whose best sentence a kept passage already shows."""
        a, b = hit.chunk, kept.chunk
        if a.source_id != b.source_id:
            return False
        inter = min(a.end, b.end) - max(a.start, b.start)
        if max(0, inter) / max(1, min(a.end - a.start, b.end - b.start)) > self.duplicate_overlap:
            return True
        return b.start <= hit.highlight[0] and hit.highlight[1] <= b.end

    @staticmethod
    def _sentence_scores(index: LoadedIndex, position: int, query: np.ndarray) -> np.ndarray:
        lo, hi = index.chunk_rows[position]
        return index.sentence_vectors[lo:hi] @ query

    def _hit(self, index: LoadedIndex, position: int, score: float, similarities: np.ndarray, terms: list[str]) -> Hit:
        chunk = index.chunks[position]
        # The highlight mixes meaning (cosine) with the question's rarer words actually present,
        # so "October 7" wins over a sentence that is merely about the same treaty.
        weights = index.lexical.idf(terms) if terms else np.zeros(0)
        total = float(weights.sum())
        combined = []
        for (start, end), similarity in zip(chunk.sentences, similarities):
            present = set(analyze(index.sources[chunk.source_id].text[start:end]))
            coverage = sum(w for t, w in zip(terms, weights) if t in present) / total if total else 0.0
            combined.append((1 - self.lexical_weight) * float(similarity) + self.lexical_weight * coverage)
        best = int(np.argmax(combined))
        return Hit(chunk=chunk, score=score, relevance=float(similarities.max()), highlight=chunk.sentences[best])
