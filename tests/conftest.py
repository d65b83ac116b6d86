"""Shared fixtures: one real index of the seeds per test session, a real model, free ports."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QA = str(Path(sys.executable).with_name("qa"))
CHROMA = str(Path(sys.executable).with_name("chroma"))


@pytest.fixture(scope="session")
def embedder():
    from qa.config import Settings
    from qa.embedding import Embedder

    return Embedder.for_settings(Settings.from_env())


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory, embedder):
    """Settings of a freshly built index of the seed articles (built once, read by many tests)."""
    from qa.config import Settings
    from qa.indexing import IndexBuilder

    index_dir = tmp_path_factory.mktemp("index")
    settings = Settings.from_env({"sources_dir": SEEDS, "index_dir": index_dir})
    IndexBuilder(settings, embedder=embedder).run()
    return settings


@pytest.fixture(scope="session")
def service(seed_index, embedder):
    from qa.service import QAService

    return QAService(seed_index, embedder=embedder)


@pytest.fixture()
def client(seed_index, service):
    from qa.app import create_app

    app = create_app({"index_dir": seed_index.index_dir, "sources_dir": seed_index.sources_dir}, service=service)
    return app.test_client()


@pytest.fixture()
def sources_copy(tmp_path):
    """A writable copy of the seeds, for tests that edit sources."""
    folder = tmp_path / "sources"
    shutil.copytree(SEEDS, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Server:
    """`qa serve` in a subprocess on a free loopback port; stopped on exit."""

    def __init__(self, index_dir: Path, workers: int = 1, threads: int = 8, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args = [QA, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--index", str(index_dir),
                     "--workers", str(workers), "--threads", str(threads)]
        self.env = {**os.environ, **(env or {})}

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(self.base + "/api/health", self.process)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def live_server(seed_index):
    with Server(seed_index.index_dir) as server:
        yield server


@pytest.fixture(scope="session")
def api_schema(live_server):
    import schemathesis

    return schemathesis.openapi.from_url(live_server.base + "/api/openapi.json")


class ChromaServer:
    """`chroma run` on a free loopback port; can be killed and started again on the same port and data."""

    def __init__(self, path: Path):
        self.path, self.port = path, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([CHROMA, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/api/v2/heartbeat", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the Chroma server did not start")
            time.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        self.process.kill() if kill else self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture()
def chroma_server(tmp_path):
    server = ChromaServer(tmp_path / "chroma")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def small_collection(folder: Path, reports: dict, embedder):
    """Settings of an index built from one-line reports `{name: (outlet, published or None, text)}`,
    their outlet and date in `sources.toml`, the index beside the folder."""
    from qa.config import Settings
    from qa.indexing import IndexBuilder

    toml = []
    for name, (outlet, published, text) in reports.items():
        (folder / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        toml.append(f'[{name}]\noutlet = "{outlet}"\n' + (f'published = "{published}"\n' if published else ""))
    (folder / "sources.toml").write_text("\n".join(toml), encoding="utf-8")
    settings = Settings.from_env({"sources_dir": folder, "index_dir": folder.parent / f"{folder.name}-index"})
    IndexBuilder(settings, embedder=embedder).run()
    return settings


def app_client(settings, embedder):
    """A Flask test client serving `settings`' index."""
    from qa.app import create_app
    from qa.service import QAService

    return create_app({"sources_dir": settings.sources_dir, "index_dir": settings.index_dir},
                      service=QAService(settings, embedder=embedder)).test_client()


def on_chroma(index):
    """The same loaded version with its dense side queried from its Chroma store, as a version above
    `qa.exact_search.EXACT_MAX` chunks is; the store is the original's (close that one only)."""
    from dataclasses import replace

    return replace(index, exact=None, index_dir=None)
