"""The training guard: a run that moves the model where it must not, or makes it degenerate, stops
and says so instead of writing an adapter that looks finished.

Why: DPO on a small preference file can push the rejected answers' probability down by breaking
the model (16 marker pairs at lr 5e-4 gave `ALPHAALPAL:ALPHAALAL` for every prompt), and nothing
in the loss curve says so: the DPO loss of a collapsed model is excellent. Two measurements,
taken every `guard_every` steps and after the last one:

- Drift, on held-out general prompts the run does not train on (requests of the built-in
  corpus): the base model's own greedy answers are fed to the policy (teacher forcing), and the
  share of the tokens the base model was sure of (probability >= 0.5) that are no longer the
  policy's first choice is the drift. 0 means the policy still writes those tokens of every
  answer as the base did; a rule that changes how an answer starts moves a token or two of each
  (a few %); a collapse moves nearly all. Tokens the base model hesitated on are left out: there
  greedy decoding flips on float noise, and a randomly initialised model is nothing but them.
  The share over all tokens and the mean rise in negative log-likelihood per token (nats) are
  kept beside it, for the curve.
- Degeneration: greedy answers of the policy to two training prompts and every held-out one, checked for
  a fragment repeated again and again, the chosen answers' common prefix looping, or a wall of
  characters without a space, where the base model's answer to the same prompt shows none.

A base model that is sure of under a fifth of its own answer tokens (a randomly initialised one,
as in the tests) gives neither measurement a meaning: the guard then records why it is off.
Past `drift_limit`, or on degenerate answers in two checks in a row or in the last one (a
run in transition may double its marker once and recover), `TrainingStopped` is raised with the step, the
figures and the answer that gave it away; `allow_drift` turns the stop into a warning recorded
in the loss curve.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
import torch

from adapters.generate import generate, render_prompt
from adapters.losses import token_logps
from policies.corpus import TRAINING

log = logging.getLogger(__name__)

MIN_SURE = 0.2  # the least share of sure tokens in the base answers for the guard to judge


class TrainingStopped(RuntimeError):
    """A training run stopped by its guard; `check` holds the measurement that stopped it."""

    def __init__(self, message: str, check: dict):
        super().__init__(message)
        self.check = check


def general_prompts(n: int, exclude: set[str], seed: int) -> list[str]:
    """`n` requests of the built-in corpus (all topics), none of them among `exclude`."""
    rows = [json.loads(line) for line in TRAINING.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [r["prompt"] for r in rows if r["prompt"] not in exclude]
    return random.Random(seed).sample(prompts, k=min(n, len(prompts)))


_REPEAT = re.compile(r"(.{2,30}?)\1{3,}", re.S)  # a fragment and three more copies of it, back to back


def degenerate(answer: str, prefix: str = "") -> str | None:
    """Why `answer` looks degenerate, or None. `prefix`: the chosen answers' common start."""
    text = answer.strip()
    if len(text) < 12:
        return None
    m = _REPEAT.search(text)
    if m and len(m.group(0)) >= max(12, 0.3 * len(text)):
        return f"a repeated fragment {m.group(1)!r}"
    words = text.split()
    if len(words) >= 16 and len({w.lower() for w in words}) / len(words) < 0.3:
        return f"{len(set(words))} distinct words in {len(words)}"
    if len(text) >= 20 and max((len(w) for w in words), default=0) >= 20 and " " not in text[:40]:
        return "characters without a space"
    stem = prefix.strip()[:5]
    if len(stem) >= 3 and text.count(stem) >= 2:
        return f"the chosen answers' start {stem!r} loops"
    return None


def common_prefix(answers: list[str]) -> str:
    """The start every answer shares (empty unless there are two or more)."""
    if len(answers) < 2:
        return ""
    return os.path.commonprefix([a.strip() for a in answers])


@dataclass
class Guard:
    """Built before the first step (it needs the base model's answers), checked during the loop."""

    tokenizer: object
    device: object
    limit: float
    allow: bool
    probe_prompts: list[str]
    probe_answers: list[str]
    watch_prompts: list[str]  # generated from at every check: training prompts and probe prompts
    watch_base: list[str]
    prefix: str
    max_new_tokens: int
    batches: list[dict] = field(default_factory=list)  # probe answers, tokenised once
    base_nll: float = 0.0
    off: str | None = None  # why the guard does not judge this run
    history: list[dict] = field(default_factory=list)

    @classmethod
    def build(cls, model, tokenizer, device, train_prompts: list[str], chosen: list[str], cfg) -> "Guard":
        probes = general_prompts(cfg.guard_prompts, set(train_prompts), cfg.seed)
        watch = list(dict.fromkeys(train_prompts))[:2] + probes  # every probe: one degenerate answer is enough
        convs = [[{"role": "user", "content": p}] for p in probes + watch]
        with torch.no_grad(), model.disable_adapter():
            answers = generate(model, tokenizer, convs, max_new_tokens=cfg.guard_tokens, batch_size=16, progress=False)
        guard = cls(tokenizer, device, cfg.drift_limit, cfg.allow_drift, probes, answers[: len(probes)],
                    watch, answers[len(probes):], common_prefix(chosen), cfg.guard_tokens)
        for p, a in zip(probes, guard.probe_answers):
            prompt = render_prompt(tokenizer, [{"role": "user", "content": p}])
            ids = prompt + tokenizer(a, add_special_tokens=False)["input_ids"]
            guard.batches.append({"ids": torch.tensor([ids], device=device), "start": len(prompt)})
        with torch.no_grad(), model.disable_adapter():
            base = guard._measure(model, keep_base=True)
        guard.base_nll = base["nll"]
        total = sum(b["ids"].shape[1] - b["start"] for b in guard.batches)
        if base["sure_tokens"] < MIN_SURE * total:
            guard.off = (f"off: the base model is sure (p >= 0.5) of {base['sure_tokens']} of the {total} tokens of "
                         "its own answers, too few for drift or degeneration to mean anything")
            log.warning("training guard %s", guard.off)
        return guard

    def _measure(self, model, keep_base: bool = False) -> dict:
        """Under `model`, on the base answers: mean NLL per token, and the share of the tokens
        (all, and those the base model was sure of) that are its first choice. `keep_base`
        marks the sure tokens (the first call, on the base model)."""
        nll, agree, n, sure_agree, sure_n = 0.0, 0.0, 0, 0.0, 0
        for b in self.batches:
            ids = b["ids"]
            logits = model(input_ids=ids).logits
            start = b["start"] - 1  # logits at t predict token t + 1
            lp = token_logps(logits, ids)[:, start:]
            if keep_base:
                b["sure"] = lp.exp() >= 0.5
            same = logits[:, :-1, :].argmax(-1)[:, start:] == ids[:, 1:][:, start:]
            nll -= lp.sum().item()
            agree += same.sum().item()
            n += lp.numel()
            sure_agree += (same & b["sure"]).sum().item()
            sure_n += b["sure"].sum().item()
        return {"nll": nll / max(n, 1), "agreement": agree / max(n, 1),
                "sure_agreement": sure_agree / sure_n if sure_n else 1.0, "sure_tokens": sure_n}

    def check(self, model, step: int, last: bool = False) -> dict:
        """Measure now; raise TrainingStopped when the run must end (unless allowed). `last`: the
        check after the final step."""
        if self.off:
            record = {"step": step, "guard": self.off}
            self.history.append(record)
            return record
        was_training = model.training
        model.eval()
        with torch.no_grad():
            m = self._measure(model)
            convs = [[{"role": "user", "content": p}] for p in self.watch_prompts]
            answers = generate(model, self.tokenizer, convs, max_new_tokens=self.max_new_tokens, batch_size=16,
                               progress=False)
        if was_training:
            model.train()
        drift, nll = 1.0 - m["sure_agreement"], m["nll"]
        bad = [(p, a, why) for p, a, b in zip(self.watch_prompts, answers, self.watch_base)
               if (why := degenerate(a, self.prefix)) and not degenerate(b, self.prefix)]
        record = {"step": step, "drift": round(drift, 4), "drift_all_tokens": round(1.0 - m["agreement"], 4),
                  "sure_tokens": m["sure_tokens"], "nll_rise": round(nll - self.base_nll, 4),
                  "degenerate": [{"prompt": p, "answer": a, "why": why} for p, a, why in bad],
                  "sample": answers[0] if answers else ""}
        self.history.append(record)
        problem = None
        again = len(self.history) >= 2 and bool(self.history[-2].get("degenerate"))
        if drift > self.limit:
            problem = (f"drift {drift:.2f} > limit {self.limit:.2f}: in the base model's answers to "
                       f"{len(self.probe_prompts)} held-out general prompts, {drift:.0%} of the {m['sure_tokens']} "
                       f"tokens it was sure of are no longer the adapter's first choice "
                       f"(NLL +{nll - self.base_nll:.2f} nats/token)")
        elif bad and (again or last):
            p, a, why = bad[0]
            problem = f"degenerate answer ({why}) to {p!r}: {a[:120]!r}"
        if problem:
            record["problem"] = problem
            if not self.allow:
                raise TrainingStopped(
                    f"training stopped at step {step}: {problem}. No adapter was written. Lower the learning rate, "
                    "train fewer epochs or add constraint rows; --allow-drift trains on regardless.", record)
        return record
