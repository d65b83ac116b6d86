"""`qa index --watch`: rebuild when the sources folder changes, once the changes settle.

Editors and copy tools write in bursts (temp file, rename, metadata); the rebuild waits until no
event has arrived for `settle` seconds, so one save makes one build.
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
                  settle: float = 1.0, stop: threading.Event | None = None) -> None:
    """Block, calling `rebuild()` after each settled burst of changes, until `stop` is set (or Ctrl-C)."""
    stop = stop or threading.Event()
    changes = _Changes()
    observer = Observer()
    observer.schedule(changes, str(folder), recursive=True)  # sources may sit in subfolders
    observer.start()
    echo(f"watching {folder} for changes (Ctrl-C to stop)")
    try:
        while not stop.is_set():
            if not changes.pending.wait(timeout=0.5):
                continue
            if time.monotonic() - changes.last_event < settle:
                time.sleep(0.1)
                continue
            changes.pending.clear()
            try:
                rebuild()
            except Exception as err:  # a failed build must not end the watch; the next change retries
                echo(f"build failed: {err}")
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=5)
