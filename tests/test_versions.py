"""Index versions and the processes serving them: a version is deleted only when no live process
holds it, a worker never answers from a deleted version, a failed load is retried for the version
that failed. Real gunicorn workers, real Chroma (embedded and `chroma run`)."""
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from qa.indexing import current_version
from tests.conftest import QA, Server
from tests.test_lifecycle import _edit

QUESTION = {"question": "What happened at La Orchila or in Reykjavik?", "k": 5}


def build(sources: Path, index_dir: Path, env: dict | None = None, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([QA, "index", "--sources", str(sources), "--index", str(index_dir), *extra],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def build_here(sources: Path, index_dir: Path, embedder, env: dict | None = None):
    """The same build in this process, with the session's model (no model load per build)."""
    from qa.indexing import IndexBuilder

    overrides = {"sources_dir": sources, "index_dir": index_dir, "chroma_url": (env or {}).get("QA_CHROMA_URL")}
    return IndexBuilder(_settings_from(overrides), embedder=embedder).run()


def _settings_from(overrides: dict):
    from qa.config import Settings

    return Settings.from_env(overrides)


def ask_many(base: str, count: int, clients: int = 8) -> list[requests.Response]:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: requests.post(base + "/api/ask", json=QUESTION, timeout=60), range(count)))


@pytest.mark.parametrize("store", ["embedded", "chroma-server"])
def test_idle_workers_after_two_builds_answer_only_from_the_newest_version(store, request, sources_copy, tmp_path, embedder):
    env = {"QA_CHROMA_URL": request.getfixturevalue("chroma_server").url} if store == "chroma-server" else {}
    index_dir = tmp_path / "index"
    build_here(sources_copy, index_dir, embedder, env)
    with Server(index_dir, workers=2, threads=4, env=env) as server:
        assert all(r.status_code == 200 for r in ask_many(server.base, 8))
        # Both workers hold the first version; two builds follow while they take no request.
        _edit(sources_copy)
        build_here(sources_copy, index_dir, embedder, env)
        (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
        build_here(sources_copy, index_dir, embedder, env)
        newest = current_version(index_dir)
        responses = ask_many(server.base, 200)
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 200, {c: codes.count(c) for c in set(codes)}
    assert {r.json()["index_version"] for r in responses} == {newest}


def _settings(sources: Path, index_dir: Path):
    return _settings_from({"sources_dir": sources, "index_dir": index_dir})


def test_a_version_held_by_a_request_stays_open_and_on_disk_until_it_ends(sources_copy, tmp_path, embedder):
    from qa.indexing import IndexBuilder
    from qa.service import QAService
    from qa.versions import clean_up, exists

    settings = _settings(sources_copy, tmp_path / "index")
    IndexBuilder(settings, embedder=embedder).run()
    service = QAService(settings, embedder=embedder)
    with service.holding() as first:
        _edit(sources_copy)
        second = IndexBuilder(settings, embedder=embedder).run()
        assert service.index().version == second.version  # the service moved on...
        assert exists(settings.index_dir, first.version)  # ...while the request keeps the old version
        assert first.store.query(first.chunk_vectors[0], 3)[0]  # open, on disk, answering
    clean_up(settings, keep=set())
    assert not exists(settings.index_dir, first.version)  # released by its last request, then deleted
    assert service.ask("Where is the lunar mining research coordinated from?", 3)["index_version"] == second.version


def test_a_replaced_version_is_collected_and_the_served_one_left_out_of_collections(sources_copy, tmp_path, embedder):
    import gc
    import time
    import weakref

    from qa.indexing import IndexBuilder
    from qa.service import QAService

    settings = _settings(sources_copy, tmp_path / "index")
    IndexBuilder(settings, embedder=embedder).run()
    service = QAService(settings, embedder=embedder)
    table = service.index().chunks
    # Frozen: in no generation a collection walks (`gc.get_objects` lists those generations only).
    assert not any(o is table for o in gc.get_objects())
    first = weakref.ref(table)  # a chunk table is in a cycle: only the collector frees it
    del table
    _edit(sources_copy)
    second = IndexBuilder(settings, embedder=embedder).run()
    assert service.ask("Where is the lunar mining research coordinated from?", 3)["index_version"] == second.version
    deadline = time.monotonic() + 30
    while first() is not None and time.monotonic() < deadline:  # the clean-up runs beside the requests
        time.sleep(0.05)
    assert first() is None, "the replaced version stayed in memory, frozen with the one serving"


def test_a_failed_load_is_retried_for_the_version_that_failed_not_the_next_one(sources_copy, tmp_path, embedder, monkeypatch):
    import shutil

    import qa.service
    from qa.indexing import IndexBuilder
    from qa.service import QAService
    from qa.versions import write_atomic

    settings = _settings(sources_copy, tmp_path / "index")
    first = IndexBuilder(settings, embedder=embedder).run()
    service = QAService(settings, embedder=embedder)
    assert service.index().version == first.version
    _edit(sources_copy)
    good = IndexBuilder(settings, embedder=embedder).run().version
    versions_dir = settings.index_dir / "versions"
    shutil.copytree(versions_dir / good, versions_dir / "broken")
    (versions_dir / "broken" / "chunk_vectors.npy").write_bytes(b"garbage")
    write_atomic(settings.index_dir / "CURRENT", "broken\n")

    real_load = qa.service.load_index

    def load_while_a_build_switches(settings, version=None, **options):
        if version == "broken":  # a build switches to a good version while this load fails
            write_atomic(settings.index_dir / "CURRENT", good + "\n")
        return real_load(settings, version, **options)

    monkeypatch.setattr(qa.service, "load_index", load_while_a_build_switches)
    assert service.index().version == first.version  # "broken" failed: the version in memory answers
    assert service.index().version == good  # the good one is loaded at once, not 10 s later


def test_a_lease_that_cannot_be_written_still_serves_with_a_warning(seed_index, tmp_path, embedder):
    import shutil

    from qa.service import QAService

    index_dir = tmp_path / "index"
    shutil.copytree(seed_index.index_dir, index_dir, ignore=shutil.ignore_patterns("leases"))
    (index_dir / "leases").write_text("not a folder")  # as a read-only or full disk would refuse the lease
    service = QAService(_settings_from({"index_dir": index_dir}), embedder=embedder)
    assert service.ask("When did Maduro enact the treaty law?", 1)["results"]
    assert "cannot write a lease" in service.health()["warning"]


def test_files_whose_stat_is_unchanged_since_their_checksum_matched_are_not_read_again(tmp_path, monkeypatch):
    import json
    import time

    from qa import versions

    folder = tmp_path / "v"
    folder.mkdir()
    for name in ("a.npy", "b.jsonl"):
        (folder / name).write_bytes(name.encode() * 1000)
    manifest = versions.seal(folder, {"version": "v"}, ("a.npy", "b.jsonl"))
    hashed = []
    real = versions.file_sha256
    monkeypatch.setattr(versions, "file_sha256", lambda path: hashed.append(path.name) or real(path))

    def verify() -> list[str]:
        hashed.clear()
        versions.verify_files(folder, manifest)
        return sorted(hashed)

    # Just written: within the margin of their stat, so not trusted yet ("racily clean"). The margin
    # is set long here, so a slow machine cannot let it pass between the writes and the checks.
    monkeypatch.setattr(versions, "RACY_NS", 60 * 10**9)
    assert verify() == ["a.npy", "b.jsonl"] and verify() == ["a.npy", "b.jsonl"]
    monkeypatch.setattr(versions, "RACY_NS", 0)  # as if written long ago (sleeps stand in for the margin below)
    assert verify() == ["a.npy", "b.jsonl"] and verify() == []
    # The same size, the modification time put back: the change time still tells.
    before = (folder / "a.npy").stat()
    time.sleep(0.05)  # more than a coarse clock tick
    (folder / "a.npy").write_bytes(b"x" * before.st_size)
    os.utime(folder / "a.npy", ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(versions.IndexUnavailable, match="a.npy"):
        verify()
    (folder / "a.npy").write_bytes(b"a.npy" * 1000)  # restored: read once, then trusted again
    assert verify() == ["a.npy"] and verify() == []
    stamps = json.loads((folder / versions.VERIFIED).read_text())
    wrong_shapes = {**stamps["files"], "a.npy": 5, "b.jsonl": [], versions.MANIFEST: ["x", 1, 2, 3, "4"]}
    for damaged in ("not json", "[1, 2]", json.dumps({**stamps, "boot": "another boot"}), json.dumps({**stamps, "files": wrong_shapes}), None):
        if damaged is None:
            (folder / versions.VERIFIED).unlink()
        else:
            (folder / versions.VERIFIED).write_text(damaged)
        assert verify() == ["a.npy", "b.jsonl"] and verify() == []
    (folder / "b.jsonl").unlink()
    with pytest.raises(versions.IndexUnavailable, match="b.jsonl"):
        verify()


def test_a_file_system_keeping_whole_seconds_gets_the_longer_margin():
    from qa import versions

    second = 10**9
    now = 1_800_000_000 * second
    assert versions._settled([0, 0, 0, now - second // 5, now - second // 5 + 7], now)  # 200 ms, fine times
    assert not versions._settled([0, 0, 0, now - second // 20, now - second // 20], now)  # 50 ms
    assert not versions._settled([0, 0, 0, now - second, now - second], now)  # whole seconds, 1 s
    assert versions._settled([0, 0, 0, now - 3 * second, now - 3 * second], now)


def test_a_manifest_whose_stat_is_unchanged_since_its_checksum_matched_is_not_checked_again(tmp_path, monkeypatch):
    import json
    import time

    from qa import versions

    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "a.npy").write_bytes(b"a" * 100)
    monkeypatch.setattr(versions, "RACY_NS", 60 * 10**9)  # nothing written is settled yet
    written = versions.seal(folder, {"version": "v", "sources": {"a": {"chunks": 1}}}, ("a.npy",))
    checked = []
    real = versions.manifest_checksum
    monkeypatch.setattr(versions, "manifest_checksum", lambda manifest: checked.append(1) or real(manifest))

    def read(stamp: bool = True) -> int:
        checked.clear()
        assert versions.read_manifest(folder, stamp=stamp) == written
        return len(checked)

    assert read() == 1 and read() == 1  # just written: not trusted yet
    monkeypatch.setattr(versions, "RACY_NS", 0)
    assert read(stamp=False) == 1 and read(stamp=False) == 1  # a look that does not stamp
    assert read() == 1 and read() == 0 and read(stamp=False) == 0
    versions.verify_files(folder, written)  # the files' check keeps the manifest's stamp
    assert read() == 0
    # Edited in place, its checksum field left as it was and its modification time put back.
    path = folder / versions.MANIFEST
    before = path.stat()
    time.sleep(0.05)
    path.write_text(path.read_text().replace('"chunks": 1', '"chunks": 2'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(versions.IndexUnavailable, match="checksum"):
        versions.read_manifest(folder)
    path.write_text(json.dumps(written))  # its content put back: checked once, then trusted
    assert read() == 1 and read() == 0
    versions.write_atomic(path, json.dumps(written))  # replaced by another file (inode) of the same content
    assert read() == 1 and read() == 0
