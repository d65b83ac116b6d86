"""A small version's dense candidates by exact scan: the nearest chunks, those of a filter, ties in
position order; Chroma's own list for the same questions on the seeds; none above the size limit."""
from pathlib import Path

import numpy as np
import pytest

from qa.evaluation import load_questions
from qa.exact_search import EXACT_MAX, ExactSearch
from qa.file_reads import NpyRows
from qa.filters import Scope
from qa.indexing import load_index
from qa.retrieval import Retriever
from tests.conftest import on_chroma


def _rows(tmp_path: Path, vectors: np.ndarray) -> NpyRows:
    np.save(tmp_path / "v.npy", vectors)
    return NpyRows(tmp_path / "v.npy")


def test_the_nearest_chunks_of_a_filter_best_first_ties_in_position_order(tmp_path):
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((600, 24)).astype(np.float16)
    vectors[[10, 300, 599]] = vectors[450]  # ties at every cut
    search = ExactSearch.of(_rows(tmp_path, vectors))
    mask = (rng.random(600) < 0.5).astype(np.float32)
    mask[[10, 300, 450, 599]] = 1.0
    scores = vectors.astype(np.float32) @ vectors[450].astype(np.float32)
    for n in (1, 2, 3, 4, 40, 5000):
        for inside in (None, mask):
            allowed = np.arange(600) if inside is None else np.flatnonzero(inside)
            expected = allowed[np.lexsort((allowed, -scores[allowed]))][:n].tolist()
            assert search.run(vectors[450], n, inside) == expected
    assert search.run(vectors[450], 3)[:3] == [10, 300, 450]
    assert search.run(vectors[0], 10, np.zeros(600, np.float32)) == []


def test_rows_that_are_not_numbers_are_never_returned_and_a_wrong_mask_is_refused(tmp_path):
    vectors = np.eye(5, 3, dtype=np.float16)
    vectors[[1, 3]] = np.nan
    search = ExactSearch.of(_rows(tmp_path, vectors))
    assert search.run(np.array([1.0, 1.0, 1.0]), 2) == [0, 2]
    assert search.run(np.array([1.0, 1.0, 1.0]), 10) == [0, 2, 4]
    assert search.run(np.full(3, np.nan), 10) == []
    with pytest.raises(ValueError, match="mask"):
        search.run(np.ones(3), 2, np.ones(4, np.float32))


def test_only_a_small_version_is_searched_in_memory(tmp_path):
    assert ExactSearch.of(_rows(tmp_path, np.zeros((EXACT_MAX + 1, 2), np.float16))) is None
    assert ExactSearch.of(_rows(tmp_path, np.zeros((EXACT_MAX, 2), np.float16))).matrix.shape == (EXACT_MAX, 2)


def test_the_seeds_get_chromas_candidates_with_and_without_a_filter(seed_index, embedder):
    """On 57 chunks Chroma's HNSW graph finds the exact neighbours: both give the same list (but
    for near-ties), and Chroma's metadata filter keeps what the scan's chunk mask keeps."""
    index = load_index(seed_index)
    try:
        assert index.exact is not None
        chroma = on_chroma(index)
        two = sorted(index.sources)[:2]
        scope = Scope(sources=frozenset(two)).select(index.sources.metas)
        questions = [q.question for q in load_questions(Path("eval/questions.jsonl"))]
        for question, vector in zip(questions, embedder.encode(questions)):
            for selection in (None, scope):
                scanned = Retriever.nearest(index, vector, 20, selection)
                queried = Retriever.nearest(chroma, vector, 20, selection)
                # The same neighbours, rank by rank; only near-ties may swap (the rows are float16:
                # Chroma ranks by cosine, the scan by dot product).
                ours, theirs = (index.exact.matrix[p] @ vector for p in (scanned, queried))
                assert np.allclose(ours, theirs, atol=2e-3) and len(set(scanned) & set(queried)) >= 18, question
            assert {index.chunks[p].source_id for p in Retriever.nearest(index, vector, 20, scope)} <= set(two)
    finally:
        index.close()
