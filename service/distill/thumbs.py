"""Thumbs without a pair in the refinement job: unpaired answers for KTO (adapters.losses.kto_loss).

A thumbs-up answer is desirable, a thumbs-down one undesirable; a request that also got a
correction (or an accepted better answer for a complaint) trains as that pair instead, and an
empty answer teaches nothing. The side with fewer answers is weighted up so that
lambda_D n_D / (lambda_U n_U) is 1, inside the [1, 4/3] the KTO paper recommends (capped at 10,
so a lone thumb does not outweigh the rest).
"""

from __future__ import annotations

MAX_BALANCE = 10.0


def thumb_rows(rows: list[dict]) -> dict:
    """Store rows (service.store.corrections.Corrections.thumbs) -> unpaired rows, the KTO weights
    that balance them, and the counts (used, dropped and why)."""
    unpaired, dropped = [], {}
    for r in rows:
        why = ("the request also got a correction or an accepted better answer (trained as its pair)"
               if r["corrected"] else
               "empty answer" if not (r["response"] or "").strip() else None)
        if why:
            dropped[why] = dropped.get(why, 0) + 1
            continue
        unpaired.append({"prompt": r["messages"], "completion": r["response"], "label": r["thumb"] == "up",
                         "feedback_id": r["id"]})
    n_up = sum(u["label"] for u in unpaired)
    n_down = len(unpaired) - n_up
    weights = {"kto_desirable_weight": 1.0, "kto_undesirable_weight": 1.0}
    if n_up and n_down:
        if n_up < n_down:
            weights["kto_desirable_weight"] = min(MAX_BALANCE, n_down / n_up)
        else:
            weights["kto_undesirable_weight"] = min(MAX_BALANCE, n_up / n_down)
    return {"unpaired": unpaired, "weights": weights,
            "counts": {"rows": len(rows), "used": len(unpaired), "up": n_up, "down": n_down, "dropped": dropped}}
