"""Mining logged conversations for natural feedback: the library behind `refinery mine`, the same
detection as the live analyst (policies.natural), for back-filling a store and for benchmarking
the detector.

    refinery mine --input conversations.jsonl --output labels.jsonl
    refinery mine -i c.jsonl -o l.jsonl --flr                      # + follow-up likelihood
    refinery mine -i c.jsonl -o l.jsonl --teacher langchain_openai.ChatOpenAI \\
        --teacher-arg model=gpt-4o-mini --teacher-arg base_url=http://host:8000/v1

Input: one {"messages": [...]} conversation per line (other fields are ignored; an "id" is
copied to the output). Output: one JSON line per user turn that follows an assistant turn:
{"line", "turn", "category", "polarity", "span", "principle", "source", "confidence"}, plus
"flr" (the judged answer's follow-up likelihood) with --flr (used as a detection signal only
with --flr-prior), and "error"/"raw" when the teacher
never answered in the schema (the rule result is given instead). `line` counts from 1, as in
error messages; `turn` is the index in `messages`.

Bad input: a line that is not JSON, or has no list of messages, is reported on stderr with its
line number and skipped; blank lines are ignored. The other lines are still mined and written,
and the command then exits with status 1, so a script notices. Exit status 0: every line read.
"""


from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

from adapters.flr import flr_scores
from adapters.generate import chat_fn
from adapters.model import load_model
from adapters.runtime import default_threads
from policies.natural import RuleConfig, detect_conversation
from policies.teacher import build_teacher, is_capable

@dataclass
class MineReport:
    """What a mining run did; `skipped` holds (line number, reason)."""

    lines: int = 0
    conversations: int = 0
    turns: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    llm_failures: int = 0
    categories: Counter = field(default_factory=Counter)


def read_conversations(lines: Iterable[str], report: MineReport,
                       warn: Callable[[str], None]) -> list[tuple[int, dict]]:
    """(line number, row) of every valid line; the others are reported through `warn`."""
    rows = []
    for number, line in enumerate(lines, start=1):
        report.lines = number
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON ({exc.msg} at column {exc.colno})"
        else:
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not messages:
                reason = 'no "messages" list'
            elif not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
                reason = 'a message is not an object with a "role"'
            else:
                rows.append((number, row))
                continue
        report.skipped.append((number, reason))
        warn(f"line {number}: {reason}; skipped")
    return rows


def _no_bar(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None shows a bar only on a terminal; True / False force it."""
    return None if progress is None else not progress


def judged_answers(messages: list[dict]) -> list[int]:
    """Indices of the assistant messages that a user turn follows (the answers to score)."""
    return [i for i in range(len(messages) - 1)
            if messages[i].get("role") == "assistant" and messages[i + 1].get("role") == "user"]


def compute_flr(model, tokenizer, rows: list[tuple[int, dict]], batch_size: int = 16,
                progress: bool | None = None) -> dict[int, dict[int, float]]:
    """{line: {assistant index: FLR}} for every answer a user turn follows."""
    keys, convs = [], []
    for number, row in rows:
        for i in judged_answers(row["messages"]):
            keys.append((number, i))
            convs.append([{"role": m["role"], "content": m.get("content") or ""} for m in row["messages"][: i + 1]])
    out: dict[int, dict[int, float]] = {}
    bar = tqdm(total=len(convs), desc="follow-up likelihood", unit="answer", disable=_no_bar(progress))
    for at in range(0, len(convs), batch_size):
        scores = flr_scores(model, tokenizer, convs[at:at + batch_size], batch_size=batch_size)
        for (number, i), s in zip(keys[at:at + batch_size], scores):
            out.setdefault(number, {})[i] = s
        bar.update(len(scores))
    bar.close()
    return out


def flr_config(flr: dict[int, dict[int, float]]):
    """Rule thresholds from the file's own FLR quartiles: FLR is only meaningful relative to
    other answers scored by the same model and templates."""
    values = [v for per_line in flr.values() for v in per_line.values()]
    if len(values) < 4:
        return RuleConfig()
    q1, _, q3 = statistics.quantiles(values, n=4)
    return RuleConfig(flr_low=q1, flr_high=q3)


def mine_rows(rows: list[tuple[int, dict]], llm=None, flr: dict[int, dict[int, float]] | None = None, *,
              flr_prior: bool = False, force_llm: bool = False, retries: int = 1, report: MineReport | None = None,
              progress: bool | None = None, classifier=None) -> Iterable[dict]:
    """Output records, one per user turn that follows an assistant turn, in input order.
    With `flr_prior`, the file's FLR quartiles steer the reformulation threshold (see
    policies.natural.RuleConfig); otherwise FLR is only reported."""
    report = report or MineReport()
    config = flr_config(flr) if flr and flr_prior else RuleConfig()
    for number, row in tqdm(rows, desc="natural feedback", unit="conversation", disable=_no_bar(progress)):
        report.conversations += 1
        per_line = (flr or {}).get(number, {})
        for turn, fb in detect_conversation(row["messages"], llm=llm, flr_scores=per_line, config=config,
                                            classifier=classifier,
                                            force_llm=force_llm, retries=retries):
            record = {"line": number, "turn": turn, "category": fb.category, "polarity": fb.polarity,
                      "span": fb.span, "principle": fb.principle, "source": fb.source,
                      "confidence": fb.confidence}
            if "id" in row:
                record["id"] = row["id"]
            if fb.flr is not None:
                record["flr"] = round(fb.flr, 4)
            if fb.error:
                record["error"], record["raw"] = fb.error, fb.raw
                report.llm_failures += 1
            report.turns += 1
            report.categories[fb.category] += 1
            yield record


def _mine(rows, output_path: Path, report: MineReport, lm, teacher, teacher_args, use_flr, flr_prior, force_llm,
          retries, batch_size, progress, warn, classifier=None) -> None:
    llm = None
    if teacher and teacher != "none":
        generate = chat_fn(lm.model, lm.tokenizer) if teacher == "local" else None
        llm = build_teacher(teacher, teacher_args or {}, generate_fn=generate)
        if not is_capable(llm) and not force_llm:
            warn("the local model is too small to classify feedback; rules only (--force-llm uses it anyway)")
    flr = compute_flr(lm.model, lm.tokenizer, rows, batch_size, progress) if use_flr else None
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as out:
        for record in mine_rows(rows, llm, flr, flr_prior=flr_prior, force_llm=force_llm, retries=retries,
                                report=report, progress=progress, classifier=classifier):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def mine_file(input_path: Path, output_path: Path, *, teacher: str | None = None, teacher_args: dict | None = None,
              use_flr: bool = False, flr_prior: bool = False, model: str | None = None,
              model_cache: Path, force_llm: bool = False, retries: int = 1, batch_size: int = 16, progress: bool | None = None,
              threads: int | None = None, warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
              classifier=None) -> MineReport:
    """What `refinery mine` does. `classifier` (policies.natural.NaturalClassifier) labels the turns
    where no capable teacher does; None leaves the phrase rules alone."""
    report = MineReport()
    with open(input_path, encoding="utf-8") as f:
        rows = read_conversations(f, report, warn)

    if not (use_flr or teacher == "local"):
        _mine(rows, output_path, report, None, teacher, teacher_args, use_flr, flr_prior, force_llm, retries,
              batch_size, progress, warn, classifier)
        return report
    import torch

    # One core left to the rest of the machine: with every core busy, torch's threads wait on
    # each other and a forward pass gets many times slower (measured: 15x on 2 shared cores).
    # Restored afterwards for in-process callers (bench, tests).
    before = torch.get_num_threads()
    torch.set_num_threads(default_threads(threads or 0))
    try:
        lm = load_model(model, model_cache)
        _mine(rows, output_path, report, lm, teacher, teacher_args, use_flr, flr_prior, force_llm, retries,
              batch_size, progress, warn, classifier)
    finally:
        torch.set_num_threads(before)
    return report
