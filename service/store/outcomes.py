"""Outcomes per model version, from what the service already stores: requests, thumbs, natural
feedback, corrections, answer length and follow-up likelihood. The canary policy
(service.rollout.canary) judges them.

Thumbs alone can be gamed: a version optimised for thumbs-up drifts towards agreeable, longer
answers that users still have to correct (RLUF). So besides the negative rate (a thumbs-down or
a natural negative follow-up turn) each version carries its correction rate (a request that got
an explicit feedback record with a non-empty correction, or a natural `aware_with_correction`
follow-up), its natural-dissatisfaction rate and its answer length in completion tokens; and
`answer_lengths` gives the per-request lengths the canary's length test compares.
The base model's answers are counted under "base".
"""

from __future__ import annotations

from service.store.db import Repository

_SQL = """
SELECT COALESCE(c.adapter_version, 'base') AS version,
       COUNT(*) AS requests,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND f.thumb = 'up')) AS thumbs_up,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND f.thumb = 'down')) AS thumbs_down,
       SUM(EXISTS(SELECT 1 FROM natural_feedback n WHERE n.completion_id = c.id AND n.polarity = 'negative')) AS natural_negative,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND f.thumb = 'down')
           OR EXISTS(SELECT 1 FROM natural_feedback n WHERE n.completion_id = c.id AND n.polarity = 'negative')) AS negative,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND TRIM(COALESCE(f.correction, ''), ' ' || char(9) || char(10) || char(13)) != '')
           OR EXISTS(SELECT 1 FROM natural_feedback n WHERE n.completion_id = c.id
                     AND n.category = 'aware_with_correction')) AS corrections,
       COUNT(c.completion_tokens) AS measured_answers,
       AVG(c.completion_tokens) AS mean_answer_tokens,
       AVG(c.flr) AS mean_flr,
       MIN(c.created) AS first_seen
FROM completions c
WHERE c.status = 'ok' {where}
GROUP BY COALESCE(c.adapter_version, 'base')
"""

_LENGTHS_SQL = """
SELECT completion_tokens FROM completions
WHERE status = 'ok' AND COALESCE(adapter_version, 'base') = ? AND completion_tokens IS NOT NULL {where}
ORDER BY created DESC LIMIT ?
"""


class Outcomes(Repository):
    def per_version(self, since: float | None = None) -> dict[str, dict]:
        """{version (or "base"): counts and rates} over answered requests, optionally since a time."""
        where, params = "", []
        if since is not None:
            where, params = "AND c.created >= ?", [since]
        out = {}
        for row in self.database.rows(_SQL.format(where=where), params):
            n = row["requests"] or 0

            def rate(key: str) -> float | None:
                return row[key] / n if n else None

            out[row["version"]] = {
                **row,
                "thumbs_up_rate": rate("thumbs_up"),
                "thumbs_down_rate": rate("thumbs_down"),
                "natural_negative_rate": rate("natural_negative"),
                "negative_rate": rate("negative"),
                "correction_rate": rate("corrections"),
            }
        return out

    def answer_lengths(self, version: str, since: float | None = None, limit: int = 5000) -> list[int]:
        """Completion tokens of a version's (or "base"'s) answered requests, newest first, at most
        `limit` of them, optionally since a time. Requests with no token count are left out."""
        where, params = "", [version]
        if since is not None:
            where, params = "AND created >= ?", params + [since]
        rows = self.database.execute(_LENGTHS_SQL.format(where=where), params + [limit]).fetchall()
        return [r[0] for r in rows]
