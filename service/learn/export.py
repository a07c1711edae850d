"""Export: feedback joined with its exchange, and preference pairs ready for TRL / `refinery train`."""

from __future__ import annotations

import itertools
from pathlib import Path

from adapters.files import write_jsonl
from service.store import Store, transcript_hash


def feedback_rows(store: Store) -> list[dict]:
    rows = []
    for r in store.feedback.with_exchanges():
        rows.append({
            "feedback_id": r["id"], "created": r["created"], "completion_id": r["completion_id"],
            "conversation_id": r["conversation_id"], "model": r["model"], "adapter_version": r["adapter_version"],
            "messages": r["messages"], "response": r["response"], "status": r["status"],
            **{k: r[k] for k in ("thumb", "score", "reason", "comment", "correction", "user")},
        })
    return rows


def preference_pairs(rows: list[dict]) -> list[dict]:
    """TRL's conversational preference format: prompt = messages, chosen/rejected = one assistant turn.

    - a correction is preferred over the answer it corrects;
    - on the same prompt, every thumbs-up answer is preferred over every different thumbs-down one.

    Only answers that were finished (status "ok") make pairs: an aborted or failed answer is
    not what the model would say, and an empty one teaches nothing.
    """
    def turn(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    pairs, seen = [], set()

    def add(prompt, chosen, rejected, source, ids):
        key = (transcript_hash(prompt), chosen, rejected)
        if chosen == rejected or key in seen:
            return
        seen.add(key)
        pairs.append({"prompt": prompt, "chosen": turn(chosen), "rejected": turn(rejected), "source": source, "feedback_ids": ids})

    rows = [r for r in rows if r.get("status", "ok") == "ok" and r["response"]]
    for r in rows:
        if r["correction"]:
            add(r["messages"], r["correction"], r["response"], "correction", [r["feedback_id"]])
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        if r["thumb"]:
            by_prompt.setdefault(transcript_hash(r["messages"]), []).append(r)
    for group in by_prompt.values():
        ups = [r for r in group if r["thumb"] == "up"]
        downs = [r for r in group if r["thumb"] == "down"]
        for up, down in itertools.product(ups, downs):
            add(up["messages"], up["response"], down["response"], "thumbs", [up["feedback_id"], down["feedback_id"]])
    return pairs


def export(store: Store, out_dir: Path) -> dict[str, int]:
    rows = feedback_rows(store)
    pairs = preference_pairs(rows)
    write_jsonl(out_dir / "feedback.jsonl", rows)
    write_jsonl(out_dir / "preferences.jsonl", pairs)
    return {"feedback": len(rows), "preferences": len(pairs)}
