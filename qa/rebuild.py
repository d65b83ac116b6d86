"""Rebuilds started over HTTP (`POST /api/index`): one at a time, each in its own process.

The job's state lives in the index folder (`.job.json`), so every worker reports the same job.
The worker that takes the request holds the build lock (the same one `qa index` takes, so a second
request, in this worker or another, gets 409 at once), records the job, and starts
`python -m qa.rebuild`, which inherits the lock, loads its own model, builds and records the result.
The serving workers switch to the new version by themselves when `CURRENT` moves. A build process
that dies (SIGKILL, out of memory) releases the lock with it; the job then reads as failed.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

from qa.config import Settings
from qa.embedding import Embedder
from qa.indexing import BuildBusy, IndexBuilder
from qa.versions import LOCK, current_manifest, pid_alive, write_atomic

JOB = ".job.json"
SETTINGS_VARIABLE = "QA_REBUILD_SETTINGS"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _try_lock(index_dir: Path) -> int | None:
    """An open descriptor holding the build lock (flock, as `filelock` takes it), or None when it is held."""
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_job(index_dir: Path) -> dict:
    try:
        job = json.loads((index_dir / JOB).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "idle"}
    if job.get("state") == "running":
        fd = _try_lock(index_dir)  # a running build holds the lock; free means its process ended
        if fd is not None:
            os.close(fd)
        pid = job.get("pid")
        if fd is not None or (pid is not None and not pid_alive(pid)):
            job = {**job, "state": "failed", "error": f"the build process{f' (pid {pid})' if pid else ''} ended without "
                   "finishing (killed?); the served version is unchanged"}
    return job


class RebuildRunner:
    def __init__(self, settings: Settings, embedder: Embedder):
        self.settings, self.embedder = settings, embedder

    def state(self) -> dict:
        return read_job(self.settings.index_dir)

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
        """Start a build process and return the job's state; raises BuildBusy when a build is running
        anywhere and SourcesMismatch when the server's folder is not the index's and `sources` does not confirm it."""
        settings = replace(self.settings, sources_dir=sources, sources_origin="request") if sources else self.settings
        IndexBuilder(settings, embedder=self.embedder).sources_folder()
        index_dir = settings.index_dir
        fd = _try_lock(index_dir)
        if fd is None:
            raise BuildBusy(f"another build of {index_dir} is running; try again when it has finished")
        try:
            job = {"id": secrets.token_hex(6), "state": "running", "full": full, "started": _now()}
            write_atomic(index_dir / JOB, json.dumps(job))
            overrides = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
            with (index_dir / ".job.log").open("ab") as log:
                process = subprocess.Popen(  # settings in the environment: tokens stay out of `ps`
                    [sys.executable, "-m", "qa.rebuild", "--lock-fd", str(fd)] + (["--full"] if full else []),
                    env={**os.environ, SETTINGS_VARIABLE: json.dumps(overrides)},
                    pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                )
        finally:
            os.close(fd)  # the build process holds the lock from here on
        threading.Thread(target=process.wait, name="qa-rebuild-reaper", daemon=True).start()
        return {**job, "pid": process.pid}


class _InheritedLock:
    """The build lock as a descriptor inherited from the worker; released by closing it, after the job is recorded."""

    def release(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa.rebuild", description="one rebuild job (started by POST /api/index)")
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings.from_env(json.loads(os.environ.pop(SETTINGS_VARIABLE)))
    path = settings.index_dir / JOB
    job = {**json.loads(path.read_text(encoding="utf-8")), "pid": os.getpid()}
    write_atomic(path, json.dumps(job))
    try:
        report = IndexBuilder(settings).run_locked(_InheritedLock(), args.full)
    except Exception as err:  # recorded for GET /api/index; the served version is untouched
        update = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
    else:
        update = {
            "state": "succeeded", "version": report.version, "summary": report.summary(),
            "added": report.added, "updated": report.updated, "removed": report.removed, "kept": report.kept,
            "problems": [f"{p.file_name}: {p.reason}" for p in report.problems], "warnings": report.warnings,
        }
    write_atomic(path, json.dumps({**job, **update, "finished": _now()}))
    os.close(args.lock_fd)
    return 0 if update["state"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
