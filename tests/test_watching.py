"""Watch mode sees changes in subfolders (the real watchdog observer, no model needed)."""
import threading
import time

from qa.watching import watch_sources


def test_a_change_in_a_subfolder_triggers_one_rebuild(tmp_path):
    nested = tmp_path / "news" / "2025"
    nested.mkdir(parents=True)
    rebuilt, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=watch_sources, args=(tmp_path, rebuilt.set),
                              kwargs={"echo": lambda m: None, "settle": 0.2, "stop": stop})
    thread.start()
    try:
        time.sleep(1)  # let the observer start
        (nested / "a.md").write_text("# New\n\nA new nested document.", encoding="utf-8")
        assert rebuilt.wait(timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)
