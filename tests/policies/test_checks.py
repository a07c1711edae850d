"""Programmatic checks: the metric vocabulary, the compact form, repair and revision verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.checks import (
    METRICS, Check, compare_with_baseline, format_check, parse_check, passes_all, repair, run_check,
    verify_revision,
)
from policies.language import detect_language
from tests.fixtures import REPO

FEEDBACK = Path("/work/shared/eval/c3po_feedback.jsonl")
if not FEEDBACK.exists():  # the eval data lives beside the repo; CI may mount it elsewhere
    FEEDBACK = REPO.parent / "shared" / "eval" / "c3po_feedback.jsonl"


def quantitative() -> list[dict]:
    if not FEEDBACK.exists():
        pytest.skip("c3po_feedback.jsonl not available")
    rows = [json.loads(line) for line in FEEDBACK.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["type"] == "quantitative"]


# For every quantitative feedback: an answer that follows it, one that does not, and the
# baseline answer they are compared with (used by `length`).
BASE = "Hi Jared, I wanted to let you know that the quarterly report is finished and attached for your review."
ANSWERS = {
    "c3po-000": ("Can't wait to see you tonight 😘", "Can't wait to see you tonight!", None),
    "c3po-001": ("Hey John, the deploy & the migration are done.", "Hey John, the deploy and the migration are done.", None),
    "c3po-002": ("Jared, report attached.", BASE + " Let me know if you have any questions at all.", BASE),
    "c3po-003": ("```python\nimport os\nos.listdir('.')\n```", "You can use os.listdir:\n```python\nos.listdir('.')\n```", None),
    "c3po-008": ("The epidemic in Rwanda peaked in the 1990s.", "Therefore, the epidemic in Rwanda peaked early.", None),
    "c3po-075": ("Great shot!", "What a great shot, the light is amazing and the colours really pop, well done!", "Great shot, love it!"),
    "c3po-077": ("Congrats on the new job, man 👍", "Congrats on the new job 💖", None),
    "c3po-079": ("Beautiful sunset over the bay", "Beautiful sunset #travel #sunset", None),
    "c3po-080": ("Oh the night is young\nand so are we", "Oh, the night is young!\nAnd so are we.", None),
    "c3po-082": ("Hi Sam, the numbers are in.\n\nCheerio,\nSasha", "Hi Sam, the numbers are in.\n\nBest,\nSasha", None),
    "c3po-084": ("haha lol that's so you", "haha that's so you", None),
    "c3po-086": ("I'll ask Doris about the weekend.", "I'll ask my mom about the weekend.", None),
    "c3po-091": ("Background: tension.\nEvent: the storming.\nConsequences: a republic.",
                 "Background: tension.\nEvent: the storming.", None),
    "c3po-092": ("Try 'The Intelligent Investor' 📚", "Try 'The Intelligent Investor'.", None),
}


def test_every_quantitative_feedback_parses_round_trips_and_judges_hand_written_answers():
    rows = quantitative()
    assert len(rows) == 14
    assert {r["id"] for r in rows} == set(ANSWERS)
    for row in rows:
        checks = [Check.model_validate(c) for c in row["checks"]]
        for check in checks:
            compact = format_check(check)
            assert parse_check(compact) == check, compact
        good, bad, baseline = ANSWERS[row["id"]]
        assert passes_all(checks, good, baseline), (row["id"], good)
        assert not passes_all(checks, bad, baseline), (row["id"], bad)


def test_compact_form_examples_and_leniency():
    assert format_check(Check(metric="starts_with", value="Summary:")) == 'starts_with "Summary:"'
    assert format_check(Check(metric="contains_none_strings", value=["😀", "🎉"])) == 'contains_none_strings ["😀", "🎉"]'
    assert format_check(Check(metric="length")) == "length"
    assert parse_check('starts_with "Summary:"') == Check(metric="starts_with", value="Summary:")
    assert parse_check("starts_with Summary:").value == "Summary:"  # bare string
    assert parse_check("starts_with 'Summary:'").value == "Summary:"
    assert parse_check("contains_none_strings ['a', 'b']").value == ["a", "b"]  # Python literal
    assert parse_check("contains_all_strings \"x\"").value == ["x"]  # one string becomes a list
    assert parse_check('ends_with_cleaned "Cheerio,\nSasha"').value == "Cheerio,\nSasha"  # a raw newline
    assert parse_check("length 200") == Check(metric="length", value=200)
    assert parse_check({"metric": "is_language", "value": "DE"}).value == "de"


@pytest.mark.parametrize("bad", ["", "shouts_loudly \"x\"", "starts_with", "contains_none_strings []",
                                 "regex_search \"(unclosed\"", "is_language \"klingon\"", "length -3",
                                 "contains_phone_number \"12\""])
def test_bad_checks_are_refused(bad):
    with pytest.raises(ValueError):
        parse_check(bad)


def test_each_metric_on_its_own():
    assert set(METRICS) >= {"length", "contains_any_string", "contains_all_strings", "contains_none_strings",
                            "starts_with", "ends_with", "ends_with_cleaned", "regex_search", "regex_search_false",
                            "contains_phone_number", "is_language", "doesnt_start_with"}
    assert run_check("contains_any_string [\"CAT\", \"dog\"]", "a Cat sat")
    assert not run_check("contains_any_string [\"cat\"]", "a dog sat")
    assert run_check("contains_all_strings [\"a\", \"B\"]", "A and b")
    assert not run_check("contains_all_strings [\"a\", \"z\"]", "A and b")
    assert not run_check("contains_none_strings [\"BAD\"]", "not bad")
    assert run_check("starts_with \"Summary:\"", "  summary: all fine")
    assert not run_check("starts_with \"Summary:\"", "In summary: all fine")
    assert run_check("starts_with \"the \"", "The cat") and not run_check("starts_with \"the \"", "Theory")
    assert run_check("ends_with \"Cheers\"", "Thanks. CHEERS  \n")
    assert not run_check("ends_with \"Cheers\"", "Cheers, see you")
    assert run_check("ends_with_cleaned \"Best, Ana\"", "Thanks!\n\n**Best,**\n  Ana 🌸")
    assert run_check("regex_search \"colou?r\"", "My COLOR")  # case-insensitive
    assert run_check("regex_search_false \"colou?r\"", "My COLOR")  # case-sensitive: no match
    assert not run_check("regex_search_false \"colou?r\"", "my color")
    assert run_check("doesnt_start_with \"Sure\"", "Here you go") and not run_check("doesnt_start_with \"sure\"", "Sure!")
    assert run_check("contains_phone_number", "Call me on +1 (415) 555-2671 tomorrow")
    assert not run_check("contains_phone_number", "In 2024 we sold 300 units")
    assert run_check("contains_phone_number \"415-555-2671\"", "ring (415) 555 2671")
    assert not run_check("contains_phone_number \"415-555-2671\"", "ring 415 555 0000")
    assert run_check("is_language \"de\"", "Ich habe heute keine Zeit, aber wir können morgen sprechen.")
    assert not run_check("is_language \"de\"", "I have no time today, but we can talk tomorrow.")
    assert run_check("length 10", "short") and not run_check("length 3", "short")
    assert run_check("length", "short", baseline="longer one") and not run_check("length", "longer one", "short")
    with pytest.raises(ValueError):
        run_check("length", "no baseline given")


def test_language_detector_and_its_limits():
    assert detect_language("Le chat est dans la maison et il ne veut pas sortir.") == "fr"
    assert detect_language("El perro está en la casa y no quiere salir por la noche.") == "es"
    assert detect_language("Привет, как у тебя дела сегодня?") == "ru"
    assert detect_language("今日はとても暑いですね") == "ja"
    assert detect_language("def f(x): return x") == "unknown"  # too few function words


def test_repairs_of_constructive_checks():
    assert repair('starts_with "Green thumb:"', "Water roses in the morning.") == "Green thumb: Water roses in the morning."
    assert repair('ends_with "Cheers, Sam"', "See you soon.") == "See you soon. Cheers, Sam"
    assert repair('contains_none_strings ["😀", "🎉"]', "Great news 🎉 we won 😀!") == "Great news we won!"
    assert repair('contains_none_strings [" and "]', "cats and dogs") == "cats dogs"
    assert repair('contains_none_strings ["#"]', "Lovely view #travel #sunset") == "Lovely view travel sunset"
    assert repair('doesnt_start_with "Sure"', "Sure, here it is.") == "Here it is."
    assert repair('contains_all_strings ["lol"]', "that's funny") == "that's funny lol"
    assert repair('contains_any_string [" lol", "lol "]', "that's funny") == "that's funny lol"
    assert repair('contains_all_strings ["📚"]', "Read this book.") == "Read this book. 📚"
    # Not constructive: a lone symbol, a section heading, length, a pattern, a language.
    assert repair('contains_all_strings ["&"]', "cats and dogs") is None
    assert repair('contains_all_strings ["Background:"]', "It happened.") is None
    assert repair("length", "much longer answer", baseline="short") is None
    assert repair('regex_search "\\\\d{4}"', "no year") is None
    assert repair('is_language "de"', "Hello there, how are you today?") is None
    # A passing text comes back unchanged.
    assert repair('starts_with "A"', "A b") == "A b"


def test_verify_revision_keeps_repairs_and_drops():
    code = ['starts_with "```"', 'ends_with "```"']
    assert verify_revision(code, "```\nx = 1\n```") == ("kept", "```\nx = 1\n```")
    verdict, text = verify_revision(code, "x = 1")
    assert verdict == "repaired" and text == "```\nx = 1\n```" and passes_all(code, text)
    # Both checks of the '&' feedback: removing " and " works, adding '&' is not sensible.
    assert verify_revision(['contains_all_strings ["&"]', 'contains_none_strings [" and "]'], "cats and dogs") == ("dropped", None)
    assert verify_revision(["length"], "a revision longer than the baseline", "shorter") == ("dropped", None)
    assert verify_revision(["length"], "short", "a longer baseline") == ("kept", "short")
    verdict, text = verify_revision(['contains_none_strings ["😀", "❤"]'], "Hi ❤️ there 😀!")
    assert (verdict, text) == ("repaired", "Hi there!")  # the emoji's variation selector goes too
    verdict, text = verify_revision(['ends_with_cleaned "Cheerio,\\nSasha"'], "Dear Sam, it is done.")
    assert verdict == "repaired" and text.endswith("\n\nCheerio,\nSasha")


def test_comparison_with_baseline_over_sets():
    checks = ['starts_with "Green thumb:"']
    res = compare_with_baseline(checks, ["Green thumb: water", "Prune in spring"], ["Water", "Prune"])
    assert res["rate"] == 0.5 and res["baseline_rate"] == 0.0 and res["passed"] is True
    res = compare_with_baseline(checks, ["Water", "Prune"], ["Green thumb: water", "Prune"])
    assert res["passed"] is False
    res = compare_with_baseline(["length"], ["ab", "abcdef"], ["abc", "abcd"], "at_most_baseline")
    assert res["rate"] == 0.5 and res["mean_length"] == 4 and res["baseline_mean_length"] == 3.5
    assert res["passed"] is False
    with pytest.raises(ValueError):
        compare_with_baseline(checks, ["a"], [], "at_least_baseline")
