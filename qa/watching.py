"""`qa index --watch`: rebuild when the sources folder changes, once the changes settle.

Editors and copy tools write in bursts (temp file, rename, metadata); the rebuild waits until no
event has arrived for `settle` seconds, so one save makes one build. Watching starts before the
first build, so edits made while it runs are seen; a build that fails (another build holds the
lock, a read error) is tried again after a back-off, so no change is lost until it is built.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Changes(FileSystemEventHandler):
    def __init__(self) -> None:
        self.last_event = 0.0
        self.pending = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads do not change sources
        if Path(str(event.src_path)).name.startswith("."):
            return
        self.last_event = time.monotonic()
        self.pending.set()


def watch_sources(folder: Path, rebuild: Callable[[], None], echo: Callable[[str], None] = print,
                  settle: float = 1.0, stop: threading.Event | None = None, max_backoff: float = 60.0) -> None:
    """Call `rebuild()` once at the start and after each settled burst of changes, until `stop` is set
    (or Ctrl-C). A failed `rebuild()` is called again after 2, 4, 8 ... (at most `max_backoff`) seconds."""
    stop = stop or threading.Event()
    changes = _Changes()
    observer = Observer()
    observer.schedule(changes, str(folder), recursive=True)  # sources may sit in subfolders
    observer.start()
    echo(f"watching {folder} for changes (Ctrl-C to stop)")
    changes.pending.set()  # the first build: what the folder holds now
    failures, retry_at = 0, 0.0
    try:
        while not stop.is_set():
            if not changes.pending.wait(timeout=0.5):
                continue
            now = time.monotonic()
            if now - changes.last_event < settle or now < retry_at:
                time.sleep(0.1)
                continue
            changes.pending.clear()  # an event from here on asks for another build after this one
            try:
                rebuild()
                failures = 0
            except Exception as err:  # a failed build must not end the watch, nor lose what it was to build
                failures += 1
                wait = min(2.0 ** failures, max_backoff)
                echo(f"build failed: {err}; trying again in {wait:.0f}s")
                retry_at = time.monotonic() + wait
                changes.pending.set()
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=5)
