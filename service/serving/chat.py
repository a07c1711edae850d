"""Chat completions: validate, link to the conversation, generate, store, answer (or stream)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from typing import AsyncIterator

from starlette.concurrency import run_in_threadpool

from policies.scope import ScopeMatcher, with_principles
from service.api.protocol import ChatCompletionRequest
from service.errors import APIError
from service.metrics import Metrics
from service.serving.engines.base import Delta, Engine, Failed, Finished, GenJob
from service.serving.router import AdapterRouter, Route, UnknownModel
from service.serving.scope import ServingScope
from service.settings import Settings
from service.store import Store, new_id


DISCONNECT_POLL_S = 0.25  # how often a plain (non-streaming) request looks for its client going away


def sse(body: dict) -> str:
    """One server-sent event line in the form OpenAI clients parse."""
    return "data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n\n"


class ChatService:
    def __init__(self, settings: Settings, store: Store, engine: Engine, metrics: Metrics, router: AdapterRouter,
                 matcher: ServingScope | ScopeMatcher | None = None, on_stored=None):
        self.router = router
        self.on_stored = on_stored or (lambda: None)
        self.settings = settings
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.matcher = matcher or ScopeMatcher()

    def _scoped_principles(self, messages: list[dict]) -> list[dict]:
        """Approved in-context principles whose domain covers this request."""
        return self.matcher.applicable(self.store.principles.approved_for_prompt(), messages)

    def model_names(self) -> list[str]:
        return self.router.model_ids()

    async def _route(self, name: str | None, sticky_key: str | None) -> Route:
        try:
            return await run_in_threadpool(self.router.route, name, sticky_key)
        except UnknownModel:
            raise APIError(404, f"The model '{name}' does not exist", "model", "model_not_found") from None
        except Exception as exc:  # a pinned version that fails to load
            raise APIError(400, f"The model '{name}' could not be loaded: {exc}", "model", "model_load_failed") from exc

    def _release(self, record: dict) -> None:
        """Return the request's lease on its adapter version (once, whatever path ends it)."""
        if record.get("adapter_version") and not record.get("_released"):
            record["_released"] = True
            self.router.release(Route(record["model"], record["adapter_version"]))

    def _validate(self, req: ChatCompletionRequest) -> tuple[list[dict], int]:
        s = self.settings
        if len(req.messages) > s.max_messages:
            raise APIError(400, f"too many messages: {len(req.messages)} > {s.max_messages}", "messages", "too_many_messages")
        messages = [m.plain() for m in req.messages]
        for i, m in enumerate(messages):
            if len(m["content"]) > s.max_message_chars:
                raise APIError(
                    400, f"message {i} is {len(m['content'])} characters long; the limit is {s.max_message_chars}",
                    f"messages.{i}.content", "message_too_long",
                )
        if not any(m["role"] == "user" for m in messages):
            raise APIError(400, "messages must contain at least one user message", "messages", "invalid_value")
        budget = req.token_budget or s.default_max_tokens
        if budget > s.max_tokens_limit:
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise APIError(400, f"{param} is {budget}; the limit is {s.max_tokens_limit}", param, "max_tokens_too_large")
        return messages, budget

    async def prepare(self, req: ChatCompletionRequest, conversation_header: str | None) -> tuple[dict, GenJob]:
        """Everything up to the start of generation: validation, conversation link, the record."""
        messages, budget = self._validate(req)
        applied = await run_in_threadpool(self._scoped_principles, messages)
        rendered = with_principles(messages, applied)
        prompt_ids = self.engine.encode_chat(rendered)
        if len(prompt_ids) + budget > self.settings.max_context_tokens:
            raise APIError(
                400,
                f"the prompt has {len(prompt_ids)} tokens and {budget} more were asked for; "
                f"this server's context is {self.settings.max_context_tokens} tokens",
                "messages", "context_length_exceeded",
            )
        explicit = conversation_header or (req.metadata or {}).get("conversation_id")
        if explicit is not None and not (0 < len(explicit) <= 128):
            raise APIError(400, "a conversation id is 1 to 128 characters", "metadata.conversation_id",
                           "invalid_conversation_id")
        parent = await run_in_threadpool(self.store.exchanges.find_parent, messages, explicit, req.user)
        conversation_id = explicit or (parent["conversation_id"] if parent else new_id("conv-"))
        # Canary assignment is sticky per user, else per conversation. The lease taken here
        # is returned when the answer is stored.
        route = await self._route(req.model, req.user or conversation_id)
        model_id, adapter = route.model, route.adapter
        applied_adapter = adapter
        if adapter is not None and isinstance(self.matcher, ServingScope):
            try:
                if not await run_in_threadpool(self.matcher.adapter_applies, adapter,
                                               self.router.registry.path_of(adapter), messages):
                    applied_adapter = None  # outside the version's scope: the base weights answer
            except BaseException:
                self._release({"model": model_id, "adapter_version": adapter})
                raise
        temperature = self.settings.default_temperature if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        record = {
            "id": new_id("chatcmpl-"),
            "created": time.time(),
            "conversation_id": conversation_id,
            "parent_id": parent["id"] if parent else None,
            "messages": messages,
            "status": "running",
            "model": model_id,
            "adapter_version": adapter,
            "params": {"temperature": temperature, "top_p": top_p, "max_tokens": budget, "stop": req.stop, "seed": req.seed},
            "stream": int(req.stream),
            "user": req.user,
            "metadata": req.metadata,
            "principles_applied": [p["id"] for p in applied],
            "adapter_applied": None if adapter is None else int(applied_adapter is not None),
        }
        try:
            await run_in_threadpool(self.store.exchanges.start, record)
        except BaseException:
            self._release(record)
            raise
        job = GenJob(prompt_ids, budget, temperature, top_p, req.seed, req.stop or [], applied_adapter,
                     messages=rendered, sticky_key=conversation_id)
        return record, job

    async def _finish(self, record: dict, fin: Finished | None, error: str | None, started: float, ttft: float | None, text: str) -> None:
        self._release(record)
        status = "ok" if fin and fin.finish_reason in ("stop", "length") else ("error" if error else "aborted")
        latency = time.time() - started
        await run_in_threadpool(
            self.store.exchanges.finish, record["id"],
            response=text, finish_reason=fin.finish_reason if fin else None, status=status,
            prompt_tokens=fin.prompt_tokens if fin else None, completion_tokens=fin.completion_tokens if fin else None,
            latency_ms=latency * 1000, ttft_ms=ttft * 1000 if ttft is not None else None, error=error,
        )
        self._observe(record, status, fin, latency, ttft)
        self.on_stored()  # background analysis looks at the new exchange soon

    def _observe(self, record, status, fin, latency, ttft):
        m = self.metrics
        m.completions.labels(record["model"], status).inc()
        if fin:
            m.tokens.labels("prompt").inc(fin.prompt_tokens)
            m.tokens.labels("completion").inc(fin.completion_tokens)
        m.latency.labels(str(bool(record["stream"])).lower()).observe(latency)
        if ttft is not None:
            m.ttft.observe(ttft)

    @staticmethod
    def _usage(fin: Finished) -> dict:
        return {"prompt_tokens": fin.prompt_tokens, "completion_tokens": fin.completion_tokens,
                "total_tokens": fin.prompt_tokens + fin.completion_tokens}

    async def complete(self, record: dict, job: GenJob, disconnected=None) -> dict | None:
        """The whole answer. With `disconnected` (the request's `is_disconnected`), a client that
        goes away before the answer is done stops its generation (a remote engine's upstream
        request is cancelled), the exchange is stored as aborted, and None is returned."""
        collect = asyncio.ensure_future(self._collect(record, job))
        if disconnected is None:
            return await collect
        try:
            while True:
                done, _ = await asyncio.wait({collect}, timeout=DISCONNECT_POLL_S)
                if done:
                    return collect.result()
                if await disconnected():
                    collect.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await collect
                    return None
        except asyncio.CancelledError:  # this request's own task is torn down (shutdown)
            collect.cancel()
            raise

    async def _collect(self, record: dict, job: GenJob) -> dict:
        started, ttft, fin, parts = time.time(), None, None, []
        self.metrics.in_flight.inc()
        try:
            async with contextlib.aclosing(self.engine.stream(job)) as events:
                async for ev in events:
                    if isinstance(ev, Delta):
                        ttft = time.time() - started if ttft is None else ttft
                        parts.append(ev.text)
                    elif isinstance(ev, Failed):
                        await self._finish(record, None, ev.message, started, ttft, "")
                        raise APIError(ev.status, ev.message, None, ev.code)
                    elif isinstance(ev, Finished):
                        fin = ev
        except asyncio.CancelledError:
            self._abort(record, job, started, ttft, "".join(parts))
            raise
        finally:
            self.metrics.in_flight.dec()
        await self._finish(record, fin, None, started, ttft, fin.text)
        return {
            "id": record["id"],
            "object": "chat.completion",
            "created": int(record["created"]),
            "model": record["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": fin.text},
                "finish_reason": fin.finish_reason,
                "logprobs": None,
            }],
            "usage": self._usage(fin),
            "system_fingerprint": None,
            "conversation_id": record["conversation_id"],
        }

    async def stream(self, record: dict, job: GenJob, include_usage: bool) -> AsyncIterator[str]:
        """SSE lines. If the client goes away, the generator is closed: generation stops and the
        completion is stored as aborted with what was produced so far."""
        started, ttft, fin, parts, done = time.time(), None, None, [], False
        base = {"id": record["id"], "object": "chat.completion.chunk", "created": int(record["created"]),
                "model": record["model"], "system_fingerprint": None}

        def chunk(delta: dict, finish_reason=None, usage=None) -> str:
            body = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])
            if include_usage:
                body["usage"] = usage
            return sse(body)

        self.metrics.in_flight.inc()
        try:
            yield chunk({"role": "assistant", "content": ""})
            # aclosing: when the client goes away, the engine's stream is closed at once (a
            # remote engine's upstream request is cancelled then, not when it is collected).
            async with contextlib.aclosing(self.engine.stream(job)) as events:
                async for ev in events:
                    if isinstance(ev, Delta):
                        if ttft is None:
                            ttft = time.time() - started
                        parts.append(ev.text)
                        yield chunk({"content": ev.text})
                    elif isinstance(ev, Failed):
                        done = True  # from here the record is finished by _finish, even if we are cancelled
                        await self._finish(record, None, ev.message, started, ttft, "".join(parts))
                        kind = "invalid_request_error" if ev.status < 500 else "server_error"
                        yield sse({"error": {"message": ev.message, "type": kind, "param": None, "code": ev.code}})
                        return
                    else:
                        fin = ev
            # Stored before the client hears the end, so feedback sent right after finds it. The
            # answer is complete: a client leaving during the write does not make it "aborted".
            done = True
            await asyncio.shield(self._finish(record, fin, None, started, ttft, fin.text))
            yield chunk({}, fin.finish_reason)
            if include_usage:
                yield sse(dict(base, choices=[], usage=self._usage(fin)))
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # stops the row at the engine's next step if still running
            self.metrics.in_flight.dec()
            if not done:
                self._abort(record, job, started, ttft, "".join(parts))

    def _abort(self, record: dict, job: GenJob, started: float, ttft: float | None, text: str) -> None:
        """The client went away: generation stops, the exchange is stored as aborted with what
        was produced. No awaiting here: the task is being torn down."""
        job.cancelled.set()
        self._release(record)
        latency = time.time() - started
        # Written from a worker thread: the event loop must not wait on the database.
        asyncio.get_running_loop().run_in_executor(None, functools.partial(
            self.store.exchanges.finish, record["id"], response=text, finish_reason=None,
            status="aborted", prompt_tokens=len(job.prompt_ids), completion_tokens=None,
            latency_ms=latency * 1000, ttft_ms=ttft * 1000 if ttft is not None else None,
            error="client disconnected"))
        self._observe(record, "aborted", None, latency, ttft)
