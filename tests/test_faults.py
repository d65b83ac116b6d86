"""Faults injected into a real server, real builds and a real Chroma server, and survived:
Chroma killed mid-load and restarted, builds killed with SIGKILL at random moments, a disk that
fills during a build."""
import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from qa.config import Settings
from qa.indexing import current_version, load_index
from qa.versions import held_versions
from tests.conftest import QA, Server
from tests.test_lifecycle import _edit
from tests.test_versions import QUESTION, build, build_here

KILLS = int(os.environ.get("QA_FAULT_KILLS", "10"))


def _ask(base: str) -> requests.Response:
    return requests.post(base + "/api/ask", json=QUESTION, timeout=60)


def test_chroma_server_killed_mid_load_then_restarted(chroma_server, sources_copy, tmp_path, embedder):
    env = {"QA_CHROMA_URL": chroma_server.url}
    index_dir = tmp_path / "index"
    build_here(sources_copy, index_dir, embedder, env)
    first = current_version(index_dir)
    with Server(index_dir, threads=4, env=env) as server:
        assert _ask(server.base).json()["index_version"] == first
        _edit(sources_copy)
        build_here(sources_copy, index_dir, embedder, env)
        second = current_version(index_dir)
        answers: list[tuple[int, dict]] = []
        stop = threading.Event()

        def client():
            while not stop.is_set() and len(answers) < 5000:
                r = _ask(server.base)
                answers.append((r.status_code, r.json()))

        clients = [threading.Thread(target=client) for _ in range(3)]
        for t in clients:
            t.start()  # the first of these requests starts loading the second version...
        chroma_server.stop(kill=True)  # ...while Chroma dies
        try:
            time.sleep(3)
            down = len(answers)
            health = requests.get(server.base + "/api/health", timeout=60).json()
            chroma_server.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (answers and answers[-1][0] == 200 and answers[-1][1]["index_version"] == second):
                time.sleep(0.3)
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=60)
    codes = [code for code, _ in answers]
    assert set(codes) <= {200, 503}, {c: codes.count(c) for c in set(codes)}
    # While Chroma was down the second version could not load, and health said why; the first went on
    # answering (the dense side of a version this small is its own vectors in memory, not a query).
    assert health["index_version"] == first and "Chroma server" in health["warning"], health
    assert any(code == 200 for code, _ in answers[:down])
    assert all(body["index_version"] == first for code, body in answers[:down] if code == 200)
    for code, body in answers:
        if code == 503:
            assert body["error"]["code"] == "index_unavailable" and ("Chroma" in body["error"]["message"] or "vector store" in body["error"]["message"])
        else:
            assert body["index_version"] in (first, second)
    assert answers[-1][0] == 200 and answers[-1][1]["index_version"] == second  # resumed, no restart


def test_builds_killed_at_random_moments_leave_the_previous_version_serving(sources_copy, tmp_path, embedder):
    for path in sorted(sources_copy.glob("*.txt"))[2:]:  # two articles: shorter builds, the same phases
        path.unlink()
    index_dir = tmp_path / "index"
    started = time.monotonic()
    build(sources_copy, index_dir)
    duration = time.monotonic() - started  # a full build, from process start: kills land in every phase
    rng = random.Random(int(os.environ.get("QA_FAULT_SEED", "13")))
    settings = Settings.from_env({"index_dir": index_dir})
    seen = {current_version(index_dir)}
    with Server(index_dir) as server:
        for i in range(KILLS):
            before = current_version(index_dir)
            with (sources_copy / "log.txt").open("a", encoding="utf-8") as f:
                f.write(f"Entry {i}: the committee met on day {i} to review the treaty.\n")
            process = subprocess.Popen([QA, "index", "--full" if i % 2 else "--wait=0", "--sources", str(sources_copy),
                                        "--index", str(index_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.0) * duration)  # the first third is mostly Python importing torch
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            after = current_version(index_dir)  # the previous version, or the new one if the switch happened
            assert after == before or after not in seen
            index = load_index(settings)  # verifies the manifest checksum and every file
            index.close()
            response = _ask(server.base)
            assert response.status_code == 200 and response.json()["index_version"] == after

            build_here(sources_copy, index_dir, embedder)  # the next build completes and clears what the killed one left
            seen |= {after, current_version(index_dir)}
            kept = {current_version(index_dir)} | held_versions(index_dir)  # the server still holds `after`
            assert {p.name for p in (index_dir / "versions").iterdir()} <= kept
            assert not (index_dir / "trash").exists() or not any((index_dir / "trash").iterdir())
            response = _ask(server.base)
            assert response.status_code == 200 and response.json()["index_version"] == current_version(index_dir)


@contextlib.contextmanager
def _small_disk(path: Path, size: str):
    """A size-limited tmpfs at `path` when this process may mount one; else None (the caller limits file size instead)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_filling_during_a_build_fails_it_clearly_and_the_served_version_keeps_serving(sources_copy, tmp_path, embedder):
    built = tmp_path / "built"
    build_here(sources_copy, built, embedder)
    size = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
    with _small_disk(tmp_path / "disk", f"{int(size * 1.5) // 1024}k") as mounted:
        index_dir = tmp_path / "disk" / "index"
        shutil.copytree(built, index_dir)
        shutil.rmtree(index_dir / "leases", ignore_errors=True)
        served = current_version(index_dir)
        with Server(index_dir) as server:
            assert _ask(server.base).json()["index_version"] == served
            # With a mount: the disk is full once half a version is written. Without one: no file may grow past 64 KiB.
            failed = subprocess.run([QA, "index", "--full", "--sources", str(sources_copy), "--index", str(index_dir)],
                                    capture_output=True, text=True, timeout=300,
                                    preexec_fn=None if mounted else _limit_file_size(64 * 1024))
            assert failed.returncode == 1, failed.stdout + failed.stderr
            assert "Traceback" not in failed.stderr and "the served version" in failed.stderr, failed.stderr
            assert any(word in failed.stderr for word in ("No space left", "too large", "full", "disk I/O")), failed.stderr
            response = _ask(server.base)
            assert response.status_code == 200 and response.json()["index_version"] == served
            assert current_version(index_dir) == served
            assert {p.name for p in (index_dir / "versions").iterdir()} == {served}  # the partial version is gone
            load_index(Settings.from_env({"index_dir": index_dir})).close()
