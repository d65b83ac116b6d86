"""Rows and bytes read with pread must equal what numpy and Python read from the same file."""
import os

import numpy as np
import pytest

from qa.file_reads import FileBytes, NpyRows


@pytest.fixture
def stored(tmp_path):
    arrays = {
        "vectors": np.random.default_rng(0).standard_normal((50, 6)).astype(np.float16),
        "spans": np.arange(100, dtype=np.int64).reshape(50, 2),
        "offsets": np.cumsum(np.arange(51, dtype=np.int64)),
    }
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    return tmp_path, arrays


@pytest.mark.parametrize("key", [
    [3], [7, 8, 9, 3], [49, 0, 1, 2, 2, 2, 10], list(range(50)), [], np.array([5, 6, 4], np.int32),
])
def test_a_sequence_of_rows_reads_what_numpy_indexes(stored, key):
    folder, arrays = stored
    for name, a in arrays.items():
        rows = NpyRows(folder / f"{name}.npy")
        got = rows[key]
        assert got.dtype == a.dtype and got.shape == a[np.asarray(key, np.int64)].shape
        assert np.array_equal(got, a[np.asarray(key, np.int64)])


def test_ints_and_slices_read_what_numpy_indexes(stored):
    folder, arrays = stored
    for name, a in arrays.items():
        rows = NpyRows(folder / f"{name}.npy")
        assert rows.shape == a.shape and len(rows) == len(a)
        for i in (0, 17, 49, -1, np.int64(3)):
            assert np.array_equal(rows[i], a[i])
        for part in (slice(0, 50), slice(10, 12), slice(48, 60), slice(5, 5), slice(None)):
            assert np.array_equal(rows[part], a[part])


def test_ends_read_the_two_rows_numpy_holds_in_any_integer_layout(tmp_path, stored):
    folder, arrays = stored
    offsets = NpyRows(folder / "offsets.npy")
    pairs = [(0, 0), (0, 50), (7, 9), (49, 50), (3, 3)]
    assert offsets.ends(pairs) == [(int(arrays["offsets"][a]), int(arrays["offsets"][b])) for a, b in pairs]
    assert offsets.ends([]) == []
    for dtype in (">i8", "<i4", "u2", "i1"):
        a = np.array([-3, 5, 120, 7], dtype=np.int64).astype(dtype)
        np.save(tmp_path / "a.npy", a)
        assert NpyRows(tmp_path / "a.npy").ends([(0, 2), (1, 3)]) == [(int(a[0]), int(a[2])), (int(a[1]), int(a[3]))]
    for first, last in ((-1, 2), (3, 2), (0, 51)):
        with pytest.raises(IndexError):
            offsets.ends([(1, 2), (first, last)])
    with pytest.raises(TypeError):
        NpyRows(folder / "spans.npy").ends([(0, 1)])
    with pytest.raises(TypeError):
        NpyRows(folder / "vectors.npy").ends([(0, 1)])


def test_rows_out_of_bounds_strided_masked_or_truncated_are_refused(stored):
    folder, arrays = stored
    rows = NpyRows(folder / "vectors.npy")
    for key in (50, -51, [0, 50], [-1], [True, False], (1, 2), [0.5]):
        with pytest.raises(IndexError):
            rows[key]
    with pytest.raises(IndexError):
        rows[::2]
    data = (folder / "vectors.npy").read_bytes()
    (folder / "cut.npy").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="truncated"):
        NpyRows(folder / "cut.npy")


def test_ranges_read_together_equal_slices(tmp_path):
    data = bytes(range(256)) * 400
    (tmp_path / "f").write_bytes(data)
    ranges = [(5000, 9000), (0, 3), (102_000, 102_400 + 50), (7, 7), (60_000, 61_000)]
    f = FileBytes(tmp_path / "f")
    assert f.read_many(ranges) == [data[a:b] for a, b in ranges]
    assert f.read_many([(9, 9), (len(data), len(data))]) == [b"", b""]


def test_ranges_close_together_are_one_read(tmp_path, monkeypatch):
    from qa import file_reads

    data = bytes(range(256)) * 400
    (tmp_path / "f").write_bytes(data)
    f = FileBytes(tmp_path / "f")
    reads = []
    pread = os.pread
    monkeypatch.setattr(file_reads.os, "pread", lambda fd, n, at: reads.append((at, n)) or pread(fd, n, at))
    gap = file_reads.COALESCE_GAP
    # Unsorted, overlapping, touching and nested ranges, one just within the gap, one just beyond it.
    ranges = [(300, 340), (10, 20), (15, 35), (20, 30), (340 + gap, 400 + gap), (50_000, 50_010),
              (400 + 2 * gap + 1, 410 + 2 * gap), (12, 14)]
    assert f.read_many(ranges) == [data[a:b] for a, b in ranges]
    assert reads == [(10, 400 + gap - 10), (400 + 2 * gap + 1, 9), (50_000, 10)]


def test_file_bytes_slice_like_bytes(tmp_path):
    data = "ünïcode line\n".encode() * 1000 + b"end"
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    f = FileBytes(tmp_path / "f")
    assert len(f) == len(data)
    for part in (slice(0, 5), slice(100, 4000), slice(len(data) - 2, len(data) + 10), slice(7, 7), slice(None)):
        assert f[part] == data[part]
    assert FileBytes(tmp_path / "empty")[0:10] == b""


def test_rows_read_from_many_threads_at_once_are_each_their_own(stored):
    from concurrent.futures import ThreadPoolExecutor

    folder, arrays = stored
    rows = NpyRows(folder / "vectors.npy")
    keys = [list(np.random.default_rng(i).integers(0, 50, 20)) for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(rows.__getitem__, keys))
    assert all(np.array_equal(g, arrays["vectors"][k]) for g, k in zip(got, keys))


@pytest.mark.parametrize("runs", [[(3, 9)], [(40, 50), (0, 2), (5, 5), (7, 8)], [], [(0, 50), (0, 50)]])
def test_runs_of_rows_read_into_one_array_what_numpy_slices(stored, runs):
    folder, arrays = stored
    for name, a in arrays.items():
        got = NpyRows(folder / f"{name}.npy").runs(runs)
        wanted = np.concatenate([a[start:stop] for start, stop in runs]) if runs else a[:0]
        assert got.dtype == a.dtype and np.array_equal(got, wanted)


def test_runs_out_of_range_or_past_a_truncated_end_raise(stored):
    folder, _ = stored
    rows = NpyRows(folder / "offsets.npy")
    for bad in ([(0, 52)], [(-1, 3)], [(9, 8)]):
        with pytest.raises(IndexError):
            rows.runs(bad)
    path = folder / "offsets.npy"
    os.truncate(path, path.stat().st_size - 16)  # the file shrinks under an open reader: two rows gone
    assert np.array_equal(rows.runs([(0, 49)]), np.cumsum(np.arange(51))[:49])
    with pytest.raises(ValueError, match="ends at byte"):
        rows.runs([(40, 51)])
