"""Rebuilds that lose no change and build the right folder: the index remembers its sources
folder, watch mode builds every change it saw, rebuild jobs are shared by every worker and run
in their own process, a reused source keeps the text its offsets were computed on. Builds by
difference: an unchanged file is not read, an edit behind restored timestamps is still seen, an
incremental build gives what a full build of the same folder gives, a damaged previous version
is rebuilt in full."""
import gc
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.indexing import IndexBuilder, current_version, load_index
from qa.versions import current_manifest
from tests.conftest import QA, SEEDS, on_chroma
from tests.test_versions import build_here

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def docs(tmp_path):
    """Another sources folder than the seeds: three of them and one of its own."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for path in sorted(SEEDS.glob("*.txt"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "orinoco.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    return folder


def _wait_job(client, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (state := client.get("/api/index", headers=AUTH).get_json())["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    return state


def test_the_index_remembers_its_sources_folder(docs, tmp_path, embedder, monkeypatch):
    from qa.app import create_app
    from qa.service import QAService

    monkeypatch.delenv("QA_SOURCES", raising=False)
    index_dir = tmp_path / "index"
    build_here(docs, index_dir, embedder)  # as `qa index --sources docs`
    (docs / "caracas.txt").write_text("A new metro line opened in Caracas in 2030.", encoding="utf-8")

    def app(**config):
        config = {"index_dir": index_dir, "admin_token": TOKEN, **config}
        return create_app(config, service=QAService(Settings.from_env(config), embedder=embedder)).test_client()

    # `qa serve` with no --sources: a rebuild reads the folder the index was built from, not seeds/.
    client = app()
    assert client.post("/api/index", headers=AUTH).status_code == 202
    state = _wait_job(client)
    assert state["state"] == "succeeded" and state["added"] == ["caracas"] and not state["removed"], state

    # `qa serve --sources seeds/`: refused, naming both folders, unless the request names the folder.
    client = app(sources_dir=SEEDS, sources_origin="qa serve --sources")
    refused = client.post("/api/index", headers=AUTH)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "sources_mismatch"
    assert str(docs) in refused.get_json()["error"]["message"] and str(SEEDS) in refused.get_json()["error"]["message"]
    assert client.post("/api/index", headers=AUTH, json={"sources": "/etc"}).status_code == 400
    assert client.post("/api/index", headers=AUTH, json={"sources": str(SEEDS)}).status_code == 202
    state = _wait_job(client)
    assert state["state"] == "succeeded" and len(state["added"]) == 2 and "orinoco" in state["removed"], state

    # qa index: QA_SOURCES naming another folder is refused; --sources switches.
    env = {**os.environ, "QA_SOURCES": str(docs)}
    refused = subprocess.run([QA, "index", "--index", str(index_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and str(docs) in refused.stderr and str(SEEDS) in refused.stderr, refused.stderr
    switched = build_here(docs, index_dir, embedder)  # as `qa index --sources docs`
    assert len(switched.removed) == 2 and len(switched.added) == 2
    assert load_index(Settings.from_env({"index_dir": index_dir})).manifest["sources_dir"] == str(docs)


def test_a_reused_source_keeps_the_text_its_offsets_point_into(sources_copy, tmp_path, embedder, monkeypatch):
    import numpy as np

    from qa.chunking import SentenceChunker
    from qa.cleaning import TextCleaner

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    real_clean = TextCleaner.run
    note = "Editor's note: this article was corrected after publication.\n\n"
    monkeypatch.setattr(TextCleaner, "run", lambda self, raw: note + real_clean(self, raw))  # same bytes, new text
    report = IndexBuilder(settings, embedder=embedder).run()
    assert not report.up_to_date and report.embedded_chunks == report.chunks
    index = load_index(settings)
    chunker = SentenceChunker(settings.chunk_tokens, settings.overlap_sentences)
    for source in index.sources.values():
        assert source.text.startswith(note)
        expected = [(c.start, c.end) for c in chunker.run(source)]
        assert [(c.start, c.end) for c in index.chunks if c.source_id == source.id] == expected
    served = embedder.encode([c.text for c in index.chunks])  # what a passage shows is what was embedded
    assert np.min(np.sum(served * index.chunk_vectors[:], axis=1)) > 0.999
    index.close()


def _built_hash(index_dir: Path, source_id: str) -> str | None:
    return current_manifest(index_dir).get("sources", {}).get(source_id, {}).get("sha256")


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_watch_mode_builds_every_change_it_saw(sources_copy, tmp_path, embedder):
    """Edits made during the first build, and an edit whose build met a busy lock, are built."""
    import hashlib

    from tests.test_lifecycle import EDITED, _edit

    index_dir = tmp_path / "index"
    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": index_dir})
    watcher = subprocess.Popen([QA, "index", "--watch", "--sources", str(sources_copy), "--index", str(index_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sha = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    try:
        assert _wait_until(lambda: any((index_dir / "versions").glob("*")), 120)  # the first build is writing
        _edit(sources_copy)  # after the first build read the sources
        edited = sources_copy / f"{EDITED}.txt"
        assert _wait_until(lambda: _built_hash(index_dir, EDITED) == sha(edited), 120), "the edit made during the first build was lost"

        lock = IndexBuilder(settings, embedder=embedder).acquire_lock()  # another build holds the lock
        try:
            (sources_copy / "caracas.txt").write_text("A new metro line opened in Caracas in 2030.", encoding="utf-8")
            time.sleep(4)  # the watcher settles, meets the busy lock
        finally:
            lock.release()
        assert _wait_until(lambda: _built_hash(index_dir, "caracas") is not None, 120), "the change that met a busy lock was lost"
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)


def test_rebuild_jobs_are_shared_by_every_worker_and_run_in_their_own_process(sources_copy, tmp_path, embedder):
    import signal

    import requests

    from tests.conftest import Server
    from tests.test_lifecycle import _edit

    index_dir = tmp_path / "index"
    build_here(sources_copy, index_dir, embedder)
    with Server(index_dir, workers=2, threads=2, env={"QA_ADMIN_TOKEN": TOKEN}) as server:
        workers = set(map(int, Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()))
        get = lambda: requests.get(server.base + "/api/index", headers=AUTH, timeout=10).json()  # noqa: E731
        _edit(sources_copy)
        started = requests.post(server.base + "/api/index", headers=AUTH, timeout=30)
        assert started.status_code == 202, started.text
        job = started.json()
        seen = [get() for _ in range(10)]  # spread over both workers
        assert all(s["id"] == job["id"] for s in seen), seen
        running = [s for s in seen if s["state"] == "running" and s.get("pid")]
        if running:
            pid = running[0]["pid"]
            assert pid not in workers and pid != server.process.pid
            assert b"qa.rebuild" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert requests.post(server.base + "/api/index", headers=AUTH, timeout=30).status_code in (202, 409)
        assert _wait_until(lambda: get()["state"] != "running", 180)
        finished = [get() for _ in range(10)]
        assert {(s["id"], s["state"], s.get("version")) for s in finished} == {(job["id"], "succeeded", finished[0]["version"])}, finished
        assert finished[0]["updated"] == ["003_897a613f67fec3ac"]

        # A build process killed mid-way: every worker reports it failed; the next one runs.
        (sources_copy / "caracas.txt").write_text("A new metro line opened in Caracas in 2030.", encoding="utf-8")
        killed = requests.post(server.base + "/api/index", headers=AUTH, timeout=30).json()
        assert _wait_until(lambda: get().get("pid"), 30)
        os.kill(get()["pid"], signal.SIGKILL)
        assert _wait_until(lambda: get()["state"] == "failed", 30)
        assert {(s["id"], s["state"]) for s in (get() for _ in range(6))} == {(killed["id"], "failed")}
        assert "ended without" in get()["error"]
        assert requests.post(server.base + "/api/index", headers=AUTH, timeout=30).status_code == 202
        assert _wait_until(lambda: get()["state"] != "running", 180) and get()["state"] == "succeeded"
        assert _wait_until(lambda: requests.get(server.base + "/api/health", timeout=10).json()["index_version"] == get()["version"], 30)


def _reads(monkeypatch) -> list[str]:
    """The files the source reader opens from now on (it still reads them: this only notes which)."""
    from qa.sources import SourceReader

    opened: list[str] = []
    real = SourceReader._read_file
    monkeypatch.setattr(SourceReader, "_read_file", lambda self, folder, relative: opened.append(relative) or real(self, folder, relative))
    return opened


def test_an_unchanged_file_is_not_read_again_and_a_touched_one_is_read_but_not_embedded(sources_copy, tmp_path, embedder, monkeypatch):
    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    opened = _reads(monkeypatch)
    edited, touched = sorted(sources_copy.glob("*.txt"))[:2]
    edited.write_text(edited.read_text(encoding="utf-8") + "\nThe Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    os.utime(touched)  # a new mtime, the same bytes
    report = IndexBuilder(settings, embedder=embedder).run()
    assert sorted(opened) == sorted([edited.name, touched.name])  # the three others were skipped by their stamp
    assert report.updated == [edited.stem] and touched.stem in report.kept
    assert report.embedded_chunks == sum(1 for c in load_index(settings).chunks if c.source_id == edited.stem)
    opened.clear()
    assert IndexBuilder(settings, embedder=embedder).run().up_to_date and opened == []


def test_an_edit_behind_restored_size_and_mtime_is_still_built(sources_copy, tmp_path, embedder):
    """The stamp holds the ctime too, which no one can set back: `touch -d` after an edit hides nothing."""
    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    path = sorted(sources_copy.glob("*.txt"))[0]
    before = path.stat()
    text = path.read_text(encoding="utf-8")
    assert "Caracas" in text
    path.write_text(text.replace("Caracas", "Maracay"), encoding="utf-8")  # as many bytes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.updated == [path.stem]
    index = load_index(settings)
    assert "Maracay" in index.sources[path.stem].text and "Caracas" not in index.sources[path.stem].text
    index.close()


def test_a_build_runs_without_the_cyclic_collector_and_gives_it_back(sources_copy, tmp_path, embedder):
    """The collector's passes over a build's many small objects took 0.10-0.20 s of a one-source
    rebuild at 100k chunks; the build leaves it as it found it, built or failed."""
    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    path = sorted(sources_copy.glob("*.txt"))[0]
    path.write_text(path.read_text(encoding="utf-8") + "\nThe Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    passes = []

    def seen(phase, info):
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        report = IndexBuilder(settings, embedder=embedder).run()
        assert report.updated == [path.stem] and passes == [] and gc.isenabled()
        with pytest.raises(Exception, match="missing"):
            IndexBuilder(Settings.from_env({"sources_dir": tmp_path / "missing", "index_dir": tmp_path / "other"}), embedder=embedder).run()
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(seen)


def test_an_incremental_build_gives_what_a_full_build_of_the_same_folder_gives(sources_copy, tmp_path, embedder):
    from qa.retrieval import Retriever

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    first_version = IndexBuilder(settings, embedder=embedder).run().version
    first, second, third = sorted(sources_copy.glob("*.txt"))[:3]
    second.write_text(second.read_text(encoding="utf-8") + "\nThe Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    third.unlink()
    (sources_copy / "added.md").write_text("# Port news\n\nThe port of La Guaira handled 7 tankers on October 9.", encoding="utf-8")
    toml = sources_copy / "sources.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('outlet = "Orinoco Tribune"', 'outlet = "Tribune of the Orinoco"'), encoding="utf-8")
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.updated == [second.stem] and report.removed == [third.stem] and report.added == ["added.md"]
    full_settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "full"})
    IndexBuilder(full_settings, embedder=embedder).run()
    built, full = load_index(settings), load_index(full_settings)
    try:
        assert built.sources == full.sources and built.sources[first.stem].meta.outlet == "Tribune of the Orinoco"
        assert list(built.chunks) == list(full.chunks)
        for name in ("sentence_spans", "chunk_rows"):
            assert np.array_equal(getattr(built, name)[:], getattr(full, name)[:])
        for name in ("sentence_vectors", "chunk_vectors"):
            assert np.allclose(getattr(built, name)[:], getattr(full, name)[:], atol=2e-3)
        def described(index_dir) -> dict:  # each source as the manifest describes it, but for which build embedded it
            return {sid: {k: v for k, v in entry.items() if k != "embedded"} for sid, entry in current_manifest(index_dir)["sources"].items()}

        assert described(settings.index_dir) == described(full_settings.index_dir)
        embedded_by = {sid: entry["embedded"] for sid, entry in current_manifest(settings.index_dir)["sources"].items()}
        assert embedded_by[first.stem] == first_version != embedded_by[second.stem] == embedded_by["added.md"] == built.version
        assert built.store.count() == full.store.count() == len(full.chunks)
        questions = ["When did Maduro enact the treaty law?", "Which port handled tankers?", "Orinoco bridge traffic",
                     "What did Ryabkov say about missiles?", "La Orchila island drills"]
        for question in questions:
            assert built.lexical.search(question, 20) == full.lexical.search(question, 20)
            for searched in (lambda index: index, on_chroma):  # the versions' vectors, and their Chroma stores
                ours, theirs = (Retriever(embedder).run(searched(index), question, 5) for index in (built, full))
                assert [h.chunk.id for h in ours.hits] == [h.chunk.id for h in theirs.hits]
                assert np.allclose([h.score for h in ours.hits], [h.score for h in theirs.hits], atol=1e-3)
                assert [h.highlight for h in ours.hits] == [h.highlight for h in theirs.hits]
    finally:
        built.close()
        full.close()


def test_a_damaged_array_in_the_previous_version_leads_to_a_full_and_correct_build(sources_copy, tmp_path, embedder):
    from qa.retrieval import Retriever

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    damaged = tmp_path / "index" / "versions" / current_version(settings.index_dir) / "chunk_vectors.npy"
    data = bytearray(damaged.read_bytes())
    data[-64:] = bytes(64)  # the last chunk's vector, zeroed: still a valid .npy
    damaged.write_bytes(bytes(data))
    path = sorted(sources_copy.glob("*.txt"))[1]
    path.write_text(path.read_text(encoding="utf-8") + "\nThe Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.full_reason and "chunk_vectors.npy" in report.full_reason and report.embedded_chunks == report.chunks
    index = load_index(settings)
    try:
        assert np.min(np.linalg.norm(index.chunk_vectors[:].astype(np.float32), axis=1)) > 0.99
        assert "October 7" in Retriever(embedder).run(index, "When did Maduro enact the treaty law?", 1).hits[0].chunk.text
    finally:
        index.close()


def test_a_changed_bm25_analysis_counts_every_chunk_again_without_embedding(sources_copy, tmp_path, embedder, monkeypatch):
    """Term counts kept from a build of another analysis (other stop words, another stemmer) would
    not match the new ones: the next build counts every kept chunk again from its text and embeds
    nothing, giving the term files and BM25 a full build gives. A version scored by other code
    (`qa/lexical.py`, bm25s) is scored again, also without embedding."""
    import qa.analysis
    import qa.indexing

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    with monkeypatch.context() as m:  # words split on spaces, nothing dropped or stemmed
        m.setattr(qa.analysis, "terms", lambda text: text.lower().split())
        m.setattr(qa.indexing, "analysis_fingerprint", lambda: "another analysis")
        IndexBuilder(settings, embedder=embedder).run()
    report = IndexBuilder(settings, embedder=embedder).run()
    assert not report.up_to_date and report.full_reason is None and report.embedded_chunks == 0
    fresh = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "fresh"})
    IndexBuilder(fresh, embedder=embedder).run(full=True)

    def term_files(s: Settings) -> dict[str, bytes]:
        folder = s.index_dir / "versions" / current_version(s.index_dir)
        names = ["terms.json", "term_rows.npy", "term_ids.npy", "term_counts.npy", *(f"bm25/{p.name}" for p in (folder / "bm25").iterdir())]
        return {name: (folder / name).read_bytes() for name in names}

    assert term_files(settings) == term_files(fresh)
    assert IndexBuilder(settings, embedder=embedder).run().up_to_date
    with monkeypatch.context() as m:
        m.setattr(qa.indexing, "scoring_fingerprint", lambda: "other scoring")
        report = IndexBuilder(settings, embedder=embedder).run()
    assert not report.up_to_date and report.embedded_chunks == 0
    report = IndexBuilder(settings, embedder=embedder).run()  # recorded as "other scoring": scored again
    assert not report.up_to_date and report.embedded_chunks == 0 and term_files(settings) == term_files(fresh)
    assert IndexBuilder(settings, embedder=embedder).run().up_to_date
    path = sorted(sources_copy.glob("*.txt"))[1]
    path.write_text(path.read_text(encoding="utf-8") + "\nThe Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    report = IndexBuilder(settings, embedder=embedder).run()
    assert report.updated == [path.stem] and 0 < report.embedded_chunks < report.chunks
