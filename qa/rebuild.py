"""Rebuilds started over HTTP (`POST /api/index`): one at a time, in a background thread.

The build shares the server's loaded model, takes the same cross-process lock as `qa index`
(so a second request, in this worker or another, gets 409 at once), and the server switches to
the new version by itself when `CURRENT` moves.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from qa.config import Settings
from qa.embedding import Embedder
from qa.indexing import IndexBuilder
from qa.versions import current_manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RebuildRunner:
    def __init__(self, settings: Settings, embedder: Embedder):
        self.settings, self.embedder = settings, embedder
        self.builder = IndexBuilder(settings, embedder=embedder)
        self._state: dict = {"state": "idle"}
        self._guard = threading.Lock()

    def state(self) -> dict:
        with self._guard:
            return dict(self._state)

    def allowed_sources(self, named: str | None) -> Path | None:
        """A folder a request names: only the server's own (`qa serve --sources`, QA_SOURCES) or the
        index's, so the admin token confirms a switch but cannot make the server read any folder."""
        if not named:
            return None
        allowed = {self.settings.sources_dir.resolve()}
        remembered = current_manifest(self.settings.index_dir).get("sources_dir")
        allowed |= {Path(remembered)} if remembered else set()
        if Path(named).resolve() not in allowed:
            raise ValueError(f"a request may name only the server's sources folder or the index's: {', '.join(sorted(map(str, allowed)))}")
        return Path(named).resolve()

    def start(self, full: bool = False, sources: Path | None = None) -> dict:
        """Start a build and return its state; raises BuildBusy when one is running anywhere and
        SourcesMismatch when the server's folder is not the index's and `sources` does not confirm it."""
        settings = replace(self.settings, sources_dir=sources, sources_origin="request") if sources else self.settings
        self.builder = IndexBuilder(settings, embedder=self.embedder)
        self.builder.sources_folder()
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
