"""What a passage is read under (a plain-text article's first line stands for its title), which
near-copies are folded away, the chunks hits carry, and signals that do not depend on the process."""
import os
import subprocess
import sys

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


def test_a_near_copy_in_another_source_is_folded_only_when_it_states_the_same_figures(tmp_path, embedder):
    folder = tmp_path / "src"
    folder.mkdir()
    report = ("The Ostrevik Chamber Choir opened its new concert hall on the northern quay in {year}, "
              "after four years of building work paid for by the city council and private donors.")
    # a and b carry the same report; c the same words with another year: another fact, never folded away.
    for name, year in [("a", 1912), ("b", 1912), ("c", 1913)]:
        (folder / f"{name}.txt").write_text(f"Report {name}\n\n{report.format(year=year)}\n", encoding="utf-8")
    settings = Settings.from_env({"sources_dir": folder, "index_dir": tmp_path / "index"})
    IndexBuilder(settings, embedder=embedder).run()
    index = load_index(settings)
    try:
        hits = Retriever(embedder).run(index, "When did the Ostrevik Chamber Choir open its concert hall?", k=5).hits
        sources = [h.chunk.source_id for h in hits]
        assert sorted(sources) in (["a", "c"], ["b", "c"]), sources
    finally:
        index.close()


def test_a_hits_chunk_is_the_one_the_table_reads(seed_index, embedder):
    """Ranking makes its hits' chunks from the sentence rows it has read: they must be the table's."""
    index = load_index(seed_index)
    try:
        retriever = Retriever(embedder)
        checked = 0
        for question in ("When was the treaty signed?", "Who ratified the agreement?", "What does the treaty cover?",
                         "Which sanctions were mentioned?", "How long is the treaty valid?"):
            for hit in retriever.run(index, question, k=10).hits:
                assert hit.chunk == index.chunks[index.position[hit.chunk.id]]
                assert hit.chunk.start <= hit.highlight[0] < hit.highlight[1] <= hit.chunk.end
                checked += 1
        assert checked >= 30
    finally:
        index.close()


FEATURES_OF = """
import hashlib, sys
from qa.config import Settings
from qa.embedding import Embedder
from qa.indexing import load_index
from qa.retrieval import Retriever
settings = Settings.from_env()
index = load_index(settings)
retriever = Retriever(Embedder.for_settings(settings))
for question in sys.argv[1:]:
    pool = retriever.pool(index, question, retriever.embedder.encode_question(question), 40)
    print(hashlib.sha256(pool.features.tobytes() + pool.question.tobytes()).hexdigest())
"""


def test_two_workers_compute_the_same_signals_bit_for_bit_whatever_their_hash_seeds(seed_index):
    """Sets iterate in an order each process's hash seed picks: no signal may depend on it, or two
    workers behind one address could rank the same question differently."""
    questions = ["When did Maduro enact the treaty law?", "Which areas of cooperation does the treaty cover?",
                 "Who signed the strategic partnership treaty in Moscow?"]
    runs = [subprocess.run([sys.executable, "-c", FEATURES_OF, *questions], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONHASHSEED": seed, "QA_INDEX": str(seed_index.index_dir)})
            for seed in ("1", "2", "3")]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    hashes = [r.stdout.split() for r in runs]
    assert len(hashes[0]) == len(questions) and hashes[0] == hashes[1] == hashes[2]
