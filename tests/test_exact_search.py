"""A small version's dense candidates by exact scan: the nearest chunks, those of a filter, ties in
position order; Chroma's own list for the same questions on the seeds; none above the size limit.
A large version's, while its store opens: the same scan, of the file."""
import shutil
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qa.evaluation import load_questions
from qa import exact_search
from qa.exact_search import EXACT_MAX, SCAN_ROWS, ExactSearch
from qa.file_reads import NpyRows
from qa.filters import Scope
from qa.indexing import load_index
from qa.retrieval import Retriever
from qa.service import QAService, ServiceUnavailable
from qa.store import StoreError
from tests.conftest import app_client, on_chroma


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


def test_a_scan_of_the_file_finds_what_the_scan_in_memory_finds_across_its_blocks(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((2 * SCAN_ROWS + 5, 24))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)  # as stored
    in_memory, from_file = ExactSearch(vectors.astype(np.float32)), ExactSearch.reading(_rows(tmp_path, vectors))
    mask = (rng.random(len(vectors)) < 0.3).astype(np.float32)
    for query in vectors[[0, SCAN_ROWS, 2 * SCAN_ROWS + 4]]:
        scores = vectors.astype(np.float64) @ query.astype(np.float64)
        for inside in (None, mask):
            found, expected = from_file.run(query, 40, inside), in_memory.run(query, 40, inside)
            # The same rows by score (a block's product may round a last bit otherwise than the whole's).
            assert len(found) == 40 and np.allclose(scores[found], scores[expected], atol=1e-5)
            assert inside is None or all(inside[found] > 0)
        assert from_file.run(query, 1) == [int(np.argmax(scores))]  # the row itself, wherever its block


def _large_copy(seed_index, tmp_path, monkeypatch):
    """A copy of the seed index, its 57 chunks above the limit of what is searched in memory."""
    monkeypatch.setattr(exact_search, "EXACT_MAX", 10)
    index_dir = tmp_path / "index"
    shutil.copytree(seed_index.index_dir, index_dir, ignore=shutil.ignore_patterns("leases"))
    return replace(seed_index, index_dir=index_dir)


def test_a_large_version_answers_by_scanning_its_file_until_its_store_has_opened(seed_index, embedder, tmp_path, monkeypatch):
    settings = _large_copy(seed_index, tmp_path, monkeypatch)
    index = load_index(settings, store_in_background=True)
    try:
        assert index.exact is None
        vector = embedder.encode_question("When was the treaty signed?")
        scanned = ExactSearch.reading(index.chunk_vectors).run(vector, 20)
        opening = replace(index, opening=Future(), index_dir=None)  # the same version, its store not open yet
        assert not opening.store_opened and Retriever.nearest(opening, vector, 20) == scanned
        index.opening.result(timeout=60)
        assert index.store_opened
        queried = Retriever.nearest(index, vector, 20)  # Chroma's: the same neighbours but for near-ties
        assert queried != [] and len(set(scanned) & set(queried)) >= 18
    finally:
        index.close()


@pytest.mark.parametrize("damage", ["folder deleted", "database overwritten"])
def test_a_store_that_fails_to_open_in_the_background_fails_each_question_with_a_503(seed_index, embedder, tmp_path, monkeypatch, damage):
    settings = _large_copy(seed_index, tmp_path, monkeypatch)
    version = load_index(settings)
    version_dir = settings.index_dir / "versions" / version.version
    version.close()
    # The Chroma folder is not among the checksummed files: found only when Chroma opens it.
    if damage == "folder deleted":
        shutil.rmtree(version_dir / "chroma")
    else:  # Chroma's own error, as its client is made: "file is not a database"
        (version_dir / "chroma" / "chroma.sqlite3").write_bytes(b"not a database" * 512)
    service = QAService(settings, embedder=embedder)
    client = app_client(settings, embedder)
    try:
        assert isinstance(service.index().opening.exception(timeout=60), StoreError)
        raised = []
        for _ in range(3):
            with pytest.raises(ServiceUnavailable, match="vector store of index version") as err:
                service.answer("When was the treaty signed?", 5)
            raised.append(err.value.__cause__)
        assert len({id(e) for e in raised}) == 3  # a new error each time: no traceback grows question by question
        client.post("/api/ask", json={"question": "warm up"})  # its service loads the version (and fails to open it)
        client.application.extensions["qa"].index().opening.exception(timeout=60)
        response = client.post("/api/ask", json={"question": "When was the treaty signed?"})
        assert response.status_code == 503 and "vector store of index version" in response.get_json()["error"]["message"]
        health = client.get("/api/health")
        assert health.status_code == 503 and "vector store of index version" in health.get_json()["error"]
    finally:
        service.index().close()
        client.application.extensions["qa"].index().close()


def test_a_version_switch_waits_for_the_store_so_a_broken_one_never_replaces_a_working_one(seed_index, embedder, tmp_path, monkeypatch):
    settings = _large_copy(seed_index, tmp_path, monkeypatch)
    service = QAService(settings, embedder=embedder)
    first = service.index()
    first.opening.result(timeout=60)
    assert service.answer("When was the treaty signed?", 5).answer.hits
    # A new version whose store is broken: the service keeps the one it has.
    from qa.indexing import IndexBuilder
    sources = tmp_path / "sources"
    shutil.copytree(settings.sources_dir, sources)
    changed = replace(settings, sources_dir=sources)
    path = sorted(sources.glob("*.txt"))[0]
    path.chmod(0o644)
    path.write_text(path.read_text(encoding="utf-8") + "\nAn added closing line.", encoding="utf-8")
    rebuilt = IndexBuilder(changed, embedder=embedder).run()
    shutil.rmtree(settings.index_dir / "versions" / rebuilt.version / "chroma")
    try:
        assert service.index().version == first.version
        assert rebuilt.version in service.health()["warning"] and "vector store" in service.health()["warning"]
        assert service.answer("When was the treaty signed?", 5).answer.hits
    finally:
        service.index().close()
