"""Build and load the index: chunks, sentence vectors, the vector store and BM25.

A version folder holds manifest.json (last written, checksummed), sources.jsonl and chunks.jsonl
(one line per source, per chunk), one `.npy` per array (sentence and chunk vectors as float16,
sentence spans, each chunk's sentence rows, each chunk's BM25 term counts), terms.json, the
readings ranking needs of each sentence and chunk context (`qa.readings`), bm25/ and chroma/
(embedded store); the layout around it (CURRENT, leases, the switch, clean-up) is `qa.versions`. A loaded
version reads the rows, texts, readings and BM25 postings a request touches with `pread`
(`qa.file_reads`): every worker reads them from the one page cache, and none stays in its memory.

A build costs what changed. A file whose size, mtime and ctime match what the previous version
recorded is not read (`qa.sources`); a re-read file of the same content hash and cleaned text is
not embedded. The previous version is not loaded: its files were checksummed when it was published
and are checked again, then each kept source's rows are copied from its memory-mapped arrays and
its lines from its .jsonl files, found from the per-source counts in its manifest; BM25 is scored
anew from the stored term counts (IDF is collection-wide), only new chunks are analysed. It writes a
new version and switches `CURRENT` only when that version is complete, so a build killed at any
moment leaves the previous one serving.

Usage:
    >>> report = IndexBuilder(settings).run()
    >>> index = load_index(settings)
"""
from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import threading
import time
from concurrent.futures import Future
from contextlib import closing, contextmanager
from dataclasses import asdict, astuple, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from qa.chunk_table import ChunkTable
from qa.chunking import ENCODING, SentenceChunker
from qa.config import Settings, SettingsError
from qa.data import Chunk, FileRecord, Kept, Problem, Source, SourceMeta
from qa.embedding import SPACES, Embedder, ModelError, model_fingerprint
from qa.exact_search import ExactSearch
from qa.file_reads import NpyRows
from qa.analysis import TermCounts, analysis_fingerprint
from qa.lexical import LexicalIndex, scoring_fingerprint
from qa.published import Publication, decode_payload, encode_payload
from qa import readings
from qa.stored_readings import StoredReadings
from qa.source_table import SourceTable, source_from_line
from qa.store import StoreError, VectorStore
from qa.versions import (  # noqa: F401  (re-exported: callers import the layout's names from here)
    CURRENT, FULL_REBUILD_HINT, LOCK, VERSIONS, IndexUnavailable, current_version, read_manifest,
)
from qa import versions

FORMAT = 5  # bump when cleaning, chunking or the layout changes meaning, so old versions are rebuilt


class BuildBusy(Exception):
    """Another build holds the lock."""


class BuildFailed(Exception):
    """A build stopped part-way (disk full, store error); the served version is unchanged. The message says why."""


class SourcesMismatch(Exception):
    """A build was asked for another sources folder than the index was built from, not explicitly."""


EXPLICIT_SOURCES = ("--sources", "request")  # origins (see Settings.sources_origin) that may switch folders


@dataclass(frozen=True)
class BuildReport:
    version: str
    sources: int
    chunks: int
    embedded_chunks: int
    embedded_sentences: int
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    embedding_seconds: float = 0.0  # of `seconds`, in the model (loading it and encoding): what the rest is measured beside
    full_reason: str | None = None  # why an incremental build became a full one
    up_to_date: bool = False  # nothing changed, no new version was written
    warnings: list[str] = field(default_factory=list)  # e.g. an old version that could not be deleted yet
    published: str | None = None  # on a Chroma server: the name stateless workers serve it by (QA_CHROMA_INDEX)

    def summary(self) -> str:
        published = f"; published as index {self.published} (QA_CHROMA_INDEX)" if self.published else ""
        return self._summary() + published

    def _summary(self) -> str:
        if not self.sources:
            return (f"index {self.version} is empty: no readable document in the sources folder "
                    f"({len(self.problems)} problem(s) above); the server answers 503 until documents are added")
        if self.up_to_date:
            return f"index {self.version} is up to date: {self.sources} sources, {self.chunks} chunks ({self.seconds:.1f}s)"
        return (
            f"index {self.version}: {self.sources} sources, {self.chunks} chunks in {self.seconds:.1f}s, "
            f"{self.embedding_seconds:.1f}s of it embedding (added {len(self.added)}, updated {len(self.updated)}, removed {len(self.removed)}, "
            f"kept {len(self.kept)}; embedded {self.embedded_chunks} chunks)"
        )


@dataclass
class LoadedIndex:
    """One complete, verified index version in memory. Immutable once loaded: requests share it."""

    version: str
    manifest: dict  # but its per-source tables (`PER_SOURCE`: 95 MB in memory at 1M chunks); read_manifest has them
    sources: SourceTable  # a Mapping[str, Source]; each text decoded when read
    chunks: ChunkTable  # a Sequence[Chunk]; each made when read
    sentence_spans: NpyRows  # (sentences, 2): absolute offsets in their source
    sentence_vectors: NpyRows  # one row per sentence, L2-normalised, float16
    chunk_rows: NpyRows  # (chunks, 2): each chunk's [first, last) sentence rows
    chunk_vectors: NpyRows  # float16
    lexical: LexicalIndex
    opening: Future  # of its VectorStore: done, or opening in the background (`load_index`)
    exact: ExactSearch | None  # a small version's chunk vectors in memory, searched instead of `store`
    readings: StoredReadings | None  # None: stored by other code than this (`qa.readings`), read from the text
    index_dir: Path | None = None  # set: the version is held in this process's lease until close()
    position: Mapping[str, int] = field(init=False)  # chunk id -> position in `chunks`

    def __post_init__(self) -> None:
        self.position = self.chunks.positions

    @property
    def store(self) -> VectorStore:
        """The vector store, once open (waits for it). If opening it failed, a StoreError saying why:
        a new one each time, so no question's frames stay attached to a shared traceback."""
        failed = self.opening.exception()
        if failed is not None:
            raise StoreError(str(failed)) from None
        return self.opening.result()

    @property
    def store_opened(self) -> bool:
        """Whether the store has opened, or failed to: a query of it would not wait."""
        return self.opening.done()

    def close(self) -> None:
        """Release the store (once open, if it is still opening) and the lease: the version may be
        deleted once no process holds it. Its files close when the last reference to them goes (a
        request that took the index without holding it still reads what it took; Linux keeps a
        deleted file readable while it is open)."""
        index_dir, self.index_dir = self.index_dir, None

        def closed(opening: Future) -> None:  # the lease outlives an open still reading the folder
            _close_opened(opening)
            if index_dir is not None:
                versions.release(index_dir, self.version)

        self.opening.add_done_callback(closed)


def _chunking_settings(settings: Settings) -> dict:
    return {"encoding": ENCODING, "max_tokens": settings.chunk_tokens, "overlap_sentences": settings.overlap_sentences}


# float16 halves the vectors on disk and in the page cache; cosines move by < 1e-3 (eval unchanged).
VECTOR_DTYPE = np.float16
ARRAYS = ("sentence_spans", "sentence_vectors", "chunk_rows", "chunk_vectors")
TERM_ARRAYS = ("term_rows", "term_ids", "term_counts")  # each chunk's BM25 term counts (CSR), for the next build
MIRROR_LOCK_SECONDS = 600  # a stateless worker waits this long for another process copying the same version
FETCH_BATCH = 64  # payloads a stateless worker holds in memory at a time while copying
PUBLISH_BATCH = 256  # payloads uploaded per step of a build on a Chroma server
STORE_SLICE = 20_000  # chunk vectors a build hands the vector store at a time
DATA_FILES = ("sources.jsonl", "chunks.jsonl", "terms.json", *(f"{name}.npy" for name in ARRAYS + TERM_ARRAYS), *readings.FILES)
PER_SOURCE = ("sources", "source_files")  # the manifest's tables a build reads and a loaded version does not keep
# A worker's copy equals the build's in these (and in the readings when its code reads as the build's did).
COPIED_FILES = ("sources.jsonl", "chunks.jsonl", *(f"{name}.npy" for name in ARRAYS))


def _check_compatible(manifest: dict, settings: Settings, chunking: bool = True) -> None:
    """`chunking`: whether the settings' chunking must match (a stateless worker serves what was chunked)."""
    if manifest.get("format") != FORMAT:
        raise IndexUnavailable(f"the index was built in format {manifest.get('format')}, this program reads {FORMAT}; {FULL_REBUILD_HINT}")
    if manifest["model"]["space"] != SPACES[settings.backend]:
        raise IndexUnavailable(
            f"the index was embedded with QA_BACKEND={manifest['model']['backend']}, whose vectors are not "
            f"interchangeable with QA_BACKEND={settings.backend}'s; set QA_BACKEND={manifest['model']['backend']} "
            f"or {FULL_REBUILD_HINT}"
        )
    if manifest["model"]["fingerprint"] != model_fingerprint(settings.model_path):
        raise IndexUnavailable(
            f"the index was built with another embedding model ({manifest['model']['name']}, "
            f"{manifest['model']['fingerprint']}) than {settings.model_path}; {FULL_REBUILD_HINT}"
        )
    if chunking and manifest["chunking"] != _chunking_settings(settings):
        raise IndexUnavailable(
            f"the index was built with chunking {manifest['chunking']}, the settings ask for "
            f"{_chunking_settings(settings)}; {FULL_REBUILD_HINT}"
        )


def _close_opened(opening: Future) -> None:
    if opening.exception() is None:
        opening.result().close()


def load_index(settings: Settings, version: str | None = None, store_in_background: bool = False) -> LoadedIndex:
    """Load and verify `version` (default: the one `CURRENT` names), held in this process's lease
    until `close()` (or the process ends). Raises IndexUnavailable saying what is wrong and how to fix it.

    `store_in_background`: an embedded version too large to search in memory returns before its
    Chroma store has opened (its HNSW graph loads in about 3 s at 1M chunks, outside the GIL); until
    then questions scan its chunk vectors exactly, and a store that fails to open fails each
    question after (a StoreError; the version is not opened again: the next one, or a restart,
    is). For a process with nothing else to answer from (`qa serve` starting): a version switch
    waits for the store, so a damaged one never replaces a working one."""
    index_dir = settings.index_dir
    if version is None:
        version = versions.pin(index_dir)
    else:
        versions.hold(index_dir, version)
    if version is None:
        raise IndexUnavailable(f"no index in {index_dir}: run `qa index` to build it")
    try:
        version_dir = versions.version_dir(index_dir, version)
        with _collector_paused():
            manifest = read_manifest(version_dir, stamp=True)
        _check_compatible(manifest, settings, chunking=not settings.chroma_index)
        versions.verify_files(version_dir, manifest)
        return _load_version(settings, version_dir, manifest, store_in_background)
    except BaseException:
        versions.release(index_dir, version)
        raise


class _CollectorPause:
    """Python's cyclic garbage collector off while a load or a build makes its many small objects
    (the manifest's and the source table's, none in cycles): at 1M chunks its passes, repeated as they
    grew, took the manifest's parse from 0.26 to 0.57 s, and 0.10-0.20 s of a one-source rebuild at
    100k; one pass follows instead. A build leaves 192 objects in cycles, whatever its size (measured
    at 57 and 1,041 chunks). Loads in several threads may overlap: the first turns it off, the last
    back on (unless it was off before)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._enabled:
                    gc.enable()


_collector_paused = _CollectorPause()


def _source_line(source: Source) -> bytes:
    return (json.dumps(asdict(source), ensure_ascii=False) + "\n").encode("utf-8")


def _line_with_meta(line: bytes, meta: dict, stated: dict | None = None) -> bytes:
    """A sources.jsonl line with the metadata `meta` (`stated`: what the line holds, when known):
    a metadata-only change keeps the text and its offsets."""
    if stated is None:
        stated = json.loads(line)["meta"]
    return line if stated == meta else _source_line(replace(source_from_line(line), meta=SourceMeta(**meta)))


def _chunk_line(chunk: Chunk) -> bytes:
    return (json.dumps({"id": chunk.id, "source_id": chunk.source_id, "start": chunk.start, "end": chunk.end}) + "\n").encode("utf-8")


def _read_stored(line: bytes, spans: np.ndarray, chunk_rows: np.ndarray, chunk_lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A source's readings (`qa.readings`) from its stored lines and rows (chunk rows relative to its first sentence)."""
    spans = list(map(tuple, spans.tolist()))
    starts = [json.loads(chunk)["start"] for chunk in chunk_lines]
    return readings.read_source(source_from_line(line), spans, [(start, spans[lo:hi]) for start, (lo, hi) in zip(starts, chunk_rows.tolist())])


def _open_store(settings: Settings, version_dir: Path, manifest: dict, chunks: int, dimension: int) -> VectorStore:
    store = VectorStore.open(settings, version_dir, manifest, dimension)
    if store.size != chunks:
        store.close()
        raise IndexUnavailable(
            f"the vector store of version {manifest['version']} holds {store.size} chunks, "
            f"the manifest {chunks}; {FULL_REBUILD_HINT}"
        )
    return store


def _open_in_background(opening: Future, settings: Settings, version_dir: Path, manifest: dict, chunks: int, dimension: int) -> None:
    try:
        opening.set_result(_open_store(settings, version_dir, manifest, chunks, dimension))
    except (StoreError, IndexUnavailable) as err:  # each question after raises it (`LoadedIndex.store`)
        opening.set_exception(err)
    except BaseException as err:  # Chroma's own errors: a StoreError that says what failed, as a load does
        opening.set_exception(StoreError(f"the vector store of index version {manifest['version']} cannot be "
                                         f"opened ({type(err).__name__}: {err}); {FULL_REBUILD_HINT}"))


def _load_version(settings: Settings, version_dir: Path, manifest: dict, store_in_background: bool = False) -> LoadedIndex:
    # Rows read when a question asks for them: the page cache holds the files for every worker.
    arrays = {name: NpyRows(version_dir / f"{name}.npy") for name in ARRAYS}
    exact = ExactSearch.of(arrays["chunk_vectors"])
    chunk_count, dimension = len(arrays["chunk_rows"]), arrays["chunk_vectors"].shape[1]
    opening: Future = Future()
    background = store_in_background and exact is None and not settings.chroma_url
    if background:  # opens while the rest loads
        threading.Thread(target=_open_in_background, args=(opening, settings, version_dir, manifest, chunk_count, dimension),
                         name="qa-open-store", daemon=True).start()
    try:
        with _collector_paused():
            try:
                sources = SourceTable(version_dir / "sources.jsonl", manifest["sources"])
            except (ValueError, TypeError, KeyError) as err:
                raise IndexUnavailable(f"the sources of version {manifest['version']} do not match its manifest ({err}); {FULL_REBUILD_HINT}") from err
            counts = {sid: entry["chunks"] for sid, entry in manifest["sources"].items()}
            if sum(counts.values()) != chunk_count or list(counts) != list(sources):
                raise IndexUnavailable(f"the chunks of version {manifest['version']} do not match its manifest; {FULL_REBUILD_HINT}")
            chunks = ChunkTable.from_counts(sources, counts, arrays["sentence_spans"], arrays["chunk_rows"])
        if not background:
            opening.set_result(_open_store(settings, version_dir, manifest, chunk_count, dimension))
        return LoadedIndex(
            version=manifest["version"],
            manifest={key: value for key, value in manifest.items() if key not in PER_SOURCE},
            sources=sources,
            chunks=chunks,
            sentence_spans=arrays["sentence_spans"],
            sentence_vectors=arrays["sentence_vectors"],
            chunk_rows=arrays["chunk_rows"],
            chunk_vectors=arrays["chunk_vectors"],
            lexical=LexicalIndex.load(version_dir / "bm25", len(chunks)),
            opening=opening,
            exact=exact,
            readings=StoredReadings.open(version_dir, manifest),
            index_dir=settings.index_dir,
        )
    except BaseException:
        if background or opening.done():  # waits for a background open: the caller releases the lease next
            _close_opened(opening)
        raise


@dataclass
class _Planned:
    """A source chunked by this build, to be embedded."""

    source: Source
    chunks: list[Chunk]
    spans: list[tuple[int, int]]  # its distinct sentence spans, in order: its sentence rows
    chunk_rows: np.ndarray  # (chunks, 2): each chunk's [first, last) sentence rows

    def texts(self) -> list[str]:
        """What is embedded: every distinct sentence (for best-sentence ranking and the highlight),
        then every chunk (the dense retrieval unit)."""
        return [self.source.text[a:b] for a, b in self.spans] + [c.text for c in self.chunks]

    def arrays(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Its rows, given the vectors of `texts()`."""
        n = len(self.spans)
        return {"sentence_spans": np.array(self.spans, dtype=np.int64).reshape(-1, 2), "sentence_vectors": vectors[:n],
                "chunk_rows": self.chunk_rows, "chunk_vectors": vectors[n:]}


@dataclass
class _Base:
    """The version a build starts from, read where it lies: its manifest, its arrays memory-mapped,
    its .jsonl files as lines; each source's rows found from the per-source counts in its manifest."""

    version: str
    manifest: dict
    arrays: dict[str, np.ndarray]
    terms: TermCounts
    source_lines: dict[str, bytes]  # source id -> its sources.jsonl line
    chunk_lines: list[bytes]
    chunks: dict[str, tuple[int, int]]  # source id -> [start, stop) of its chunks
    sentences: dict[str, tuple[int, int]]  # source id -> [start, stop) of its sentence rows
    readings: StoredReadings | None  # None: made by other code than this, or none stored (an older build)
    counted: bool  # its term counts are of this code's analysis (else kept chunks are counted again)

    @classmethod
    def open(cls, settings: Settings, version: str, manifest: dict | None = None) -> "_Base":
        """Raises IndexUnavailable (or whatever a damaged file raises) when the version cannot be built on.
        `manifest`: the version's, if already read."""
        folder = versions.version_dir(settings.index_dir, version)
        manifest = read_manifest(folder, stamp=True) if manifest is None else manifest
        _check_compatible(manifest, settings, chunking=not settings.chroma_index)
        versions.verify_files(folder, manifest)  # at disk speed, and only files changed since last checked
        return cls.read(folder, manifest)

    @classmethod
    def read(cls, folder: Path, manifest: dict) -> "_Base":
        """The version's files as they lie, found from `manifest` (its sources' counts, in order)."""
        version = manifest["version"]
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS + TERM_ARRAYS}
        vocabulary = json.loads((folder / "terms.json").read_text(encoding="utf-8"))
        ids = list(manifest["sources"])
        chunk_ends = np.cumsum([manifest["sources"][sid]["chunks"] for sid in ids], dtype=np.int64).tolist()
        sentence_ends = np.cumsum([manifest["sources"][sid]["sentences"] for sid in ids], dtype=np.int64).tolist()
        source_lines = (folder / "sources.jsonl").read_bytes().splitlines(keepends=True)
        chunk_lines = (folder / "chunks.jsonl").read_bytes().splitlines(keepends=True)
        chunks = manifest["chunk_count"]
        found = (len(source_lines), len(chunk_lines), len(arrays["chunk_rows"]), len(arrays["term_rows"]) - 1,
                 len(arrays["sentence_spans"]), chunk_ends[-1] if ids else 0)
        if found != (len(ids), chunks, chunks, chunks, sentence_ends[-1] if ids else 0, chunks):
            raise IndexUnavailable(f"the files of version {version} do not agree with its manifest; {FULL_REBUILD_HINT}")
        return cls(
            version=version, manifest=manifest, arrays=arrays,
            terms=TermCounts(vocabulary, arrays["term_rows"], arrays["term_ids"], arrays["term_counts"]),
            source_lines=dict(zip(ids, source_lines)), chunk_lines=chunk_lines,
            chunks={sid: (end - manifest["sources"][sid]["chunks"], end) for sid, end in zip(ids, chunk_ends)},
            sentences={sid: (end - manifest["sources"][sid]["sentences"], end) for sid, end in zip(ids, sentence_ends)},
            readings=StoredReadings.open(folder, manifest), counted=manifest.get("lexical") == analysis_fingerprint(),
        )

    def read_again(self, sid: str, line: bytes) -> tuple[list[bytes], list[bytes]]:
        """A kept source's readings made anew (`line`: its sources.jsonl line, with its current metadata)."""
        (c0, c1), (s0, s1) = self.chunks[sid], self.sentences[sid]
        return _read_stored(line, self.arrays["sentence_spans"][s0:s1], self.arrays["chunk_rows"][c0:c1] - s0, self.chunk_lines[c0:c1])

    def count_again(self, c0: int, c1: int, vocabulary: dict[str, int]) -> TermCounts:
        """Chunks c0 to c1 counted by this code's analysis (their counts here are another's)."""
        texts, source_id, text = [], None, ""
        for line in self.chunk_lines[c0:c1]:
            chunk = json.loads(line)
            if chunk["source_id"] != source_id:
                source_id, text = chunk["source_id"], source_from_line(self.source_lines[chunk["source_id"]]).text
            texts.append(text[chunk["start"] : chunk["end"]])
        return TermCounts.of(texts, vocabulary)

    def payload(self, sid: str) -> str:
        """One source's rows and lines, for a Chroma server to hold for stateless workers: its readings
        too, named by the code that made them (a worker of other code makes its own)."""
        (c0, c1), (s0, s1), a = self.chunks[sid], self.sentences[sid], self.arrays
        entries = {"sentence_spans": a["sentence_spans"][s0:s1], "sentence_vectors": a["sentence_vectors"][s0:s1],
                   "chunk_rows": a["chunk_rows"][c0:c1] - s0, "chunk_vectors": a["chunk_vectors"][c0:c1],
                   "source": self.source_lines[sid], "chunks": b"".join(self.chunk_lines[c0:c1])}
        if self.readings is not None:
            entries["readings"] = readings.fingerprint().encode()
            entries[readings.SENTENCES] = self.readings.rows(readings.SENTENCES, s0, s1)
            entries[readings.CONTEXTS] = self.readings.rows(readings.CONTEXTS, c0, c1)
        if self.counted:  # its BM25 term counts, named by the analysis that made them: a worker of it needs not read the texts
            entries.update(_term_entries(self.terms.slice(c0, c1)))
        return encode_payload(entries)

    def files(self) -> dict[str, FileRecord]:
        """What this version remembers of each file it read, for the reader to skip unchanged ones."""
        return {name: FileRecord(tuple(r["stamp"]), tuple((sid, stated) for sid, stated in r["sources"]),
                                 tuple(Problem(*p) for p in r["problems"]))
                for name, r in self.manifest.get("source_files", {}).items()}

    def keeps(self, source: Source | Kept) -> bool:
        """Whether `source`'s chunks and vectors here stand: its file was not read again, or it was and
        gave the same bytes and the very text the offsets were computed on (not so if the cleaner changed)."""
        if isinstance(source, Kept):
            return True
        entry = self.manifest["sources"].get(source.id)
        return entry is not None and entry["sha256"] == source.sha256 and source_from_line(self.source_lines[source.id]).text == source.text


Run = tuple[int, int, int, int]  # chunks [lo, hi) and sentence rows [lo, hi) of the previous version


def _extended(run: Run | None, rows: Run, flush) -> Run:
    """`run` with the next kept `rows` appended when they follow it; else `flush` it and start anew."""
    if run and run[1] == rows[0] and run[3] == rows[2]:
        return (run[0], rows[1], run[2], rows[3])
    flush()
    return rows


class _Rows:
    """The arrays and lines of a new version, written source by source straight into its files: a
    kept source's rows as a slice of the previous version's (runs of consecutive kept sources copied
    as one), a new one's as made. The totals are known first (the sources' counts), so each .npy
    header is written before its rows, and no array is ever whole in memory. The readings
    (`qa.readings`) likewise: a kept source's lines copied, unless they were read by other code
    or its metadata (its title) changed: then read again."""

    def __init__(self, base: _Base | None, folder: Path, sentences: int, chunks: int, dim: int):
        self.base = base
        self.files: dict[str, list] = {}  # name -> [file, dtype, rows declared, rows written]
        self.terms: list[TermCounts] = []
        # Term ids of every part's counts: the base's vocabulary when its counts are kept as they are.
        self.vocabulary = {t: i for i, t in enumerate(base.terms.vocabulary)} if base and base.counted else {}
        self.chunk_lines: list[bytes] = []
        self.run: Run | None = None  # the kept rows whose arrays are still to copy
        self.reading_run: Run | None = None  # the kept rows whose readings are still to copy
        self.line_lengths: dict[str, list[np.ndarray]] = {readings.SENTENCES: [], readings.CONTEXTS: []}
        self.sentences = 0
        try:
            for name in ARRAYS:
                rows = chunks if name.startswith("chunk") else sentences
                width, dtype = (dim, VECTOR_DTYPE) if name.endswith("vectors") else (2, np.int64)
                f = (folder / f"{name}.npy").open("wb")
                self.files[name] = [f, dtype, rows, 0]
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                         "fortran_order": False, "shape": (rows, width)})
            for name, rows in ((readings.SENTENCES, sentences), (readings.CONTEXTS, chunks)):
                self.files[name] = [(folder / f"{name}.jsonl").open("wb"), None, rows, 0]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "_Rows":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f, *_ in self.files.values():
            f.close()

    def _write(self, name: str, rows: np.ndarray) -> None:
        entry = self.files[name]
        entry[0].write(np.ascontiguousarray(rows, dtype=entry[1]).data)
        entry[3] += len(rows)

    def _counted(self, name: str, lengths: np.ndarray | list[int]) -> None:
        self.files[name][3] += len(lengths)
        self.line_lengths[name].append(np.asarray(lengths, dtype=np.int64))

    def _read(self, sentence_lines: list[bytes], context_lines: list[bytes]) -> None:
        for name, lines in ((readings.SENTENCES, sentence_lines), (readings.CONTEXTS, context_lines)):
            self.files[name][0].write(b"".join(lines))
            self._counted(name, list(map(len, lines)))

    def keep(self, sid: str, line: bytes | None = None) -> None:
        """`line`: the source's new sources.jsonl line when its metadata changed."""
        rows = (*self.base.chunks[sid], *self.base.sentences[sid])
        self.run = _extended(self.run, rows, self.flush)
        if self.base.readings is None or line is not None:
            self.flush_readings()
            self._read(*self.base.read_again(sid, line or self.base.source_lines[sid]))
        else:
            self.reading_run = _extended(self.reading_run, rows, self.flush_readings)

    def add(self, arrays: dict[str, np.ndarray], chunk_lines: list[bytes], terms: TermCounts,
            reading_lines: tuple[list[bytes], list[bytes]]) -> None:
        """A source's rows (its chunk rows relative to its first sentence), chunks.jsonl lines and readings."""
        self.flush()
        self.flush_readings()
        self._read(*reading_lines)
        self._write("sentence_spans", arrays["sentence_spans"])
        self._write("sentence_vectors", arrays["sentence_vectors"])
        self._write("chunk_rows", arrays["chunk_rows"] + self.sentences)
        self._write("chunk_vectors", arrays["chunk_vectors"])
        self.terms.append(terms)
        self.chunk_lines.extend(chunk_lines)
        self.sentences += len(arrays["sentence_spans"])

    def flush(self) -> None:
        if self.run is None:
            return
        (c0, c1, s0, s1), arrays = self.run, self.base.arrays
        self._write("sentence_spans", arrays["sentence_spans"][s0:s1])
        self._write("sentence_vectors", arrays["sentence_vectors"][s0:s1])
        self._write("chunk_rows", arrays["chunk_rows"][c0:c1] - s0 + self.sentences)
        self._write("chunk_vectors", arrays["chunk_vectors"][c0:c1])
        self.terms.append(self.base.terms.slice(c0, c1) if self.base.counted else self.base.count_again(c0, c1, self.vocabulary))
        self.chunk_lines.extend(self.base.chunk_lines[c0:c1])
        self.sentences += s1 - s0
        self.run = None

    def flush_readings(self) -> None:
        if self.reading_run is None:
            return
        c0, c1, s0, s1 = self.reading_run
        for name, lo, hi in ((readings.SENTENCES, s0, s1), (readings.CONTEXTS, c0, c1)):
            self._counted(name, self.base.readings.copy(name, lo, hi, self.files[name][0]))
        self.reading_run = None

    def save(self, folder: Path, source_lines: list[bytes]) -> None:
        """The version's other data files; BM25 scored from the term counts."""
        self.flush()
        self.flush_readings()
        self.close()
        for name, (_, _, declared, written) in self.files.items():
            if declared != written:  # the counts the headers were written from disagree with the rows
                raise IndexUnavailable(f"{name} got {written} rows, the sources' counts say {declared}; {FULL_REBUILD_HINT}")
        for name, lengths in self.line_lengths.items():
            np.save(folder / f"{name}_offsets.npy", np.concatenate([[0], *lengths]).cumsum())
        lexical, terms = LexicalIndex.from_counts(TermCounts.concat(self.terms, list(self.vocabulary)))
        lexical.save(folder / "bm25")
        (folder / "sources.jsonl").write_bytes(b"".join(source_lines))
        (folder / "chunks.jsonl").write_bytes(b"".join(self.chunk_lines))
        (folder / "terms.json").write_text(json.dumps(terms.vocabulary, ensure_ascii=False), encoding="utf-8")
        np.save(folder / "term_rows.npy", terms.rows)
        np.save(folder / "term_ids.npy", terms.ids)
        np.save(folder / "term_counts.npy", terms.counts)


class IndexBuilder:
    """One step: the sources folder in, a new complete index version (switched to) out."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, progress: bool = False):
        if settings.chroma_index:
            raise SettingsError("QA_CHROMA_INDEX is set: it makes this process a stateless worker serving a published "
                                "index, which builds nothing; unset it to build (the build prints the name to publish as)")
        self.settings = settings
        self.embedder = embedder or Embedder.for_settings(settings)
        self.progress = progress
        self.chunker = SentenceChunker(settings.chunk_tokens, settings.overlap_sentences)
        self._publication: Publication | None = None  # on a Chroma server, during a build
        self._manifests: dict[str, dict] = {}  # version -> its manifest, as this build read or wrote it
        self._embedding_seconds = 0.0  # this build's, in the model

    def run(self, full: bool = False, wait: float = 0) -> BuildReport:
        """Build under the index's lock, waiting up to `wait` seconds for another build to finish."""
        return self.run_locked(self.acquire_lock(wait), full)

    def acquire_lock(self, wait: float = 0) -> FileLock:
        """The lock that lets one build run at a time, across processes. Raises BuildBusy."""
        index_dir = self.settings.index_dir
        index_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(index_dir / LOCK), thread_local=False)  # may be released by another thread
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise BuildBusy(f"another build of {index_dir} is running; try again when it has finished") from None
        return lock

    def sources_folder(self, served: dict | None = None) -> Path:
        """The folder to build from: the one asked for explicitly, else the one the index was built
        from, else the configured one. Raises SourcesMismatch when a configured folder (QA_SOURCES,
        `qa serve --sources`) differs from the index's: the fix is to say so explicitly. `served`:
        the served version's manifest, if already read."""
        settings = self.settings
        remembered = (versions.current_manifest(settings.index_dir) if served is None else served).get("sources_dir")
        asked = settings.sources_dir
        if remembered is None or settings.sources_origin in EXPLICIT_SOURCES:
            return asked
        if settings.sources_origin == "default" or Path(remembered) == asked.resolve():
            return Path(remembered)
        raise SourcesMismatch(
            f"the index in {settings.index_dir} was built from {remembered}, but {settings.sources_origin} names "
            f"{asked.resolve()}; to rebuild it from {asked.resolve()} say so explicitly: `qa index --sources "
            f"{asked.resolve()}`, or POST /api/index with {{\"sources\": \"{asked.resolve()}\"}}"
        )

    def run_locked(self, lock: FileLock, full: bool = False) -> BuildReport:
        """Build with a lock already taken by `acquire_lock` (so a caller can refuse a second build at once).
        Then, built or failed, delete the versions no live process holds (a failed build's partial one too)."""
        with _collector_paused():  # a build's many small objects: see _CollectorPause
            try:
                try:
                    # Read once: the folder it was built from, the version to build on, and the clean-up's.
                    current = current_version(self.settings.index_dir)  # this lock's holder alone switches it
                    served = versions.current_manifest(self.settings.index_dir, stamp=True)
                    self._manifests = {current: served} if served else {}
                    self.settings = replace(self.settings, sources_dir=self.sources_folder(served))
                    named = versions.recorded_id(self.settings.index_dir)  # a copied or moved folder gets a new name
                    report = self._build(full)
                    if report.published and named and report.published != named:
                        report = replace(report, warnings=[*report.warnings, (
                            f"this index folder was copied or moved: it is now published as index {report.published}, "
                            f"no longer {named}; start stateless workers with QA_CHROMA_INDEX={report.published}")])
                except BaseException as err:
                    from qa.sources import SourceError

                    failure = self._failure(err)  # before the clean-up frees the space the partial version took
                    versions.clean_up(self.settings, set(), None, self._manifests)  # the partial version: frees what it took
                    if isinstance(err, Exception) and not isinstance(err, (SourcesMismatch, SourceError, ModelError)):
                        raise BuildFailed(failure) from err
                    raise
                return replace(report, warnings=report.warnings + versions.clean_up(
                    self.settings, {report.version}, self._publication, self._manifests))
            finally:
                self._manifests = {}
                if self._publication is not None:
                    self._publication.close()
                    self._publication = None
                lock.release()

    def _failure(self, err: BaseException) -> str:
        served = current_version(self.settings.index_dir)
        text = f"{type(err).__name__}: {err}"
        full_disk = getattr(err, "errno", None) in (errno.ENOSPC, errno.EFBIG) or any(w in str(err).lower() for w in ("full", "disk i/o"))
        refused = None if full_disk else _refused_write(self.settings.index_dir)
        hint = f"; free space where {self.settings.index_dir} lives and build again" if full_disk or refused else ""
        text += f"; a test write there fails too ({refused})" if refused else ""
        return f"the build failed ({text}){hint}; the served version {served or '(none)'} is unchanged"

    def _previous(self, full: bool) -> tuple["_Base | None", str | None]:
        """The version to build on, or why a full build is needed."""
        version = current_version(self.settings.index_dir)
        if full or version is None:
            return None, None if version is None else "--full was asked for"
        try:
            base = _Base.open(self.settings, version, self._manifests.get(version))
        except Exception as err:  # any damage to the old version only means: build everything
            return None, str(err)
        return base, None

    def _served_hashes(self) -> dict[str, str]:
        """Source hashes of the version being served, from its manifest, if one can be read."""
        try:
            index_dir = self.settings.index_dir
            manifest = self._manifests.get(current_version(index_dir)) or versions.current_manifest(index_dir)
            return {sid: entry["sha256"] for sid, entry in manifest.get("sources", {}).items()}
        except (KeyError, TypeError, AttributeError):
            return {}

    def _plan(self, source: Source) -> _Planned:
        chunks = self.chunker.run(source)
        spans = sorted({s for c in chunks for s in c.sentences})
        row = {s: i for i, s in enumerate(spans)}
        rows = np.array([[row[c.sentences[0]], row[c.sentences[-1]] + 1] for c in chunks], dtype=np.int64).reshape(-1, 2)
        return _Planned(source, chunks, spans, rows)

    def _embedded(self, planned: list[_Planned]) -> Iterator[tuple[_Planned, np.ndarray]]:
        """Each planned source with the vectors of its texts, in order, encoded a slice of sources at
        a time (about `batch_size * 8` texts): only a slice's vectors are ever in memory, and the
        progress bar (shown when asked) tells chunks/s and the time left. Identical texts in a slice
        (a caption in two articles, a run-on line cut into equal pieces) are encoded once."""
        if not planned:
            return
        started = time.perf_counter()
        self.embedder.model  # loaded first: the bar names the device it runs on and the batch size for it
        self._embedding_seconds += time.perf_counter() - started
        step = self.embedder.batch_size * 8
        with tqdm(total=sum(len(p.chunks) for p in planned), unit="chunk", disable=not self.progress,
                  desc=f"embedding ({self.embedder.device})") as bar:
            i = 0
            while i < len(planned):
                batch, texts = [], []
                while i < len(planned) and (not batch or len(texts) < step):
                    batch.append(planned[i])
                    texts.extend(planned[i].texts())
                    i += 1
                unique = list(dict.fromkeys(texts))
                row_of = {t: r for r, t in enumerate(unique)}
                started = time.perf_counter()
                vectors = self.embedder.encode(unique)[[row_of[t] for t in texts]]
                self._embedding_seconds += time.perf_counter() - started
                at = 0
                bar.update(sum(len(p.chunks) for p in batch))
                for p in batch:
                    n = len(p.spans) + len(p.chunks)
                    yield p, vectors[at : at + n]
                    at += n

    def _build(self, full: bool) -> BuildReport:
        started = time.perf_counter()
        self._embedding_seconds = 0.0
        settings = self.settings
        from qa.sources import SourceReader  # the readers' libraries: a build needs them, a server's request does not

        reader = SourceReader(max_bytes=settings.max_source_bytes)
        base, full_reason = self._previous(full)
        fingerprint = reader.fingerprint()
        # Files are skipped by their stamp only when read from the same folder by the same reading.
        same_reading = base and base.manifest.get("reading") == fingerprint and base.manifest.get("sources_dir") == str(settings.sources_dir.resolve())
        scan = reader.scan(settings.sources_dir, base.files() if same_reading else None)
        sources, problems = scan.sources, scan.problems
        base_sources = base.manifest["sources"] if base else {}
        # What changed is told against the version being replaced, even when a full build reuses nothing.
        before = {sid: entry["sha256"] for sid, entry in base_sources.items()} or self._served_hashes()
        sha256 = {s.id: base_sources[s.id]["sha256"] if isinstance(s, Kept) else s.sha256 for s in sources}
        reused = {s.id for s in sources if base and base.keeps(s)}
        added = [s.id for s in sources if s.id not in before]
        updated = [s.id for s in sources if s.id in before and (before[s.id] != sha256[s.id] or s.id in base_sources and s.id not in reused)]
        removed = sorted(set(before) - {s.id for s in sources})
        kept = [s.id for s in sources if s.id in before and s.id not in updated]
        metas = {s.id: dict(vars(s.meta)) for s in sources}  # its fields (asdict's deep copy costs 30x more)
        # Up to date also in what it remembers of the files: else a touched file would be read by every build.
        if (base and same_reading and not (added or updated or removed) and scan.files == base.files()
                and all(base_sources[sid]["meta"] == metas[sid] for sid in metas) and base.readings is not None
                and base.counted and base.manifest.get("bm25") == scoring_fingerprint()):
            warnings = []
            try:  # what an earlier build could not publish (or one before publishing existed)
                if published := self._publish(base):
                    if published.current() != base.version:
                        published.set_current(base.version)
            except StoreError as err:
                warnings.append(f"stateless workers keep serving the version they have: {err}; the next `qa index` retries")
            return BuildReport(  # nothing changed: keep serving the current version
                version=base.version, sources=len(sources), chunks=base.manifest["chunk_count"],
                embedded_chunks=0, embedded_sentences=0, kept=kept, problems=problems,
                seconds=time.perf_counter() - started, up_to_date=True, warnings=warnings, published=self._published_name(),
            )
        # Chunked first (the counts give every array's size), then embedded and written a slice at a time.
        fresh = {s.id: self._plan(s) for s in sources if s.id not in reused}

        version, version_dir = versions.new_version(settings.index_dir)
        counts = {s.id: (len(fresh[s.id].chunks), len(fresh[s.id].spans)) if s.id in fresh
                  else (base_sources[s.id]["chunks"], base_sources[s.id]["sentences"]) for s in sources}
        dim = base.arrays["chunk_vectors"].shape[1] if base and not fresh else self.embedder.dimension
        source_lines = []
        with (_Rows(base, version_dir, sum(n for _, n in counts.values()), sum(n for n, _ in counts.values()), dim) as rows,
              closing(self._embedded(list(fresh.values()))) as embedding):
            for source in sources:
                if isinstance(source, Source):
                    source_lines.append(_source_line(source))
                else:
                    source_lines.append(_line_with_meta(base.source_lines[source.id], metas[source.id], base_sources[source.id]["meta"]))
                if source.id in fresh:
                    planned, vectors = next(embedding)
                    assert planned.source.id == source.id, "sources are planned and embedded in index order"
                    rows.add(planned.arrays(vectors), list(map(_chunk_line, planned.chunks)),
                             TermCounts.of([c.text for c in planned.chunks], rows.vocabulary),
                             readings.read_source(source, planned.spans, [(c.start, c.sentences) for c in planned.chunks]))
                    planned.chunks.clear()  # written: its chunks' texts need not stay until the build ends
                else:
                    rows.keep(source.id, None if source_lines[-1] == base.source_lines[source.id] else source_lines[-1])
            rows.save(version_dir, source_lines)
        chunk_vectors = np.load(version_dir / "chunk_vectors.npy", mmap_mode="r")

        # Each source's vectors are named by the version that embedded them: on a Chroma server,
        # versions share the records of the sources they share.
        embedded = {s.id: version if s.id in fresh else base_sources[s.id]["embedded"] for s in sources}
        store_kind = "chroma-server" if settings.chroma_url else "chroma-embedded"
        same_store = base and base.manifest["store"] == store_kind
        base_dir = versions.version_dir(settings.index_dir, base.version) if same_store else None
        store, holds = VectorStore.create(settings, version_dir, base_dir, base.manifest["chunk_count"] if same_store else 0)
        if holds:
            store.delete_sources(updated + removed)
        at, adding = 0, []  # (source id, its first chunk's position, its chunks) of the records the store lacks
        for source in sources:
            n = counts[source.id][0]
            if not holds or source.id in fresh:
                adding.append((source.id, at, n))
            at += n
        for group in _groups(adding, STORE_SLICE):  # a slice of the vectors in memory at a time
            ids = [f"{sid}#{i}" for sid, _, n in group for i in range(n)]
            positions = np.concatenate([np.arange(first, first + n) for _, first, n in group])
            metadatas = [{"source_id": sid, "embedded": embedded[sid]} for sid, _, n in group for _ in range(n)]
            store.add(ids, np.asarray(chunk_vectors[positions], np.float32).reshape(len(ids), dim), metadatas)
        collection = store.name
        store.close()

        manifest = {
            "format": FORMAT,
            "version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": settings.model_name, "fingerprint": model_fingerprint(settings.model_path), "dimension": dim,
                      "backend": self.embedder.backend, "space": self.embedder.space},
            "chunking": _chunking_settings(settings),
            "store": store_kind,
            "collection": collection,  # on a Chroma server, the index's collection: what a worker opens
            # In index order: each source's rows in the arrays follow from the counts before it.
            "sources": {s.id: {"sha256": sha256[s.id], "file": s.file_name, "chunks": counts[s.id][0],
                               "sentences": counts[s.id][1], "meta": metas[s.id], "embedded": embedded[s.id],
                               "bytes": len(line)}  # its sources.jsonl line's
                        for s, line in zip(sources, source_lines)},
            "chunk_count": at,
            # Why there is nothing to serve, for the server's 503 (None when there are sources).
            "empty": None if sources else empty_reason(settings.sources_dir, problems),
            "sources_dir": str(settings.sources_dir.resolve()),
            "reading": fingerprint,
            "lexical": analysis_fingerprint(),
            "bm25": scoring_fingerprint(),
            "readings": readings.fingerprint(),
            "source_files": {name: {"stamp": r.stamp, "sources": r.sources, "problems": [astuple(p) for p in r.problems]}
                             for name, r in scan.files.items()},
        }
        manifest = versions.seal(version_dir, manifest, DATA_FILES)
        self._manifests[version] = manifest
        # Before the switch: a worker may follow at once. Read back only for a Chroma server (0.1 s at 100k chunks).
        published = self._publish(_Base.read(version_dir, manifest)) if settings.chroma_url else None
        versions.switch(settings.index_dir, version)
        warnings = []
        if published:
            try:
                published.set_current(version)
            except StoreError as err:  # served here; stateless workers follow when a later build can say so
                warnings.append(f"stateless workers keep serving the version they have: {err}; the next `qa index` retries")
        return BuildReport(
            version=version,
            sources=len(sources),
            chunks=at,
            embedded_chunks=sum(counts[sid][0] for sid in fresh),
            embedded_sentences=sum(counts[sid][1] for sid in fresh),
            added=added,
            updated=updated,
            removed=removed,
            kept=kept,
            problems=problems,
            seconds=time.perf_counter() - started,
            embedding_seconds=self._embedding_seconds,
            full_reason=full_reason,
            warnings=warnings,
            published=self._published_name(),
        )

    def _publish(self, files: _Base) -> Publication | None:
        """On a Chroma server: what stateless workers need of this version that the server does not
        hold yet (a build before publishing existed, or one killed, may have left some out): the
        payloads, then the manifest."""
        if not self.settings.chroma_url:
            return None
        if self._publication is None:  # one client for the build's calls
            self._publication = Publication.of_index(self.settings)
        publication = self._publication
        missing, unlisted = publication.missing([(sid, entry["embedded"]) for sid, entry in files.manifest["sources"].items()], files.version)
        if unlisted:
            missing.append(None)  # the manifest, with the last batch
        for i in range(0, len(missing), PUBLISH_BATCH):  # a batch of payloads in memory at a time
            batch = missing[i : i + PUBLISH_BATCH]
            publication.add({key: files.payload(key[0]) for key in batch if key is not None},
                            files.manifest if None in batch else None)
        return publication

    def _published_name(self) -> str | None:
        return versions.index_id(self.settings.index_dir) if self.settings.chroma_url else None


def _groups(adding: list[tuple[str, int, int]], size: int) -> Iterator[list[tuple[str, int, int]]]:
    """Consecutive sources, each group closed once it holds `size` chunks or more (so under `size`
    plus its last source's)."""
    group, chunks = [], 0
    for entry in adding:
        group.append(entry)
        chunks += entry[2]
        if chunks >= size:
            yield group
            group, chunks = [], 0
    if group:
        yield group


def _refused_write(folder: Path) -> str | None:
    """Why a 1 MiB write in `folder` fails for want of space (a full disk, a file-size limit), else None.
    A store's own error may not say so (Chroma: "Error in compaction: Failed to apply logs")."""
    probe = folder / f".space-probe-{os.getpid()}"
    try:
        with probe.open("wb") as f:
            f.write(bytes(1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return err.strerror if err.errno in (errno.ENOSPC, errno.EFBIG) else None
    finally:
        probe.unlink(missing_ok=True)
    return None


def empty_reason(folder: Path, problems: list[Problem]) -> str:
    skipped = sum(p.skipped for p in problems)
    found = f"{skipped} file(s) could not be read, see `qa index`" if skipped else "it holds no document"
    return f"the index is empty: no readable document in {folder} ({found}); add documents and run `qa index`"


TERM_ENTRIES = ("terms", "term_rows", "term_ids", "term_counts")  # a payload's BM25 counts, its own vocabulary first


def _term_entries(counts: TermCounts) -> dict[str, np.ndarray | bytes]:
    """One source's term counts with the terms they name (ids of a vocabulary of its own), for its payload."""
    used, local = np.unique(counts.ids, return_inverse=True)
    return {"lexical": analysis_fingerprint().encode(), "terms": "\n".join(counts.vocabulary[i] for i in used.tolist()).encode(),
            "term_rows": counts.rows, "term_ids": local.astype(np.int32), "term_counts": counts.counts}


def _published_counts(arrays: dict[str, np.ndarray], chunks: int, vocabulary: dict[str, int], terms: list[str]) -> TermCounts | None:
    """A payload's term counts in the ids of `vocabulary` (a term new to it added there and to
    `terms`), when this code's analysis made them and they fit its `chunks`; else None, and the
    texts are counted: at 103,070 chunks counting took 9.4 s of a stateless worker's 28 s first copy."""
    fingerprint = arrays.pop("lexical", np.zeros(0, np.uint8)).tobytes()
    found = [arrays.pop(name, None) for name in TERM_ENTRIES]
    if fingerprint != analysis_fingerprint().encode() or any(a is None for a in found):
        return None
    blob, rows, ids, counts = found
    local = blob.tobytes().decode("utf-8").split("\n") if blob.size else []
    if (len(set(local)) != len(local) or any(a.dtype.kind not in "iu" for a in (rows, ids, counts))
            or rows.shape != (chunks + 1,) or ids.ndim != 1 or ids.shape != counts.shape
            or rows[0] != 0 or rows[-1] != len(ids) or (np.diff(rows) < 0).any()
            or (len(ids) and (ids.min() < 0 or ids.max() >= len(local))) or (counts <= 0).any()):
        return None
    for term in local:
        if term not in vocabulary:
            vocabulary[term] = len(terms)
            terms.append(term)
    ids_here = np.fromiter(map(vocabulary.__getitem__, local), np.int32, len(local))
    return TermCounts(terms, rows.astype(np.int64), ids_here[ids], counts.astype(np.int32))


def mirror_version(settings: Settings, publication: Publication, version: str) -> None:
    """Copy the published `version` into `settings.index_dir` (a stateless worker's folder) and switch
    to it: the sources its current copy holds under the same embedding version are kept from it (as
    a build keeps them), the others' payloads fetched from the Chroma server a batch at a time; BM25
    is computed here from the chunk texts, and the readings (`qa.readings`) taken from the payload
    when this code made them, else made here. Processes sharing the folder copy it once (under its
    lock). The copy's texts, chunks and arrays (and readings, when this code reads as the build's
    did) must equal, byte for byte, the files the build wrote.
    Raises IndexUnavailable (the version is gone, damaged or incompatible) or StoreError (the server is away)."""
    index_dir = settings.index_dir
    if current_version(index_dir) == version and versions.exists(index_dir, version):
        return
    manifest = publication.manifest(version)
    _check_compatible(manifest, settings, chunking=False)
    index_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(index_dir / LOCK), timeout=MIRROR_LOCK_SECONDS):
        if current_version(index_dir) == version and versions.exists(index_dir, version):
            return  # another process of this worker copied it meanwhile
        if publication.current() != version:
            return  # moved on while this process waited: the next request follows the newer one
        folder = versions.version_dir(index_dir, version)
        if versions.exists(index_dir, version):  # copied earlier, switched away from (a build went back to it)
            versions.verify_files(folder, read_manifest(folder))
        else:
            if folder.exists():  # a copy a killed process left half made (no manifest: never served)
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            try:
                _copy_published(settings, publication, manifest, folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        versions.switch(index_dir, version)
        # Older copies no process here holds (the server's records are the build's to delete).
        versions.clean_up(replace(settings, chroma_url=None), keep={version})


def _copy_published(settings: Settings, publication: Publication, manifest: dict, folder: Path) -> None:
    base = None
    if (previous := current_version(settings.index_dir)) is not None:
        try:
            base = _Base.open(settings, previous)
        except Exception:  # a damaged copy: fetch everything
            base = None
    entries = manifest["sources"]
    kept = {sid for sid, entry in entries.items()
            if base and base.manifest["sources"].get(sid, {}).get("embedded") == entry["embedded"]}
    wanted = [(sid, entry["embedded"]) for sid, entry in entries.items() if sid not in kept]
    fetched: dict = {}
    done = 0
    source_lines = []
    sentences = sum(entry["sentences"] for entry in entries.values())
    with _Rows(base, folder, sentences, manifest["chunk_count"], manifest["model"]["dimension"]) as rows:
        terms = list(rows.vocabulary)  # its id -> term, grown with it: every source's counts name it
        for sid, entry in entries.items():
            if sid in kept:
                source_lines.append(_line_with_meta(base.source_lines[sid], entry["meta"], base.manifest["sources"][sid]["meta"]))
                rows.keep(sid, None if source_lines[-1] == base.source_lines[sid] else source_lines[-1])
                continue
            key = (sid, entry["embedded"])
            if key not in fetched:  # the next batch, in index order: a batch of payloads in memory at a time
                fetched = publication.payloads(wanted[done : done + FETCH_BATCH])
                done += len(fetched)
            arrays = decode_payload(fetched.pop(key))
            line, chunk_lines = arrays.pop("source").tobytes(), arrays.pop("chunks").tobytes().splitlines(keepends=True)
            if (len(chunk_lines), len(arrays["sentence_spans"])) != (entry["chunks"], entry["sentences"]):
                raise IndexUnavailable(f"the published data of source {sid} does not match the manifest of version "
                                       f"{manifest['version']}; {FULL_REBUILD_HINT} on the build machine")
            source_lines.append(_line_with_meta(line, entry["meta"]))
            stored = [arrays.pop(name, np.zeros(0, np.uint8)).tobytes().splitlines(keepends=True)
                      for name in (readings.SENTENCES, readings.CONTEXTS)]
            # Its readings as published when this code made them for the same metadata (the title is read), else made here.
            if (arrays.pop("readings", np.zeros(0, np.uint8)).tobytes().decode() != readings.fingerprint() or source_lines[-1] != line
                    or [len(lines) for lines in stored] != [entry["sentences"], entry["chunks"]]):
                stored = _read_stored(source_lines[-1], arrays["sentence_spans"], arrays["chunk_rows"], chunk_lines)
            counts = _published_counts(arrays, entry["chunks"], rows.vocabulary, terms)
            if counts is None:
                text, spans = json.loads(line)["text"], [json.loads(chunk) for chunk in chunk_lines]
                counts = TermCounts.of([text[c["start"] : c["end"]] for c in spans], rows.vocabulary)
                terms.extend(counts.vocabulary[len(terms):])
            rows.add(arrays, chunk_lines, counts, tuple(stored))
        rows.save(folder, source_lines)
    same_reading = manifest.get("readings") == readings.fingerprint()
    for name in COPIED_FILES + (readings.FILES if same_reading else ()):  # what the build wrote: any difference is damage on the way
        if versions.file_sha256(folder / name) != manifest["files"][name]:
            raise IndexUnavailable(f"the copy of index version {manifest['version']} differs from the build's {name}; "
                                   f"{FULL_REBUILD_HINT} on the build machine")
    # Its own BM25 analysis and term files: the manifest is sealed again over them.
    local = {k: v for k, v in manifest.items() if k not in ("files", "checksum")}
    versions.seal(folder, {**local, "lexical": analysis_fingerprint(), "bm25": scoring_fingerprint(), "readings": readings.fingerprint()},
                  DATA_FILES)
