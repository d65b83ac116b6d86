"""Stateless workers (issue 14, item 2): a worker that starts with only the Chroma server's URL, the
published index's name and the model serves the same answers as a worker reading the build's
folder; it follows rebuilds, fetching only what changed, and its lease on the server keeps the
version it serves from the build's clean-up. All against a real `chroma run`."""
import json
import os
import subprocess
import time

import numpy as np
import pytest
import requests

from qa import indexing, versions
from qa.config import Settings, SettingsError
from qa.indexing import ARRAYS, IndexBuilder, current_version, load_index
from qa.published import Publication
from qa.retrieval import Retriever
from qa.service import QAService
from tests.conftest import QA, ROOT, Server, on_chroma
from tests.test_lifecycle import EDITED, NEW_SENTENCE, _edit

QUESTIONS = [json.loads(line)["question"] for line in open(ROOT / "eval" / "questions.jsonl", encoding="utf-8")][:12]


def _settings(chroma, **values) -> Settings:
    return Settings.from_env({"chroma_url": chroma.url, **values})


def _answers(ask, questions) -> list:
    """The parts of each response that must not depend on where the worker runs."""
    out = []
    for question in questions:
        response = ask(question)
        out.append([(r["source"]["id"], r["span"], r["highlight"], r["score"], r["corroborated_by"]) for r in response["results"]])
    return out


def test_a_worker_with_an_empty_folder_serves_what_the_build_folder_serves(chroma_server, sources_copy, tmp_path, embedder):
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    report = IndexBuilder(build, embedder=embedder).run()
    assert report.published and f"published as index {report.published}" in report.summary()
    local = QAService(build, embedder=embedder)
    worker = QAService(_settings(chroma_server, index_dir=tmp_path / "worker", chroma_index=report.published), embedder=embedder)
    assert not (tmp_path / "worker").exists()  # nothing there before its first question
    assert _answers(lambda q: worker.ask(q, 5), QUESTIONS) == _answers(lambda q: local.ask(q, 5), QUESTIONS)

    # Its copy holds the build's arrays and texts, row for row; BM25 ranks the same.
    built, copied = load_index(build), worker.index()
    try:
        for name in ARRAYS:
            assert np.array_equal(getattr(built, name), getattr(copied, name)), name
        assert [c.text for c in built.chunks] == [c.text for c in copied.chunks]
        assert built.lexical.search("treaty law October", 10) == copied.lexical.search("treaty law October", 10)
    finally:
        built.close()

    # A rebuild after one edit: the worker switches and fetches only the edited source's payload.
    fetched = []
    payloads = worker.follower.publication.payloads
    worker.follower.publication.payloads = lambda keys: fetched.extend(keys) or payloads(keys)
    _edit(sources_copy)
    second = IndexBuilder(build, embedder=embedder).run()
    deadline = time.monotonic() + 60
    while worker.index().version != second.version and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.index().version == second.version
    assert [sid for sid, _ in fetched] == [EDITED]
    answer = worker.ask("Where is the lunar mining research coordinated from?", 3)
    assert NEW_SENTENCE in answer["results"][0]["text"]
    assert _answers(lambda q: worker.ask(q, 5), QUESTIONS) == _answers(lambda q: local.ask(q, 5), QUESTIONS)


def test_the_version_a_stateless_worker_holds_outlives_two_rebuilds(chroma_server, sources_copy, tmp_path, embedder):
    """Its lease on the server keeps its version's records and payloads from the build's clean-up
    (the build cannot see the worker's folder); once released and expired, they go."""
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    first = IndexBuilder(build, embedder=embedder).run()
    worker = QAService(_settings(chroma_server, index_dir=tmp_path / "worker", chroma_index=first.published), embedder=embedder)
    question = "What happened at La Orchila?"
    with worker.holding() as held:  # a request in flight on the old version, across two rebuilds
        _edit(sources_copy)
        IndexBuilder(build, embedder=embedder).run()
        (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
        IndexBuilder(build, embedder=embedder).run()
        assert held.version == first.version
        hits = Retriever(embedder, mode="dense").run(on_chroma(held), question, 5).hits
        assert any("La Orchila" in h.chunk.text for h in hits)  # its own records, still on the server
    publication = Publication.of_index(build)
    assert first.version in publication.held()  # the worker still names it (its folder holds it)


def test_stateless_settings_and_refusals(chroma_server, tmp_path, embedder):
    with pytest.raises(SettingsError, match="QA_CHROMA_URL"):
        Settings.from_env({"chroma_index": "0123456789abcdef"})
    with pytest.raises(SettingsError, match="16 hex digits"):
        Settings.from_env({"chroma_url": chroma_server.url, "chroma_index": "../etc"})
    settings = _settings(chroma_server, index_dir=tmp_path / "w", chroma_index="0123456789abcdef")
    with pytest.raises(SettingsError, match="stateless worker"):
        IndexBuilder(settings, embedder=embedder)
    health = QAService(settings, embedder=embedder).health()
    assert health["status"] == "unavailable" and "no index is published" in health["error"]


def test_two_stateless_workers_in_empty_folders_answer_alike(chroma_server, sources_copy, tmp_path):
    """The scale-out test of issue 14: `qa serve` twice, each with only the URL, the name and an
    empty folder, against one `chroma run`; identical answers, and both follow a rebuild."""
    env = {**os.environ, "QA_CHROMA_URL": chroma_server.url}
    build = [QA, "index", "--sources", str(sources_copy), "--index", str(tmp_path / "build")]
    done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    name = done.stdout.rsplit("published as index ", 1)[1].split()[0]
    worker_env = {"QA_CHROMA_URL": chroma_server.url, "QA_CHROMA_INDEX": name}

    def ask(base):
        return lambda q: requests.post(base + "/api/ask", json={"question": q, "k": 5}, timeout=60).json()

    with Server(tmp_path / "one", env=worker_env) as one, Server(tmp_path / "two", env=worker_env) as two:
        assert _answers(ask(one.base), QUESTIONS) == _answers(ask(two.base), QUESTIONS)
        refused = requests.post(one.base + "/api/index", json={}, timeout=10)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "stateless_worker"
        _edit(sources_copy)
        done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "updated 1" in done.stdout, done.stdout + done.stderr
        new_version = current_version(tmp_path / "build")
        for server in (one, two):
            deadline = time.monotonic() + 60
            while requests.get(server.base + "/api/health", timeout=10).json()["index_version"] != new_version:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        asked = ask(one.base)("Where is the lunar mining research coordinated from?")
        assert asked["index_version"] == new_version and NEW_SENTENCE in asked["results"][0]["text"]
        assert _answers(ask(one.base), QUESTIONS) == _answers(ask(two.base), QUESTIONS)


def test_the_clean_up_leaves_only_what_remaining_versions_publish(chroma_server, sources_copy, tmp_path, embedder, monkeypatch):
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    IndexBuilder(build, embedder=embedder).run()
    publication = Publication.of_index(build)
    publication.write_lease({"gone-worker-version"})  # this process's lease, then made stale
    client = __import__("chromadb").HttpClient(host="127.0.0.1", port=chroma_server.port)
    collection, control = client.get_collection(publication.name), client.get_collection(publication.control)
    lease = control.get(where={"kind": "lease"}, include=["metadatas"])
    control.upsert(ids=lease["ids"], embeddings=[[1.0, 0.0]], metadatas=[{**lease["metadatas"][0], "beat": time.time() - 1000}])
    _edit(sources_copy)
    (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    current = current_version(build.index_dir)
    reads, read = [], versions.read_manifest  # a build reads the served manifest once (0.5 s at 1M chunks)
    with monkeypatch.context() as patch:
        for module in (versions, indexing):
            patch.setattr(module, "read_manifest", lambda folder, *a, **k: reads.append(folder.name) or read(folder, *a, **k))
        last = IndexBuilder(build, embedder=embedder).run()
    assert last.version != current
    assert reads == [current]  # not the new version's, nor the removed one's again for the clean-up
    manifest = json.loads((tmp_path / "build" / "versions" / last.version / "manifest.json").read_text())
    records = collection.get(include=["metadatas"])["metadatas"]
    assert {(m["source_id"], m["embedded"]) for m in records if m["kind"] == "source"} == {
        (sid, entry["embedded"]) for sid, entry in manifest["sources"].items()}
    assert {m["version"] for m in records if m["kind"] == "version"} == {last.version}
    assert not [m for m in records if m["kind"] in ("lease", "current")]  # both in the control collection
    assert [m["version"] for m in control.get(include=["metadatas"])["metadatas"]] == [last.version]  # the stale lease deleted


def test_an_index_published_by_an_older_build_is_followed_and_its_leases_kept(chroma_server, sources_copy, tmp_path, embedder):
    """Builds before the control collection wrote `current` and workers' leases into the published
    collection. A worker follows a `current` found there (only an older build writes one); the
    clean-up keeps the versions its leases name and deletes its dead ones; this code's next switch
    deletes the older `current`, and the worker follows the control collection's."""
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    first = IndexBuilder(build, embedder=embedder).run()
    publication = Publication.of_index(build)
    client = __import__("chromadb").HttpClient(host="127.0.0.1", port=chroma_server.port)
    collection = client.get_collection(publication.name)
    client.delete_collection(publication.control)  # as an older build left the server
    collection.upsert(ids=["current", "lease@old-worker", "lease@dead-worker"], embeddings=[[1.0, 0.0]] * 3, metadatas=[
        {"kind": "current", "version": first.version},
        {"kind": "lease", "versions": json.dumps(["20990101T000000-aaaaaa"]), "beat": client.heartbeat() / 1e9},
        {"kind": "lease", "versions": json.dumps(["20990101T000000-bbbbbb"]), "beat": client.heartbeat() / 1e9 - 1000}])
    assert publication.held() == {first.version, "20990101T000000-aaaaaa"}  # its current, its live lease
    assert collection.get(ids=["lease@dead-worker"])["ids"] == []
    worker = QAService(_settings(chroma_server, index_dir=tmp_path / "worker", chroma_index=first.published), embedder=embedder)
    assert worker.ask("What happened at La Orchila?", 3)["index_version"] == first.version

    _edit(sources_copy)
    second = IndexBuilder(build, embedder=embedder).run()
    assert collection.get(ids=["current", "lease@old-worker"])["ids"] == ["lease@old-worker"]
    assert Publication.of_index(build).current() == second.version
    deadline = time.monotonic() + 60
    while worker.index().version != second.version and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.index().version == second.version

    collection.upsert(ids=["current"], embeddings=[[1.0, 0.0]], metadatas=[{"kind": "current", "version": first.version}])
    assert Publication.of_index(build).current() == first.version  # an older build switched back after this code's


def test_a_hostile_or_broken_server_record_is_refused_not_followed(chroma_server, sources_copy, tmp_path, embedder):
    """A `current` record naming a path (anyone who can write to the Chroma server can write one)
    is refused with a 503 that says why; nothing outside the worker's folder is touched."""
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    name = IndexBuilder(build, embedder=embedder).run().published
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    client = __import__("chromadb").HttpClient(host="127.0.0.1", port=chroma_server.port)
    publication = Publication.of_index(build)
    real = publication.current()

    def put(collection: str, version: str) -> None:
        client.get_collection(collection).upsert(ids=["current"], embeddings=[[1.0, 0.0]],
                                                 metadatas=[{"kind": "current", "version": version}])

    def refused() -> bool:
        health = QAService(_settings(chroma_server, index_dir=tmp_path / "w" / "x", chroma_index=name), embedder=embedder).health()
        return health["status"] == "unavailable" and "which no build makes" in health["error"]

    put(publication.control, "../../../victim")
    assert refused()
    put(publication.control, real)
    put(publication.name, "../../../victim")  # where an older build writes it, read first
    assert refused()
    assert (victim / "keep.txt").read_text() == "still here"


def test_a_control_collection_deleted_while_in_use_is_an_error_not_an_empty_one(chroma_server, sources_copy, tmp_path, embedder):
    """Leases read from a collection deleted under an open handle must not read as "no worker holds
    anything" (the clean-up would delete what workers serve): a StoreError, then a fresh look."""
    from qa.store import StoreError

    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    IndexBuilder(build, embedder=embedder).run()
    publication = Publication.of_index(build)
    publication.write_lease({"20990101T000000-aaaaaa"})
    assert "20990101T000000-aaaaaa" in publication.held()
    __import__("chromadb").HttpClient(host="127.0.0.1", port=chroma_server.port).delete_collection(publication.control)
    with pytest.raises(StoreError, match="deleted .* while in use"):
        publication.held()
    publication.write_lease({"20990101T000000-aaaaaa"})  # the next beat writes it again
    assert "20990101T000000-aaaaaa" in publication.held()


def test_a_pin_that_fails_holds_nothing(chroma_server, sources_copy, tmp_path, embedder):
    from qa.published import Follower
    from qa.store import StoreError

    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    name = IndexBuilder(build, embedder=embedder).run().published
    follower = Follower(_settings(chroma_server, index_dir=tmp_path / "w", chroma_index=name))
    version = follower.pin()
    follower.release(version)
    chroma_server.stop()
    with pytest.raises(StoreError):
        follower.pin()
    with pytest.raises(StoreError):  # the step of a pin that names the version in the lease on the server
        follower._hold(version)
    assert follower.held() == set()  # nothing stays named for the next lease


def test_emptying_the_sources_folder_cleans_up_without_warnings(chroma_server, sources_copy, tmp_path, embedder):
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    IndexBuilder(build, embedder=embedder).run()
    for path in sources_copy.iterdir():
        path.unlink()
    report = IndexBuilder(build, embedder=embedder).run()
    assert report.sources == 0 and report.warnings == []
    assert not list((tmp_path / "build" / "trash").glob("*"))


def test_a_worker_takes_the_published_readings_of_its_code_and_makes_other_codes_anew(chroma_server, sources_copy, tmp_path,
                                                                                        embedder, monkeypatch):
    from qa import indexing, readings

    def files(settings) -> dict[str, bytes]:
        folder = settings.index_dir / "versions" / current_version(settings.index_dir)
        return {name: (folder / name).read_bytes() for name in readings.FILES}

    local = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "local"})
    IndexBuilder(local, embedder=embedder).run()
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    with monkeypatch.context() as m:  # published by other code (another `qa.signals`, say): not taken
        m.setattr(readings, "fingerprint", lambda: "older code")
        first = IndexBuilder(build, embedder=embedder).run()
    worker = QAService(_settings(chroma_server, index_dir=tmp_path / "worker", chroma_index=first.published), embedder=embedder)
    assert worker.index().readings is not None and files(worker.settings) == files(local)

    IndexBuilder(build, embedder=embedder).run(full=True)  # this code's readings, published with new payloads
    with monkeypatch.context() as m:
        m.setattr(indexing, "_read_stored", lambda *a: pytest.fail("a published reading of this code was made again"))
        fresh = QAService(_settings(chroma_server, index_dir=tmp_path / "fresh", chroma_index=first.published), embedder=embedder)
        assert fresh.index().readings is not None and files(fresh.settings) == files(local)


def test_a_worker_scores_bm25_from_the_published_counts_of_its_analysis_and_counts_other_analyses_anew(
        chroma_server, sources_copy, tmp_path, embedder, monkeypatch):
    from qa.analysis import TermCounts

    queries = ["treaty law October", "lunar mining research", "Moscow Caracas energy cooperation 2025"]

    def ranked(settings) -> list:
        index = load_index(settings)
        try:
            return [index.lexical.search(q, 10) for q in queries]
        finally:
            index.close()

    local = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "local"})
    IndexBuilder(local, embedder=embedder).run()
    build = _settings(chroma_server, sources_dir=sources_copy, index_dir=tmp_path / "build")
    with monkeypatch.context() as m:  # counted by another analysis (another stemmer, say): not taken
        m.setattr(indexing, "analysis_fingerprint", lambda: "older analysis")
        first = IndexBuilder(build, embedder=embedder).run()
    worker = QAService(_settings(chroma_server, index_dir=tmp_path / "worker", chroma_index=first.published), embedder=embedder)
    worker.index()
    assert ranked(worker.settings) == ranked(local)

    IndexBuilder(build, embedder=embedder).run(full=True)  # this analysis's counts, published with new payloads
    with monkeypatch.context() as m:
        m.setattr(TermCounts, "of", lambda *a: pytest.fail("a worker counted a text whose published counts it can use"))
        fresh = QAService(_settings(chroma_server, index_dir=tmp_path / "fresh", chroma_index=first.published), embedder=embedder)
        fresh.index()
    assert ranked(fresh.settings) == ranked(local)


def test_a_payload_comes_back_as_it_went_and_a_damaged_one_is_refused():
    import base64
    import io
    import zlib

    from qa.published import decode_payload, encode_payload

    entries = {"rows": np.arange(10, dtype=np.int64).reshape(5, 2), "vectors": np.linspace(-1, 1, 7 * 4).astype(np.float16).reshape(7, 4),
               "line": "Caracas, 7 May 2025 — ünïcode\n".encode(), "none": np.zeros((0, 2), np.int32), "empty": b""}
    back = decode_payload(encode_payload(entries))
    assert list(back) == list(entries)
    for name, value in entries.items():
        expected = np.frombuffer(value, np.uint8) if isinstance(value, bytes) else value
        assert back[name].dtype == expected.dtype and back[name].shape == expected.shape and np.array_equal(back[name], expected)
    assert back["rows"].flags.writeable  # as np.load's arrays

    buffer = io.BytesIO()  # a payload an earlier build published (.npz) is read as before
    np.savez_compressed(buffer, rows=entries["rows"])
    assert np.array_equal(decode_payload(base64.b64encode(buffer.getvalue()).decode())["rows"], entries["rows"])

    arrays = {name: np.frombuffer(v, np.uint8) if isinstance(v, bytes) else v for name, v in entries.items()}
    header = json.dumps([[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]).encode()
    older = b"".join([b"qa-payload-1\n", header, b"\n", *(a.tobytes() for a in arrays.values())])  # all deflated
    back = decode_payload(base64.b64encode(zlib.compress(older)).decode())
    assert all(np.array_equal(back[name], a) and back[name].dtype == a.dtype for name, a in arrays.items())

    packed = base64.b64decode(encode_payload(entries))
    assert entries["vectors"].tobytes() in packed  # undeflated
    body = packed.index(b"\n", len("qa-payload-2\n")) + 1  # where the deflated part starts
    flipped = bytearray(packed)
    flipped[body + 4] ^= 0xFF
    damaged = [encode_payload(entries)[:-12], base64.b64encode(b"not a payload").decode()] + [
        base64.b64encode(changed).decode()
        for changed in (packed + b"x", packed[:-1], bytes(flipped), packed[: body + 3],
            packed.replace(b'"<i8"', b'"|O"', 1), packed.replace(b"qa-payload-2", b"qa-payload-X"),
            packed.replace(b'"<i8"', b'"no dtype"', 1), packed.replace(b"[5, 2]", b"[5, -2]", 1),
            packed.replace(b'[["rows", "<i8", [5, 2], "z"]', b'[["rows", "<i8", [5, 2]]', 1),
            packed.replace(b'[["rows"', b'[[7', 1), packed.replace(b'[7, 4], "r"]', b'[7, 4], "q"]', 1), packed.replace(b'[7, 4], "r"]', b'[7, 4], ["r"]]', 1),
            packed.replace(b"[7, 4]", b"[7, 5]", 1))
    ] + [base64.b64encode(zlib.compress(changed)).decode() for changed in (older + b"x", older[:-1])]
    for text in damaged:
        with pytest.raises(ValueError):
            decode_payload(text)


def test_published_counts_that_do_not_fit_their_chunks_are_not_used():
    from qa.analysis import TermCounts, analysis_fingerprint

    counts = TermCounts.of(["the treaty was signed", "oil fields and the treaty"], {})
    entries = indexing._term_entries(counts)

    def published(**changed) -> dict:
        arrays = {name: np.frombuffer(v, np.uint8) if isinstance(v, bytes) else v for name, v in {**entries, **changed}.items()}
        return indexing._published_counts(arrays, 2, {}, [])

    taken = published()
    assert taken is not None and [taken.vocabulary[i] for i in taken.ids] == [counts.vocabulary[i] for i in counts.ids]
    assert entries["lexical"] == analysis_fingerprint().encode()
    for changed in ({"term_ids": entries["term_ids"].astype(np.float64)}, {"term_counts": entries["term_counts"] - 0.5},
                    {"term_rows": entries["term_rows"][:-1]}, {"term_counts": np.zeros_like(entries["term_counts"])},
                    {"term_ids": entries["term_ids"] + 100}, {"lexical": b"another analysis"}):
        assert published(**changed) is None, changed
