"""An index published on a Chroma server, for stateless workers (issue 14, item 2).

A build with `QA_CHROMA_URL` writes its chunk vectors into the index's collection (`qa.store`) and,
into a second one, `<that name>-published`, what a worker needs to serve the index without the
index folder:

- per source and embedding version (shared by versions, as the vector records are): its payload,
  the lines and array rows a version folder holds for it (its `sources.jsonl` and `chunks.jsonl`
  lines, sentence spans and vectors, chunk rows and vectors, its BM25 term counts, and its readings with the fingerprint
  of the code that made them, `qa.readings`) in base64, deflated but for the vectors (`encode_payload`);
- per version, its manifest (`version@<v>`).

and, into a third, `<that name>-control`, the small records written while the index is served:

- `current`: the version being served, written just after the build's own switch;
- per stateless worker process, its lease (`lease@<host>-<pid>`): the versions it holds and when it
  last said so. The build's clean-up keeps them like the folder's own leases (`qa.versions`), and
  deletes the payloads and manifests no remaining version uses.

They are apart because a write to the published collection, beside every payload, is slower: on
`chroma run` (chromadb 1.5.9) with a 100k-chunk index published, an upsert of one tiny record took
0.24-0.32 s there soon after a restart of the server, 0.046-0.067 s later on, and 0.008-0.015 s in
a collection of its own; reads by id took 0.004 s in either.
Builds before the control collection wrote `current` and leases into the published one: a worker
follows a `current` found there first (a build of this code deletes it when it switches, so one
there was written by an older build since), and the clean-up keeps what leases there name.

Chroma does not search BM25 here: `chroma run` (chromadb 1.5.9) refuses a sparse vector index ("Failed
to reconcile schema: Invalid schema input: Sparse vector indexing is not enabled in local"). A
payload carries its source's BM25 term counts instead, named by the analysis that made them, and a
worker scores BM25 over its copy from them; a worker whose analysis differs counts the chunk texts itself.

Chroma records need an embedding: these carry a 2-d placeholder, spread so the graph stays sane.
Text goes in metadata, not in `documents`: Chroma indexes documents for full-text search (measured
here: 20 MB of payload took 11 s and 156 MB as documents, 1.1 s and 60 MB as metadata). A payload
longer than PART_CHARS is split over several records; the first part is written last, so a
payload whose first part is there is whole.

A worker started with `QA_CHROMA_INDEX=<name>` follows `current` (`Follower`): it copies each
version it serves into its own folder, `<QA_INDEX>/mirror/<name>/` (the layout of `qa.versions`),
fetching only the payloads its previous copy lacks (`qa.indexing.mirror_version`), and names it in
its lease on the server while it may serve it.

Usage:
    >>> publication = Publication.of_index(settings)            # the build's
    >>> publication.add({("a", "v1"): payload}, manifest)
    >>> follower = Follower(settings)                            # a worker's (settings.chroma_index)
    >>> version = follower.pin(); ...; follower.release(version)
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import secrets
import socket
import threading
import time
import zlib

import numpy as np

from qa.config import Settings
from qa.store import StoreError, _client, collection_name
from qa import versions

SUFFIX = "-published"
CONTROL_SUFFIX = "-control"
PART_CHARS = 256_000  # text per record: a request of RECORDS_PER_REQUEST records stays under 17 MB
RECORDS_PER_REQUEST = 64  # records per get or upsert
CURRENT_TTL = 1.0  # a worker looks for a new current version at most this often (seconds)
_HOST = socket.gethostname()
_TOKEN = secrets.token_hex(4)
VERSION_NAME = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")  # qa.versions.new_version's

Key = tuple[str, str]  # (source id, version that embedded it)


PAYLOAD_MAGIC = b"qa-payload-2\n"  # then a JSON list of [name, dtype, shape, "z" or "r"], a newline, the deflated "z"
# arrays' bytes, then the "r" arrays' bytes as they are
_DEFLATED_MAGIC = b"qa-payload-1\n"  # the same header without the last field, then the arrays' bytes: all deflated (read still)
_NPZ_MAGIC = b"PK\x03\x04"  # payloads published before either: a compressed .npz (read still)


def encode_payload(entries: dict[str, np.ndarray | bytes]) -> str:
    """One source's rows and lines (named arrays and byte strings) as text for a metadata value:
    one buffer, not an .npz, whose arrays each cost a worker's copy a zip member and a parsed
    header (at 103,070 chunks, 7.0 of a 28 s first copy went to opening them). Float arrays (the
    vectors) go undeflated: float16 vectors deflate only to 92-93% of their size, and decoding 640
    payloads of a 100k-chunk index took 0.23-0.29 s, against 0.34-0.38 s all deflated."""
    arrays = {name: np.frombuffer(value, np.uint8) if isinstance(value, bytes) else np.ascontiguousarray(value)
              for name, value in entries.items()}
    stored = {name: "r" if a.dtype.kind == "f" else "z" for name, a in arrays.items()}
    header = json.dumps([[name, a.dtype.str, list(a.shape), stored[name]] for name, a in arrays.items()]).encode()
    deflated = zlib.compress(b"".join(a.tobytes() for name, a in arrays.items() if stored[name] == "z"), 6)
    plain = (a.tobytes() for name, a in arrays.items() if stored[name] == "r")
    return base64.b64encode(b"".join([PAYLOAD_MAGIC, header, b"\n", deflated, *plain])).decode("ascii")


def decode_payload(text: str) -> dict[str, np.ndarray]:
    """The named entries (a byte string comes back as a uint8 array: `.tobytes()`). Raises
    ValueError for a payload that is not one, or whose arrays do not fill it exactly."""
    packed = base64.b64decode(text)
    if packed.startswith(_NPZ_MAGIC):
        with np.load(io.BytesIO(packed)) as npz:
            return {name: npz[name] for name in npz.files}
    try:
        if packed.startswith(PAYLOAD_MAGIC):
            fields = 4
            header, _, rest = packed[len(PAYLOAD_MAGIC):].partition(b"\n")
            inflate = zlib.decompressobj()
            buffers = {"z": bytearray(inflate.decompress(rest)), "r": bytearray(inflate.unused_data)}
            if not inflate.eof:
                raise ValueError("a published payload ends inside its deflated part")
        else:
            raw = zlib.decompress(packed)
            fields = 3
            if not raw.startswith(_DEFLATED_MAGIC):
                raise ValueError("a published payload does not start with its header")
            header, _, rest = raw[len(_DEFLATED_MAGIC):].partition(b"\n")
            buffers = {"z": bytearray(rest)}
    except zlib.error as err:
        raise ValueError(f"a published payload is damaged ({err})") from None
    try:
        header = json.loads(header)
    except ValueError:
        raise ValueError("a published payload does not start with its header") from None
    if not isinstance(header, list) or not all(isinstance(e, list) and len(e) == fields and isinstance(e[0], str) for e in header):
        raise ValueError("a published payload's header does not list its arrays")
    at, out = dict.fromkeys(buffers, 0), {}  # writable arrays (bytearrays), as np.load gives
    for name, dtype, shape, *where in header:
        where = where[0] if where else "z"
        if not isinstance(where, str) or where not in buffers:
            raise ValueError(f"a published payload's {name} is stored neither deflated nor plain ({where!r})")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"a published payload's {name} has no shape")
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"a published payload's {name} names no dtype ({dtype!r})") from None
        if dtype.hasobject:
            raise ValueError(f"a published payload's {name} is not plain values")
        size = math.prod(shape) * dtype.itemsize
        if at[where] + size > len(buffers[where]):
            raise ValueError(f"a published payload ends inside its {name}")
        out[name] = np.frombuffer(buffers[where], dtype, math.prod(shape), at[where]).reshape(shape)
        at[where] += size
    if any(at[where] != len(buffer) for where, buffer in buffers.items()):
        raise ValueError("a published payload holds more bytes than its arrays")
    return out


def _placeholder(record_id: str) -> list[float]:
    angle = zlib.crc32(record_id.encode()) / 2**32 * 2 * math.pi
    return [math.cos(angle), math.sin(angle)]


def _server_time(collection) -> float:
    """The Chroma server's clock, in seconds (its heartbeat answers in nanoseconds)."""
    return collection._client.heartbeat() / 1e9


def _checked_version(version: object) -> str:
    """A version name as builds make them: anything else read from the server (a path, say) is refused."""
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
        raise StoreError(f"the Chroma server names an index version {str(version)[:40]!r}, which no build "
                         "makes; rebuild with `qa index` on the build machine")
    return version


class Publication:
    """The published side of one index on a Chroma server: payloads, manifests, `current`, leases."""

    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name  # this collection's; the vectors' is `name` without SUFFIX
        self.control = name.removesuffix(SUFFIX) + CONTROL_SUFFIX
        self._client = None
        self._opened: dict[str, object] = {}  # collection name -> collection, through `_client`
        self._lock = threading.Lock()

    @classmethod
    def of_index(cls, settings: Settings) -> "Publication":
        """The publication of the index built in `settings.index_dir`."""
        return cls(settings, collection_name(settings) + SUFFIX)

    @classmethod
    def named(cls, settings: Settings, index_name: str) -> "Publication":
        return cls(settings, f"qa-index-{index_name}{SUFFIX}")

    def _collection(self, name: str, create: bool = False):
        """A collection, through one client kept for this object's life (making one costs ~0.1 s)."""
        with self._lock:
            if self._client is None:
                self._client = _client(self.settings, self.settings.index_dir)
            if name not in self._opened:
                get = self._client.get_or_create_collection if create else self._client.get_collection
                self._opened[name] = get(name, embedding_function=None)
            return self._opened[name]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._opened = {}

    def _call(self, what: str, action, create: bool = False, control: bool = False):
        """Run `action(collection)` on the published collection (the control one if `control`); a server
        that cannot do it is a StoreError saying what failed (and the client is made anew next time:
        the server may have restarted or lost the collection)."""
        from chromadb.errors import NotFoundError

        name, collection = self.control if control else self.name, None
        try:
            try:
                collection = self._collection(name, create)
            except NotFoundError:
                if not control:
                    raise
                collection = None  # published by a build before the control collection: nothing written there yet
            return action(collection)
        except StoreError:
            raise
        except NotFoundError:  # not there, or deleted under a handle opened before (never read as empty)
            self.close()
            if control and collection is not None:
                raise StoreError(f"the collection {name} was deleted on the Chroma server at {self.settings.chroma_url} "
                                 f"while in use (cannot {what}); the next call opens it again") from None
            raise StoreError(f"no index is published as {self.name} on the Chroma server at {self.settings.chroma_url}; "
                             "build it there with `qa index` (QA_CHROMA_URL set), which prints the name to serve") from None
        except Exception as err:
            self.close()
            raise StoreError(f"cannot {what} on the Chroma server at {self.settings.chroma_url} "
                             f"({type(err).__name__}: {err})") from err

    # -- the build's side

    def missing(self, keys: list[Key], version: str) -> tuple[list[Key], bool]:
        """The payloads the server does not hold (whole), of these, and whether it lacks the version's manifest."""
        def find(collection) -> set[str]:
            found: set[str] = set()
            batch = collection._client.get_max_batch_size()
            ids = [_part_id(_source_name(key), 0) for key in keys] + [_part_id(f"version@{version}", 0)]
            for i in range(0, len(ids), batch):
                found.update(collection.get(ids=ids[i : i + batch], include=[])["ids"])
            return found
        found = self._call("look up published sources", find, create=True)
        return ([key for key in keys if _part_id(_source_name(key), 0) not in found],
                _part_id(f"version@{version}", 0) not in found)

    def add(self, payloads: dict[Key, str], manifest: dict | None = None) -> None:
        """Payloads and a version's manifest, in one request when they are few."""
        records = [(_source_name(key), text, {"kind": "source", "source_id": key[0], "embedded": key[1]})
                   for key, text in payloads.items()]
        if manifest is not None:
            text = base64.b64encode(zlib.compress(json.dumps(manifest, ensure_ascii=False).encode(), 6)).decode("ascii")
            records.append((f"version@{manifest['version']}", text, {"kind": "version", "version": manifest["version"]}))
        self._call("publish the index", lambda c: _put(c, records), create=True)

    def set_current(self, version: str) -> None:
        """Name `version` in the control collection, then delete an older build's `current` from the
        published one (which workers would follow first)."""
        self._call("switch the published version", lambda c: c.upsert(
            ids=["current"], embeddings=[_placeholder("current")], metadatas=[{"kind": "current", "version": version}]),
            create=True, control=True)

        def drop_legacy(collection) -> None:
            if collection.get(ids=["current"], include=[])["ids"]:
                collection.delete(ids=["current"])
        self._call("switch the published version", drop_legacy)

    def current(self) -> str | None:
        def read(collection) -> str | None:
            got = collection.get(ids=["current"], include=["metadatas"]) if collection is not None else {"ids": []}
            return _checked_version(got["metadatas"][0].get("version")) if got["ids"] else None
        legacy = self._call("read the published version", read)  # an older build's, written after this code's
        return legacy if legacy is not None else self._call("read the published version", read, control=True)

    def has_version(self, version: str) -> bool:
        got = self._call("look up a published version", lambda c: c.get(ids=[_part_id(f"version@{version}", 0)], include=[]))
        return bool(got["ids"])

    # -- the worker's side

    def manifest(self, version: str) -> dict:
        """Raises IndexUnavailable when the version is gone (deleted by a clean-up) or damaged."""
        _checked_version(version)
        text = self._call("read a published manifest", lambda c: _take(c, [f"version@{version}"])).get(f"version@{version}")
        if text is None:
            raise versions.IndexUnavailable(f"index version {version} is no longer published on {self.settings.chroma_url}")
        try:
            manifest = json.loads(zlib.decompress(base64.b64decode(text)))
        except (ValueError, zlib.error) as err:
            raise versions.IndexUnavailable(f"the published manifest of index version {version} is unreadable ({err}); "
                                            f"{versions.FULL_REBUILD_HINT} on the build machine") from err
        if manifest.get("checksum") != versions.manifest_checksum(manifest) or manifest.get("version") != version:
            raise versions.IndexUnavailable(f"the published manifest of index version {version} fails its checksum; "
                                            f"{versions.FULL_REBUILD_HINT} on the build machine")
        return manifest

    def payloads(self, keys: list[Key]) -> dict[Key, str]:
        """Raises IndexUnavailable naming what the server lacks."""
        names = {_source_name(key): key for key in keys}
        texts = self._call("read published sources", lambda c: _take(c, list(names)))
        lacking = sorted(set(names) - set(texts))
        if lacking:
            raise versions.IndexUnavailable(f"the Chroma server lacks the published data of {len(lacking)} source(s) "
                                            f"({', '.join(lacking[:3])}); {versions.FULL_REBUILD_HINT} on the build machine")
        return {names[name]: text for name, text in texts.items()}

    def write_lease(self, held: set[str]) -> None:
        """This process's lease: the versions it holds, stamped with the server's clock (the clean-up
        reads it on the server's clock too, so the machines' clocks need not agree)."""
        lease = f"lease@{_HOST}-{os.getpid()}-{_TOKEN}"  # a token: containers share hostnames and pids
        if held:
            self._call("write a lease", lambda c: c.upsert(ids=[lease], embeddings=[_placeholder(lease)], metadatas=[
                {"kind": "lease", "versions": json.dumps(sorted(held)), "beat": _server_time(c)}]), create=True, control=True)
        else:
            self._call("drop a lease", lambda c: c.delete(ids=[lease]), create=True, control=True)

    # -- the clean-up's side

    def held(self) -> set[str]:
        """Versions named by live leases and `current`, in the control collection and, written by older
        code, the published one; dead leases are deleted."""
        def read(collection) -> set[str]:
            if collection is None:
                return set()
            got = collection.get(where={"kind": {"$in": ["lease", "current"]}}, include=["metadatas"])
            held, dead, now = set(), [], _server_time(collection)
            for record_id, meta in zip(got["ids"], got["metadatas"]):
                beat = meta.get("beat")
                if meta["kind"] == "current":
                    held.add(str(meta.get("version")))
                elif isinstance(beat, (int, float)) and now - beat < versions.LEASE_TTL:
                    held.update(json.loads(meta["versions"]))
                else:
                    dead.append(record_id)
            if dead:
                collection.delete(ids=dead)
            return held
        return (self._call("read the stateless workers' leases", read, create=True)
                | self._call("read the stateless workers' leases", read, control=True))

    def prune(self, keys: set[str], stale: dict[str, list[str]], remaining: list[str]) -> None:
        """Delete, from the index's vectors and from what is published, the records no remaining
        version uses: those embedded by none of `keys` (the embedding versions remaining versions
        name; a killed build's are not), those of `stale` (embedding version -> source ids no
        remaining version takes from it), and the manifests of versions not `remaining`."""
        from chromadb.errors import NotFoundError

        vectors = self.name.removesuffix(SUFFIX)
        gone = [{"$and": [{"embedded": key}, {"source_id": {"$in": sids}}]} for key, sids in stale.items()]
        source = {"kind": "source"}
        clauses = [{"$and": [source, {"embedded": {"$nin": sorted(keys)}}]} if keys else source]  # $nin refuses []
        clauses += [{"$and": [source, clause]} for clause in gone]
        clauses.append({"$and": [{"kind": "version"}, {"version": {"$nin": remaining}}]} if remaining else {"kind": "version"})

        def delete(collection) -> None:
            client = self._client
            try:
                if not keys:
                    client.delete_collection(vectors)
                else:
                    unused = [{"embedded": {"$nin": sorted(keys)}}, *gone]
                    client.get_collection(vectors, embedding_function=None).delete(
                        where={"$or": unused} if len(unused) > 1 else unused[0])
            except NotFoundError:
                pass
            # One delete per collection: each is a scan of its metadata on the server.
            collection.delete(where={"$or": clauses})
        self._call("delete old records", delete, create=True)

def _source_name(key: Key) -> str:
    return f"{key[0]}@{key[1]}"


def _part_id(name: str, part: int) -> str:
    return f"{name}#{part}"


def _put(collection, records: list[tuple[str, str, dict]]) -> None:
    """Upsert texts split in parts, the first part of each last: a first part found means the text is whole."""
    rows = []
    for name, text, meta in records:
        parts = max(1, math.ceil(len(text) / PART_CHARS))
        rows.extend((part, _part_id(name, part), {**meta, "name": name, "part": part, "parts": parts,
                                                   "data": text[part * PART_CHARS : (part + 1) * PART_CHARS]})
                    for part in range(parts))
    rows.sort(key=lambda row: -row[0])
    for i in range(0, len(rows), RECORDS_PER_REQUEST):
        batch = rows[i : i + RECORDS_PER_REQUEST]
        collection.upsert(ids=[r[1] for r in batch], embeddings=[_placeholder(r[1]) for r in batch], metadatas=[r[2] for r in batch])


def _take(collection, names: list[str]) -> dict[str, str]:
    """The whole texts of these names that the collection holds."""
    firsts: dict[str, dict] = {}
    for i in range(0, len(names), RECORDS_PER_REQUEST):
        got = collection.get(ids=[_part_id(n, 0) for n in names[i : i + RECORDS_PER_REQUEST]], include=["metadatas"])
        firsts.update((m["name"], m) for m in got["metadatas"])
    rest = [_part_id(name, part) for name, m in firsts.items() for part in range(1, m["parts"])]
    parts: dict[str, str] = {}
    for i in range(0, len(rest), RECORDS_PER_REQUEST):
        got = collection.get(ids=rest[i : i + RECORDS_PER_REQUEST], include=["metadatas"])
        parts.update(zip(got["ids"], (m["data"] for m in got["metadatas"])))
    texts = {}
    for name, first in firsts.items():
        tail = [parts.get(_part_id(name, part)) for part in range(1, first["parts"])]
        if None not in tail:
            texts[name] = first["data"] + "".join(tail)
    return texts


class Follower:
    """A stateless worker's view of a published index: which version to serve (the server's
    `current`, looked up at most every CURRENT_TTL seconds), and a lease on the server naming the
    versions this process holds, refreshed by a heartbeat."""

    def __init__(self, settings: Settings):
        self.publication = Publication.named(settings, settings.chroma_index)
        self.folder = settings.index_dir / "mirror" / settings.chroma_index
        self._pinned: dict[str, int] = {}
        self._lock = threading.Lock()
        self._current: tuple[float, str | None] = (-math.inf, None)
        self._heartbeat: threading.Thread | None = None

    def wanted(self) -> str | None:
        """The published current version. Raises StoreError when the server cannot say."""
        checked, version = self._current
        if time.monotonic() - checked >= CURRENT_TTL:
            version = self.publication.current()
            self._current = (time.monotonic(), version)
        return version

    def pin(self) -> str | None:
        """Name the current version in this process's lease, then check it is still current (as
        `versions.pin`): a clean-up that could delete it comes after a later switch and sees the lease."""
        version = self.publication.current()
        for _ in range(10):
            if version is None:
                return None
            self._hold(version)
            try:
                now = self.publication.current()
            except BaseException:
                self.release(version)
                raise
            if now == version:
                self._current = (time.monotonic(), version)
                return version
            self.release(version)
            version = now
        self._hold(version)
        return version

    def _hold(self, version: str) -> None:
        with self._lock:
            self._pinned[version] = self._pinned.get(version, 0) + 1
        try:
            self.beat()
        except BaseException:  # not named on the server: not held
            self.release(version)
            raise
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beats, name="qa-published-lease", daemon=True)
            self._heartbeat.start()

    def release(self, version: str) -> None:
        with self._lock:
            if self._pinned.get(version, 0) > 1:
                self._pinned[version] -= 1
            else:
                self._pinned.pop(version, None)

    def held(self) -> set[str]:
        with self._lock:
            return set(self._pinned) | versions.held_by_this_process(self.folder)

    def beat(self) -> None:
        """Write this process's lease now (else the heartbeat does, every HEARTBEAT_SECONDS)."""
        self.publication.write_lease(self.held())

    def _beats(self) -> None:
        while True:
            time.sleep(versions.HEARTBEAT_SECONDS)
            try:
                self.beat()
            except StoreError:
                pass  # the server is away: the next beat tries again (the lease outlives LEASE_TTL - beat)
