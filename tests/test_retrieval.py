"""What a passage is read under: a plain-text article's first line stands for its title."""
from qa.config import Settings
from qa.indexing import IndexBuilder, load_index
from qa.retrieval import Retriever

FILLER = ("The weather on the coast was mild for most of that period, with light winds and occasional rain "
          "that kept the fields green and the harbour busy with small boats. ")


def test_a_deep_passage_is_read_under_the_articles_first_line(tmp_path, embedder):
    folder = tmp_path / "src"
    folder.mkdir()
    # Two articles whose deep paragraphs differ only by year: only the first line says which is which,
    # and it lies too far above for a section heading (no stated title: no sources.toml).
    for name, title, year in [("a", "Halvard Philharmonic Orchestra", 1887), ("b", "Ostrevik Chamber Choir", 1912)]:
        body = "\n\n".join(FILLER * 4 for _ in range(20))
        (folder / f"{name}.txt").write_text(f"{title}\n\n{body}\n\nIt was founded in {year} by the city council.\n",
                                            encoding="utf-8")
    settings = Settings.from_env({"sources_dir": folder, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    index = load_index(settings)
    retriever = Retriever(embedder)
    for question, source, year in [("When was the Halvard Philharmonic Orchestra founded?", "a", "1887"),
                                   ("When was the Ostrevik Chamber Choir founded?", "b", "1912")]:
        top = retriever.run(index, question, k=3).hits[0]
        assert top.chunk.source_id == source and year in top.chunk.text
    assert index.sources["a"].meta.title is None  # ranking reads the first line; citations never claim it
