"""BM25 analysis across scripts: unspaced Chinese and Japanese become searchable."""
import os

import numpy as np
import pytest

from qa.analysis import TermCounts, terms
from qa.lexical import LexicalIndex, best

def test_cjk_runs_become_character_bigrams_and_latin_words_are_stemmed():
    assert terms("The treaties 东京大学") == ["treati", "东京", "京大", "大学"]
    assert terms("中") == ["中"]


def test_an_unspaced_chinese_or_japanese_question_finds_its_passage():
    texts = [
        "东京大学的研究人员开发了一种新的电池技术。该电池可以在十分钟内充满电。",
        "北京的天气预报说明天会下雨，气温将下降到五度。",
        "大阪の市場では魚の価格が先月より二割上がった。",
        "The treaty was signed in Moscow on May 7.",
    ]
    index = LexicalIndex.build(texts)
    assert index.search("电池多长时间能充满电？", n=2)[0][0] == 0
    assert index.search("明天北京会下雨吗", n=2)[0][0] == 1
    assert index.search("大阪の魚の価格はどうなった", n=2)[0][0] == 2
    assert index.search("Where was the treaty signed?", n=2)[0][0] == 3
    assert all(index.knows(t) for t in terms("充满电"))


def test_a_repeated_word_is_searched_once():
    from qa.lexical import LexicalIndex

    bm25 = LexicalIndex.build(["the treaty was signed in May", "oil fields and gas fields", "a treaty on oil"])
    assert bm25.search("treaty " * 500, 3) == bm25.search("treaty", 3)


def test_a_term_the_corpus_lacks_weighs_most():
    bm25 = LexicalIndex.build(["the treaty was signed in May", "oil fields and gas fields", "a treaty on oil"])
    treaty, oil, field, eiffel = bm25.idf(terms("treaty oil fields Eiffel"))
    # A question term the sources never use keeps its weight: covering the other terms is not covering it.
    assert eiffel > field > treaty == oil > 0


def _columns(retriever) -> dict[str, tuple[list[int], list[float]]]:
    """Each term's postings: the texts holding it and their scores."""
    scores = retriever.scores
    return {term: (scores["indices"][scores["indptr"][i] : scores["indptr"][i + 1]].tolist(),
                   scores["data"][scores["indptr"][i] : scores["indptr"][i + 1]].tolist())
            for term, i in retriever.vocab_dict.items() if term}


TEXTS = ["The treaty was signed in Moscow on May 7.", "Oil fields in Zulia; the oil fields of Zulia.", "",
         "东京大学的研究人员开发了一种新的电池技术。", "7", "The bridge opened in 2031, the bridge closed in 2032."]


def test_bm25_from_term_counts_scores_exactly_as_bm25s_indexes():
    import bm25s

    reference = bm25s.BM25()
    reference.index([terms(t) for t in TEXTS], show_progress=False)
    assert _columns(LexicalIndex.build(TEXTS).retriever) == _columns(reference)


@pytest.mark.parametrize("texts", [[*TEXTS, "To be or not to be."], ["\U0001f44d", *TEXTS], ["***"]])
def test_texts_without_a_term_first_last_or_alone_score_as_bm25s_indexes(texts):
    """A text of stop words or symbols only has no term: wherever it sits, the index is built."""
    import bm25s

    built = LexicalIndex.build(texts)
    if texts == ["***"]:
        assert built.search("treaty oil", 3) == ([], [])
        return
    reference = bm25s.BM25()
    reference.index([terms(t) for t in texts], show_progress=False)
    assert _columns(built.retriever) == _columns(reference)
    assert texts.index("Oil fields in Zulia; the oil fields of Zulia.") == built.search("oil fields", 1)[0][0]


def test_bm25_assembled_from_kept_counts_equals_one_built_from_scratch():
    """A build keeps the counts of texts it already had (ids of the old vocabulary), counts only new
    texts, and drops the terms of removed ones: the same index as counting everything again."""
    vocabulary: dict[str, int] = {}
    old = TermCounts.of(TEXTS, vocabulary)
    new = TermCounts.of(["A new bridge over the Orinoco.", "The treaty again."], vocabulary)
    kept = [old.slice(0, 1), old.slice(3, 6), new]  # the second and third texts removed
    assembled, counts = LexicalIndex.from_counts(TermCounts.concat(kept, list(vocabulary)))
    texts = [TEXTS[0], *TEXTS[3:], "A new bridge over the Orinoco.", "The treaty again."]
    scratch = LexicalIndex.build(texts)
    assert _columns(assembled.retriever) == _columns(scratch.retriever)
    assert "zulia" not in counts.vocabulary and len(counts.rows) == len(texts) + 1
    for question in ("bridge", "treaty Moscow", "oil fields", "东京"):
        assert assembled.search(question, 5) == scratch.search(question, 5)


@pytest.mark.parametrize("size,positive,distinct", [(50, 0.5, 20), (200_000, 0.5, 1000), (200_000, 0.0001, 50), (200_000, 1.0, 3)])
def test_best_is_the_top_n_of_the_whole_array_with_ties_in_index_order(size, positive, distinct):
    """Large arrays go through the sample's floor first (many ties, few positive scores, all tied):
    the result is still exactly the top n of a full sort."""
    rng = np.random.default_rng(size + distinct)
    scores = np.where(rng.random(size) < positive, rng.integers(1, distinct + 1, size) / distinct, 0).astype(np.float32)
    for n in (1, 40, 500):
        docs, values = best(scores, n)
        expected = [i for i in np.lexsort((np.arange(size), -scores)) if scores[i] > 0][:n]
        assert docs.tolist() == expected and values.tolist() == scores[expected].tolist()


def test_best_of_nothing_is_nothing():
    scores = np.array([0.0, 2.0, 1.0], np.float32)
    assert [a.tolist() for a in best(scores, 0)] == [[], []] and best(scores, 5)[0].tolist() == [1, 2]


def test_scores_are_bm25s_own_sums_in_memory_and_read_from_files(tmp_path):
    """The sparse product over a query's postings gives bm25s's `get_scores` float32 sums exactly,
    with and without a mask, for an index built here and one read term by term from its files."""
    import random

    rng = random.Random(3)
    words = ["treaty", "oil", "field", "signed", "moscow", "caracas", "bridge", "energy", "loan", "port", "grain"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(400)] + TEXTS
    built = LexicalIndex.build(texts)
    built.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path, built.size)
    mask = np.array([rng.random() < 0.5 for _ in texts], dtype=np.float32)
    for question in ("treaty signed in Moscow", "oil field oil", "grain port loan energy bridge", "Zulia"):
        known = [t for t in dict.fromkeys(terms(question)) if built.knows(t)]
        for index in (built, loaded):
            for weights in (None, mask):
                ours, theirs = index.scores(known, weights), index.retriever.get_scores(known, weight_mask=weights)
                assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
                assert weights is not None or ours.any()


def _saved(tmp_path):
    built = LexicalIndex.build(TEXTS + ["the treaty of oil fields"] * 40)
    built.save(tmp_path)
    return built, tmp_path / "indices.csc.index.npy"


def test_no_terms_score_nothing_in_memory_or_from_files(tmp_path):
    built, _ = _saved(tmp_path)
    for index in (built, LexicalIndex.load(tmp_path, built.size)):
        assert index.scores([]).shape == (built.size,) and not index.scores([]).any()


@pytest.mark.parametrize("damage", ["overwritten", "truncated"])
def test_postings_damaged_under_a_loaded_index_raise_a_clear_error_not_a_crash(tmp_path, damage):
    """scipy's product does not check the text numbers it is given: a damaged file must be caught first."""
    from qa.lexical import DamagedPostings

    built, path = _saved(tmp_path)
    loaded = LexicalIndex.load(tmp_path, built.size)
    known = [t for t in terms("treaty oil fields") if loaded.knows(t)]
    assert loaded.search("treaty oil fields", 3)[0]
    size = path.stat().st_size
    if damage == "overwritten":  # the same length, every text number past the end
        with path.open("r+b") as f:
            f.seek(size - 4 * 60)
            f.write(np.full(60, 10_000, np.int32).tobytes())
    else:
        os.truncate(path, size - 4 * 60)
    with pytest.raises(DamagedPostings, match="qa index --full"):
        loaded.scores(known)


def test_a_question_on_damaged_postings_is_a_503_that_names_the_fix(seed_index, embedder, tmp_path):
    import shutil
    from dataclasses import replace

    from qa.service import QAService, ServiceUnavailable

    settings = replace(seed_index, index_dir=tmp_path / "index")
    shutil.copytree(seed_index.index_dir, settings.index_dir, ignore=shutil.ignore_patterns("leases"))
    service = QAService(settings, embedder=embedder)
    index = service.index()
    try:
        assert service.answer("When was the treaty signed?", 5).answer.hits
        path = settings.index_dir / "versions" / index.version / "bm25" / "indices.csc.index.npy"
        indptr, vocab = index.lexical.retriever.scores["indptr"], index.lexical.retriever.vocab_dict
        postings = np.load(path, mmap_mode="r+")  # under the loaded version: its checksums were checked at load
        postings[indptr[vocab["moscow"]] : indptr[vocab["moscow"] + 1]] = -5
        postings.flush()
        del postings
        with pytest.raises(ServiceUnavailable, match="BM25 postings .* `qa index --full`"):
            service.answer("When was the treaty signed in Moscow?", 5)
    finally:
        index.close()
