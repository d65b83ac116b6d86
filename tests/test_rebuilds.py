"""Rebuilds that lose no change and build the right folder: the index remembers its sources
folder, watch mode builds every change it saw, rebuild jobs are shared by every worker and run
in their own process, a reused source keeps the text its offsets were computed on."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from qa.config import Settings
from qa.indexing import IndexBuilder, load_index
from tests.conftest import QA, SEEDS
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
    assert np.min(np.sum(served * index.chunk_vectors, axis=1)) > 0.999
    index.close()


def _built_hash(index_dir: Path, source_id: str) -> str | None:
    from qa.versions import current_manifest

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
