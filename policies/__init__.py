"""Feedback -> meaning: natural feedback (natural/), principles (principles/), scope, C3PO synthesis
(synthesis/), programmatic checks, the teacher LLM, and shared text helpers. Pure logic over
text; never imports service/."""
