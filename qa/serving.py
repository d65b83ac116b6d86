"""Run the app under gunicorn (gthread workers) from Python, so `qa serve` needs no extra config."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, replace

from gunicorn.app.base import BaseApplication

from qa.config import Settings

TIMEOUT = 120  # gunicorn restarts a worker silent for this long (seconds)
LOAD_JOIN_SECONDS = 60  # a worker starts answering after this even if its index is still loading


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict):
        self.settings, self.options = settings, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from qa.app import create_app

        app = create_app({k: v for k, v in asdict(self.settings).items()})
        # Load the model and the index before the first request, not during it, side by side: much of
        # each (reading files, ONNX Runtime's and Chroma's native set-up) runs outside the GIL. A load
        # still running after LOAD_JOIN_SECONDS (a stateless worker's first copy of a large index)
        # goes on while the worker answers 503 "loading": gunicorn stops a worker silent for TIMEOUT.
        service = app.extensions["qa"]
        started = time.monotonic()
        index = threading.Thread(target=service.health, name="qa-load-index", daemon=True)
        index.start()
        service.embedder.encode_questions(["warm up"])  # a worker encodes questions only
        index.join(timeout=max(0.0, LOAD_JOIN_SECONDS - (time.monotonic() - started)))
        return app


def worker_encoder_threads(workers: int) -> int:
    """Each worker's share of the cores this process may run on: N workers whose encoders each take
    every core queue for them (measured on 2 cores, 2 workers, 8 clients: 144–156 → 164–168 questions/s)."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def serve(settings: Settings, host: str, port: int, workers: int = 1, threads: int = 8) -> None:
    if workers > 1 and not settings.encoder_threads:
        settings = replace(settings, encoder_threads=worker_encoder_threads(workers))
    _Gunicorn(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": TIMEOUT,
            "graceful_timeout": 10,
            "limit_request_line": 8190,
            "limit_request_fields": 100,
            "limit_request_field_size": 8190,
            "accesslog": "-",
            "errorlog": "-",
        },
    ).run()
