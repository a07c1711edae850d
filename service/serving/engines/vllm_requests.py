"""The request path to vLLM replicas: chat completions passed through token by token, plain
requests retried across replicas, and prompt log-probs for scoring.

Every streamed request asks for usage (`stream_options.include_usage`), so the exchange stores
the engine's own token counts; each chunk's `model` must name the version the request was
routed to, so an answer is never passed on as coming from a version that did not make it. A
request that fails before its first token is retried on another replica; once the client has
part of an answer, a failure ends it. Closing the stream closes the upstream connection, which
makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import AsyncIterator

import httpx

from service.serving.engines.base import Delta, Event, Failed, Finished, GenJob
from service.serving.engines.replicas import Replica, ReplicaSet

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}


class ReplicaError(Exception):
    """A replica could not take the request (connection, 5xx, missing adapter): try another."""


class Incomplete(ReplicaError):
    """The stream ended without a finish reason (the replica is not taken out for this)."""


def error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict):
            err = body.get("error", body)
            return str(err.get("message", err) if isinstance(err, dict) else err)
    except ValueError:
        pass
    return resp.text[:500]


class Upstream:
    """Requests to the replicas of one vLLM deployment serving the base model `base`."""

    def __init__(self, replicas: ReplicaSet, http: httpx.Client, tokenizer, base: str, timeout: float):
        self.replicas, self.http, self.tokenizer, self.base, self.timeout = replicas, http, tokenizer, base, timeout
        self._async: httpx.AsyncClient | None = None
        self._async_loop = None

    def body(self, job: GenJob, stream: bool) -> dict:
        body = {"model": job.adapter or self.base, "messages": job.messages, "max_tokens": job.max_new_tokens,
                "temperature": job.temperature, "top_p": job.top_p, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if job.seed is not None:
            body["seed"] = job.seed
        if job.stop:
            body["stop"] = job.stop
        return body

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=5.0),
                                            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
            self._async_loop = loop
        return self._async

    async def stream(self, job: GenJob) -> AsyncIterator[Event]:
        body, tried = self.body(job, stream=True), set()
        while True:
            replica = self.replicas.pick(job.sticky_key, tried)
            if replica is None and self.replicas.waiting_for_reserved(tried):
                await asyncio.sleep(0.005)  # a scoring request runs alone for a moment
                continue
            if replica is None:
                yield Failed("no engine replica is up" + (" (tried " + ", ".join(sorted(tried)) + ")" if tried else ""),
                             503, "engine_unavailable")
                return
            tried.add(replica.url)
            produced = False
            try:
                # aclosing: a client that goes away closes the upstream stream now, not at GC.
                async with contextlib.aclosing(self._stream_on(replica, body, job)) as events:
                    async for ev in events:
                        produced = produced or isinstance(ev, Delta)
                        yield ev
                        if isinstance(ev, (Finished, Failed)):
                            return
                raise Incomplete("the stream ended without a finish reason")
            except (ReplicaError, httpx.TransportError) as exc:
                if not isinstance(exc, Incomplete):
                    self.replicas.mark_down(replica, str(exc))
                if produced:  # the client has part of an answer: it cannot be retried elsewhere
                    yield Failed(f"the engine replica failed mid-answer: {exc}", 502, "engine_failed")
                    return
                log.warning("replica %s failed before the first token, retrying elsewhere: %s", replica.url, exc)
            finally:
                self.replicas.done(replica)

    async def _stream_on(self, replica: Replica, body: dict, job: GenJob) -> AsyncIterator[Event]:
        expected, parts, finish, usage = body["model"], [], None, None
        async with self._client().stream("POST", replica.url + "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                if resp.status_code >= 500 or resp.status_code == 404:  # 404: it lost the adapter
                    raise ReplicaError(f"{replica.url}: {resp.status_code} {error_message(resp)}")
                yield Failed(error_message(resp), resp.status_code, "engine_rejected")
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    err = chunk["error"]
                    if not parts:
                        raise ReplicaError(f"{replica.url}: {err.get('message', err)}")
                    yield Failed(str(err.get("message", err)), 502, "engine_failed")
                    return
                if chunk.get("model") != expected:  # never pass on an answer from another version
                    yield Failed(f"the engine answered as {chunk.get('model')!r}, not {expected!r}", 502, "engine_failed")
                    return
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage") or usage
        if finish is None:
            return
        usage = usage or {}
        yield Finished(_FINISH.get(finish, finish), "".join(parts), usage.get("prompt_tokens", len(job.prompt_ids)),
                       usage.get("completion_tokens", len(parts)))

    def post_any(self, path: str, body: dict, sticky_key: str | None = None) -> dict:
        """A plain (non-streaming) request on some replica, retried elsewhere when one fails."""
        tried: set[str] = set()
        while True:
            replica = self.replicas.pick(sticky_key, tried)
            if replica is None and self.replicas.waiting_for_reserved(tried):
                time.sleep(0.005)
                continue
            if replica is None:
                raise RuntimeError("no engine replica is up")
            tried.add(replica.url)
            try:
                resp = self.http.post(replica.url + path, json=body)
            except httpx.TransportError as exc:
                self.replicas.mark_down(replica, str(exc))
                continue
            finally:
                self.replicas.done(replica)
            if resp.status_code == 200:
                return resp.json()
            if resp.status_code < 500 and resp.status_code != 404:
                raise RuntimeError(f"the engine refused the request: {resp.status_code} {error_message(resp)}")
            self.replicas.mark_down(replica, f"{resp.status_code} {error_message(resp)}")

    def flr(self, conversations: list[list[dict]], adapter: str | None) -> list[float]:
        from adapters.flr import default_followups, flr_from_sums, followup_tokens

        positive, negative = default_followups()
        scores = []
        for conv in conversations:
            context, scored = followup_tokens(self.tokenizer, conv, positive + negative)
            sums = [self._prompt_logprob(context, s, adapter) for s in scored]
            scores.append(flr_from_sums(sums, len(positive)))
        return scores

    def _prompt_logprob(self, context: list[int], scored: list[int], adapter: str | None) -> float:
        """Summed log-prob of `scored` after `context` (completions with echo + logprobs).

        One prompt per request, on a replica reserved while it runs: vLLM's CPU build fails
        its whole engine (EngineDeadError) when a prompt-log-prob request shares a decoding
        step with another request under --enable-lora (its LoRA logits path indexes prompt
        rows by sampled rows). The follow-ups of one answer share their context, which the
        replica's prefix cache computes once."""
        deadline = time.monotonic() + self.timeout
        while (replica := self.replicas.reserve()) is None:
            if time.monotonic() > deadline or not self.replicas.up():
                raise RuntimeError("no engine replica was free for scoring")
            time.sleep(0.02)
        try:
            resp = self.http.post(replica.url + "/v1/completions", json={
                "model": adapter or self.base, "prompt": context + scored, "max_tokens": 1,
                "temperature": 0, "echo": True, "logprobs": 1})
        except httpx.TransportError as exc:
            self.replicas.mark_down(replica, str(exc))
            raise
        finally:
            self.replicas.unreserve(replica)
        if resp.status_code != 200:
            raise RuntimeError(f"scoring failed on {replica.url}: {resp.status_code} {error_message(resp)}")
        logprobs = resp.json()["choices"][0]["logprobs"]["token_logprobs"]
        return float(sum(logprobs[len(context):len(context) + len(scored)]))
