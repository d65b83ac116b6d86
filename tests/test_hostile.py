"""Hostile sources and hostile clients against a real build and a real server."""
import os
import socket
import subprocess
import time

import requests

from qa.config import Settings
from qa.indexing import IndexBuilder, current_version, load_index
from tests.conftest import QA, SEEDS, Server


def _hostile_folder(root):
    folder = root / "sources"
    folder.mkdir()
    (folder / "good article.txt").write_text((SEEDS / "003_897a613f67fec3ac.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "html.txt").write_text("<html><script>alert('x')</script><p>The Caracas bridge reopened in 2031.</p></html>", encoding="utf-8")
    with (folder / "huge.txt").open("w", encoding="utf-8") as f:
        f.write("The treaty text repeats. " * 840_000)  # about 20 MB
    (folder / "one line.txt").write_text(("lorem ipsum dolor sit amet " * 40_000).strip(), encoding="utf-8")  # about 1 MB, no break
    (folder / "binary.dat").write_bytes(os.urandom(4096) + b"\x00" * 100)
    (folder / "latin1.txt").write_bytes("Le traité fut signé à Moscou; la cérémonie eut lieu à l'été.".encode("latin-1"))
    (folder / "nul.txt").write_bytes(b"Text with a NUL\x00 byte in the middle.")
    (folder / "empty.txt").write_bytes(b"")
    secret = root / "secret.txt"
    secret.write_text("TOP SECRET outside the sources folder", encoding="utf-8")
    os.symlink(secret, folder / "escape link.txt")
    os.symlink("/etc/passwd", folder / "passwd.txt")
    (folder / "utf16.txt").write_bytes(b"\xff\xfeA")  # a byte-order mark, then half a code unit
    os.symlink("loop.txt", folder / "loop.txt")
    # A declared codec that is no character encoding (it would make lone surrogates) is not used.
    (folder / "escape.txt").write_bytes(b'<meta charset="unicode_escape">caf\xe9 \\ud800 in M\xe9rida')
    (folder / "ünïcödé näme.txt").write_text("A file whose name has accents: Mérida hosts the summit.", encoding="utf-8")
    return folder


def test_hostile_sources_build_finishes_and_reports_each_bad_file_once(tmp_path):
    folder = _hostile_folder(tmp_path)
    index_dir = tmp_path / "index"
    result = subprocess.run([QA, "index", "--sources", str(folder), "--index", str(index_dir)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    for name, reason in [("huge.txt", "limit"), ("binary.dat", "binary"), ("nul.txt", "NUL"), ("empty.txt", "empty"),
                         ("escape link.txt", "outside"), ("passwd.txt", "outside"), ("latin1.txt", "not UTF-8"),
                         ("utf16.txt", "UTF-16"), ("loop.txt", "loop"), ("escape.txt", "detected")]:
        matching = [w for w in warnings if f" {name}:" in w]
        assert len(matching) == 1 and reason in matching[0], (name, warnings)
    assert len(warnings) == 10

    index = load_index(Settings.from_env({"index_dir": index_dir}))
    assert set(index.sources) == {"good article", "html", "one line", "latin1", "ünïcödé näme", "escape"}
    everything = " ".join(s.text for s in index.sources.values())
    assert "TOP SECRET" not in everything and "root:" not in everything
    assert "traité" in index.sources["latin1"].text
    for chunk in index.chunks:
        assert index.sources[chunk.source_id].text[chunk.start : chunk.end] == chunk.text

    with Server(index_dir) as server:
        listed = {s["id"] for s in requests.get(server.base + "/api/sources", timeout=10).json()["sources"]}
        assert listed == set(index.sources)
        unicode_id = requests.get(server.base + "/api/sources/ünïcödé näme", timeout=10)
        assert unicode_id.status_code == 200 and "Mérida" in unicode_id.json()["text"]
        for probe in ["escape link", "passwd", "../secret", "..%2Fsecret.txt", "%2e%2e%2fsecret", "/etc/passwd", "secret.txt"]:
            response = requests.get(server.base + "/api/sources/" + probe, timeout=10)
            assert response.status_code == 404 and "TOP SECRET" not in response.text
        html = requests.get(server.base + "/?q=When did the Caracas bridge reopen?", timeout=30).text
        assert "&lt;script&gt;" in html and "<script>alert" not in html


def test_limits_on_headers_and_a_slow_client_does_not_block(live_server):
    huge = requests.get(live_server.base + "/api/health", headers={"X-Big": "x" * 20_000}, timeout=10)
    assert huge.status_code in (400, 431)
    many = requests.get(live_server.base + "/api/health", headers={f"X-H{i}": "v" for i in range(150)}, timeout=10)
    assert many.status_code in (400, 431)
    body = requests.post(live_server.base + "/api/ask", data=b"{" + b" " * 70_000 + b"}", timeout=10,
                         headers={"Content-Type": "application/json"})
    assert body.status_code == 413 and body.json()["error"]["code"] == "payload_too_large"

    slow = socket.create_connection(("127.0.0.1", live_server.port))
    slow.sendall(b"POST /api/ask HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"question\": ")
    try:
        started = time.monotonic()
        for _ in range(5):
            ok = requests.get(live_server.base + "/api/ask", params={"q": "Who presented the bill?"}, timeout=10)
            assert ok.status_code == 200
        assert time.monotonic() - started < 10
    finally:
        slow.close()
    assert requests.get(live_server.base + "/api/health", timeout=10).status_code == 200


def test_an_empty_sources_folder_builds_an_empty_index_the_server_explains(tmp_path, embedder):
    folder, index_dir = tmp_path / "sources", tmp_path / "index"
    (folder / "only" / "nested").mkdir(parents=True)
    (folder / "only" / "nested" / "blank.txt").write_bytes(b"  \n")
    report = IndexBuilder(Settings.from_env({"sources_dir": folder, "index_dir": index_dir}), embedder=embedder).run()
    assert report.sources == 0 and "empty" in report.summary() and report.problems[0].file_name == "only/nested/blank.txt"
    with Server(index_dir) as server:
        health = requests.get(server.base + "/api/health", timeout=10)
        assert health.status_code == 503 and "no readable document in" in health.json()["error"]
        ask = requests.post(server.base + "/api/ask", json={"question": "treaty"}, timeout=10)
        assert ask.status_code == 503 and "1 file(s) could not be read" in ask.json()["error"]["message"]


def test_server_starts_on_a_damaged_or_empty_index_and_says_how_to_fix(seed_index, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with Server(empty) as server:
        health = requests.get(server.base + "/api/health", timeout=10)
        assert health.status_code == 503 and "qa index" in health.json()["error"]
        ask = requests.post(server.base + "/api/ask", json={"question": "treaty"}, timeout=10)
        assert ask.status_code == 503 and ask.json()["error"]["code"] == "index_unavailable"

    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-r", str(seed_index.index_dir), str(damaged)], check=True)
    version_dir = damaged / "versions" / current_version(damaged)
    (version_dir / "chunk_vectors.npy").write_bytes(b"garbage")
    with Server(damaged) as server:
        health = requests.get(server.base + "/api/health", timeout=10)
        assert health.status_code == 503 and "qa index --full" in health.json()["error"]
        ask = requests.get(server.base + "/api/ask", params={"q": "treaty"}, timeout=10)
        assert ask.status_code == 503 and "qa index --full" in ask.json()["error"]["message"]

