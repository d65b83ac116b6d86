import os

from qa.sources import SourceReader


def _problems(folder):
    sources, problems = SourceReader().run(folder)
    return {s.id: s for s in sources}, {p.file_name: p for p in problems}


def test_bad_files_are_reported_once_and_the_rest_is_read(tmp_path):
    (tmp_path / "good.txt").write_text("The treaty was signed on May 7.", encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.txt").write_bytes("Le traité a été signé à Moscou, où il fut célébré.".encode("latin-1"))
    outside = tmp_path.parent / "outside-secret.txt"
    outside.write_text("secret", encoding="utf-8")
    os.symlink(outside, tmp_path / "link.txt")
    (tmp_path / "name with spaces ü.txt").write_text("Unicode names are fine.", encoding="utf-8")
    sources, problems = _problems(tmp_path)
    assert set(sources) == {"good", "latin1", "name with spaces ü"}
    assert "traité" in sources["latin1"].text
    assert not problems["latin1.txt"].skipped and "not UTF-8" in problems["latin1.txt"].reason
    assert "empty" in problems["empty.txt"].reason
    assert "binary" in problems["binary.bin"].reason
    assert "outside the sources folder" in problems["link.txt"].reason
    assert all("secret" not in s.text for s in sources.values())
    assert len(problems) == 4


def test_too_large_file_is_skipped(tmp_path):
    (tmp_path / "big.txt").write_text("word " * 1000, encoding="utf-8")
    sources, problems = SourceReader(max_bytes=1000).run(tmp_path)
    assert not sources and "limit" in problems[0].reason


def test_metadata_is_read_from_sources_toml(tmp_path):
    (tmp_path / "a.txt").write_text("Text.", encoding="utf-8")
    (tmp_path / "sources.toml").write_text('[a]\ntitle = "T"\noutlet = "O"\npublished = "2025-01-02"\n[ghost]\ntitle="x"\n', encoding="utf-8")
    sources, problems = SourceReader().run(tmp_path)
    assert sources[0].meta.title == "T" and sources[0].meta.published == "2025-01-02"
    assert any("ghost" in p.reason for p in problems)


def test_broken_metadata_is_reported_not_fatal(tmp_path):
    (tmp_path / "a.txt").write_text("Text.", encoding="utf-8")
    (tmp_path / "sources.toml").write_text("[a\n", encoding="utf-8")
    sources, problems = SourceReader().run(tmp_path)
    assert len(sources) == 1 and "cannot be parsed" in problems[0].reason
