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


def test_each_hostile_file_is_one_problem_and_the_rest_is_read(tmp_path):
    (tmp_path / "news" / "2025").mkdir(parents=True)
    (tmp_path / "news" / "2025" / "good.txt").write_text("The bridge reopened in 2031.", encoding="utf-8")
    (tmp_path / "utf16.txt").write_bytes(b"\xff\xfeA")  # a byte-order mark, then half a code unit
    os.symlink("loop-b.txt", tmp_path / "loop-a.txt")
    os.symlink("loop-a.txt", tmp_path / "loop-b.txt")
    os.symlink("self.txt", tmp_path / "self.txt")
    # Declares a codec that is no character encoding: decoding with it would make lone surrogates.
    (tmp_path / "escape.html").write_bytes(b'<meta charset="unicode_escape"><p>caf\xe9 \\ud800 \\x00 na\xefve</p>')
    os.symlink(tmp_path.parent, tmp_path / "linked-folder")
    sources, problems = _problems(tmp_path)
    assert "news/2025/good" in sources
    for name, reason in [("utf16.txt", "UTF-16"), ("loop-a.txt", "loop"), ("loop-b.txt", "loop"),
                         ("self.txt", "loop"), ("linked-folder", "not followed")]:
        assert reason in problems[name].reason and problems[name].skipped, (name, problems[name])
    for source in sources.values():
        source.text.encode("utf-8")  # no lone surrogate can reach sources.json
    if "escape.html" in sources:  # read with a detected charset, never with the declared codec
        assert "not UTF-8" in problems["escape.html"].reason and not problems["escape.html"].skipped
    else:
        assert problems["escape.html"].skipped


def test_nested_folders_ids_and_hidden_entries(tmp_path):
    (tmp_path / "news" / "2025").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.txt").write_text("hidden folder", encoding="utf-8")
    (tmp_path / ".draft.txt").write_text("hidden file", encoding="utf-8")
    (tmp_path / "top.txt").write_text("A top-level text keeps its old id.", encoding="utf-8")
    (tmp_path / "news" / "2025" / "a.txt").write_text("Nested text.", encoding="utf-8")
    (tmp_path / "news" / "2025" / "odd #name?.text").write_text("Odd name.", encoding="utf-8")
    (tmp_path / "sources.toml").write_text('["news/2025/a"]\ntitle = "By id"\n["news/2025/odd #name?.text"]\ntitle = "By path"\n',
                                           encoding="utf-8")
    sources, problems = _problems(tmp_path)
    assert set(sources) == {"top", "news/2025/a", "news/2025/odd -name-.text"}
    assert sources["news/2025/a"].meta.title == "By id"
    assert sources["news/2025/odd -name-.text"].meta.title == "By path"
    assert sources["news/2025/a"].file_name == "news/2025/a.txt"
    assert not problems


def test_an_empty_folder_or_one_without_readable_files_gives_no_sources(tmp_path):
    assert SourceReader().run(tmp_path) == ([], [])
    (tmp_path / "empty.txt").write_bytes(b"")
    sources, problems = SourceReader().run(tmp_path)
    assert not sources and problems[0].reason == "empty file"
