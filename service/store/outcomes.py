"""Outcomes per model version, from what the service already stores: requests, thumbs, natural
negative feedback and follow-up likelihood. The canary policy (service.rollout.canary) judges them.

A request counts as negative when the user gave it a thumbs-down or the next user turn was
natural negative feedback. The base model's answers are counted under "base".
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
       AVG(c.flr) AS mean_flr,
       MIN(c.created) AS first_seen
FROM completions c
WHERE c.status = 'ok' {where}
GROUP BY COALESCE(c.adapter_version, 'base')
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
            out[row["version"]] = {
                **row,
                "thumbs_up_rate": row["thumbs_up"] / n if n else None,
                "thumbs_down_rate": row["thumbs_down"] / n if n else None,
                "natural_negative_rate": row["natural_negative"] / n if n else None,
                "negative_rate": row["negative"] / n if n else None,
            }
        return out
