"""Readings stored at build time (`qa.readings`): equal to what ranking reads from the text; the
question's pool, which ranking read, all that corroboration needs (nothing read again); readings
made again when the code that read them or a kept source's title changed."""
from dataclasses import replace
from pathlib import Path

import numpy as np

from qa import readings
from qa.config import Settings
from qa.corroboration import Corroborator
from qa.evaluation import load_questions
from qa.file_reads import FileBytes, NpyRows
from qa.indexing import VERSIONS, IndexBuilder, current_version, load_index
from qa.passage_readings import PassageReadings
from qa.retrieval import Retriever
from qa.source_table import SourceTable

ROOT = Path(__file__).resolve().parent.parent


def _files(settings) -> dict[str, bytes]:
    folder = settings.index_dir / VERSIONS / current_version(settings.index_dir)
    return {name: (folder / name).read_bytes() for name in readings.FILES}


def test_stored_readings_equal_the_texts_and_rank_the_same(seed_index, embedder):
    index = load_index(seed_index)
    bare = load_index(seed_index)
    try:
        assert index.readings is not None
        for p, chunk in enumerate(index.chunks):
            source = index.sources[chunk.source_id]
            lo, hi = index.chunk_rows[p].tolist()
            (sentences,), (around,) = index.readings.passages([[lo, hi]], [p])
            assert sentences == [readings.read(source.text[a:b]) for a, b in chunk.sentences]
            assert around == readings.read(readings.context(source, chunk.start, chunk.sentences))
        bare.readings = None  # read from the text, as a worker whose code differs from the build's does
        stored, read = Retriever(embedder), Retriever(embedder)
        for q in load_questions(ROOT / "eval" / "questions.jsonl")[:25]:
            a, b = stored.run(index, q.question), read.run(bare, q.question)
            assert [(h.chunk.id, h.highlight, round(h.score, 9)) for h in a.hits] == [(h.chunk.id, h.highlight, round(h.score, 9)) for h in b.hits]
            assert a.confidence == b.confidence
    finally:
        index.close()
        bare.close()


def test_candidates_read_together_equal_each_read_alone_and_the_text(seed_index):
    index = load_index(seed_index)
    try:
        positions = [5, 0, 12, 5, len(index.chunks) - 1, 3, 4]  # unordered, a repeat, the last chunk
        rows = index.chunk_rows[positions].tolist()
        sentences, contexts = index.readings.passages(rows, positions)
        alone = [index.readings.passages([r], [p]) for r, p in zip(rows, positions)]
        assert sentences == [s for (s,), _ in alone] and contexts == [c for _, (c,) in alone]
        kept = PassageReadings()
        kept.passages(index, [12])  # one already kept, the rest read together
        together = kept.passages(index, positions)
        bare = load_index(seed_index)
        bare.readings = None  # read from the text
        try:
            from_text = PassageReadings().passages(bare, positions)
        finally:
            bare.close()
        assert together == [PassageReadings().passages(index, [p])[0] for p in positions] == from_text
        assert [t.sentences for t in together] == sentences and [t.context for t in together] == contexts
    finally:
        index.close()


def test_corroboration_reads_nothing_and_agrees_with_readings_from_text(seed_index, embedder, monkeypatch):
    index = load_index(seed_index)
    bare = load_index(seed_index)
    bare.readings = None  # read from the text
    stored, read = Retriever(embedder), Retriever(embedder)

    def refuse(*args, **kwargs):
        raise AssertionError("corroboration read the index: the pool holds what it compares")

    def supports(answer):
        return [(h.chunk.id, h.corroborated_by, h.disputed_by) for h in answer.hits]

    try:
        found = []
        for q in load_questions(ROOT / "eval" / "questions.jsonl")[:25]:
            ranked = stored.run(index, q.question, 10)
            with monkeypatch.context() as m:
                for table, method in ((SourceTable, "__getitem__"), (NpyRows, "__getitem__"), (FileBytes, "read")):
                    m.setattr(table, method, refuse)
                ours = Corroborator().run(index, ranked, 5)  # the sentences ranking read
            theirs = Corroborator().run(bare, read.run(bare, q.question, 10), 5)
            assert supports(ours) == supports(theirs)
            found += [s for h in ours.hits for s in h.corroborated_by]
        assert found  # the seeds' sources report the same facts: there was something to corroborate
    finally:
        index.close()
        bare.close()


def test_kept_sources_are_read_again_for_new_code_or_a_new_title(tmp_path, sources_copy, embedder, monkeypatch):
    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    with monkeypatch.context() as m:  # a version built by other code (another `qa.signals`, say)
        m.setattr(readings, "fingerprint", lambda: "older code")
        IndexBuilder(settings, embedder=embedder).run()
    index = load_index(settings)
    assert index.readings is None  # not trusted: ranking reads the text
    index.close()

    report = IndexBuilder(settings, embedder=embedder).run()
    assert not report.up_to_date and report.embedded_chunks == 0  # read again, not embedded again
    fresh = replace(settings, index_dir=tmp_path / "fresh")
    IndexBuilder(fresh, embedder=embedder).run(full=True)
    assert _files(settings) == _files(fresh)

    toml = sources_copy / "sources.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace(
        'title = "Venezuela ratifies Russia alliance treaty"', 'title = "Caracas parliament backs Kremlin pact"'), encoding="utf-8")
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.embedded_chunks == 0 and report.updated == []
    index = load_index(settings)
    try:
        contexts = {index.readings.passages([index.chunk_rows[p].tolist()], [p])[1][0].terms
                    for p, c in enumerate(index.chunks) if c.source_id == "002_38f1cabbecdb3beb"}
        assert contexts and all({"caraca", "kremlin"} <= terms for terms in contexts)
    finally:
        index.close()
    IndexBuilder(fresh, embedder=embedder).run(full=True)
    assert _files(settings) == _files(fresh)


def test_a_version_naming_readings_it_lacks_is_read_from_the_text(tmp_path, sources_copy, embedder):
    """As a stateless worker's copy made before readings were stored: the build's manifest (its
    `readings` key) sealed over files without them. It serves, and the next build stores them."""
    from qa import versions
    from qa.indexing import DATA_FILES

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    folder = settings.index_dir / VERSIONS / current_version(settings.index_dir)
    manifest = versions.read_manifest(folder)
    for name in readings.FILES:
        (folder / name).unlink()
    versions.seal(folder, {k: v for k, v in manifest.items() if k not in ("files", "checksum")},
                  tuple(n for n in DATA_FILES if n not in readings.FILES))
    index = load_index(settings)
    try:
        assert index.readings is None and Retriever(embedder).run(index, "When was the treaty signed?").hits
    finally:
        index.close()
    report = IndexBuilder(settings, embedder=embedder).run()
    assert not report.up_to_date and report.embedded_chunks == 0
    index = load_index(settings)
    assert index.readings is not None
    index.close()


def test_the_pool_holds_each_sentence_of_its_passages_once_with_its_stored_vector(seed_index, embedder):
    index = load_index(seed_index)
    try:
        retriever = Retriever(embedder)
        shared = 0
        for q in load_questions(ROOT / "eval" / "questions.jsonl")[:10]:
            pool = retriever.pool(index, q.question, embedder.encode_question(q.question), 40)
            source_of = {}  # sentence row -> its passage's source, first passage first
            for p, (lo, hi) in zip(pool.positions, index.chunk_rows[pool.positions].tolist()):
                shared += sum(r in source_of for r in range(lo, hi))  # overlapping passages share sentences
                for r in range(lo, hi):
                    source_of.setdefault(r, index.chunks[p].source_id)
            rows = list(source_of)
            sentences = pool.sentences
            assert sentences.sources == list(source_of.values())
            assert sentences.spans == [tuple(span) for span in index.sentence_spans[rows].tolist()]
            assert np.array_equal(sentences.vectors, index.sentence_vectors[rows].astype(np.float32))
        assert shared  # the seeds' passages overlap by a sentence: the case the pool folds was met
    finally:
        index.close()
