"""The store: every exchange and every piece of feedback, principles, jobs and outcomes, in one SQLite
file (sqlite-utils). The only package of the service that holds SQL.

`Store(path)` opens (and migrates) the database and groups its queries by concept:
`store.exchanges`, `store.feedback`, `store.corrections`, `store.refinements`, `store.natural`, `store.failures`, `store.principles`,
`store.jobs`, `store.outcomes`. `store.db` is the calling thread's sqlite-utils connection and
`store.atomic()` a write transaction, for code that must group writes of several repositories.
"""

from __future__ import annotations

from pathlib import Path

from service.store.corrections import Corrections
from service.store.db import MIGRATIONS, Database, atomic, new_id, transcript_hash
from service.store.exchanges import Exchanges
from service.store.feedback import Feedback, LLMFailures, NaturalFeedback
from service.store.jobs import Jobs
from service.store.outcomes import Outcomes
from service.store.principles import Principles
from service.store.refinements import Refinements


class Store(Database):
    def __init__(self, path: Path | str):
        super().__init__(path)
        self.exchanges = Exchanges(self)
        self.feedback = Feedback(self)
        self.corrections = Corrections(self)
        self.refinements = Refinements(self)
        self.natural = NaturalFeedback(self)
        self.failures = LLMFailures(self)
        self.principles = Principles(self)
        self.jobs = Jobs(self)
        self.outcomes = Outcomes(self)


__all__ = ["Store", "MIGRATIONS", "atomic", "new_id", "transcript_hash"]
