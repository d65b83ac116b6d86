"""The rule-based readings ranking relies on: constraints, answer types, agreement and conflict."""
import pytest

from qa.signals import TYPE_BITS, agreement, read_question, read_text


@pytest.mark.parametrize(
    ("question", "constraints", "answer_type"),
    [
        ("Who won the Valmora Cycling Classic in 2019?", {"year:2019"}, "person"),
        ("What was Kestrel Foods' revenue in Q2 2020?", {"quarter:2", "year:2020"}, "quantity"),
        ("What was revenue in the second quarter of 2020?", {"quarter:2", "year:2020"}, "quantity"),
        ("How many films were shown at the 14th edition?", {"ordinal:14"}, "quantity"),
        ("When did the third round start?", {"ordinal:3"}, "date"),
        ("Where was the \"Blue Night\" concert held?", {"quote:blue night"}, "place"),
        ("Which city hosted the final on 7 October 2025?", {"date:10-7", "year:2025"}, "place"),
        ("Who paid the fine?", set(), "person"),
        ("Where was the price set?", set(), "place"),
        ("What did the minister say about the treaty?", set(), "other"),
    ],
)
def test_questions_are_read_into_constraints_and_an_answer_type(question, constraints, answer_type):
    asks = read_question(question)
    assert set(asks.constraints) == constraints
    assert asks.answer_type == answer_type


def test_a_quarter_is_one_constraint_whatever_its_wording():
    for wording in ("Q2 2020", "the second quarter of 2020", "2nd quarter 2020", "quarter 2 of 2020"):
        assert {"quarter:2", "year:2020"} <= read_text(f"Sales rose in {wording}.").marks, wording
    assert "ordinal:2" not in read_text("in the second quarter").marks


def test_sentences_are_read_for_answer_types():
    assert read_text("The race finished on June 14.").types & TYPE_BITS["date"]
    assert read_text("Attendance reached 38,500.").types & TYPE_BITS["quantity"]
    assert "number:38500" in read_text("Attendance reached 38,500.").marks
    assert read_text("The stage was won by Marta Keller.").types & TYPE_BITS["person"]
    assert read_text("The final was played in Dunmore.").types & TYPE_BITS["place"]
    assert not read_text("the weather was fine and everyone went home").types
    assert "month:5" not in read_text("Officials say it may rain.").marks  # the verb, not the month


def test_agreement_prefers_the_asked_year_and_flags_another():
    asks = read_question("Who won the race in 2019?")
    assert agreement(asks, read_text("Marta Keller won the 2019 race.")) == (1.0, 0.0)
    assert agreement(asks, read_text("Ana Ruiz won the 2018 race.")) == (0.0, 1.0)
    assert agreement(asks, read_text("The race is held every June.")) == (0.0, 0.0)
    assert agreement(read_question("Who won the race?"), read_text("Ana Ruiz won in 2018.")) == (0.0, 0.0)


def test_years_are_not_counted_as_quantities():
    marks = read_text("In 2019 the club sold 2019 tickets for 1,200 euros.").marks
    assert "year:2019" in marks and "number:1200" in marks and "number:2019" not in marks


def test_dates_are_one_constraint_and_odd_text_never_fails():
    assert read_text("On the 1st of May, Keller won the 3rd stage.").marks == {"date:5-1", "month:5", "ordinal:3"}
    assert "ordinal:14" not in read_text("It opens on June 14th.").marks
    asks = read_question("Who won on the 1st of May?")
    assert agreement(asks, read_text("On May 1, Keller won the 3rd stage.")) == (1.0, 0.0)
    assert read_text("Sepember 3 and 99 June").marks <= {"number:3", "month:6"}  # misspelt, impossible: no date
    assert not {m for m in read_text("15000 fans and 20000 more").marks if m.startswith("year:")}
    assert not read_text("prices may march upwards").marks  # verbs, not months


def test_letters_the_patterns_match_case_insensitively_are_read_as_their_ascii_twins():
    # Unicode IGNORECASE lets "fırst" (dotless ı) and "ſecond" (long s) match the ordinal words.
    assert read_text("the fırst round").marks == {"ordinal:1"}
    assert read_text("In the fırst quarter of 2019").marks == {"quarter:1", "year:2019"}
    assert read_text("the ſecond half").marks == {"ordinal:2"}
    assert read_question("Who was FİRST in 2019?").constraints == {"year:2019", "ordinal:1"}
    assert read_text("Revenue in the FİRST QUARTER rose").marks == {"quarter:1"}
    assert read_text("NİNTH").marks == {"ordinal:9"}
    assert read_text("TONİGHT").types & TYPE_BITS["date"] and read_text("MİLLİON").types & TYPE_BITS["quantity"]


def test_every_letter_the_patterns_take_for_an_ascii_letter_is_folded_to_it():
    import re
    import string

    from qa.signals import _fold

    patterns = {letter: re.compile(letter, re.IGNORECASE) for letter in string.ascii_lowercase}
    for code in range(128, 0x10000):  # the letters that fold to ASCII are all in the basic plane
        c = chr(code)
        for letter, pattern in patterns.items():
            if pattern.fullmatch(c):
                assert _fold(c) == letter, (hex(code), letter)


@pytest.mark.parametrize("hostile", ["Q" * 1000, "1," * 500, "A a" * 300, "\u201c" * 999, "first quarter " * 70,
                                      "Aa A. " * 166, "May " * 250])
def test_hostile_text_is_read_quickly(hostile):
    import time

    started = time.perf_counter()
    read_question(hostile)
    read_text(hostile)
    assert time.perf_counter() - started < 0.5
