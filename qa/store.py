"""Chunk vectors in Chroma, one collection per index version (cosine space).

Embedded by default (`PersistentClient` in the version's own folder, so a build never writes
where the server reads); with `QA_CHROMA_URL`, a Chroma server holds one collection per version.
Embeddings are always passed in: Chroma's default embedding function downloads a model.

Usage:
    >>> store = VectorStore.create(settings, version_dir, "v1")
    >>> store.add(["a#0"], vectors, [{"source_id": "a"}])
    >>> store.query(question_vector, n=10)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError

from qa.config import Settings

COLLECTION_PREFIX = "qa-chunks-"


class StoreError(Exception):
    """The vector store cannot be reached or read; the message says which and how to fix it."""


def _client(settings: Settings, version_dir: Path):
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


def _collection_name(settings: Settings, version: str) -> str:
    # Embedded: the folder is per version already. Server: one shared namespace, so the name carries it.
    return f"{COLLECTION_PREFIX}{version}" if settings.chroma_url else COLLECTION_PREFIX.rstrip("-")


@dataclass
class VectorStore:
    collection: chromadb.Collection
    client: object = None  # closed with the store: each version's embedded client holds files and memory
    size: int = -1  # of an opened version, which never changes: count() costs milliseconds a call

    @classmethod
    def create(
        cls, settings: Settings, version_dir: Path, version: str, base_dir: Path | None = None
    ) -> tuple["VectorStore", bool]:
        """A new, writable store for `version`. With `base_dir` (the previous version's folder), an
        embedded store starts as a copy of it; returns whether it did, so the caller adds only the difference."""
        copied = False
        if base_dir and not settings.chroma_url and (base_dir / "chroma").is_dir():
            shutil.copytree(base_dir / "chroma", version_dir / "chroma")
            copied = True
        client = _client(settings, version_dir)
        name = _collection_name(settings, version)
        if settings.chroma_url:
            try:
                client.delete_collection(name)  # left over from a build that was killed
            except Exception:  # chromadb raises a bare error for a missing collection
                pass
        collection = client.get_or_create_collection(
            name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )
        return cls(collection, client), copied

    @classmethod
    def open(cls, settings: Settings, version_dir: Path, version: str) -> "VectorStore":
        client = _client(settings, version_dir)
        try:
            collection = client.get_collection(_collection_name(settings, version), embedding_function=None)
        except Exception as err:
            raise StoreError(f"the vector store of index version {version} is missing or unreadable ({err})") from err
        return cls(collection, client, collection.count())

    @staticmethod
    def drop(settings: Settings, version_dir: Path, version: str) -> None:
        """Forget a version on a server (an embedded store goes with its folder). Raises StoreError
        when the server cannot do it; a collection that does not exist is already forgotten."""
        if settings.chroma_url:
            try:
                _client(settings, version_dir).delete_collection(_collection_name(settings, version))
            except NotFoundError:
                pass
            except Exception as err:
                raise StoreError(f"cannot drop Chroma collection {_collection_name(settings, version)} "
                                 f"at {settings.chroma_url}: {err}") from err

    def close(self) -> None:
        """Release the client (reference-counted by Chroma: another holder of the same path keeps it)."""
        if self.client is not None:
            self.client.close()

    def add(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict]) -> None:
        batch = self.collection._client.get_max_batch_size()
        for i in range(0, len(ids), batch):
            self.collection.add(
                ids=ids[i : i + batch], embeddings=vectors[i : i + batch], metadatas=metadatas[i : i + batch]
            )

    def delete_sources(self, source_ids: list[str]) -> None:
        if source_ids:
            self.collection.delete(where={"source_id": {"$in": source_ids}})

    def count(self) -> int:
        return self.collection.count()

    def query(self, vector: np.ndarray, n: int, where: dict | None = None) -> tuple[list[str], list[float]]:
        """Ids of the `n` nearest chunks (among those matching the metadata filter `where`) and their
        cosine similarity, best first."""
        n = min(n, self.size if self.size >= 0 else self.count())
        if n <= 0:
            return [], []
        try:
            result = self.collection.query(query_embeddings=[vector], n_results=n, where=where, include=["distances"])
        except Exception as err:  # a Chroma server down or restarting: the request gets a 503, not a 500
            raise StoreError(f"the vector store cannot be queried ({type(err).__name__}: {err}); "
                             "if it is a Chroma server, check that it is running") from err
        return result["ids"][0], [1.0 - d for d in result["distances"][0]]
