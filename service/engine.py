"""The inference engine: one model, one decoding thread, requests decoded together in batches.

Requests are queued; a single worker thread owns the model, so no two forward passes ever
race on it (and later, the active adapter is global state). Requests waiting together are
decoded as one left-padded batch, token by token, each row with its own sampling parameters,
seed, stop strings and budget, so every client gets its tokens as they are made and a client
that goes away stops costing compute at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import torch

log = logging.getLogger(__name__)


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    finish_reason: str  # "stop" | "length" | "cancelled"
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    message: str


Event = Delta | Finished | Failed


@dataclass
class GenJob:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    adapter: str | None = None
    emit: Callable[[Event], None] = lambda ev: None
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Row:
    """Decoding state of one request inside a batch."""

    def __init__(self, job: GenJob, device: torch.device):
        self.job = job
        self.ids: list[int] = []
        self.sent = 0  # characters of text already emitted
        self.text = ""
        self.done = False
        self.generator = None
        if job.temperature > 0:
            self.generator = torch.Generator(device=device)
            if job.seed is not None:
                self.generator.manual_seed(job.seed)
            else:
                self.generator.seed()


class Engine:
    def __init__(self, model, tokenizer, model_id: str, max_batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        eos = set()
        for ids in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(ids, int):
                eos.add(ids)
            elif ids:
                eos.update(ids)
        self.eos_ids = eos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        self._queue: queue.Queue[GenJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name="refinery-engine", daemon=True)
        self._thread.start()
        self.batches_run = 0

    # -- public API ----------------------------------------------------------------------
    def encode_chat(self, messages: list[dict]) -> list[int]:
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])

    def submit(self, job: GenJob) -> None:
        self._queue.put(job)

    async def stream(self, job: GenJob) -> AsyncIterator[Event]:
        """Submit a job and yield its events; closing the iterator cancels the job."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        job.emit = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)
        self.submit(job)
        try:
            while True:
                ev = await events.get()
                yield ev
                if isinstance(ev, (Finished, Failed)):
                    return
        finally:
            # Reached on normal end too, where it is harmless: the row is already done.
            job.cancelled.set()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the worker ----------------------------------------------------------------------
    def _worker(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            held: list[GenJob] = []
            # Everything already waiting joins this batch (same adapter only: one batch, one
            # set of weights, so no answer can come from two versions).
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                (batch if nxt.adapter == job.adapter else held).append(nxt)
            for h in held:
                self._queue.put(h)
            batch = [j for j in batch if not j.cancelled.is_set()]
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except Exception as exc:  # a failed batch fails its requests, not the server
                log.exception("generation failed")
                for j in batch:
                    j.emit(Failed(f"generation failed: {exc}"))
            self.batches_run += 1

    def _select_adapter(self, adapter: str | None):
        """Context for running the model with `adapter` (None = base). Overridden with adapters."""
        import contextlib

        return contextlib.nullcontext()

    def _run_batch(self, jobs: list[GenJob]) -> None:
        rows = [_Row(j, self.device) for j in jobs]
        width = max(len(j.prompt_ids) for j in jobs)
        # Left padding keeps every row's next token at the last position.
        input_ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, j in enumerate(jobs):
            n = len(j.prompt_ids)
            input_ids[i, width - n:] = torch.tensor(j.prompt_ids)
            attn[i, width - n:] = 1
        input_ids, attn = input_ids.to(self.device), attn.to(self.device)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        max_steps = max(j.max_new_tokens for j in jobs)
        active = list(range(len(rows)))  # batch index -> row index
        past = None
        with self._select_adapter(jobs[0].adapter):
            for step in range(max_steps):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attn,
                    position_ids=position_ids,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_tokens = []
                for b, r in enumerate(active):
                    next_tokens.append(self._step_row(rows[r], logits[b]))
                keep = [b for b, r in enumerate(active) if not rows[r].done]
                if not keep:
                    break
                if len(keep) < len(active):
                    # Finished or cancelled rows leave the batch, cache included.
                    idx = torch.tensor(keep, device=self.device)
                    past.batch_select_indices(idx)
                    attn = attn[idx]
                    position_ids = position_ids[idx]
                    next_tokens = [next_tokens[b] for b in keep]
                    active = [active[b] for b in keep]
                input_ids = torch.tensor(next_tokens, device=self.device).unsqueeze(-1)
                attn = torch.cat([attn, torch.ones((len(active), 1), dtype=attn.dtype, device=self.device)], dim=-1)
                position_ids = position_ids[:, -1:] + 1

    def _step_row(self, row: _Row, logits: torch.Tensor) -> int:
        """Pick the next token of one row, emit its new text, and decide whether it is done."""
        job = row.job
        if job.cancelled.is_set():
            row.done = True
            job.emit(Finished("cancelled", row.text, len(job.prompt_ids), len(row.ids)))
            return self.pad_id
        token = self._sample(logits, job, row.generator)
        if token in self.eos_ids:
            self._finish(row, "stop")
            return token
        row.ids.append(token)
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        for s in job.stop:
            cut = text.find(s)
            if cut >= 0:
                row.text = text[:cut]
                self._finish(row, "stop")
                return token
        row.text = text
        if len(row.ids) >= job.max_new_tokens:
            self._finish(row, "length")
            return token
        # Hold back a possibly incomplete character and anything that could start a stop
        # string, so the client never sees text we later take back.
        safe = len(text.rstrip("\ufffd"))
        if job.stop:
            safe = min(safe, len(text) - max(len(s) for s in job.stop) + 1)
        if safe > row.sent:
            job.emit(Delta(text[row.sent:safe]))
            row.sent = safe
        return token

    def _finish(self, row: _Row, reason: str) -> None:
        row.done = True
        if len(row.text) > row.sent:
            row.job.emit(Delta(row.text[row.sent:]))
            row.sent = len(row.text)
        row.job.emit(Finished(reason, row.text, len(row.job.prompt_ids), len(row.ids)))

    @staticmethod
    def _sample(logits: torch.Tensor, job: GenJob, generator) -> int:
        """Shape: logits (vocab,). Greedy at temperature 0, else temperature + nucleus."""
        if job.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / job.temperature, dim=-1)
        if job.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            # Keep the smallest set of tokens whose mass reaches top_p (always at least one).
            drop = sorted_p.cumsum(-1) - sorted_p > job.top_p
            sorted_p[drop] = 0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=generator))
