from qa.cleaning import TextCleaner, repair_mojibake
from tests.conftest import SEEDS


def test_repairs_cp1250_and_cp1252_mojibake():
    assert repair_mojibake("By MisiĂłn Verdad") == "By Misión Verdad"
    assert repair_mojibake("CafÃ© naÃ¯ve") == "Café naïve"


def test_lost_soft_hyphen_is_repaired_only_with_evidence_of_the_same_damage():
    assert repair_mojibake("MisiĂłn and RodrĂguez") == "Misión and Rodríguez"
    assert repair_mojibake("RodrĂguez alone") == "RodrĂguez alone"  # no proof of cp1250 damage: untouched


def test_leaves_correct_text_alone():
    text = "Türkçe Русский İNCESU Hacı — ça va à côté; “quotes” – dashes"
    assert repair_mojibake(text) == text
    assert TextCleaner().run(text) == text


def test_drops_boilerplate_and_repeated_lines():
    raw = "\n".join([
        "A caption repeated twice. Photo: Agency.",
        "Headline",
        "A caption repeated twice. Photo: Agency.",
        "Paylaş",
        "This post is also available in: Türkçe Русский",
        "The treaty was signed on May 7.",
        "© 2025 Latin Times. All rights reserved. Do not reproduce without permission.",
        "Support Independent Journalism: Stand with Us!",
        "Every contribution counts.",
        "Be the difference: Donate now!",
    ])
    cleaned = TextCleaner().run(raw)
    assert cleaned.count("A caption repeated twice") == 1
    assert "The treaty was signed on May 7." in cleaned
    for gone in ("Paylaş", "available in", "©", "Donate", "Support Independent", "Every contribution"):
        assert gone not in cleaned


def test_plea_in_the_middle_of_an_article_is_kept():
    body = [f"Paragraph {i} of the story about donations to the flood fund." for i in range(20)]
    body[3] = "Officials urged residents to donate blood."
    assert "donate blood" in TextCleaner().run("\n".join(body))


def test_seed_article_is_repaired_and_trimmed():
    raw = (SEEDS / "000_e482c1b658f3b19c.txt").read_text(encoding="utf-8")
    cleaned = TextCleaner().run(raw)
    assert "Misión Verdad" in cleaned and "Ă" not in cleaned
    assert "Jorge Rodríguez" in cleaned
    assert "Donate" not in cleaned and "Fuel our truth-telling" not in cleaned
    assert cleaned.count("shake hands at the Kremlin") == 1
