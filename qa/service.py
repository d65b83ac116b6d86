"""The question-answering service the API, the web page and the CLI share.

Holds the embedder (loaded once) and the index version being served. Each request takes one
counted reference to a complete `LoadedIndex` and uses it throughout, so a rebuild that switches
versions mid-request is seen as the old or the new version, never a mix; a replaced version is
closed (and its lease released, see `qa.versions`) when its last request ends. A new version named
by `CURRENT` is loaded by the first request after it appears (hot reload, no restart); requests
arriving meanwhile wait for that load, so none answers from a version older than `CURRENT` unless
the new one cannot be loaded, and none ever answers from a deleted version.

Usage:
    >>> service = QAService(Settings.from_env())
    >>> service.ask("When did Maduro enact the treaty law?", k=5)["results"][0]["text"]
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from qa.citations import cite, citation_json, source_json
from qa.config import Settings
from qa.corroboration import Corroborator
from qa.data import Answer, Citation
from qa.embedding import Embedder, ModelError
from qa.filters import Scope, Selection
from qa.indexing import IndexUnavailable, LoadedIndex, current_version, load_index, mirror_version
from qa.lexical import DamagedPostings
from qa.published import Follower
from qa.ranker import RankerError
from qa.recency import Sort, newest_first, prefer_recent
from qa.retrieval import Retriever
from qa.source_table import DamagedSource
from qa.store import StoreError
from qa import versions


RETRY_SECONDS = 10  # a version that failed to load is tried again after this (a Chroma server may be back)
LOAD_WAIT_SECONDS = 60  # a request waits this long for another thread's load before using what it has
FIRST_LOAD_WAIT_SECONDS = 10  # with no version loaded yet, a request waits this long for another thread's load
CLOSED_COLLECT_DELAY = 0.5  # seconds between closing a replaced version and collecting what it held
FOLD_FETCH = 2  # passages retrieved per result asked for: room for the ones folded under an earlier fact


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once (find_library runs `ldconfig -p`); None elsewhere."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def _return_freed_memory() -> None:
    """Give the heap what a copy or a replaced version freed back to the system: glibc keeps it
    otherwise (measured at 103,070 chunks: a stateless worker's private memory 498 MB without a trim
    after its copy, 338 MB with; at 1M chunks, a `qa serve` worker that followed a one-source
    rebuild held 2,781 MB without a trim after closing the old version, 2,513 MB with)."""
    if trim := _malloc_trim():
        trim(0)


def _settle_collector() -> None:
    """Put every object alive now out of the cyclic collector's reach (`gc.freeze`): a loaded
    version's objects live as long as it does, and each full collection walked them all (55-60 ms
    at 1M chunks, twice in 62 questions, waited for by the request that triggered it). Done after
    each load, after one collection, so that no garbage of the load is kept frozen; a closed version's
    own cycles are collected once it is closed (`_close`)."""
    gc.collect()
    gc.freeze()


def _collect_closed() -> None:
    """What a closed version held: its cycles (frozen with it) collected, then the heap trimmed. It
    waits for the requests that held the version to return: their frames name it when the last of
    them closes it, and what is still named then would be frozen again."""
    time.sleep(CLOSED_COLLECT_DELAY)
    gc.unfreeze()
    _settle_collector()
    _return_freed_memory()


def _close(replaced: LoadedIndex) -> None:
    """Close a version no request holds any more, and return what it held (its Chroma index, the
    largest part of a large version's memory in a worker) to the system: else the worker keeps the
    old version's memory beside the new one's. The collection and the trim run in a thread of their own, not in
    the request that closed the version: the trim (0.23-0.29 s after a 1M-chunk version) beside the
    requests, the collection holding the interpreter lock once (55-60 ms at 1M chunks)."""
    replaced.close()
    threading.Thread(target=_collect_closed, name="qa-trim", daemon=True).start()


class ServiceUnavailable(Exception):
    """No usable index; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Asked:
    """One question answered: the retrieval result, its citations, and the filter's selection (None: no filter)."""

    answer: Answer
    citations: list[Citation]
    selection: Selection | None = None


class QAService:
    def __init__(self, settings: Settings, embedder: Embedder | None = None, retriever: Retriever | None = None):
        # A stateless worker (QA_CHROMA_INDEX) serves the published index from its copy in its own folder.
        self.follower = Follower(settings) if settings.chroma_index else None
        if self.follower:
            settings = replace(settings, index_dir=self.follower.folder)
        self.settings = settings
        self.embedder = embedder or Embedder.for_settings(settings)
        self.retriever = retriever or Retriever(self.embedder)
        self.corroborator = Corroborator()
        self._index: LoadedIndex | None = None
        self._retired: dict[str, LoadedIndex] = {}  # replaced versions requests still hold
        self._users: dict[str, int] = {}  # version -> requests holding it
        self._guard = threading.Lock()  # over _index, _retired and _users together
        self._error: str | None = None
        self._follow_error: str | None = None  # a stateless worker's: why the server could not say what to serve
        self._failed_version: str | None = None
        self._failed_at = 0.0
        self._loading = threading.Lock()

    def index(self) -> LoadedIndex:
        """The version to answer from: the one `CURRENT` names, loaded first if it has moved on. If it
        cannot be loaded, the version in memory answers while it still exists; a deleted one never does."""
        index_dir = self.settings.index_dir
        wanted = self._wanted()
        loaded = self._index
        if loaded is not None and (loaded.version == wanted or wanted is None):
            return loaded
        # One thread loads; the others wait here, then find it loaded (a request after a rebuild answers
        # from it). With none loaded yet they wait less: a stateless worker's first copy of a large
        # index takes minutes, and meanwhile they answer 503 "loading".
        wait = FIRST_LOAD_WAIT_SECONDS if loaded is None else LOAD_WAIT_SECONDS
        if wanted is not None and not self._recently_failed(wanted) and self._loading.acquire(timeout=wait):
            try:
                if self._index is None or (self._index.version != wanted and not self._recently_failed(wanted)):
                    self._load()
            finally:
                self._loading.release()
        index = self._index
        if index is None and self._error is None and wanted is not None and self._loading.locked():
            raise ServiceUnavailable(f"index version {wanted} is loading; try again in a moment")
        if index is None:
            raise ServiceUnavailable(self._error or f"no index in {index_dir}: run `qa index` to build it")
        if index.version != wanted and not self._still_there(index.version):
            raise ServiceUnavailable(f"index version {index.version} has been deleted and version {wanted} "
                                     f"is not loaded: {self._error or 'it is loading; try again'}")
        return index

    def _still_there(self, version: str) -> bool:
        """Whether a version this process serves still exists: its folder and, for a stateless worker,
        its records on the Chroma server (which a clean-up deletes once no live lease names it)."""
        if not versions.exists(self.settings.index_dir, version):
            return False
        try:
            return self.follower is None or self.follower.publication.has_version(version)
        except StoreError:
            return False

    def _wanted(self) -> str | None:
        """The version to serve: the one `CURRENT` names or, for a stateless worker, the one the Chroma server does."""
        if self.follower is None:
            return current_version(self.settings.index_dir)
        try:
            wanted = self.follower.wanted()
            unpublished = f"no version of index {self.settings.chroma_index} is published on {self.settings.chroma_url} yet"
        except StoreError as err:  # the copy it has answers if it can (above EXACT_MAX chunks its dense
            # side needs the server: else a 503)
            wanted, unpublished = current_version(self.settings.index_dir), str(err)
            self._error = self._follow_error = unpublished
            return wanted
        if wanted is None:
            self._error = self._follow_error = unpublished
        elif self._error is not None and self._error == self._follow_error:  # the server answers again
            self._error = self._follow_error = None
        return wanted

    def _recently_failed(self, version: str) -> bool:
        return version == self._failed_version and time.monotonic() - self._failed_at < RETRY_SECONDS

    def _load(self) -> None:
        if self.follower is None:
            return self._load_local()
        try:
            published = self.follower.pin()  # named in this process's lease on the server while it is copied and loaded
        except StoreError as err:
            return self._failed(current_version(self.settings.index_dir) or "", str(err))
        if published is None:
            return
        try:
            mirror_version(self.settings, self.follower.publication, published)
            _return_freed_memory()
        except (IndexUnavailable, StoreError) as err:
            return self._failed(published, str(err))
        except Exception as err:  # a damaged payload can fail in numpy or json: report, keep serving
            return self._failed(published, f"index version {published} cannot be copied from the Chroma server "
                                           f"({type(err).__name__}: {err}); {versions.FULL_REBUILD_HINT} on the build machine")
        else:
            self._load_local()  # the copy's CURRENT: this version, or a newer one another process copied
            try:
                self.follower.beat()  # the lease names what is now loaded, before the pin goes
            except StoreError:
                pass  # the heartbeat tries again
        finally:
            self.follower.release(published)

    def _load_local(self) -> None:
        index_dir = self.settings.index_dir
        version = versions.pin(index_dir)  # held while loading, so no clean-up deletes it under us
        if version is None:
            self._error = f"no index in {index_dir}: run `qa index` to build it"
            return
        try:
            # With nothing loaded yet, a large version answers (scanning exactly) while Chroma opens its store;
            # a switch waits for it: a store that cannot open never replaces one that answers.
            loaded = load_index(self.settings, version, store_in_background=self._index is None)
            if not loaded.sources:  # a complete but empty build: nothing to answer from, say why
                loaded.close()
                raise IndexUnavailable(loaded.manifest.get("empty") or "the index is empty; add documents and run `qa index`")
        except (IndexUnavailable, StoreError, ModelError) as err:
            return self._failed(version, str(err))
        except Exception as err:  # a damaged file can fail in numpy, json or Chroma: report, keep serving
            return self._failed(version, f"the index cannot be loaded ({type(err).__name__}: {err}); run `qa index --full`")
        finally:
            versions.release(index_dir, version)
        with self._guard:
            replaced, self._index = self._index, loaded
            self._error = self._failed_version = None
            if replaced is not None and self._users.get(replaced.version):
                self._retired[replaced.version], replaced = replaced, None  # closed by its last request
        _settle_collector()
        if replaced is not None:
            _close(replaced)

    def _failed(self, version: str, message: str) -> None:
        self._error = message
        self._failed_version = version
        self._failed_at = time.monotonic()

    @contextmanager
    def holding(self) -> Iterator[LoadedIndex]:
        """The version to answer from, kept open (store and lease) until the block ends."""
        for _ in range(5):
            index = self.index()
            with self._guard:
                if index is self._index:  # not replaced since: counting it now keeps it open
                    self._users[index.version] = self._users.get(index.version, 0) + 1
                    break
        else:
            raise ServiceUnavailable("the index is switching versions faster than it can be loaded; try again")
        try:
            yield index
        finally:
            with self._guard:
                self._users[index.version] -= 1
                closing = None if self._users[index.version] else self._retired.pop(index.version, None)
                if not self._users[index.version]:
                    del self._users[index.version]
            if closing is not None:
                _close(closing)

    def health(self) -> dict:
        try:
            index = self.index()
        except ServiceUnavailable as err:
            return {"status": "unavailable", "error": str(err), "sources": 0, "chunks": 0, "index_version": None}
        failed = index.opening.exception() if index.store_opened else None
        if failed is not None:  # its store failed to open in the background: every question fails, say so
            return {"status": "unavailable", "error": str(failed), "sources": 0, "chunks": 0, "index_version": index.version}
        status = {"status": "ok", "sources": len(index.sources), "chunks": len(index.chunks), "index_version": index.version}
        if self._error:  # a newer version failed to load; the older one still serves
            status["warning"] = self._error
        elif self.settings.index_dir.resolve() in versions.lease_errors:
            status["warning"] = versions.lease_errors[self.settings.index_dir.resolve()]
        return status

    def answer(self, question: str, k: int, scope: Scope = Scope(), sort: Sort = "relevance") -> Asked:
        """Raises FilterError when the filter names ids or outlets this index version does not hold."""
        with self.holding() as index:
            selection = scope.select(index.sources.metas) if scope.active else None
            # The Chroma server down, the model file unusable, a source not where the index says: a 503 saying so.
            try:  # twice k, so that k distinct facts remain once repeats are folded
                answer = self.retriever.run(index, question, FOLD_FETCH * k, scope=selection)
                answer = self.corroborator.run(index, prefer_recent(index, answer), k)
                if sort == "newest":
                    answer = newest_first(index, answer)
                return Asked(answer, cite(index, answer), selection)
            except (StoreError, RankerError, DamagedSource, DamagedPostings) as err:  # also a store that failed to open in the background
                raise ServiceUnavailable(str(err)) from err

    def ask(self, question: str, k: int, scope: Scope = Scope(), sort: Sort = "relevance") -> dict:
        """The API's response for one question."""
        started = time.perf_counter()
        return self.response(self.answer(question, k, scope, sort), started)

    @staticmethod
    def response(asked: Asked, started: float) -> dict:
        answer, selection = asked.answer, asked.selection
        return {
            "question": answer.question,
            "answered": answer.answered,
            "confidence": answer.confidence,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "index_version": answer.index_version,
            # What a filter left in (null without one), and the sources a date filter dropped for stating no date.
            "scope": None if selection is None else {"sources": len(selection.ids), "undated_excluded": selection.undated_excluded},
            "results": [citation_json(c) for c in asked.citations],
        }

    def sources(self) -> list[dict]:
        return [source_json(meta) for meta in self.index().sources.metas.values()]

    def source(self, source_id: str) -> dict | None:
        source = self.index().sources.get(source_id)
        if source is None:
            return None
        return {**source_json(source.meta), "text": source.text}
