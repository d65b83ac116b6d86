"""Chunk vectors in Chroma (cosine space).

Embedded by default: `PersistentClient` in the version's own folder, so a build never writes where
the server reads; a build starts from a copy of the previous version's folder and changes what
changed. With `QA_CHROMA_URL`, each index has one collection on the Chroma server (named by the
index's `ID` file, so several indexes can share a server), shared by every version of the index
(Chroma can fork a collection only when hosted): a record's id is its chunk id and the version
that embedded it (`a#0@<version>`), so versions share the records of unchanged sources and a build
adds only the records of what it embedded. A version's query keeps the records it names; the
clean-up after a build deletes the records no remaining version names (`qa.published`). Embeddings are always
passed in: Chroma's default embedding function downloads a model.

Usage:
    >>> store, holds_base = VectorStore.create(settings, version_dir, base_dir, base_size)
    >>> store.add(["a#0"], vectors, [{"source_id": "a", "embedded": "v2"}])
    >>> VectorStore.open(settings, version_dir, manifest).query(question_vector, n=10)
"""
from __future__ import annotations

import shutil
from contextlib import closing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from qa import versions
from qa.config import Settings

if TYPE_CHECKING:
    import chromadb

COLLECTION = "qa-chunks"  # embedded: each version's folder holds its own
LEGACY_PREFIX = "qa-chunks-"  # server collections of index formats before 5, one per version


class StoreError(Exception):
    """The vector store cannot be reached or read; the message says which and how to fix it."""


def _client(settings: Settings, version_dir: Path):
    # Imported here, not with the module: 1.6 s of a worker's start, which a large version's store
    # spends opening in the background while the worker answers (`qa.indexing.load_index`).
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if not settings.chroma_url:
        return chromadb.PersistentClient(path=str(version_dir / "chroma"), settings=chroma_settings)
    url = urlparse(settings.chroma_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise StoreError(f"QA_CHROMA_URL {settings.chroma_url!r} is not an http(s) URL")
    headers = {"Authorization": f"Bearer {settings.chroma_token}"} if settings.chroma_token else None
    try:
        return chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 80),
            ssl=url.scheme == "https",
            headers=headers,
            settings=chroma_settings,
        )
    except Exception as err:  # chromadb raises bare Exceptions for connection failures
        raise StoreError(f"cannot reach the Chroma server at {settings.chroma_url}: {err}") from err


def collection_name(settings: Settings) -> str:
    """The collection a build of the index in `settings.index_dir` writes: a Chroma server may hold
    several indexes'. A version's manifest records it (`VectorStore.name`)."""
    return f"qa-index-{versions.index_id(settings.index_dir)}" if settings.chroma_url else COLLECTION


def _record_id(chunk_id: str, embedded: str) -> str:
    return f"{chunk_id}@{embedded}"


@dataclass
class VectorStore:
    collection: chromadb.Collection
    client: object = None  # closed with the store: each version's embedded client holds files and memory
    size: int = -1  # of an opened version, which never changes: count() costs milliseconds a call
    # Shared collection (server): source id -> the version that embedded the records this version uses.
    embedded: Mapping[str, str] | None = None

    @classmethod
    def create(cls, settings: Settings, version_dir: Path, base_dir: Path | None = None,
               base_size: int = 0) -> tuple["VectorStore", bool]:
        """A new, writable store for the version in `version_dir`, and whether it already holds the records of the
        previous version (in `base_dir`, `base_size` chunks), so the caller adds only the difference:
        embedded, the new folder starts as a copy of the previous one; on a server, the collection is shared."""
        holds = False
        if base_dir and not settings.chroma_url and (base_dir / "chroma").is_dir():
            shutil.copytree(base_dir / "chroma", version_dir / "chroma")
            holds = True
        client = _client(settings, version_dir)
        try:
            collection = client.get_or_create_collection(
                collection_name(settings), embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )
            if settings.chroma_url:
                holds = base_dir is not None and collection.count() >= base_size  # fewer: the server lost records
        except BaseException:
            client.close()
            raise
        return cls(collection, client, embedded={} if settings.chroma_url else None), holds

    @classmethod
    def open(cls, settings: Settings, version_dir: Path, manifest: dict, dimension: int = 0) -> "VectorStore":
        """`dimension`: the vectors', for an embedded version: its HNSW graph is loaded before the
        count (which holds the GIL while Chroma loads it: 3 s at 1M chunks, each request thread of
        the process stopped) by a query of one vector, which does not hold it."""
        version = manifest["version"]
        name = manifest.get("collection") or COLLECTION
        if settings.chroma_url and name == COLLECTION:
            raise StoreError(f"index version {version} does not name its Chroma collection (built before "
                             f"collections were named per index); {versions.FULL_REBUILD_HINT}")
        try:
            client = _client(settings, version_dir)
        except StoreError:
            raise
        except Exception as err:  # a damaged chroma.sqlite3: "file is not a database"
            raise StoreError(f"the vector store of index version {version} is missing or unreadable ({err})") from err
        try:
            collection = client.get_collection(name, embedding_function=None)
            if dimension and not settings.chroma_url and manifest.get("chunk_count"):
                collection.query(query_embeddings=[np.eye(1, dimension, dtype=np.float32)[0]], n_results=1, include=[])
            count = collection.count()
        except Exception as err:
            client.close()
            raise StoreError(f"the vector store of index version {version} is missing or unreadable ({err})") from err
        if not settings.chroma_url:
            return cls(collection, client, count)
        if count < manifest["chunk_count"]:
            client.close()
            raise StoreError(f"the Chroma server at {settings.chroma_url} holds {count} records, fewer than the "
                             f"{manifest['chunk_count']} chunks of index version {version}; run `qa index --full`")
        embedded = {sid: entry["embedded"] for sid, entry in manifest["sources"].items()}
        return cls(collection, client, manifest["chunk_count"], embedded)

    @staticmethod
    def drop(settings: Settings, version_dir: Path, version: str) -> None:
        """Forget a version's own collection on a server (index formats before 5; an embedded store
        goes with its folder). Raises StoreError when the server cannot do it; a collection that
        does not exist is already forgotten."""
        if settings.chroma_url:
            from chromadb.errors import NotFoundError

            try:
                with closing(_client(settings, version_dir)) as client:
                    client.delete_collection(f"{LEGACY_PREFIX}{version}")
            except NotFoundError:
                pass
            except Exception as err:
                raise StoreError(f"cannot drop Chroma collection {LEGACY_PREFIX}{version} at {settings.chroma_url}: {err}") from err

    @property
    def name(self) -> str:
        return self.collection.name

    def close(self) -> None:
        """Release the client (reference-counted by Chroma: another holder of the same path keeps it)."""
        if self.client is not None:
            self.client.close()

    def add(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        """Chunk ids, their vectors, and metadata naming the source and the version that embedded them."""
        if self.embedded is not None:  # upsert: records a killed build added before its clean-up may be there
            ids = [_record_id(i, m["embedded"]) for i, m in zip(ids, metadatas)]
        write = self.collection.add if self.embedded is None else self.collection.upsert
        batch = self.collection._client.get_max_batch_size()
        for i in range(0, len(ids), batch):
            write(ids=ids[i : i + batch], embeddings=vectors[i : i + batch], metadatas=metadatas[i : i + batch])

    def delete_sources(self, source_ids: list[str]) -> None:
        """Drop these sources' records from a version's own copy. A shared collection keeps them for
        the versions still serving them; the clean-up deletes them when none does."""
        if source_ids and self.embedded is None:
            self.collection.delete(where={"source_id": {"$in": source_ids}})

    def count(self) -> int:
        return self.collection.count()

    def query(self, vector: np.ndarray, n: int, where: dict | None = None) -> tuple[list[str], list[float]]:
        """Ids of the `n` nearest chunks (among those matching the metadata filter `where`) and their
        cosine similarity, best first."""
        n = min(n, self.size if self.size >= 0 else self.count())
        if n <= 0:
            return [], []
        ask = n
        while True:
            try:
                result = self.collection.query(query_embeddings=[vector], n_results=ask, where=where, include=["distances"])
            except Exception as err:  # a Chroma server down or restarting: the request gets a 503, not a 500
                raise StoreError(f"the vector store cannot be queried ({type(err).__name__}: {err}); "
                                 "if it is a Chroma server, check that it is running") from err
            ids, similarities = result["ids"][0], [1.0 - d for d in result["distances"][0]]
            if self.embedded is None:
                return ids, similarities
            mine = [(chunk_id, s) for chunk_id, s in zip(map(self._chunk_id, ids), similarities) if chunk_id]
            # Other versions' records (a changed source's old ones, until the clean-up) take places:
            # ask for more until `n` of this version's are in, or the collection has no more.
            if len(mine) >= n or len(ids) < ask or ask >= (total := self.count()):
                return [c for c, _ in mine[:n]], [s for _, s in mine[:n]]
            ask = min(ask * 4, total)

    def _chunk_id(self, record_id: str) -> str | None:
        """The chunk id of a shared record, if it is one of this version's."""
        chunk_id, _, embedded = record_id.rpartition("@")
        return chunk_id if self.embedded.get(chunk_id.rpartition("#")[0]) == embedded else None
