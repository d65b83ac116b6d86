"""BM25 analysis across scripts: unspaced Chinese and Japanese become searchable."""
from qa.lexical import LexicalIndex, terms


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
