"""The on-disk layout a worker reads: float16 vectors, BM25, and chunks made from offsets."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from qa.chunking import SentenceChunker
from qa.file_reads import NpyRows
from qa.config import Settings
from qa.indexing import FORMAT, IndexBuilder, IndexUnavailable, current_version, load_index
from qa.retrieval import Retriever
from qa.versions import current_manifest, manifest_checksum
from tests.conftest import on_chroma


def test_vectors_are_float16_within_cosine_1e3_of_the_model_and_no_index_file_stays_mapped(seed_index, embedder):
    index = load_index(seed_index)
    try:
        version_dir = seed_index.index_dir / "versions" / index.version
        for vectors in (index.chunk_vectors, index.sentence_vectors):
            assert isinstance(vectors, NpyRows) and vectors.dtype == np.float16
        for name in ("data", "indices"):  # BM25's postings: read per question term too
            assert isinstance(index.lexical.retriever.scores[name], NpyRows)
        Retriever(embedder).run(index, "When was the treaty signed?", 5)
        # Read with pread, not mapped: pages a question touched stay in the shared page cache,
        # not in this process's resident memory (Chroma's own files are Chroma's business).
        mapped = {line.split()[-1] for line in open("/proc/self/maps") if os.path.realpath(version_dir) in line}
        assert not {m for m in mapped if "/chroma/" not in m}, mapped
        fresh = embedder.encode([c.text for c in index.chunks])
        assert np.min(np.sum(fresh * index.chunk_vectors[:].astype(np.float32), axis=1)) > 0.999
        sentences = [index.sources[c.source_id].text[s:e] for c in index.chunks for s, e in c.sentences]
        rows = [r for lo, hi in index.chunk_rows[:].tolist() for r in range(lo, hi)]
        fresh = embedder.encode(sentences)
        assert np.min(np.sum(fresh * index.sentence_vectors[rows].astype(np.float32), axis=1)) > 0.999
    finally:
        index.close()


def test_chunks_read_from_the_table_are_the_chunks_the_chunker_made(seed_index):
    index = load_index(seed_index)
    try:
        chunker = SentenceChunker(seed_index.chunk_tokens, seed_index.overlap_sentences)
        made = [c for source in index.sources.values() for c in chunker.run(source)]
        assert list(index.chunks) == made and len(index.chunks) == len(made)
        assert index.chunks[-1] == made[-1]
        assert {cid: index.position[cid] for cid in (c.id for c in made)} == {c.id: i for i, c in enumerate(made)}
        first = next(iter(index.sources))
        for unknown in ("nothing#0", f"{first}#{len(made)}", f"{first}#x", first, ""):
            assert unknown not in index.position
        with pytest.raises(IndexError):
            index.chunks[len(made)]
    finally:
        index.close()


def test_an_index_of_the_previous_format_is_refused_with_the_fix_and_rebuilt_in_full(seed_index, tmp_path, embedder):
    index_dir = tmp_path / "index"
    shutil.copytree(seed_index.index_dir, index_dir, ignore=shutil.ignore_patterns("leases"))
    manifest_path = index_dir / "versions" / current_version(index_dir) / "manifest.json"
    manifest = {**json.loads(manifest_path.read_text()), "format": FORMAT - 1}
    manifest["checksum"] = manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest))
    settings = Settings.from_env({"sources_dir": seed_index.sources_dir, "index_dir": index_dir})
    with pytest.raises(IndexUnavailable, match=f"format {FORMAT - 1}, this program reads {FORMAT}.*qa index --full"):
        load_index(settings)
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.full_reason and f"format {FORMAT - 1}" in report.full_reason
    assert report.embedded_chunks == report.chunks
    load_index(settings).close()


def test_a_build_embeds_and_writes_a_slice_of_sources_at_a_time(seed_index, embedder, tmp_path, monkeypatch):
    """Only a slice's vectors are in memory: the encoder gets a few sources' texts per call, the
    store a few sources' vectors per call, and the index made from the slices is the index of a
    build that embedded everything at once."""
    from qa import indexing
    from qa.embedding import Embedder
    from qa.retrieval import Retriever

    class Recording(Embedder):  # the real model; each call's size recorded
        calls: list[int] = []

        def encode(self, texts):
            self.calls.append(len(texts))
            return super().encode(texts)

    recording = Recording(embedder.model_path, backend=embedder.backend, device=embedder.device, cache_dir=embedder.cache_dir)
    recording.batch_size = 2  # slices of about 16 texts
    monkeypatch.setattr(indexing, "STORE_SLICE", 10)  # the store gets a source or two per call
    settings = Settings.from_env({"sources_dir": seed_index.sources_dir, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=recording).run()
    sliced, whole = load_index(settings), load_index(seed_index)
    try:
        texts = [entry["sentences"] + entry["chunks"] for entry in current_manifest(seed_index.index_dir)["sources"].values()]
        assert len(Recording.calls) >= len(texts) and max(Recording.calls) < 16 + max(texts)  # not one call for all
        assert sum(Recording.calls) <= len(whole.chunks) + len(whole.sentence_spans)
        assert np.array_equal(sliced.sentence_spans[:], whole.sentence_spans[:]) and np.array_equal(sliced.chunk_rows[:], whole.chunk_rows[:])
        for name in ("chunk_vectors", "sentence_vectors"):
            a, b = getattr(sliced, name)[:].astype(np.float32), getattr(whole, name)[:].astype(np.float32)
            assert np.min(np.sum(a * b, axis=1)) > 0.999
        assert sliced.store.size == whole.store.size == len(whole.chunks)
        dense = Retriever(embedder, mode="dense")
        for question in ("When was the treaty signed?", "What does the treaty say about sanctions?"):
            for searched in (lambda index: index, on_chroma):  # the vectors, and the store they were added to
                assert ([h.chunk.id for h in dense.run(searched(sliced), question).hits]
                        == [h.chunk.id for h in dense.run(searched(whole), question).hits])
    finally:
        sliced.close()
        whole.close()


def test_source_texts_stay_in_the_file_until_a_request_reads_one(seed_index):
    from qa.source_table import source_from_line

    index = load_index(seed_index)
    try:
        sources = index.sources
        assert sources._read.cache_info().currsize == 0  # loaded: metadata only
        assert {sid: m.outlet for sid, m in sources.metas.items()}["001_fb017212c236a2a6"] == "Latin Times"
        chunk = index.chunks[len(index.chunks) // 2]
        assert sources._read.cache_info().currsize == 1 and chunk.text == sources[chunk.source_id].text[chunk.start : chunk.end]
        folder = seed_index.index_dir / "versions" / current_version(seed_index.index_dir)
        with (folder / "sources.jsonl").open(encoding="utf-8") as f:
            assert dict(sources) == {s.id: s for s in map(source_from_line, f)}
        assert "nonexistent" not in sources and sources.get("nonexistent") is None
    finally:
        index.close()


def test_the_source_table_reads_each_lines_metadata_as_a_whole_parse_does(tmp_path):
    from dataclasses import asdict

    from qa.data import Source, SourceMeta
    from qa.indexing import _source_line
    from qa.source_table import SourceTable, source_from_line

    tricky = SourceMeta(id="a", title='A "title", "text": {"meta": 1} ü', outlet="O", published="2025-05-07")
    sources = [Source(meta=tricky, text='Body "meta": {x}\n', sha256="0" * 64, file_name="a.txt"),
               Source(meta=SourceMeta(id="b"), text="", sha256="1" * 64, file_name="sub/b.md", pages=(0,))]
    lines = [_source_line(s) for s in sources]
    # A line in another key order (not as this build writes it) is read by a whole parse.
    reordered = json.dumps({k: v for k, v in reversed(list(asdict(sources[1]).items()))}).encode() + b"\n"
    (tmp_path / "sources.jsonl").write_bytes(lines[0] + reordered)
    table = SourceTable(tmp_path / "sources.jsonl")
    assert list(table) == ["a", "b"]
    assert table.metas == {"a": tricky, "b": SourceMeta(id="b")}
    assert table["a"] == source_from_line(lines[0]) == sources[0] and table["b"] == sources[1]


def test_the_source_table_takes_metadata_and_line_lengths_from_the_manifest(seed_index, tmp_path, embedder):
    """As parsing every line of sources.jsonl would give them. A manifest whose lengths disagree with
    the file is refused at load; lengths that move a line boundary (or swap two lines) are found
    when the source is read, and a question gets a 503 saying so, never another source's text; a
    manifest without them (an earlier build) is read from the lines."""
    from qa.filters import Scope
    from qa.service import QAService, ServiceUnavailable
    from qa.source_table import DamagedSource, SourceTable

    index_dir = tmp_path / "index"
    shutil.copytree(seed_index.index_dir, index_dir, ignore=shutil.ignore_patterns("leases"))
    folder = index_dir / "versions" / current_version(index_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = manifest["sources"]
    given, scanned = SourceTable(folder / "sources.jsonl", entries), SourceTable(folder / "sources.jsonl")
    assert given.metas == scanned.metas and given._lines == scanned._lines
    assert [given[sid] for sid in given] == [scanned[sid] for sid in scanned]
    settings = Settings.from_env({"sources_dir": seed_index.sources_dir, "index_dir": index_dir})
    first, second = list(entries)[:2]
    length = {sid: entry["bytes"] for sid, entry in entries.items()}
    swapped = {**length, first: length[second], second: length[first]}
    for lengths, fails in (({**length, first: length[first] + 1, second: length[second] - 1}, False), (swapped, False),
                           ({**length, first: length[first] + 1}, True), (None, False)):
        edited = {**manifest, "sources": {sid: {**entry, "bytes": lengths[sid]} if lengths else
                                          {k: v for k, v in entry.items() if k != "bytes"} for sid, entry in entries.items()}}
        edited["checksum"] = manifest_checksum(edited)
        (folder / "manifest.json").write_text(json.dumps(edited))
        if fails:
            with pytest.raises(IndexUnavailable, match="sources of version .* do not match its manifest"):
                load_index(settings)
            continue
        index = load_index(settings)
        try:
            if lengths is None:
                assert [index.sources[sid] for sid in index.sources] == [scanned[sid] for sid in scanned]
                continue
            for sid in (first, second):
                with pytest.raises(DamagedSource, match=f"source {sid} .*qa index --full"):
                    index.sources[sid]
        finally:
            index.close()
        service = QAService(settings, embedder=embedder)
        with pytest.raises(ServiceUnavailable, match=f"source {first} .*qa index --full"):
            service.ask("When did Maduro enact the treaty law?", 5, scope=Scope(sources=frozenset({first})))


def test_a_load_pauses_the_garbage_collector_and_leaves_it_as_it_was(seed_index, tmp_path, monkeypatch):
    """Its passes over a load's many small objects doubled the manifest's parse at 1M chunks. A load
    that fails turns it back on too; one turned off before the load stays off; of overlapping
    loads (threads), the last to finish turns it back on."""
    import gc

    from qa import indexing

    index_dir = tmp_path / "index"
    shutil.copytree(seed_index.index_dir, index_dir, ignore=shutil.ignore_patterns("leases"))
    settings = Settings.from_env({"sources_dir": seed_index.sources_dir, "index_dir": index_dir})
    during = []
    read_manifest = indexing.read_manifest
    monkeypatch.setattr(indexing, "read_manifest", lambda *a, **k: during.append(gc.isenabled()) or read_manifest(*a, **k))
    manifest = index_dir / "versions" / current_version(index_dir) / "manifest.json"
    text = manifest.read_text()
    try:
        for enabled in (True, False):
            if enabled:
                gc.enable()
            else:
                gc.disable()
            manifest.write_text(text)
            load_index(settings).close()
            assert gc.isenabled() is enabled
            manifest.write_text(text[:-10])  # damaged: refused
            with pytest.raises(IndexUnavailable, match="unreadable"):
                load_index(settings)
            assert gc.isenabled() is enabled
        assert during == [False] * 4
        gc.enable()
        first, second = indexing._collector_paused(), indexing._collector_paused()
        first.__enter__()
        second.__enter__()  # begun while the first is under way
        first.__exit__(None, None, None)
        assert not gc.isenabled()  # the second is still under way
        second.__exit__(None, None, None)
        assert gc.isenabled()
    finally:
        gc.enable()
