import pytest

from qa.chunking import SentenceChunker, count_tokens, split_sentences
from qa.data import Source, SourceMeta
from qa.sources import SourceReader
from tests.conftest import SEEDS


def _source(text: str) -> Source:
    return Source(meta=SourceMeta(id="t"), text=text, sha256="x", file_name="t.txt")


@pytest.mark.parametrize("max_tokens", [32, 128, 256])
def test_every_chunk_is_its_source_slice_and_fits_the_budget(max_tokens):
    sources, _ = SourceReader().run(SEEDS)
    for source in sources:
        chunks = SentenceChunker(max_tokens=max_tokens).run(source)
        assert chunks
        covered = set()
        for chunk in chunks:
            assert source.text[chunk.start : chunk.end] == chunk.text
            assert chunk.sentences[0][0] == chunk.start and chunk.sentences[-1][1] == chunk.end
            assert count_tokens([chunk.text])[0] <= max_tokens + 8  # joining white space may add a token or two
            covered.update(chunk.sentences)
        # every sentence is in some chunk: nothing is lost between chunks
        assert sum(e - s for s, e in covered) >= sum(len(line.strip()) for line in source.text.splitlines()) * 0.95


def test_overlap_repeats_the_last_sentence():
    text = " ".join(f"Sentence number {i} says something different." for i in range(30))
    chunks = SentenceChunker(max_tokens=40, overlap_sentences=1).run(_source(text))
    for a, b in zip(chunks, chunks[1:]):
        assert b.sentences[0] == a.sentences[-1]


def test_one_huge_line_is_cut_into_budgeted_pieces():
    text = "word " * 20000
    chunks = SentenceChunker(max_tokens=64).run(_source(text.strip()))
    assert len(chunks) > 100
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert count_tokens([chunk.text])[0] <= 64


def test_sentences_follow_the_documents_language():
    text = "Am 3. Oktober 1990 wurde Deutschland vereinigt. La Sra. García llegó ayer."
    german = [text[s:e] for s, e in split_sentences(text, 128, "de")]
    assert german[0] == "Am 3. Oktober 1990 wurde Deutschland vereinigt."
    assert [text[s:e] for s, e in split_sentences(text, 128)][0] == "Am 3."  # English rules cut at the ordinal
    source = Source(meta=SourceMeta(id="de", language="de-AT"), text=text, sha256="", file_name="de.txt")
    assert SentenceChunker().run(source)[0].sentences[0] == (0, len(german[0]))
