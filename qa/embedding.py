"""Sentence embeddings, loaded from local files only, on one of four runtimes (`QA_BACKEND`):

- `torch`: sentence-transformers on PyTorch, on the CPU or a CUDA GPU (`QA_DEVICE`; fp16 and larger
  batches on a GPU);
- `onnx`: the same model exported to ONNX Runtime (`qa.onnx_encoder`), CPU only: the same vectors
  (cosine ≥ 0.99 to PyTorch's, checked at export; 1.0000 measured), faster per question, no torch
  import to answer;
- `onnx-w8` (the default): passages on that export, questions on its 8-bit-weight variant, which
  encodes a short question faster (a question's encode waits on reading the weights) at cosine ≥ 0.998
  to PyTorch's: `qa eval --all` moved by at most 0.0088 against `onnx` (README, Encoder runtimes);
- `onnx-int8`: the export with int8 weights: vectors at cosine 0.97–0.995 to PyTorch's, not the same.

Vectors are L2-normalised float32, so a dot product is the cosine similarity. `space` names which
vectors may be compared with which: torch, onnx and onnx-w8 share one, so an index embedded with
any of them is queried with any; onnx-int8 has its own, and an index is refused by a server of another space.

Usage:
    >>> embedder = Embedder.for_settings(settings)
    >>> embedder.encode(["The treaty was signed in Moscow."]).shape     # passages
    (1, 384)
    >>> embedder.encode_question("When was the treaty signed?").shape    # a question
    (384,)
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

from qa.config import DEFAULT_CACHE_DIR


# Backends whose vectors are interchangeable share a space (recorded in each index's manifest).
SPACES = {"torch": "fp32", "onnx": "fp32", "onnx-w8": "fp32", "onnx-int8": "int8"}
# The ONNX export (`qa.onnx_encoder`) each backend encodes passages and questions with.
EXPORTS = {"onnx": ("fp32", "fp32"), "onnx-w8": ("fp32", "w8"), "onnx-int8": ("int8", "int8")}
GPU_BATCH = 256  # a GPU is idle between small batches; the CPU gains nothing above 64


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
    backend: str = "torch"
    device: str = "auto"  # resolved on load: "auto" becomes "cuda" or "cpu"
    cache_dir: Path = DEFAULT_CACHE_DIR  # where ONNX exports live
    batch_size: int = 64
    max_batch: int = 32
    threads: int = 0  # the runtime's threads in this process; 0: its default (one per core)
    _model: object = field(default=None, init=False, repr=False)
    _question_model: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _questions: queue.SimpleQueue | None = field(default=None, init=False, repr=False)
    _batcher_pid: int = field(default=0, init=False, repr=False)

    @classmethod
    def for_settings(cls, settings) -> "Embedder":
        return cls(settings.model_path, backend=settings.backend, device=settings.device, cache_dir=settings.cache_dir,
                   threads=settings.encoder_threads)

    @property
    def space(self) -> str:
        return SPACES[self.backend]

    @property
    def model(self):
        """What encodes passages: a SentenceTransformer (torch) or an OnnxEncoder. Loaded on first use:
        importing torch and reading weights is most of a cold start."""
        with self._lock:
            if self._model is None:
                self._model = self._load(EXPORTS[self.backend][0] if self.backend in EXPORTS else None)
            return self._model

    @property
    def question_model(self):
        """What encodes questions: the passages' model, except where the backend names another export
        (a worker that only answers loads this one alone)."""
        if not self._questions_apart:
            return self.model
        with self._lock:
            if self._question_model is None:
                self._question_model = self._load(EXPORTS[self.backend][1])
            return self._question_model

    @property
    def _questions_apart(self) -> bool:
        return self.backend in EXPORTS and EXPORTS[self.backend][0] != EXPORTS[self.backend][1]

    def _load(self, weights: str | None):
        """The torch model (`weights` None) or the ONNX export with these weights."""
        fingerprint = model_fingerprint(self.model_path)  # a clear error for a missing folder
        try:
            return self._load_torch() if weights is None else self._load_onnx(fingerprint, weights)
        except (OSError, ValueError, RuntimeError, ImportError) as err:
            raise ModelError(f"cannot load the embedding model from {self.model_path} ({self.backend}): {err}") from err

    def _load_torch(self):
        import torch
        from sentence_transformers import SentenceTransformer

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.threads:
            torch.set_num_threads(self.threads)
        model = SentenceTransformer(self.model_path, device=self.device, local_files_only=True)
        if self.device == "cuda":  # half the memory traffic; cosines move by < 1e-3
            model.half()
            self.batch_size = max(self.batch_size, GPU_BATCH)
        return model

    def _load_onnx(self, fingerprint: str, weights: str):
        from qa.onnx_encoder import OnnxEncoder, OnnxExportError

        self.device = "cpu"
        # fp32 keeps the folder name it had before the variants: exports already made stay in use.
        folder = {w: Path(self.cache_dir) / "onnx" / f"{fingerprint}-{variant}"
                  for w, variant in (("fp32", "onnx"), ("int8", "onnx-int8"), ("w8", "onnx-w8"))}
        try:
            return OnnxEncoder.load(self.model_path, folder[weights], weights, threads=self.threads, fp32_folder=folder["fp32"])
        except OnnxExportError as err:
            raise ModelError(str(err)) from err

    @property
    def dimension(self) -> int:
        model = self.model
        return int(getattr(model, "dimension", None) or model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self.model
        if self.backend != "torch":
            return model.encode(texts, self.batch_size)
        vectors = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def encode_questions(self, texts: list[str]) -> np.ndarray:
        """Questions' vectors, in one call: `encode` on the backend's question model."""
        if not self._questions_apart:
            return self.encode(texts)
        if not texts:
            return np.zeros((0, self.question_model.dimension), dtype=np.float32)
        return self.question_model.encode(texts, self.batch_size)

    def encode_question(self, text: str) -> np.ndarray:
        """One question's vector. Questions asked at the same moment from several threads are encoded
        together in one model call: under load the model runs at its batch rate instead of once per
        request, and a question asked alone still goes straight through."""
        with self._lock:
            if self._questions is None or self._batcher_pid != os.getpid():  # a forked worker starts its own
                self._questions = queue.SimpleQueue()
                self._batcher_pid = os.getpid()
                threading.Thread(target=self._batch_questions, args=(self._questions,), name="qa-encoder", daemon=True).start()
        # A lock held until the encoder releases it: a cheaper hand-over than an Event's condition.
        done = threading.Lock()
        done.acquire()
        slot: dict = {"text": text, "done": done}
        self._questions.put(slot)
        done.acquire()
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
                vectors = self.encode_questions([slot["text"] for slot in batch])
            except Exception as err:  # handed to every waiting caller; the thread lives on
                for slot in batch:
                    slot["error"] = err
                    slot["done"].release()
                continue
            for slot, vector in zip(batch, vectors):
                slot["vector"] = vector
                slot["done"].release()
