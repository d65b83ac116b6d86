"""Sentence embeddings with sentence-transformers, loaded from local files only.

Vectors are L2-normalised float32, so a dot product is the cosine similarity.

Usage:
    >>> embedder = Embedder("/path/to/all-MiniLM-L6-v2")
    >>> embedder.encode(["When was the treaty signed?"]).shape
    (1, 384)
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from functools import cache
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class ModelError(Exception):
    """The embedding model could not be loaded; the message names the path and the cause."""


@cache
def model_fingerprint(model_path: str) -> str:
    """Identifies the model files cheaply (names, sizes, head of each), so an index built with
    another model is refused instead of silently compared in an incompatible vector space."""
    root = Path(model_path)
    if not root.is_dir():
        raise ModelError(f"model folder {model_path} does not exist (set QA_MODEL_PATH to a sentence-transformers folder)")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}:{path.stat().st_size}".encode())
        with path.open("rb") as f:
            digest.update(f.read(65536))
    return digest.hexdigest()[:16]


@dataclass
class Embedder:
    model_path: str
    batch_size: int = 64
    max_batch: int = 32
    _model: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _questions: queue.SimpleQueue | None = field(default=None, init=False, repr=False)
    _batcher_pid: int = field(default=0, init=False, repr=False)

    @property
    def model(self):
        # Loaded on first use: importing torch and reading weights is most of a cold start.
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                model_fingerprint(self.model_path)  # a clear error for a missing folder
                try:
                    self._model = SentenceTransformer(self.model_path, device="cpu", local_files_only=True)
                except (OSError, ValueError) as err:
                    raise ModelError(f"cannot load the embedding model from {self.model_path}: {err}") from err
            return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_question(self, text: str) -> np.ndarray:
        """One question's vector. Questions asked at the same moment from several threads are encoded
        together in one model call: under load the model runs at its batch rate instead of once per
        request, and a question asked alone still goes straight through."""
        with self._lock:
            if self._questions is None or self._batcher_pid != os.getpid():  # a forked worker starts its own
                self._questions = queue.SimpleQueue()
                self._batcher_pid = os.getpid()
                threading.Thread(target=self._batch_questions, args=(self._questions,), name="qa-encoder", daemon=True).start()
        slot: dict = {"text": text, "done": threading.Event()}
        self._questions.put(slot)
        slot["done"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["vector"]

    def _batch_questions(self, questions: queue.SimpleQueue) -> None:
        while True:
            batch = [questions.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(questions.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self.encode([slot["text"] for slot in batch])
            except Exception as err:  # handed to every waiting caller; the thread lives on
                for slot in batch:
                    slot["error"] = err
                    slot["done"].set()
                continue
            for slot, vector in zip(batch, vectors):
                slot["vector"] = vector
                slot["done"].set()
