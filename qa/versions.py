"""Index versions on disk: the layout, the checksummed manifest, the switch, leases and clean-up.

Layout of the index folder:
    CURRENT                 name of the version being served (replaced atomically: the switch)
    versions/<version>/     one complete version; manifest.json is written last and checksummed;
                            .verified.json: each file's stat when its checksum last matched
    leases/<host>-<pid>.json  one per process holding versions open: which ones; its mtime is a heartbeat
    trash/<version>/        a version being deleted (then, on a Chroma server, the records no remaining version names)
    .build.lock             held by the one build that may run at a time
    .job.json               the rebuild started over HTTP: state, report (see `qa.rebuild`)

A process that loads a version first names it in its lease, then checks that `CURRENT` still names
it (so no clean-up that could have missed the lease can delete it), and keeps it in its lease until it
closes the version. Clean-up after a build deletes every version that is neither `CURRENT` nor held
by a live lease. A lease is live while its process runs (same host: the pid and its start time) or,
seen from another host sharing the folder, while its heartbeat is fresher than `LEASE_TTL` seconds.
Deleting moves the version into trash/ first, so no reader can open half of it; a collection drop or
removal that fails is reported and retried by the next clean-up.

Usage:
    >>> version = pin(index_dir)            # held until release(index_dir, version)
    >>> manifest = seal(version_dir, manifest, files); switch(index_dir, version)
    >>> warnings = clean_up(settings, keep={version})
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from qa.config import Settings

CURRENT = "CURRENT"
VERSIONS = "versions"
LEASES = "leases"
TRASH = "trash"
LOCK = ".build.lock"
MANIFEST = "manifest.json"
VERIFIED = ".verified.json"
# A stamp holds for a file last changed this long before its stat: then no rewrite can follow the
# stat within the same tick of the file system's clock and keep the stamped times. Linux file systems
# take times from the kernel's tick (at most 10 ms); one keeping whole seconds (FAT, HFS+, some
# network shares) gets the longer margin.
RACY_NS = 100_000_000
COARSE_RACY_NS = 2_000_000_000
INDEX_ID = "ID"  # the index's own name: its collection on a Chroma server that several indexes share
FULL_REBUILD_HINT = "run `qa index --full` to rebuild it"
HEARTBEAT_SECONDS = 10.0
LEASE_TTL = 120.0  # a lease from another host not refreshed for this long is dead


class IndexUnavailable(Exception):
    """The index is missing, damaged or incompatible; the message names the fix."""


def current_version(index_dir: Path) -> str | None:
    try:
        name = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return name or None


def version_dir(index_dir: Path, version: str) -> Path:
    return index_dir / VERSIONS / version


def exists(index_dir: Path, version: str) -> bool:
    """Whether `version` is complete and not deleted (its manifest goes first when it is)."""
    return (version_dir(index_dir, version) / MANIFEST).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path, stamp: bool = False) -> dict:
    """The version's manifest, its checksum checked unless the file's stat is as when it last
    matched, as for the version's files (`verify_files`; 0.37 s of a load at 1M chunks). `stamp`:
    record a match in `.verified.json` (a load does; a look at a version, maybe one being deleted, does not)."""
    checked_at = time.time_ns()  # before the stat, as in seal()
    try:
        with (folder / MANIFEST).open("rb") as f:
            # Of the file read, even if the manifest is replaced meanwhile (always whole: write_atomic).
            stat = _stamp(os.fstat(f.fileno()))
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise IndexUnavailable(f"index version {folder.name} has no manifest; {FULL_REBUILD_HINT}") from None
    except (OSError, ValueError) as err:
        raise IndexUnavailable(f"the manifest of index version {folder.name} is unreadable ({err}); {FULL_REBUILD_HINT}") from err
    if not isinstance(manifest, dict):
        raise IndexUnavailable(f"the manifest of index version {folder.name} fails its checksum; {FULL_REBUILD_HINT}")
    verified = _verified(folder)
    stamped = [manifest.get("checksum"), *stat]
    if verified.get(MANIFEST) != stamped:
        if manifest.get("checksum") != manifest_checksum(manifest):
            raise IndexUnavailable(f"the manifest of index version {folder.name} fails its checksum; {FULL_REBUILD_HINT}")
        if stamp:
            _write_verified(folder, {**verified, MANIFEST: stamped}, checked_at, verified)
    return manifest


def current_manifest(index_dir: Path, stamp: bool = False) -> dict:
    """The manifest of the version being served, or {} when there is none or it cannot be read."""
    version = current_version(index_dir)
    try:
        return read_manifest(version_dir(index_dir, version), stamp) if version else {}
    except IndexUnavailable:
        return {}


def verify_files(folder: Path, manifest: dict) -> None:
    """Check every file against its manifest checksum. A file whose stat (inode, size, modification
    and change times) is as when its checksum last matched, in this boot, is not read again: any
    write or replacement changes one of them (hashing a 1M-chunk version took 4.3 s of every load)."""
    verified = _verified(folder)
    checked_at = time.time_ns()  # before the stats, as in seal()
    now = {MANIFEST: verified[MANIFEST]} if MANIFEST in verified else {}  # read_manifest's
    for name, expected in manifest["files"].items():
        path = folder / name
        stamp = [expected, *_stat(path)] if path.is_file() else None
        if stamp is None or (verified.get(name) != stamp and file_sha256(path) != expected):
            raise IndexUnavailable(f"index file {name} of version {folder.name} is missing or damaged; {FULL_REBUILD_HINT}")
        now[name] = stamp
    _write_verified(folder, now, checked_at, verified)


def _stat(path: Path) -> list[int]:
    return _stamp(path.stat())


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _boot() -> str:
    """This boot's id: after a crash, a file's stat may be as stamped while its blocks never reached the disk."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # no boot id: stamps hold across boots


def _verified(folder: Path) -> dict:
    try:
        verified = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(verified, dict) or verified.get("boot") != _boot() or not isinstance(verified.get("files"), dict):
        return {}
    # A damaged entry is no stamp: the file is checked, and its entry written anew.
    return {name: stamp for name, stamp in verified["files"].items() if isinstance(stamp, list) and len(stamp) == 5
            and isinstance(stamp[0], str) and all(type(n) is int for n in stamp[1:])}


def _write_verified(folder: Path, stamps: dict, checked_at: int, previous: dict | None = None) -> None:
    """Keep the stamps of files last changed well before they were checked (git's "racily clean"
    rule: a file rewritten within a clock tick of its stat could keep the stamped times)."""
    settled = {name: stamp for name, stamp in stamps.items() if _settled(stamp, checked_at)}
    if settled == previous:
        return
    try:
        write_atomic(folder / VERIFIED, json.dumps({"boot": _boot(), "files": settled}))
    except OSError:
        pass  # a read-only copy: every load checks every file, as before


def _settled(stamp: list, checked_at: int) -> bool:
    """Whether a file of this stamp was last changed long enough before `checked_at` (its stat's time)."""
    mtime, ctime = stamp[-2], stamp[-1]
    coarse = not (mtime % 1_000_000_000 or ctime % 1_000_000_000)
    return ctime < checked_at - (COARSE_RACY_NS if coarse else RACY_NS)


def new_version(index_dir: Path) -> tuple[str, Path]:
    """A fresh, empty version folder (not served until `publish`)."""
    version = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    folder = version_dir(index_dir, version)
    folder.mkdir(parents=True)
    return version, folder


def index_id(index_dir: Path) -> str:
    """The index's own name on a Chroma server, made by a build (under the build lock) and kept by the
    later ones (`--full` too). It is tied to the index folder itself (its inode): a copy of the folder
    (`cp -a`, a restored backup) gets a name of its own at its first build, so two indexes never share
    a collection, where each one's clean-up would delete the other's records. A server reads the
    collection a version uses from its manifest, never from here."""
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / INDEX_ID
    inode = str(index_dir.stat().st_ino)
    try:
        name, made_in = path.read_text(encoding="utf-8").split()
        if re.fullmatch(r"[0-9a-f]{16}", name) and made_in == inode:
            return name
    except (OSError, ValueError):  # none yet, or unreadable: a new name (a new collection) is safe
        pass
    name = secrets.token_hex(8)
    write_atomic(path, f"{name} {inode}\n")
    return name


def recorded_id(index_dir: Path) -> str | None:
    """The name the `ID` file holds, whether or not it was made in this folder."""
    try:
        return (index_dir / INDEX_ID).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None


def seal(folder: Path, manifest: dict, files: tuple[str, ...]) -> dict:
    """Checksum `files` and write the manifest, last: the version is complete. Returns the manifest written."""
    checked_at = time.time_ns()
    stats = {name: _stat(folder / name) for name in files}  # before reading: a later write changes them
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # hashlib and reads let go of the GIL
        manifest = {**manifest, "files": dict(zip(files, pool.map(file_sha256, [folder / name for name in files])))}
    manifest["checksum"] = manifest_checksum(manifest)
    _write_verified(folder, {name: [digest, *stats[name]] for name, digest in manifest["files"].items()}, checked_at)
    # Not indented: json's fast encoder writes only compact text (seconds less for a manifest of 100k sources).
    write_atomic(folder / MANIFEST, json.dumps(manifest, ensure_ascii=False))
    return manifest


def switch(index_dir: Path, version: str) -> None:
    """Make `version` the one served."""
    write_atomic(index_dir / CURRENT, version + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def clean_up(settings: Settings, keep: set[str], publication=None, known: Mapping[str, dict] | None = None) -> list[str]:
    """Delete versions neither kept nor held by a live lease; retry what an earlier clean-up could
    not finish. Returns a warning for each version that could not be deleted yet. On a Chroma
    server, `publication` (a `qa.published.Publication`; made and closed here if None) deletes the
    records, and `known` (version -> its manifest, as a build read or wrote it) spares reading those
    manifests again (0.5 s each at 1M chunks)."""
    from qa.published import Publication

    own = publication is None and settings.chroma_url
    if own:
        publication = Publication.of_index(settings)
    try:
        return _clean_up(settings, keep, publication, known or {})
    finally:
        if own:
            publication.close()


def _clean_up(settings: Settings, keep: set[str], publication, known: Mapping[str, dict]) -> list[str]:
    from qa.store import StoreError, VectorStore

    index_dir = settings.index_dir
    keep = keep | held_versions(index_dir) | {current_version(index_dir)} - {None}
    if publication is not None:  # what stateless workers hold, and the published current version
        try:
            keep |= publication.held()
        except StoreError as err:  # without their leases, nothing may go
            return [f"could not read the stateless workers' leases ({err}); old index versions are kept until the next build"]
    trash = index_dir / TRASH
    versions = index_dir / VERSIONS
    doomed = []
    for path in sorted(versions.iterdir()) if versions.is_dir() else []:
        if path.name not in keep:
            try:
                trash.mkdir(exist_ok=True)
                path.rename(trash / path.name)  # readers now see it gone; the manifest went with it
            except OSError:  # a full disk can refuse even a directory: delete in place, manifest first
                (path / MANIFEST).unlink(missing_ok=True)
                doomed.append(path)
    gone = doomed + (sorted(trash.iterdir()) if trash.is_dir() else [])
    manifests: dict[Path, dict | None] = {}
    if settings.chroma_url:  # before the folders go: their manifests say which shared records they used
        remaining = sorted(versions.iterdir()) if versions.is_dir() else []
        manifests = {path: known.get(path.name) or _manifest_or_none(path) for path in remaining + gone}
        keys, stale = _unused(_records(manifests[p] for p in remaining), _records(manifests[p] for p in gone))
        try:
            publication.prune(keys, stale, [path.name for path in remaining])
        except Exception as err:  # the versions stay in trash/: the next clean-up tries again
            return [f"could not delete the vector records of index versions {', '.join(p.name for p in gone)} "
                    f"({type(err).__name__}: {err}); the next build will try again"]
    warnings = []
    for path in gone:
        try:
            if not (manifests.get(path) or {}).get("collection"):  # a format before 5: its own collection
                VectorStore.drop(settings, path, path.name)
            shutil.rmtree(path)
        except Exception as err:  # kept in trash/: the next clean-up tries again
            warnings.append(f"could not delete index version {path.name} ({type(err).__name__}: {err}); "
                            "the next build will try again")
    return warnings


def _unused(live: set[tuple[str, str]], gone: set[tuple[str, str]]) -> tuple[set[str], dict[str, list[str]]]:
    """The embedding versions remaining versions name, and, per embedding version, the sources of
    gone versions that no remaining version takes from it."""
    keys = {key for _, key in live}
    stale: dict[str, list[str]] = {}
    for sid, key in sorted(gone - live):
        if key in keys:
            stale.setdefault(key, []).append(sid)
    return keys, stale


def _manifest_or_none(folder: Path) -> dict | None:
    try:
        return read_manifest(folder)
    except IndexUnavailable:
        return None


def _records(manifests: Iterable[dict | None]) -> set[tuple[str, str]]:
    """(source id, version that embedded it) of each source of these versions; a version whose
    manifest cannot be read (None) names none (it cannot be served either)."""
    return {(sid, entry["embedded"]) for manifest in manifests if manifest
            for sid, entry in manifest["sources"].items() if "embedded" in entry}


# Leases: which versions this process holds, per index folder, written to leases/ on every change.

_held: dict[Path, dict[str, int]] = {}
lease_errors: dict[Path, str] = {}  # index folder -> why this process's lease could not be written (retried by the heartbeat)
_held_lock = threading.Lock()
_heartbeat: threading.Thread | None = None
_HOST = socket.gethostname()


def _process_start(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot), to tell it from a later process given the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _lease_path(index_dir: Path) -> Path:
    return index_dir / LEASES / f"{_HOST}-{os.getpid()}.json"


def _write_lease(index_dir: Path, versions: dict[str, int]) -> None:
    path = _lease_path(index_dir)
    if not versions:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"host": _HOST, "pid": os.getpid(), "start": _process_start(os.getpid()),
                                   "index": str(index_dir.resolve()), "versions": sorted(versions)}))


def _beat() -> None:
    while True:
        time.sleep(HEARTBEAT_SECONDS)
        with _held_lock:
            for index_dir, versions in _held.items():
                try:
                    if versions:
                        if _lease_path(index_dir).exists():
                            os.utime(_lease_path(index_dir))
                        else:  # removed by someone who thought this process dead, or never written: write it
                            _write_lease(index_dir, versions)
                            lease_errors.pop(index_dir, None)
                except OSError:
                    pass  # the index folder may be gone (tests) or the disk full; try again next beat


def hold(index_dir: Path, version: str) -> None:
    """Name `version` in this process's lease (counted: each hold needs one release)."""
    global _heartbeat
    key = index_dir.resolve()
    with _held_lock:
        versions = _held.setdefault(key, {})
        versions[version] = versions.get(version, 0) + 1
        if versions[version] == 1:
            try:
                _write_lease(key, versions)
            except OSError as err:  # a read-only or full disk: serve unprotected rather than not at all
                lease_errors[key] = f"cannot write a lease in {key / LEASES} ({err}); versions this process serves may be deleted under it"
            else:
                lease_errors.pop(key, None)
        if _heartbeat is None or not _heartbeat.is_alive():
            _heartbeat = threading.Thread(target=_beat, name="qa-lease-heartbeat", daemon=True)
            _heartbeat.start()


def release(index_dir: Path, version: str) -> None:
    key = index_dir.resolve()
    with _held_lock:
        versions = _held.get(key, {})
        if version not in versions:
            return
        versions[version] -= 1
        if versions[version] == 0:
            del versions[version]
            try:
                _write_lease(key, versions)
            except OSError:
                pass  # the lease keeps a version too many until the next change: safe


def pin(index_dir: Path) -> str | None:
    """Hold the version `CURRENT` names and return it (None: no index). After the hold is written,
    `CURRENT` is read again: a version still current then can only be deleted by a clean-up that
    comes after a later switch, and that clean-up sees the lease."""
    version = current_version(index_dir)
    for _ in range(10):
        if version is None:
            return None
        hold(index_dir, version)
        now = current_version(index_dir)
        if now == version:
            return version
        release(index_dir, version)
        version = now
    hold(index_dir, version)  # builds switch faster than we can look: the load will tell if it is gone
    return version


def pid_alive(pid: object) -> bool:
    """Whether a process with this pid runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _alive(lease: dict, mtime: float) -> bool:
    if lease.get("host") != _HOST:
        return time.time() - mtime < LEASE_TTL
    pid = lease.get("pid")
    return pid_alive(pid) and (lease.get("start") is None or _process_start(pid) in (None, lease["start"]))


def held_by_this_process(index_dir: Path) -> set[str]:
    with _held_lock:
        return set(_held.get(index_dir.resolve(), {}))


def held_versions(index_dir: Path) -> set[str]:
    """Versions named by live leases; dead leases (and leases copied from another folder) are removed."""
    held: set[str] = set()
    folder = index_dir / LEASES
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            lease = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue  # being replaced right now, or unreadable: look again next time
        copied = lease.get("host") == _HOST and lease.get("index") != str(index_dir.resolve())  # cp -r of a folder
        if not copied and _alive(lease, mtime):
            held.update(lease.get("versions", []))
        else:
            path.unlink(missing_ok=True)
    return held
