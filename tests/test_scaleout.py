"""The service on a real Chroma server (`chroma run`) with two gunicorn workers, end to end:
build into the server, serve, rebuild after a source change (which adds only that source's records
to the collection every version shares), every worker switches; each version answers from its own
records, and the clean-up leaves only the records remaining versions use."""
import json
import os
import subprocess
import time

import chromadb
import requests

from qa.indexing import current_version
from tests.conftest import QA, Server, on_chroma
from tests.test_lifecycle import EDITED, NEW_SENTENCE, _edit


def _ask(base: str) -> dict:
    response = requests.post(base + "/api/ask", json={"question": "What happened at La Orchila or in Reykjavik?", "k": 5}, timeout=30)
    assert response.status_code == 200
    return response.json()


def test_two_workers_on_a_chroma_server_follow_a_rebuild(chroma_server, sources_copy, tmp_path):
    url, port = chroma_server.url, chroma_server.port
    env = {**os.environ, "QA_CHROMA_URL": url}
    index_dir = tmp_path / "index"
    build = [QA, "index", "--sources", str(sources_copy), "--index", str(index_dir)]
    first = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    old_version = current_version(index_dir)
    assert not (index_dir / "versions" / old_version / "chroma").exists()  # vectors live on the server
    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    name = json.loads((index_dir / "versions" / old_version / "manifest.json").read_text())["collection"]
    assert name == f"qa-index-{(index_dir / 'ID').read_text().split()[0]}"
    # The index's collection, shared by its versions, and what stateless workers read and write (tests/test_stateless.py).
    assert sorted(c.name for c in client.list_collections()) == [name, name + "-control", name + "-published"]
    chunks = json.loads((index_dir / "versions" / old_version / "manifest.json").read_text())["chunk_count"]
    assert client.get_collection(name).count() == chunks

    with Server(index_dir, workers=2, threads=4, env={"QA_CHROMA_URL": url}) as server:
        answers = [_ask(server.base) for _ in range(6)]
        assert all(a["index_version"] == old_version for a in answers)
        assert all(any("La Orchila" in r["text"] for r in a["results"]) for a in answers)

        _edit(sources_copy)
        second = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0 and "updated 1" in second.stdout, second.stdout + second.stderr
        new_version = current_version(index_dir)

        # Both workers must switch: after the first new answer, many in a row must all be new.
        deadline = time.monotonic() + 60
        streak = 0
        while streak < 12 and time.monotonic() < deadline:
            answer = _ask(server.base)
            streak = streak + 1 if answer["index_version"] == new_version else 0
        assert streak >= 12
        assert any(NEW_SENTENCE in r["text"] for r in answer["results"])
        assert not any("La Orchila" in r["text"] for r in answer["results"])

    assert sorted(c.name for c in client.list_collections()) == [name, name + "-control", name + "-published"]
    records = client.get_collection(name).get(include=["metadatas"])
    # The rebuild added only the edited source's records, under the new version; the rest are shared.
    added = [i for i, m in zip(records["ids"], records["metadatas"]) if m["embedded"] == new_version]
    assert added and all(m["source_id"] == EDITED for m in records["metadatas"] if m["embedded"] == new_version)
    assert {m["embedded"] for m in records["metadatas"]} == {old_version, new_version}
    assert len(records["ids"]) - len(added) == chunks  # the edited source's old records stay until a clean-up finds its version gone


def test_versions_share_one_collection_and_each_answers_from_its_own_records(chroma_server, sources_copy, tmp_path, embedder):
    """An old version still held answers from its records after a rebuild that changed a source; once
    it is gone, the next clean-up leaves exactly the current version's records, and deletes what a
    killed build had added."""
    from qa.config import Settings
    from qa.indexing import IndexBuilder, load_index
    from qa.retrieval import Retriever
    from qa.store import collection_name

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index", "chroma_url": chroma_server.url})
    IndexBuilder(settings, embedder=embedder).run()
    collection = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port).get_collection(collection_name(settings))
    old = load_index(settings)
    _edit(sources_copy)
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.updated == [EDITED] and collection.count() == old.store.size + report.embedded_chunks
    new = load_index(settings)
    retriever = Retriever(embedder, mode="dense")
    question = "Where is the lunar mining research coordinated from?"
    assert not any(NEW_SENTENCE in h.chunk.text for h in retriever.run(on_chroma(old), question, 5).hits)
    assert NEW_SENTENCE in retriever.run(on_chroma(new), question, 1).hits[0].chunk.text
    assert all(h.chunk.text == new.chunks[new.position[h.chunk.id]].text
               for h in retriever.run(on_chroma(new), "La Orchila drills", 20).hits)
    old.close()

    collection.add(ids=[f"{EDITED}#0@killed-build"], embeddings=[new.chunk_vectors[0].astype("float32")],
                   metadatas=[{"source_id": EDITED, "embedded": "killed-build"}])
    (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    new.close()
    IndexBuilder(settings, embedder=embedder).run()
    current = load_index(settings)
    try:
        assert collection.count() == len(current.chunks)
        assert "Orinoco bridge" in retriever.run(on_chroma(current), "When did the Orinoco bridge open?", 1).hits[0].chunk.text
    finally:
        current.close()


def test_indexes_sharing_a_chroma_server_keep_their_own_records(chroma_server, sources_copy, tmp_path, embedder):
    """Two indexes (of two folders) on one Chroma server: each in its own collection, so the clean-up
    after one's rebuild deletes none of the other's records, and the other still answers."""
    from qa.config import Settings
    from qa.indexing import IndexBuilder, load_index
    from qa.retrieval import Retriever
    from qa.store import collection_name

    other_sources = tmp_path / "other"
    other_sources.mkdir()
    (other_sources / "bridge.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    seeds = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "a", "chroma_url": chroma_server.url})
    other = Settings.from_env({"sources_dir": other_sources, "index_dir": tmp_path / "b", "chroma_url": chroma_server.url})
    IndexBuilder(other, embedder=embedder).run()
    IndexBuilder(seeds, embedder=embedder).run()
    assert collection_name(seeds) != collection_name(other)
    _edit(sources_copy)
    (sources_copy / sorted(p.name for p in sources_copy.glob("*.txt"))[-1]).unlink()
    IndexBuilder(seeds, embedder=embedder).run()  # its clean-up deletes its old version's records
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
    assert client.get_collection(collection_name(other)).count() == 1
    index = load_index(other)
    try:
        assert "Orinoco bridge" in Retriever(embedder, mode="dense").run(on_chroma(index), "When did the bridge open?", 1).hits[0].chunk.text
    finally:
        index.close()
    current = load_index(seeds)
    try:
        assert client.get_collection(collection_name(seeds)).count() == len(current.chunks)
    finally:
        current.close()


def test_a_copied_index_gets_its_own_collection_and_both_keep_answering(chroma_server, sources_copy, tmp_path, embedder):
    """`cp -a` of an index folder (a restored backup, a second environment) shares its history and
    its ID file: its first build must not write into, nor clean up, the original's collection."""
    import shutil

    from qa.config import Settings
    from qa.indexing import IndexBuilder, load_index
    from qa.retrieval import Retriever

    original = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "a", "chroma_url": chroma_server.url})
    IndexBuilder(original, embedder=embedder).run()
    copy_sources = tmp_path / "copy-sources"
    shutil.copytree(sources_copy, copy_sources)
    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)
    copy = Settings.from_env({"sources_dir": copy_sources, "index_dir": tmp_path / "b", "chroma_url": chroma_server.url,
                              "sources_origin": "--sources"})
    _edit(copy_sources)
    copied = IndexBuilder(copy, embedder=embedder).run()  # the copy's clean-up drops the shared first version
    named = (tmp_path / "a" / "ID").read_text().split()[0]
    assert copied.published != named and any(f"QA_CHROMA_INDEX={copied.published}" in w for w in copied.warnings)
    _edit(sources_copy)
    (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    IndexBuilder(original, embedder=embedder).run()
    retriever = Retriever(embedder)
    for settings in (original, copy):
        index = load_index(settings)
        try:
            assert index.store.count() >= len(index.chunks)
            # Every chunk of the edited source has its record in this index's own collection. (Asking
            # Chroma's approximate index for the nearest 3 instead missed the new sentence in 2 of
            # about 6 full test runs, never alone: the records decide what a build kept or lost.)
            edited = [index.chunks[p] for p in index.chunks.of_source(EDITED)]
            records = [f"{c.id}@{index.store.embedded[EDITED]}" for c in edited]
            assert len(index.store.collection.get(ids=records, include=[])["ids"]) == len(records)
            assert any(NEW_SENTENCE in c.text for c in edited)
            hits = retriever.run(index, "Where is the lunar mining research coordinated from?", 3).hits
            assert any(NEW_SENTENCE in h.chunk.text for h in hits)
            assert all(h.chunk.text == index.chunks[index.position[h.chunk.id]].text for h in hits)
        finally:
            index.close()
    first, second = (json.loads(next((s.index_dir / "versions").glob("*/manifest.json")).read_text())["collection"]
                     for s in (original, copy))
    assert first != second
