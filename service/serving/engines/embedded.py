"""The embedded engine (the default): one model, one decoding thread, requests decoded together in batches.

Requests are queued; a single worker thread owns the model, so no two forward passes ever
race on it, and loading or unloading a LoRA adapter happens between steps. Requests are
decoded together in one left-padded batch, token by token, each row with its own sampling
parameters, seed, stop strings, budget and adapter version (PEFT's mixed-adapter forward), so
every client gets its tokens as they are made, new requests join at the next step
(continuous batching), and a client that goes away stops costing compute at the next step.
Which versions are loaded, their leases and their LoRA layers are service.serving.slots'.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

import torch

from adapters.registry import check_loadable
from service.serving.engines.base import Delta, Engine, Event, Failed, Finished, GenJob
from service.serving.slots import AdapterSlots, PreparedAdapter, prepare_adapter

MIN_TEMPERATURE = 1e-3  # a request's temperature below this decodes greedily (1e-38 made logits inf: a 500)
log = logging.getLogger(__name__)


@dataclass
class _Call:
    fn: Callable
    adapter: str | None
    future: Future
    background: bool = False


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


class _Batch:
    """Rows decoded together: their KV cache, attention mask, next tokens and positions.

    Shapes: attn (rows, cached), next_ids and next_pos (rows, 1); cache tensors
    (rows, heads, cached, head_dim).
    """

    def __init__(self, rows, past, attn, next_pos):
        self.rows, self.past, self.attn, self.next_pos = rows, past, attn, next_pos
        self.next_ids: torch.Tensor | None = None

    def select(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, dtype=torch.long, device=self.attn.device)
        self.rows = [self.rows[b] for b in keep]
        if keep:
            self.past.batch_select_indices(idx)
            self.attn, self.next_pos, self.next_ids = self.attn[idx], self.next_pos[idx], self.next_ids[idx]

    def merged_into(self, other: "_Batch | None") -> "_Batch":
        """This batch's rows joined onto `other`'s; the shorter history is left-padded (masked)."""
        if other is None or not other.rows:
            return self
        if not self.rows:
            return other
        width = max(self.attn.shape[1], other.attn.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

        for mine, theirs in zip(self.past.layers, other.past.layers):
            theirs.keys = torch.cat([pad(theirs.keys, 2), pad(mine.keys, 2)], dim=0)
            theirs.values = torch.cat([pad(theirs.values, 2), pad(mine.values, 2)], dim=0)
        other.attn = torch.cat([pad(other.attn, 1), pad(self.attn, 1)], dim=0)
        other.next_ids = torch.cat([other.next_ids, self.next_ids], dim=0)
        other.next_pos = torch.cat([other.next_pos, self.next_pos], dim=0)
        other.rows = other.rows + self.rows
        return other


class EmbeddedEngine(Engine):
    def __init__(self, model, tokenizer, model_id: str, max_batch_size: int = 8):
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
        self._queue: queue.Queue[GenJob | _Call | None] = queue.Queue()
        # Background calls wait until the engine has been idle this long, so analysis does not
        # start in the gap between two requests of a busy client and delay the second one.
        self.background_grace_s = 1.0
        self._last_busy = time.monotonic()
        # Adapter versions, their leases and LoRA layers (touched on this engine's thread only).
        self.slots = AdapterSlots(model)
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

    def generate_blocking(self, messages: list[dict], max_tokens: int, adapter: str | None = None,
                          timeout: float = 600) -> str:
        """Greedy answer for callers outside the event loop (the teacher wrapper, jobs)."""
        done: Future = Future()

        def emit(ev: Event) -> None:
            if isinstance(ev, (Finished, Failed)) and not done.done():
                done.set_result(ev)

        self.acquire(adapter)
        try:
            self.submit(GenJob(self.encode_chat(messages), max_tokens, adapter=adapter, emit=emit))
            ev = done.result(timeout)
        finally:
            self.release(adapter)
        if isinstance(ev, Failed):
            raise RuntimeError(ev.message)
        return ev.text

    def call(self, fn: Callable, adapter: str | None = None, background: bool = False) -> Future:
        """Run `fn(model, tokenizer)` on the engine thread between decoding steps (scoring work
        that must not race the model or its active adapter). Returns a Future.

        background: run it only while no request is being decoded or waiting, one call at a time,
        so analysis never delays an answer by more than one call already under way."""
        c = _Call(fn, adapter, Future(), background)
        self._queue.put(c)
        return c.future

    # -- adapters ----------------------------------------------------------------------------
    @property
    def model(self):
        """The model as it is now: the base, or a PeftModel wrapping it while adapters are loaded."""
        return self.slots.model

    @property
    def adapters(self) -> dict[str, str]:
        return self.slots.adapters

    @property
    def adapter_loads(self):
        return self.slots.adapter_loads

    def acquire(self, name: str | None) -> None:
        self.slots.acquire(name)

    def release(self, name: str | None) -> None:
        if self.slots.release(name):
            self.call(lambda m, t: None)  # let the worker unload it now

    def keep_loaded(self, name: str) -> bool:
        return self.slots.keep_loaded(name)

    def fits(self, prepared: PreparedAdapter) -> bool:
        return self.slots.fits(prepared)

    def load_adapter(self, name: str, adapter: str | Path | PreparedAdapter) -> Future:
        """Load a LoRA adapter (a directory, or one already prepared) under `name`: the files
        are read and checked here, the layers are touched on the engine thread between steps."""
        prepared = adapter if isinstance(adapter, PreparedAdapter) else prepare_adapter(adapter)
        if not self.fits(prepared):  # a structure that has not loaded here before
            check_loadable(prepared.path, self.model)  # shapes match, on a weightless copy
        return self.call(lambda model, tok: self.slots.load(name, prepared))

    def base_config(self) -> dict:
        return self.model.config.to_dict()

    def score_followups(self, conversations: Sequence[list[dict]], adapter: str | None = None) -> Future:
        """On the engine thread as a background call: only while no request is being decoded."""
        from adapters.flr import flr_scores

        convs = list(conversations)
        return self.call(lambda m, t: flr_scores(m, t, convs, batch_size=16), adapter=adapter, background=True)

    def unload_adapter(self, name: str) -> None:
        """Unload `name` once no request holds it; requests in flight finish on it first."""
        self.slots.request_unload(name)
        self.call(lambda m, t: None)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the worker ----------------------------------------------------------------------
    def _run_call(self, c: _Call) -> None:
        try:
            with self.slots.select(c.adapter):
                c.future.set_result(c.fn(self.slots.model, self.tokenizer))
        except Exception as exc:
            c.future.set_exception(exc)

    def _worker(self) -> None:
        torch.set_grad_enabled(False)
        waiting: list[GenJob] = []
        idle_calls: list[_Call] = []  # background calls, run when nothing else is to be done
        batch: _Batch | None = None
        while True:
            # Block only when there is nothing to decode; otherwise just drain the queue.
            incoming = []
            if batch is None and not waiting:
                if not idle_calls:
                    incoming = [self._queue.get()]
                else:
                    wait = self.background_grace_s - (time.monotonic() - self._last_busy)
                    if wait > 0:
                        try:
                            incoming = [self._queue.get(timeout=wait)]
                        except queue.Empty:
                            pass
            while True:
                try:
                    incoming.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in incoming:  # close(): whatever is in flight fails rather than hangs
                for job in waiting + idle_calls + [j for j in incoming if j] + [r.job for r in (batch.rows if batch else [])]:
                    if isinstance(job, _Call):
                        job.future.set_exception(RuntimeError("the engine is closed"))
                    else:
                        job.emit(Failed("the server is shutting down"))
                return
            self.slots.unload_idle()
            idle_calls += [j for j in incoming if isinstance(j, _Call) and j.background]
            for c in [j for j in incoming if isinstance(j, _Call) and not j.background]:
                self._run_call(c)
            waiting += [j for j in incoming if isinstance(j, GenJob)]
            if batch is None and not waiting:
                if idle_calls and time.monotonic() - self._last_busy >= self.background_grace_s:
                    self._run_call(idle_calls.pop(0))
                continue
            self._last_busy = time.monotonic()
            # Cancelled requests leave before the next forward pass: a cancelled request returns
            # its lease at once, so its version may have been unloaded by _unload_idle above.
            waiting = [j for j in waiting if not j.cancelled.is_set()]
            if batch is not None:
                self._drop_cancelled(batch)
                if not batch.rows:
                    batch = None
            # Continuous batching: waiting requests join the running batch at the next step.
            room = self.max_batch_size - (len(batch.rows) if batch else 0)
            joining, waiting = waiting[:room], waiting[room:]
            try:
                if joining:
                    new = self._prefill(joining)
                    if new is not None:
                        batch = new.merged_into(batch)
                    self.batches_run += 1
                if batch is not None and batch.rows:
                    self._decode_step(batch)
            except Exception as exc:  # a failed batch fails its requests, not the server
                log.exception("generation failed")
                for job in {id(j): j for j in joining + [r.job for r in (batch.rows if batch else [])]}.values():
                    job.emit(Failed(f"generation failed: {exc}"))
                batch = None
                continue
            if batch is not None and not batch.rows:
                batch = None

    def _prefill(self, jobs: list[GenJob]) -> "_Batch | None":
        """Run the prompts of new requests (left-padded) and pick each one's first token.
        A request whose own settings cannot be used fails alone, before the batch runs."""
        rows = []
        for j in jobs:
            try:
                rows.append(_Row(j, self.device))
            except Exception as exc:  # e.g. a seed torch refuses
                j.emit(Failed(f"bad request: {exc}"))
        if not rows:
            return None
        jobs = [r.job for r in rows]
        width = max(len(j.prompt_ids) for j in jobs)
        input_ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, j in enumerate(jobs):
            n = len(j.prompt_ids)
            input_ids[i, width - n:] = torch.tensor(j.prompt_ids)
            attn[i, width - n:] = 1
        input_ids, attn = input_ids.to(self.device), attn.to(self.device)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        out = self.slots.model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, use_cache=True,
                         **self.slots.forward_kwargs([r.job.adapter for r in rows]))
        batch = _Batch(rows, out.past_key_values, attn, next_pos=position_ids[:, -1:] + 1)
        self._sample_step(batch, out.logits[:, -1, :].float())
        return batch

    def _drop_cancelled(self, batch: "_Batch") -> None:
        keep = [b for b, row in enumerate(batch.rows) if not self._ended_if_cancelled(row)]
        if len(keep) < len(batch.rows):
            batch.select(keep)

    @staticmethod
    def _ended_if_cancelled(row: _Row) -> bool:
        """Finish a row whose client has gone; True if it had."""
        if not row.job.cancelled.is_set():
            return False
        row.done = True
        row.job.emit(Finished("cancelled", row.text, len(row.job.prompt_ids), len(row.ids)))
        return True

    def _decode_step(self, batch: "_Batch") -> None:
        """One token for every row of the batch."""
        ones = torch.ones((len(batch.rows), 1), dtype=batch.attn.dtype, device=self.device)
        batch.attn = torch.cat([batch.attn, ones], dim=-1)
        out = self.slots.model(input_ids=batch.next_ids, attention_mask=batch.attn, position_ids=batch.next_pos,
                         past_key_values=batch.past, use_cache=True, **self.slots.forward_kwargs([r.job.adapter for r in batch.rows]))
        batch.past = out.past_key_values
        batch.next_pos = batch.next_pos + 1
        self._sample_step(batch, out.logits[:, -1, :].float())

    def _sample_step(self, batch: "_Batch", logits: torch.Tensor) -> None:
        """Shape: logits (rows, vocab). Picks each row's token, then drops finished rows."""
        tokens = [self._step_row(row, logits[b]) for b, row in enumerate(batch.rows)]
        batch.next_ids = torch.tensor(tokens, device=self.device).unsqueeze(-1)
        keep = [b for b, row in enumerate(batch.rows) if not row.done]
        if len(keep) < len(batch.rows):
            # Finished or cancelled rows leave the batch, their cache included.
            batch.select(keep)

    def _step_row(self, row: _Row, logits: torch.Tensor) -> int:
        """Pick the next token of one row, emit its new text, and decide whether it is done."""
        job = row.job
        if self._ended_if_cancelled(row):
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
        """Shape: logits (vocab,). Greedy at temperature 0 (and below MIN_TEMPERATURE, where sampling
        is greedy in all but name and logits / temperature overflows), else temperature + nucleus."""
        if job.temperature < MIN_TEMPERATURE:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / job.temperature, dim=-1)
        if job.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            # Keep the smallest set of tokens whose mass reaches top_p (always at least one).
            drop = sorted_p.cumsum(-1) - sorted_p > job.top_p
            sorted_p[drop] = 0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=generator))
