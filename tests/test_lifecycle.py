"""Index lifecycle against real Chroma and real servers: incremental builds, atomic switch,
SIGKILL safety, concurrent builds, hot reload, the admin endpoint, watch mode, refusals."""
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from qa.config import Settings
from qa.indexing import BuildBusy, IndexBuilder, IndexUnavailable, current_version, load_index
from qa.retrieval import Retriever
from tests.conftest import QA, Server, on_chroma

EDITED = "003_897a613f67fec3ac"
NEW_SENTENCE = "The treaty also foresees joint lunar mining research coordinated from Reykjavik."


def _edit(folder: Path) -> None:
    path = folder / f"{EDITED}.txt"
    text = path.read_text(encoding="utf-8")
    start = text.index("The vote coincided with")
    end = text.index("\n", start)
    path.write_text(text[:start] + NEW_SENTENCE + text[end:], encoding="utf-8")


def _all_text(index) -> str:
    return "\n".join(c.text for c in index.chunks)


def test_incremental_rebuild_embeds_only_what_changed(sources_copy, tmp_path, embedder):
    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index"})
    first = IndexBuilder(settings, embedder=embedder).run()
    assert len(first.added) == 5 and first.embedded_chunks == first.chunks

    _edit(sources_copy)
    report = IndexBuilder(settings, embedder=embedder).run()
    index = load_index(settings)
    edited_chunks = [c for c in index.chunks if c.source_id == EDITED]
    assert report.updated == [EDITED] and len(report.kept) == 4 and not report.added and not report.removed
    assert report.embedded_chunks == len(edited_chunks)  # only that source was embedded
    assert 0 < report.embedding_seconds < report.seconds and "of it embedding" in report.summary()
    assert "La Orchila" not in _all_text(index) and NEW_SENTENCE in _all_text(index)
    stored = index.store.collection.get(where={"source_id": EDITED})["ids"]
    assert sorted(stored) == sorted(c.id for c in edited_chunks)
    assert index.store.count() == len(index.chunks)

    for searched in (index, on_chroma(index)):  # the version's vectors, and its copy of the Chroma store
        answer = Retriever(embedder).run(searched, "Where is the lunar mining research coordinated from?", 3)
        assert "Reykjavik" in answer.hits[0].chunk.text
        assert not any("La Orchila" in h.chunk.text for h in Retriever(embedder).run(searched, "La Orchila island drills", 10).hits)

    (sources_copy / "001_fb017212c236a2a6.txt").unlink()
    (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    report = IndexBuilder(settings, embedder=embedder).run()
    index = load_index(settings)
    assert report.removed == ["001_fb017212c236a2a6"] and report.added == ["new_source"]
    assert report.embedded_chunks == 1
    assert not index.store.collection.get(where={"source_id": "001_fb017212c236a2a6"})["ids"]
    assert not any(h.chunk.source_id == "001_fb017212c236a2a6"
                   for h in Retriever(embedder, mode="bm25").run(index, "Igla-S missiles Ryabkov", 10).hits)
    assert len(list((settings.index_dir / "versions").iterdir())) == 2  # the current one and the one this test holds


def test_nothing_changed_writes_no_new_version(seed_index, embedder):
    before = current_version(seed_index.index_dir)
    report = IndexBuilder(seed_index, embedder=embedder).run()
    assert report.up_to_date and current_version(seed_index.index_dir) == before and report.embedding_seconds == 0


def test_full_rebuild_embeds_everything_and_reports_against_the_served_version(seed_index, tmp_path, embedder):
    index_dir = tmp_path / "index"
    subprocess.run(["cp", "-r", str(seed_index.index_dir), str(index_dir)], check=True)
    settings = Settings.from_env({"sources_dir": seed_index.sources_dir, "index_dir": index_dir})
    report = IndexBuilder(settings, embedder=embedder).run(full=True)
    assert len(report.kept) == 5 and not report.added and report.embedded_chunks == report.chunks


def _wait_for_path(pattern_root: Path, name: str, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if any(pattern_root.glob(f"versions/*/{name}")) or (name == "" and any(pattern_root.glob("versions/*"))):
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("stage", ["chroma", "bm25", "sources.jsonl", "chunk_vectors.npy"])
def test_sigkill_during_a_build_leaves_the_previous_version_serving(stage, seed_index, tmp_path, embedder):
    index_dir = tmp_path / "index"
    subprocess.run(["cp", "-r", str(seed_index.index_dir), str(index_dir)], check=True)
    settings = Settings.from_env({"sources_dir": seed_index.sources_dir, "index_dir": index_dir})
    before = load_index(settings)
    for old in (index_dir / "versions").iterdir():
        if old.name != before.version:
            subprocess.run(["rm", "-rf", str(old)], check=True)

    build = subprocess.Popen([QA, "index", "--full", "--sources", str(seed_index.sources_dir), "--index", str(index_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reached = _wait_for_path(index_dir, stage, build)
    build.send_signal(signal.SIGKILL)
    build.wait(timeout=30)
    assert reached, f"the build finished before reaching {stage}"

    after = load_index(settings)  # verifies the manifest checksum and every file
    assert after.version == before.version
    for searched in (after, on_chroma(after)):  # its vectors, and its Chroma store
        assert "October 7" in Retriever(embedder).run(searched, "When did Maduro enact the treaty law?", 1).hits[0].chunk.text

    finish = subprocess.run([QA, "index", "--sources", str(seed_index.sources_dir), "--index", str(index_dir)],
                            capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert {p.name for p in (index_dir / "versions").iterdir()} <= {before.version, current_version(index_dir)}
    load_index(settings)


def test_two_builds_at_once_one_refuses_clearly(seed_index, tmp_path):
    index_dir = tmp_path / "index"
    args = [QA, "index", "--full", "--sources", str(seed_index.sources_dir), "--index", str(index_dir)]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in runs]
    codes = sorted(p.returncode for p in runs)
    assert codes == [0, 1], outputs
    refused = next(err for (out, err), p in zip(outputs, runs) if p.returncode == 1)
    assert "another build" in refused and "Traceback" not in refused
    load_index(Settings.from_env({"index_dir": index_dir}))


def test_refuses_a_damaged_or_incompatible_index_with_the_fix(seed_index, tmp_path):
    index_dir = tmp_path / "index"
    subprocess.run(["cp", "-r", str(seed_index.index_dir), str(index_dir)], check=True)
    with pytest.raises(IndexUnavailable, match="qa index --full"):
        load_index(Settings.from_env({"index_dir": index_dir, "chunk_tokens": 64}))

    version = current_version(index_dir)
    manifest_path = index_dir / "versions" / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chunk_count"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexUnavailable, match="checksum.*qa index --full"):
        load_index(Settings.from_env({"index_dir": index_dir}))
    asked = subprocess.run([QA, "ask", "treaty", "--index", str(index_dir)], capture_output=True, text=True, timeout=120)
    assert asked.returncode == 1 and "qa index --full" in asked.stderr and "Traceback" not in asked.stderr

    rebuilt = subprocess.run([QA, "index", "--sources", str(seed_index.sources_dir), "--index", str(index_dir)],
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0 and "full rebuild" in rebuilt.stderr
    load_index(Settings.from_env({"index_dir": index_dir}))


def test_server_hot_reloads_with_no_failed_request_and_no_mixed_answer(sources_copy, tmp_path):
    index_dir = tmp_path / "index"
    build = [QA, "index", "--sources", str(sources_copy), "--index", str(index_dir)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    old_version = current_version(index_dir)
    question = {"question": "What happened on the island of La Orchila or in Reykjavik?", "k": 10}
    with Server(index_dir, threads=4) as server:
        seen, failures, stop = [], [], threading.Event()

        def hammer():
            while not stop.is_set() and len(seen) < 2000:
                r = requests.post(server.base + "/api/ask", json=question, timeout=60)
                if r.status_code != 200:
                    failures.append(r.status_code)
                    continue
                body = r.json()
                texts = " ".join(x["text"] for x in body["results"])
                seen.append((body["index_version"], "La Orchila" in texts, "Reykjavik" in texts))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        _edit(sources_copy)
        subprocess.run(build, check=True, capture_output=True, timeout=300)
        new_version = current_version(index_dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == new_version for v, *_ in seen[-5:]):
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures
    versions = {v for v, *_ in seen}
    assert versions == {old_version, new_version}
    for version, old_text, new_text in seen:  # each answer comes wholly from one version
        assert (old_text and not new_text) if version == old_version else (new_text and not old_text)


def test_admin_rebuild_endpoint(sources_copy, tmp_path, embedder):
    from qa.app import create_app
    from qa.service import QAService

    config = {"sources_dir": sources_copy, "index_dir": tmp_path / "index"}
    disabled = create_app(config, service=QAService(Settings.from_env(config), embedder=embedder)).test_client()
    assert disabled.post("/api/index").status_code == 403

    config["admin_token"] = "s3cret-token"
    client = create_app(config, service=QAService(Settings.from_env(config), embedder=embedder)).test_client()
    assert client.post("/api/index").status_code == 401
    assert client.post("/api/index", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret-token"}
    assert client.post("/api/index", headers=auth, json={"full": "yes"}).status_code == 400
    started = client.post("/api/index", headers=auth)
    assert started.status_code == 202 and started.get_json()["state"] == "running"
    assert client.post("/api/index", headers=auth).status_code == 409
    deadline = time.monotonic() + 120
    while client.get("/api/index", headers=auth).get_json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    state = client.get("/api/index", headers=auth).get_json()
    assert state["state"] == "succeeded" and len(state["added"]) == 5
    assert client.get("/api/health").get_json()["index_version"] == state["version"]


def test_builder_refuses_while_another_holds_the_lock(seed_index, embedder):
    builder = IndexBuilder(seed_index, embedder=embedder)
    lock = builder.acquire_lock()
    try:
        with pytest.raises(BuildBusy, match="another build"):
            IndexBuilder(seed_index, embedder=embedder).run()
    finally:
        lock.release()


def test_watch_mode_rebuilds_after_a_change(sources_copy, tmp_path):
    index_dir = tmp_path / "index"
    watcher = subprocess.Popen([QA, "index", "--watch", "--sources", str(sources_copy), "--index", str(index_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while current_version(index_dir) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        first = current_version(index_dir)
        assert first
        time.sleep(1.5)  # let the watcher start observing
        _edit(sources_copy)
        deadline = time.monotonic() + 120
        while current_version(index_dir) == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert current_version(index_dir) != first
        assert NEW_SENTENCE in _all_text(load_index(Settings.from_env({"index_dir": index_dir})))
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
