"""The question-answering service the API, the web page and the CLI share.

Holds the embedder (loaded once) and the index version being served. Each request takes one
reference to a complete `LoadedIndex` and uses it throughout, so a rebuild that switches
versions mid-request is seen as the old or the new version, never a mix. A new version named
by `CURRENT` is loaded on the next request after it appears (hot reload, no restart).

Usage:
    >>> service = QAService(Settings.from_env())
    >>> service.ask("When did Maduro enact the treaty law?", k=5)["results"][0]["text"]
"""
from __future__ import annotations

import threading
import time

from qa.citations import cite, citation_json, source_json
from qa.config import Settings
from qa.data import Answer, Citation
from qa.embedding import Embedder, ModelError
from qa.indexing import IndexUnavailable, LoadedIndex, current_version, load_index
from qa.retrieval import Retriever
from qa.store import StoreError


RETRY_SECONDS = 10  # a version that failed to load is tried again after this (a Chroma server may be back)


class ServiceUnavailable(Exception):
    """No usable index; the message says what is wrong and how to fix it."""


class QAService:
    def __init__(self, settings: Settings, embedder: Embedder | None = None, retriever: Retriever | None = None):
        self.settings = settings
        self.embedder = embedder or Embedder(settings.model_path)
        self.retriever = retriever or Retriever(self.embedder)
        self._index: LoadedIndex | None = None
        self._retired: LoadedIndex | None = None  # the version replaced last; requests may still hold it
        self._error: str | None = None
        self._failed_version: str | None = None
        self._failed_at = 0.0
        self._loading = threading.Lock()

    def index(self) -> LoadedIndex:
        """The version to answer from, reloading when `CURRENT` has moved on."""
        wanted = current_version(self.settings.index_dir)
        loaded = self._index
        if loaded is not None and loaded.version == wanted:
            return loaded
        retry = wanted != self._failed_version or time.monotonic() - self._failed_at > RETRY_SECONDS
        if wanted is not None and retry:
            # One thread loads; the others keep answering from the version they have, if any.
            if self._loading.acquire(blocking=loaded is None):
                try:
                    if self._index is None or self._index.version != wanted:
                        self._load()
                finally:
                    self._loading.release()
        elif wanted is None and loaded is None:
            self._error = f"no index in {self.settings.index_dir}: run `qa index` to build it"
        if self._index is None:
            raise ServiceUnavailable(self._error or "the index is not loaded yet")
        return self._index

    def _load(self) -> None:
        try:
            loaded = load_index(self.settings)
            if not loaded.sources:  # a complete but empty build: nothing to answer from, say why
                loaded.store.close()
                raise IndexUnavailable(loaded.manifest.get("empty") or "the index is empty; add documents and run `qa index`")
            # The version two switches back can have no request left on it: release its store.
            if self._retired is not None:
                self._retired.store.close()
            self._retired, self._index = self._index, loaded
            self._error = self._failed_version = None
        except (IndexUnavailable, StoreError, ModelError) as err:
            self._failed(str(err))
        except Exception as err:  # a damaged file can fail in numpy, json or Chroma: report, keep serving
            self._failed(f"the index cannot be loaded ({type(err).__name__}: {err}); run `qa index --full`")

    def _failed(self, message: str) -> None:
        self._error = message
        self._failed_version = current_version(self.settings.index_dir)
        self._failed_at = time.monotonic()

    def health(self) -> dict:
        try:
            index = self.index()
        except ServiceUnavailable as err:
            return {"status": "unavailable", "error": str(err), "sources": 0, "chunks": 0, "index_version": None}
        status = {"status": "ok", "sources": len(index.sources), "chunks": len(index.chunks), "index_version": index.version}
        if self._error:  # a newer version failed to load; the older one still serves
            status["warning"] = self._error
        return status

    def answer(self, question: str, k: int) -> tuple[Answer, list[Citation]]:
        index = self.index()
        answer = self.retriever.run(index, question, k)
        return answer, cite(index, answer)

    def ask(self, question: str, k: int) -> dict:
        """The API's response for one question."""
        started = time.perf_counter()
        answer, citations = self.answer(question, k)
        return self.response(answer, citations, started)

    @staticmethod
    def response(answer: Answer, citations: list[Citation], started: float) -> dict:
        return {
            "question": answer.question,
            "answered": answer.answered,
            "confidence": answer.confidence,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "index_version": answer.index_version,
            "results": [citation_json(c) for c in citations],
        }

    def sources(self) -> list[dict]:
        return [source_json(s.meta) for s in self.index().sources.values()]

    def source(self, source_id: str) -> dict | None:
        source = self.index().sources.get(source_id)
        if source is None:
            return None
        return {**source_json(source.meta), "text": source.text}
