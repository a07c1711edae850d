"""`refinery mine` end to end through the typer app: rules only, bad lines, a scripted teacher
given by its class path, and FLR on the tiny random model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.cli import app

CONVERSATIONS = [
    {"id": "c1", "messages": [
        {"role": "user", "content": "What is the capital of Australia?"},
        {"role": "assistant", "content": "Sydney."},
        {"role": "user", "content": "No, it's Canberra."},
        {"role": "assistant", "content": "You're right, it is Canberra."},
        {"role": "user", "content": "Thanks!"},
    ]},
    {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Draft an email to my boss."},
        {"role": "assistant", "content": "Hi! 😊 Can I take Friday off? 🎉"},
        {"role": "user", "content": "From now on, no emojis in my work emails please."},
    ]},
    {"messages": [{"role": "user", "content": "Hello"}]},  # no assistant turn: nothing to judge
]

runner = CliRunner()


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_mine_rules_only(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS)
    out = tmp_path / "out" / "labels.jsonl"
    result = runner.invoke(app, ["mine", "--input", str(src), "--output", str(out), "--detector", "rules"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert [(r["line"], r["turn"]) for r in rows] == [(1, 2), (1, 4), (2, 3)]
    first, thanks, rule = rows
    assert (first["category"], first["polarity"], first["span"], first["principle"]) == \
        ("aware_with_correction", "negative", "No, it's Canberra.", False)
    assert first["id"] == "c1" and first["source"] == "rules"
    assert thanks["category"] == "positive" and thanks["polarity"] == "positive"
    assert rule["principle"] is True and rule["span"] == "From now on, no emojis in my work emails please."
    assert all(set(r) >= {"line", "turn", "category", "polarity", "span", "principle"} for r in rows)
    assert all("flr" not in r for r in rows)
    assert "3 turns from 3 conversations" in result.stderr


def test_mine_uses_the_encoder_classifier_by_default(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS)
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["mine", "-i", str(src), "-o", str(out), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    first, thanks, rule = read_jsonl(out)
    assert {r["source"] for r in (first, thanks, rule)} == {"encoder"}
    assert (first["category"], first["polarity"]) == ("aware_with_correction", "negative")
    assert first["span"] in CONVERSATIONS[0]["messages"][2]["content"]  # verbatim
    assert (thanks["category"], thanks["polarity"]) == ("positive", "positive")
    assert rule["principle"] is True and rule["polarity"] == "negative"


def test_bad_lines_are_reported_skipped_and_fail_the_run(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS[:1],
                      extra_lines=["{not json", "", '{"messages": "hello"}', '[1, 2]', json.dumps(CONVERSATIONS[1])])
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["mine", "-i", str(src), "-o", str(out)])
    assert result.exit_code == 1
    assert "line 2: not valid JSON" in result.stderr
    assert "line 4: no \"messages\" list" in result.stderr and "line 5:" in result.stderr
    assert "line 3" not in result.stderr  # a blank line is not an error
    assert "3 of 6 lines skipped" in result.stderr
    # The good lines around the bad ones are still mined, with their own line numbers.
    assert [(r["line"], r["turn"]) for r in read_jsonl(out)] == [(1, 2), (1, 4), (6, 3)]


def test_teacher_by_class_path(tmp_path):
    answer = {"category": "aware_with_correction", "polarity": "negative", "span": "it's Canberra",
              "principle": False}
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS[:1])
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, [
        "mine", "-i", str(src), "-o", str(out),
        "--teacher", "langchain_core.language_models.fake_chat_models.FakeListChatModel",
        "--teacher-arg", "responses=" + json.dumps([json.dumps(answer)]),
    ])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert [r["source"] for r in rows] == ["llm", "llm"]
    assert rows[0]["span"] == "it's Canberra"
    # The same scripted answer for "Thanks!": its span is not in that turn, so it is dropped.
    assert rows[1]["span"] is None


def test_teacher_that_never_parses_is_recorded(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS[:1])
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, [
        "mine", "-i", str(src), "-o", str(out), "--retries", "0",
        "--teacher", "langchain_core.language_models.fake_chat_models.FakeListChatModel",
        "--teacher-arg", 'responses=["I cannot answer in JSON."]',
    ])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert all(r["source"] == "rules" and r["error"] and r["raw"] == ["I cannot answer in JSON."] for r in rows)
    assert rows[0]["category"] == "aware_with_correction"  # the rule verdict is what is written
    assert "2 teacher answers never parsed" in result.stderr


def test_bad_teacher_arg_is_a_usage_error(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS[:1])
    result = runner.invoke(app, ["mine", "-i", str(src), "-o", str(tmp_path / "o.jsonl"),
                                 "--teacher", "x.Y", "--teacher-arg", "novalue"])
    assert result.exit_code == 2 and "key=value" in result.output + result.stderr


def test_mine_with_flr_on_a_tiny_model(tmp_path, tiny_model_dir, model_cache):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS)
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["mine", "-i", str(src), "-o", str(out), "--flr", "--model", str(tiny_model_dir),
                                 "--model-cache", str(model_cache), "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert len(rows) == 3
    assert all(isinstance(r["flr"], float) for r in rows)
    # Two different answers in the first conversation: two different scores.
    assert rows[0]["flr"] != rows[1]["flr"]
    # The categories do not depend on FLR for these clear-cut turns.
    assert [r["category"] for r in rows] == ["aware_with_correction", "positive", "aware_with_correction"]


@pytest.mark.parametrize("missing", ["--input", "--output"])
def test_required_options(tmp_path, missing):
    src = write_jsonl(tmp_path / "in.jsonl", CONVERSATIONS[:1])
    args = {"--input": str(src), "--output": str(tmp_path / "o.jsonl")}
    del args[missing]
    result = runner.invoke(app, ["mine", *[x for kv in args.items() for x in kv]])
    assert result.exit_code == 2
