"""What a question asks for and what a sentence offers, read by rules that hold for any English text.

Ranking and highlighting need more than topical similarity: "Who won the 2019 edition?" is
answered by the sentence that says 2019 and names a person, not by the one about 2018. This
module reads, without any model:

- a question's *constraints*: years, dates, quarters, ordinals, other numbers and quoted strings,
  each normalised to one key ("Q2 2020", "second quarter of 2020" → `quarter:2`, `year:2020`);
- a question's *answer type*: a date (when), a quantity (how many / how much), a person (who),
  a place (where);
- the same constraint keys and the answer types a sentence holds (question-independent, so
  cached per sentence).

Usage:
    >>> asks = read_question("Who won the Valmora Classic in 2019?")
    >>> asks.answer_type, sorted(asks.constraints)
    ('person', ['year:2019'])
    >>> facts = read_text("Marta Keller won the 2019 race on June 14.")
    >>> sorted(facts.marks), bool(facts.types & TYPE_BITS["person"])
    (['date:6-14', 'month:6', 'number:14', 'year:2019'], True)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

AnswerType = Literal["date", "quantity", "person", "place", "other"]
TYPE_BITS = {"date": 1, "quantity": 2, "person": 4, "place": 8}

MONTHS = {
    m: i
    for i, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
         ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
         ("november", "nov"), ("december", "dec")],
        start=1,
    )
    for m in names
}
ORDINALS = {w: i for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split(), start=1)}
NUMBER_WORDS = {w: i for i, w in enumerate(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty".split(), start=1)}

_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
YEAR = re.compile(r"(?<![\d.,])(1[5-9]\d\d|20\d\d)(?!\d)(?![.,]\d)")
DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH})\b\.?", re.IGNORECASE)
MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?!\s*(?:,\d|\d))", re.IGNORECASE)
MONTH = re.compile(rf"\b({_MONTH})\b(?!-)", re.IGNORECASE)
QUARTER = re.compile(
    r"\bQ([1-4])\b|\b(first|second|third|fourth|1st|2nd|3rd|4th)[\s-]+quarter\b|\bquarter\s+([1-4])\b", re.IGNORECASE)
ORDINAL = re.compile(r"\b(\d{1,3})(?:st|nd|rd|th)\b|\b(" + "|".join(ORDINALS) + r")\b", re.IGNORECASE)
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])")
DIGIT = re.compile(r"\d")
# A digit, a "q", or one of these words (in `_fold`ed text) is in every match of the pattern it
# guards: a sentence holding none is not searched. Most sentences hold no date, figure or ordinal,
# and a question reads hundreds of sentences it has not seen: these checks are most of that cost.
MONTH_STEMS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DATE_WORD_STEMS = ("day", "tomorrow", "tonight", "century", "decade", "week", "month", "year", "spring", "summer",
                   "autumn", "fall", "winter")
QUANTITY_WORD_STEMS = (*NUMBER_WORDS, "dozen", "hundred", "thousand", "million", "billion", "trillion", "half",
                       "percent", "%", "$", "€", "£", "¥")
QUOTED = re.compile(r"[\"“«„]([^\"“”«»„]{2,80})[\"”»“]")

DATE_WORDS = re.compile(
    r"\b(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day|yesterday|today|tomorrow|tonight|century|decade|"
    r"(?:last|next|this)\s+(?:week|month|year|spring|summer|autumn|fall|winter))\b", re.IGNORECASE)
QUANTITY_WORDS = re.compile(
    r"\b(?:" + "|".join(NUMBER_WORDS) + r"|dozens?|hundreds?|thousands?|millions?|billions?|trillions?|half|percent)\b|[%$€£¥]",
    re.IGNORECASE)
# Two or more capitalised words in a row ("Marta Keller", "Jean-Paul A. Rivière"), or a title and a name.
# Places and organisations match too: a weak signal whose weight is fitted, not trusted.
PERSON = re.compile(
    r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sir|Dame|Lord|Lady)\.?\s+[A-ZÀ-Þ]|"
    r"\b(?!(?:The|A|An|In|On|At|For|By|From|To|Of|And|But|After|Before|During|When|While|Its?|This|That|Their|His|Her)\b)"
    r"[A-ZÀ-Þ][a-zß-ÿ'’-]+(?:\s+(?:[A-ZÀ-Þ]\.\s*)?[A-ZÀ-Þ][a-zß-ÿ'’-]+)+")
PLACE = re.compile(r"\b(?i:in|at|from|near|outside|across|to|into|of)\s+(?:the\s+)?[A-ZÀ-Þ][\w'’-]+")
AMBIGUOUS_MONTHS = {"may", "march"}  # also verbs: a month only when capitalised
NAME = re.compile(r"(?<=\s)[A-Z][\w'’-]*")  # a capitalised word after the first: a name the answer must be about
# A forecast, hope, plan or claim is not a report of the fact: "analysts expect $412 million" does
# not corroborate "sales climbed to $412 million", nor "aims to keep closures below 12 days" "fell to 12 days".
# Lower case only: a capitalised "May" is the month.
HEDGE = re.compile(r"\b(?:expect(?:s|ed)?|could|may|might|will|would|aim(?:s|ed)?|hope(?:s|d)?|plan(?:s|ned)?|"
                   r"forecast(?:s)?|predict(?:s|ed)?|estimate(?:s|d)?|consensus|preview|argue(?:s|d)?|likely|set to|due to)\b")

# Tried in order: the question's own words ("how many", "who", "where") before the nouns that only
# suggest a quantity ("Who paid the fine?" wants a person).
QUESTION_TYPES: list[tuple[AnswerType, re.Pattern[str]]] = [
    ("quantity", re.compile(r"\bhow\s+(?:many|much|long|far|tall|high|big|large|old|often|fast|deep|wide|heavy)\b|"
                            r"\bwhat\s+(?:number|percentage|share|proportion|amount|sum|total|figure)\b", re.I)),
    ("date", re.compile(r"\bwhen\b|\b(?:what|which)\s+(?:year|date|day|month|decade|century|time)\b|\bsince when\b", re.I)),
    ("person", re.compile(r"\bwho(?:m|se)?\b|\b(?:which|what)\s+(?:person|man|woman|player|rider|driver|athlete|artist|author|"
                          r"singer|actor|actress|director|candidate|coach|captain|leader|minister|president|chief|founder|winner|scientist)\b", re.I)),
    ("place", re.compile(r"\bwhere\b|\b(?:which|what|in which|in what)\s+(?:city|country|town|village|venue|place|region|"
                         r"state|province|island|county|district|stadium|port|site|location|capital)\b", re.I)),
    ("quantity", re.compile(r"\b(?:revenue|profit|loss|cost|price|budget|salary|fee|fine|sales|turnover|earnings|worth|valued|"
                            r"attendance|population|score|margin|rate)\b", re.I)),
]


@dataclass(frozen=True)
class TextFacts:
    """What a sentence or passage states that a question may constrain: normalised keys and answer types."""

    marks: frozenset[str]
    types: int  # OR of TYPE_BITS

    @property  # made when asked (a question with constraints), not for every text a question reads
    def kinds(self) -> frozenset[str]:
        """"year", "quarter", … of the marks."""
        return frozenset(m.split(":", 1)[0] for m in self.marks)


@dataclass(frozen=True)
class QuestionAsks:
    """What a question constrains and what kind of answer it wants."""

    constraints: frozenset[str]
    answer_type: AnswerType
    type_bit: int = 0
    by_kind: tuple[tuple[str, frozenset[str]], ...] = ()  # the constraints of each kind that can conflict


def _number(whole: str, fraction: str | None) -> str:
    return whole.replace(",", "") + (f".{fraction}" if fraction else "")


def _marks(text: str, folded: str) -> set[str]:
    """`folded`: the text as `_fold` gives it (the caller's, made once)."""
    marks: set[str] = set()
    digits = DIGIT.search(text) is not None
    quarters = "q" in folded
    years = {m.group(1) for m in YEAR.finditer(text)} if digits else set()
    marks.update(f"year:{y}" for y in years)
    for pattern, day, month in ((DAY_MONTH, 1, 2), (MONTH_DAY, 2, 1)) if digits else ():
        for m in pattern.finditer(text):
            if 1 <= int(m.group(day)) <= 31 and (name := m.group(month).rstrip(".")).lower() in MONTHS:
                if name.lower() not in AMBIGUOUS_MONTHS or name[0].isupper():
                    marks.add(f"date:{MONTHS[name.lower()]}-{int(m.group(day))}")
    for m in MONTH.finditer(text) if _holds(folded, MONTH_STEMS) else ():
        word = m.group(1)
        if word.lower() in MONTHS and (word.lower() not in AMBIGUOUS_MONTHS or word[0].isupper()):
            marks.add(f"month:{MONTHS[word.lower()]}")
    for m in QUARTER.finditer(text) if quarters else ():
        q = m.group(1) or m.group(3) or m.group(2)
        marks.add(f"quarter:{ORDINALS.get(_fold(q), None) or int(q[0])}")
    # A quarter is not also an ordinal, nor a date's day also a number ("June 14th", "1st of May").
    if quarters:
        text = QUARTER.sub(" ", text)
    if digits:
        text = DAY_MONTH.sub(" ", MONTH_DAY.sub(" ", text))
    for m in ORDINAL.finditer(text) if digits or _holds(folded, ORDINALS) else ():
        marks.add(f"ordinal:{int(m.group(1)) if m.group(1) else ORDINALS[_fold(m.group(2))]}")
    for m in NUMBER.finditer(text) if digits else ():
        value = _number(m.group(1), m.group(2))
        if value not in years:
            marks.add(f"number:{value}")
    for m in QUOTED.finditer(text):
        marks.add(f"quote:{' '.join(m.group(1).lower().split())}")
    return marks


def _fold(text: str) -> str:
    """Lower-cased as the patterns' IGNORECASE matches letters: "FİRST", "fırst" and "ſecond" are
    "first" and "second" there, though lower() gives "fi̇rst", "fırst" and "ſecond"."""
    return text.lower().replace("i\u0307", "i").replace("ı", "i").replace("ſ", "s")


def _holds(folded: str, words) -> bool:
    return any(w in folded for w in words)


def read_text(text: str) -> TextFacts:
    """Constraint keys and answer types a sentence or passage holds."""
    folded = _fold(text)
    marks = _marks(text, folded)
    types = 0
    if any(m.startswith(("year:", "date:", "month:")) for m in marks) or (
            _holds(folded, DATE_WORD_STEMS) and DATE_WORDS.search(text)):
        types |= TYPE_BITS["date"]
    if any(m.startswith("number:") for m in marks) or (_holds(folded, QUANTITY_WORD_STEMS) and QUANTITY_WORDS.search(text)):
        types |= TYPE_BITS["quantity"]
    if PERSON.search(text):
        types |= TYPE_BITS["person"]
    if PLACE.search(text):
        types |= TYPE_BITS["place"]
    return TextFacts(frozenset(marks), types)


def names(text: str) -> list[str]:
    """The capitalised words after the first, months and date words left out: whom or what a
    sentence is about ("Roy Daza", "Moscow")."""
    return [w for w in NAME.findall(text) if w.lower().rstrip(".") not in MONTHS and not DATE_WORDS.fullmatch(w)]


def read_question(question: str) -> QuestionAsks:
    """The question's constraints (quoted strings, dates, quarters, ordinals, numbers) and answer type."""
    answer_type: AnswerType = next((t for t, pattern in QUESTION_TYPES if pattern.search(question)), "other")
    marks = _marks(question, _fold(question))
    # A full date already carries its month: counting the bare month too would weigh it twice.
    if any(m.startswith("date:") for m in marks):
        marks = {m for m in marks if not m.startswith("month:")}
    by_kind = tuple((kind, frozenset(m for m in marks if m.startswith(kind + ":"))) for kind in CONFLICTING
                    if any(m.startswith(kind + ":") for m in marks))
    return QuestionAsks(frozenset(marks), answer_type, TYPE_BITS.get(answer_type, 0), by_kind)


CONFLICTING = ("year", "quarter", "ordinal", "date")  # kinds where another value means another event


def agreement(asks: QuestionAsks, text: TextFacts) -> tuple[float, float]:
    """(share of the question's constraints the text states, 1.0 if the text states another value of
    a kind the question constrains — another year, quarter, ordinal — and not the asked one)."""
    if not asks.constraints:
        return 0.0, 0.0
    kinds = text.kinds
    conflict = any(kind in kinds and not asked & text.marks for kind, asked in asks.by_kind)
    return len(asks.constraints & text.marks) / len(asks.constraints), float(conflict)
