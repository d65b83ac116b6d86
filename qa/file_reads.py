"""Parts of a version's files read on demand with `os.pread`, for a worker that serves it.

Memory-mapped, every page a question touched stayed mapped in the worker and counted in its
resident memory, although the page cache already holds it for all workers: at 1M chunks a worker
serving on a Chroma server reached 3.6 GB, 2.8 GB of it mapped files, nearly all the index's
(README, Performance).
Read with `pread`, the same bytes come from the same shared page cache and a worker keeps only
what a question copies out: a few hundred rows. Rows within `COALESCE_GAP` bytes of each other
(a run of consecutive rows, a small index's scattered ones) are one read.

Usage:
    >>> vectors = NpyRows(version_dir / "sentence_vectors.npy")
    >>> vectors[[7, 8, 9, 3, 90_000]] @ query    # two reads: rows 3-9, then row 90,000
    >>> text = FileBytes(version_dir / "sources.jsonl")[120:4_000]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)  # not on macOS: reads then go one by one
# Ranges this close are read as one: copying a few KB more costs less than a read (a system call).
COALESCE_GAP = 8192


class FileBytes:
    """A file's bytes, sliced with `[start:end]`; each slice is one read."""

    def __init__(self, path: Path):
        # A file object, not a bare descriptor: closed when the last reference to it goes, never
        # while a request still reads it (so a descriptor number is never reused under a reader).
        self._file = open(path, "rb", buffering=0)
        self.name = path.name
        self.size = os.fstat(self._file.fileno()).st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, step = part.indices(self.size)
        if step != 1:
            raise IndexError("FileBytes reads contiguous slices only")
        return self.read(start, stop - start)

    def read_many(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each (start, end) range, in the order asked. Ranges at most `COALESCE_GAP`
        bytes apart are read as one (a question's rows of a small index lie a few bytes apart: hundreds of
        reads became a handful); the reads left are asked of the kernel together first (`prefetch`)."""
        if len(ranges) < 2:
            return [self.read(start, end - start) for start, end in ranges]
        spans: list[list[int]] = []  # merged [start, end], in file order
        span_of = [0] * len(ranges)
        for i in sorted(range(len(ranges)), key=lambda i: ranges[i][0]):
            start, end = ranges[i]
            if spans and start - spans[-1][1] <= COALESCE_GAP:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
            span_of[i] = len(spans) - 1
        if len(spans) > 1:
            self.prefetch(spans)
        blobs = [self.read(start, end - start) for start, end in spans]
        return [blobs[s][start - spans[s][0] : end - spans[s][0]] for (start, end), s in zip(ranges, span_of)]

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Ask the kernel for these (start, end) ranges now (`POSIX_FADV_WILLNEED`, which does not
        wait). Where the page cache lacks some of them (an index larger than it, or pages the system
        reclaimed), reads one by one wait for the disk in turn; asked for together, their reads
        overlap: at 1M chunks with the index's files out of the page cache, a question's answer
        took 21.6-25.1 ms at p50 against 35.8-59.4 ms read by read (README, Performance)."""
        if _WILLNEED is None:
            return
        fd = self._file.fileno()
        try:
            for start, end in ranges:
                if end > start:  # a length of 0 means "to the end of the file"
                    os.posix_fadvise(fd, start, end - start, _WILLNEED)
        except OSError:  # only a hint: a file system that refuses it is read as before
            pass

    def read_into(self, ranges: list[tuple[int, int]], buffer: memoryview) -> None:
        """The bytes of each (start, end) range, one after another, straight into `buffer` (as long
        as they are together): no copy beyond the kernel's. A short read is retried; a file that
        ends first raises ValueError."""
        if buffer.nbytes != (wanted := sum(end - start for start, end in ranges)):
            raise ValueError(f"a buffer of {buffer.nbytes} bytes for ranges of {wanted}")
        fd, filled = self._file.fileno(), 0
        for start, end in ranges:
            while start < end:
                got = os.preadv(fd, [buffer[filled : filled + end - start]], start)
                if not got:
                    raise ValueError(f"{self.name} ends at byte {start}, before {end}")
                start, filled = start + got, filled + got

    def read(self, at: int, size: int) -> bytes:
        """`size` bytes from `at` (fewer at the end of the file); a short read is retried."""
        parts, fd = [], self._file.fileno()
        while size > 0:
            part = os.pread(fd, size, at)
            if not part:
                break
            parts.append(part)
            at, size = at + len(part), size - len(part)
        return b"".join(parts)


class NpyRows:
    """The rows of a C-ordered `.npy` array, indexed like an ndarray along its first axis (an int,
    a slice of step 1, or a sequence of ints); every result is an in-memory copy."""

    def __init__(self, path: Path):
        self._file = FileBytes(path)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{path}: .npy format {version} is not read here (np.save writes 1.0 or 2.0)")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read_header(f)
            self._data_at = f.tell()
        if fortran and len(shape) > 1:
            raise ValueError(f"{path} holds a Fortran-ordered array; rows are read from C order")
        if not shape or self.dtype.hasobject:
            raise ValueError(f"{path} holds no rows of plain values")
        self.shape: tuple[int, ...] = tuple(shape)
        self._row_shape = self.shape[1:]
        self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * self.dtype.itemsize
        if self._file.size < self._data_at + self.shape[0] * self._row_bytes:  # as np.load refuses it
            raise ValueError(f"{path} is shorter than its {self.shape} {self.dtype} array: truncated")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | list[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} is out of bounds for {len(self)} rows")
            return self._rows(i, 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("NpyRows reads slices of step 1 only")
            return self._rows(start, max(0, stop - start))
        rows = np.asarray(key)
        if isinstance(key, tuple) or (rows.size and rows.dtype.kind not in "iu"):  # no masks, no (row, column)
            raise IndexError("NpyRows takes a row, a slice or a sequence of row numbers")
        rows = rows.astype(np.int64, copy=False).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"a row is out of bounds for {len(self)} rows")
        # A range per run of consecutive rows (a chunk's sentences lie together); close runs are one read.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(rows)]]).tolist()
        parts = self._file.read_many([self._range(int(rows[a]), b - a) for a, b in zip(starts, ends)]) if len(rows) else []
        return np.frombuffer(b"".join(parts), self.dtype).reshape((len(rows), *self._row_shape))

    def ends(self, pairs: list) -> list[tuple[int, int]]:
        """Rows `first` and `last` of a 1-d integer array for each (first, last) pair (offsets: where a
        run of lines starts and ends), a read each and without an array: a question asks this for each
        of its candidates."""
        if self._row_shape or self.dtype.kind not in "iu":
            raise TypeError("ends() reads a 1-d integer array")
        for first, last in pairs:
            if not 0 <= first <= last < len(self):
                raise IndexError(f"rows {first} and {last} are not both within {len(self)} rows")
        size, order = self.dtype.itemsize, {">": "big", "<": "little"}.get(self.dtype.byteorder, sys.byteorder)
        signed = self.dtype.kind == "i"
        return [(int.from_bytes(raw[:size], order, signed=signed), int.from_bytes(raw[-size:], order, signed=signed))
                for raw in self._file.read_many([self._range(first, last - first + 1) for first, last in pairs])]

    def runs(self, runs: list[tuple[int, int]]) -> np.ndarray:
        """The rows of each [start, stop) run, one run after another, read into one array (a query's
        postings: no concatenation of a read per run)."""
        for start, stop in runs:
            if not 0 <= start <= stop <= len(self):
                raise IndexError(f"rows {start}:{stop} are not within {len(self)} rows")
        out = np.empty((sum(stop - start for start, stop in runs), *self._row_shape), self.dtype)
        if out.size:  # an empty view cannot be cast to bytes
            self._file.read_into([self._range(start, stop - start) for start, stop in runs], memoryview(out).cast("B"))
        return out

    def prefetch(self, runs: list[tuple[int, int]]) -> None:
        """Ask the kernel for these [start, stop) runs of rows before they are read (`FileBytes.prefetch`)."""
        self._file.prefetch([self._range(start, stop - start) for start, stop in runs])

    def _range(self, first: int, count: int) -> tuple[int, int]:
        at = self._data_at + first * self._row_bytes
        return at, at + count * self._row_bytes

    def _bytes(self, first: int, count: int) -> bytes:
        return self._file.read(self._data_at + first * self._row_bytes, count * self._row_bytes)

    def _rows(self, first: int, count: int) -> np.ndarray:
        return np.frombuffer(self._bytes(first, count), self.dtype).reshape((count, *self._row_shape))
