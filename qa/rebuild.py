"""Rebuilds started over HTTP (`POST /api/index`): one at a time, in a background thread.

The build shares the server's loaded model, takes the same cross-process lock as `qa index`
(so a second request, in this worker or another, gets 409 at once), and the server switches to
the new version by itself when `CURRENT` moves.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone

from qa.config import Settings
from qa.embedding import Embedder
from qa.indexing import IndexBuilder


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RebuildRunner:
    def __init__(self, settings: Settings, embedder: Embedder):
        self.builder = IndexBuilder(settings, embedder=embedder)
        self._state: dict = {"state": "idle"}
        self._guard = threading.Lock()

    def state(self) -> dict:
        with self._guard:
            return dict(self._state)

    def start(self, full: bool = False) -> dict:
        """Start a build and return its state; raises BuildBusy when one is running anywhere."""
        lock = self.builder.acquire_lock(wait=0)
        with self._guard:
            self._state = {"state": "running", "full": full, "started": _now()}
            state = dict(self._state)
        threading.Thread(target=self._run, args=(lock, full), name="qa-rebuild", daemon=True).start()
        return state

    def _run(self, lock, full: bool) -> None:
        try:
            report = self.builder.run_locked(lock, full)
        except Exception as err:  # reported through GET /api/index; the served version is untouched
            update = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
        else:
            update = {
                "state": "succeeded", "version": report.version, "summary": report.summary(),
                "added": report.added, "updated": report.updated, "removed": report.removed, "kept": report.kept,
                "problems": [f"{p.file_name}: {p.reason}" for p in report.problems],
            }
        with self._guard:
            self._state = {**self._state, **update, "finished": _now()}
